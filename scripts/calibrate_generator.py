#!/usr/bin/env python
"""Write a copy of an exported layout generator with a per-condition row-colour calibration.

    python scripts/calibrate_generator.py runs/pcodes_vms02/best_generator.pt calibrated.pt \
        --scenes data/scenes/train --n 9000

Fits, on renders of the *training* scenes, the median (``--estimator mean``: mean) difference
(real − generated) of every image row and colour per combination of ``--factors`` (default: every
factor the scene images draw, i.e. all but traffic, which the scene and its layout carry), and
stores it in the copy; the generator adds it
when sampling (see ``aigc_synth/training/calibration.py``). Set the sampling options
(``scripts/set_sampling_options.py``: ψ, particles, padding) first: the fit is for the options the
source samples with, which are recorded in ``meta["calibration"]``. The copy gets a new
``model_id``. Never fit on the evaluation set's scenes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from aigc_synth.data.scene_images import SceneImageDataset
from aigc_synth.io.checkpoint import load_checkpoint, save_checkpoint
from aigc_synth.models.exported import load_generator
from aigc_synth.scenes.dataset import read_scenes
from aigc_synth.training.calibration import ESTIMATORS, calibrated_checkpoint, fit_row_calibration


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="an exported layout generator, with its sampling options set")
    p.add_argument("out", help="where to write the calibrated copy (may not be the source)")
    p.add_argument("--scenes", required=True, help="the training scenes (a folder of scene Parquet)")
    p.add_argument("--n", type=int, default=9000, help="renders to fit on (default 9000: ~600 per weather x time)")
    p.add_argument("--factors", default=None, help="comma-separated factor names keying the table (default: all but traffic)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="median",
                   help="median (default; robust to broken tail images) or mean of the per-image row differences")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--why", default="", help="how the calibration was chosen (stored in meta)")
    a = p.parse_args(argv)
    if Path(a.out).resolve() == Path(a.source).resolve():
        raise SystemExit("out must differ from source (write a copy, then move it)")
    if a.n < 1:
        raise SystemExit(f"--n must be >= 1, got {a.n}")
    gen = load_generator(a.source)  # validates the checkpoint
    if gen.family != "layout_gan":
        raise SystemExit(f"{a.source}: family {gen.family} has no row calibration (layout_gan only)")
    if getattr(gen.module, "row_calibration", None) is not None:
        raise SystemExit(f"{a.source} is already calibrated: fit on the uncalibrated checkpoint")
    names = gen.schema.names
    chosen = [n for n in names if n != "traffic"] if a.factors is None else [f.strip() for f in a.factors.split(",") if f.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown or not chosen:
        raise SystemExit(f"--factors: unknown {unknown or 'empty'}; the schema has {list(names)}")
    scenes = read_scenes(a.scenes)
    if not scenes:
        raise SystemExit(f"--scenes {a.scenes}: no scenes")
    dataset = SceneImageDataset(scenes, seed=a.seed, resolution=gen.resolution, schema=gen.schema)
    t0 = time.perf_counter()
    calibration = fit_row_calibration(gen, dataset, a.n, [names.index(n) for n in chosen], seed=a.seed,
                                      estimator=a.estimator)
    provenance = {"scenes": str(a.scenes), "n": a.n, "seed": a.seed, "estimator": a.estimator, "factor_names": chosen, "source_model_id": gen.model_id,
                  "fitted_with": {"truncation": gen.module.truncation, "particles": gen.module.particles is not None},
                  "why": a.why}
    save_checkpoint(calibrated_checkpoint(load_checkpoint(a.source), calibration, provenance), a.out)  # atomic
    check = load_generator(a.out)  # the copy rebuilds
    print(f"{a.out}: calibrated on {a.n} renders of {len(scenes)} scenes in {time.perf_counter() - t0:.0f} s; "
          f"{calibration.summary()}; model_id {check.model_id[:12]}")


if __name__ == "__main__":
    main()
