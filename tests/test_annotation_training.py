"""The layout families train from annotated photos (issue 28, "Training"): BDD100K with lane and
drivable-area labels, COCO boxes only (road and lanes unknown); the exported generator samples
from layouts built from the same annotations; bad annotation files are one line and exit 2 with
nothing written; the "unknown" input planes exist only when ``model.layout_unknown_flags`` is on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aigc_synth.data.annotated_images import AnnotatedImageDataset, read_bdd100k_layouts, read_coco_layouts, write_coco_fixture
from aigc_synth.data.annotation_layout import annotation_layouts, with_unknown_flags
from aigc_synth.data.annotations import read_bdd100k_annotations, read_coco_annotations
from aigc_synth.io.checkpoint import load_checkpoint, save_checkpoint
from aigc_synth.models.exported import load_generator
from aigc_synth.models.registry import build_generator
from aigc_synth.schema import DEFAULT_SCHEMA
from aigc_synth.seeds import latents_for_seeds

N = 8  # usable frames of the fixture (it adds 4 the readers skip)
TINY = ["model.resolution=32", "train.steps=2", "train.batch_size=4", "train.threads=1", "train.eval_every=0",
        "train.device=cpu", "train.log_every=1", "train.sample_every=2", "train.checkpoint_every=2"]
TINY_GAN = ["model=layout_gan", "model.z_dim=16", "model.base_channels=8", "model.d_base_channels=8", "model.embed_dim=8",
            "model.spade_hidden=8", *TINY]
TINY_DIFFUSION = ["model=layout_diffusion", "model.base_channels=8", "model.channel_mult=[1,2]", "model.sampling_steps=2", *TINY]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """BDD100K labels + lanes + drivable areas and a COCO export of the same frames, 32 px."""
    root = tmp_path_factory.mktemp("annotated")
    write_coco_fixture(root, N, seed=0, resolution=32)
    return root


def _bdd100k(root: Path, lanes: bool = True) -> list[str]:
    out = ["data.source=bdd100k", f"data.images={root / 'images'}", f"data.labels={root / 'labels.json'}"]
    return out + ([f"data.lanes={root / 'lanes.json'}", f"data.drivable={root / 'drivable.json'}"] if lanes else [])


def _coco(root: Path) -> list[str]:
    return ["data.source=coco", f"data.images={root / 'images'}", f"data.labels={root / 'instances.json'}"]


def _train(compose_config, out: Path, *overrides: str) -> Path:
    from aigc_synth.training.trainer import train

    cfg = compose_config("train", [*overrides, f"train.out_dir={out}"])
    path = train(cfg.train, cfg.model, cfg.data, progress=False)
    assert (out / "samples" / f"step_{cfg.train.steps:06d}.png").is_file()
    return path


def _sample(path: Path, codes: np.ndarray, layout: torch.Tensor) -> torch.Tensor:
    g = load_generator(path)
    with torch.no_grad():
        images = g.module(latents_for_seeds(np.arange(len(codes)), g.z_dim), torch.from_numpy(codes), layout)
    assert images.shape == (len(codes), 3, 32, 32) and torch.isfinite(images).all() and images.abs().max() <= 1
    return images


def test_layout_gan_trains_from_bdd100k_with_lanes_and_drivable_areas_and_resumes_an_older_state(data, compose_config, tmp_path, capsys):
    path = _train(compose_config, tmp_path / "run", *TINY_GAN, *_bdd100k(data))
    line = capsys.readouterr().out
    assert (f"bdd100k: {N} frames, layout known: road {N}/{N}, lane_lines {N}/{N}; "
            "4 skipped (weather=undefined: 2, timeofday=undefined: 1, missing image: 1)") in line
    assert load_generator(path).meta["data"]["lanes"] == str(data / "lanes.json")
    frames, _ = read_bdd100k_annotations(data / "labels.json", data / "lanes.json", data / "drivable.json", images_dir=data / "images")
    records, _ = read_bdd100k_layouts(data / "images", data / "labels.json")
    raster, known = annotation_layouts([frames[r.path.name] for r in records], 32)
    assert known.all()
    _sample(path, DEFAULT_SCHEMA.encode_many(r.conditions for r in records), torch.from_numpy(raster))
    # a training state written before model.layout_unknown_flags existed resumes (the key's default)
    state = load_checkpoint(tmp_path / "run" / "state.pt")
    del state["model_config"]["layout_unknown_flags"]
    save_checkpoint(state, tmp_path / "run" / "state.pt")
    _train(compose_config, tmp_path / "run", *TINY_GAN, *_bdd100k(data), "train.steps=3")
    assert "resuming from" in capsys.readouterr().out


def test_layout_diffusion_trains_from_bdd100k_with_unknown_flags(data, compose_config, tmp_path):
    path = _train(compose_config, tmp_path / "run", *TINY_DIFFUSION, *_bdd100k(data), "model.layout_unknown_flags=true")
    assert load_generator(path).model_config["layout_unknown_flags"] is True
    frames, _ = read_bdd100k_annotations(data / "labels.json", data / "lanes.json", data / "drivable.json", images_dir=data / "images")
    raster, known = annotation_layouts(list(frames.values())[:4], 32)
    codes = np.zeros((4, 3), np.int64)
    flagged = _sample(path, codes, with_unknown_flags(torch.from_numpy(raster), torch.from_numpy(known)))
    # every channel known: a plain 6-channel layout (what jobs hand a model) gives the same images
    assert torch.equal(flagged, _sample(path, codes, torch.from_numpy(raster)))


def test_layout_gan_trains_from_a_coco_boxes_only_export(data, compose_config, tmp_path, capsys):
    path = _train(compose_config, tmp_path / "run", *TINY_GAN, *_coco(data), "model.layout_unknown_flags=true")
    assert (f"coco: {N} frames, layout known: road 0/{N}, lane_lines 0/{N}; 4 skipped (weather=undefined: 1, "
            "weather=<missing>: 1, timeofday=undefined: 1, missing image: 1)") in capsys.readouterr().out
    # conditions: BDD100K attributes through the mapping, or schema values ("conditions", frame 1): as BDD100K's
    records, _ = read_coco_layouts(data / "images", data / "instances.json")
    assert [r.conditions for r in records] == [r.conditions for r in read_bdd100k_layouts(data / "images", data / "labels.json")[0]]
    frames, _ = read_coco_annotations(data / "instances.json")
    raster, known = annotation_layouts([frames[r.path.name] for r in records], 32)
    assert not known[:, :2].any() and known[:, 2:].all()  # road and lane lines unknown, the vehicles known
    _sample(path, DEFAULT_SCHEMA.encode_many(r.conditions for r in records), with_unknown_flags(torch.from_numpy(raster), torch.from_numpy(known)))


def test_unknown_flags_are_an_architecture_key_off_by_default():
    tiny = {"resolution": 32, "z_dim": 16, "base_channels": 8, "embed_dim": 8, "spade_hidden": 8}
    torch.manual_seed(0)
    plain = build_generator("layout_gan", DEFAULT_SCHEMA.cardinalities, **tiny)
    torch.manual_seed(0)
    off = build_generator("layout_gan", DEFAULT_SCHEMA.cardinalities, **tiny, layout_unknown_flags=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), off.state_dict().values()))
    assert plain.stem_norm.shared[0].in_channels == 6
    flagged = build_generator("layout_gan", DEFAULT_SCHEMA.cardinalities, **tiny, layout_unknown_flags=True).eval()
    assert flagged.stem_norm.shared[0].in_channels == 12
    layout = torch.rand(2, 6, 32, 32)
    z, codes = torch.randn(2, 16), torch.zeros(2, 3, dtype=torch.int64)
    flags = with_unknown_flags(layout, torch.tensor([[False, True, True, True, True, True], [True] * 6]))
    assert flags[0, 0].eq(0).all() and flags[0, 6].eq(1).all() and flags[1, 6:].eq(0).all() and torch.equal(flags[1, :6], layout[1])
    with torch.no_grad():
        assert torch.equal(flagged(z, codes, layout), flagged(z, codes, with_unknown_flags(layout)))


def test_mixed_known_channels_without_flags_are_warned_about(data):
    records, skipped = read_bdd100k_layouts(data / "images", data / "labels.json", data / "lanes.json")
    for r in records[::2]:
        r.annotations.lanes = None
    summary = AnnotatedImageDataset(records, skipped, resolution=32).summary()
    assert f"road 0/{N}, lane_lines {N // 2}/{N}" in summary and "warning: lane_lines known in some frames only" in summary
    assert "warning" not in AnnotatedImageDataset(records, skipped, resolution=32, unknown_flags=True).summary()


BAD = {
    "labels missing": ("bdd100k", "labels", None, "BDD100K labels file not found"),
    "labels not JSON": ("bdd100k", "labels", "{not json", "labels"),
    "labels wrong structure": ("bdd100k", "labels", {"name": "x.png"}, "must be a JSON list of frames"),
    "labels no usable frame": ("bdd100k", "labels", [{"name": "000000.png", "attributes": {"weather": "undefined"}}],
                               "no usable frames"),
    "lanes not JSON": ("bdd100k", "lanes", "[{", "lane labels"),
    "drivable wrong structure": ("bdd100k", "drivable", 3, "must be a JSON list of frames"),
    "coco not JSON": ("coco", "labels", "", "COCO instances"),
    "coco wrong structure": ("coco", "labels", [], "'images' and 'annotations' lists"),
    "coco no conditions": ("coco", "labels", {"images": [{"id": 1, "file_name": "000000.png", "width": 32, "height": 32}],
                                              "annotations": []}, "weather=<missing>: 1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_annotation_files_exit_2_with_one_line_and_write_nothing(data, tmp_path, capsys, case):
    from aigc_synth.cli import main

    source, key, content, message = BAD[case]
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content if isinstance(content, str) else json.dumps(content))
    overrides = {"bdd100k": _bdd100k(data), "coco": _coco(data)}[source]
    overrides = [o for o in overrides if not o.startswith(f"data.{key}=")] + [f"data.{key}={bad}"]
    out = tmp_path / "run"
    assert main(["train", *TINY_GAN, *overrides, f"train.out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aigc-synth train: error:") and "\n" not in err and message in err, err
    assert not out.exists()


def test_exported_generators_fine_tune_a_gan_only_after_its_fresh_critic_warms_up(data, compose_config, tmp_path):
    """What keeps the bundled checkpoints trainable on a machine that kept only the exported file:
    ``train.init_from=<generator.pt>`` starts from its weights (fresh optimisers); a GAN's critic was not
    exported, so it needs ``train.critic_warmup``, steps in which the fresh critic learns alone."""
    from aigc_synth.errors import CheckpointError

    source = _train(compose_config, tmp_path / "src", *TINY_DIFFUSION, *_bdd100k(data))
    from aigc_synth.training.trainer import train

    cfg = compose_config("train", [*TINY_DIFFUSION, *_bdd100k(data), f"train.init_from={source}", "train.steps=0",
                                   f"train.out_dir={tmp_path / 'ft0'}"])
    start = train(cfg.train, cfg.model, cfg.data, progress=False)
    assert all(torch.equal(v, w) for v, w in zip(load_generator(source).module.state_dict().values(),
                                                  load_generator(start).module.state_dict().values()))
    tuned = _train(compose_config, tmp_path / "ft1", *TINY_DIFFUSION, *_bdd100k(data), f"train.init_from={source}")
    assert any(not torch.equal(v, w) for v, w in zip(load_generator(source).module.state_dict().values(),
                                                      load_generator(tuned).module.state_dict().values()))
    gan = _train(compose_config, tmp_path / "gan", *TINY_GAN, *_bdd100k(data))
    with pytest.raises(CheckpointError, match="train.critic_warmup"):
        _train(compose_config, tmp_path / "gan_ft", *TINY_GAN, *_bdd100k(data), f"train.init_from={gan}")
    assert not (tmp_path / "gan_ft").exists()
    weights = lambda path: list(load_generator(path).module.state_dict().values())  # noqa: E731
    warm = [*TINY_GAN, *_bdd100k(data), f"train.init_from={gan}", "train.critic_warmup=2"]
    frozen = _train(compose_config, tmp_path / "gan_warm", *warm, "train.steps=2")  # the critic alone: G as exported
    assert all(torch.equal(v, w) for v, w in zip(weights(gan), weights(frozen)))
    state = torch.load(tmp_path / "gan_warm" / "state.pt", weights_only=True)
    assert state["critic_warmup"] == 2 and state["D"] and not state["opt_g"]["state"]  # the critic learnt; G's moments wait
    moved = _train(compose_config, tmp_path / "gan_warm", *warm, "train.steps=3")  # resumed: step 3 trains G
    assert any(not torch.equal(v, w) for v, w in zip(weights(gan), weights(moved)))
