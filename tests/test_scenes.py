"""Traffic scenes: the format contract, SUMO ground truth, baselines, replay and exporters.

The simulator tests need ``aigc_synth[sim]`` (eclipse-sumo, libsumo, scenariogeneration); they skip
through the ``sumo_scenes`` fixture's importorskip when it is absent, the format and baseline tests
always run.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aigc_synth.errors import AigcSynthError
from aigc_synth.scenes.baselines import MarginalSceneSampler, RandomSceneSampler
from aigc_synth.scenes.format import (
    EGO_INDEX,
    TRAFFIC_LEVELS,
    WINDOW_AHEAD,
    WINDOW_BEHIND,
    Agent,
    Scene,
    SceneError,
    overlap_pairs,
    scene_arrow_schema,
    scenes_to_table,
    table_to_scenes,
    validate_scene,
)


def car(lane: int, s: float, speed: float = 20.0, d: float = 0.0) -> Agent:
    return Agent(lane, s, d, speed, 5.0, 1.8, "car")


def scene(*agents: Agent, ego_lane: int = 1, ego_speed: float = 20.0, num_lanes: int = 3, scene_id: int = 0) -> Scene:
    return Scene(scene_id, 7, "moderate", num_lanes, 33.33, ego_lane, ego_speed, agents, "test")


# -- format --------------------------------------------------------------------------------------
def test_scene_is_canonical_sorted_and_rounded():
    sc = scene(car(2, 10.0), car(0, 30.123456789), car(0, -20.0, d=-1e-9))
    assert [(a.lane, a.s) for a in sc.agents] == [(0, -20.0), (0, 30.123), (2, 10.0)]
    assert math.copysign(1, sc.agents[0].d) == 1  # -0.0 normalised: equal scenes, equal bytes
    assert sc == scene(car(0, -20.0), car(2, 10.0), car(0, 30.1234))


def test_table_round_trip_and_schema(tmp_path):
    scenes = [scene(car(0, -20.0), car(2, 100.5, d=0.4), scene_id=1), scene(scene_id=2),
              RandomSceneSampler().sample("heavy", 4, seed=3, scene_id=3)]
    table = scenes_to_table(scenes)
    assert table.schema.equals(scene_arrow_schema())
    assert [(f.name, str(f.type)) for f in scene_arrow_schema()][:8] == [
        ("scene_id", "int64"), ("seed", "int64"), ("traffic", "string"), ("num_lanes", "int32"),
        ("speed_limit", "double"), ("ego_lane", "int32"), ("ego_speed", "double"),
        ("agents", "list<item: struct<lane: int32 not null, s: double not null, d: double not null, speed: double not null, "
                   "length: double not null, width: double not null, kind: string not null> not null>"),
    ]
    assert table_to_scenes(table) == scenes
    pq.write_table(table, tmp_path / "s.parquet")
    assert table_to_scenes(pq.read_table(tmp_path / "s.parquet")) == scenes
    assert table_to_scenes(pa.Table.from_pylist(table.to_pylist())) == scenes  # inferred, nullable types
    with pytest.raises(SceneError, match="not a scene table"):
        table_to_scenes(table.drop_columns(["model_id"]))
    assert issubclass(SceneError, AigcSynthError) and issubclass(SceneError, ValueError)  # CLI: one line, exit 2
    with pytest.raises(SceneError, match="not a scene table"):
        table_to_scenes(table.set_column(3, "num_lanes", pa.array(["three"] * len(scenes))))


def test_validate_names_each_problem():
    assert validate_scene(scene(car(0, 0.0), car(1, 20.0), car(2, -49.0))) == []
    # the ego (s=0, lane 1, 5 m) overlaps a car 4 m ahead in its lane, not one 5 m ahead
    assert overlap_pairs(scene(car(1, 4.0))) == [(EGO_INDEX, 0)]
    assert overlap_pairs(scene(car(1, 5.0))) == []
    truck = Agent(0, 10.0, 0.0, 20.0, 16.5, 2.55, "truck")  # reaches past the car right ahead of it
    assert overlap_pairs(scene(car(0, 12.0), car(0, 17.0), truck)) == [(0, 1), (0, 2)]

    def problems(sc: Scene) -> str:
        return " | ".join(validate_scene(sc))

    assert "ego and agent 0 overlap in lane 1" in problems(scene(car(1, 3.0)))
    assert "agent 0 and agent 1 overlap in lane 0" in problems(scene(car(0, 50.0), car(0, 52.0)))
    assert "outside the window" in problems(scene(car(0, WINDOW_AHEAD + 0.01)))
    assert "outside the window" in problems(scene(car(0, -WINDOW_BEHIND - 0.01)))
    assert "lane 3 is outside [0, 3)" in problems(scene(car(3, 10.0)))
    assert "ego lane 5 is outside" in problems(scene(ego_lane=5))
    assert "unknown traffic level 'jam'" in problems(replace(scene(), traffic="jam"))
    assert "negative speed" in problems(scene(car(0, 10.0, speed=-1.0)))
    assert "non-positive size" in problems(scene(Agent(0, 10.0, 0.0, 1.0, 0.0, 1.8, "car")))
    assert "unknown kind 'bus'" in problems(scene(Agent(0, 10.0, 0.0, 1.0, 12.0, 2.5, "bus")))
    assert "leaves its lane" in problems(scene(car(0, 10.0, d=2.0)))


# -- baselines -----------------------------------------------------------------------------------
def test_baselines_are_pure_functions_of_their_inputs(tmp_path):
    torch = pytest.importorskip("torch")
    rnd = RandomSceneSampler()
    a = rnd.sample("heavy", 3, seed=11, scene_id=4)
    assert a == rnd.sample("heavy", 3, seed=11, scene_id=4) and a != rnd.sample("heavy", 3, seed=12, scene_id=4)
    assert a.model_id == "random" and a.scene_id == 4 and a.seed == 11
    assert all(validate_scene(x, check_overlaps=False) == [] for x in [rnd.sample(t, n, s) for t in TRAFFIC_LEVELS for n in (2, 4) for s in range(5)])
    mean = {t: sum(len(rnd.sample(t, 3, s).agents) for s in range(30)) / 30 for t in TRAFFIC_LEVELS}
    assert mean["light"] < mean["moderate"] < mean["heavy"]

    fitted = [rnd.sample(t, n, s) for t in TRAFFIC_LEVELS for n in (2, 3) for s in range(20)]
    marg = MarginalSceneSampler.fit(fitted)
    light2 = [marg.sample("light", 2, seed=s) for s in range(40)]
    assert {len(x.agents) for x in light2} <= {len(x.agents) for x in fitted if (x.traffic, x.num_lanes) == ("light", 2)}
    assert {x.speed_limit for x in light2} <= {x.speed_limit for x in fitted} and {a.d for x in light2 for a in x.agents} == {0.0}
    b = marg.sample("moderate", 2, seed=5)
    assert b == marg.sample("moderate", 2, seed=5) and b != marg.sample("moderate", 2, seed=6)
    assert b.model_id == "marginal" and validate_scene(b, check_overlaps=False) == []
    # plain containers: survive JSON and a weights_only torch checkpoint, and sample the same
    assert MarginalSceneSampler.from_dict(json.loads(json.dumps(marg.to_dict()))).sample("moderate", 2, 5) == b
    torch.save(marg.to_dict(), tmp_path / "m.pt")
    assert MarginalSceneSampler.from_dict(torch.load(tmp_path / "m.pt", weights_only=True)) == marg
    with pytest.raises(SceneError, match="not fitted for heavy traffic on 4 lanes"):
        marg.sample("heavy", 4, seed=0)


# -- SUMO ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sumo_scenes():
    """30 ground-truth scenes: 10 per traffic level on 3 lanes (one 20-scene SUMO run per level)."""
    pytest.importorskip("libsumo")
    from aigc_synth.scenes.sumo_dataset import sumo_scene_dataset

    return sumo_scene_dataset(30, seed=0, lane_counts=(3,))


def test_sumo_dataset_is_balanced_valid_and_denser_with_traffic(sumo_scenes):
    from aigc_synth.scenes.sumo import sumo_model_id

    assert [sc.scene_id for sc in sumo_scenes] == list(range(30))
    assert [sc.traffic for sc in sumo_scenes] == [t for t in TRAFFIC_LEVELS for _ in range(10)]
    assert {sc.model_id for sc in sumo_scenes} == {sumo_model_id()} and sumo_model_id().startswith("sumo-1.")
    assert [p for sc in sumo_scenes for p in validate_scene(sc)] == []  # no overlap, all in the window
    mean = {t: sum(len(sc.agents) for sc in sumo_scenes if sc.traffic == t) / 10 for t in TRAFFIC_LEVELS}
    assert 2 < mean["light"] < mean["moderate"] < mean["heavy"]
    speed = {t: sum(sc.ego_speed for sc in sumo_scenes if sc.traffic == t) / 10 for t in TRAFFIC_LEVELS}
    assert speed["heavy"] < speed["light"]  # congestion slows traffic down
    assert len({sc.agents for sc in sumo_scenes}) == 30  # every snapshot is a different scene


def test_sumo_is_deterministic_per_seed(sumo_scenes):
    from aigc_synth.scenes.sumo import SimOptions
    from aigc_synth.scenes.sumo_dataset import simulate_scenes

    opts = SimOptions(scenes_per_run=3, warmup_s=30.0)
    first = simulate_scenes("moderate", 2, 4, seed=1, first_scene_id=100, options=opts)  # 2 runs
    simulate_scenes("heavy", 4, 1, seed=9, options=opts)  # whatever ran in between
    assert simulate_scenes("moderate", 2, 4, seed=1, first_scene_id=100, options=opts) == first
    assert [sc.scene_id for sc in first] == [100, 101, 102, 103]
    assert simulate_scenes("moderate", 2, 2, seed=1, options=opts) == [replace(sc, scene_id=i) for i, sc in enumerate(first[:2])]
    assert [sc.agents for sc in simulate_scenes("moderate", 2, 4, seed=2, options=opts)] != [sc.agents for sc in first]
    with pytest.raises(SceneError, match="unknown traffic level"):
        simulate_scenes("jam", 2, 1, seed=0)


def test_dataset_workers_and_build_script_give_the_same_scenes(sumo_scenes, tmp_path):
    import importlib.util

    from aigc_synth.scenes.sumo import SimOptions
    from aigc_synth.scenes.sumo_dataset import sumo_scene_dataset

    opts = SimOptions(scenes_per_run=2, warmup_s=20.0)
    serial = sumo_scene_dataset(5, 3, ("light", "heavy"), (2,), options=opts)
    assert [(sc.scene_id, sc.traffic) for sc in serial] == [(0, "light"), (1, "light"), (2, "light"), (3, "heavy"), (4, "heavy")]
    assert sumo_scene_dataset(5, 3, ("light", "heavy"), (2,), options=opts, workers=2) == serial  # spawned processes

    spec = importlib.util.spec_from_file_location("build_scene_dataset", Path(__file__).parents[1] / "scripts" / "build_scene_dataset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "part-00009.parquet").write_text("stale")
    argv = ["--num-scenes", "3", "--seed", "1", "--out", str(tmp_path), "--traffic", "light", "--lanes", "2",
            "--shard-size", "2", "--workers", "1"]
    assert script.main(argv + ["--split", "heldout"]) == 0
    shards = sorted((tmp_path / "heldout").glob("*.parquet"))
    assert [p.name for p in shards] == ["part-00000.parquet", "part-00001.parquet"]
    built = [sc for p in shards for sc in table_to_scenes(pq.read_table(p))]
    assert built == sumo_scene_dataset(3, script.split_seed(1, "heldout"), ("light",), (2,))
    assert json.loads((tmp_path / "heldout" / "manifest.json").read_text())["scenes_per_traffic"] == {"light": 3}
    assert script.split_seed(1, "heldout") != script.split_seed(1, "train")


def test_missing_sumo_is_a_scene_error(monkeypatch):
    from aigc_synth.scenes import sumo

    monkeypatch.setitem(sys.modules, "libsumo", None)  # makes `import libsumo` raise ImportError
    with pytest.raises(SceneError, match=r"SUMO is not installed: pip install 'aigc_synth\[sim\]'"):
        sumo.sumo_version()


# -- replay --------------------------------------------------------------------------------------
def test_replay_measures_collisions_braking_and_ttc(sumo_scenes):
    from aigc_synth.metrics.scenes import replay_summary
    from aigc_synth.scenes.replay import replay_scene

    alone = replay_scene(scene())
    assert alone == {"vehicles": 1, "collided": 0, "hard_braking": 0, "min_ttc": [math.inf]}
    crash = replay_scene(scene(car(1, 3.0), car(0, 60.0, speed=30.0), car(0, 70.0, speed=0.0)))
    assert crash["vehicles"] == 4 and crash["collided"] == 4  # overlap at t=0 (2) + 30 m/s into a stopped car (2)
    # canonical order: agent_0 = (lane 0, s 60), agent_1 = (lane 0, s 70), agent_2 = (lane 1, s 3)
    assert crash["min_ttc"][0] == 0.0 and crash["min_ttc"][1] == 0.0  # ego touches agent_2, agent_0 hits agent_1
    close = replay_scene(scene(car(1, 12.0, speed=5.0), ego_speed=25.0))  # 7 m gap, closing at 20 m/s
    assert close["hard_braking"] >= 1 and close["min_ttc"][0] < 0.4 and close["min_ttc"][1] == math.inf

    truth = replay_summary([replay_scene(sc) for sc in sumo_scenes if sc.traffic == "heavy"])
    naive = replay_summary([replay_scene(RandomSceneSampler().sample("heavy", 3, seed=s)) for s in range(10)])
    assert truth["collision_share"] == 0.0 and truth["low_ttc_share"] == 0.0 and truth["hard_braking_share"] < 0.05
    assert naive["collision_share"] > 0.1 and naive["scene_collision_share"] > 0.5
    with pytest.raises(SceneError, match="cannot be replayed: agent 0 lane 3"):
        replay_scene(scene(car(3, 10.0)))


# -- export --------------------------------------------------------------------------------------
def test_export_sumo_places_every_vehicle_exactly(sumo_scenes, tmp_path):
    from aigc_synth.scenes.export import export_sumo
    from aigc_synth.scenes.sumo import EGO_X, SumoRun, scene_vehicle_ids

    scenes = sumo_scenes[::10]  # one per traffic level
    cfgs = export_sumo(scenes, tmp_path / "sumo")
    assert [p.name for p in cfgs] == [f"scene_{sc.scene_id}.sumocfg" for sc in scenes]
    assert all(p.exists() for p in cfgs) and len(list((tmp_path / "sumo").glob("*.net.xml"))) == len({sc.speed_limit for sc in scenes})
    for sc, cfg in zip(scenes, cfgs):
        with SumoRun.run(["-c", str(cfg), "--no-step-log", "true"]) as traci:
            traci.simulationStep()
            ids = scene_vehicle_ids(sc)
            assert traci.simulation.getDepartedNumber() == len(sc.agents) + 1 == len(traci.vehicle.getIDList())
            ego = Agent(sc.ego_lane, 0.0, 0.0, sc.ego_speed, 5.0, 1.8, "car")
            for vid, a in zip(ids, (ego, *sc.agents)):
                assert traci.vehicle.getLaneIndex(vid) == a.lane
                assert traci.vehicle.getLanePosition(vid) == pytest.approx(EGO_X + a.s + a.length / 2, abs=1e-3)
                assert traci.vehicle.getSpeed(vid) == pytest.approx(a.speed, abs=1e-3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    export_sumo(scenes, tmp_path / "again")  # same scenes, same bytes (no dates or paths inside)
    assert {p.name: p.read_bytes() for p in (tmp_path / "sumo").iterdir()} == {p.name: p.read_bytes() for p in (tmp_path / "again").iterdir()}


def test_export_openscenario_parses_back(sumo_scenes, tmp_path):
    xosc = pytest.importorskip("scenariogeneration.xosc")
    from aigc_synth.scenes.export import export_openscenario

    scenes = sumo_scenes[::10]
    paths = export_openscenario(scenes, tmp_path / "osc")
    assert sorted(p.name for p in (tmp_path / "osc").glob("*.xodr")) == sorted(
        {f"road_3lanes_{sc.speed_limit:g}.xodr" for sc in scenes})
    for sc, path in zip(scenes, paths):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the parser warns when the file breaks the OpenSCENARIO schema
            parsed = xosc.ParseOpenScenario(str(path))
        names = [obj.name for obj in parsed.entities.scenario_objects]
        assert names == ["ego"] + [f"agent_{i}" for i in range(len(sc.agents))]
    text = paths[-1].read_text()
    a = scenes[-1].agents[0]
    assert f'laneId="{-(3 - a.lane)}"' in text and 'roadId="0"' in text
    assert export_openscenario(scenes, tmp_path / "again")[0].read_bytes() == paths[0].read_bytes()  # deterministic


def test_exports_refuse_an_invalid_scene_and_write_nothing(tmp_path):
    from aigc_synth.scenes.export import export_openscenario, export_sumo

    good, bad = scene(car(0, 10.0), scene_id=1), scene(car(0, 10.0), car(0, 12.0), scene_id=2)
    for export in (export_sumo, export_openscenario):
        with pytest.raises(SceneError, match="scene 2: agent 0 and agent 1 overlap in lane 0"):
            export([good, bad], tmp_path / export.__name__)
    assert list(tmp_path.iterdir()) == []
