"""Procedural forward-camera driving scenes: the embedded default data source.

Every image is a pure function of ``(condition, seed, size)``. Scalar scene parameters (horizon,
road curve, vehicles, ...) come from a per-sample ``numpy`` generator; the pixels are then drawn for
the whole batch at once with broadcasting, which keeps the renderer well above 500 images/s at
64×64 on two cores. The scene has a sky and horizon, a road in perspective with lane markings, and
vehicles whose number follows ``traffic``. Weather and lighting are visible on purpose, because a
conditional generator can only learn what the data shows:

* fog   – contrast falls with distance (exponential blend toward a fog colour);
* rain  – dark grey sky, wet road with vertical reflections, streaks;
* snow  – white verge, pale road, flakes;
* night – dark scene, head lights (oncoming lane) and tail lights (cars ahead) glow;
* dusk  – warm orange/purple tint and lower light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from aigc_synth.schema import DEFAULT_SCHEMA

#: Vehicle count range (inclusive) per traffic level.
TRAFFIC_VEHICLES = {"light": (1, 2), "moderate": (3, 5), "heavy": (7, 10)}
MAX_VEHICLES = max(hi for _, hi in TRAFFIC_VEHICLES.values())

SKY_DAY = {  # (top colour, horizon colour) in linear-ish RGB 0..1
    "clear": ((0.25, 0.50, 0.90), (0.70, 0.82, 0.95)),
    "overcast": ((0.55, 0.57, 0.60), (0.75, 0.76, 0.78)),
    "rain": ((0.30, 0.32, 0.36), (0.50, 0.52, 0.55)),
    "fog": ((0.72, 0.73, 0.74), (0.80, 0.80, 0.80)),
    "snow": ((0.72, 0.74, 0.78), (0.88, 0.89, 0.92)),
}
LIGHT = {"day": 1.0, "dusk": 0.62, "night": 0.16}
TINT = {"day": (1.0, 1.0, 1.0), "dusk": (1.18, 0.80, 0.72), "night": (0.70, 0.80, 1.25)}
DUSK_SKY = ((0.35, 0.22, 0.45), (1.00, 0.55, 0.25))
CAR_COLOURS = np.array(
    [(0.75, 0.10, 0.10), (0.10, 0.25, 0.70), (0.85, 0.85, 0.85), (0.12, 0.12, 0.12),
     (0.90, 0.75, 0.15), (0.20, 0.55, 0.25), (0.55, 0.55, 0.58), (0.95, 0.45, 0.10)],
    dtype=np.float32,
)


@dataclass
class SceneBatch:
    """Rendered scenes: ``images`` uint8 (B, H, W, 3); ``boxes[i]`` float32 (n_i, 4) as x0, y0, x1, y1 pixels."""

    images: np.ndarray
    boxes: list[np.ndarray]
    codes: np.ndarray
    seeds: np.ndarray

    @property
    def vehicle_counts(self) -> np.ndarray:
        return np.array([len(b) for b in self.boxes], dtype=np.int64)


def render_scenes(codes: np.ndarray, seeds: Sequence[int], size: int = 64) -> SceneBatch:
    """Render one scene per row of ``codes`` (B, 3: weather, time_of_day, traffic value indices).

    ``seeds`` are per-sample integers; the same (code row, seed, size) always gives the same pixels
    and boxes, whatever else is in the batch.
    """
    codes = np.asarray(codes, dtype=np.int64).reshape(-1, 3)
    seeds = np.asarray(seeds, dtype=np.uint64).reshape(-1)
    if len(seeds) != len(codes):
        raise ValueError(f"{len(codes)} conditions but {len(seeds)} seeds")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    B, H, W = len(codes), size, size
    weathers = [DEFAULT_SCHEMA.factors[0][1][c] for c in codes[:, 0]]
    times = [DEFAULT_SCHEMA.factors[1][1][c] for c in codes[:, 1]]
    traffic = [DEFAULT_SCHEMA.factors[2][1][c] for c in codes[:, 2]]

    # ---- per-sample scalar parameters (the only place randomness enters) -------------------
    horizon = np.empty(B, np.float32)
    vanish_x = np.empty(B, np.float32)
    curve = np.empty(B, np.float32)
    dash_phase = np.empty(B, np.float32)
    sky_top = np.empty((B, 3), np.float32)
    sky_hor = np.empty((B, 3), np.float32)
    verge = np.empty((B, 3), np.float32)
    road = np.empty((B, 3), np.float32)
    light = np.empty(B, np.float32)
    tint = np.empty((B, 3), np.float32)
    fog_density = np.zeros(B, np.float32)
    veh = np.zeros((B, MAX_VEHICLES, 6), np.float32)  # depth, lane, colour r,g,b (first len(boxes[i]) rows)
    noise_fields = np.empty((B, H, W), np.float32)
    boxes: list[np.ndarray] = []
    for i in range(B):
        rng = np.random.default_rng(int(seeds[i]))
        w, t, tr = weathers[i], times[i], traffic[i]
        horizon[i] = rng.uniform(0.36, 0.46) * H
        vanish_x[i] = rng.uniform(0.42, 0.58) * W
        curve[i] = rng.uniform(-0.25, 0.25) * W
        dash_phase[i] = rng.uniform(0, 1)
        top, hor = SKY_DAY[w]
        if t == "dusk" and w in ("clear", "overcast"):
            top, hor = DUSK_SKY
        jitter = rng.uniform(-0.04, 0.04, 3)
        sky_top[i] = np.clip(np.asarray(top) + jitter, 0, 1)
        sky_hor[i] = np.clip(np.asarray(hor) + jitter, 0, 1)
        if w == "snow":
            verge[i] = (0.92, 0.93, 0.96)
            road[i] = (0.55, 0.56, 0.60)
        else:
            g = rng.uniform(-0.05, 0.05)
            verge[i] = (0.25 + g, 0.45 + g, 0.18 + g) if w in ("clear", "overcast") else (0.22 + g, 0.33 + g, 0.18 + g)
            road[i] = (0.30, 0.30, 0.32) if w != "rain" else (0.17, 0.17, 0.19)
        light[i] = LIGHT[t] * rng.uniform(0.92, 1.08)
        tint[i] = TINT[t]
        if w == "fog":
            fog_density[i] = rng.uniform(2.2, 3.2)
        elif w in ("rain", "snow"):
            fog_density[i] = 0.5
        noise_fields[i] = rng.random((H, W), dtype=np.float32)
        lo, hi = TRAFFIC_VEHICLES[tr]
        n = int(rng.integers(lo, hi + 1))
        depth = np.sort(rng.uniform(0.12, 0.95, n))  # far (small) first: drawn first, occluded later
        lane = rng.integers(0, 3, n)  # 0 = oncoming lane (left), 1..2 = our direction
        colour = CAR_COLOURS[rng.integers(0, len(CAR_COLOURS), n)]
        veh[i, :n, 0] = depth
        veh[i, :n, 1] = lane
        veh[i, :n, 2:5] = colour
        boxes.append(np.zeros((n, 4), np.float32))

    # ---- geometry shared by all layers --------------------------------------------------------
    ys = (np.arange(H, dtype=np.float32) + 0.5)[None, :, None]  # (1,H,1)
    xs = (np.arange(W, dtype=np.float32) + 0.5)[None, None, :]  # (1,1,W)
    hz = horizon[:, None, None]
    below = ys > hz
    depth_t = np.clip((ys - hz) / (H - hz), 0.0, 1.0)  # 0 at horizon (far), 1 at bottom (near)
    # road centre line bends with a quadratic curve toward the horizon
    centre = vanish_x[:, None, None] + curve[:, None, None] * (1.0 - depth_t) ** 2
    half_width = 0.62 * W * depth_t + 0.5
    rel = (xs - centre) / half_width  # -1..1 across the road
    on_road = below & (np.abs(rel) < 1.0)

    # ---- sky, verge, road ------------------------------------------------------------------
    sky_t = np.clip(ys / hz, 0.0, 1.0)[..., None]  # (B,H,1,1)
    sky = sky_top[:, None, None, :] * (1 - sky_t) + sky_hor[:, None, None, :] * sky_t
    img = np.broadcast_to(sky, (B, H, W, 3)).copy()
    ground_shade = (0.75 + 0.25 * depth_t)[..., None]
    img = np.where(below[..., None], verge[:, None, None, :] * ground_shade, img)
    img = np.where(on_road[..., None], road[:, None, None, :] * (0.85 + 0.15 * depth_t[..., None]), img)

    # lane markings: solid edges, dashed lane separators at rel = ±1/3; dash period shrinks with distance
    line_w = 0.035 + 0.02 * depth_t
    edge = on_road & (np.abs(np.abs(rel) - 0.93) < line_w)
    dash_on = np.mod(2.2 / (depth_t + 0.08) + dash_phase[:, None, None], 1.0) < 0.5
    sep = on_road & dash_on & (np.minimum(np.abs(rel - 1 / 3), np.abs(rel + 1 / 3)) < line_w)
    marking = edge | sep
    mark_col = np.where((np.abs(rel + 1 / 3) < line_w)[..., None],  # the oncoming-lane separator is yellow
                         np.array([0.95, 0.80, 0.20], np.float32), np.array([0.92, 0.92, 0.92], np.float32))
    snow_cover = np.array([w == "snow" for w in weathers])[:, None, None, None]
    mark_alpha = np.where(snow_cover, np.float32(0.35), np.float32(0.9))
    img = np.where(marking[..., None], img * (1 - mark_alpha) + mark_col * mark_alpha, img)

    # ---- vehicles (rear views; lane 0 is oncoming and shows head lights) --------------------
    # Boxes are small, so each car is painted into integer slices of its own image: far cheaper
    # than a full-frame mask per vehicle slot.
    emissive = np.zeros((B, H, W, 3), np.float32)  # light sources survive darkening
    reflect_src = np.zeros((B, H, W, 3), np.float32)
    lane_rel = np.array([-2 / 3, 0.0, 2 / 3], np.float32)
    head_col = np.array([1.0, 0.95, 0.75], np.float32)
    tail_col = np.array([1.0, 0.12, 0.08], np.float32)
    for i in range(B):
        for k in range(len(boxes[i])):
            d = float(veh[i, k, 0])
            lane = int(veh[i, k, 1])
            yb = horizon[i] + d * (H - horizon[i])  # bottom of the car on the road
            road_half = 0.62 * W * d + 0.5
            cx = vanish_x[i] + curve[i] * (1 - d) ** 2 + lane_rel[lane] * road_half
            cw = max(0.34 * road_half, 1.0)
            ch = 0.75 * cw
            x0, x1, y0, y1 = cx - cw / 2, cx + cw / 2, yb - ch, yb
            boxes[i][k] = (max(x0, 0.0), max(y0, 0.0), min(x1, W), min(y1, H))
            ix0, ix1 = max(int(round(x0)), 0), min(max(int(round(x1)), int(round(x0)) + 1), W)
            iy0, iy1 = max(int(round(y0)), 0), min(max(int(round(y1)), int(round(y0)) + 1), H)
            if ix0 >= ix1 or iy0 >= iy1:
                continue
            colour = veh[i, k, 2:5]
            img[i, iy0:iy1, ix0:ix1] = colour
            hgt, wid = iy1 - iy0, ix1 - ix0
            win_y1 = iy0 + max(int(round(0.45 * hgt)), 1)
            win_x0, win_x1 = ix0 + int(round(0.12 * wid)), ix1 - int(round(0.12 * wid))
            if win_x1 > win_x0 and hgt >= 3:
                img[i, iy0:win_y1, win_x0:win_x1] = 0.15 + 0.15 * sky_hor[i]
            bump_y0 = iy1 - max(int(round(0.18 * hgt)), 1) if hgt >= 3 else iy1
            img[i, bump_y0:iy1, ix0:ix1] = 0.08
            reflect_src[i, iy0:iy1, ix0:ix1] = img[i, iy0:iy1, ix0:ix1] * 0.6
            # lamps: two blobs at the lower corners (head lights if oncoming, tail lights otherwise)
            lamp_col = head_col if lane == 0 else tail_col
            ly = min(max(int(round(y1 - 0.32 * ch)), 0), H - 1)
            lr = max(int(round(0.12 * cw)), 0)
            for lx in (int(round(x0 + 0.16 * cw)), int(round(x1 - 0.16 * cw)) - 1):
                if 0 <= lx < W:
                    sl = (i, slice(max(ly - lr, 0), ly + lr + 1), slice(max(lx - lr, 0), lx + lr + 1))
                    img[sl] = lamp_col * 0.8
                    emissive[sl] = lamp_col

    # ---- lighting: time of day scales the lit scene; lamps glow on top at night/dusk --------
    img *= light[:, None, None, None] * tint[:, None, None, :]
    glow_strength = np.array([{"day": 0.0, "dusk": 0.6, "night": 1.0}[t] for t in times], np.float32)
    lit = np.nonzero(glow_strength)[0]
    if len(lit):
        em = emissive[lit]
        glow = em.copy()
        for shift in (1, 2):  # cheap halo around each lamp
            glow += 0.5 * (np.roll(em, shift, 1) + np.roll(em, -shift, 1) + np.roll(em, shift, 2) + np.roll(em, -shift, 2)) / shift
        img[lit] += glow_strength[lit, None, None, None] * np.clip(glow, 0, 1.5) * 0.7
    # ---- weather ------------------------------------------------------------------------------
    is_rain = np.array([w == "rain" for w in weathers])
    is_snow = np.array([w == "snow" for w in weathers])
    rain = np.nonzero(is_rain)[0]
    if len(rain):
        # wet road: mirror what stands above each road pixel (vertical reflection), faintly
        src = reflect_src[rain] + emissive[rain] * glow_strength[rain, None, None, None]
        mirrored = (np.roll(src, 2, axis=1) + np.roll(src, 3, axis=1) + np.roll(src, 4, axis=1)) / 3.0
        wet = on_road[rain][..., None]
        sub = img[rain]
        sub = np.where(wet, sub + 0.45 * mirrored * np.maximum(light[rain, None, None, None], 0.5), sub)
        # streaks: sparse seeds smeared along a slanted line
        seeds_mask = noise_fields[rain] > 0.985
        streak = seeds_mask.astype(np.float32)
        for s_ in range(1, 5):
            streak += np.roll(np.roll(seeds_mask, s_, axis=1), s_ // 2, axis=2)
        streak = np.clip(streak, 0, 1)[..., None]
        rain_col = np.array([0.75, 0.78, 0.85], np.float32) * np.maximum(light[rain], 0.45)[:, None, None, None]
        img[rain] = sub * (1 - 0.55 * streak) + 0.55 * streak * rain_col
    snow = np.nonzero(is_snow)[0]
    if len(snow):
        flakes = (noise_fields[snow] > 0.965).astype(np.float32)
        big = np.clip(flakes + 0.5 * np.roll(flakes, 1, axis=2) + 0.5 * np.roll(flakes, 1, axis=1), 0, 1)[..., None]
        flake_col = np.array([0.97, 0.97, 1.0], np.float32) * np.maximum(light[snow], 0.55)[:, None, None, None]
        img[snow] = img[snow] * (1 - big) + big * flake_col

    # fog and haze: blend toward a fog colour with distance (sky counts as far away)
    hazy = np.nonzero(fog_density > 0)[0]
    if len(hazy):
        dist = np.where(below[hazy], 1.0 - depth_t[hazy], np.float32(1.0))  # 0 near, 1 at horizon and sky
        amount = (1.0 - np.exp(-fog_density[hazy, None, None] * dist * np.float32(1.3)))[..., None]
        fog_col = (np.array([0.78, 0.79, 0.80], np.float32) * (light[hazy] * 0.9 + 0.1)[:, None] * tint[hazy])[:, None, None, :]
        sub = img[hazy] * (1 - amount) + fog_col * amount
        glow_h = glow_strength[hazy]
        if glow_h.any():  # lamps still pierce fog at night
            sub += 0.5 * glow_h[:, None, None, None] * emissive[hazy] * (1 - amount)
        img[hazy] = sub

    # mild sensor noise so flat regions are not perfectly flat
    img += (noise_fields[..., None] - np.float32(0.5)) * np.float32(0.03)
    assert img.dtype == np.float32, img.dtype  # float64 creep would halve the speed
    images = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return SceneBatch(images=images, boxes=boxes, codes=codes, seeds=seeds.astype(np.int64))


def render_conditions(conditions: Sequence[Mapping[str, str]], seeds: Sequence[int], size: int = 64) -> SceneBatch:
    """Like :func:`render_scenes` but takes ``{factor: value}`` mappings (validated)."""
    return render_scenes(DEFAULT_SCHEMA.encode_many(conditions), seeds, size)
