"""Metrics during training: KID and condition accuracy every ``train.eval_every`` steps.

A fixed set of real training images is the reference; the generator is sampled with the same
conditions and fixed latent seeds, so successive evaluations differ only by the weights. The
domain classifier is used to *measure* only: nothing flows back into the generator's loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aigc_synth.metrics.distribution import frechet_distance, kernel_inception_distance
from aigc_synth.metrics.domain import load_domain_classifier
from aigc_synth.sampling.sampler import to_uint8
from aigc_synth.sampling.seeds import latents_for_seeds
from aigc_synth.schema import ConditionSchema

#: Metrics that can select the best checkpoint, and whether higher is better.
BEST_METRICS = {"kid": False, "fd": False, "accuracy_mean": True}
EVAL_SEED = 31_337


class PeriodicEvaluator:
    """Scores a generator module against ``n`` fixed real images of the training data."""

    def __init__(self, data, schema: ConditionSchema, n: int, classifier: str | None = None):
        self.judge = load_domain_classifier(classifier)
        if self.judge.schema.to_dict() != schema.to_dict():
            raise ValueError(f"train.eval_every needs a domain classifier for schema {schema.to_dict()}; "
                             f"{self.judge.path} has {self.judge.schema.to_dict()} (set train.eval_every=0)")
        n = min(int(n), len(data))
        batch = data.batch(range(len(data) - n, len(data)))  # the end of the stream: never reached in training
        self.codes = batch["codes"].numpy()
        self.ref = self.judge.score(batch["image"]).features
        self.seeds = np.arange(n) + EVAL_SEED

    @torch.no_grad()
    def __call__(self, generator: torch.nn.Module) -> dict[str, Any]:
        was_training = generator.training
        generator.eval()
        z_all = latents_for_seeds(self.seeds, generator.z_dim)
        images = [to_uint8(generator(z_all[s:s + 64], torch.from_numpy(self.codes[s:s + 64])))
                  for s in range(0, len(self.codes), 64)]
        generator.train(was_training)
        scores = self.judge.score(np.concatenate(images))
        kid, kid_std = kernel_inception_distance(self.ref, scores.features, subsets=20, subset_size=min(500, len(self.ref)))
        pred = scores.predicted_codes()
        out: dict[str, Any] = {"eval_kid": round(kid, 6), "eval_kid_std": round(kid_std, 6),
                               "eval_fd": round(frechet_distance(self.ref, scores.features), 4)}
        accs = [float((pred[:, f] == self.codes[:, f]).mean()) for f in range(len(self.judge.schema.names))]
        out.update({f"eval_accuracy_{name}": round(a, 4) for name, a in zip(self.judge.schema.names, accs)})
        out["eval_accuracy_mean"] = round(float(np.mean(accs)), 4)
        return out
