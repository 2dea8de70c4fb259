"""WebDataset and COCO exports of image jobs, read back with the ``webdataset`` and ``pycocotools`` libraries."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aigc_synth.errors import UsageError
from aigc_synth.io.atomic import TMP_MARKER
from aigc_synth.io.image_export import export_coco, export_webdataset, image_extension
from aigc_synth.sampling.sampler import encode_png

wds = pytest.importorskip("webdataset")
pycoco = pytest.importorskip("pycocotools.coco")

CONDITIONS = [{"weather": "clear", "time_of_day": "day", "traffic": "light"},
              {"weather": "fog", "time_of_day": "night", "traffic": "heavy"}]


def _pixels(seed: int, h: int = 16, w: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _row(sample_id: int, image: bytes, pixels: np.ndarray, boxes=None) -> dict:
    row = {"sample_id": sample_id, "seed": 1000 + sample_id, "conditions": CONDITIONS[sample_id % 2], "image": image,
           "path": f"{sample_id:09d}.png", "width": pixels.shape[1], "height": pixels.shape[0], "model_id": "ab" * 32}
    if boxes is not None:
        row["boxes"] = boxes
    return row


@pytest.fixture
def rows() -> tuple[list[dict], dict[int, np.ndarray]]:
    """Four PNG rows (two with boxes, one an empty box list) and one JPEG row, given out of id order."""
    pixels = {i: _pixels(i) for i in range(5)}
    boxes = {0: [{"x0": 1.0, "y0": 2.0, "x1": 11.0, "y1": 8.0, "agent": 0, "label": "car"},
                 {"x0": 12.0, "y0": 3.5, "x1": 20.0, "y1": 15.0, "agent": 1, "label": "truck"}],
             2: [{"x0": 0.0, "y0": 0.0, "x1": 4.0, "y1": 4.0, "agent": 0, "label": "bus"},
                 {"x0": 5.0, "y0": 5.0, "x1": 7.0, "y1": 9.0, "agent": 1, "label": "bicycle"}],
             3: []}
    out = [_row(i, encode_png(pixels[i]), pixels[i], boxes.get(i)) for i in (3, 0, 2, 1)]
    out.append(_row(4, _jpeg(pixels[4]), pixels[4]))
    return out, pixels


def _no_temporaries(root: Path) -> bool:
    return not [p for p in root.parent.rglob(f"{TMP_MARKER}*")]


def test_image_extension_from_magic_numbers():
    assert image_extension(encode_png(_pixels(0))) == "png"
    assert image_extension(_jpeg(_pixels(0))) == "jpg"
    buf = io.BytesIO()
    Image.fromarray(_pixels(0)).save(buf, format="WEBP")
    assert image_extension(buf.getvalue()) == "webp"
    with pytest.raises(ValueError, match="unrecognised image encoding"):
        image_extension(b"GIF89a....")


def test_webdataset_reads_back_and_is_deterministic(rows, tmp_path):
    data, pixels = rows
    out = tmp_path / "wds"
    tars = export_webdataset(data, out, shard_size=2)
    assert [t.name for t in tars] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert sorted(out.iterdir()) == tars and _no_temporaries(out)

    with tarfile.open(tars[0]) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["000000000.json", "000000000.png", "000000001.json", "000000001.png"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}

    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("rgb8"))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(5)]
    by_id = {r["sample_id"]: r for r in data}
    for i, sample in enumerate(samples):
        meta = sample["json"]
        assert meta["sample_id"] == i and meta["seed"] == 1000 + i and meta["conditions"] == CONDITIONS[i % 2]
        assert (meta["width"], meta["height"], meta["model_id"]) == (24, 16, "ab" * 32)
        assert meta.get("boxes", []) == (by_id[i].get("boxes") or [])  # an empty box list is left out
        if i == 4:
            assert "png" not in sample and sample["jpg"].shape == (16, 24, 3)  # JPEG: lossy, shape only
        else:
            np.testing.assert_array_equal(sample["png"], pixels[i])  # PNG bytes copied as they are: lossless
    raw = dict(next(iter(wds.WebDataset(str(tars[2]), shardshuffle=False))))
    assert raw["jpg"] == by_id[4]["image"]  # no re-encoding

    again = export_webdataset(list(reversed(data)), tmp_path / "wds2", shard_size=2)
    assert [t.read_bytes() for t in again] == [t.read_bytes() for t in tars]


def test_coco_loads_with_pycocotools(rows, tmp_path):
    data, _ = rows
    out = tmp_path / "coco"
    assert export_coco(data, out) == [out / "instances.json"]
    assert sorted(p.name for p in out.iterdir()) == ["images", "instances.json"] and _no_temporaries(out)

    coco = pycoco.COCO(str(out / "instances.json"))
    assert sorted(coco.getImgIds()) == [0, 1, 2, 3, 4]
    by_id = {r["sample_id"]: r for r in data}
    for img in coco.loadImgs(coco.getImgIds()):
        ext = "jpg" if img["id"] == 4 else "png"
        assert img["file_name"] == f"images/{img['id']:09d}.{ext}"
        assert (out / img["file_name"]).read_bytes() == by_id[img["id"]]["image"]
        assert (img["width"], img["height"]) == (24, 16) and img["conditions"] == CONDITIONS[img["id"] % 2]

    cats = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
    assert cats == {"car": 1, "truck": 2, "bicycle": 3, "bus": 4}  # fixed ids first, then unknown labels sorted
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[0]))
    assert [(a["bbox"], a["area"], a["category_id"], a["iscrowd"]) for a in anns] == [
        ([1.0, 2.0, 10.0, 6.0], 60.0, 1, 0), ([12.0, 3.5, 8.0, 11.5], 92.0, 2, 0)]
    assert [a["category_id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[2]))] == [4, 3]
    assert coco.getAnnIds(imgIds=[1, 3, 4]) == []
    assert sorted(a["id"] for a in coco.dataset["annotations"]) == [1, 2, 3, 4]
    assert coco.getImgIds(catIds=[cats["bus"]]) == [2]

    doc = json.loads((out / "instances.json").read_text())
    assert doc["info"]["year"] == 2026 and doc["licenses"] == []


def test_coco_without_boxes_still_lists_car_and_truck(rows, tmp_path):
    data, _ = rows
    plain = [{k: v for k, v in r.items() if k != "boxes"} for r in data]
    export_coco(plain, tmp_path / "coco")
    coco = pycoco.COCO(str(tmp_path / "coco" / "instances.json"))
    assert coco.dataset["annotations"] == [] and len(coco.getImgIds()) == 5
    assert {c["name"]: c["id"] for c in coco.dataset["categories"]} == {"car": 1, "truck": 2}


def test_bad_input_writes_nothing(rows, tmp_path):
    data, _ = rows
    bad = [*data, _row(9, b"not an image", _pixels(9))]
    for export in (export_webdataset, export_coco):
        with pytest.raises(ValueError, match="unrecognised image encoding"):
            export(bad, tmp_path / export.__name__)
        assert not (tmp_path / export.__name__).exists()
    with pytest.raises(ValueError, match="more than once"):
        export_webdataset([*data, data[0]], tmp_path / "dup")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        export_coco(data, tmp_path / "full")
    assert _no_temporaries(tmp_path / "x")


def test_failure_mid_export_leaves_nothing(rows, tmp_path, monkeypatch):
    import aigc_synth.io.image_export as image_export

    data, _ = rows
    real, calls = image_export._write_tar, []

    def fail_on_second(path, members):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError("disk full")
        real(path, members)

    monkeypatch.setattr(image_export, "_write_tar", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        export_webdataset(data, tmp_path / "wds", shard_size=2)
    assert calls == ["shard-000000.tar", "shard-000001.tar"]
    assert not (tmp_path / "wds").exists() and _no_temporaries(tmp_path / "wds")


def test_scene_job_output_is_refused(tmp_path):
    from aigc_synth.exporters import export_output

    # only the manifest is read before the refusal, so a manifest alone stands in for a scene job
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "manifest.json").write_text(json.dumps({"job": {"sampler": "scenes"}, "shards": []}))
    for fmt in ("webdataset", "coco"):
        with pytest.raises(UsageError, match="holds scenes"):
            export_output(tmp_path / "job", fmt, tmp_path / f"out-{fmt}")
        assert not (tmp_path / f"out-{fmt}").exists()


def test_export_output_of_a_real_job(ray_session, tiny_checkpoint, tmp_path):
    from aigc_synth.exporters import export_output
    from aigc_synth.io.reader import iter_image_rows
    from aigc_synth.jobs.generate import run_generation
    from tests.helpers import compose_generate

    job = tmp_path / "job"
    cfg = compose_generate([f"output_dir={job}", f"job.checkpoint={tiny_checkpoint}", "job.num_samples=20",
                            "job.shard_size=10", "preview=false"])
    manifest = run_generation(cfg, progress=False)
    rows = {r["sample_id"]: r for r in iter_image_rows(job)}
    assert sorted(rows) == list(range(20))

    tars = export_output(job, "webdataset", tmp_path / "wds")
    assert [t.name for t in tars] == ["shard-000000.tar"]  # 20 rows < the default shard size
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("rgb8"))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(20)]
    for s in samples:
        row = rows[s["json"]["sample_id"]]
        assert s["json"]["conditions"] == row["conditions"] and s["json"]["model_id"] == manifest["model_id"]
        np.testing.assert_array_equal(s["png"], np.array(Image.open(io.BytesIO(row["image"])).convert("RGB")))
    # the tar holds exactly the bytes of the job's own PNG files
    pngs = {p.name: p.read_bytes() for shard in manifest["shards"] for p in (job / shard["png_dir"]).iterdir()}
    with tarfile.open(tars[0]) as tar:
        in_tar = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")}
    assert in_tar == pngs and len(pngs) == 20

    (coco_json,) = export_output(job, "coco", tmp_path / "coco", limit=5)
    coco = pycoco.COCO(str(coco_json))
    assert sorted(coco.getImgIds()) == [0, 1, 2, 3, 4]
    for img in coco.loadImgs(coco.getImgIds()):
        assert (tmp_path / "coco" / img["file_name"]).read_bytes() == rows[img["id"]]["image"]
        assert img["conditions"] == rows[img["id"]]["conditions"]
        assert (img["width"], img["height"]) == (rows[img["id"]]["width"], rows[img["id"]]["height"])
    assert {c["name"] for c in coco.dataset["categories"]} >= {"car", "truck"}
    assert _no_temporaries(tmp_path / "wds") and _no_temporaries(tmp_path / "coco")

    with pytest.raises(UsageError, match="not an empty directory"):
        export_output(job, "coco", tmp_path / "coco")
