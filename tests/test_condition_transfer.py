"""Condition transfer (``job.layouts=``): a fleet's own labelled frames drawn under other conditions.

Frames of the renderer's BDD100K fixture (boxes, lanes, drivable areas; 64-px images) on a tiny 32-px
layout GAN: rows follow the frame-major rule with the source frame's name, its boxes scaled to the
output and each frame's own traffic; bytes do not depend on the actor count; a resume writes the same
manifest; exports carry boxes and source frames; bad inputs fail in validation (exit 2) with nothing
written; a served request is the job's slice."""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from aigc_synth.data.annotation_layout import annotation_boxes
from aigc_synth.data.bdd100k_fixtures import write_bdd100k_fixture
from aigc_synth.errors import JobSpecError
from aigc_synth.jobs.generate import run_generation
from aigc_synth.jobs.manifest import job_fingerprint
from aigc_synth.jobs.spec import validate_job
from aigc_synth.models.exported import export_generator
from aigc_synth.models.registry import build_generator
from aigc_synth.schema import DEFAULT_SCHEMA
from tests.helpers import compose_generate, run_cli, write_shards_in_process

TINY_LAYOUT = {"resolution": 32, "z_dim": 16, "base_channels": 8, "embed_dim": 8, "spade_hidden": 8}
CELLS = [{"weather": w, "time_of_day": "night"} for w in ("fog", "rain", "snow")]  # grid order: weather as listed
PLAN = ["+job.plan.factors.weather=[fog,rain,snow]", "+job.plan.factors.time_of_day=[night]"]


def _checkpoint(path: Path, **extra) -> Path:
    torch.manual_seed(0)
    params = {**TINY_LAYOUT, **extra}
    g = build_generator("layout_gan", DEFAULT_SCHEMA.cardinalities, **params)
    for name, p in g.named_parameters():  # SPADE starts as plain BatchNorm; a trained one uses the layout
        if ".gamma." in name or ".beta." in name:
            torch.nn.init.normal_(p, std=0.2)
    g.eval()
    export_generator(path, family="layout_gan", model_params=params, schema=DEFAULT_SCHEMA, generator=g)
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """``(root, overrides)``: the fixture (3 frames with conditions, 3 more the condition reader skips
    but a layout does not need, 1 without its image) and the job keys that read it."""
    root = tmp_path_factory.mktemp("fleet")
    images, labels = write_bdd100k_fixture(root, 3, 0, 64, layout_labels=True)
    keys = [f"job.layouts={labels}", f"job.layouts_lanes={root / 'lanes.json'}",
            f"job.layouts_drivable={root / 'drivable.json'}", f"job.layouts_images={images}"]
    return root, keys


@pytest.fixture(scope="module")
def layout_ckpt(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ct_ckpt") / "layout.pt")


def _cfg(out: Path, ckpt: Path, keys: list[str], *extra: str):
    return compose_generate([f"output_dir={out}", f"job.checkpoint={ckpt}", *keys, *PLAN, "job.shard_size=8",
                             "preview=false", *extra])


def _rows(out: Path) -> list[dict]:
    return sorted((r for f in sorted((out / "parquet").iterdir()) for r in pq.read_table(f).to_pylist()),
                  key=lambda r: r["sample_id"])


def _frames(root: Path) -> list[dict]:
    """The fixture's frames a transfer job uses: all but the one whose image is missing, in file order."""
    return [f for f in json.loads((root / "labels.json").read_text()) if (root / "images" / f["name"]).is_file()]


@pytest.fixture(scope="module")
def runs(ray_session, fleet, layout_ckpt, tmp_path_factory):
    """A Ray job (1 actor, 5 rows per call) and the same job's shards written in this process by one
    worker with micro-batches of 16 (no manifest; tests/test_job.py compares Ray actor counts)."""
    _, keys = fleet
    out = tmp_path_factory.mktemp("ct_jobs")
    a, b = out / "a", out / "b"
    run_generation(_cfg(a, layout_ckpt, keys, "resources.actors=1", "resources.batch_size=5"), progress=False)
    write_shards_in_process(_cfg(b, layout_ckpt, keys, "resources.actors=2", "job.compute_batch=16"))
    return a, b


def test_rows_are_each_frame_under_each_condition_with_its_boxes(runs, fleet):
    root, _ = fleet
    a, _ = runs
    frames, rows = _frames(root), _rows(a)
    assert len(frames) == 6 and len(rows) == 6 * len(CELLS)
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["num_samples"] == 18 and manifest["num_shards"] == 3
    assert manifest["job"]["layouts"]["num_frames"] == 6 and manifest["job"]["layouts"]["conditions"] == CELLS
    counted = {}
    for row in rows:
        i = row["sample_id"]
        frame, cell = frames[i // len(CELLS)], CELLS[i % len(CELLS)]  # frame-major
        assert row["source_frame"] == frame["name"] and row["scene_id"] == i // len(CELLS)
        assert {k: row[k] for k in cell} == cell
        vehicles = [b["box2d"] for b in frame["labels"] if b["category"] in ("car", "truck", "bus")]
        n = len(vehicles)
        assert row["traffic"] == ("light" if n <= 2 else "moderate" if n <= 5 else "heavy")  # its own level
        assert [b["label"] for b in row["boxes"]] == [b["category"] for b in frame["labels"] if b["category"] in ("car", "truck", "bus")]
        for box, src in zip(row["boxes"], vehicles):  # unchanged, scaled from the 64-px frame to 32 px
            assert np.allclose([box["x0"], box["y0"], box["x1"], box["y1"]],
                               [src["x1"] / 2, src["y1"] / 2, src["x2"] / 2, src["y2"] / 2], atol=1e-4)
            assert 0 <= box["visible"] <= 1
        key = "/".join(row[k] for k in DEFAULT_SCHEMA.names)
        counted[key] = counted.get(key, 0) + 1
    assert manifest["counts_per_condition"] == counted  # the exact plan: the manifest counts what was drawn
    assert sum(len(r["boxes"]) for r in rows) > 0


def test_boxes_visible_share_is_what_nearer_boxes_leave():
    from aigc_synth.data.annotation_layout import FrameAnnotations

    ann = FrameAnnotations(64, 64, [(10, 30, 30, 40, "car"), (20, 35, 40, 50, "truck"), (0, 0, 5, 5, "person")])
    far, near = annotation_boxes(ann, 64)
    assert (far["agent"], near["agent"]) == (0, 1) and near["visible"] == 1.0
    assert far["visible"] == pytest.approx(1 - (10 * 5) / (20 * 10))  # the truck stands nearer (lower bottom edge)


@pytest.mark.slow  # ~10 s (two more jobs); determinism across actors is tested on plain jobs by default
def test_bytes_do_not_depend_on_actors_and_a_resume_writes_the_same_manifest(runs, fleet, layout_ckpt, tmp_path):
    from aigc_synth.io.reader import verify_output

    _, keys = fleet
    a, b = runs
    assert len(list((b / "parquet").iterdir())) == 3
    for shard in sorted((a / "parquet").iterdir()):
        assert shard.read_bytes() == (b / "parquet" / shard.name).read_bytes()
    partial = tmp_path / "partial"
    shutil.copytree(a, partial)
    (partial / "manifest.json").unlink()  # a driver killed after two shards
    (partial / "parquet" / "part-00001.parquet").unlink()
    shutil.rmtree(partial / "png" / "part-00001")
    run_generation(_cfg(partial, layout_ckpt, keys, "resources.actors=1"), progress=False)
    assert json.loads((partial / "run.json").read_text())["shards_skipped_on_resume"] == 2
    assert (partial / "manifest.json").read_bytes() == (a / "manifest.json").read_bytes()
    assert verify_output(partial) == []


def test_the_fingerprint_holds_the_frames_content_not_their_path(fleet, layout_ckpt, tmp_path):
    root, keys = fleet
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    moved = [k.replace(str(root), str(copy)) for k in keys]
    first = validate_job(_cfg(tmp_path / "x", layout_ckpt, keys))
    assert job_fingerprint(validate_job(_cfg(tmp_path / "y", layout_ckpt, moved))) == job_fingerprint(first)
    assert str(root) not in json.dumps(job_fingerprint(first))
    labels = json.loads((copy / "labels.json").read_text())
    labels[0]["labels"][0]["box2d"]["x1"] += 1.0
    (copy / "labels.json").write_text(json.dumps(labels))
    assert job_fingerprint(validate_job(_cfg(tmp_path / "z", layout_ckpt, moved))) != job_fingerprint(first)


def test_exports_carry_boxes_and_source_frames(runs, tmp_path):
    import tarfile

    from pycocotools.coco import COCO

    from aigc_synth.exporters import export_output

    a, _ = runs
    rows = {r["sample_id"]: r for r in _rows(a)}
    export_output(str(a), "coco", str(tmp_path / "coco"), None)
    coco = COCO(str(tmp_path / "coco" / "instances.json"))
    n = 0
    for image_id in coco.getImgIds():
        assert coco.loadImgs(image_id)[0]["source_frame"] == rows[image_id]["source_frame"]
        anns, expected = coco.loadAnns(coco.getAnnIds(imgIds=[image_id])), rows[image_id]["boxes"]
        assert len(anns) == len(expected)
        for ann, box in zip(anns, expected):
            x, y, w, h = ann["bbox"]
            assert abs(x - box["x0"]) < 1e-3 and abs(y + h - box["y1"]) < 1e-3
            assert coco.loadCats(ann["category_id"])[0]["name"] == box["label"]
            n += 1
    assert n > 0
    (tar,) = export_output(str(a), "webdataset", str(tmp_path / "wds"), None)
    with tarfile.open(tar) as t:
        meta = json.loads(t.extractfile("000000004.json").read())
    assert meta["source_frame"] == rows[4]["source_frame"] and len(meta["boxes"]) == len(rows[4]["boxes"])
    export_output(str(a), "bdd100k", str(tmp_path / "bdd"), None)
    frames = json.loads((tmp_path / "bdd" / "labels.json").read_text())
    assert [f["attributes"]["source_frame"] for f in frames] == [rows[i]["source_frame"] for i in sorted(rows)]


def test_bad_layouts_fail_in_validation_with_nothing_written(fleet, layout_ckpt, tiny_checkpoint, tmp_path):
    root, keys = fleet
    not_json = tmp_path / "labels.json"
    not_json.write_text("{not json")
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    cases = [
        ([f"job.layouts={tmp_path / 'missing.json'}"], layout_ckpt, "file not found"),
        ([f"job.layouts={not_json}"], layout_ckpt, "cannot read job.layouts"),
        ([f"job.layouts={empty}"], layout_ckpt, "no usable frames"),
        (keys, tiny_checkpoint, "layout-conditioned"),
        (keys[:1] + keys[3:], layout_ckpt, "road unknown in 6 of 6 frames and lane_lines unknown"),
        (keys + ["+job.plan.factors.traffic=[heavy]"], layout_ckpt, "job.plan"),
        (keys + ["job.layouts_format=coco"], layout_ckpt, "apply to BDD100K"),
        (keys[1:2], layout_ckpt, "applies to condition transfer only"),
    ]
    for n, (given, ckpt, message) in enumerate(cases):
        out = tmp_path / f"out{n}"
        with pytest.raises(JobSpecError, match=message):
            validate_job(_cfg(out, ckpt, given))
        assert not out.exists()
    out = tmp_path / "cli"
    proc = run_cli("generate", f"output_dir={out}", f"job.checkpoint={layout_ckpt}", f"job.layouts={empty}")
    assert proc.returncode == 2 and "no usable frames" in proc.stderr and not out.exists()
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1


def test_a_flagged_model_takes_frames_without_lanes_or_road(fleet, tmp_path):
    from aigc_synth.sampling.image import ImageSampler

    root, keys = fleet
    ckpt = _checkpoint(tmp_path / "flagged.pt", layout_unknown_flags=True)
    job = validate_job(_cfg(tmp_path / "out", ckpt, keys[:1] + keys[3:]))  # boxes only: road and lanes unknown
    sampler = ImageSampler(asdict(job), ckpt.read_bytes())
    ids = np.arange(job.num_samples)
    batch = sampler.sample(ids)
    assert batch.images.shape == (18, 32, 32, 3)
    codes, layouts, _ = sampler.transfer_source(job.layouts).rows(ids[:3], job.layouts["conditions"])
    assert layouts.shape[1] == 12 and layouts[:, 6:8].min() == 1.0 and layouts[:, 8:].max() == 0.0  # road, lanes unknown
    assert np.array_equal(sampler.sample(ids[5:9]).images, batch.images[5:9])  # any slice, same rows


def test_a_served_request_is_the_jobs_slice(runs, fleet, layout_ckpt):
    """POST /generate with the first two frames inline (BDD100K frame format): the job's first rows."""
    from aigc_synth.jobs.spec import serving_job
    from aigc_synth.serve.app import SamplerReplica
    from aigc_synth.serve.protocol import RequestError, parse_generate_request

    root, _ = fleet
    a, _ = runs
    names = [f["name"] for f in _frames(root)[:2]]
    pick = lambda file: [f for f in json.loads((root / file).read_text()) if f["name"] in names]  # noqa: E731
    body = {"layouts": pick("labels.json"), "layouts_lanes": pick("lanes.json"), "layouts_drivable": pick("drivable.json"),
            "layouts_size": [64, 64], "conditions": CELLS, "seed": 0, "format": "png"}
    assert len(json.dumps(body)) < 65536  # within serve.max_body_bytes' default
    kind, job, data = serving_job("image", str(layout_ckpt), 32, 64)
    req = parse_generate_request(body, DEFAULT_SCHEMA, 64, model_job=job)
    assert req.num_samples == req.n == 6 and req.start == 0
    replica = SamplerReplica.func_or_class(kind, job, data, 1, 64, 0.01, False)
    (out,) = replica._respond_many([(req.job(job), req.sample_ids(), req.format)])
    for row, served in zip(_rows(a)[:6], out["images"]):
        assert base64.b64decode(served["data"]) == row["image"]["bytes"]
        assert served["source_frame"] == row["source_frame"] and served["condition"]["weather"] == row["weather"]
        assert [b["agent"] for b in served["boxes"]] == [b["agent"] for b in row["boxes"]]
    with pytest.raises(RequestError, match="road unknown"):  # this model cannot take frames without road labels
        parse_generate_request({**body, "layouts_drivable": None}, DEFAULT_SCHEMA, 64, model_job=job)
    with pytest.raises(RequestError, match="layout-conditioned"):
        parse_generate_request(body, DEFAULT_SCHEMA, 64, model_job={**job, "layout": False})


def test_coco_instances_are_detected_and_need_the_zero_opt_in_on_an_unflagged_model(layout_ckpt, tmp_path):
    from aigc_synth.data.annotated_images import write_coco_fixture
    from aigc_synth.sampling.image import ImageSampler

    _, instances = write_coco_fixture(tmp_path / "coco", 3, 0, 64)
    keys = [f"job.layouts={instances}"]
    with pytest.raises(JobSpecError, match="road unknown in 7 of 7 frames"):  # COCO: boxes only
        validate_job(_cfg(tmp_path / "x", layout_ckpt, keys))
    job = validate_job(_cfg(tmp_path / "y", layout_ckpt, keys, "job.layouts_unknown_as_zero=true"))
    assert job.layouts["format"] == "coco" and job.num_samples == 7 * len(CELLS)
    assert job.job_spec["layouts"]["unknown_as_zero"] is True
    doc = json.loads(instances.read_text())
    batch = ImageSampler(asdict(job), layout_ckpt.read_bytes()).sample(np.arange(6))
    assert list(batch.columns["source_frame"]) == [doc["images"][i // 3]["file_name"] for i in range(6)]
    anns = [a for a in doc["annotations"] if a["image_id"] == doc["images"][0]["id"]]
    x, y, w, h = anns[0]["bbox"]
    assert np.allclose([batch.columns["boxes"][0][0][k] for k in ("x0", "y0", "x1", "y1")],
                       [x / 2, y / 2, (x + w) / 2, (y + h) / 2], atol=1e-4)


def test_bad_served_frames_are_one_line_422s(layout_ckpt, fleet):
    from aigc_synth.jobs.spec import serving_job
    from aigc_synth.serve.protocol import RequestError, parse_generate_request

    root, _ = fleet
    frames = json.loads((root / "labels.json").read_text())[:1]
    _, job, _ = serving_job("image", str(layout_ckpt), 32, 64)
    ok = {"layouts": frames, "layouts_lanes": True, "layouts_drivable": True, "conditions": [{"weather": "fog", "time_of_day": "day"}]}
    assert parse_generate_request(ok, DEFAULT_SCHEMA, 64, model_job=job).num_samples == 1
    for change, needle in [({"layouts": []}, "non-empty list"), ({"layouts": [{"labels": []}]}, "no usable frames"),
                           ({"conditions": [{"weather": "fog", "time_of_day": "day", "traffic": "heavy"}]}, "conditions\\[0\\] names"),
                           ({"conditions": [{"weather": "hail", "time_of_day": "day"}]}, "unknown value"),
                           ({"layouts_size": [0, 5]}, "layouts_size"), ({"n": 2}, "'n' must lie")]:
        with pytest.raises(RequestError, match=needle) as err:
            parse_generate_request({**ok, **change}, DEFAULT_SCHEMA, 64, model_job=job)
        assert err.value.status == 422 and "\n" not in str(err.value)
