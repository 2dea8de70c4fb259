"""Scene generators conditioned on the road (issue 29): scene_ar, the baselines, checkpoints and the
scene job's ``road`` factor. No SUMO needed (training scenes come from the random baseline)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from aigc_synth.models.scene_ar import SceneAR, sample_scenes
from aigc_synth.models.scene_tokens import encode_scene
from aigc_synth.models.scene_families import export_scene_generator, load_scene_generator
from aigc_synth.sampling.scene import ROAD_FACTOR, scene_schema
from aigc_synth.scenes.baselines import MarginalSceneSampler, RandomSceneSampler
from aigc_synth.scenes.format import (
    LANE_COUNTS,
    RAMP_LANE,
    ROAD_KINDS,
    TRAFFIC_LEVELS,
    Road,
    SceneError,
    lane_end,
    scenes_to_table,
    validate_scene,
)

TRAINING_ROADS = [Road("curve", curvature=1 / 400), Road("curve", curvature=-1 / 900),
                  Road("merge", event_s=60.0, event_length=200.0), Road("merge", event_s=-20.0, event_length=150.0),
                  Road("lane_drop", event_s=30.0), Road("lane_drop", event_s=-25.0), Road()]


def road_scene_ar(seed: int = 0, headway_gap: bool = False) -> SceneAR:
    torch.manual_seed(seed)
    model = SceneAR(hidden=16, head_hidden=16, headway_gap=headway_gap).eval()
    model.fit_road_bank(TRAINING_ROADS)
    return model


def grid(per_cell: int, roads=ROAD_KINDS) -> tuple[list[str], list[int], list[str]]:
    cells = [(r, t, n) for r in roads for t in TRAFFIC_LEVELS for n in LANE_COUNTS]
    return ([t for _, t, _ in cells for _ in range(per_cell)], [n for _, _, n in cells for _ in range(per_cell)],
            [r for r, _, _ in cells for _ in range(per_cell)])


@pytest.mark.parametrize("headway_gap", [False, True], ids=["gap-metres", "gap-headway"])
def test_untrained_scene_ar_keeps_every_vehicle_on_a_lane_that_exists(headway_gap):
    # the masks, not the weights, keep vehicles off lanes that have ended and on the ramp only on merges
    traffic, lanes, roads = grid(3)
    ids = list(range(len(traffic)))
    scenes = sample_scenes(road_scene_ar(headway_gap=headway_gap), traffic, lanes, ids, ids, "m", roads=roads)
    assert [p for sc in scenes for p in validate_scene(sc)] == []
    assert [sc.road.kind for sc in scenes] == roads
    banked = {(r.kind, r.curvature, r.event_s, r.event_length) for r in TRAINING_ROADS}
    assert all((sc.road.kind, sc.road.curvature, sc.road.event_s, sc.road.event_length) in banked for sc in scenes)
    ramp = [a for sc in scenes if sc.road.kind == "merge" for a in sc.agents if a.lane == RAMP_LANE]
    assert ramp, "the on-ramp is a lane the model can fill"
    assert all(a.lane != RAMP_LANE for sc in scenes if sc.road.kind != "merge" for a in sc.agents)
    for sc in scenes:
        for a in sc.agents:
            assert a.s <= lane_end(sc.road, sc.num_lanes, a.lane)
        if sc.road.kind == "lane_drop" and sc.road.event_s < 0:
            assert sc.ego_lane < sc.num_lanes - 1  # the ego is never on a lane that ended behind it


def test_road_rows_do_not_depend_on_their_batch_or_neighbours():
    traffic, lanes, roads = grid(1)
    ids = list(range(len(traffic)))
    model = road_scene_ar(1)
    full = sample_scenes(model, traffic, lanes, ids, ids, "m", roads=roads)
    order = np.random.default_rng(0).permutation(len(ids))
    shuffled = sample_scenes(model, [traffic[i] for i in order], [lanes[i] for i in order], [ids[i] for i in order],
                             [ids[i] for i in order], "m", compute_batch=5, roads=[roads[i] for i in order])
    assert sorted(shuffled, key=lambda sc: sc.scene_id) == full


def test_a_full_road_is_used_as_given_and_untrained_kinds_are_refused():
    model = road_scene_ar()
    given = Road("merge", event_s=123.0, event_length=250.0)
    (sc,) = sample_scenes(model, ["heavy"], [3], [5], [0], "m", roads=[given])
    assert sc.road == given and validate_scene(sc) == []
    straight_only = SceneAR(hidden=16, head_hidden=16).eval()
    assert straight_only.road_kinds == ("straight",)
    with pytest.raises(SceneError, match="trained on roads \\['straight'\\], not 'curve'"):
        sample_scenes(straight_only, ["heavy"], [3], [0], [0], "m", roads=["curve"])
    with pytest.raises(SceneError, match="at least 2 lanes"):
        sample_scenes(model, ["heavy"], [1], [0], [0], "m", roads=["lane_drop"])


def test_encoded_ramp_tokens_use_slot_zero():
    (sc,) = RandomSceneSampler().sample("heavy", 3, 2, road=Road("merge", event_s=100.0, event_length=200.0)),
    enc = encode_scene(sc)
    ramp_agents = sum(a.lane == RAMP_LANE for a in sc.agents)
    assert ramp_agents > 0 and int((enc["lane"] == 0).sum()) == ramp_agents


@pytest.mark.parametrize("sampler", ["random", "marginal"])
def test_baselines_follow_the_road(sampler):
    random = RandomSceneSampler()
    training = [random.sample(t, n, seed, road=r) for seed, (r, t, n) in
                enumerate((r, t, n) for r in ROAD_KINDS for t in TRAFFIC_LEVELS for n in LANE_COUNTS for _ in range(3))]
    model = random if sampler == "random" else MarginalSceneSampler.from_dict(MarginalSceneSampler.fit(training).to_dict())
    for kind in ROAD_KINDS:
        scenes = [model.sample("moderate", 3, seed, road=kind) for seed in range(6)]
        assert all(sc.road.kind == kind and validate_scene(sc, check_overlaps=False) == [] for sc in scenes), kind
    # straight scenes are what they were before road kinds (the road draws nothing on a straight road)
    assert random.sample("light", 2, 9) == random.sample("light", 2, 9, road="straight")
    assert random.sample("light", 2, 9).road == Road()


def test_checkpoints_and_job_schema_carry_the_road_kinds(tmp_path):
    state = {k: v for k, v in road_scene_ar().state_dict().items()}
    export_scene_generator(tmp_path / "roads.pt", family="scene_ar", model_config={"hidden": 16, "head_hidden": 16, "speed_coding": "relative"}, state=state,
                           traffic=["heavy"], lanes=[3], roads=["straight", "merge"])
    gen = load_scene_generator(tmp_path / "roads.pt")
    assert gen.roads == ("straight", "merge")
    assert list(scene_schema(gen.traffic, gen.lanes, gen.roads).values(ROAD_FACTOR)) == ["straight", "merge"]
    assert [sc.road.kind for sc in gen.sample(["heavy"] * 2, [3, 3], [0, 1], [0, 1], roads=["merge", "straight"])] == ["merge", "straight"]
    with pytest.raises(SceneError, match="trained on roads \\['straight', 'merge'\\], not 'curve'"):
        gen.sample(["heavy"], [3], [0], [0], roads=["curve"])
    # a straight-only model (or one written before road kinds) needs no road in a request
    assert ROAD_FACTOR not in scene_schema(["heavy"], [3]).names
    with pytest.raises(ValueError, match="road kinds must be among"):
        export_scene_generator(tmp_path / "bad.pt", family="scene_ar", model_config={}, state={}, traffic=["heavy"], lanes=[3],
                               roads=["roundabout"])


def test_scene_ar_trainer_learns_the_road_prior(tmp_path, compose_config):
    from aigc_synth.training.scene_trainer import train_scene_model

    random = RandomSceneSampler()
    scenes = [random.sample(t, 3, seed, scene_id=seed, road=r) for seed, (r, t) in
              enumerate((r, t) for r in ("straight", "lane_drop") for t in TRAFFIC_LEVELS for _ in range(5))]
    pq.write_table(scenes_to_table(scenes), tmp_path / "part-00000.parquet")
    cfg = compose_config("train", ["model=scene_ar", "model.hidden=16", "model.head_hidden=16", "train.steps=2", "train.batch_size=4",
                                   "train.threads=1", f"train.out_dir={tmp_path / 'run'}", f"data.scenes={tmp_path}"])
    gen = load_scene_generator(train_scene_model(cfg.train, cfg.model, cfg.data, progress=False))
    assert gen.roads == ("straight", "lane_drop") and gen._impl.road_kinds == ("straight", "lane_drop")
    drawn = {sc.road.event_s for sc in gen.sample(["light"] * 8, [3] * 8, list(range(8)), list(range(8)), roads=["lane_drop"] * 8)}
    assert drawn <= {sc.road.event_s for sc in scenes if sc.road.kind == "lane_drop"}


def _straight_and_merge_sets(tmp_path, traffic=TRAFFIC_LEVELS, lanes=LANE_COUNTS, per_cell: int = 2) -> None:
    """Reference and floor folders (random scenes, ``per_cell`` per road x traffic x lanes cell) and a scene_ar
    ``g.pt`` of both road kinds on those traffic levels and lane counts."""
    random = RandomSceneSampler()
    for name, base in (("ref", 0), ("floor", 10_000)):
        scenes = [random.sample(t, n, base + k, scene_id=k, road=r) for k, (r, t, n) in
                  enumerate((r, t, n) for r in ("straight", "merge") for t in traffic for n in lanes for _ in range(per_cell))]
        (tmp_path / name).mkdir()
        pq.write_table(scenes_to_table(scenes), tmp_path / name / "part-00000.parquet")
    state = {k: v for k, v in road_scene_ar().state_dict().items()}
    export_scene_generator(tmp_path / "g.pt", family="scene_ar", model_config={"hidden": 16, "head_hidden": 16, "speed_coding": "relative"}, state=state,
                           traffic=list(traffic), lanes=list(lanes), roads=["straight", "merge"])


def test_evaluate_scores_each_road_kind_against_its_own_reference(tmp_path, compose_config, ray_session):
    """``aigc-synth evaluate`` on a model of several road kinds: reference and floor of the same kinds,
    figures pooled and per kind, a per-kind table in the report (folders given: no SUMO needed)."""
    from aigc_synth.errors import EvaluationError
    from aigc_synth.evaluation.scenes import evaluate_scenes

    _straight_and_merge_sets(tmp_path)
    random = RandomSceneSampler()
    cfg = compose_config("evaluate", [f"source={tmp_path / 'g.pt'}", "n_per_condition=2", "replay_scenes=0",
                                      f"scene_reference={tmp_path / 'ref'}", f"scene_floor={tmp_path / 'floor'}",
                                      f"out_dir={tmp_path / 'eval'}"])
    result = evaluate_scenes(cfg, log=lambda *a: None)
    assert result["scenes"]["generated"] == 2 * 2 * len(TRAFFIC_LEVELS) * len(LANE_COUNTS)
    assert set(result["by_road"]) == {"straight", "merge"}
    assert all(r["scenes"]["real"] == r["scenes"]["generated"] == 18 for r in result["by_road"].values())
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "| merge |" in report and "| straight |" in report
    # a reference without one of the model's road kinds cannot score it
    cfg.scene_reference = str(tmp_path / "straight_only")
    (tmp_path / "straight_only").mkdir()
    pq.write_table(scenes_to_table([random.sample("light", 2, 0)]), tmp_path / "straight_only" / "part-00000.parquet")
    cfg.out_dir = str(tmp_path / "eval2")
    with pytest.raises(EvaluationError, match="\\['merge'\\] roads"):
        evaluate_scenes(cfg, log=lambda *a: None)


def test_evaluate_measures_merge_completion_on_every_merge_scene(tmp_path, compose_config, ray_session):
    """The replay sample (here 2 scenes per set) holds few merges; ``replay_all_merges`` replays every merge scene
    of each set for merge completion, reusing the sample's replays, and reports it with its interval."""
    pytest.importorskip("libsumo")
    import json

    from aigc_synth.evaluation.scenes import evaluate_scenes
    from aigc_synth.scenes.dataset import read_scenes

    _straight_and_merge_sets(tmp_path, traffic=["heavy"], lanes=[2], per_cell=4)  # 4 merge scenes per set
    base = [f"source={tmp_path / 'g.pt'}", "n_per_condition=4", "replay_scenes=2",
            f"scene_reference={tmp_path / 'ref'}", f"scene_floor={tmp_path / 'floor'}"]
    result = evaluate_scenes(compose_config("evaluate", base + [f"out_dir={tmp_path / 'eval'}"]), log=lambda *a: None)
    merges = result["replay_merges"]
    assert set(merges) == {"generated", "real", "real_floor"}
    assert all(m["scenes"] == 4 for m in merges.values())  # every merge scene, where the sample replayed 1
    assert result["replay_by_road"]["merge"]["real"]["scenes"] == 1
    ramp = sum(a.lane == RAMP_LANE for sc in read_scenes(tmp_path / "ref") if sc.road.kind == "merge" for a in sc.agents)
    assert merges["real"]["ramp_vehicles"] == ramp > 0
    assert merges["real"]["merge_completion"] == merges["real"]["merged_vehicles"] / ramp
    low, high = merges["real"]["merge_completion_95"]
    assert low <= merges["real"]["merge_completion"] <= high
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Merge completion on every merge scene" in report and f"| real | 4 | {ramp} |" in report
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["replay_merges"]["real"]["ramp_vehicles"] == ramp
    off = evaluate_scenes(compose_config("evaluate", base + ["replay_all_merges=false", "replay_real=false",
                                                             f"out_dir={tmp_path / 'eval_off'}"]), log=lambda *a: None)
    assert "replay_merges" not in off and off["replay"]["generated"]["scenes"] == 2
