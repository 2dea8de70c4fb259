"""GPU training checks: skipped where there is no CUDA device (CI, the 2-core dev machine); run them
on a GPU node with ``pytest tests/test_gpu.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aigc_synth.io.checkpoint import load_checkpoint
from aigc_synth.models.exported import load_generator
from aigc_synth.sampling.sampler import generate_images
from aigc_synth.schema import DEFAULT_SCHEMA

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("preset", ["cgan", "layout_gan", "layout_diffusion"])
def test_training_on_cuda_exports_a_cpu_loadable_generator(tiny_train_config, tmp_path, preset):
    """A tiny run on the GPU (DiffAugment for the cGAN, layouts for the layout GAN) finishes with finite
    losses, records its device, resumes on the GPU, and its export samples on the CPU close to on the GPU."""
    from aigc_synth.training.trainer import train

    scenes, extra = None, []
    if preset != "cgan":  # the layout families train on scene renders
        import pyarrow.parquet as pq

        from aigc_synth.scenes.format import scenes_to_table
        from aigc_synth.models.scene_families import BUNDLED_SCENE_CHECKPOINT, load_scene_generator

        scenes = load_scene_generator(BUNDLED_SCENE_CHECKPOINT).sample(["light", "heavy"] * 4, [3] * 8, list(range(8)), list(range(8)))
        (tmp_path / "scenes").mkdir()
        pq.write_table(scenes_to_table(scenes), tmp_path / "scenes" / "part-00000.parquet")
        extra = ["data.source=scenes", f"data.scenes={tmp_path / 'scenes'}"]
    cfg = tiny_train_config(tmp_path / "run", f"model={preset}", "train.device=cuda", "train.loader_workers=2", *extra)
    path = train(cfg.train, cfg.model, cfg.data, progress=False)
    assert load_checkpoint(path)["meta"]["device"].startswith("cuda")
    cfg4 = tiny_train_config(tmp_path / "run", f"model={preset}", "train.device=cuda", "train.steps=4", *extra)
    gen = load_generator(train(cfg4.train, cfg4.model, cfg4.data, progress=False))  # resumes from step 2
    assert load_checkpoint(tmp_path / "run" / "state.pt")["step"] == 4
    codes = np.array([DEFAULT_SCHEMA.encode(c) for c in DEFAULT_SCHEMA.combinations()[:4]])
    layouts = None
    if scenes is not None:
        from aigc_synth.data.layout import scene_layouts

        layouts = scene_layouts(scenes[:4], gen.resolution)
    cpu = generate_images(gen, codes, np.arange(4), layouts=layouts).astype(int)
    gpu = generate_images(gen, codes, np.arange(4), device="cuda", layouts=layouts).astype(int)
    if preset == "layout_diffusion":  # an iterated solver carries float differences further: compare on average
        assert np.abs(cpu - gpu).mean() <= 2
        gen.module.configure_sampling(bf16=True, channels_last=True, compile=True)  # the GPU options
        fast = generate_images(gen, codes, np.arange(4), device="cuda", layouts=layouts).astype(int)
        assert np.abs(fast - gpu).mean() <= 8
    else:
        assert np.abs(cpu - gpu).max() <= 2
