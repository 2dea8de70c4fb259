"""The scene generators: scene_ar sampling guarantees, training through the real config, resume,
and the two baselines behind the same checkpoint format. No SUMO needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from aigc_synth.errors import CheckpointError, UsageError
from aigc_synth.models.scene_ar import MIN_CLEARANCE, SceneAR, sample_scenes
from aigc_synth.models.scene_tokens import (
    DELTA_EDGES,
    HEADWAY_EDGES,
    HEADWAY_SPEED_FLOOR,
    NUM_DELTA,
    SPEED_EDGES,
    STOP,
    encode_scene,
    headway_gap_edges,
    lane_slot,
)
from aigc_synth.scenes.baselines import RandomSceneSampler
from aigc_synth.scenes.sumo import MIN_GAP
from aigc_synth.scenes.format import WINDOW_AHEAD, WINDOW_BEHIND, EGO_LENGTH, LANE_COUNTS, ROAD_KINDS, TRAFFIC_LEVELS, SceneError, scenes_to_table, validate_scene
from aigc_synth.models.scene_families import (
    SCENE_GENERATOR_FORMAT,
    export_scene_generator,
    load_scene_generator,
    load_scene_generator_from_bytes,
    resolve_scene_checkpoint,
)

TINY_SCENE_OVERRIDES = ["model=scene_ar", "model.hidden=16", "model.head_hidden=16", "train.steps=4", "train.batch_size=8",
                        "train.threads=1", "train.log_every=1", "train.eval_every=2", "train.checkpoint_every=2"]


def random_scene_ar(seed: int = 0, headway_gap: bool = False) -> SceneAR:
    torch.manual_seed(seed)
    return SceneAR(hidden=16, head_hidden=16, headway_gap=headway_gap).eval()


@pytest.fixture(scope="module")
def scene_parquet(tmp_path_factory) -> Path:
    """60 valid-format scenes (the random baseline's) over every traffic level and lane count."""
    sampler = RandomSceneSampler()
    scenes = [sampler.sample(t, n, seed, scene_id=seed) for seed, (t, n) in
              enumerate((t, n) for t in TRAFFIC_LEVELS for n in LANE_COUNTS for _ in range(7))]
    folder = tmp_path_factory.mktemp("scenes")
    pq.write_table(scenes_to_table(scenes), folder / "part-00000.parquet")
    return folder


@pytest.mark.parametrize("headway_gap", [False, True], ids=["gap-metres", "gap-headway"])
def test_untrained_scene_ar_still_only_makes_contract_valid_scenes(headway_gap):
    # the masks, not the weights, guarantee the contract: lanes in range, inside the window, no overlaps
    traffic = [t for t in TRAFFIC_LEVELS for _ in LANE_COUNTS for _ in range(8)]
    lanes = [n for _ in TRAFFIC_LEVELS for n in LANE_COUNTS for _ in range(8)]
    scenes = sample_scenes(random_scene_ar(headway_gap=headway_gap), traffic, lanes, list(range(len(traffic))), list(range(len(traffic))), "m")
    assert [p for sc in scenes for p in validate_scene(sc)] == []
    assert [(sc.traffic, sc.num_lanes) for sc in scenes] == list(zip(traffic, lanes))
    assert sum(len(sc.agents) for sc in scenes) > 0
    for sc in scenes:  # bumper gaps in every lane, ego included, respect the clearance
        lanes_of: dict[int, list] = {}
        for a in sc.agents:
            lanes_of.setdefault(a.lane, []).append((a.s, a.length))
        lanes_of.setdefault(sc.ego_lane, []).append((0.0, EGO_LENGTH))
        for vehicles in lanes_of.values():
            vehicles.sort()
            for (s0, l0), (s1, l1) in zip(vehicles, vehicles[1:]):
                assert s1 - s0 - (l0 + l1) / 2 >= MIN_CLEARANCE - 1e-6


@pytest.mark.parametrize("headway_gap", [False, True], ids=["gap-metres", "gap-headway"])
def test_scene_ar_rows_do_not_depend_on_their_batch(headway_gap):
    model = random_scene_ar(1, headway_gap)
    seeds = [11, 12, 13, 14, 15]
    alone = [sample_scenes(model, ["heavy"], [3], [s], [i], "m")[0] for i, s in enumerate(seeds)]
    together = sample_scenes(model, ["heavy"] * 5, [3] * 5, seeds, list(range(5)), "m", compute_batch=64)
    assert together == alone
    assert len({sc.agents for sc in together}) == 5  # different seeds, different scenes


def test_encode_scene_puts_the_ego_in_its_lane_and_ends_with_stop():
    sc = RandomSceneSampler().sample("moderate", 3, seed=4)
    enc = encode_scene(sc)
    assert len(enc["lane"]) == len(sc.agents) + 2  # agents + ego + STOP
    assert list(enc["lane"][:-1]) == sorted(enc["lane"][:-1]) and enc["lane"][-1] == STOP
    assert set(enc["lane"][:-1]) <= {lane_slot(k) for k in range(3)}  # slot 0 is the on-ramp, absent here
    assert int((~enc["is_agent"][:-1]).sum()) == 1  # exactly one ego token


def test_scene_ar_trains_from_the_real_config_and_resumes_exactly(tmp_path, compose_config, scene_parquet):
    from aigc_synth.training.scene_trainer import train_scene_model

    def run(out, steps, *extra):  # a constant learning rate: the cosine schedule is a function of train.steps
        cfg = compose_config("train", [*TINY_SCENE_OVERRIDES, f"train.steps={steps}", f"train.out_dir={out}",
                                       f"data.scenes={scene_parquet}", "model.lr_final_fraction=1.0", *extra])
        return train_scene_model(cfg.train, cfg.model, cfg.data, progress=False)

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4)
    by_loss = run(tmp_path / "c", 4, "train.best_metric=val_loss")
    a, b, c = load_scene_generator(straight), load_scene_generator(resumed), load_scene_generator(by_loss)
    assert a.family == "scene_ar" and a.traffic == TRAFFIC_LEVELS and a.lanes == LANE_COUNTS
    for k, v in a._impl.state_dict().items():
        assert torch.equal(v, b._impl.state_dict()[k]), k
        assert torch.equal(v, c._impl.state_dict()[k]), k  # sampling the validation draws leaves training untouched
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4] and any("val_loss" in r for r in log)
    evals = [r for r in log if "val_mmd" in r]
    assert [r["step"] for r in evals] == [2, 4] and all(r["val_mmd"] > 0 for r in evals)
    best = torch.load(tmp_path / "a" / "best_generator.pt", weights_only=True)["meta"]["best"]
    assert best["metric"] == "val_mmd" and best["value"] == min(r["val_mmd"] for r in evals)
    assert torch.load(tmp_path / "c" / "best_generator.pt", weights_only=True)["meta"]["best"]["metric"] == "val_loss"
    ckpt = torch.load(straight, weights_only=True)
    assert ckpt["format"] == SCENE_GENERATOR_FORMAT and "train_config" in ckpt["meta"]


def test_sample_validator_ranks_the_model_that_made_the_scenes_first():
    """val_mmd (the scene trainer's default checkpoint selection) separates a trained model from an untrained one
    on the trained model's own scenes: if it read noise only, the two would score alike."""
    from aigc_synth.training.scene_trainer import SampleValidator

    trained = load_scene_generator(resolve_scene_checkpoint(None))._impl
    cells = [(t, n) for t in TRAFFIC_LEVELS for n in LANE_COUNTS] * 10
    traffic, lanes, ids = [t for t, _ in cells], [n for _, n in cells], list(range(1000, 1000 + len(cells)))
    validator = SampleValidator(sample_scenes(trained, traffic, lanes, ids, ids, "reference"))
    own, untrained = validator(trained), validator(random_scene_ar(0))
    assert set(own) == {"val_mmd", "val_mmd_straight"}
    assert own["val_mmd"] < 0.1 * untrained["val_mmd"]
    assert validator(trained) == own  # fixed seeds: checkpoints differ only by their weights


def test_scene_ar_refuses_to_resume_another_architecture(tmp_path, compose_config, scene_parquet):
    from aigc_synth.training.scene_trainer import train_scene_model

    base = [*TINY_SCENE_OVERRIDES, "train.steps=2", f"train.out_dir={tmp_path}", f"data.scenes={scene_parquet}"]
    cfg = compose_config("train", base)
    train_scene_model(cfg.train, cfg.model, cfg.data, progress=False)
    cfg = compose_config("train", [*base, "model.hidden=24", "train.steps=4"])
    with pytest.raises(CheckpointError, match="model.hidden=16"):
        train_scene_model(cfg.train, cfg.model, cfg.data, progress=False)


def test_scene_training_needs_scenes(tmp_path, compose_config):
    from aigc_synth.training.scene_trainer import train_scene_model

    cfg = compose_config("train", [*TINY_SCENE_OVERRIDES, f"train.out_dir={tmp_path}"])
    with pytest.raises(UsageError, match="data.scenes=DIR"):
        train_scene_model(cfg.train, cfg.model, cfg.data, progress=False)
    cfg = compose_config("train", [*TINY_SCENE_OVERRIDES, f"train.out_dir={tmp_path}", f"data.scenes={tmp_path / 'none'}"])
    with pytest.raises(UsageError, match="no scenes at"):
        train_scene_model(cfg.train, cfg.model, cfg.data, progress=False)
    out = tmp_path / "run"
    cfg = compose_config("train", [*TINY_SCENE_OVERRIDES, f"train.out_dir={out}", f"data.scenes={tmp_path / 'none'}",
                                   "model.speed_coding=relatve"])
    with pytest.raises(UsageError, match="model.speed_coding must be one of"):  # before the scenes are read
        train_scene_model(cfg.train, cfg.model, cfg.data, progress=False)
    cfg = compose_config("train", [*TINY_SCENE_OVERRIDES, f"train.out_dir={out}", f"data.scenes={tmp_path / 'none'}",
                                   "model.gap_coding=meters"])
    with pytest.raises(UsageError, match="model.gap_coding must be one of"):
        train_scene_model(cfg.train, cfg.model, cfg.data, progress=False)
    cfg = compose_config("train", [*TINY_SCENE_OVERRIDES, f"train.out_dir={out}", f"data.scenes={tmp_path / 'none'}",
                                   "train.best_metric=kid"])
    with pytest.raises(UsageError, match="train.best_metric for a scene model"):
        train_scene_model(cfg.train, cfg.model, cfg.data, progress=False)
    assert not out.exists()


@pytest.mark.parametrize("family", ["scene_marginal", "scene_random"])
def test_baselines_are_trained_and_sampled_like_the_model(tmp_path, compose_config, scene_parquet, family):
    from aigc_synth.training.scene_trainer import train_scene_model

    cfg = compose_config("train", [f"model={family}", f"train.out_dir={tmp_path}", f"data.scenes={scene_parquet}"])
    gen = load_scene_generator(train_scene_model(cfg.train, cfg.model, cfg.data, progress=False))
    assert gen.family == family
    scenes = gen.sample(["heavy", "light"], [4, 2], [1, 2], [0, 1])
    assert [(sc.traffic, sc.num_lanes, sc.model_id) for sc in scenes] == [("heavy", 4, gen.model_id), ("light", 2, gen.model_id)]
    assert scenes == gen.sample(["heavy", "light"], [4, 2], [1, 2], [0, 1])


def test_requests_outside_the_trained_cells_are_refused(tmp_path):
    path = tmp_path / "g.pt"
    state = {k: v for k, v in random_scene_ar().state_dict().items()}
    export_scene_generator(path, family="scene_ar", model_config={"hidden": 16, "head_hidden": 16, "speed_coding": "relative"}, state=state,
                           traffic=["heavy"], lanes=[3])
    gen = load_scene_generator(path)
    with pytest.raises(SceneError, match="trained on \\[3\\] lanes, not 5"):
        gen.sample(["heavy"], [5], [0], [0])
    with pytest.raises(SceneError, match="unknown traffic level 'foggy'"):
        gen.sample(["foggy"], [3], [0], [0])
    with pytest.raises(SceneError, match="trained on traffic \\['heavy'\\], not 'light'"):
        gen.sample(["light"], [3], [0], [0])


def test_scene_checkpoints_load_weights_only(tmp_path):
    with pytest.raises(CheckpointError, match="not a scene generator"):
        load_scene_generator_from_bytes(_image_like_bytes(tmp_path), source="x.pt")
    with pytest.raises(CheckpointError, match="scene checkpoint not found"):
        load_scene_generator(tmp_path / "missing.pt")


def _image_like_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "other.pt"
    torch.save({"format": "aigc_synth.generator/v1"}, path)
    return path.read_bytes()


def test_followers_speeds_are_coded_relative_to_the_vehicle_behind():
    sc = RandomSceneSampler().sample("heavy", 3, seed=7)
    enc = encode_scene(sc)
    vehicles = sorted([(a.lane, a.s, a.speed / sc.speed_limit, True) for a in sc.agents]
                      + [(sc.ego_lane, 0.0, sc.ego_speed / sc.speed_limit, False)], key=lambda v: (v[0], v[1], not v[3]))
    followers = 0
    for t, (lane, _, ratio, _) in enumerate(vehicles):
        follows = t > 0 and vehicles[t - 1][0] == lane
        assert bool(enc["follows"][t]) == follows
        assert SPEED_EDGES[enc["speed"][t]] <= ratio < SPEED_EDGES[enc["speed"][t] + 1]
        if follows and enc["is_agent"][t]:
            followers += 1
            delta = ratio - vehicles[t - 1][2]
            assert DELTA_EDGES[enc["delta"][t]] <= delta < DELTA_EDGES[enc["delta"][t] + 1]
    assert followers > 5
    # the bins are finest around "the same speed"
    widths = np.diff(DELTA_EDGES)
    assert widths[NUM_DELTA // 2] == pytest.approx(0.002) and widths[0] == pytest.approx(0.05)


def test_a_relative_speed_model_learns_a_platoon_and_absolute_checkpoints_still_load(tmp_path):
    """Scenes where every follower drives at exactly the speed of the vehicle behind: a briefly trained
    relative-coded model reproduces it (an absolute-coded one, the same 30 steps: median 1.9 m/s), and a
    checkpoint without ``speed_coding`` (exported before it existed) rebuilds the absolute head."""
    from dataclasses import replace

    from aigc_synth.models.scene_ar import collate
    from aigc_synth.metrics.scenes import scene_features

    base = [RandomSceneSampler().sample("heavy", 2, seed=s) for s in range(32)]
    platoons = []
    for sc in base:
        # a slow queue per lane (lane k at 2 + k m/s, the ego's lane too), vehicles at least 5 m apart, so that
        # SUMO's car-following rule, which the sampler enforces, allows every follower the speed of its leader
        speed = {lane: 2.0 + lane for lane in range(sc.num_lanes)}
        kept = [(sc.ego_lane, 0.0, EGO_LENGTH)]
        agents = []
        for a in sorted(sc.agents):
            if all(lane != a.lane or abs(a.s - s_) - (a.length + length) / 2 >= 5.0 for lane, s_, length in kept):
                kept.append((a.lane, a.s, a.length))
                agents.append(replace(a, speed=speed[a.lane]))
        platoons.append(replace(sc, ego_speed=speed[sc.ego_lane], agents=tuple(agents)))
    torch.manual_seed(0)
    model = SceneAR(hidden=32, head_hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = collate([encode_scene(sc) for sc in platoons])
    for _ in range(30):
        opt.zero_grad()
        model.loss(batch)["loss"].backward()
        opt.step()
    model.eval()
    generated = sample_scenes(model, ["heavy"] * 32, [2] * 32, list(range(32)), list(range(32)), "m")
    rel = np.abs(scene_features(generated)["rel_speed"])
    assert np.median(rel) < 0.1  # m/s; speeds of independent vehicles differ by metres per second
    path = tmp_path / "absolute.pt"
    absolute = SceneAR(hidden=16, head_hidden=16, relative_speed=False)
    export_scene_generator(path, family="scene_ar", model_config={"hidden": 16, "head_hidden": 16},
                           state=absolute.state_dict(), traffic=["heavy"], lanes=[2])
    gen = load_scene_generator(path)
    assert gen._impl.delta_head is None and len(gen.sample(["heavy"], [2], [0], [0])) == 1


def test_followers_gaps_are_coded_as_a_headway_behind_the_vehicle_behind():
    sc = RandomSceneSampler().sample("heavy", 3, seed=7)
    enc = encode_scene(sc)
    vehicles = sorted([(a.lane, a.s, a.length, a.speed, True) for a in sc.agents]
                      + [(sc.ego_lane, 0.0, EGO_LENGTH, sc.ego_speed, False)], key=lambda v: (v[0], v[1], not v[4]))
    followers = 0
    for t, (lane, s, length, _, is_agent) in enumerate(vehicles):
        if t == 0 or vehicles[t - 1][0] != lane or not is_agent:
            continue
        followers += 1
        _, s0, len0, v0, _ = vehicles[t - 1]
        gap = s - s0 - (length + len0) / 2
        h = (gap - MIN_GAP) / max(v0, HEADWAY_SPEED_FLOOR)
        assert HEADWAY_EDGES[enc["headway"][t]] <= h < HEADWAY_EDGES[enc["headway"][t] + 1]
        assert headway_gap_edges(v0)[enc["headway"][t]] <= gap < headway_gap_edges(v0)[enc["headway"][t] + 1]
    assert followers > 5
    # every gap the window allows has a bin, at any speed, and SUMO's usual headways get the finest ones
    assert headway_gap_edges(0.0)[-1] >= WINDOW_BEHIND + WINDOW_AHEAD and headway_gap_edges(40.0)[0] < 0.0
    assert np.diff(HEADWAY_EDGES)[np.searchsorted(HEADWAY_EDGES, 1.2)] == pytest.approx(0.01)


def test_a_headway_coded_model_learns_one_headway_at_every_speed_and_metre_checkpoints_still_load(tmp_path):
    """Scenes whose followers all keep 1.0 s beyond minGap behind the vehicle behind, at speeds from 5 to
    35 m/s: a briefly trained headway-coded model puts its followers there (a metre-coded one, the same 40
    steps, spreads them over seconds), and a checkpoint without ``gap_coding`` rebuilds the metre head."""
    from dataclasses import replace

    from aigc_synth.models.scene_ar import collate

    rng = np.random.default_rng(0)
    scenes = []
    for seed in range(32):
        sc = RandomSceneSampler().sample("moderate", 2, seed=seed)
        speed = {lane: float(rng.uniform(5.0, 35.0)) for lane in range(sc.num_lanes)}
        agents = []
        for lane in range(sc.num_lanes):  # a platoon per lane, the ego at 0 in its own
            s, length = (0.0, EGO_LENGTH) if lane == sc.ego_lane else (-40.0, 4.5)
            if lane != sc.ego_lane:
                agents.append(replace(sc.agents[0], lane=lane, s=s, d=0.0, speed=speed[lane], length=4.5, width=1.8, kind="car"))
            while True:
                s_next = s + (length + 4.5) / 2 + MIN_GAP + 1.0 * speed[lane]
                if s_next > 140.0:
                    break
                agents.append(replace(sc.agents[0], lane=lane, s=s_next, d=0.0, speed=speed[lane], length=4.5, width=1.8, kind="car"))
                s, length = s_next, 4.5
        scenes.append(replace(sc, ego_speed=speed[sc.ego_lane], agents=tuple(agents)))
    batch = collate([encode_scene(sc) for sc in scenes])

    def follower_headways(headway_gap: bool) -> np.ndarray:
        torch.manual_seed(0)
        model = SceneAR(hidden=32, head_hidden=32, headway_gap=headway_gap)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(40):
            opt.zero_grad()
            model.loss(batch)["loss"].backward()
            opt.step()
        generated = sample_scenes(model.eval(), ["moderate"] * 32, [2] * 32, list(range(32)), list(range(32)), "m")
        out = []
        for sc in generated:
            lanes: dict[int, list] = {}
            for a in sc.agents:
                lanes.setdefault(a.lane, []).append((a.s, a.length, a.speed))
            lanes.setdefault(sc.ego_lane, []).append((0.0, EGO_LENGTH, sc.ego_speed))
            for vehicles in lanes.values():
                vehicles.sort()
                for (s0, l0, v0), (s1, l1, _) in zip(vehicles, vehicles[1:]):
                    out.append((s1 - s0 - (l0 + l1) / 2 - MIN_GAP) / max(v0, HEADWAY_SPEED_FLOOR))
        return np.asarray(out)

    headway, metres = follower_headways(True), follower_headways(False)
    assert len(headway) > 20
    assert np.median(np.abs(headway - 1.0)) < 0.1 < np.median(np.abs(metres - 1.0))
    path = tmp_path / "metres.pt"
    old = SceneAR(hidden=16, head_hidden=16)
    export_scene_generator(path, family="scene_ar", model_config={"hidden": 16, "head_hidden": 16, "speed_coding": "relative"},
                           state=old.state_dict(), traffic=["heavy"], lanes=[2])
    gen = load_scene_generator(path)
    assert gen._impl.headway_head is None and len(gen.sample(["heavy"], [2], [0], [0])) == 1


def test_bundled_scene_model_is_small_and_loads():
    from aigc_synth.models.scene_families import BUNDLED_SCENE_CHECKPOINT

    assert BUNDLED_SCENE_CHECKPOINT.stat().st_size <= 5 * 2**20
    gen = load_scene_generator(BUNDLED_SCENE_CHECKPOINT)
    assert gen.family == "scene_ar" and set(gen.traffic) == set(TRAFFIC_LEVELS) and set(gen.lanes) == set(LANE_COUNTS)
    assert gen.roads == ROAD_KINDS and gen._impl.road_kinds == ROAD_KINDS  # conditioned on every road kind
    scenes = gen.sample(["heavy"] * 4, [3] * 4, list(range(4)), list(range(4)))
    assert np.mean([len(sc.agents) for sc in scenes]) > 10  # heavy traffic on 3 lanes: ~20 agents in SUMO
