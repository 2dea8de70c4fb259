"""Real images rendered from scenes: the training and reference set of the layout-conditioned models.

Item ``i`` of :class:`SceneImageDataset` is scene ``k`` of the given list under a weather, a time
of day and a cosmetic seed, all three (and ``k``) derived from ``(seed, i)``; the traffic factor is
the scene's own ``traffic``. So the real set is scenes × weather × time, identical on every
machine and epoch, and rendered on demand (every step sees new images; nothing is materialised).
Each item carries the scene's layout (:mod:`aigc_synth.data.layout`) and the renderer's boxes.

Weather and time of day are uniform by default; ``condition_probs={"weather": {"fog": 0.02, ...}}``
draws them from given per-factor probabilities instead (same per-item uniform, inverse CDF), e.g.
a training pool where fog, snow and night are rare. Factors it leaves out stay uniform, and
without it every item is exactly what it always was.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from aigc_synth.data.layout import scene_layout
from aigc_synth.data.scene_render import render_scene
from aigc_synth.seeds import LATENT_STREAM, PLAN_STREAM, SCENE_STREAM, derive_seeds, uniform_from_seeds
from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema, SchemaError
from aigc_synth.scenes.format import Scene



def pick_index(seed: int, idx: np.ndarray, stream: int, n: int) -> np.ndarray:
    """Per item of ``idx``: an index uniform in [0, n), a pure function of (seed, item, stream)."""
    return np.minimum((uniform_from_seeds(derive_seeds(seed, idx, stream=stream)) * n).astype(np.int64), n - 1)


def _pick_weighted(seed: int, idx: np.ndarray, stream: int, cumulative: np.ndarray) -> np.ndarray:
    """Like :func:`pick_index` (same uniform per item) but through the inverse CDF ``cumulative``."""
    u = uniform_from_seeds(derive_seeds(seed, idx, stream=stream))
    return np.minimum(np.searchsorted(cumulative, u, side="right"), len(cumulative) - 1).astype(np.int64)


def resolve_condition_probs(condition_probs: Mapping[str, Mapping[str, float]],
                            schema: ConditionSchema = DEFAULT_SCHEMA) -> dict[str, dict[str, float]]:
    """Validate per-factor probabilities: known factors (weather and time of day; traffic is the
    scene's own) and values, non-negative, summing to 1 (± 1e-6). Values left out get 0. Returns
    the full table ``{factor: {value: p}}`` in schema order (only the factors given)."""
    out: dict[str, dict[str, float]] = {}
    for name, probs in condition_probs.items():
        if name == "traffic":
            raise SchemaError("traffic cannot be drawn: scene images take it from the scene (choose the scenes instead)")
        if name not in schema.names:
            raise SchemaError(f"unknown factor {name!r} in condition_probs; allowed: weather, time_of_day")
        values = schema.factors[schema.names.index(name)][1]
        unknown = sorted(set(probs) - set(values))
        if unknown:
            raise SchemaError(f"unknown {name} value(s) {unknown} in condition_probs; allowed: {list(values)}")
        p = {v: float(probs.get(v, 0.0)) for v in values}
        if any(not np.isfinite(x) or x < 0 for x in p.values()):
            raise ValueError(f"condition_probs[{name!r}] must be finite and >= 0, got {p}")
        if abs(sum(p.values()) - 1.0) > 1e-6:
            raise ValueError(f"condition_probs[{name!r}] must sum to 1, got {sum(p.values())}")
        out[name] = p
    return {n: out[n] for n in schema.names if n in out}


class SceneImageDataset(Dataset):
    """``length`` renders of ``scenes``; see the module docstring. Items are dicts with ``image``
    uint8 (3, H, W), ``codes`` int64 (F,), ``layout`` float32 (L, H, W), ``scene_index``, ``seed``,
    ``boxes`` float32 (n, 4) and ``labels``. ``condition_probs``: see the module docstring."""

    def __init__(self, scenes: Sequence[Scene], length: int = 2**62, seed: int = 0, resolution: int = 64,
                 schema: ConditionSchema = DEFAULT_SCHEMA,
                 condition_probs: Mapping[str, Mapping[str, float]] | None = None):
        if schema.to_dict() != DEFAULT_SCHEMA.to_dict():
            raise SchemaError("scene images carry the default driving schema only")
        if not len(scenes):
            raise ValueError("no scenes to render")
        self.scenes, self.length, self.seed, self.resolution, self.schema = list(scenes), int(length), int(seed), int(resolution), schema
        self._layouts: dict[int, np.ndarray] = {}
        self._traffic = schema.names.index("traffic")
        self.condition_probs = None if condition_probs is None else resolve_condition_probs(condition_probs, schema)
        self._cumulative: dict[int, np.ndarray] = {}
        for name, probs in (self.condition_probs or {}).items():
            cum = np.cumsum(np.array(list(probs.values()), np.float64))
            self._cumulative[schema.names.index(name)] = cum / cum[-1]

    def __len__(self) -> int:
        return self.length

    def items(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes (n, F), cosmetic seeds (n,), scene indices (n,)) of ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        seeds = derive_seeds(self.seed, idx, stream=LATENT_STREAM)
        codes = np.stack([_pick_weighted(self.seed, idx, PLAN_STREAM + f, self._cumulative[f]) if f in self._cumulative
                          else pick_index(self.seed, idx, PLAN_STREAM + f, c) for f, c in enumerate(self.schema.cardinalities)], axis=1)
        scene_index = pick_index(self.seed, idx, SCENE_STREAM, len(self.scenes))
        traffic_values = self.schema.factors[self._traffic][1]
        codes[:, self._traffic] = [traffic_values.index(self.scenes[k].traffic) for k in scene_index]
        return codes, seeds, scene_index

    def layout(self, k: int) -> np.ndarray:
        """The layout of scene ``k`` (cached: it depends on the scene alone)."""
        if k not in self._layouts:
            self._layouts[k] = scene_layout(self.scenes[k], self.resolution)
        return self._layouts[k]

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        codes, seeds, scene_index = self.items(indices)
        w_f, t_f = self.schema.names.index("weather"), self.schema.names.index("time_of_day")
        rendered = [render_scene(self.scenes[k], self.schema.factors[w_f][1][c[w_f]], self.schema.factors[t_f][1][c[t_f]],
                                 int(s) % 2**62, self.resolution) for k, c, s in zip(scene_index, codes, seeds)]
        return {
            "image": torch.from_numpy(np.stack([r.image for r in rendered])).permute(0, 3, 1, 2).contiguous(),
            "codes": torch.from_numpy(codes),
            "layout": torch.from_numpy(np.stack([self.layout(int(k)) for k in scene_index])),
            "scene_index": torch.from_numpy(scene_index),
            "seed": torch.from_numpy(seeds),
            "boxes": [torch.from_numpy(r.boxes) for r in rendered],
            "labels": [r.labels for r in rendered],
        }

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        b = self.batch(indices)
        return [{k: v[i] for k, v in b.items()} for i in range(len(indices))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.__getitems__([index])[0]
