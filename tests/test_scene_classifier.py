"""The scene domain classifier: the bundled assets/scene_classifier.pt and the trainer's scene source."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aigc_synth.data.scene_images import SceneImageDataset
from aigc_synth.metrics.condition import condition_accuracy
from aigc_synth.metrics.domain import (
    CLASSIFIER_FORMAT,
    DEFAULT_CLASSIFIER,
    load_domain_classifier,
)
from aigc_synth.schema import DEFAULT_SCHEMA
from aigc_synth.training.classifier import (
    HELDOUT_SEED,
    SCENE_HELDOUT_SEED_BASE,
    SCENE_TEST_SEED_BASE,
    SCENE_TRAIN_SEED_BASE,
    TRAIN_SEED,
    resolve_scenes,
    sample_generator_scenes,
    train_domain_classifier,
)

SCENE_CLASSIFIER = DEFAULT_CLASSIFIER.parent / "scene_classifier.pt"
#: Safe margins below the held-out accuracy measured at training time (stored in the file's meta).
MIN_ACCURACY = {"weather": 0.8, "time_of_day": 0.9, "traffic": 0.5}  # measured: 0.93, 1.00, 0.65 (traffic: a visible-count oracle gets 0.58)
TINY = {"steps": 3, "batch_size": 8, "train_pool": 48, "heldout": 16, "threads": 1}


@pytest.fixture(scope="module")
def scene_classifier():
    return load_domain_classifier(SCENE_CLASSIFIER)


@pytest.fixture(scope="module")
def fresh_renders():
    """150 renders of generator scenes from the test seed range (neither training nor held-out
    scenes), weather / time / cosmetics from an image seed the trainer never uses."""
    scenes, _ = sample_generator_scenes(60, SCENE_TEST_SEED_BASE)
    b = SceneImageDataset(scenes, length=150, seed=4242, resolution=64).batch(range(150))
    return b["image"], b["codes"].numpy(), np.array([len(x) for x in b["boxes"]])


def test_bundled_scene_classifier_loads_and_is_a_different_instrument(scene_classifier):
    procedural = load_domain_classifier()
    assert scene_classifier.classifier_id.startswith("domain-v1-")
    assert scene_classifier.classifier_id != procedural.classifier_id
    assert scene_classifier.schema.to_dict() == DEFAULT_SCHEMA.to_dict()
    assert scene_classifier.feature_dim == procedural.feature_dim  # same model class and embedding size
    meta = scene_classifier.meta
    assert meta["source"] == "scenes"
    src = meta["scene_source"]
    assert src["train"]["kind"] == "generator" and src["heldout"]["kind"] == "generator"
    (a0, a1), (b0, b1) = src["train"]["seeds"], src["heldout"]["seeds"]
    assert a1 <= b0 or b1 <= a0, "training and held-out scene seeds overlap"
    assert meta["heldout"]["n"] >= 1000
    for f, floor in MIN_ACCURACY.items():
        assert meta["heldout"][f"accuracy_{f}"] >= floor, meta["heldout"]


def test_bundled_scene_classifier_is_accurate_on_fresh_scene_renders(scene_classifier, fresh_renders):
    images, codes, counts = fresh_renders
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 64, 64)
    scores = scene_classifier.score(images)
    acc = condition_accuracy(codes, scores.predicted_codes(), DEFAULT_SCHEMA)["per_factor"]
    assert all(acc[f] >= floor for f, floor in MIN_ACCURACY.items()), acc
    assert np.abs(scores.count - counts).mean() < 2.0


def test_tiny_scene_training_writes_a_loadable_classifier_naming_its_source(tmp_path):
    out = tmp_path / "scene.pt"
    meta = train_domain_classifier(str(out), source="scenes", num_scenes=12, num_heldout_scenes=6, **TINY)
    clf = load_domain_classifier(out)
    assert clf.meta == meta and meta["source"] == "scenes"
    assert meta["scene_source"]["train"]["seeds"] == [SCENE_TRAIN_SEED_BASE, SCENE_TRAIN_SEED_BASE + 12]
    assert meta["scene_source"]["heldout"]["seeds"] == [SCENE_HELDOUT_SEED_BASE, SCENE_HELDOUT_SEED_BASE + 6]
    assert meta["heldout"]["n"] == 16 and meta["recipe"]["render_resolution"] == 64
    torch_ckpt = torch.load(out, weights_only=True)
    assert torch_ckpt["format"] == CLASSIFIER_FORMAT
    scores = clf.score(np.zeros((2, 64, 64, 3), np.uint8))
    assert scores.features.shape == (2, clf.feature_dim)


def test_scene_lists_and_folders_are_split_disjointly(tmp_path):
    import pyarrow.parquet as pq

    from aigc_synth.scenes.dataset import read_scenes
    from aigc_synth.scenes.format import scenes_to_table

    scenes, _ = sample_generator_scenes(20, SCENE_TEST_SEED_BASE + 1000)
    pq.write_table(scenes_to_table(scenes), tmp_path / "part-00000.parquet")
    assert read_scenes(tmp_path) == scenes
    train, held, desc = resolve_scenes(scenes_dir=str(tmp_path))  # held out: whole runs of the folder
    assert len(train) + len(held) == 20 and held and not set(train) & set(held)
    assert desc["train"]["kind"] == "dir" and desc["heldout"]["kind"] == "split"
    with pytest.raises(ValueError, match="disjoint"):
        resolve_scenes(scenes=scenes, heldout_scenes=scenes[:3])
    meta = train_domain_classifier(str(tmp_path / "dir.pt"), source="scenes", scenes_dir=str(tmp_path), **TINY)
    assert meta["scene_source"]["train"]["path"] == str(tmp_path)
    assert load_domain_classifier(tmp_path / "dir.pt").meta["scene_source"]["heldout"]["kind"] == "split"


def test_procedural_default_is_unchanged(tmp_path):
    out = tmp_path / "procedural.pt"
    meta = train_domain_classifier(str(out), **TINY)
    assert meta["source"] == "procedural" and "scene_source" not in meta
    assert meta["recipe"]["train_seed"] == TRAIN_SEED and meta["recipe"]["heldout_seed"] == HELDOUT_SEED
    assert load_domain_classifier(out).meta["heldout"]["n"] == 16
    with pytest.raises(ValueError, match="source"):
        train_domain_classifier(str(out), source="bdd100k", **TINY)
    with pytest.raises(ValueError, match="scenes"):
        train_domain_classifier(str(out), scenes_dir=str(tmp_path), **TINY)
