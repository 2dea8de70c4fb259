"""Scene jobs end to end on the shared local Ray: byte identity across actor counts, resume,
verify, the export verb and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from aigc_synth.errors import JobSpecError, UsageError
from aigc_synth.io.reader import verify_output
from aigc_synth.jobs.generate import run_generation
from aigc_synth.models.scene_ar import SceneAR
from aigc_synth.scenes.format import (LANE_COUNTS, ROAD_KINDS, TRAFFIC_LEVELS, Agent, Road, SceneError, scenes_to_table,
                                     table_to_scenes)
from aigc_synth.models.scene_families import export_scene_generator
from tests.helpers import compose_generate, run_cli, write_shards_in_process


@pytest.fixture(scope="module")
def scene_checkpoint(tmp_path_factory) -> Path:
    """A small random scene_ar of every road kind (its road prior: a few roads of each)."""
    torch.manual_seed(0)
    model = SceneAR(hidden=16, head_hidden=16)
    model.fit_road_bank([Road(), Road("curve", curvature=-1 / 700), Road("merge", event_s=70.0, event_length=180.0),
                         Road("lane_drop", event_s=20.0)])
    path = tmp_path_factory.mktemp("scene_ckpt") / "scene_ar.pt"
    export_scene_generator(path, family="scene_ar", model_config={"family": "scene_ar", "hidden": 16, "head_hidden": 16, "speed_coding": "relative"},
                           state=model.state_dict(), traffic=TRAFFIC_LEVELS, lanes=LANE_COUNTS, roads=ROAD_KINDS)
    return path


def _cfg(out: Path, ckpt: Path, *extra: str):
    return compose_generate(["job=scenes", f"output_dir={out}", f"job.checkpoint={ckpt}", "job.num_samples=72",
                             "job.shard_size=24", "preview=false", *extra])


@pytest.fixture(scope="module")
def scene_runs(ray_session, scene_checkpoint, tmp_path_factory):
    """One Ray job (2 actors, micro-batches of 64); the byte-identity test writes the same job again in
    this process with one worker, 7 rows per call and the default micro-batch."""
    root = tmp_path_factory.mktemp("scene_jobs")
    run_generation(_cfg(root / "b", scene_checkpoint, "resources.actors=2", "job.compute_batch=64"), progress=False)
    return root / "b"


def test_scene_job_bytes_identical_for_any_actor_count(scene_runs, scene_checkpoint, tmp_path):
    b = scene_runs
    assert json.loads((b / "run.json").read_text())["resources"]["actors"] == 2
    a = write_shards_in_process(_cfg(tmp_path / "a", scene_checkpoint, "resources.actors=1", "resources.batch_size=7"))
    shards = sorted((b / "parquet").iterdir())
    assert len(shards) > 1 and [p.name for p in sorted((a / "parquet").iterdir())] == [p.name for p in shards]
    for shard in shards:
        assert shard.read_bytes() == (a / "parquet" / shard.name).read_bytes()


def test_scene_job_rows_are_the_public_contract(scene_runs):
    a = scene_runs
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["job"]["sampler"] == "scenes" and manifest["schema"] == {"traffic": list(TRAFFIC_LEVELS),
                                                                            "num_lanes": ["2", "3", "4"], "road": list(ROAD_KINDS)}
    assert manifest["counts_per_condition"] == {f"{t}/{n}/{r}": 2 for t in TRAFFIC_LEVELS for n in LANE_COUNTS for r in ROAD_KINDS}
    table = pq.read_table(a / "parquet")
    assert table.column_names == ["scene_id", "seed", "traffic", "num_lanes", "speed_limit", "ego_lane", "ego_speed", "agents",
                                  "model_id", "road"]
    scenes = table_to_scenes(table)
    assert [sc.scene_id for sc in scenes] == list(range(72))
    # each row is the scene of its plan cell: the counts of (traffic, lanes, road) are the manifest's
    cells = Counter(f"{sc.traffic}/{sc.num_lanes}/{sc.road.kind}" for sc in scenes)
    assert cells == manifest["counts_per_condition"]
    assert {sc.model_id for sc in scenes} == {manifest["model_id"]}
    assert verify_output(a) == []


@pytest.mark.slow  # 10-16 s; the default suite keeps under 10 min (run with -m slow)
def test_interrupted_scene_job_resumes_to_identical_output(scene_runs, scene_checkpoint, tmp_path, capsys):
    import shutil

    a = scene_runs
    out = tmp_path / "r"
    shutil.copytree(a, out)
    (out / "parquet" / "part-00001.parquet").unlink()  # as if the run died before committing shard 1
    (out / "manifest.json").unlink()
    run_generation(_cfg(out, scene_checkpoint, "resources.actors=1", "job.compute_batch=64"), progress=False, log=print)
    assert "resuming: 2 of 3 shards" in capsys.readouterr().out
    assert (out / "manifest.json").read_bytes() == (a / "manifest.json").read_bytes()


@pytest.mark.parametrize("override, message", [
    ("+job.plan.factors.traffic=[foggy]", "unknown value 'foggy' for factor 'traffic'"),
    ("+job.plan.factors.num_lanes=[5]", "unknown value '5' for factor 'num_lanes'"),
    ("job.formats=[parquet,png]", "scene jobs write Parquet only"),
    ("job.gate.enabled=true", "scene jobs have no condition-fidelity gate"),
    ("job.resolution=64", "does not apply to scene jobs"),
])
def test_bad_scene_job_specs_fail_before_anything_is_written(scene_checkpoint, tmp_path, override, message):
    from aigc_synth.jobs.spec import validate_job

    with pytest.raises(JobSpecError, match=message):
        validate_job(_cfg(tmp_path / "out", scene_checkpoint, override))
    assert not (tmp_path / "out").exists()


def test_scene_job_cli_refuses_an_image_checkpoint_with_exit_2(tiny_checkpoint, tmp_path):
    r = run_cli("generate", "job=scenes", f"job.checkpoint={tiny_checkpoint}", f"output_dir={tmp_path / 'o'}")
    assert r.returncode == 2 and "not a scene generator" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_lane_count_outside_the_model_exits_2(scene_checkpoint, tmp_path):
    r = run_cli("generate", "job=scenes", f"job.checkpoint={scene_checkpoint}", "+job.plan.factors.num_lanes=[6]",
                f"output_dir={tmp_path / 'o'}")
    assert r.returncode == 2 and "num_lanes" in r.stderr and "'6'" in r.stderr
    assert not (tmp_path / "o").exists()


# -- export -------------------------------------------------------------------------------------------------
def test_export_sumo_and_openscenario_from_a_scene_job(scene_runs, tmp_path):
    pytest.importorskip("libsumo")
    pytest.importorskip("scenariogeneration")
    from scenariogeneration import xosc

    from aigc_synth.exporters import export_output

    a = scene_runs
    cfgs = export_output(a, "sumo", tmp_path / "sumo", limit=6)
    assert [p.name for p in cfgs] == [f"scene_{i}.sumocfg" for i in range(6)] and all(p.is_file() for p in cfgs)
    scenes = table_to_scenes(pq.read_table(a / "parquet" / "part-00000.parquet"))[:6]
    import libsumo

    for sc, cfg in zip(scenes, cfgs):  # SUMO loads each exported scene and inserts every vehicle where it stands
        libsumo.start(["sumo", "-c", str(cfg), "--no-step-log", "true", "--no-warnings", "true"])
        try:
            libsumo.simulationStep()
            assert libsumo.simulation.getDepartedNumber() == len(sc.agents) + 1
        finally:
            libsumo.close()
    xoscs = export_output(a, "openscenario", tmp_path / "osc", limit=3)
    for sc, path in zip(scenes, xoscs):
        parsed = xosc.ParseOpenScenario(str(path))
        assert len(parsed.entities.scenario_objects) == len(sc.agents) + 1


def test_export_cli_refuses_overlapping_scenes_and_writes_nothing(tmp_path):
    pytest.importorskip("libsumo")
    from aigc_synth.scenes.baselines import RandomSceneSampler

    sc = RandomSceneSampler().sample("heavy", 2, seed=0)
    bad = replace(sc, agents=(Agent(sc.ego_lane, 1.0, 0.0, 20.0, 5.0, 1.8, "car"),))  # on top of the ego
    folder = tmp_path / "scenes"
    folder.mkdir()
    pq.write_table(scenes_to_table([bad]), folder / "part-00000.parquet")
    r = run_cli("export", str(folder), "--format", "sumo", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "overlap" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_export_names_a_missing_simulator(scene_runs, tmp_path, monkeypatch):
    import importlib.util

    from aigc_synth.exporters import export_output

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sumo" else real_find_spec(name, *a))
    with pytest.raises(UsageError, match=r"needs sumo, which is not installed: pip install 'aigc_synth\[sim\]'"):
        export_output(scene_runs, "sumo", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_export_refuses_a_non_empty_out_dir_and_image_jobs(scene_runs, tmp_path):
    from aigc_synth.exporters import export_output

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    with pytest.raises(UsageError, match="not an empty directory"):
        export_output(scene_runs, "openscenario", tmp_path / "busy")
    with pytest.raises(UsageError, match="unknown export format 'carla'"):
        export_output(scene_runs, "carla", tmp_path / "c")
    image_job = tmp_path / "img"
    image_job.mkdir()
    (image_job / "manifest.json").write_text(json.dumps({"format": "aigc_synth.manifest/v1", "job": {}, "shards": []}))
    with pytest.raises(SceneError, match="image job"):
        export_output(image_job, "openscenario", tmp_path / "d")


def test_scene_preview_is_written(scene_runs, tmp_path):
    import shutil

    from PIL import Image

    from aigc_synth.jobs.report import format_summary, write_preview

    out = tmp_path / "p"
    shutil.copytree(scene_runs, out)
    manifest = json.loads((out / "manifest.json").read_text())
    path = write_preview(out, manifest)
    assert Image.open(path).size[1] > 9 * 20  # one row per traffic x lanes cell
    assert "scenes: 72 in 3 shard(s)" in format_summary(out, manifest)
    assert os.path.getsize(path) > 1000
