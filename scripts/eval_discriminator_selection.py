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
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_layout_models import load_model  # noqa: E402

from aigc_synth.data.layout import scene_layouts  # noqa: E402
from aigc_synth.evaluation.evaluate import _score, compute_metrics  # noqa: E402
from aigc_synth.evaluation.layout import SCENE_CLASSIFIER, evaluation_scenes, layout_images, scene_reference  # noqa: E402
from aigc_synth.io.checkpoint import current_model_config, load_module_weights  # noqa: E402
from aigc_synth.metrics.domain import load_domain_classifier  # noqa: E402
from aigc_synth.models.registry import build_discriminator  # noqa: E402
from aigc_synth.sampling.seeds import LATENT_STREAM, derive_seeds  # noqa: E402
from aigc_synth.schema import DEFAULT_SCHEMA  # noqa: E402

SEED_STRIDE = 1000  # candidate k's latents come from base seed seed + k * SEED_STRIDE


def discriminator_scores(state_path: str, images: np.ndarray, codes: np.ndarray, layouts: np.ndarray,
                         chunk: int = 256) -> np.ndarray:
    """The layout discriminator of training state ``state_path`` on uint8 ``images`` (n, R, R, 3).

    The discriminator has a minibatch-stddev input, so a score depends a little on its chunk; every
    candidate is scored in chunks of ``chunk`` mixed conditions, as in training (batch 32)."""
    state = torch.load(state_path, weights_only=True, map_location="cpu")
    mc = state["model_config"]
    if mc.get("family") != "layout_gan":
        raise SystemExit(f"{state_path}: a layout_gan training state is needed, not {mc.get('family')}")
    mc = current_model_config("layout_gan", mc, state_path)  # refuses a state trained with a retired option
    disc = build_discriminator("layout_gan", DEFAULT_SCHEMA.cardinalities, **mc)  # picks its own keys
    load_module_weights(disc, state["D"], f"{state_path}'s discriminator")
    disc.eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        return torch.cat([disc(x[i:i + chunk], torch.from_numpy(codes[i:i + chunk]),
                               torch.from_numpy(np.asarray(layouts[i:i + chunk], np.float32)))
                          for i in range(0, len(x), chunk)]).numpy()


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
    schema = DEFAULT_SCHEMA
    combos = np.array([schema.encode(c) for c in schema.combinations()], dtype=np.int64)
    scenes, codes = evaluation_scenes(np.repeat(combos, a.n_per_condition, axis=0), a.seed, schema, None)
    ref, _, _ = scene_reference(scenes, codes, schema, 64)
    classifier = load_domain_classifier(SCENE_CLASSIFIER)
    ref_scores = _score(classifier, ref, "score reference", True)
    gen = load_model(a.generator, {} if a.psi is None else {"psi": a.psi})
    candidates, scores = [], []
    for k in range(a.k):
        seeds = derive_seeds(a.seed + k * SEED_STRIDE, np.arange(len(codes)), stream=LATENT_STREAM)
        images = layout_images(gen, scenes, codes, seeds)
        candidates.append(images)
        scores.append(discriminator_scores(a.state, images, codes, scene_layouts(scenes, gen.resolution)))
    candidates, scores = np.stack(candidates), np.stack(scores)
    rows = {}
    for name, pick in (("first candidate (plain sampling)", np.zeros(len(codes), int)),
                       (f"discriminator's best of {a.k}", scores.argmax(0)),
                       (f"discriminator's worst of {a.k}", scores.argmin(0))):
        chosen = candidates[pick, np.arange(len(codes))]
        m = compute_metrics(codes, _score(classifier, chosen, name, True), codes, ref_scores, schema)["overall"]
        rows[name] = {k: round(float(m[k]), 4) for k in ("fd", "precision", "recall", "coverage")}
        print(json.dumps({name: rows[name]}), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "n": int(len(codes)), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
