"""Does picking latents by the discriminator lift recall / coverage? (discriminator rejection
sampling, Azadi et al. 2019, in its best-of-K form; ``scripts/eval_discriminator_selection.py`` is
its command line)

For every evaluation sample (the layout table's scenes and conditions,
:mod:`aigc_synth.evaluation.layout_table`) the generator draws ``K`` candidates from ``K`` latent seed
streams; a layout_gan training state's discriminator scores each against its condition and layout.
Three picks are scored side by side on the same reference and scene classifier: the first candidate
(plain sampling), the discriminator's best and its worst.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from aigc_synth.errors import EvaluationError
from aigc_synth.evaluation.evaluate import compute_metrics, score_images
from aigc_synth.evaluation.layout import SCENE_CLASSIFIER, evaluation_scenes, layout_images, scene_reference
from aigc_synth.evaluation.layout_table import RESOLUTION, load_generator_with_options
from aigc_synth.schema import DEFAULT_SCHEMA
from aigc_synth.seeds import LATENT_STREAM, derive_seeds

SEED_STRIDE = 1000  # candidate k's latents come from base seed seed + k * SEED_STRIDE
#: the metrics of each pick's row
ROW_METRICS = ("fd", "precision", "recall", "coverage")


def discriminator_scores(state_path: str, images: np.ndarray, codes: np.ndarray, layouts: np.ndarray,
                         chunk: int = 256) -> np.ndarray:
    """The layout discriminator of training state ``state_path`` on uint8 ``images`` (n, R, R, 3).

    The discriminator has a minibatch-stddev input, so a score depends a little on its chunk; every
    candidate is scored in chunks of ``chunk`` mixed conditions, as in training (batch 32). A state of
    another family raises :class:`EvaluationError`."""
    import torch

    from aigc_synth.models.exported import current_model_config, load_module_weights
    from aigc_synth.models.registry import build_discriminator

    state = torch.load(state_path, weights_only=True, map_location="cpu")
    mc = state["model_config"]
    if mc.get("family") != "layout_gan":
        raise EvaluationError(f"{state_path}: a layout_gan training state is needed, not {mc.get('family')}")
    mc = current_model_config("layout_gan", mc, state_path)  # refuses a state trained with a retired option
    disc = build_discriminator("layout_gan", DEFAULT_SCHEMA.cardinalities, **mc)  # picks its own keys
    load_module_weights(disc, state["D"], f"{state_path}'s discriminator")
    disc.eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        return torch.cat([disc(x[i:i + chunk], torch.from_numpy(codes[i:i + chunk]),
                               torch.from_numpy(np.asarray(layouts[i:i + chunk], np.float32)))
                          for i in range(0, len(x), chunk)]).numpy()


def discriminator_selection(state_path: str, generator: str, k: int = 4, n_per_condition: int = 40, psi: float | None = None,
                            seed: int = 0, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Sample ``k`` candidates per evaluation sample from ``generator`` (truncation ``psi``; ``None``:
    the checkpoint's), pick by the discriminator of ``state_path`` and score the picks; return
    ``{"n": samples, "rows": {pick name: {fd, precision, recall, coverage}}}`` (values rounded to 4
    places). Each row is logged as one JSON line when done."""
    from aigc_synth.data.layout import scene_layouts
    from aigc_synth.metrics.domain import load_domain_classifier

    if k < 2:
        raise EvaluationError(f"k must be at least 2, got {k}")
    schema = DEFAULT_SCHEMA
    combos = np.array([schema.encode(c) for c in schema.combinations()], dtype=np.int64)
    scenes, codes = evaluation_scenes(np.repeat(combos, n_per_condition, axis=0), seed, schema, None)
    ref, _, _ = scene_reference(scenes, codes, schema, RESOLUTION)
    classifier = load_domain_classifier(SCENE_CLASSIFIER)
    ref_scores = score_images(classifier, ref, "score reference", progress)
    gen = load_generator_with_options(generator, {} if psi is None else {"psi": psi})
    candidates, scores = [], []
    for c in range(k):
        seeds = derive_seeds(seed + c * SEED_STRIDE, np.arange(len(codes)), stream=LATENT_STREAM)
        images = layout_images(gen, scenes, codes, seeds)
        candidates.append(images)
        scores.append(discriminator_scores(state_path, images, codes, scene_layouts(scenes, gen.resolution)))
    candidates, scores = np.stack(candidates), np.stack(scores)
    rows = {}
    for name, pick in (("first candidate (plain sampling)", np.zeros(len(codes), int)),
                       (f"discriminator's best of {k}", scores.argmax(0)),
                       (f"discriminator's worst of {k}", scores.argmin(0))):
        chosen = candidates[pick, np.arange(len(codes))]
        m = compute_metrics(codes, score_images(classifier, chosen, name, progress), codes, ref_scores, schema)["overall"]
        rows[name] = {key: round(float(m[key]), 4) for key in ROW_METRICS}
        log(json.dumps({name: rows[name]}))
    return {"n": int(len(codes)), "rows": rows}
