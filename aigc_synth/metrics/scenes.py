"""Scene realism metrics: compare sets of :class:`~aigc_synth.scenes.format.Scene` in plain numpy.

Used by ``aigc-synth evaluate`` on scene jobs and by the benchmark that sets SUMO ground truth, a
learned generator and the baselines side by side. Nothing here needs SUMO or Ray: the replay part
(:func:`~aigc_synth.scenes.replay.replay_scene`, which does) is run by the caller, and
:func:`replay_summary` only aggregates its result dicts. Every function is a pure, deterministic
function of its arguments.

Features (:func:`scene_features`, 1-D samples pooled over all scenes of a set)
    Vehicles are the agents *and the ego* (``s = 0`` on ``ego_lane``, length
    :data:`~aigc_synth.scenes.format.EGO_LENGTH`, speed ``ego_speed``). Within each lane, vehicles
    are sorted by ``s``; each vehicle and the next one ahead form a (follower, leader) pair.

    * ``gap`` (m) - bumper-to-bumper gap of each pair, ``s_lead - s_follow - (len_lead + len_follow) / 2``;
      negative when the two overlap.
    * ``headway`` (s) - time headway of each pair whose follower drives faster than
      :data:`HEADWAY_MIN_SPEED` (1 m/s): ``gap / follower speed``, clipped to at most
      :data:`HEADWAY_MAX` (10 s) so that free flow does not dominate the kernel; negative for overlaps.
    * ``speed`` (ratio) - each agent's speed divided by its scene's speed limit (the ego excluded: it
      is not a free variable of every generator).
    * ``rel_speed`` (m/s) - leader speed minus follower speed of each pair (positive = opening gap).
    * ``lane_position`` (0..1) - each agent's lane across the road, ``lane / (num_lanes - 1)``:
      0 = rightmost, 1 = leftmost, 0.5 on a one-lane road (so road widths can be pooled).
    * ``count`` (agents per lane) - per scene, the number of agents in the window divided by ``num_lanes``.

Distribution distance (:func:`mmd_rbf`, :func:`median_bandwidths`, :func:`scene_mmd`)
    Squared maximum mean discrepancy (Gretton et al. 2012), with the kernel
    ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))`` summed over a few bandwidths ``h``. It is in
    kernel units (at most ``2 * len(bandwidths)``). The comparisons use the **biased** (V-statistic)
    estimator: never negative, and for two samples of one distribution a small positive value set by
    the sample sizes - the real-vs-real *floor*, which a generator is judged against at the same
    sample sizes (``ratio = mmd / floor``). ``unbiased=True`` gives the U-statistic (about 0, can be
    negative) for tests of equality. The bandwidths are the
    median pairwise distance of the **real** sample times :data:`BANDWIDTH_SCALES` (0.5, 1, 2), so that
    every model compared against one real set is measured with the same kernels, and they are reported.
    Each side is subsampled to at most :data:`MAX_POINTS` values (seeded, and independent of the
    input order) to bound the cost at O(MAX_POINTS^2).

Other scene metrics
    * :func:`count_accuracy` - does the generator put the right number of agents in a window, per
      (traffic level, lane count) cell; see its docstring for the exact definitions.
    * :func:`overlap_rate` - share of vehicles (agents + ego) that overlap another one at t = 0.
    * :func:`replay_summary` - collision / hard-braking / low-TTC shares and min-TTC quantiles
      over a list of :func:`~aigc_synth.scenes.replay.replay_scene` results.
    * :func:`compare_scene_sets` - all of the above (but replay) for a generated set against a real
      set, with a second real set as the real-vs-real floor of every MMD.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aigc_synth.scenes.format import EGO_LENGTH, Scene, overlap_pairs

FEATURES: tuple[str, ...] = ("gap", "headway", "speed", "rel_speed", "lane_position", "count")
HEADWAY_MIN_SPEED = 1.0  # m/s; below it a follower is (nearly) standing and gap / speed blows up
HEADWAY_MAX = 10.0  # s; beyond ~10 s vehicles no longer interact, all such headways look alike
BANDWIDTH_SCALES: tuple[float, ...] = (0.5, 1.0, 2.0)  # times the median distance
MAX_POINTS = 2000  # per side: the kernel matrices are MAX_POINTS^2 float64 (32 MB each)
# Same value as aigc_synth.scenes.replay.TTC_THRESHOLD (nuPlan's unsafe time-to-collision), copied
# rather than imported so that this module never pulls in the simulator side of the package.
TTC_THRESHOLD = 0.95  # s
TTC_QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5)


# -- features ------------------------------------------------------------------------------------------
def scene_features(scenes: Sequence[Scene]) -> dict[str, np.ndarray]:
    """The 1-D feature samples of :data:`FEATURES`, pooled over ``scenes`` (float64 arrays).

    See the module docstring for each feature's definition and unit. Pairs come lane by lane from
    the right, back to front, scene by scene; agents in canonical order.
    """
    out: dict[str, list[float]] = {name: [] for name in FEATURES}
    for sc in scenes:
        lanes: dict[int, list[tuple[float, float, float]]] = {}  # lane -> [(s, length, speed)]
        lanes.setdefault(sc.ego_lane, []).append((0.0, EGO_LENGTH, sc.ego_speed))
        for a in sc.agents:
            lanes.setdefault(a.lane, []).append((a.s, a.length, a.speed))
            out["speed"].append(a.speed / sc.speed_limit)
            out["lane_position"].append(a.lane / (sc.num_lanes - 1) if sc.num_lanes > 1 else 0.5)
        for lane in sorted(lanes):
            vehicles = sorted(lanes[lane])
            for (s_f, len_f, v_f), (s_l, len_l, v_l) in itertools.pairwise(vehicles):
                gap = s_l - s_f - (len_f + len_l) / 2
                out["gap"].append(gap)
                out["rel_speed"].append(v_l - v_f)
                if v_f > HEADWAY_MIN_SPEED:
                    out["headway"].append(min(gap / v_f, HEADWAY_MAX))
        out["count"].append(len(sc.agents) / sc.num_lanes)
    return {name: np.asarray(values, dtype=np.float64) for name, values in out.items()}


# -- MMD -------------------------------------------------------------------------------------------------
def _points(x: Any) -> np.ndarray:
    """A sample as a (n, d) float64 array: 1-D input is n scalars."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"a sample must be 1-D (values) or 2-D (samples x dims), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("a sample holds non-finite values")
    return a


def _subsample(a: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    # Sort first: the result then depends on the multiset of rows only, not on their order, and the
    # kernel sums below add up in the same order, so permuted inputs give bit-identical values.
    a = a[np.lexsort(a.T[::-1])] if len(a) > 1 else a
    if len(a) > max_points:
        a = a[np.sort(rng.choice(len(a), size=max_points, replace=False))]
    return a


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Summed per dimension rather than |a|^2 + |b|^2 - 2ab: exact (no cancellation), and d is tiny here.
    d = np.zeros((len(a), len(b)))
    for k in range(a.shape[1]):
        d += np.square(a[:, None, k] - b[None, :, k])
    return d


def _kernel(sq: np.ndarray, bandwidths: Sequence[float]) -> np.ndarray:
    return sum(np.exp(-sq / (2.0 * h * h)) for h in bandwidths)


def mmd_rbf(x: Any, y: Any, bandwidths: Sequence[float], max_points: int = MAX_POINTS, seed: int = 0,
            unbiased: bool = False) -> float:
    """Squared MMD between samples ``x`` and ``y`` with a sum of Gaussian kernels (biased V-statistic,
    or the unbiased U-statistic with ``unbiased=True``).

    ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))`` over ``bandwidths`` (same unit as the samples).
    Samples are 1-D (values) or 2-D (samples x dims); each side is subsampled to ``max_points``
    with ``numpy.random.default_rng(seed)``. NaN when either side has fewer than 2 points (the
    unbiased estimator needs 2); ValueError for non-finite values or a bandwidth that is not > 0.
    """
    a, b = _points(x), _points(y)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"sample dims differ: {a.shape[1]} vs {b.shape[1]}")
    hs = [float(h) for h in bandwidths]
    if not hs or not all(math.isfinite(h) and h > 0 for h in hs):
        raise ValueError(f"bandwidths must be positive numbers, got {list(bandwidths)}")
    rng = np.random.default_rng(seed)
    a, b = _subsample(a, max_points, rng), _subsample(b, max_points, rng)
    m, n = len(a), len(b)
    kxx, kyy, kxy = _kernel(_sq_dists(a, a), hs), _kernel(_sq_dists(b, b), hs), _kernel(_sq_dists(a, b), hs)
    if not unbiased:  # V-statistic: the squared RKHS distance of the two empirical means, >= 0
        return float(max(kxx.mean() + kyy.mean() - 2.0 * kxy.mean(), 0.0))
    # Unbiased: the diagonals (each point with itself, k = len(hs)) are left out of the within-set means.
    within = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within - 2.0 * kxy.mean())


def median_bandwidths(x: Any, y: Any = None, scales: Sequence[float] = BANDWIDTH_SCALES,
                      max_points: int = MAX_POINTS, seed: int = 0) -> tuple[float, ...]:
    """Median heuristic: the median pairwise distance of the pooled sample (``x``, plus ``y`` if
    given) times each of ``scales``.

    Distances are taken between distinct points of a (seeded, order-independent) subsample of at
    most ``max_points``. When more than half of them are 0 (a mostly constant discrete feature) the
    mean of the non-zero distances stands in for the median, and 1.0 when all are 0. An empty
    tuple when fewer than 2 points are given (no distance to take; :func:`mmd_rbf` is NaN there anyway).
    """
    a = _points(x) if y is None else np.concatenate([_points(x), _points(y)])
    if len(a) < 2:
        return ()
    a = _subsample(a, max_points, np.random.default_rng(seed))
    dist = np.sqrt(_sq_dists(a, a)[np.triu_indices(len(a), k=1)])
    median = float(np.median(dist))
    if median == 0.0:
        nonzero = dist[dist > 0]
        median = float(nonzero.mean()) if len(nonzero) else 1.0
    return tuple(median * float(s) for s in scales)


def _feature_mmds(generated: Mapping[str, np.ndarray], real: Mapping[str, np.ndarray],
                  bandwidths: Mapping[str, tuple[float, ...]], seed: int, max_points: int) -> dict[str, dict[str, Any]]:
    out = {}
    for name in FEATURES:
        g, r, hs = generated[name], real[name], bandwidths[name]
        value = mmd_rbf(g, r, hs, max_points, seed) if hs else math.nan
        out[name] = {"mmd": value, "bandwidths": list(hs), "n_generated": len(g), "n_real": len(r)}
    return out


def _real_bandwidths(features: Mapping[str, np.ndarray], seed: int, max_points: int) -> dict[str, tuple[float, ...]]:
    return {name: median_bandwidths(features[name], max_points=max_points, seed=seed) for name in FEATURES}


def scene_mmd(generated: Sequence[Scene], real: Sequence[Scene], reference_bandwidth_from: Sequence[Scene] | None = None,
              seed: int = 0, max_points: int = MAX_POINTS) -> dict[str, dict[str, Any]]:
    """Per feature of :data:`FEATURES`: ``{"mmd", "bandwidths", "n_generated", "n_real"}``.

    The bandwidths come from the features of ``reference_bandwidth_from`` alone, by default the
    real set (never from the generated one), so ``scene_mmd(model_a, real)`` and
    ``scene_mmd(model_b, real)`` use the same kernels and their values can be compared. ``mmd`` is
    NaN where either side has fewer than 2 values of the feature (e.g. no same-lane pairs).
    """
    real_f = scene_features(real)
    ref_f = real_f if reference_bandwidth_from is None else scene_features(reference_bandwidth_from)
    return _feature_mmds(scene_features(generated), real_f, _real_bandwidths(ref_f, seed, max_points), seed, max_points)


def geometric_mean_mmd(generated: Sequence[Scene], real: Sequence[Scene]) -> dict[str, float]:
    """Per road kind of ``real`` (``{kind: value}``) and over all of them (``"all"``): the geometric mean over
    (road kind, feature) of :func:`scene_mmd`. Dividing every MMD by a fixed floor shifts its logarithm by
    a constant, so this ranks generators as the geometric mean of MMD ÷ floor would, for any floor. NaN
    where no feature has a value."""
    kinds = dict.fromkeys(sc.road.kind for sc in real)
    return geometric_mean_of({kind: scene_mmd([sc for sc in generated if sc.road.kind == kind],
                                              [sc for sc in real if sc.road.kind == kind]) for kind in kinds})


def geometric_mean_of(mmds_by_kind: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    """:func:`geometric_mean_mmd` from already computed :func:`scene_mmd` results, ``{kind: {feature: {"mmd": ...}}}``
    (for a caller that also needs the per-feature values)."""
    out: dict[str, float] = {}
    logs: list[float] = []
    for kind, mmds in mmds_by_kind.items():
        kind_logs = [math.log(max(v["mmd"], 1e-12)) for v in mmds.values() if math.isfinite(v["mmd"])]
        logs += kind_logs
        out[kind] = math.exp(float(np.mean(kind_logs))) if kind_logs else math.nan
    out["all"] = math.exp(float(np.mean(logs))) if logs else math.nan
    return out


# -- counts, overlaps, replay ----------------------------------------------------------------------------
def _cells(scenes: Sequence[Scene]) -> dict[tuple[str, int], list[int]]:
    cells: dict[tuple[str, int], list[int]] = {}
    for sc in scenes:
        cells.setdefault((sc.traffic, sc.num_lanes), []).append(len(sc.agents))
    return cells


def count_accuracy(generated: Sequence[Scene], real: Sequence[Scene]) -> dict[str, Any]:
    """How well the generated agent counts match the real ones, per (traffic, num_lanes) cell.

    For each cell holding both generated and real scenes (keyed ``"<traffic>/<num_lanes>"``):

    * ``mean_generated`` / ``mean_real`` - mean number of agents per scene;
    * ``accuracy = max(0, 1 - |mean_generated - mean_real| / mean_real)`` (1 = same mean; when
      ``mean_real`` is 0 it is 1 if ``mean_generated`` is 0 too, else 0);
    * ``real_range`` - the 2.5 % and 97.5 % quantiles (numpy's linear interpolation) of the real counts;
    * ``in_range`` - share of the cell's generated scenes whose count lies in ``real_range`` (inclusive).

    ``by_traffic[level]`` and the top level aggregate these: ``accuracy`` is the unweighted mean over
    the cells, ``in_range`` the share over all generated scenes of those cells. Cells only one side
    has are not scored: ``unmatched_generated`` counts the generated scenes in cells with no real
    scene, ``missing_cells`` names real cells with no generated scene. Values are NaN with no cell
    in common.
    """
    gen_cells, real_cells = _cells(generated), _cells(real)
    cells: dict[str, dict[str, Any]] = {}
    for traffic, lanes in sorted(set(gen_cells) & set(real_cells)):
        g = np.asarray(gen_cells[traffic, lanes], dtype=np.float64)
        r = np.asarray(real_cells[traffic, lanes], dtype=np.float64)
        mg, mr = float(g.mean()), float(r.mean())
        accuracy = max(0.0, 1.0 - abs(mg - mr) / mr) if mr > 0 else float(mg == 0)
        lo, hi = (float(q) for q in np.quantile(r, (0.025, 0.975)))
        cells[f"{traffic}/{lanes}"] = {
            "traffic": traffic, "num_lanes": lanes, "n_generated": len(g), "n_real": len(r), "mean_generated": mg,
            "mean_real": mr, "accuracy": accuracy, "real_range": [lo, hi],
            "in_range": float(np.mean((g >= lo) & (g <= hi))),
        }

    def aggregate(group: list[dict[str, Any]]) -> dict[str, float]:
        n = sum(c["n_generated"] for c in group)
        return {"accuracy": float(np.mean([c["accuracy"] for c in group])) if group else math.nan,
                "in_range": sum(c["in_range"] * c["n_generated"] for c in group) / n if n else math.nan}

    levels = sorted({c["traffic"] for c in cells.values()})
    return {
        **aggregate(list(cells.values())),
        "by_traffic": {t: aggregate([c for c in cells.values() if c["traffic"] == t]) for t in levels},
        "cells": cells,
        "unmatched_generated": sum(len(v) for k, v in gen_cells.items() if k not in real_cells),
        "missing_cells": [f"{t}/{n}" for t, n in sorted(set(real_cells) - set(gen_cells))],
    }


def overlap_rate(scenes: Sequence[Scene]) -> float:
    """Share of vehicles (agents + ego) in at least one overlapping same-lane pair at t = 0
    (:func:`~aigc_synth.scenes.format.overlap_pairs`); NaN for no scenes."""
    vehicles = sum(len(sc.agents) + 1 for sc in scenes)
    involved = sum(len({i for pair in overlap_pairs(sc) for i in pair}) for sc in scenes)
    return involved / vehicles if vehicles else math.nan


def _poisson_at_most(count: int, mean: float) -> float:
    """P(X <= count) for X ~ Poisson(mean)."""
    term = total = math.exp(-mean)
    for i in range(1, count + 1):
        term *= mean / i
        total += term
    return total


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95 % for the default ``z``) of a share ``successes / trials``; NaNs for no trials.

    Used for merge completion (a share of a few hundred to a few thousand ramp vehicles), where the
    normal approximation's interval would be too narrow near 0 or 1.
    """
    if trials == 0:
        return (math.nan, math.nan)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return (centre - half, centre + half)


def poisson_interval(count: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) confidence interval for the mean of a Poisson count.

    For rare events among many vehicles (hard braking: a few in 10,000) the share's interval is this
    divided by the number of vehicles. Solved by bisection on the Poisson CDF (no scipy): the upper end
    is the mean with P(X <= count) = (1 - level) / 2, the lower end (0 for no events) the mean with
    P(X >= count) = (1 - level) / 2. A negative count raises ValueError.
    """
    if count < 0:
        raise ValueError(f"a count cannot be negative, got {count}")
    tail = (1 - level) / 2

    def root(decreasing) -> float:  # bisection for decreasing(mean) = 0
        lo, hi = 0.0, 10.0 * count + 10.0
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if decreasing(mid) > 0 else (lo, mid)
        return (lo + hi) / 2

    # P(X >= count) = 1 - P(X <= count - 1) grows with the mean, P(X <= count) falls
    low = 0.0 if count == 0 else root(lambda m: _poisson_at_most(count - 1, m) - (1 - tail))
    return low, root(lambda m: _poisson_at_most(count, m) - tail)


def replay_summary(results: Sequence[Mapping[str, Any]], ttc_threshold: float = TTC_THRESHOLD) -> dict[str, Any]:
    """Aggregate :func:`~aigc_synth.scenes.replay.replay_scene` results over scenes.

    Each result is ``{"vehicles": int, "collided": int, "hard_braking": int, "min_ttc": [float, ...]}``
    (counts of distinct vehicles; one min TTC per vehicle, ``inf`` when it never closed in on a leader).
    Returns ``scenes``, ``vehicles``,
    ``collision_share`` / ``hard_braking_share`` / ``low_ttc_share`` (of vehicles; low = min TTC
    below ``ttc_threshold`` s), ``hard_braking_vehicles`` (the count) and ``hard_braking_share_95`` (its exact
    95 % Poisson interval as shares, :func:`poisson_interval`: a share of a few in 10,000 is only known to
    within several times at the benchmark's sizes), ``scene_collision_share`` (scenes with a collision), ``ttc_threshold`` -
    plus ``finite_ttc_share`` (vehicles that ever closed in on a leader), ``min_ttc_quantiles``
    (``{"q05", "q25", "q50"}`` of the finite min TTCs, s; NaN when there is none), ``ramp_vehicles``
    (vehicles on a merge road's on-ramp at t = 0), ``merged_vehicles`` (those of them that reached the main road
    before their acceleration lane ended), ``merge_completion`` (their share; None without ramp vehicles)
    and ``merge_completion_95`` (its 95 % Wilson interval, :func:`wilson_interval`). Shares
    are NaN for no vehicles; a result whose ``min_ttc`` length differs from ``vehicles`` raises ValueError.
    """
    for k, r in enumerate(results):
        if len(r["min_ttc"]) != r["vehicles"]:
            raise ValueError(f"result {k}: {len(r['min_ttc'])} min TTC values for {r['vehicles']} vehicles")
    vehicles = sum(int(r["vehicles"]) for r in results)
    ramp = sum(int(r.get("ramp_vehicles", 0)) for r in results)
    ttc = np.asarray([t for r in results for t in r["min_ttc"]], dtype=np.float64)
    finite = ttc[np.isfinite(ttc)]
    hard = sum(int(r["hard_braking"]) for r in results)
    merged = sum(int(r.get("merged", 0)) for r in results)

    def share(count: float, total: int) -> float:
        return float(count) / total if total else math.nan

    return {
        "scenes": len(results),
        "vehicles": vehicles,
        "collision_share": share(sum(r["collided"] for r in results), vehicles),
        "hard_braking_share": share(hard, vehicles),
        "hard_braking_vehicles": hard,
        "hard_braking_share_95": [share(end, vehicles) for end in poisson_interval(hard)],
        "low_ttc_share": share(int(np.sum(ttc < ttc_threshold)), vehicles),
        "scene_collision_share": share(sum(r["collided"] > 0 for r in results), len(results)),
        "ttc_threshold": ttc_threshold,
        "finite_ttc_share": share(len(finite), vehicles),
        "min_ttc_quantiles": {f"q{round(q * 100):02d}": float(np.quantile(finite, q)) if len(finite) else math.nan
                              for q in TTC_QUANTILES},
        "ramp_vehicles": ramp,
        "merged_vehicles": merged,
        "merge_completion": merged / ramp if ramp else None,
        "merge_completion_95": list(wilson_interval(merged, ramp)) if ramp else None,
    }


# -- everything at once ----------------------------------------------------------------------------------
def compare_scene_sets(generated: Sequence[Scene], real: Sequence[Scene], real_floor: Sequence[Scene], seed: int = 0,
                       max_points: int = MAX_POINTS) -> dict[str, Any]:
    """Generated vs real, with ``real_floor`` (an independent real set, e.g. other SUMO seeds) as the floor.

    ``features[name]`` holds ``mmd`` (generated vs real), ``floor`` (real_floor vs real, what sampling
    noise alone gives), ``excess = mmd - floor``, ``ratio = mmd / floor`` (biased estimates,
    so the floor is positive; NaN only if it is 0) and the ``bandwidths`` both used (from the real set). Then
    ``count_accuracy`` (generated vs real), ``count_accuracy_floor`` (real_floor vs real),
    ``overlap_rate`` of all three sets and their sizes. Replay results are the caller's to add.
    """
    real_f = scene_features(real)
    bandwidths = _real_bandwidths(real_f, seed, max_points)
    gen = _feature_mmds(scene_features(generated), real_f, bandwidths, seed, max_points)
    floor = _feature_mmds(scene_features(real_floor), real_f, bandwidths, seed, max_points)
    features = {}
    for name in FEATURES:
        g, f = gen[name]["mmd"], floor[name]["mmd"]
        features[name] = {"mmd": g, "floor": f, "excess": g - f, "ratio": g / f if f > 0 else math.nan,
                          "bandwidths": gen[name]["bandwidths"]}
    return {
        "features": features,
        "count_accuracy": count_accuracy(generated, real),
        "count_accuracy_floor": count_accuracy(real_floor, real),
        "overlap_rate": {"generated": overlap_rate(generated), "real": overlap_rate(real),
                         "real_floor": overlap_rate(real_floor)},
        "scenes": {"generated": len(generated), "real": len(real), "real_floor": len(real_floor)},
    }


__all__ = [
    "BANDWIDTH_SCALES", "FEATURES", "HEADWAY_MAX", "HEADWAY_MIN_SPEED", "MAX_POINTS", "TTC_THRESHOLD",
    "compare_scene_sets", "count_accuracy", "median_bandwidths", "mmd_rbf", "overlap_rate", "replay_summary",
    "scene_features", "scene_mmd",
]
