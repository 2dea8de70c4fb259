#!/usr/bin/env python
"""Write a copy of an exported layout generator with other sampling options: ψ, particles, guidance, steps.

    python scripts/set_sampling_options.py runs/lowlr/best_generator.pt aigc_synth/assets/default_generator.pt \
        --psi 0.6 --particles on --why "eval_layout_models.py: ..."
    python scripts/set_sampling_options.py runs/layout_diffusion/best_generator.pt runs/diffusion_g1.5.pt --guidance 1.5

The options change how a trained generator samples, never its weights:

* ``--psi`` (0, 1] (``layout_gan``): the truncation trick (BigGAN / StyleGAN): the generator scales ``z`` by ψ
  when sampling (training is unaffected);
* ``--particles on|off`` (``layout_gan``): the fixed rain/snow particle overlay (``aigc_synth.models.particles``),
  the renderer's own streaks and flakes drawn over the image. It has no weights, so a generator trained
  without it can sample with it (and the reverse);
* ``--guidance`` [0, 20], ``--guidance-interval T_MIN T_MAX`` and ``--steps`` (``layout_diffusion``): the
  classifier-free guidance scale, the diffusion timesteps it is applied on, and the DPM-Solver++ steps it samples
  with by default (a job's ``job.sampling.*`` still overrides them).

The options go into the checkpoint's ``model_config``; ``meta["sampling_options"]`` keeps them with
the reason they were chosen (``meta["truncation"]`` too, for ψ, as before). Compare candidates first
with ``scripts/eval_layout_models.py --model "NAME=PATH@psi=0.8"`` (or ``@particles=on``). The copy
gets a new ``model_id`` (its sha256), so rows sampled with other options stay distinguishable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aigc_synth.io.checkpoint import load_checkpoint, save_checkpoint
from aigc_synth.models.exported import load_generator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="an exported generator (a run's generator.pt)")
    p.add_argument("out", help="where to write the copy (may not be the source)")
    p.add_argument("--psi", type=float, default=None, help="truncation in (0, 1]; 1 = none")
    p.add_argument("--particles", choices=("on", "off"), default=None, help="the fixed rain/snow particle overlay")
    p.add_argument("--guidance", type=float, default=None, help="layout_diffusion: classifier-free guidance scale in [0, 20]")
    p.add_argument("--steps", type=int, default=None, help="layout_diffusion: solver steps (>= 1)")
    p.add_argument("--guidance-interval", type=int, nargs=2, default=None, metavar=("T_MIN", "T_MAX"),
                   help="layout_diffusion: guide only the solver steps with diffusion timestep in [T_MIN, T_MAX] (0..1000)")
    p.add_argument("--why", default="", help="how the options were chosen (stored in meta)")
    a = p.parse_args()
    gan_options = a.psi is not None or a.particles is not None
    solver_options = a.guidance is not None or a.steps is not None or a.guidance_interval is not None
    if not gan_options and not solver_options:
        raise SystemExit("nothing to set: give --psi / --particles (layout_gan) or --guidance / --guidance-interval / --steps "
                         "(layout_diffusion)")
    if a.guidance is not None and not 0.0 <= a.guidance <= 20.0:
        raise SystemExit(f"--guidance must be in [0, 20], got {a.guidance}")
    if a.guidance_interval is not None and not 0 <= a.guidance_interval[0] <= a.guidance_interval[1] <= 1000:
        raise SystemExit(f"--guidance-interval needs 0 <= T_MIN <= T_MAX <= 1000, got {a.guidance_interval}")
    if a.steps is not None and a.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {a.steps}")
    if a.psi is not None and not 0 < a.psi <= 1:
        raise SystemExit(f"--psi must be in (0, 1], got {a.psi}")
    if Path(a.out).resolve() == Path(a.source).resolve():
        raise SystemExit("out must differ from source (write a copy, then move it)")
    gen = load_generator(a.source)  # validates the checkpoint
    if solver_options:
        if gen.family != "layout_diffusion" or gan_options:
            raise SystemExit(f"{a.source}: --guidance / --steps are layout_diffusion options (this is {gen.family}; "
                             "--psi / --particles are layout_gan's)")
        return _set_solver_options(a)
    if gen.family != "layout_gan":
        raise SystemExit(f"{a.source}: family {gen.family} has no options --psi / --particles (layout_gan only)")
    if getattr(gen.module, "row_calibration", None) is not None:  # its table was fitted for the current options
        raise SystemExit(f"{a.source} carries a row calibration fitted for its current options: set the options on the "
                         "uncalibrated source, then run scripts/calibrate_generator.py again")
    options = {k: v for k, v in (("truncation", a.psi), ("particles", None if a.particles is None else a.particles == "on"))
               if v is not None}
    check = _write_copy(a, options, {"truncation": {"psi": a.psi, "why": a.why}} if a.psi is not None else {})
    print(f"{a.out}: psi {check.module.truncation}, particles {'on' if check.module.particles is not None else 'off'}, "
          f"model_id {check.model_id[:12]}")

def _set_solver_options(a) -> None:
    interval = a.guidance_interval or (None, None)
    options = {k: v for k, v in (("guidance", a.guidance), ("sampling_steps", a.steps), ("guidance_t_min", interval[0]),
                                 ("guidance_t_max", interval[1])) if v is not None}
    check = _write_copy(a, options)
    s = check.module.sampling
    print(f"{a.out}: guidance {s['guidance']:g} on timesteps {s['guidance_t_min']}..{s['guidance_t_max']}, steps {s['steps']}, "
          f"model_id {check.model_id[:12]}")


def _write_copy(a, options: dict, extra_meta: dict | None = None):
    """The source checkpoint with ``options`` in its model config (and meta), written atomically to ``a.out``;
    returns the copy loaded back (it must rebuild, e.g. particles need a weather factor)."""
    ckpt = load_checkpoint(a.source)
    ckpt["model_config"] = {**ckpt["model_config"], **options}
    meta = dict(ckpt.get("meta", {}))
    meta["sampling_options"] = {**meta.get("sampling_options", {}), **options, "why": a.why}
    ckpt["meta"] = {**meta, **(extra_meta or {})}
    save_checkpoint(ckpt, a.out)  # atomic: temp name, then rename
    return load_generator(a.out)

if __name__ == "__main__":
    main()
