#!/usr/bin/env python
"""Does picking latents by the discriminator lift recall / coverage? (discriminator rejection
sampling, Azadi et al. 2019, in its best-of-K form)

    python scripts/eval_discriminator_selection.py runs/layout_gan/state.pt runs/default_generator_6000.pt \
        --k 4 --n-per-condition 40 --psi 0.6

For every evaluation sample (the layout acceptance table's scenes and conditions,
``scripts/eval_layout_models.py``) the generator draws ``K`` candidates from ``K`` latent seed
streams; the training state's discriminator scores each against its condition and layout. Three
picks, side by side on the same reference and scene classifier: the first candidate (plain
sampling), the discriminator's best and its worst. A pick that only trades recall for precision
does not help the coverage goal; a sampler built on it would also have to ship the discriminator.
The work is :mod:`aigc_synth.evaluation.discriminator_selection`'s.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from aigc_synth.errors import EvaluationError
from aigc_synth.evaluation import discriminator_selection as selection


def discriminator_scores(state_path: str, images: np.ndarray, codes: np.ndarray, layouts: np.ndarray,
                         chunk: int = 256) -> np.ndarray:
    """:func:`aigc_synth.evaluation.discriminator_selection.discriminator_scores`, exiting with its
    message on a state it cannot use."""
    try:
        return selection.discriminator_scores(state_path, images, codes, layouts, chunk)
    except EvaluationError as exc:
        raise SystemExit(str(exc)) from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("state", help="a layout_gan training state.pt (holds the discriminator)")
    p.add_argument("generator", help="the exported generator to sample (usually that run's EMA)")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--n-per-condition", type=int, default=40)
    p.add_argument("--psi", type=float, default=None, help="truncation ψ (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.k < 2:
        raise SystemExit("--k must be at least 2")
    try:
        result = selection.discriminator_selection(a.state, a.generator, a.k, a.n_per_condition, a.psi, a.seed,
                                                   log=lambda line: print(line, flush=True))
    except EvaluationError as exc:
        raise SystemExit(str(exc)) from None
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "n": result["n"], "rows": result["rows"]}, indent=1))


if __name__ == "__main__":
    main()
