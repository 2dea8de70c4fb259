#!/usr/bin/env python
"""The layout-conditioning acceptance table: every model, one evaluation, one run.

    python scripts/eval_layout_models.py --n-per-condition 100 --json layout_eval.json --md layout_eval.md \
        --grid docs/layout_samples.png

Every row is scored on the same 45 × n samples: sample ``i`` gets condition ``i // n`` and a scene
sampled by the bundled scene model at that condition's traffic level (``--scenes DIR`` renders a
folder of scenes instead; ``--road KIND`` keeps one road kind), exactly as an image job with seed
``--seed`` picks them. The reference is
the renderer's picture of each scene under the same weather and time; the scene domain classifier
(trained on renders only) gives FD / KID / precision / recall / density / coverage and condition
accuracy; the vehicle detector (trained on renders only) gives layout AP50 and box recall against
each sample's requested boxes (pycocotools). Rows:

* the models given with ``--model NAME=PATH`` (``NAME=PATH@psi=0.8`` samples that checkpoint with
  truncation ψ 0.8 instead of its stored one, ``@particles=on|off`` with or without the fixed
  rain/snow particle overlay; default: the bundled layout model, the previous bundled cGAN and, when present, a DCGAN baseline run) — models without layout input are asked for
  the same conditions and scored against the same boxes;
* ``real (second render)``: the same scenes rendered again with other cosmetic seeds, scored like
  a model: the real-vs-real values recall / coverage are compared with, and the AP50 ceiling;
* the shuffled-layout floor of the first model (its images against another sample's boxes).

Also the flat-rectangle rate (``aigc_synth.metrics.artifacts``) of every row's images, the broken-image
rate (high-frequency energy over 3× the real renders' median for that weather: the tails' garbled
images the truncation ψ trades against variety) and, with
``--grid``, a sample grid of the first model: one row per weather × time, column 0 the real render,
then latents; the right half repeats it with the requested boxes drawn (boxes the detector ignores
in grey). The work is :mod:`aigc_synth.evaluation.layout_table`'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aigc_synth.errors import EvaluationError
from aigc_synth.evaluation.evaluate import json_safe
from aigc_synth.evaluation.image_statistics import border_energy  # noqa: F401 (tests/test_layout_gan.py reads it here)
from aigc_synth.evaluation.layout_table import (
    DEFAULT_MODELS,
    ap50_ratio_line,
    layout_table,
    layout_table_markdown,
    parse_model_spec,
    sample_grid,
)
from aigc_synth.io.atomic import atomic_write_json


def parse_model(spec: str) -> tuple[str, str, dict]:
    """``--model NAME=PATH[@option=value...]`` (:func:`parse_model_spec`) → (name, path, sampling options); exits on a bad one."""
    try:
        return parse_model_spec(spec)
    except EvaluationError as exc:  # its message lists every option of both layout families
        raise SystemExit(f"--model: {exc}") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=None, help="NAME=PATH (repeatable; default: see the docstring)")
    p.add_argument("--n-per-condition", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", default=None, help="a folder of scene Parquet (default: the bundled scene model)")
    p.add_argument("--road", default=None, help="one road kind for every sample: the --scenes of that kind, or the scene "
                                                "model's scenes on it (default: all given scenes; sampled: straight)")
    p.add_argument("--spread-scenes", action="store_true",
                   help="with --scenes: evaluate on scenes at even steps through the folder, not its first ones (a folder "
                        "is written cell by cell, so a small sample of its first scenes holds one cell)")
    p.add_argument("--json", default="layout_eval.json")
    p.add_argument("--md", default=None)
    p.add_argument("--grid", default=None, help="PNG: the first model's sample grid, boxes drawn on a copy")
    a = p.parse_args()
    models = [parse_model(m) for m in (a.model or DEFAULT_MODELS)]
    models = [(n, path, opts) for n, path, opts in models if path == "default" or Path(path).is_file()]
    try:
        result = layout_table(models, a.n_per_condition, a.seed, a.scenes, road=a.road, spread=a.spread_scenes)
    except EvaluationError as exc:
        raise SystemExit(str(exc)) from None
    atomic_write_json(a.json, json_safe(result))
    table = layout_table_markdown(result)
    print(table)
    if ratios := ap50_ratio_line(result):
        print(ratios)
    if a.md:
        Path(a.md).write_text(table + "\n")
    if a.grid and models:
        sample_grid(models[0][1], a.grid, a.seed, options=models[0][2], scenes_dir=a.scenes, road=a.road)
        print(f"grid: {a.grid}")


if __name__ == "__main__":
    main()
