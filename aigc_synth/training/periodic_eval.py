"""Metrics during training: KID, FD, recall / coverage and condition accuracy every ``train.eval_every`` steps.

A fixed set of real training images is the reference; the generator is sampled with the same
conditions (and, for layout models, the same scene layouts) and fixed latent seeds, so successive
evaluations differ only by the weights. Layout models are judged by the scene classifier (trained
on renders), others by the domain classifier; either is used to *measure* only: nothing flows back
into the generator's loss. Why it matters: GAN training is not monotonic — the layout GAN's
continuation from step 6,000 to 7,500 at the same learning rate lost coverage 0.60 → 0.39 on the
acceptance evaluation — so ``best_generator.pt`` (``train.best_metric``) is the checkpoint to keep.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aigc_synth.metrics.distribution import density_coverage, frechet_distance, kernel_inception_distance, precision_recall
from aigc_synth.metrics.domain import load_domain_classifier
from aigc_synth.sampling.sampler import to_uint8
from aigc_synth.seeds import latents_for_seeds
from aigc_synth.schema import ConditionSchema

#: Metrics that can select the best checkpoint, and whether higher is better.
BEST_METRICS = {"kid": False, "fd": False, "accuracy_mean": True, "recall": True, "coverage": True}
EVAL_SEED = 31_337


class PeriodicEvaluator:
    """Scores a generator module against ``n`` fixed real images of the training data."""

    def __init__(self, data, schema: ConditionSchema, n: int, classifier: str | None = None):
        n = min(int(n), len(data))
        batch = data.batch(range(len(data) - n, len(data)))  # the end of the stream: never reached in training
        self.layouts = batch.get("layout")  # None for condition-only data
        if classifier is None and self.layouts is not None:
            from aigc_synth.evaluation.layout import SCENE_CLASSIFIER

            classifier = SCENE_CLASSIFIER
        self.judge = load_domain_classifier(classifier)
        if self.judge.schema.to_dict() != schema.to_dict():
            raise ValueError(f"train.eval_every needs a domain classifier for schema {schema.to_dict()}; "
                             f"{self.judge.path} has {self.judge.schema.to_dict()} (set train.eval_every=0)")
        self.codes = batch["codes"].numpy()
        self.ref = self.judge.score(batch["image"]).features
        self.seeds = np.arange(n) + EVAL_SEED

    @torch.no_grad()
    def __call__(self, generator: torch.nn.Module) -> dict[str, Any]:
        was_training = generator.training
        generator.eval()
        z_all = latents_for_seeds(self.seeds, generator.z_dim)
        extra = (lambda s: (self.layouts[s:s + 64],)) if self.layouts is not None else (lambda s: ())
        images = [to_uint8(generator(z_all[s:s + 64], torch.from_numpy(self.codes[s:s + 64]), *extra(s)))
                  for s in range(0, len(self.codes), 64)]
        generator.train(was_training)
        scores = self.judge.score(np.concatenate(images))
        # subsets of half the set: subsets of all of it would be identical (a std of 0 says nothing)
        kid, kid_std = kernel_inception_distance(self.ref, scores.features, subsets=20, subset_size=min(500, max(2, len(self.ref) // 2)))
        pred = scores.predicted_codes()
        out: dict[str, Any] = {"eval_kid": round(kid, 6), "eval_kid_std": round(kid_std, 6),
                               "eval_fd": round(frechet_distance(self.ref, scores.features), 4)}
        out["eval_recall"] = round(precision_recall(self.ref, scores.features)[1], 4)
        out["eval_coverage"] = round(density_coverage(self.ref, scores.features)[1], 4)
        accs = [float((pred[:, f] == self.codes[:, f]).mean()) for f in range(len(self.judge.schema.names))]
        out.update({f"eval_accuracy_{name}": round(a, 4) for name, a in zip(self.judge.schema.names, accs)})
        out["eval_accuracy_mean"] = round(float(np.mean(accs)), 4)
        return out
