"""Condition-fidelity and diversity metrics on classifier outputs.

* :func:`condition_accuracy` – Classification Accuracy (Ravuri & Vinyals 2019): does the domain
  classifier see the requested condition? Per factor, all factors at once, per condition, plus a
  confusion matrix per factor (rows = requested, columns = predicted).
* :func:`inception_score_analogue` – the founding document's Inception Score, exp E_x KL(p(y|x) ‖ p(y)),
  on the domain classifier's per-factor predictions (high: confident and varied).
* :func:`condition_kl` – KL(requested ‖ predicted) between the requested condition distribution and
  the distribution the classifier sees in the generated set.
* :func:`mean_pairwise_distance` – diversity: mean L2 distance between feature pairs (mode
  collapse shows as a generated value far below the real one).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from aigc_synth.schema import ConditionSchema

_EPS = 1e-6


def condition_accuracy(requested: np.ndarray, predicted: np.ndarray, schema: ConditionSchema) -> dict[str, Any]:
    """``requested``/``predicted`` (n, F) codes → accuracies and confusion matrices."""
    requested, predicted = np.asarray(requested, np.int64), np.asarray(predicted, np.int64)
    out: dict[str, Any] = {"per_factor": {}, "confusion": {}, "per_condition": {}}
    for f, (name, values) in enumerate(schema.factors):
        out["per_factor"][name] = float((requested[:, f] == predicted[:, f]).mean()) if len(requested) else float("nan")
        cm = np.zeros((len(values), len(values)), dtype=np.int64)
        np.add.at(cm, (requested[:, f], predicted[:, f]), 1)
        out["confusion"][name] = {"labels": list(values), "matrix": cm.tolist()}
    hit = (requested == predicted).all(axis=1)
    out["all_factors"] = float(hit.mean()) if len(hit) else float("nan")
    keys = condition_keys(requested, schema)
    for key in sorted(set(keys), key=keys.index):
        mask = np.array([k == key for k in keys])
        out["per_condition"][key] = float(hit[mask].mean())
    return out


def condition_keys(codes: np.ndarray, schema: ConditionSchema) -> list[str]:
    """(n, F) codes → ``weather/time_of_day/traffic`` keys (the manifest's spelling)."""
    return schema.keys_of(codes)


def inception_score_analogue(probs: np.ndarray) -> float:
    """exp E_x KL(p(y|x) ‖ p(y)) for one factor's (n, C) predicted probabilities; in [1, C]."""
    p = np.clip(np.asarray(probs, np.float64), _EPS, 1.0)
    marginal = p.mean(axis=0, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(marginal))).sum(axis=1).mean()))


def _kl(q: np.ndarray, p: np.ndarray) -> float:
    q, p = np.asarray(q, np.float64) + _EPS, np.asarray(p, np.float64) + _EPS
    q, p = q / q.sum(), p / p.sum()
    return float((q * np.log(q / p)).sum())


def condition_kl(requested: np.ndarray, probs: Sequence[np.ndarray], predicted: np.ndarray, schema: ConditionSchema) -> dict[str, float]:
    """KL(requested ‖ seen), in nats: per factor (seen = mean predicted probabilities) and over whole
    conditions (seen = histogram of predicted conditions). 0 when the generated set shows exactly
    the requested mix."""
    requested = np.asarray(requested, np.int64)
    out: dict[str, float] = {}
    for f, (name, values) in enumerate(schema.factors):
        q = np.bincount(requested[:, f], minlength=len(values))
        out[name] = _kl(q, np.asarray(probs[f]).mean(axis=0))
    req_idx = schema.combination_index(requested)
    pred_idx = schema.combination_index(np.asarray(predicted, np.int64))
    m = schema.num_combinations
    out["joint"] = _kl(np.bincount(req_idx, minlength=m), np.bincount(pred_idx, minlength=m))
    return out


def mean_pairwise_distance(features: np.ndarray, max_samples: int = 1000, seed: int = 0) -> float:
    """Mean L2 distance over all pairs of (a seeded subset of at most ``max_samples``) feature rows."""
    x = np.asarray(features, np.float64)
    if len(x) < 2:
        return float("nan")
    if len(x) > max_samples:
        x = x[np.random.default_rng(seed).choice(len(x), max_samples, replace=False)]
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
    n = len(x)
    return float(np.sqrt(d2)[np.triu_indices(n, 1)].mean())
