"""Smoke test of scripts/eval_condition_transfer.py (issue 28's measurement): the exports read back as
the training sets they stand for, and one training step runs from the BDD100K export."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from aigc_synth.data.annotated_images import bdd100k_layout_dataset, coco_layout_dataset
from aigc_synth.data.bdd100k_fixtures import fixture_scenes
from aigc_synth.data.scene_images import SceneImageDataset
from aigc_synth.schema import DEFAULT_SCHEMA
from aigc_synth.scenes.format import scenes_to_table

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("eval_condition_transfer", ROOT / "scripts" / "eval_condition_transfer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_exports_and_one_training_step(tmp_path):
    mod = _script()
    scenes = fixture_scenes(6, seed=5)
    (tmp_path / "train").mkdir()
    (tmp_path / "held").mkdir()
    pq.write_table(scenes_to_table(scenes[:4]), tmp_path / "train" / "part-00000.parquet")
    pq.write_table(scenes_to_table(scenes[4:6]), tmp_path / "held" / "part-00000.parquet")
    work = tmp_path / "work"
    desc = mod.export(str(tmp_path / "train"), str(tmp_path / "held"), work, train_seed=3)
    assert desc["num_train"] == 4 and desc["num_heldout"] == 2
    assert len(mod.transfer_cells()) == 14 and mod.SOURCE_CONDITION not in mod.transfer_cells()

    d = work / "train_bdd100k"
    bdd = bdd100k_layout_dataset(str(d / "images"), str(d / "labels.json"), str(d / "lanes.json"), str(d / "drivable.json"))
    assert bdd.summary().startswith("4 frames, layout known: road 4/4, lane_lines 4/4; 0 skipped")
    coco = coco_layout_dataset(str(d / "images"), str(d / "instances.json"))
    assert coco.summary().startswith("4 frames, layout known: road 0/4, lane_lines 0/4")
    # scene k is exported under the weather / time of day SceneImageDataset draws for item k; traffic is the scene's
    codes, _, _ = SceneImageDataset(scenes[:4], seed=3).items(np.arange(4))
    frames = json.loads((d / "labels.json").read_text())
    for k, frame in enumerate(frames):
        rec = bdd.records[k]
        assert rec.conditions["traffic"] == scenes[k].traffic
        drawn = DEFAULT_SCHEMA.decode(codes[k])
        assert (rec.conditions["weather"], rec.conditions["time_of_day"]) == (drawn["weather"], drawn["time_of_day"])
        assert frame["name"] == rec.path.name
    held = json.loads((work / "heldout_clear_day" / "labels.json").read_text())
    assert {(f["attributes"]["weather"], f["attributes"]["timeofday"]) for f in held} == {("clear", "daytime")}
    sub = mod.source_frames(work, 1)
    assert json.loads((sub / "labels.json").read_text())[0]["name"] == held[0]["name"]
    assert len(json.loads((sub / "labels.json").read_text())) == 1
    assert len(json.loads((sub / "instances.json").read_text())["images"]) == 1

    out = tmp_path / "runs" / "t"
    rc = mod.main(["commands", "--work", str(work), "--steps", "1", "--batch-size", "4", "--run", "B", "--out-prefix", str(out)])
    assert rc == 0 and (Path(f"{out}_B_bdd100k") / "generator.pt").is_file()


def test_renders_per_scene_exports_each_scene_again_under_later_draws(tmp_path):
    mod = _script()
    scenes = fixture_scenes(4, seed=5)
    for name, part in (("train", scenes[:2]), ("held", scenes[2:3])):
        (tmp_path / name).mkdir()
        pq.write_table(scenes_to_table(part), tmp_path / name / "part-00000.parquet")
    desc = mod.export(str(tmp_path / "train"), str(tmp_path / "held"), tmp_path / "work", train_seed=3, renders_per_scene=3)
    assert desc["num_train"] == 6 and desc["renders_per_scene"] == 3
    d = tmp_path / "work" / "train_bdd100k"
    bdd = bdd100k_layout_dataset(str(d / "images"), str(d / "labels.json"), str(d / "lanes.json"), str(d / "drivable.json"))
    codes, _, _ = SceneImageDataset(scenes[:2] * 3, seed=3).items(np.arange(6))
    for i, rec in enumerate(bdd.records):  # frame k + r·N: scene k under item k + r·N's weather / time
        assert rec.conditions["traffic"] == scenes[i % 2].traffic
        drawn = DEFAULT_SCHEMA.decode(codes[i])
        assert (rec.conditions["weather"], rec.conditions["time_of_day"]) == (drawn["weather"], drawn["time_of_day"])
    # the same scene's boxes in every copy
    frames = json.loads((d / "labels.json").read_text())
    assert frames[0]["labels"] == frames[2]["labels"] == frames[4]["labels"]
