"""Downstream benchmark (issue 13): do generated images of rare conditions help a perception model?

The protocol
    * **Real training pool** (``pool_size`` renders of ``pool_scenes`` scenes) in which fog, snow and
      night are rare: weather fog ``rare_prob``, snow ``rare_prob``, clear / overcast / rain share
      the rest equally; time of day night ``rare_prob``, day / dusk share the rest (default 2 %
      each; :func:`condition_probs_for`). Drawn per item by
      :class:`~aigc_synth.data.scene_images.SceneImageDataset` (``condition_probs``); traffic is the
      scene's own level.
    * **Held-out real test set**, balanced: ``test_per_combination`` renders of each of the 45
      weather × time × traffic combinations, from *other* scenes (scene ids and scene seeds disjoint
      from the pool's) and other cosmetic seeds. No generator and no downstream model ever sees it;
      :func:`check_disjoint` asserts it and its evidence goes into the report.
    * **A generator trained on the imbalanced pool only**: a given layout-conditioned checkpoint
      (its model id and meta are recorded, and whether its meta names this very pool), or one
      trained in-process (``train_generator_steps``) by :func:`aigc_synth.training.trainer.train`
      on :class:`PoolImages`: exactly the pool's items (same scenes, conditions and cosmetic seeds,
      cycled), rendered at the generator's resolution.
    * **Four training sets** for each downstream model:

      (a) ``real``: the pool;
      (b) ``real+generated``: the pool + ``M`` generated images of rare conditions on pool scenes;
      (c) ``generated``: ``synthetic_size`` generated images, the 15 weather × time cells equally
          often, on pool scenes (train on synthetic, test on real);
      (d) ``real+oracle``: the pool + ``M`` real renders of exactly (b)'s scenes and conditions
          (other cosmetic seeds): what (b) would get from perfect generated images.

      ``M`` (the mix ratio ``M / pool_size``) defaults to the *balancing* count
      (:func:`plan_rare_topup`): every weather × time cell with a rare value is topped up to the
      mean count of the six common cells, so in (b) and (d) every weather and every time of day is
      about equally frequent. ``mix_ratio`` sets ``M = round(mix_ratio * pool_size)`` instead
      (distributed over the rare cells in the same proportions).
    * **Downstream models**, each trained on every row for the same ``steps`` with the same
      ``batch_size`` (batches drawn with replacement, so a smaller set runs the same optimisation;
      :class:`StepLedger` counts the steps actually taken and raises on any mismatch), for each of
      ``seeds`` (initial weights and batch order; the same seed gives every row the same start):

      * the condition classifier (:class:`~aigc_synth.models.classifier.DomainClassifier`, the
        scene classifier's recipe: :func:`train_condition_classifier`);
      * the vehicle detector (:class:`~aigc_synth.models.detector.VehicleCenterNet`,
        :func:`aigc_synth.training.detector.train_vehicle_detector`). Generated images are labelled
        with the boxes of the scene they were drawn for (the layout they were asked to show).
    * **Metrics** on the held-out set, grouped **rare** (an image with any rare value: fog, snow or
      night; 27 of the 45 combinations) vs **common** (the other 18): classifier accuracy per factor,
      per condition value and per combination; detector AP50 and recall (COCO, IoU 0.5, the layout
      metric's ground-truth filter; :func:`aigc_synth.metrics.layout.layout_fidelity`). Mean ± sample
      standard deviation (ddof 1) over the seeds.

Outputs in ``out``: ``downstream.json`` (every number, the config, counts, disjointness evidence,
steps), ``downstream.md`` (table: rows a–d × accuracy rare / common per factor and AP50 rare /
common) and ``downstream.png`` (grouped bars), each written atomically. ``generator/`` holds an
in-process generator run.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aigc_synth.data.scene_images import SceneImageDataset, resolve_condition_probs
from aigc_synth.data.scene_render import render_labelled, scene_boxes
from aigc_synth.errors import UsageError
from aigc_synth.io.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_with,
)
from aigc_synth.sampling.seeds import LATENT_STREAM, derive_seeds, uniform_from_seeds
from aigc_synth.scenes.format import Scene
from aigc_synth.schema import DEFAULT_SCHEMA

SCHEMA = DEFAULT_SCHEMA
FACTORS: tuple[str, ...] = SCHEMA.names  # weather, time_of_day, traffic
WEATHERS: tuple[str, ...] = SCHEMA.values("weather")
TIMES: tuple[str, ...] = SCHEMA.values("time_of_day")
TRAFFIC: tuple[str, ...] = SCHEMA.values("traffic")
W, T, TR = FACTORS.index("weather"), FACTORS.index("time_of_day"), FACTORS.index("traffic")
#: The rare values of the protocol.
RARE: dict[str, tuple[str, ...]] = {"weather": ("fog", "snow"), "time_of_day": ("night",)}
#: Side of every real render and of every image the downstream models see (generated ones are resized).
IMAGE_SIZE = 64

ROWS: dict[str, str] = {
    "a": "real only",
    "b": "real + generated rare",
    "c": "generated only",
    "d": "real + real rare (oracle)",
}
MODELS = ("classifier", "detector")

# Seeds. Scene seeds and ids are seed_base + i (the bundled scene model), so the pool's and the test
# set's scene ranges never meet; the dataset seeds pick each image's conditions and cosmetic seed.
POOL_SCENE_SEED_BASE, TEST_SCENE_SEED_BASE = 61_000_000, 62_000_000
POOL_SEED, TEST_SEED, ORACLE_SEED = 6101, 6201, 6301
GENERATED_SEED, SYNTHETIC_SEED = 6401, 6501  # latent seeds of (b)'s and (c)'s generated images
EXTRA_SCENE_STREAM = 201  # which pool scene an extra (generated / oracle / synthetic) item shows

#: ``--quick``: small sizes. Measured on a 2-core CPU busy with another training, one torch thread:
#: preparation ~36 s (renders, 3,550 generated images at 64 px), ~57 s per row × seed, so about
#: 12 min for 4 rows × 3 seeds, generator training excluded.
#: generator steps ``--quick`` trains when given no generator (keeps the whole quick run under 15 min)
QUICK_GENERATOR_STEPS = 400
QUICK = {"pool_size": 1500, "pool_scenes": 500, "test_per_combination": 10, "test_scenes": 150,
         "steps": 250, "batch_size": 32}


@dataclass
class DownstreamConfig:
    out: str
    generator: str | None = None  # a layout-conditioned generator checkpoint trained on this pool
    train_generator_steps: int = 0  # > 0: train one in-process on the pool (out/generator/)
    generator_overrides: tuple[str, ...] = ()  # extra `aigc-synth train` overrides for that run
    rare_prob: float = 0.02
    condition_probs: dict[str, dict[str, float]] | None = None  # full table; overrides rare_prob
    pool_size: int = 10_000
    pool_scenes: int = 3_000
    test_per_combination: int = 40
    test_scenes: int = 600
    mix_ratio: float | None = None  # generated rare images per pool image; None = balance the cells
    synthetic_size: int | None = None  # (c)'s size; None = pool_size
    steps: int = 1500
    batch_size: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)
    classifier_width: int = 32
    classifier_stem: int = 16
    classifier_lr: float = 2e-3
    detector_widths: tuple[int, ...] = (16, 24, 48, 64)
    detector_lr: float = 3e-3
    scenes_dir: str | None = None  # pool scenes from a scene folder instead of the bundled scene model
    test_scenes_dir: str | None = None  # test scenes from a scene folder
    threads: int = 0  # torch threads; 0 = leave as is
    quick: bool = False

    def validate(self) -> None:
        if bool(self.generator) == (self.train_generator_steps > 0):
            raise UsageError("give exactly one of generator=PATH and train_generator_steps=N")
        if self.train_generator_steps < 0:
            raise UsageError("train_generator_steps must be >= 0")
        if not 0.0 <= self.rare_prob <= 0.2:
            raise UsageError(f"rare_prob must be in [0, 0.2] (rare no more frequent than common), got {self.rare_prob}")
        for name in ("pool_size", "pool_scenes", "test_per_combination", "steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.test_scenes < len(TRAFFIC):
            raise UsageError(f"test_scenes must be >= {len(TRAFFIC)} (one per traffic level)")
        if self.mix_ratio is not None and not (self.mix_ratio >= 0 and math.isfinite(self.mix_ratio)):
            raise UsageError(f"mix_ratio must be >= 0, got {self.mix_ratio}")
        if self.synthetic_size is not None and self.synthetic_size < 1:
            raise UsageError(f"synthetic_size must be >= 1, got {self.synthetic_size}")
        if not self.seeds:
            raise UsageError("at least one seed")


def quick_config(**overrides: Any) -> DownstreamConfig:
    """The ``--quick`` config (:data:`QUICK` sizes), with ``overrides`` applied on top."""
    return DownstreamConfig(**{**QUICK, "quick": True, **overrides})


# ---- conditions ---------------------------------------------------------------------------------------------

def condition_probs_for(rare_prob: float = 0.02) -> dict[str, dict[str, float]]:
    """The pool's per-factor probabilities: each rare value ``rare_prob``, the common values of its
    factor sharing the rest equally."""
    out: dict[str, dict[str, float]] = {}
    for name, rare in RARE.items():
        values = SCHEMA.values(name)
        common = [v for v in values if v not in rare]
        rest = (1.0 - rare_prob * len(rare)) / len(common)
        out[name] = {v: (rare_prob if v in rare else rest) for v in values}
    return out


def rare_mask(codes: np.ndarray) -> np.ndarray:
    """bool (n,): images with any rare value (fog, snow or night)."""
    codes = np.asarray(codes)
    mask = np.zeros(len(codes), bool)
    for name, rare in RARE.items():
        f = FACTORS.index(name)
        mask |= np.isin(codes[:, f], [SCHEMA.values(name).index(v) for v in rare])
    return mask


def is_rare_cell(weather: str, time_of_day: str) -> bool:
    return weather in RARE["weather"] or time_of_day in RARE["time_of_day"]


CELLS: tuple[tuple[str, str], ...] = tuple((w, t) for w in WEATHERS for t in TIMES)


def composition(codes: np.ndarray) -> dict[str, Any]:
    """Counts per factor value, per weather × time cell, and the rare share."""
    codes = np.asarray(codes)
    out: dict[str, Any] = {"n": len(codes)}
    for f, name in enumerate(FACTORS):
        out[name] = {v: int((codes[:, f] == i).sum()) for i, v in enumerate(SCHEMA.values(name))}
    out["cells"] = {f"{w}/{t}": int(((codes[:, W] == WEATHERS.index(w)) & (codes[:, T] == TIMES.index(t))).sum())
                    for w, t in CELLS}
    out["rare_images"] = int(rare_mask(codes).sum())
    out["shares"] = {v: round(out[name][v] / max(1, len(codes)), 4) for name, rare in RARE.items() for v in rare}
    return out


# ---- scenes -------------------------------------------------------------------------------------------------

def sample_scenes(n: int, seed_base: int, scene_checkpoint: str | None = None) -> tuple[list[Scene], dict[str, Any]]:
    """``n`` scenes of the bundled scene model: traffic levels in turn (balanced), lane counts drawn
    from ``seed_base``, scene seed and id ``seed_base + i``."""
    from aigc_synth.scenes.format import LANE_COUNTS, TRAFFIC_LEVELS
    from aigc_synth.scenes.generators import (
        load_scene_generator,
        resolve_scene_checkpoint,
    )

    gen = load_scene_generator(resolve_scene_checkpoint(scene_checkpoint))
    levels = [t for t in TRAFFIC_LEVELS if t in gen.traffic]
    lanes_ok = [k for k in LANE_COUNTS if k in gen.lanes]
    rng = np.random.default_rng(seed_base)
    traffic = [levels[i % len(levels)] for i in range(n)]
    lanes = [lanes_ok[i] for i in rng.integers(0, len(lanes_ok), n)]
    ids = [seed_base + i for i in range(n)]
    scenes = gen.sample(traffic, lanes, ids, ids, compute_batch=256)
    return scenes, {"kind": "scene model", "model_id": gen.model_id, "family": gen.family, "num_scenes": n,
                    "scene_seeds": [seed_base, seed_base + n], "traffic": "levels in turn", "lanes": "uniform"}


def _scenes_from_dir(path: str) -> tuple[list[Scene], dict[str, Any]]:
    from aigc_synth.scenes.dataset import read_scenes

    scenes = read_scenes(path)
    if not scenes:
        raise UsageError(f"no scenes in {path}")
    return scenes, {"kind": "dir", "path": str(path), "num_scenes": len(scenes),
                    "traffic": {t: sum(s.traffic == t for s in scenes) for t in TRAFFIC}}


def split_scenes(cfg: DownstreamConfig) -> tuple[list[Scene], list[Scene], dict[str, Any]]:
    """(pool scenes, test scenes, their descriptions); disjointness is checked on the images later."""
    pool, pool_desc = (_scenes_from_dir(cfg.scenes_dir) if cfg.scenes_dir
                       else sample_scenes(cfg.pool_scenes, POOL_SCENE_SEED_BASE))
    test, test_desc = (_scenes_from_dir(cfg.test_scenes_dir) if cfg.test_scenes_dir
                       else sample_scenes(cfg.test_scenes, TEST_SCENE_SEED_BASE))
    return pool, test, {"pool": pool_desc, "test": test_desc}


# ---- image sets ---------------------------------------------------------------------------------------------

@dataclass
class ImageSet:
    """Images (n, 64, 64, 3) uint8 with their labels: codes (n, F), boxes and visible fractions per
    image (the scene's, at 64 px), the scene's id and seed, the image's own seed (cosmetic seed of a
    render, latent seed of a generated image) and its origin (pool, test, oracle, generated, synthetic)."""

    images: np.ndarray
    codes: np.ndarray
    boxes: list[np.ndarray]
    visible: list[np.ndarray]
    scene_ids: np.ndarray
    scene_seeds: np.ndarray
    image_seeds: np.ndarray
    origin: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    def keys(self) -> set[tuple[int, int]]:
        """(scene id, image seed) of every image."""
        return set(zip(self.scene_ids.tolist(), self.image_seeds.tolist()))

    def counts(self) -> np.ndarray:
        return np.array([len(b) for b in self.boxes], np.float32)


def concat_sets(*sets: ImageSet) -> ImageSet:
    return ImageSet(images=np.concatenate([s.images for s in sets]), codes=np.concatenate([s.codes for s in sets]),
                    boxes=[b for s in sets for b in s.boxes], visible=[v for s in sets for v in s.visible],
                    scene_ids=np.concatenate([s.scene_ids for s in sets]),
                    scene_seeds=np.concatenate([s.scene_seeds for s in sets]),
                    image_seeds=np.concatenate([s.image_seeds for s in sets]),
                    origin=np.concatenate([s.origin for s in sets]))


def render_items(scenes: Sequence[Scene], scene_index: np.ndarray, codes: np.ndarray, seeds: np.ndarray,
                 origin: str) -> ImageSet:
    """Real renders at 64 px of ``scenes[scene_index[i]]`` under ``codes[i]`` with cosmetic seed ``seeds[i]``."""
    picked = [scenes[int(k)] for k in scene_index]
    images, boxes, visible = render_labelled(picked, codes, seeds, SCHEMA, IMAGE_SIZE)
    return ImageSet(images, np.asarray(codes, np.int64), boxes, visible,
                    np.array([s.scene_id for s in picked], np.int64), np.array([s.seed for s in picked], np.int64),
                    np.asarray(seeds, np.int64), np.array([origin] * len(codes)))


class PoolImages(SceneImageDataset):
    """The pool as a training dataset: index ``i`` is pool item ``i mod length`` (same scene,
    conditions and cosmetic seed), so a generator trained on it sees the pool and nothing else.
    ``description`` (plain data) identifies the pool; the trainer stores it in the exported meta."""

    def items(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return super().items(np.asarray(indices, dtype=np.int64) % self.length)

    @property
    def description(self) -> dict[str, Any]:
        return {"kind": "downstream_pool", "fingerprint": pool_fingerprint(self.scenes, self.length, self.seed,
                                                                          self.condition_probs),
                "pool_size": self.length, "pool_seed": self.seed, "num_scenes": len(self.scenes),
                "condition_probs": self.condition_probs, "resolution": self.resolution, "cyclic": True}


def pool_fingerprint(scenes: Sequence[Scene], length: int, seed: int, probs: Mapping[str, Any] | None) -> str:
    """sha256 of what decides the pool's items: the scenes' ids and seeds, size, dataset seed, probabilities."""
    blob = json.dumps({"scenes": [[s.scene_id, s.seed, s.model_id] for s in scenes], "length": int(length),
                       "seed": int(seed), "probs": probs}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def pool_dataset(scenes: Sequence[Scene], n: int, probs: Mapping[str, Mapping[str, float]],
                 resolution: int = IMAGE_SIZE) -> PoolImages:
    return PoolImages(scenes, length=n, seed=POOL_SEED, resolution=resolution, condition_probs=probs)


def make_pool(scenes: Sequence[Scene], n: int, probs: Mapping[str, Mapping[str, float]]) -> ImageSet:
    """The imbalanced real pool: items ``0..n-1`` of :func:`pool_dataset`, rendered at 64 px."""
    codes, seeds, scene_index = pool_dataset(scenes, n, probs).items(range(n))
    return render_items(scenes, scene_index, codes, seeds, "pool")


def test_items(scenes: Sequence[Scene], per_combination: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scene index, codes, cosmetic seeds) of the balanced test set: ``per_combination`` items of
    each of the 45 combinations, each on a scene of that combination's traffic level (the scenes of a
    level are used in turn), cosmetic seeds from :data:`TEST_SEED`."""
    by_level = {t: [k for k, s in enumerate(scenes) if s.traffic == t] for t in TRAFFIC}
    missing = [t for t, ks in by_level.items() if not ks]
    if missing:
        raise UsageError(f"the test scenes have no {missing} traffic: a balanced test set needs every level")
    combos = [(w, t, tr) for w in range(len(WEATHERS)) for t in range(len(TIMES)) for tr in range(len(TRAFFIC))]
    used = dict.fromkeys(TRAFFIC, 0)
    scene_index, codes = [], []
    for _ in range(per_combination):
        for w, t, tr in combos:
            level = TRAFFIC[tr]
            scene_index.append(by_level[level][used[level] % len(by_level[level])])
            used[level] += 1
            codes.append(_code(w, t, tr))
    n = len(codes)
    return np.array(scene_index, np.int64), np.array(codes, np.int64), derive_seeds(TEST_SEED, np.arange(n), LATENT_STREAM)


def _code(w: int, t: int, tr: int) -> tuple[int, ...]:
    c = [0] * len(FACTORS)
    c[W], c[T], c[TR] = w, t, tr
    return tuple(c)


def make_test_set(scenes: Sequence[Scene], per_combination: int) -> ImageSet:
    scene_index, codes, seeds = test_items(scenes, per_combination)
    return render_items(scenes, scene_index, codes, seeds, "test")


# ---- the mixture --------------------------------------------------------------------------------------------

def _largest_remainder(weights: Sequence[float], total: int) -> list[int]:
    w = np.asarray(weights, np.float64)
    if total <= 0 or w.sum() <= 0:
        return [0] * len(w)
    exact = w / w.sum() * total
    base = np.floor(exact).astype(int)
    order = np.argsort(-(exact - base), kind="stable")
    base[order[: total - base.sum()]] += 1
    return base.tolist()


def plan_rare_topup(pool_codes: np.ndarray, mix_ratio: float | None = None) -> dict[str, Any]:
    """How many generated (and oracle) images of each rare weather × time cell (b) and (d) add.

    The *balancing* count tops every cell with a rare value up to the mean count of the six
    common cells (clear / overcast / rain × day / dusk), which makes every weather and every time of
    day about equally frequent in the mixture. ``mix_ratio`` = None uses it; a number asks for
    ``round(mix_ratio * pool_size)`` images, spread over the rare cells in the same proportions
    (equally when the pool needs no top-up).
    """
    pool = composition(pool_codes)
    n = len(pool_codes)
    cells = pool["cells"]
    common = [f"{w}/{t}" for w, t in CELLS if not is_rare_cell(w, t)]
    rare = [f"{w}/{t}" for w, t in CELLS if is_rare_cell(w, t)]
    target = float(np.mean([cells[c] for c in common]))
    deficits = [max(0.0, target - cells[c]) for c in rare]
    balance = round(sum(deficits))
    total = balance if mix_ratio is None else round(mix_ratio * n)
    weights = deficits if sum(deficits) > 0 else [1.0] * len(rare)
    per_cell = dict(zip(rare, _largest_remainder(weights, total)))
    mixture = {c: cells[c] + per_cell.get(c, 0) for c in cells}
    mix_codes = np.concatenate([np.asarray(pool_codes).reshape(-1, len(FACTORS)),
                                np.array([_code(WEATHERS.index(c.split("/")[0]), TIMES.index(c.split("/")[1]), 0)
                                          for c in per_cell for _ in range(per_cell[c])], np.int64).reshape(-1, len(FACTORS))])
    mix = composition(mix_codes)
    return {"num_generated": total, "mix_ratio": round(total / max(1, n), 4), "balancing_count": balance,
            "balancing_ratio": round(balance / max(1, n), 4), "mode": "balance" if mix_ratio is None else "mix_ratio",
            "target_per_cell": round(target, 2), "per_cell": per_cell, "mixture_cells": mixture,
            "mixture_weather": mix["weather"], "mixture_time_of_day": mix["time_of_day"],
            "mixture_shares": mix["shares"], "mixture_size": len(mix_codes)}


def _pick_scenes(candidates: np.ndarray, n: int, seed: int) -> np.ndarray:
    u = uniform_from_seeds(derive_seeds(seed, np.arange(n), stream=EXTRA_SCENE_STREAM))
    return candidates[np.minimum((u * len(candidates)).astype(np.int64), len(candidates) - 1)]


def extra_items(scenes: Sequence[Scene], candidates: np.ndarray, cells: Sequence[tuple[str, str]],
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(scene index, codes) for one item per entry of ``cells`` (weather, time): scenes drawn
    uniformly from ``candidates`` (indices into ``scenes``) with ``seed``, traffic the scene's own."""
    n = len(cells)
    scene_index = _pick_scenes(np.asarray(candidates, np.int64), n, seed) if n else np.zeros(0, np.int64)
    codes = np.array([_code(WEATHERS.index(w), TIMES.index(t), TRAFFIC.index(scenes[int(k)].traffic))
                      for (w, t), k in zip(cells, scene_index)], np.int64).reshape(n, len(FACTORS))
    return scene_index, codes


def topup_cells(plan: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (weather, time) of each of (b)'s / (d)'s extra images, cell by cell."""
    return [tuple(c.split("/")) for c, k in plan["per_cell"].items() for _ in range(k)]  # type: ignore[misc]


def balanced_cells(n: int) -> list[tuple[str, str]]:
    """(c)'s conditions: the 15 weather × time cells in turn (counts differ by at most one)."""
    return [CELLS[i % len(CELLS)] for i in range(n)]


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


# ---- disjointness -------------------------------------------------------------------------------------------

def check_disjoint(test: ImageSet, training: Mapping[str, ImageSet]) -> dict[str, Any]:
    """Raise ValueError if any training set shares a scene id, a scene seed, an image seed or a
    (scene id, image seed) pair with the test set; return the evidence (sizes and overlaps, all 0)."""
    t_ids, t_seeds, t_img, t_keys = set(test.scene_ids.tolist()), set(test.scene_seeds.tolist()), \
        set(test.image_seeds.tolist()), test.keys()
    evidence: dict[str, Any] = {"test": {"images": len(test), "scene_ids": len(t_ids), "scene_seeds": len(t_seeds),
                                         "scene_id_range": [int(test.scene_ids.min()), int(test.scene_ids.max())]
                                         if len(test) else None}}
    bad = []
    for name, s in training.items():
        ov = {"scene_ids": len(t_ids & set(s.scene_ids.tolist())),
              "scene_seeds": len(t_seeds & set(s.scene_seeds.tolist())),
              "image_seeds": len(t_img & set(s.image_seeds.tolist())),
              "scene_image_pairs": len(t_keys & s.keys())}
        evidence[name] = {"images": len(s), "scene_ids": len(set(s.scene_ids.tolist())),
                          "scene_id_range": [int(s.scene_ids.min()), int(s.scene_ids.max())] if len(s) else None,
                          "overlap_with_test": ov}
        bad += [f"{name}: {k} {v}" for k, v in ov.items() if v]
    if bad:
        raise ValueError("the held-out test set is not disjoint from the training data: " + "; ".join(bad))
    evidence["disjoint"] = True
    return evidence


# ---- equal optimisation -------------------------------------------------------------------------------------

class StepLedger:
    """Every (row, model, seed) run must take exactly ``steps`` optimiser steps of ``batch_size``
    images: :meth:`counter` counts what a trainer really did, :meth:`record` raises on a mismatch,
    :meth:`verify` raises unless every row has the same runs."""

    def __init__(self, steps: int, batch_size: int):
        self.steps, self.batch_size = int(steps), int(batch_size)
        self.records: list[dict[str, Any]] = []

    def counter(self) -> tuple[Callable[[int, int, dict[str, float]], None], dict[str, Any]]:
        seen: dict[str, Any] = {"steps": 0, "batch_sizes": set(), "last_loss": None}

        def callback(step: int, batch: int, logs: dict[str, float]) -> None:
            seen["steps"] += 1
            seen["batch_sizes"].add(int(batch))
            seen["last_loss"] = logs.get("loss")

        return callback, seen

    def record(self, row: str, model: str, seed: int, steps_taken: int, batch_sizes: set[int] | Sequence[int],
               examples: int) -> dict[str, Any]:
        sizes = sorted({int(b) for b in batch_sizes})
        if steps_taken != self.steps or sizes != [self.batch_size]:
            raise RuntimeError(f"row {row} {model} seed {seed}: {steps_taken} steps of batch {sizes}, "
                               f"the protocol requires {self.steps} steps of {self.batch_size} for every row")
        rec = {"row": row, "model": model, "seed": int(seed), "steps": int(steps_taken), "batch_size": sizes[0],
               "examples": int(examples), "epochs": round(steps_taken * sizes[0] / max(1, examples), 2)}
        self.records.append(rec)
        return rec

    def verify(self, rows: Sequence[str] | None = None) -> dict[str, Any]:
        rows = list(rows) if rows is not None else sorted({r["row"] for r in self.records})
        runs = {row: sorted((r["model"], r["seed"]) for r in self.records if r["row"] == row) for row in rows}
        first = next(iter(runs.values()), [])
        for row, r in runs.items():
            if r != first or not r:
                raise RuntimeError(f"row {row} ran {r}, another row {first}: every row needs the same runs")
        if any(r["steps"] != self.steps or r["batch_size"] != self.batch_size for r in self.records):
            raise RuntimeError("a run took other steps or batch size than the protocol's")
        return {"steps": self.steps, "batch_size": self.batch_size, "runs_per_row": len(first), "verified": True,
                "runs": self.records}


# ---- the classifier -----------------------------------------------------------------------------------------

def _nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return images


def train_condition_classifier(images: np.ndarray | torch.Tensor, codes: np.ndarray | torch.Tensor,
                               counts: np.ndarray | torch.Tensor, steps: int, batch_size: int, seed: int, *,
                               width: int = 32, stem: int = 16, lr: float = 2e-3,
                               callback: Callable[[int, int, dict[str, float]], None] | None = None):
    """The scene classifier's recipe (:mod:`aigc_synth.training.classifier`) on arrays: uint8 images
    ((n, H, W, 3) numpy or (n, 3, H, W) tensor), codes (n, F), vehicle counts (n,); cross-entropy per
    factor + 4 × smooth-L1 count, AdamW one-cycle, the classifier's augmentations; exactly ``steps``
    steps of ``batch_size`` images drawn with replacement. Initial weights from ``seed``. Returns
    the model in eval mode."""
    from aigc_synth.models.classifier import DomainClassifier
    from aigc_synth.training.classifier import augment, classifier_loss
    from aigc_synth.training.detector import one_cycle

    x_all = _nchw(images)
    codes = torch.as_tensor(np.asarray(codes), dtype=torch.int64)
    counts = torch.as_tensor(np.asarray(counts), dtype=torch.float32)
    n = len(x_all)
    if n == 0 or len(codes) != n or len(counts) != n:
        raise ValueError(f"{n} images, {len(codes)} codes, {len(counts)} counts")
    torch.manual_seed(seed)
    model = DomainClassifier(SCHEMA.cardinalities, width=width, stem=stem)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = one_cycle(opt, lr, steps, max(0.15, 2.5 / steps))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        x = augment(DomainClassifier.prepare(x_all[idx]), gen)
        loss, ce, count_loss = classifier_loss(model, x, codes[idx], counts[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if callback is not None:
            callback(step, len(idx), {"loss": loss.item(), "ce": ce.item(), "count": count_loss.item()})
    return model.eval()


def _acc(ok: np.ndarray) -> float:
    return round(float(ok.mean()), 4) if len(ok) else math.nan


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, test: ImageSet, chunk: int = 256) -> dict[str, Any]:
    """Held-out accuracy per factor (all / rare / common images), per condition value and per combination."""
    model.eval()
    x = _nchw(test.images)
    pred = torch.cat([torch.stack([lg.argmax(1) for lg in model(x[s:s + chunk])[0]], 1)
                      for s in range(0, len(x), chunk)]).numpy()
    codes = test.codes
    ok = pred == codes
    rare = rare_mask(codes)
    out: dict[str, Any] = {"n": len(codes), "n_rare": int(rare.sum()), "n_common": int((~rare).sum())}
    for group, m in (("all", np.ones(len(codes), bool)), ("rare", rare), ("common", ~rare)):
        out[group] = {**{name: _acc(ok[m, f]) for f, name in enumerate(FACTORS)}, "all_factors": _acc(ok[m].all(1))}
    out["by_value"] = {name: {v: _acc(ok[codes[:, f] == i, f]) for i, v in enumerate(SCHEMA.values(name))}
                       for f, name in enumerate(FACTORS)}
    out["by_combination"] = {"/".join(SCHEMA.values(n_)[c[f]] for f, n_ in enumerate(FACTORS)): _acc(ok[(codes == c).all(1)].all(1))
                             for c in np.unique(codes, axis=0)}
    return out


# ---- the detector -------------------------------------------------------------------------------------------

def evaluate_detector(model: torch.nn.Module, test: ImageSet, name: str = "downstream") -> dict[str, Any]:
    """AP50 / recall (COCO, IoU 0.5, the layout metric's GT filter) on all, rare and common test
    images, and on the images of each rare value."""
    from aigc_synth.metrics.layout import (
        VehicleDetector,
        gt_ignore_mask,
        layout_fidelity,
    )

    dets = VehicleDetector(model, name).detect(test.images)
    ignore = [gt_ignore_mask(b, v) for b, v in zip(test.boxes, test.visible)]
    rare = rare_mask(test.codes)
    masks = {"all": np.ones(len(test), bool), "rare": rare, "common": ~rare}
    for fname, values in RARE.items():
        f = FACTORS.index(fname)
        for v in values:
            masks[v] = test.codes[:, f] == SCHEMA.values(fname).index(v)
    out: dict[str, Any] = {}
    for group, m in masks.items():
        idx = np.flatnonzero(m)
        res = layout_fidelity([dets[i] for i in idx], [test.boxes[i] for i in idx], [ignore[i] for i in idx])
        out[group] = {"ap50": res["ap50"], "recall": res["recall"], "num_gt": res["num_gt"],
                      "num_ignored": res["num_ignored"], "num_images": res["num_images"]}
    return out


# ---- summary ------------------------------------------------------------------------------------------------

#: (key, column label, path into a per-seed result) of the summary table, in column order.
SUMMARY: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    *((f"acc_{f}_{g}", f"{f} acc {g}", ("classifier", g, f)) for f in FACTORS for g in ("rare", "common")),
    ("ap50_rare", "AP50 rare", ("detector", "rare", "ap50")),
    ("ap50_common", "AP50 common", ("detector", "common", "ap50")),
)
#: Further numbers summarised (json and the second table).
DETAIL: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("acc_weather_fog", "weather acc on fog", ("classifier", "by_value", "weather", "fog")),
    ("acc_weather_snow", "weather acc on snow", ("classifier", "by_value", "weather", "snow")),
    ("acc_time_night", "time acc on night", ("classifier", "by_value", "time_of_day", "night")),
    ("acc_all_factors_rare", "all-factor acc rare", ("classifier", "rare", "all_factors")),
    ("acc_all_factors_common", "all-factor acc common", ("classifier", "common", "all_factors")),
    ("recall_rare", "recall rare", ("detector", "rare", "recall")),
    ("recall_common", "recall common", ("detector", "common", "recall")),
    ("ap50_fog", "AP50 fog", ("detector", "fog", "ap50")),
    ("ap50_snow", "AP50 snow", ("detector", "snow", "ap50")),
    ("ap50_night", "AP50 night", ("detector", "night", "ap50")),
)


def _get(d: Mapping[str, Any], path: Sequence[str]) -> float:
    for p in path:
        d = d[p]
    return float(d) if d is not None else math.nan


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the finite values."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if not len(v):
        return {"mean": None, "std": None, "n": 0, "values": list(values)}
    return {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4),
            "n": len(v), "values": [None if x is None or not math.isfinite(x) else round(float(x), 4) for x in values]}


def summarise(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {key: mean_std([_get(r, path) for r in per_seed]) for key, _, path in (*SUMMARY, *DETAIL)}


def _fmt(s: Mapping[str, Any]) -> str:
    return "n/a" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}"


def markdown(result: Mapping[str, Any]) -> str:
    cfg, rows = result["config"], result["rows"]
    mix = result["mixture"]
    lines = [
        "# Downstream benchmark: generated rare conditions for perception training",
        "",
        (f"Generator: `{result['generator']['family']}` `{result['generator']['model_id'][:12]}` "
         f"({result['generator']['source']}; trained on this pool: {result['generator']['trained_on_this_pool']}). "
         f"Real pool: {result['pool']['n']} images, fog {result['pool']['weather']['fog']}, "
         f"snow {result['pool']['weather']['snow']}, night {result['pool']['time_of_day']['night']} "
         f"(requested p = {cfg['rare_probabilities']}). "
         f"Held-out test: {result['test']['n']} real images, {result['test']['per_combination']} per each of the 45 "
         f"combinations ({result['test']['n_rare']} rare, {result['test']['n_common']} common), disjoint from all "
         "training data (scene ids, scene seeds, image seeds)."),
        "",
        (f"Mix: (b) adds {mix['num_generated']} generated rare-condition images, mix ratio {mix['mix_ratio']} "
         f"generated per real image ({mix['mode']}; the balancing ratio is {mix['balancing_ratio']}); "
         f"(d) adds the same {mix['num_generated']} (scene, condition) pairs rendered for real. "
         f"(c) trains on {rows['c']['composition']['n']} generated images, the 15 weather × time cells equally."),
        "",
        (f"Every row: {result['equal_steps']['steps']} steps of batch {result['equal_steps']['batch_size']} per model "
         f"(verified), seeds {cfg['seeds']}; mean ± sample std over seeds. "
         "Rare = test images with fog, snow or night; common = the others."),
        "",
        "| row | training set | " + " | ".join(label for _, label, _ in SUMMARY) + " |",
        "|---|---|" + "---|" * len(SUMMARY),
    ]
    for r, row in rows.items():
        lines.append(f"| ({r}) | {row['name']} ({row['composition']['n']} img) | "
                     + " | ".join(_fmt(row["summary"][k]) for k, _, _ in SUMMARY) + " |")
    lines += ["", "| row | " + " | ".join(label for _, label, _ in DETAIL) + " |", "|---|" + "---|" * len(DETAIL)]
    for r, row in rows.items():
        lines.append(f"| ({r}) | " + " | ".join(_fmt(row["summary"][k]) for k, _, _ in DETAIL) + " |")
    lines += ["", f"Quick mode: {cfg['quick']}. Full numbers, counts and disjointness evidence: downstream.json.", ""]
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    acc_keys = [k for k, _, _ in SUMMARY if k.startswith("acc_")]
    ap_keys = [k for k, _, _ in SUMMARY if k.startswith("ap50_")]
    labels = {k: lab for k, lab, _ in SUMMARY}
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    colours = ["#4477aa", "#ee6677", "#228833", "#ccbb44"]
    for ax, keys, title in ((axes[0], acc_keys, "classifier accuracy (held-out real)"),
                            (axes[1], ap_keys, "detector AP50 (held-out real)")):
        width = 0.8 / len(rows)
        for j, (r, row) in enumerate(rows.items()):
            mean = [row["summary"][k]["mean"] or 0.0 for k in keys]
            std = [row["summary"][k]["std"] or 0.0 for k in keys]
            ax.bar(np.arange(len(keys)) + (j - (len(rows) - 1) / 2) * width, mean, width, yerr=std, capsize=2,
                   color=colours[j % len(colours)], label=f"({r}) {row['name']}")
        ax.set_xticks(range(len(keys)), [labels[k] for k in keys], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_title(title, fontsize=10)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(rows), fontsize=9, frameon=False)
    fig.suptitle(f"downstream benchmark — mean ± std over seeds {result['config']['seeds']}", fontsize=10)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def write_outputs(result: Mapping[str, Any], out: str | Path) -> dict[str, str]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "downstream.json", _jsonable(result))
    atomic_write_bytes(out / "downstream.md", markdown(result).encode())
    plot(result, out / "downstream.png")
    return {k: str(out / f"downstream.{k}") for k in ("json", "md", "png")}


# ---- the generator ------------------------------------------------------------------------------------------

def prepare_generator(cfg: DownstreamConfig, pool_scenes: Sequence[Scene], probs: Mapping[str, Any],
                      log: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """Load ``cfg.generator`` or train one in-process on the pool; return it and its description."""
    from aigc_synth.io.checkpoint import load_generator
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
        atomic_write_json(marker, _jsonable(ds.description))
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


# ---- the run ------------------------------------------------------------------------------------------------

@dataclass
class Prepared:
    """Everything the downstream runs read: the sets, the rows, and what the report says about them."""

    pool: ImageSet
    test: ImageSet
    generated: ImageSet
    oracle: ImageSet
    synthetic: ImageSet
    rows: dict[str, ImageSet]
    report: dict[str, Any] = field(default_factory=dict)


def prepare(cfg: DownstreamConfig, log: Callable[[str], None] = print) -> tuple[Prepared, Any]:
    """Scenes, pool, test set, generator, generated / oracle / synthetic sets, the four rows, checks."""
    probs = resolve_condition_probs(cfg.condition_probs or condition_probs_for(cfg.rare_prob), SCHEMA)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    pool_scenes, test_scenes, scene_desc = split_scenes(cfg)
    pool = make_pool(pool_scenes, cfg.pool_size, probs)
    test = make_test_set(test_scenes, cfg.test_per_combination)
    timings["scenes_and_renders_s"] = round(time.perf_counter() - t0, 1)
    log(f"pool: {len(pool)} real images ({composition(pool.codes)['shares']}), test: {len(test)} real images "
        f"({timings['scenes_and_renders_s']} s)")

    t1 = time.perf_counter()
    gen, gen_info = prepare_generator(cfg, pool_scenes, probs, log)
    timings["generator_s"] = round(time.perf_counter() - t1, 1)

    t2 = time.perf_counter()
    plan = plan_rare_topup(pool.codes, cfg.mix_ratio)
    used = _scene_indices(pool_scenes, pool.scene_ids)  # the pool scenes the pool shows
    cells = topup_cells(plan)
    idx_b, codes_b = extra_items(pool_scenes, used, cells, GENERATED_SEED)
    generated = generate_set(gen, pool_scenes, idx_b, codes_b, GENERATED_SEED, "generated")
    oracle = render_items(pool_scenes, idx_b, codes_b, derive_seeds(ORACLE_SEED, np.arange(len(cells)), LATENT_STREAM),
                          "oracle")
    n_syn = cfg.synthetic_size or cfg.pool_size
    idx_c, codes_c = extra_items(pool_scenes, used, balanced_cells(n_syn), SYNTHETIC_SEED)
    synthetic = generate_set(gen, pool_scenes, idx_c, codes_c, SYNTHETIC_SEED, "synthetic")
    timings["generated_and_oracle_s"] = round(time.perf_counter() - t2, 1)
    log(f"mixture: {plan['num_generated']} generated rare images (mix ratio {plan['mix_ratio']}), "
        f"{len(oracle)} oracle renders, {len(synthetic)} synthetic ({timings['generated_and_oracle_s']} s)")

    rows = {"a": pool, "b": concat_sets(pool, generated), "c": synthetic, "d": concat_sets(pool, oracle)}
    if int((rows["b"].origin == "generated").sum()) != plan["num_generated"] or \
            int((rows["d"].origin == "oracle").sum()) != plan["num_generated"]:
        raise RuntimeError("the mixture does not hold the planned number of extra images")
    disjoint = check_disjoint(test, {"pool": pool, "generated": generated, "oracle": oracle, "synthetic": synthetic})
    test_comp = composition(test.codes)
    combos = np.unique(test.codes, axis=0, return_counts=True)[1]
    if len(combos) != len(SCHEMA.combinations()) or combos.min() != combos.max():
        raise RuntimeError("the test set is not balanced over the 45 combinations")
    report = {
        "scenes": scene_desc,
        "pool": {**composition(pool.codes), "requested_probabilities": probs, "dataset_seed": POOL_SEED,
                 "scenes_used": len(used)},
        "test": {**test_comp, "per_combination": cfg.test_per_combination, "combinations": len(combos),
                 "n_rare": int(rare_mask(test.codes).sum()), "n_common": int((~rare_mask(test.codes)).sum()),
                 "dataset_seed": TEST_SEED},
        "mixture": plan,
        "generator": gen_info,
        "disjointness": disjoint,
        "timings": timings,
        "seeds": {"pool_scene_seed_base": POOL_SCENE_SEED_BASE, "test_scene_seed_base": TEST_SCENE_SEED_BASE,
                  "pool": POOL_SEED, "test": TEST_SEED, "oracle": ORACLE_SEED, "generated": GENERATED_SEED,
                  "synthetic": SYNTHETIC_SEED},
    }
    return Prepared(pool, test, generated, oracle, synthetic, rows, report), gen


def _scene_indices(scenes: Sequence[Scene], scene_ids: np.ndarray) -> np.ndarray:
    """Indices into ``scenes`` of the distinct ``scene_ids`` (the pool scenes that appear in the pool)."""
    where = {s.scene_id: k for k, s in enumerate(scenes)}
    return np.array(sorted({where[int(i)] for i in scene_ids}), np.int64)


def train_and_evaluate(cfg: DownstreamConfig, prep: Prepared, ledger: StepLedger,
                       log: Callable[[str], None] = print) -> dict[str, list[dict[str, Any]]]:
    """Every row × seed: a classifier and a detector, each for the ledger's steps; their test metrics."""
    from aigc_synth.training.detector import train_vehicle_detector

    per_seed: dict[str, list[dict[str, Any]]] = {r: [] for r in prep.rows}
    for seed in cfg.seeds:
        for r, data in prep.rows.items():
            t0 = time.perf_counter()
            x = _nchw(data.images)
            cb, seen = ledger.counter()
            clf = train_condition_classifier(x, data.codes, data.counts(), ledger.steps, ledger.batch_size, seed,
                                             width=cfg.classifier_width, stem=cfg.classifier_stem,
                                             lr=cfg.classifier_lr, callback=cb)
            rec_c = ledger.record(r, "classifier", seed, seen["steps"], seen["batch_sizes"], len(data))
            cb, seen = ledger.counter()
            det = train_vehicle_detector(x, data.boxes, data.visible, ledger.steps, ledger.batch_size, seed,
                                         lr=cfg.detector_lr, widths=cfg.detector_widths, init_seed=seed,
                                         progress=False, callback=cb)
            rec_d = ledger.record(r, "detector", seed, seen["steps"], seen["batch_sizes"], len(data))
            t1 = time.perf_counter()
            res = {"seed": seed, "classifier": evaluate_classifier(clf, prep.test),
                   "detector": evaluate_detector(det, prep.test, f"downstream-{r}-seed{seed}"),
                   "steps": {"classifier": rec_c, "detector": rec_d},
                   "train_seconds": round(t1 - t0, 1), "eval_seconds": round(time.perf_counter() - t1, 1)}
            per_seed[r].append(res)
            log(f"seed {seed} row ({r}) {ROWS[r]}: weather acc rare {res['classifier']['rare']['weather']:.3f} / "
                f"common {res['classifier']['common']['weather']:.3f}, time acc rare "
                f"{res['classifier']['rare']['time_of_day']:.3f}, AP50 rare {res['detector']['rare']['ap50']:.3f} / "
                f"common {res['detector']['common']['ap50']:.3f} ({res['train_seconds']} + {res['eval_seconds']} s)")
    return per_seed


def run_downstream(cfg: DownstreamConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole protocol (module docstring); writes the outputs to ``cfg.out`` and returns the result."""
    cfg.validate()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    prep, _ = prepare(cfg, log)
    ledger = StepLedger(cfg.steps, cfg.batch_size)
    t1 = time.perf_counter()
    per_seed = train_and_evaluate(cfg, prep, ledger, log)
    equal = ledger.verify(list(prep.rows))
    rows = {}
    for r, data in prep.rows.items():
        comp = composition(data.codes)
        comp["origin"] = {o: int((data.origin == o).sum()) for o in sorted(set(data.origin.tolist()))}
        rows[r] = {"name": ROWS[r], "composition": comp, "summary": summarise(per_seed[r]), "per_seed": per_seed[r]}
    probs = prep.report["pool"]["requested_probabilities"]
    result = {
        "protocol": "issue 13: imbalanced real pool (fog, snow, night rare), balanced disjoint held-out real test set, "
                    "generator trained on the pool only; rows (a) real, (b) real + generated rare, (c) generated only, "
                    "(d) real + real rare (oracle, same count as (b)); equal steps and batch size for every row",
        "config": {**asdict(cfg), "rare_probabilities": {v: probs[f][v] for f, vs in RARE.items() for v in vs},
                   "seeds": list(cfg.seeds), "threads_used": torch.get_num_threads(), "image_size": IMAGE_SIZE,
                   "classifier": {"width": cfg.classifier_width, "stem": cfg.classifier_stem, "lr": cfg.classifier_lr,
                                  "recipe": "scene classifier's: CE per factor + 4 x smooth-L1 count, AdamW one-cycle, "
                                            "flip / shift / blur / noise"},
                   "detector": {"widths": list(cfg.detector_widths), "lr": cfg.detector_lr,
                                "recipe": "aigc_synth.training.detector.train_vehicle_detector"}},
        **prep.report,
        "equal_steps": equal,
        "rows": rows,
    }
    result["timings"]["downstream_s"] = round(time.perf_counter() - t1, 1)
    result["timings"]["total_s"] = round(time.perf_counter() - t0, 1)
    result["outputs"] = write_outputs(result, cfg.out)
    log(f"wrote {result['outputs']['json']}, .md, .png ({result['timings']['total_s']} s)")
    return result


__all__ = [
    "QUICK",
    "RARE",
    "ROWS",
    "DownstreamConfig",
    "ImageSet",
    "PoolImages",
    "StepLedger",
    "check_disjoint",
    "composition",
    "condition_probs_for",
    "evaluate_classifier",
    "evaluate_detector",
    "make_pool",
    "make_test_set",
    "plan_rare_topup",
    "pool_dataset",
    "prepare",
    "quick_config",
    "rare_mask",
    "run_downstream",
    "train_and_evaluate",
    "train_condition_classifier",
    "write_outputs",
]
