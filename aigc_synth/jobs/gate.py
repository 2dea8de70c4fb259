"""The condition-fidelity gate: a judge scores every sample; rejects are re-drawn.

Attempt ``t`` of sample ``i`` is ``sampler.sample([i], attempt=t)``: its seed is
``attempt_seeds(job.seed, i, t)``, so the output stays a pure function of (job, sample id) —
the same whatever the actor count or batch size. A sample passes when the predicted condition
equals the request and its confidence reaches ``min_confidence``; one that never passes keeps its
most confident attempt and ``gate_passed = False``. The loop is sampler-agnostic; the judge (the
bundled domain classifier) reads ``batch.images`` and ``batch.codes``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from aigc_synth.errors import CheckpointError, JobSpecError
from aigc_synth.io.atomic import Store, open_store
from aigc_synth.sampling.base import SampleBatch
from aigc_synth.schema import ConditionSchema


def validate_gate(gate_cfg, schema: ConditionSchema, formats: list[str], layout: bool = False) -> dict[str, Any] | None:
    """Check the gate settings and load its classifier once; None when the gate is off. The default
    judge is the bundled domain classifier, or its scene-render twin for layout models (``layout``)."""
    if gate_cfg is None or not gate_cfg.enabled:
        return None
    from aigc_synth.metrics.domain import load_domain_classifier, resolve_classifier_path

    if not isinstance(gate_cfg.max_tries, int) or gate_cfg.max_tries < 1:
        raise JobSpecError(f"job.gate.max_tries must be a positive integer, got {gate_cfg.max_tries}")
    if not 0.0 <= float(gate_cfg.min_confidence) < 1.0:
        raise JobSpecError(f"job.gate.min_confidence must lie in [0, 1), got {gate_cfg.min_confidence}")
    if "parquet" not in formats:
        raise JobSpecError("job.gate needs 'parquet' in job.formats: per-row gate confidence is stored there")
    if layout and gate_cfg.classifier in (None, "", "default"):
        from aigc_synth.evaluation.layout import SCENE_CLASSIFIER

        path = resolve_classifier_path(SCENE_CLASSIFIER)
    else:
        path = resolve_classifier_path(gate_cfg.classifier)
    try:
        judge = load_domain_classifier(path)
    except CheckpointError as exc:
        raise JobSpecError(f"job.gate.classifier: {exc}") from None
    if judge.schema.to_dict() != schema.to_dict():
        raise JobSpecError(f"job.gate.classifier {path} was trained on schema {judge.schema.to_dict()}, "
                           f"the checkpoint generates {schema.to_dict()}")
    return {"max_tries": int(gate_cfg.max_tries), "min_confidence": float(gate_cfg.min_confidence),
            "classifier": str(path.absolute()), "classifier_id": judge.classifier_id}


class DomainJudge:
    """``judge(batch) → (confidence, ok)`` from a condition classifier (anything with
    ``score(images) → ClassifierScores``; the job's is the bundled domain classifier)."""

    def __init__(self, classifier, min_confidence: float):
        self.classifier, self.min_confidence = classifier, float(min_confidence)

    @classmethod
    def from_bytes(cls, gate: dict[str, Any], classifier_bytes: bytes) -> "DomainJudge":
        """The validated gate's classifier, from the bytes the driver shipped to an actor."""
        from aigc_synth.metrics.domain import load_domain_classifier_from_bytes

        classifier = load_domain_classifier_from_bytes(classifier_bytes, source=gate["classifier"])
        if classifier.classifier_id != gate["classifier_id"]:
            raise RuntimeError("classifier bytes shipped to the actor do not match the validated classifier id")
        return cls(classifier, gate["min_confidence"])

    def __call__(self, batch: SampleBatch) -> tuple[np.ndarray, np.ndarray]:
        scores = self.classifier.score(batch.images)
        conf = scores.confidence(batch.codes)
        ok = (scores.predicted_codes() == batch.codes).all(axis=1) & (conf >= self.min_confidence)
        return conf, ok


def gated_sample(sample: Callable[[np.ndarray, int], SampleBatch], judge: Callable[[SampleBatch], tuple[np.ndarray, np.ndarray]],
                 ids: np.ndarray, max_tries: int) -> SampleBatch:
    """Sample, judge, re-draw rejects up to ``max_tries`` attempts; add the gate columns."""
    batch = sample(ids, 0)
    conf, passed = judge(batch)
    attempts = np.ones(len(ids), np.int32)
    for t in range(1, max_tries):
        todo = np.flatnonzero(~passed)
        if not len(todo):
            break
        retry = sample(ids[todo], t)
        c, ok = judge(retry)
        attempts[todo] = t + 1
        better = ok | (c > conf[todo])
        batch.replace_rows(todo[better], retry, np.flatnonzero(better))
        conf[todo[better]] = c[better]
        passed[todo[ok]] = True
    # rounded so the stored value never depends on the last float bit
    batch.columns.update({"gate_confidence": np.round(conf, 4).astype(np.float32), "gate_attempts": attempts,
                          "gate_passed": passed})
    return batch


def gate_summary(out: str | Store, entries: list[dict[str, Any]], schema: ConditionSchema,
                 gate: dict[str, Any]) -> dict[str, Any]:
    """Accept rates per condition from the committed shards' gate columns (read shard by shard,
    so a resumed job reports exactly what a clean run would)."""
    store = open_store(out)
    stats: dict[str, list[int]] = {}  # key → [rows, passed first try, passed at all, attempts]
    for entry in entries:
        t = store.read_table(entry["path"], columns=[*schema.names, "gate_attempts", "gate_passed"])
        cols = [t.column(n).to_pylist() for n in schema.names]
        keys = [schema.KEY_SEP.join(values) for values in zip(*cols)]
        for key, attempts, passed in zip(keys, t.column("gate_attempts").to_pylist(), t.column("gate_passed").to_pylist()):
            s = stats.setdefault(key, [0, 0, 0, 0])
            s[0] += 1
            s[1] += int(passed and attempts == 1)
            s[2] += int(passed)
            s[3] += attempts
    order = schema.keys()
    per = {k: {"rows": v[0], "accept_rate_first_try": round(v[1] / v[0], 4), "pass_rate": round(v[2] / v[0], 4),
               "mean_attempts": round(v[3] / v[0], 4)} for k, v in sorted(stats.items(), key=lambda kv: order.index(kv[0]))}
    tot = [sum(v[i] for v in stats.values()) for i in range(4)]
    return {"classifier_id": gate["classifier_id"], "max_tries": gate["max_tries"], "min_confidence": gate["min_confidence"],
            "accept_rate_first_try": round(tot[1] / tot[0], 4), "pass_rate": round(tot[2] / tot[0], 4),
            "mean_attempts": round(tot[3] / tot[0], 4), "per_condition": per}
