"""The benchmark's data: scenes, :class:`ImageSet`, the imbalanced pool, the balanced held-out test
set, the rare top-up plan and its extra items, and the disjointness check (see
:mod:`aigc_synth.benchmarks.downstream`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aigc_synth.benchmarks.downstream.config import (
    CELLS,
    FACTORS,
    IMAGE_SIZE,
    POOL_SCENE_SEED_BASE,
    POOL_SEED,
    SCHEMA,
    TEST_SCENE_SEED_BASE,
    TEST_SEED,
    TIMES,
    TR,
    TRAFFIC,
    WEATHERS,
    DownstreamConfig,
    T,
    W,
    composition,
    is_rare_cell,
)
from aigc_synth.data.scene_images import SceneImageDataset
from aigc_synth.data.scene_render import render_labelled
from aigc_synth.errors import UsageError
from aigc_synth.scenes.format import Scene
from aigc_synth.seeds import EXTRA_SCENE_STREAM, LATENT_STREAM, derive_seeds, uniform_from_seeds

# ---- scenes -------------------------------------------------------------------------------------------------

def sample_scenes(n: int, seed_base: int, scene_checkpoint: str | None = None) -> tuple[list[Scene], dict[str, Any]]:
    """``n`` scenes of the bundled scene model: traffic levels in turn (balanced), lane counts drawn
    from ``seed_base``, scene seed and id ``seed_base + i``."""
    from aigc_synth.models.scene_families import (
        load_scene_generator,
        resolve_scene_checkpoint,
    )
    from aigc_synth.scenes.format import LANE_COUNTS, TRAFFIC_LEVELS

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
