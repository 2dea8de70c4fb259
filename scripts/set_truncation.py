#!/usr/bin/env python
"""Write a copy of an exported generator that samples with truncation ψ (BigGAN / StyleGAN trick).

    python scripts/set_truncation.py runs/layout_gan/generator.pt aigc_synth/assets/default_generator.pt \
        --psi 0.6 --why "eval_layout_models.py: broken images 2.7 % at psi 1, 0 at 0.6"

ψ goes into the checkpoint's ``model_config`` (the generator scales ``z`` by it when sampling; training
is unaffected) and ``meta["truncation"]`` keeps ψ with the reason it was chosen. Compare candidates
first with ``scripts/eval_layout_models.py --model "NAME=PATH@psi=0.8"``. The weights are unchanged;
the copy gets a new ``model_id`` (its sha256), so rows sampled with another ψ stay distinguishable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigc_synth.io.checkpoint import load_checkpoint, load_generator, save_checkpoint  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="an exported generator (a run's generator.pt)")
    p.add_argument("out", help="where to write the copy (may not be the source)")
    p.add_argument("--psi", type=float, required=True, help="truncation in (0, 1]; 1 = none")
    p.add_argument("--why", default="", help="how ψ was chosen (stored in meta)")
    a = p.parse_args()
    if not 0 < a.psi <= 1:
        raise SystemExit(f"--psi must be in (0, 1], got {a.psi}")
    if Path(a.out).resolve() == Path(a.source).resolve():
        raise SystemExit("out must differ from source (write a copy, then move it)")
    gen = load_generator(a.source)  # validates the checkpoint and that its family has a ψ
    if not hasattr(gen.module, "truncation"):
        raise SystemExit(f"{a.source}: family {gen.family} has no truncation ψ")
    ckpt = load_checkpoint(a.source)
    ckpt["model_config"] = {**ckpt["model_config"], "truncation": a.psi}
    ckpt["meta"] = {**ckpt.get("meta", {}), "truncation": {"psi": a.psi, "why": a.why}}
    save_checkpoint(ckpt, a.out)  # atomic: temp name, then rename
    check = load_generator(a.out)
    print(f"{a.out}: psi {check.module.truncation}, model_id {check.model_id[:12]}")


if __name__ == "__main__":
    main()
