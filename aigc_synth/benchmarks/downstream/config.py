"""The downstream benchmark's constants, configuration and condition bookkeeping: the schema's factors,
the rare values, the rows, the seeds, :class:`DownstreamConfig` and its ``--quick`` preset, the pool's
probabilities, the rare mask and the weather × time cells (see :mod:`aigc_synth.benchmarks.downstream`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from aigc_synth.errors import UsageError
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
