"""The downstream models: equal optimisation (:class:`StepLedger`), the condition classifier's training
loop (the loss and augmentations are :mod:`aigc_synth.training.classifier`'s) and the held-out
evaluation of the classifier and of the vehicle detector."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from aigc_synth.benchmarks.downstream.config import FACTORS, RARE, SCHEMA, rare_mask
from aigc_synth.benchmarks.downstream.data import ImageSet

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

def as_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
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

    x_all = as_nchw(images)
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
    x = as_nchw(test.images)
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
