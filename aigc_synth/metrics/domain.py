"""The bundled domain classifier as a frozen, versioned feature extractor and condition judge.

Loaded with ``weights_only=True`` like every checkpoint. Its id (``domain-v1-<sha256[:12]>``) is
written into every metrics report and every gated manifest, so figures computed with different
extractors are never compared by accident.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aigc_synth.errors import first_line
from aigc_synth.io.checkpoint import load_checkpoint_bytes, require_format
from aigc_synth.errors import CheckpointError
from aigc_synth.models.classifier import DomainClassifier
from aigc_synth.schema import ConditionSchema

CLASSIFIER_FORMAT = "aigc_synth.domain_classifier/v1"
DEFAULT_CLASSIFIER = Path(__file__).resolve().parents[1] / "assets" / "domain_classifier.pt"
#: Rows per classifier call, fixed (like the generator's) so scores never depend on how work is split.
SCORE_BATCH = 32


@dataclass
class ClassifierScores:
    """Per-image outputs: ``features`` (n, D) float64, ``probs`` one (n, C_f) array per factor,
    ``count`` (n,) predicted vehicle count."""

    features: np.ndarray
    probs: list[np.ndarray]
    count: np.ndarray

    def predicted_codes(self) -> np.ndarray:
        return np.stack([p.argmax(1) for p in self.probs], axis=1).astype(np.int64)

    def confidence(self, codes: np.ndarray) -> np.ndarray:
        """Probability the classifier gives to the condition ``codes`` (n, F): product over factors."""
        out = np.ones(len(codes))
        for f, p in enumerate(self.probs):
            out *= p[np.arange(len(codes)), codes[:, f]]
        return out


class DomainFeatureExtractor:
    """A loaded domain classifier; call :meth:`score` on uint8 images."""

    def __init__(self, module: DomainClassifier, schema: ConditionSchema, classifier_id: str, meta: dict[str, Any], path: str):
        self.module, self.schema, self.classifier_id, self.meta, self.path = module.eval(), schema, classifier_id, meta, path

    @property
    def feature_dim(self) -> int:
        return self.module.feature_dim

    @torch.no_grad()
    def score(self, images: np.ndarray | torch.Tensor) -> ClassifierScores:
        """uint8 images, (n, H, W, 3) numpy or (n, 3, H, W) tensor, any square size → scores.

        Runs in fixed chunks of :data:`SCORE_BATCH` on one thread: the same image always gets the
        same bits, whatever else is in the call (the generation gate relies on it).
        """
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2) if isinstance(images, np.ndarray) else images
        if x.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {x.dtype}")
        feats, probs, counts = [], [[] for _ in self.schema.names], []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for start in range(0, len(x), SCORE_BATCH):
                chunk = x[start:start + SCORE_BATCH]
                n = len(chunk)
                if n < SCORE_BATCH:  # pad so every call has the same shape
                    chunk = torch.cat([chunk, chunk[:1].expand(SCORE_BATCH - n, *chunk.shape[1:])])
                logits, count, f = self.module(chunk)
                feats.append(f[:n].double())
                for i, lg in enumerate(logits):
                    probs[i].append(torch.softmax(lg[:n].double(), dim=1))
                counts.append(count[:n].double())
        finally:
            torch.set_num_threads(threads)
        if not feats:
            return ClassifierScores(np.zeros((0, self.feature_dim)), [np.zeros((0, c)) for c in self.schema.cardinalities], np.zeros(0))
        return ClassifierScores(torch.cat(feats).numpy(), [torch.cat(p).numpy() for p in probs], torch.cat(counts).numpy())


def classifier_id_for(data: bytes) -> str:
    return "domain-v1-" + hashlib.sha256(data).hexdigest()[:12]


def resolve_classifier_path(path: str | os.PathLike | None) -> Path:
    """``None`` / ``'default'`` → the bundled classifier; anything else is a path."""
    return DEFAULT_CLASSIFIER if path in (None, "default") else Path(path)


def load_domain_classifier(path: str | os.PathLike | None = None) -> DomainFeatureExtractor:
    """Load the bundled classifier (``path=None`` or ``'default'``) or a retrained one from ``path``."""
    path = resolve_classifier_path(path)
    if not path.is_file():
        raise CheckpointError(f"domain classifier not found: {path} (train one with scripts/train_domain_classifier.py)")
    return load_domain_classifier_from_bytes(path.read_bytes(), str(path))


def load_domain_classifier_from_bytes(data: bytes, source: str = "<bytes>") -> DomainFeatureExtractor:
    """Rebuild a classifier from checkpoint bytes (safe load); used by generation actors."""
    ckpt = require_format(load_checkpoint_bytes(data, label=source), source, CLASSIFIER_FORMAT, "domain classifier")
    try:
        schema = ConditionSchema.from_dict(ckpt["schema"])
        module = DomainClassifier(schema.cardinalities, **ckpt["model_config"])
        module.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"domain classifier {source} is malformed: {first_line(exc, 200)}") from None
    return DomainFeatureExtractor(module, schema, classifier_id_for(data), dict(ckpt.get("meta", {})), source)
