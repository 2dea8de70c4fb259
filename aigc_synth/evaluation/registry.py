"""Evaluators by sampler kind: what ``aigc-synth evaluate`` runs for a source of that kind.

The source's kind comes from :func:`aigc_synth.sampling.registry.kind_of_source` (a job's manifest,
a checkpoint's format, an alias); a kind without an evaluator is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from aigc_synth.errors import EvaluationError
from aigc_synth.sampling.image import IMAGE_KIND
from aigc_synth.sampling.scene import SCENE_KIND


@dataclass(frozen=True)
class Evaluator:
    """``evaluate(cfg) → metrics`` (writes report.md + metrics.json in ``cfg.out_dir``) and
    ``summary(metrics) → console lines``."""

    evaluate: Callable[[Any], dict[str, Any]]
    summary: Callable[[dict[str, Any]], list[str]]


def _image_summary(result: dict[str, Any]) -> list[str]:
    o = result["overall"]
    acc = ", ".join(f"{k} {v:.3f}" for k, v in o["condition_accuracy"].items())
    return [f"FD {o['fd']:.2f}  KID {o['kid']:.5f} ± {o['kid_std']:.5f}  precision {o['precision']:.3f}  "
            f"recall {o['recall']:.3f}  coverage {o['coverage']:.3f}  condition accuracy: {acc}"]


def _scene_summary(r: dict[str, Any]) -> list[str]:
    ratios = "  ".join(f"{k} {v['ratio']:.2f}" for k, v in r["features"].items() if v["ratio"] is not None)
    return [f"MMD / real-vs-real floor: {ratios}",
            f"count accuracy {r['count_accuracy']['accuracy']:.3f}  overlap rate {r['overlap_rate']['generated']:.4f}"
            + (f"  replay collision share {r['replay']['generated']['collision_share']:.4f} "
               f"(real {r['replay']['real']['collision_share']:.4f})" if "replay" in r else "")]


def _evaluate_images(cfg: Any) -> dict[str, Any]:
    from aigc_synth.evaluation.evaluate import evaluate

    return evaluate(cfg)


def _evaluate_scenes(cfg: Any) -> dict[str, Any]:
    from aigc_synth.evaluation.scenes import evaluate_scenes

    return evaluate_scenes(cfg)


#: Keyed by sampler kind name (:data:`aigc_synth.sampling.registry.SAMPLER_KINDS`).
EVALUATORS: dict[str, Evaluator] = {IMAGE_KIND.name: Evaluator(_evaluate_images, _image_summary),
                                    SCENE_KIND.name: Evaluator(_evaluate_scenes, _scene_summary)}


def register_evaluator(kind_name: str, evaluator: Evaluator) -> Evaluator:
    """Add (or replace) the evaluator of a sampler kind."""
    EVALUATORS[kind_name] = evaluator
    return evaluator


def evaluator_for(source: str) -> Evaluator:
    """The evaluator of ``source``'s kind; EvaluationError (exit 2) when that kind has none."""
    from aigc_synth.sampling.registry import kind_of_source

    kind = kind_of_source(source)
    if kind.name not in EVALUATORS:
        raise EvaluationError(f"no evaluator for {kind.name} outputs ({source}); registered: {sorted(EVALUATORS)}")
    return EVALUATORS[kind.name]
