"""The benchmark's generator: load the given checkpoint or train one in-process on the pool
(:func:`prepare_generator`), and draw labelled images of pool scenes with it (:func:`generate_set`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aigc_synth.benchmarks.downstream.config import (
    IMAGE_SIZE,
    POOL_SEED,
    SCHEMA,
    DownstreamConfig,
)
from aigc_synth.benchmarks.downstream.data import (
    ImageSet,
    pool_dataset,
    pool_fingerprint,
)
from aigc_synth.benchmarks.downstream.report import jsonable
from aigc_synth.data.scene_render import scene_boxes
from aigc_synth.errors import UsageError
from aigc_synth.io.atomic import atomic_write_json
from aigc_synth.scenes.format import Scene
from aigc_synth.seeds import LATENT_STREAM, derive_seeds


def prepare_generator(cfg: DownstreamConfig, pool_scenes: Sequence[Scene], probs: Mapping[str, Any],
                      log: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """Load ``cfg.generator`` or train one in-process on the pool; return it and its description."""
    from aigc_synth.models.exported import load_generator
    from aigc_synth.models.registry import get_family

    fingerprint = pool_fingerprint(pool_scenes, cfg.pool_size, POOL_SEED, probs)
    info: dict[str, Any] = {}
    if cfg.train_generator_steps > 0:
        from aigc_synth.config import compose
        from aigc_synth.training.trainer import train

        run_dir = Path(cfg.out) / "generator"
        overrides = ["model=layout_gan", "data.source=scenes", f"train.out_dir={run_dir}",
                     f"train.steps={cfg.train_generator_steps}", "train.eval_every=0",
                     *([f"train.threads={cfg.threads}"] if cfg.threads > 0 else []), *cfg.generator_overrides]
        marker = run_dir / "pool.json"
        if marker.exists() and json.loads(marker.read_text()).get("fingerprint") != fingerprint:
            overrides.append("train.resume=false")  # an earlier run on another pool: start afresh
            log("generator: the earlier run in this folder used another pool; training from scratch")
        tc = compose("train", overrides)
        if not get_family(tc.model.family).layout:
            raise UsageError(f"the benchmark needs a layout-conditioned generator, model.family={tc.model.family} is not")
        ds = pool_dataset(pool_scenes, cfg.pool_size, probs, resolution=tc.model.resolution)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, jsonable(ds.description))
        t0 = time.perf_counter()
        log(f"generator: training {tc.model.family} for {cfg.train_generator_steps} steps on the pool → {run_dir}")
        path = train(tc.train, tc.model, tc.data, progress=True, dataset=ds)
        info.update(source="trained in-process on the pool", train_seconds=round(time.perf_counter() - t0, 1),
                    overrides=overrides)
    else:
        path = Path(cfg.generator)
        info.update(source=f"given: {path}")
    gen = load_generator(path)
    if gen.schema.to_dict() != SCHEMA.to_dict():
        raise UsageError(f"{path}: the generator's schema is not the driving schema")
    if not get_family(gen.family).layout:
        raise UsageError(f"{path} is a {gen.family} generator; the benchmark needs a layout-conditioned one (layout_gan): "
                         "generated images are labelled with their scene's boxes")
    dataset_meta = (gen.meta.get("data") or {}).get("dataset") if isinstance(gen.meta.get("data"), dict) else None
    trained_here = isinstance(dataset_meta, dict) and dataset_meta.get("fingerprint") == fingerprint
    if not trained_here:
        log("WARNING: the generator's meta does not name this pool (fingerprint); the protocol needs a generator "
            "trained on the imbalanced pool only")
    info.update(path=str(path), model_id=gen.model_id, family=gen.family, resolution=gen.resolution,
                meta=gen.meta, trained_on_this_pool=trained_here, pool_fingerprint=fingerprint)
    return gen, info



def generate_set(gen: Any, scenes: Sequence[Scene], scene_index: np.ndarray, codes: np.ndarray, seed: int,
                 origin: str) -> ImageSet:
    """Generated images of ``scenes[scene_index]`` (their layouts) under ``codes``, latent seeds from
    ``seed``, resized to 64 px if needed; labelled with the scene's boxes (the requested layout)."""
    from aigc_synth.evaluation.layout import layout_images

    n = len(codes)
    latent = derive_seeds(seed, np.arange(n), LATENT_STREAM)
    picked = [scenes[int(k)] for k in scene_index]
    images = layout_images(gen, picked, np.asarray(codes, np.int64), latent) if n else \
        np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    if n and images.shape[1] != IMAGE_SIZE:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False, antialias=True)
        images = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    geo = [scene_boxes(s, IMAGE_SIZE) for s in picked]
    return ImageSet(images, np.asarray(codes, np.int64), [g.boxes for g in geo], [g.visible for g in geo],
                    np.array([s.scene_id for s in picked], np.int64), np.array([s.seed for s in picked], np.int64),
                    latent, np.array([origin] * n))
