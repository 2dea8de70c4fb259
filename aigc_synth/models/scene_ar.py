"""``scene_ar``: an autoregressive model of highway scenes (SceneGen / TrafficGen style).

A scene is read as a sequence of **vehicle tokens** in canonical order - lane by lane from the
right, back to front within a lane - with the ego inserted at its own place in its lane (so every
agent's predecessor in its lane is the vehicle directly behind it, ego included) and a final STOP.
Each token is emitted as five categorical choices, each conditioned on the road, the traffic
level, the ego and everything placed so far (a GRU over the previous tokens plus exact features of
the vehicle behind / the ego ahead):

    lane (same lane, a lane further left, or STOP) → vehicle type (or "the ego comes now")
    → bumper gap to the vehicle behind (position along the road) → speed → lateral offset

The speed of a lane's first vehicle is drawn on absolute bins, every later one's relative to the
vehicle behind it, on bins that are finest near "the same speed" (SUMO's platoons drive at nearly
one speed, which absolute bins learnt poorly; ``relative_speed=False`` keeps the older all-absolute
head of checkpoints trained before it). Likewise with ``headway_gap=True`` the gap of a lane's later
vehicles is drawn as a time headway beyond minGap behind the vehicle behind
(:data:`~aigc_synth.models.scene_tokens.HEADWAY_EDGES`: SUMO's followers keep about one reaction time
at every speed), the first vehicle's in metres.

The count is learnt through the lane / STOP choices (a lane ends when the model moves on). A
prefix head draws the speed limit, the ego lane and the ego speed.

The **road** is a condition (:class:`~aigc_synth.scenes.format.Road`: kind, curvature, where a lane
ends). A merge road's on-ramp is one more lane, to the right of lane 0 (:data:`RAMP_LANE`, slot 0 of
the lane choice), and every lane that ends (the ramp, a lane drop's leftmost lane) tells each choice
how far away its end is; a vehicle is never placed beyond the end of its lane. When a request names
only the road kind, the road's parameters are drawn from :attr:`SceneAR.road_bank`, a stratified
sample of the training set's roads of that kind stored with the weights. Everything is discretised
(cross-entropy training, no density to tune); a draw inside a bin is uniform (jitter), so outputs
are continuous.

Sampling is a pure function of (model, traffic level, lane count, road, seed): every scene draws its
uniforms from its own ``numpy`` generator, categorical draws are inverse-CDF on those uniforms,
and the network runs on fixed-size micro-batches, so a scene is the same whatever else is sampled
with it. Masks at sampling time enforce what the contract requires and the training data never
breaks: lanes in increasing order, agents inside the window, no two vehicles overlapping
(bumper gap ≥ :data:`MIN_CLEARANCE`), the ego exactly once, at ``s = 0``, and no vehicle faster
than SUMO's car-following rule lets it be behind the vehicle ahead (it would brake harder than its
limit at once when replayed: :mod:`aigc_synth.scenes.car_following`).

The module is a plain ``nn.Module`` and its sampler; the token view of a scene (sizes, vectors, the
teacher-forced encoding) is :mod:`.scene_tokens`. It never reads config objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from aigc_synth.models.scene_tokens import (
    COND_DIM,
    D_CENTRES,
    DELTA_EDGES,
    EGO_DIM,
    EGO_TYPE,
    GAP_EDGES,
    LANE_CTX_DIM,
    MAX_LANES,
    MAX_TOKENS,
    NUM_D,
    NUM_DELTA,
    NUM_GAP,
    NUM_HEADWAY,
    NUM_SLOTS,
    NUM_SPEED,
    NUM_TYPES,
    SLOT_DIM,
    SPEED_CTX_DIM,
    SPEED_EDGES,
    SPEED_MAX_RATIO,
    STOP,
    TOKEN_DIM,
    TYPE_LENGTH,
    LaneState,
    condition_vector,
    ego_vector,
    headway_gap_edges,
    lane_slot,
    speed_context,
    type_features,
)
from aigc_synth.scenes.format import (
    EGO_LENGTH,
    LANE_WIDTH,
    RAMP_LANE,
    ROAD_KINDS,
    SPEED_LIMITS,
    WINDOW_AHEAD,
    Agent,
    Road,
    Scene,
    SceneError,
    lane_exists,
    road_kind_problems,
)
from aigc_synth.scenes.car_following import DECEL, max_follower_speed, min_leader_speed
from aigc_synth.scenes.road import road_at, stratified_roads
from aigc_synth.scenes.sumo import VEHICLE_TYPES

MIN_CLEARANCE = 1.0  # m of bumper gap kept between any two vehicles of a lane when sampling
NUM_UNIFORMS = 8  # uniforms drawn per token (one per choice, plus jitter)
ROAD_BANK = 512  # road parameter sets kept per kind (a stratified sample of the training roads)
PREFIX_UNIFORMS = 5  # road, speed limit, ego lane, ego speed, ego speed jitter


# -- the network -------------------------------------------------------------------------------------------
def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, n_out))


class SceneAR(nn.Module):
    """The network: prefix heads for the speed limit and the ego, a GRU over tokens, one head per
    token choice; plus :attr:`road_bank`, the road parameters a request naming only a kind draws from."""

    def __init__(self, hidden: int = 256, head_hidden: int = 256, relative_speed: bool = True, headway_gap: bool = False):
        super().__init__()
        self.hidden, self.head_hidden = hidden, head_hidden
        # (kind, k) -> (curvature, event_s, event_length); kinds never trained on stay 0 (see road_kinds)
        self.register_buffer("road_bank", torch.zeros(len(ROAD_KINDS), ROAD_BANK, 3, dtype=torch.float64))
        # a fresh network knows the straight road (it has no parameters); fit_road_bank sets the kinds trained on
        self.register_buffer("road_known", torch.as_tensor([kind == "straight" for kind in ROAD_KINDS]))
        self.limit_head = _mlp(COND_DIM - 1, head_hidden, len(SPEED_LIMITS))
        self.ego_lane_head = _mlp(COND_DIM, head_hidden, MAX_LANES)
        self.ego_speed_head = _mlp(COND_DIM + MAX_LANES, head_hidden, NUM_SPEED)
        self.init = nn.Linear(COND_DIM + EGO_DIM, hidden)
        self.gru = nn.GRUCell(TOKEN_DIM + COND_DIM + EGO_DIM, hidden)
        ctx = hidden + COND_DIM + EGO_DIM + LANE_CTX_DIM
        self.lane_head = _mlp(ctx, head_hidden, NUM_SLOTS + 1)
        self.type_head = _mlp(ctx + SLOT_DIM, head_hidden, NUM_TYPES)
        self.gap_head = _mlp(ctx + SLOT_DIM + NUM_TYPES + 1, head_hidden, NUM_GAP)
        # headway_gap: a lane's later vehicles draw their gap as a time headway (HEADWAY_EDGES) behind the
        # vehicle behind, the first ones in metres; without it (checkpoints before 2026-12-07) all in metres
        self.headway_head = _mlp(ctx + SLOT_DIM + NUM_TYPES + 1, head_hidden, NUM_HEADWAY) if headway_gap else None
        self.speed_head = _mlp(ctx + SLOT_DIM + NUM_TYPES + 2 + SPEED_CTX_DIM, head_hidden, NUM_SPEED)
        # relative_speed: a lane's later vehicles draw their speed relative to the vehicle behind
        # (DELTA_EDGES), the first ones absolute; without it (checkpoints before 2026-12-07) all absolute
        self.delta_head = _mlp(ctx + SLOT_DIM + NUM_TYPES + 2 + SPEED_CTX_DIM, head_hidden, NUM_DELTA) if relative_speed else None
        self.d_head = _mlp(ctx + SLOT_DIM + NUM_TYPES + 3 + SPEED_CTX_DIM, head_hidden, NUM_D)

    # the road prior ----------------------------------------------------------------------------------------
    def fit_road_bank(self, roads: Sequence[Road]) -> None:
        """Keep a stratified sample of ``roads`` per kind (sorted, :data:`ROAD_BANK` evenly spaced
        order statistics) as the prior of requests that name only a kind."""
        for k, kind in enumerate(ROAD_KINDS):
            rows = stratified_roads(roads, kind, ROAD_BANK)
            self.road_known[k] = bool(rows)
            if rows:
                self.road_bank[k] = torch.as_tensor(rows, dtype=torch.float64)

    @property
    def road_kinds(self) -> tuple[str, ...]:
        """The road kinds this model was trained on."""
        return tuple(kind for kind, known in zip(ROAD_KINDS, self.road_known.tolist()) if known)

    def draw_road(self, kind: str, u: float) -> Road:
        """The road of kind ``kind`` at uniform ``u`` of the road prior (a pure function of its inputs)."""
        if kind not in self.road_kinds:
            raise SceneError(f"this scene model was trained on roads {list(self.road_kinds)}, not {kind!r}")
        return road_at(kind, self.road_bank[ROAD_KINDS.index(kind)], u)  # one row read, not the whole table

    # the prefix ------------------------------------------------------------------------------------------
    def prefix_logits(self, cond: torch.Tensor, limit_k: torch.Tensor, ego_lane: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of speed limit (from traffic + lanes), ego lane (+ limit) and ego speed (+ ego lane)."""
        limit_cond = torch.cat([cond[:, :-1], torch.as_tensor(np.asarray(SPEED_LIMITS, np.float32))[limit_k, None] / 30.0], 1)
        lane_1h = nn.functional.one_hot(ego_lane, MAX_LANES).float()
        return (self.limit_head(cond[:, :-1]), self.ego_lane_head(limit_cond),
                self.ego_speed_head(torch.cat([limit_cond, lane_1h], 1)))

    def start(self, cond: torch.Tensor, ego: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.init(torch.cat([cond, ego], 1)))

    def step(self, h: torch.Tensor, token_in: torch.Tensor, cond: torch.Tensor, ego: torch.Tensor) -> torch.Tensor:
        return self.gru(torch.cat([token_in, cond, ego], 1), h)

    # training ------------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mean cross-entropy per choice (nats per token / per scene for the prefix) on a padded batch.

        ``batch`` holds :func:`collate`'s tensors: per-token arrays are (B, T, ...) with ``valid``
        (B, T) marking real tokens.
        """
        ce = nn.functional.cross_entropy
        cond, ego, valid = batch["cond"], batch["ego"], batch["valid"]
        limit_logits, lane_logits, speed_logits = self.prefix_logits(cond, batch["limit"], batch["ego_lane"])
        out = {"loss_prefix": ce(limit_logits, batch["limit"]) + ce(lane_logits, batch["ego_lane"])
               + ce(speed_logits, batch["ego_speed"])}
        B, T = valid.shape
        h = self.start(cond, ego)
        hs = []
        for t in range(T):
            h = self.step(h, batch["token_in"][:, t], cond, ego)
            hs.append(h)
        hid = torch.stack(hs, 1)  # (B, T, H)
        expand = lambda x: x[:, None, :].expand(B, T, x.shape[-1])
        ctx = torch.cat([hid, expand(cond), expand(ego), batch["lane_ctx"]], -1)
        with_slot = torch.cat([ctx, batch["slot"]], -1)
        with_type = torch.cat([with_slot, batch["type_in"]], -1)
        with_gap = torch.cat([with_type, batch["gap_in"][..., None], batch["speed_ctx"]], -1)
        with_speed = torch.cat([with_gap, batch["ratio_in"][..., None]], -1)
        is_vehicle = valid & (batch["lane"] != STOP)
        is_agent = valid & batch["is_agent"]

        def masked_ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return (ce(logits.reshape(B * T, -1), target.reshape(-1), reduction="none") * mask.reshape(-1)).sum() / mask.sum().clamp(min=1)

        out["loss_lane"] = masked_ce(self.lane_head(ctx), batch["lane"], valid)
        out["loss_type"] = masked_ce(self.type_head(with_slot), batch["type"], is_vehicle)
        follows = batch["follows"].reshape(-1)

        def split_ce(first_logits: torch.Tensor, first_target: str, follow_head: nn.Module | None, inputs: torch.Tensor,
                     follow_target: str) -> torch.Tensor:
            """One mean over agents: a lane's first vehicles scored by the first head, its later ones by
            ``follow_head`` (the first head for all when the model has none)."""
            if follow_head is None:
                return masked_ce(first_logits, batch[first_target], is_agent)
            per_token = torch.where(follows, ce(follow_head(inputs).reshape(B * T, -1), batch[follow_target].reshape(-1), reduction="none"),
                                    ce(first_logits.reshape(B * T, -1), batch[first_target].reshape(-1), reduction="none"))
            return (per_token * is_agent.reshape(-1)).sum() / is_agent.sum().clamp(min=1)

        # gaps: metres, or headway for later vehicles; speeds: absolute, or relative for later vehicles
        out["loss_gap"] = split_ce(self.gap_head(with_type), "gap", self.headway_head, with_type, "headway")
        out["loss_speed"] = split_ce(self.speed_head(with_gap), "speed", self.delta_head, with_gap, "delta")
        out["loss_d"] = masked_ce(self.d_head(with_speed), batch["d"], is_agent)
        out["loss"] = sum(v for k, v in out.items())
        return out


def collate(encoded: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Pad per-token arrays of :func:`encode_scene` outputs to (B, T, ...) tensors plus ``valid``."""
    T = max(len(e["lane"]) for e in encoded)
    B = len(encoded)
    out: dict[str, torch.Tensor] = {}
    for key in ("token_in", "lane_ctx", "slot", "type_in", "speed_ctx", "gap_in", "ratio_in", "lane", "type", "gap", "headway", "speed",
                "delta", "follows", "d", "is_agent"):
        first = encoded[0][key]
        arr = np.zeros((B, T) + first.shape[1:], first.dtype)
        for i, e in enumerate(encoded):
            arr[i, :len(e[key])] = e[key]
        out[key] = torch.as_tensor(arr)
    for key in ("lane", "type", "gap", "headway", "speed", "delta", "d"):
        out[key] = out[key].long()
    valid = np.zeros((B, T), bool)
    for i, e in enumerate(encoded):
        valid[i, :len(e["lane"])] = True
    out["valid"] = torch.as_tensor(valid)
    out["cond"] = torch.as_tensor(np.stack([e["cond"] for e in encoded]))
    out["ego"] = torch.as_tensor(np.stack([e["ego"] for e in encoded]))
    for key in ("limit", "ego_lane", "ego_speed"):
        out[key] = torch.as_tensor(np.asarray([e[key] for e in encoded], np.int64))
    return out


# -- sampling ----------------------------------------------------------------------------------------------
def _draw(logits: np.ndarray, allowed: np.ndarray, u: float) -> int:
    """Inverse-CDF draw among ``allowed`` classes (float64 softmax): a pure function of its inputs."""
    x = np.where(allowed, logits.astype(np.float64), -np.inf)
    p = np.exp(x - x.max())
    c = np.cumsum(p)
    return int(min(np.searchsorted(c, u * c[-1], side="right"), len(c) - 1))


def _ensure_any(allowed: np.ndarray) -> np.ndarray:
    return allowed if allowed.any() else np.ones_like(allowed)


def _draw_in_range(logits: np.ndarray, edges: np.ndarray, lo: float, hi: float, u_bin: float, u_jitter: float) -> float:
    """A value in [lo, hi] from binned logits: a bin among those with part of it in [lo, hi] (inverse-CDF
    on ``u_bin``), then uniform (``u_jitter``) in the part of that bin inside the range."""
    allowed = (edges[1:] > lo) & (edges[:-1] <= hi) & (hi >= lo)
    b = _draw(logits, _ensure_any(allowed), u_bin)
    v_lo, v_hi = max(edges[b], lo), min(edges[b + 1], hi)
    return v_lo + u_jitter * max(v_hi - v_lo, 0.0)


@torch.no_grad()
def sample_scenes(model: SceneAR, traffic: Sequence[str], num_lanes: Sequence[int], seeds: Sequence[int],
                  scene_ids: Sequence[int], model_id: str, compute_batch: int = 64,
                  roads: Sequence[str | Road] | None = None) -> list[Scene]:
    """One scene per (traffic, num_lanes, road, seed, scene_id); each a pure function of its own row.

    ``roads`` (default: all straight) gives each row a road kind, whose parameters are then drawn
    from the model's road prior with the row's seed, or a full :class:`Road`, used as it is. The
    network sees fixed ``compute_batch``-row inputs (padded), so a row's numbers never depend on
    which other rows share its call.
    """
    roads = ["straight"] * len(seeds) if roads is None else list(roads)
    if not len(roads) == len(seeds) == len(traffic) == len(num_lanes) == len(scene_ids):
        raise ValueError("traffic, num_lanes, seeds, scene_ids and roads must have one entry per scene")
    for road, n in zip(roads, num_lanes):
        kind = road.kind if isinstance(road, Road) else road
        if kind not in model.road_kinds:
            raise SceneError(f"this scene model was trained on roads {list(model.road_kinds)}, not {kind!r}")
        problems = road.problems(int(n)) if isinstance(road, Road) else road_kind_problems(kind, int(n))
        if problems:
            raise SceneError(problems[0])
    out: list[Scene] = []
    for start in range(0, len(seeds), compute_batch):
        stop = min(start + compute_batch, len(seeds))
        out += _sample_chunk(model, list(traffic[start:stop]), list(num_lanes[start:stop]), list(seeds[start:stop]),
                             list(scene_ids[start:stop]), model_id, compute_batch, roads[start:stop])
    return out


def _pad(rows: list[np.ndarray], n: int) -> torch.Tensor:
    arr = np.zeros((n,) + rows[0].shape, np.float32)
    arr[:len(rows)] = rows
    return torch.as_tensor(arr)


def _sample_chunk(model: SceneAR, traffic: list[str], lanes: list[int], seeds: list[int], scene_ids: list[int],
                  model_id: str, n_pad: int, road_requests: Sequence[str | Road]) -> list[Scene]:
    n = len(seeds)
    rngs = [np.random.default_rng(int(s)) for s in seeds]
    # every scene's uniforms, drawn up front: PREFIX_UNIFORMS for the prefix, then NUM_UNIFORMS per token
    uniforms = [r.random(PREFIX_UNIFORMS + NUM_UNIFORMS * (MAX_TOKENS + 1)) for r in rngs]
    roads = [r if isinstance(r, Road) else model.draw_road(r, uniforms[i][0]) for i, r in enumerate(road_requests)]
    conds = [condition_vector(t, nl, 30.0, rd) for t, nl, rd in zip(traffic, lanes, roads)]
    cond_t = _pad(conds, n_pad)
    # prefix: speed limit, ego lane, ego speed
    limit_logits = model.limit_head(cond_t[:, :-1]).numpy()
    limit_k = [_draw(limit_logits[i], np.ones(len(SPEED_LIMITS), bool), uniforms[i][1]) for i in range(n)]
    limits = [float(SPEED_LIMITS[k]) for k in limit_k]
    conds = [condition_vector(t, nl, lim, rd) for t, nl, lim, rd in zip(traffic, lanes, limits, roads)]
    cond_t = _pad(conds, n_pad)
    lane_logits = model.ego_lane_head(cond_t).numpy()
    # the ego drives on the main road, on a lane that exists where it is
    ego_lanes = [_draw(lane_logits[i], np.array([k < lanes[i] and lane_exists(roads[i], lanes[i], k, 0.0) for k in range(MAX_LANES)]),
                       uniforms[i][2]) for i in range(n)]
    lane_1h = _pad([np.eye(MAX_LANES, dtype=np.float32)[k] for k in ego_lanes], n_pad)
    speed_logits = model.ego_speed_head(torch.cat([cond_t, lane_1h], 1)).numpy()
    ego_ratio = []
    for i in range(n):
        k = _draw(speed_logits[i], np.ones(NUM_SPEED, bool), uniforms[i][3])
        ego_ratio.append(SPEED_EDGES[k] + uniforms[i][4] * (SPEED_EDGES[k + 1] - SPEED_EDGES[k]))
    ego_t = _pad([ego_vector(el, nl, r) for el, nl, r in zip(ego_lanes, lanes, ego_ratio)], n_pad)

    states = [LaneState(lanes[i], ego_lanes[i], ego_ratio[i], roads[i]) for i in range(n)]
    agents: list[list[Agent]] = [[] for _ in range(n)]
    done = [False] * n
    h = model.start(cond_t, ego_t)
    for t in range(MAX_TOKENS + 1):
        if all(done):
            break
        h = model.step(h, _pad([st.last_token for st in states], n_pad), cond_t, ego_t)
        base = torch.cat([h, cond_t, ego_t, _pad([st.lane_context() for st in states], n_pad)], 1)
        lane_logits = model.lane_head(base).numpy()
        chosen_lane = [STOP] * n
        for i, st in enumerate(states):
            if done[i]:
                continue
            u = uniforms[i][PREFIX_UNIFORMS + NUM_UNIFORMS * t:]
            allowed = np.zeros(NUM_SLOTS + 1, bool)
            for lane in range(st.lowest if st.lane is None else st.lane, st.num_lanes):
                # a lane is open while a vehicle still fits in it (a lane that ends early may hold none);
                # the ego's lane always is until the ego is placed
                allowed[lane_slot(lane)] = (lane == st.ego_lane and not st.ego_placed) or _room_after(st, lane)
            if not st.ego_placed:  # the ego's lane cannot be left (nor the scene ended) before the ego
                allowed[lane_slot(st.ego_lane) + 1:] = False
            else:
                allowed[STOP] = True
            if t >= MAX_TOKENS - 1 and st.ego_placed:
                allowed[:] = False
                allowed[STOP] = True
            slot = _draw(lane_logits[i], _ensure_any(allowed), u[0])
            chosen_lane[i] = STOP if slot == STOP else slot + RAMP_LANE
        slots = [st.slot(chosen_lane[i]) if chosen_lane[i] != STOP else np.zeros(SLOT_DIM, np.float32) for i, st in enumerate(states)]
        with_slot = torch.cat([base, _pad(slots, n_pad)], 1)
        type_logits = model.type_head(with_slot).numpy()
        chosen_type = [0] * n
        for i, st in enumerate(states):
            if done[i] or chosen_lane[i] == STOP:
                continue
            lane = chosen_lane[i]
            allowed = np.zeros(NUM_TYPES, bool)
            for k in range(len(VEHICLE_TYPES)):
                allowed[k] = _fits(st, lane, k)
            if lane == st.ego_lane and not st.ego_placed:
                allowed[EGO_TYPE] = True
            k = _draw(type_logits[i], _ensure_any(allowed), uniforms[i][PREFIX_UNIFORMS + NUM_UNIFORMS * t + 1])
            chosen_type[i] = k
        type_in = [type_features(chosen_type[i]) if chosen_lane[i] != STOP else np.zeros(NUM_TYPES + 1, np.float32) for i in range(n)]
        with_type = torch.cat([with_slot, _pad(type_in, n_pad)], 1)
        gap_logits = model.gap_head(with_type).numpy()
        headway_logits = model.headway_head(with_type).numpy() if model.headway_head is not None else None
        gaps, ss = [0.0] * n, [0.0] * n
        speed_ctx = [np.zeros(SPEED_CTX_DIM, np.float32)] * n
        for i, st in enumerate(states):
            if done[i] or chosen_lane[i] == STOP:
                continue
            lane, k = chosen_lane[i], chosen_type[i]
            u = uniforms[i][PREFIX_UNIFORMS + NUM_UNIFORMS * t:]
            if k == EGO_TYPE:
                first, s0, len0, _ = st.base(lane)
                ss[i] = 0.0
                gaps[i] = -s0 if first else -s0 - (len0 + EGO_LENGTH) / 2.0
            else:
                first, _, _, ratio0 = st.base(lane)
                # bins in metres: fixed, or a time headway's behind the vehicle behind at its speed
                edges, logits = ((GAP_EDGES, gap_logits[i]) if headway_logits is None or first
                                 else (headway_gap_edges(ratio0 * limits[i]), headway_logits[i]))
                # some bin always meets the range: the type was chosen among those that fit
                gaps[i] = _draw_in_range(logits, edges, *_gap_range(st, lane, k), u[2], u[3])
                ss[i] = st.s_of(lane, k, gaps[i])
                speed_ctx[i] = speed_context(st, lane, ss[i], TYPE_LENGTH[k])
        with_gap = torch.cat([with_type, _pad([np.float32([g / 50.0]) for g in gaps], n_pad), _pad(speed_ctx, n_pad)], 1)
        speed_logits = model.speed_head(with_gap).numpy()
        delta_logits = model.delta_head(with_gap).numpy() if model.delta_head is not None else None
        ratios = [0.0] * n
        for i, st in enumerate(states):
            if done[i] or chosen_lane[i] == STOP:
                continue
            u = uniforms[i][PREFIX_UNIFORMS + NUM_UNIFORMS * t:]
            if chosen_type[i] == EGO_TYPE:
                ratios[i] = st.ego_ratio
            else:
                r_lo, r_hi = _feasible_ratios(st, chosen_lane[i], chosen_type[i], ss[i], gaps[i], limits[i])
                first, _, _, ratio0 = st.base(chosen_lane[i])
                # bins in speed-ratio units: absolute, or offset by the speed of the vehicle behind
                edges, logits = (SPEED_EDGES, speed_logits[i]) if delta_logits is None or first else (ratio0 + DELTA_EDGES, delta_logits[i])
                ratios[i] = _draw_in_range(logits, edges, r_lo, r_hi, u[4], u[5])
        with_speed = torch.cat([with_gap, _pad([np.float32([r]) for r in ratios], n_pad)], 1)
        d_logits = model.d_head(with_speed).numpy()
        for i, st in enumerate(states):
            if done[i]:
                continue
            lane, k = chosen_lane[i], chosen_type[i]
            if lane == STOP:
                done[i] = True
                st.push_stop()
                continue
            d = 0.0
            if k != EGO_TYPE:
                vt = VEHICLE_TYPES[k]
                # stay inside the own lane: a vehicle reaching into the next one could sit on top of
                # a vehicle there, which the (lane, s) masks cannot see
                in_lane = np.abs(D_CENTRES) + vt.width / 2.0 <= LANE_WIDTH / 2.0 + 1e-9
                d = float(D_CENTRES[_draw(d_logits[i], _ensure_any(in_lane), uniforms[i][PREFIX_UNIFORMS + NUM_UNIFORMS * t + 6])])
                agents[i].append(Agent(lane, ss[i], d, ratios[i] * limits[i], vt.length, vt.width, vt.kind))
            st.push(lane, k, ss[i], ratios[i], d, gaps[i])
    return [Scene(scene_ids[i], seeds[i], traffic[i], lanes[i], limits[i], ego_lanes[i], ego_ratio[i] * limits[i], tuple(agents[i]),
                  model_id, roads[i]) for i in range(n)]


def _gap_range(st: LaneState, lane: int, k: int) -> tuple[float, float]:
    """Allowed [lo, hi] of the gap for a vehicle of type ``k`` in ``lane`` (hi < lo: it does not fit)."""
    first, s0, len0, _ = st.base(lane)
    length = TYPE_LENGTH[k]
    offset = s0 if first else s0 + (len0 + length) / 2.0
    lo = 0.0 if first else MIN_CLEARANCE
    s_max = min(WINDOW_AHEAD, st.ends[lane])  # a vehicle's centre stays on its lane, short of where it ends
    if lane == st.ego_lane and not st.ego_placed:  # must end behind the ego, clear of it
        s_max = min(s_max, -(length + EGO_LENGTH) / 2.0 - MIN_CLEARANCE)
    return lo, s_max - offset


def _feasible_ratios(st: LaneState, lane: int, k: int, s: float, gap: float, limit: float) -> tuple[float, float]:
    """Speed ratios (speed / limit) at which no known neighbour has to brake harder than its limit in SUMO:
    the vehicle behind (placed just before) behind this one, and this one behind the ego when the ego
    is ahead (:mod:`aigc_synth.scenes.car_following`: SUMO's own car-following rule, which its ground
    truth almost never breaks). A constraint of the data, not a model choice - like the overlap mask."""
    lo, hi = 0.0, SPEED_MAX_RATIO
    first, _, _, follower_ratio = st.base(lane)
    if not first:
        lo = min_leader_speed(gap, follower_ratio * limit, _decel(st.prev_type), _decel(k)) / limit
    if lane == st.ego_lane and not st.ego_placed:
        ego_gap = -s - (TYPE_LENGTH[k] + EGO_LENGTH) / 2.0
        hi = min(hi, max_follower_speed(ego_gap, st.ego_ratio * limit, _decel(k), DECEL["car"]) / limit)
    return lo, max(hi, lo)


def _decel(k: int) -> float:
    """Normal braking limit (m/s²) of a vehicle type index (the ego is a car)."""
    return DECEL["car" if k == EGO_TYPE else VEHICLE_TYPES[k].kind]


def _fits(st: LaneState, lane: int, k: int) -> bool:
    """Whether a type-``k`` vehicle fits in ``lane`` after what is placed (the gap bins cover [0, window])."""
    lo, hi = _gap_range(st, lane, k)
    return hi >= lo and hi >= GAP_EDGES[0] and lo < GAP_EDGES[-1]


def _room_after(st: LaneState, lane: int) -> bool:
    return any(_fits(st, lane, k) for k in range(len(VEHICLE_TYPES)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MIN_CLEARANCE", "SceneAR", "collate", "count_parameters", "sample_scenes"]
