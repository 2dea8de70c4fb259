"""Condition plans: a deterministic map ``sample_id → (seed, condition, shard)``.

Three kinds (see :class:`aigc_synth.config.PlanConfig`):

* ``grid``    – cartesian product of chosen values, shares proportional to ``weights`` (equal by
  default). Counts are exact: ``num_samples`` is split with the largest-remainder method.
* ``list``    – explicit condition items with weights; exact counts as for ``grid``.
* ``mixture`` – every factor drawn independently per sample from ``probs``; counts are random
  but a pure function of (job seed, sample id).

For exact plans the cells are laid out as contiguous blocks of a *virtual* order and sample ids are
mapped into it by a seeded pseudo-random bijection on ``[0, N)`` (a Feistel network with cycle
walking), so cells interleave across shards without materialising any per-sample array: memory
stays flat for any ``num_samples``.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from aigc_synth.errors import PlanError  # noqa: F401 (re-exported from its former home)
from aigc_synth.seeds import LATENT_STREAM, PERMUTATION_STREAM, PLAN_STREAM, splitmix64, derive_seeds, uniform_from_seeds
from aigc_synth.schema import ConditionSchema, SchemaError

PLAN_KINDS = ("grid", "mixture", "list")


class FeistelPermutation:
    """A seeded bijection of ``[0, n)`` computed per element: 4 Feistel rounds on the smallest
    even-bit power-of-two domain ≥ n, re-applied to values that land outside ``[0, n)``."""

    ROUNDS = 4

    def __init__(self, n: int, seed: int):
        self.n = int(n)
        bits = max(2, int(math.ceil(math.log2(max(self.n, 2)))))
        self.half = (bits + 1) // 2
        self.mask = np.uint64((1 << self.half) - 1)
        self.keys = derive_seeds(seed, np.arange(self.ROUNDS), stream=PERMUTATION_STREAM).astype(np.uint64)

    def _once(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(self.half), x & self.mask
        for key in self.keys:
            left, right = right, left ^ (splitmix64(right ^ key) & self.mask)
        return (left << np.uint64(self.half)) | right

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        x = self._once(np.asarray(ids, dtype=np.int64).astype(np.uint64))
        outside = x >= np.uint64(self.n)
        while outside.any():  # cycle walking: expected < 4 extra rounds per element
            x[outside] = self._once(x[outside])
            outside = x >= np.uint64(self.n)
        return x.astype(np.int64)


def _largest_remainder(weights: Sequence[float], total: int) -> list[int]:
    w = np.asarray(weights, dtype=np.float64)
    quotas = w / w.sum() * total
    counts = np.floor(quotas).astype(np.int64)
    short = total - int(counts.sum())
    order = np.argsort(-(quotas - counts), kind="stable")  # ties → earlier cell
    counts[order[:short]] += 1
    return counts.tolist()


def _check_weights(weights: Sequence[Any], what: str) -> list[float]:
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError):
        raise PlanError(f"{what} must be numbers, got {list(weights)}") from None
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise PlanError(f"{what} must be finite and non-negative, got {w}")
    if sum(w) <= 0:
        raise PlanError(f"{what} must not all be zero, got {w}")
    return w


class ConditionPlan:
    """A validated plan over ``num_samples`` ids for a given schema and job seed."""

    def __init__(self, spec: Mapping[str, Any], schema: ConditionSchema, num_samples: int, seed: int):
        self.spec, self.schema, self.num_samples, self.seed = dict(spec), schema, int(num_samples), int(seed)
        kind = self.spec.get("kind", "grid")
        if kind not in PLAN_KINDS:
            raise PlanError(f"unknown plan kind {kind!r}; allowed kinds: {list(PLAN_KINDS)}")
        self.kind = kind
        if kind == "mixture":
            self._init_mixture(self.spec.get("probs") or {})
        else:
            cells, weights = self._grid_cells() if kind == "grid" else self._list_cells()
            self.cells = np.asarray(cells, dtype=np.int64).reshape(len(cells), len(schema.names))
            self.cell_counts = _largest_remainder(weights, self.num_samples)
            self._cum = np.cumsum(self.cell_counts)
            self._perm = FeistelPermutation(self.num_samples, self.seed)

    # -- construction ----------------------------------------------------------------------------
    def _grid_cells(self) -> tuple[list[list[int]], list[float]]:
        factors = self.spec.get("factors") or {}
        if not isinstance(factors, Mapping):
            raise PlanError(f"plan.factors must map factor → list of values, got {factors!r}")
        for name in factors:
            if name not in self.schema.names:
                raise PlanError(f"unknown factor {name!r} in plan; allowed factors: {self.schema.names}")
        axes = []
        for name, values in self.schema.factors:
            chosen = factors.get(name)
            if chosen is None:
                axes.append(list(range(len(values))))
                continue
            if isinstance(chosen, str):
                chosen = [chosen]
            if len(chosen) == 0:
                raise PlanError(f"empty grid: factor {name!r} has no values (allowed values: {list(values)})")
            idx = []
            for v in chosen:
                if str(v) not in values:
                    raise PlanError(f"unknown value {v!r} for factor {name!r}; allowed values: {list(values)}")
                idx.append(values.index(str(v)))
            axes.append(idx)
        cells = [list(c) for c in np.array(np.meshgrid(*axes, indexing="ij")).reshape(len(axes), -1).T]
        weights = self.spec.get("weights")
        if weights is None:
            weights = [1.0] * len(cells)
        elif len(weights) != len(cells):
            raise PlanError(f"plan.weights has {len(weights)} entries but the grid has {len(cells)} cells")
        return cells, _check_weights(weights, "grid weights")

    def _list_cells(self) -> tuple[list[list[int]], list[float]]:
        items = self.spec.get("items") or []
        if not items:
            raise PlanError("plan kind 'list' needs at least one item: [{conditions: {...}, weight: w}]")
        cells, weights = [], []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or "conditions" not in item:
                raise PlanError(f"plan.items[{i}] must be {{conditions: {{factor: value}}, weight: w}}, got {item!r}")
            try:
                cells.append(self.schema.encode(item["conditions"]))
            except SchemaError as exc:
                raise PlanError(f"plan.items[{i}]: {exc}") from None
            weights.append(item.get("weight", 1.0))
        return cells, _check_weights(weights, "list weights")

    def _init_mixture(self, probs: Mapping[str, Any]) -> None:
        if not isinstance(probs, Mapping):
            raise PlanError(f"plan.probs must map factor → {{value: probability}}, got {probs!r}")
        for name in probs:
            if name not in self.schema.names:
                raise PlanError(f"unknown factor {name!r} in plan; allowed factors: {self.schema.names}")
        self._cdfs = []
        for name, values in self.schema.factors:
            p = probs.get(name)
            if p is None:
                vec = np.full(len(values), 1.0 / len(values))
            else:
                if not isinstance(p, Mapping):
                    raise PlanError(f"plan.probs.{name} must map value → probability, got {p!r}")
                vec = np.zeros(len(values))
                for v, pv in p.items():
                    if str(v) not in values:
                        raise PlanError(f"unknown value {v!r} for factor {name!r}; allowed values: {list(values)}")
                    try:
                        pv = float(pv)
                    except (TypeError, ValueError):
                        raise PlanError(f"probability of {name}={v} must be a number, got {pv!r}") from None
                    if not math.isfinite(pv) or pv < 0:
                        raise PlanError(f"probability of {name}={v} is negative or not finite: {pv}")
                    vec[values.index(str(v))] = pv
                if abs(vec.sum() - 1.0) > 1e-6:
                    raise PlanError(f"probabilities for factor {name!r} sum to {vec.sum():.6g}, not 1: {dict(p)}")
            self._cdfs.append(np.cumsum(vec) / vec.sum())

    # -- queries ----------------------------------------------------------------------------------
    def codes_for(self, sample_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """(n,) sample ids → (n, F) int64 condition codes."""
        ids = np.asarray(sample_ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_samples):
            raise IndexError(f"sample ids must lie in [0, {self.num_samples})")
        if self.kind == "mixture":
            cols = []
            for f, cdf in enumerate(self._cdfs):
                u = uniform_from_seeds(derive_seeds(self.seed, ids, stream=PLAN_STREAM + f))
                cols.append(np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1))
            return np.stack(cols, axis=1).astype(np.int64) if cols else np.zeros((len(ids), 0), np.int64)
        position = self._perm(ids)
        cell = np.searchsorted(self._cum, position, side="right")
        return self.cells[cell]

    def seeds_for(self, sample_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Per-sample latent seeds."""
        return derive_seeds(self.seed, sample_ids, stream=LATENT_STREAM)

    def counts(self, chunk: int = 1_000_000) -> dict[str, int]:
        """Planned number of samples per condition key (``weather/time/traffic``), in schema order."""
        totals: Counter = Counter()
        if self.kind != "mixture":
            for code, n in zip(self.cells.tolist(), self.cell_counts):
                if n:
                    totals[tuple(code)] += n
        else:
            for start in range(0, self.num_samples, chunk):
                codes = self.codes_for(np.arange(start, min(start + chunk, self.num_samples)))
                totals.update(map(tuple, codes.tolist()))
        keys = self.schema.keys_of(sorted(totals)) if totals else []
        return {key: totals[code] for key, code in zip(keys, sorted(totals))}
