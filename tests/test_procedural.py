import csv

import numpy as np
import pytest
from PIL import Image

from aigc_synth.data.datasets import FolderDataset, ProceduralDrivingDataset
from aigc_synth.data.procedural import TRAFFIC_VEHICLES, render_conditions, render_scenes
from aigc_synth.schema import DEFAULT_SCHEMA, SchemaError

ALL = DEFAULT_SCHEMA.encode_many(DEFAULT_SCHEMA.combinations())


def _cond(w="clear", t="day", tr="moderate"):
    return {"weather": w, "time_of_day": t, "traffic": tr}


def test_render_is_deterministic_per_seed_and_independent_of_batch():
    batch = render_scenes(ALL, np.arange(45) + 7, 64)
    again = render_scenes(ALL, np.arange(45) + 7, 64)
    assert np.array_equal(batch.images, again.images)
    alone = render_scenes(ALL[10:11], [17], 64)
    assert np.array_equal(alone.images[0], batch.images[10])
    assert np.array_equal(alone.boxes[0], batch.boxes[10])
    other_seed = render_scenes(ALL[10:11], [18], 64)
    assert not np.array_equal(other_seed.images[0], batch.images[10])


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_and_boxes(size):
    b = render_scenes(ALL, np.arange(45), size)
    assert b.images.shape == (45, size, size, 3) and b.images.dtype == np.uint8
    for code, boxes in zip(ALL, b.boxes):
        lo, hi = TRAFFIC_VEHICLES[DEFAULT_SCHEMA.factors[2][1][code[2]]]
        assert lo <= len(boxes) <= hi
        assert np.all(boxes[:, 0] <= boxes[:, 2]) and np.all(boxes[:, 1] <= boxes[:, 3])
        assert np.all(boxes >= 0) and np.all(boxes <= size)


def test_traffic_controls_vehicle_count():
    light = render_conditions([_cond(tr="light")] * 50, np.arange(50)).vehicle_counts
    heavy = render_conditions([_cond(tr="heavy")] * 50, np.arange(50)).vehicle_counts
    assert light.max() < heavy.min()


def test_conditions_are_visible():
    seeds = np.arange(40)
    day = render_conditions([_cond()] * 40, seeds).images.astype(float)
    night = render_conditions([_cond(t="night")] * 40, seeds).images.astype(float)
    dusk = render_conditions([_cond(t="dusk")] * 40, seeds).images.astype(float)
    fog = render_conditions([_cond(w="fog")] * 40, seeds).images.astype(float)
    snow = render_conditions([_cond(w="snow")] * 40, seeds).images.astype(float)
    assert night.mean() < 0.4 * day.mean()  # night is dark
    assert dusk[..., 0].mean() / dusk[..., 2].mean() > 1.3 * day[..., 0].mean() / day[..., 2].mean()  # warm tint
    assert fog.std(axis=(1, 2)).mean() < 0.6 * day.std(axis=(1, 2)).mean()  # fog lowers contrast
    verge = (slice(None), slice(32, 38), slice(0, 6))  # left of the road, just below the horizon
    assert snow[verge].mean() > day[verge].mean() + 80  # white verge


def test_procedural_dataset_items_match_batches():
    ds = ProceduralDrivingDataset(length=100, seed=3, resolution=32)
    batch = ds.batch([5, 6, 7])
    item = ds[6]
    assert item["image"].shape == (3, 32, 32)
    assert (item["image"] == batch["image"][1]).all()
    assert (item["codes"] == batch["codes"][1]).all()
    assert len(ds.__getitems__([1, 2])) == 2
    with pytest.raises(IndexError, match="100"):
        ds[100]


def _write_folder(tmp_path, rows, header=("file", "weather", "time_of_day", "traffic")):
    img = Image.fromarray(np.zeros((40, 40, 3), np.uint8))
    for r in rows:
        if r[0].endswith(".png"):
            img.save(tmp_path / r[0])
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return tmp_path / "labels.csv"


def test_folder_dataset_loads_and_resizes(tmp_path):
    labels = _write_folder(tmp_path, [("a.png", "fog", "night", "heavy"), ("b.png", "clear", "day", "light")])
    ds = FolderDataset(tmp_path, labels, resolution=32)
    assert len(ds) == 2
    item = ds[0]
    assert item["image"].shape == (3, 32, 32)
    assert item["codes"].tolist() == [3, 2, 2]


def test_folder_dataset_bad_label_names_row_and_allowed(tmp_path):
    labels = _write_folder(tmp_path, [("a.png", "fog", "night", "heavy"), ("b.png", "hail", "day", "light")])
    with pytest.raises(SchemaError, match=r"line 3.*'hail'.*allowed values"):
        FolderDataset(tmp_path, labels)


def test_folder_dataset_missing_column_and_file(tmp_path):
    labels = _write_folder(tmp_path, [("a.png", "fog", "night")], header=("file", "weather", "time_of_day"))
    with pytest.raises(SchemaError, match="missing column"):
        FolderDataset(tmp_path, labels)
    labels = _write_folder(tmp_path, [("missing.jpg", "fog", "night", "heavy")])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        FolderDataset(tmp_path, labels)
    with pytest.raises(FileNotFoundError, match="labels CSV not found"):
        FolderDataset(tmp_path, tmp_path / "nope.csv")
