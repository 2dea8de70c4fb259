"""BDD100K: the attribute mapping, reading (skips counted, boxes scaled, traffic from box counts),
training and evaluating from it, and the export → read round trip."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aigc_synth.data.bdd100k import (
    BDD100KDataset,
    export_bdd100k,
    format_skipped,
    image_extension,
    load_bdd100k_mapping,
    read_bdd100k,
    traffic_level,
)
from aigc_synth.data.bdd100k_fixtures import write_bdd100k_fixture
from aigc_synth.data.procedural import TRAFFIC_VEHICLES, render_scenes
from aigc_synth.errors import AigcSynthError, BadFileError, SchemaError, UsageError
from aigc_synth.sampling.sampler import encode_png
from aigc_synth.schema import DEFAULT_SCHEMA

N = 48  # > 45 combinations: every mapped value appears in the fixture


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return write_bdd100k_fixture(tmp_path_factory.mktemp("bdd") / "bdd", N, seed=7, resolution=64)


def _frames(labels: Path) -> dict[str, dict]:
    return {f["name"]: f for f in json.loads(labels.read_text())}


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and isinstance(exc.value, ValueError) and exc.value.exit_status == 2
    return msg


# -- the mapping ------------------------------------------------------------------------------------
def test_default_mapping_covers_the_schema_with_valid_values():
    m = load_bdd100k_mapping()
    w, t = m["factors"]["weather"], m["factors"]["time_of_day"]
    assert (w["from"], t["from"]) == ("weather", "timeofday")
    assert w["values"] == {"clear": "clear", "partly cloudy": "overcast", "overcast": "overcast", "rainy": "rain",
                           "snowy": "snow", "foggy": "fog"}
    assert t["values"] == {"daytime": "day", "dawn/dusk": "dusk", "night": "night"}
    assert "undefined" not in w["values"] and "undefined" not in t["values"]
    assert m["traffic"]["levels"] == [("light", 2), ("moderate", 5), ("heavy", None)]
    assert m["traffic"]["count_categories"] == ["car", "truck", "bus"]
    # the thresholds separate the renderer's vehicle-count ranges exactly
    for level, (lo, hi) in TRAFFIC_VEHICLES.items():
        assert {traffic_level(k, m["traffic"]["levels"]) for k in range(lo, hi + 1)} == {level}
    assert traffic_level(0, m["traffic"]["levels"]) == "light" and traffic_level(60, m["traffic"]["levels"]) == "heavy"


def test_bad_mappings_are_one_line_errors(tmp_path):
    default = (Path(load_bdd100k_mapping()["path"])).read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(default.replace("foggy: fog", "foggy: mist"))
    with pytest.raises(SchemaError) as exc:
        load_bdd100k_mapping(bad)
    assert "'mist'" in _one_line(exc) and "allowed" in str(exc.value)
    bad.write_text(default.replace("    heavy: null", "    jammed: null"))
    with pytest.raises(SchemaError, match="traffic level 'jammed'"):
        load_bdd100k_mapping(bad)
    bad.write_text(default.replace("    light: 2", "    light: 7"))
    with pytest.raises(UsageError, match="must increase"):
        load_bdd100k_mapping(bad)
    bad.write_text(default.replace("  time_of_day:", "  time_of_dayz:"))
    with pytest.raises(SchemaError, match="'time_of_dayz' is not in the schema"):
        load_bdd100k_mapping(bad)
    bad.write_text("factors: [1, 2\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_bdd100k_mapping(bad)
    with pytest.raises(UsageError, match="not found"):
        load_bdd100k_mapping(tmp_path / "nope.yaml")


# -- reading ----------------------------------------------------------------------------------------
def test_fixture_is_read_with_the_mapping_and_skips_are_counted(fixture):
    images, labels = fixture
    records, skipped = read_bdd100k(images, labels)
    assert len(records) == N
    assert skipped == {"weather=undefined": 2, "timeofday=undefined": 1, "missing image": 1}
    frames = _frames(labels)
    assert len(frames) == N + sum(skipped.values())
    pairs = {(f, frames[r.path.name]["attributes"][a], r.conditions[f]) for r in records
             for f, a in (("weather", "weather"), ("time_of_day", "timeofday"))}
    for expected in [("weather", "foggy", "fog"), ("weather", "partly cloudy", "overcast"), ("weather", "overcast", "overcast"),
                     ("weather", "rainy", "rain"), ("weather", "snowy", "snow"), ("time_of_day", "dawn/dusk", "dusk"),
                     ("time_of_day", "daytime", "day"), ("time_of_day", "night", "night")]:
        assert expected in pairs
    assert {r.path.suffix for r in records} == {".png", ".jpg"}
    # traffic comes from the car boxes, in the renderer's count range of that level
    for r in records:
        assert "traffic" not in frames[r.path.name]["attributes"]
        lo, hi = TRAFFIC_VEHICLES[r.conditions["traffic"]]
        assert lo <= len(r.boxes) <= hi
        assert [b[:4] for b in r.boxes] == [tuple(lab["box2d"][k] for k in ("x1", "y1", "x2", "y2"))
                                            for lab in frames[r.path.name]["labels"]]
    assert {r.conditions["traffic"] for r in records} == set(TRAFFIC_VEHICLES)


def test_traffic_counts_only_vehicle_categories(tmp_path):
    Image.new("RGB", (1280, 720)).save(tmp_path / "a.jpg")

    def frame(categories):
        return {"name": "a.jpg", "attributes": {"weather": "clear", "timeofday": "night", "scene": "city street"},
                "labels": [{"id": str(k), "category": c, "box2d": {"x1": 10, "y1": 10, "x2": 20, "y2": 30}}
                           for k, c in enumerate(categories)] + [{"id": "lane", "category": "lane", "poly2d": []}]}

    for cats, level in [(["car", "car", "person", "traffic sign", "rider"], "light"),
                        (["car", "truck", "bus", "person"], "moderate"),
                        (["car"] * 3 + ["bus"] * 2 + ["truck"], "heavy")]:
        (tmp_path / "l.json").write_text(json.dumps([frame(cats)]))
        (rec,), skipped = read_bdd100k(tmp_path, tmp_path / "l.json")
        assert rec.conditions == {"weather": "clear", "time_of_day": "night", "traffic": level} and not skipped
        assert [b[4] for b in rec.boxes] == cats  # every box2d is kept; polygons are not boxes


def test_boxes_are_clipped_to_the_image_and_boxes_outside_it_dropped_and_counted(tmp_path):
    """A box partly off the image is clipped; one wholly off it (or huge, or without area) is dropped,
    counted by reason, and does not count toward the traffic level; nothing overflows when scaled."""
    import warnings

    Image.new("RGB", (1280, 720)).save(tmp_path / "a.jpg")
    boxes = [(-50, 10, 100, 60),            # partly left of the image: clipped to x1 = 0
             (1200, 700, 1400, 900),        # partly off the bottom right: clipped to the corner
             (-1e6, 10, -5e5, 20),          # wholly left of the image
             (1e308, 1e308, 1e308, 1e308),  # finite but far outside (and without area)
             (2000, 10, 1e308, 20),         # wholly right of it
             (30, 30, 30, 40)]              # zero width inside the image
    frame = {"name": "a.jpg", "attributes": {"weather": "clear", "timeofday": "daytime"},
             "labels": [{"id": str(k), "category": "car", "box2d": dict(zip(("x1", "y1", "x2", "y2"), b))}
                        for k, b in enumerate(boxes)]}
    (tmp_path / "l.json").write_text(json.dumps([frame]))
    (rec,), skipped = read_bdd100k(tmp_path, tmp_path / "l.json")
    assert [b[:4] for b in rec.boxes] == [(0.0, 10.0, 100.0, 60.0), (1200.0, 700.0, 1280.0, 720.0)]
    assert not skipped and skipped.boxes == {"outside the image": 2, "no area": 2}
    assert rec.conditions["traffic"] == "light"  # two kept cars, not six
    assert "4 boxes dropped (outside the image: 2, no area: 2)" in format_skipped(skipped)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow when scaled to the training resolution
        ds = BDD100KDataset(tmp_path, tmp_path / "l.json", DEFAULT_SCHEMA, resolution=32)
        assert np.isfinite(ds.boxes[0]).all() and ds.boxes[0].max() <= 32


def test_unreadable_image_is_skipped_and_counted(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_text("not an image")
    frames = [{"name": n, "attributes": {"weather": "clear", "timeofday": "daytime"}, "labels": []} for n in ("a.jpg", "b.jpg")]
    (tmp_path / "l.json").write_text(json.dumps(frames))
    records, skipped = read_bdd100k(tmp_path, tmp_path / "l.json")
    assert [r.path.name for r in records] == ["a.jpg"] and skipped == {"unreadable image": 1}


def test_deeply_nested_labels_are_one_clear_error(tmp_path):
    (tmp_path / "l.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(BadFileError, match="cannot read BDD100K labels .*l.json: nested too deeply"):
        read_bdd100k(tmp_path, tmp_path / "l.json")


def test_dataset_scales_boxes_and_batches_like_folder_dataset(fixture):
    images, labels = fixture
    ds = BDD100KDataset(images, labels, DEFAULT_SCHEMA, resolution=32)
    assert len(ds) == N and sum(ds.skipped.values()) == 4
    b = ds.batch([0, 1, N + 2])  # indices wrap around, as FolderDataset's
    assert b["image"].shape == (3, 3, 32, 32) and b["image"].dtype.is_floating_point is False
    assert b["codes"].shape == (3, 3) and b["codes"].dtype.is_signed
    assert b["codes"][2].tolist() == ds.codes[2].tolist()
    for i in range(3):
        raw = np.array([r[:4] for r in ds.records[i % N].boxes], np.float32)
        np.testing.assert_allclose(b["boxes"][i].numpy(), raw / 2, rtol=1e-6)  # 64 px labels, 32 px images
    np.testing.assert_allclose(ds.boxes[1], b["boxes"][1].numpy())
    item = ds[5]
    assert item["image"].shape == (3, 32, 32) and item["codes"].tolist() == DEFAULT_SCHEMA.encode(ds.records[5].conditions)
    assert ds.categories(5) == ["car"] * len(ds.records[5].boxes)


def test_bad_inputs_are_one_line_errors(fixture, tmp_path):
    images, labels = fixture
    with pytest.raises(UsageError, match="labels file not found") as exc:
        read_bdd100k(images, tmp_path / "missing.json")
    _one_line(exc)
    (tmp_path / "bad.json").write_text('[{"name": "a.jpg",')
    with pytest.raises(BadFileError, match="cannot read BDD100K labels .*JSONDecodeError") as exc:
        read_bdd100k(images, tmp_path / "bad.json")
    _one_line(exc)
    (tmp_path / "dict.json").write_text('{"name": "a.jpg"}')
    with pytest.raises(UsageError, match="must be a JSON list of frames"):
        read_bdd100k(images, tmp_path / "dict.json")
    with pytest.raises(UsageError, match="image directory not found"):
        read_bdd100k(tmp_path / "no-images", labels)
    # nothing usable: the message says how many were skipped and why
    frames = list(_frames(labels).values())
    undefined = [f for f in frames if "undefined" in f["attributes"].values()]
    (tmp_path / "undefined.json").write_text(json.dumps(undefined + ["not a frame"]))
    with pytest.raises(UsageError) as exc:
        read_bdd100k(images, tmp_path / "undefined.json")
    msg = _one_line(exc)
    assert "no usable frames" in msg and "4 of 4 skipped" in msg and "weather=undefined: 2" in msg
    assert "timeofday=undefined: 1" in msg and "malformed frame: 1" in msg
    # a mapping that names a value outside the schema
    bad = tmp_path / "map.yaml"
    bad.write_text(Path(load_bdd100k_mapping()["path"]).read_text().replace("rainy: rain", "rainy: drizzle"))
    with pytest.raises(SchemaError, match="drizzle"):
        BDD100KDataset(images, labels, mapping=bad)


def test_cli_train_reports_bdd100k_problems_with_exit_2(fixture, tmp_path, capsys):
    from aigc_synth.cli import main

    images, _ = fixture
    assert main(["train", "data.source=bdd100k", f"data.images={images}", f"train.out_dir={tmp_path / 'r'}"]) == 2
    assert "needs data.images" in capsys.readouterr().err
    assert main(["train", "data.source=bdd100k", f"data.images={images}", f"data.labels={tmp_path / 'x.json'}",
                 f"train.out_dir={tmp_path / 'r'}"]) == 2
    assert "labels file not found" in capsys.readouterr().err
    assert main(["train", "data.source=nope", f"train.out_dir={tmp_path / 'r'}"]) != 0
    assert "'bdd100k'" in capsys.readouterr().err


# -- training, export, evaluation -----------------------------------------------------------------------
def _train(tiny_train_config, out: Path, images: Path, labels: Path) -> Path:
    from aigc_synth.training.trainer import train

    cfg = tiny_train_config(out, "data.source=bdd100k", f"data.images={images}", f"data.labels={labels}")
    path = train(cfg.train, cfg.model, cfg.data, progress=False)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert path.is_file() and steps == [1, 2]
    return path


def test_train_two_steps_from_bdd100k(fixture, tiny_train_config, tmp_path):
    images, labels = fixture
    _train(tiny_train_config, tmp_path / "run", images, labels)


def _rows(n: int, seed: int = 3) -> list[dict]:
    """Rows as ``iter_image_rows`` yields them, from rendered scenes (boxes on every row but the last two)."""
    combos = DEFAULT_SCHEMA.encode_many(DEFAULT_SCHEMA.combinations())
    codes = combos[np.random.default_rng(seed).permutation(len(combos))[:n]]
    scenes = render_scenes(codes, np.arange(n) + 100, 32)
    rows = []
    for i in range(n):
        row = {"sample_id": 1000 + i, "seed": 100 + i, "conditions": DEFAULT_SCHEMA.decode(codes[i]),
               "image": encode_png(scenes.images[i]), "path": f"{1000 + i:09d}.png", "width": 32, "height": 32,
               "model_id": "test"}
        if i < n - 2:
            row["boxes"] = [{"x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3], "agent": k, "label": "truck" if k == 0 else None}
                            for k, b in enumerate(scenes.boxes[i].tolist())]
        rows.append(row)
    buf = io.BytesIO()  # one JPEG row: the file extension follows the bytes
    Image.fromarray(scenes.images[0]).save(buf, format="JPEG")
    rows[0]["image"] = buf.getvalue()
    return rows


def test_export_read_round_trip_then_train(tiny_train_config, tmp_path):
    rows = _rows(20)
    out = tmp_path / "export"
    assert export_bdd100k(rows, out) == [out / "labels.json"]
    assert sorted(p.name for p in out.iterdir()) == ["images", "labels.json"]  # no staging left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names[0] == "000001000.jpg" and names[1] == "000001001.png" and len(names) == 20
    frames = json.loads((out / "labels.json").read_text())
    fog = next(f for f, r in zip(frames, rows) if r["conditions"]["weather"] == "fog")
    assert fog["attributes"]["weather"] == "foggy" and fog["attributes"]["scene"] == "highway"
    assert {f["attributes"]["timeofday"] for f in frames} <= {"daytime", "dawn/dusk", "night"}
    assert [lab["category"] for lab in frames[0]["labels"]] == ["truck"] + ["car"] * (len(rows[0]["boxes"]) - 1)
    assert frames[-1]["labels"] == []

    records, skipped = read_bdd100k(out / "images", out / "labels.json")
    assert not skipped and len(records) == len(rows)
    for rec, row in zip(records, rows):
        assert rec.conditions == row["conditions"]
        assert rec.path.read_bytes() == row["image"]
        assert [b[:4] for b in rec.boxes] == [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in row.get("boxes", [])]
    # without the exporter's traffic attribute, traffic is derived from the boxes and still agrees
    for f in frames:
        del f["attributes"]["traffic"]
    (tmp_path / "plain.json").write_text(json.dumps(frames[:-2]))
    plain, _ = read_bdd100k(out / "images", tmp_path / "plain.json")
    assert [r.conditions for r in plain] == [r["conditions"] for r in rows[:-2]]

    _train(tiny_train_config, tmp_path / "run", out / "images", out / "labels.json")


def test_export_refuses_bad_rows_and_writes_nothing(tmp_path):
    rows = _rows(3)
    rows[1]["conditions"] = {**rows[1]["conditions"], "weather": "hail"}
    with pytest.raises(AigcSynthError, match="weather='hail'"):
        export_bdd100k(rows, tmp_path / "out")
    rows = _rows(3)
    rows[2]["image"] = b"not an image"
    with pytest.raises(UsageError, match="unrecognised image encoding"):
        export_bdd100k(rows, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    assert image_extension(b"RIFF\0\0\0\0WEBPVP8 ") == "webp"


def test_evaluate_with_a_bdd100k_reference(tiny_checkpoint, fixture, tmp_path):
    from aigc_synth.config import compose
    from aigc_synth.evaluation import evaluate

    images, labels = fixture
    out = tmp_path / "eval"
    cfg = compose("evaluate", [f"source={tiny_checkpoint}", f"out_dir={out}", "kid_subsets=5", "kid_subset_size=20",
                               "n_per_condition=2", "grid_per_condition=1", "max_samples=40", "reference_source=bdd100k",
                               f"reference={images}", f"reference_labels={labels}"])
    logged: list[str] = []
    result = evaluate(cfg, progress=False, log=lambda *a: logged.append(" ".join(map(str, a))))
    assert result["reference"]["kind"] == "bdd100k" and result["reference"]["n"] == 40  # max_samples respected
    assert result["source"]["n"] == 90 and (out / "metrics.json").is_file()
    assert any("4 skipped" in line for line in logged)
    with pytest.raises(AigcSynthError, match="reference_labels"):
        evaluate(compose("evaluate", [f"source={tiny_checkpoint}", f"out_dir={tmp_path / 'e2'}", "reference_source=bdd100k",
                                      f"reference={images}"]), progress=False, log=lambda *a: None)
