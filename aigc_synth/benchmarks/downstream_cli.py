"""Downstream benchmark: do generated rare-condition images help a classifier and a detector?

    aigc-synth benchmark downstream --out DIR (--generator PATH | --train-generator-steps N) [--quick]
        [--seeds 0,1,2] [--steps 1500] [--batch-size 64] [--rare-prob 0.02] [--mix-ratio balance|R]
        [--pool-size 10000] [--pool-scenes 3000] [--test-per-combination 40] [--test-scenes 600]
        [--synthetic-size N] [--generator-override KEY=VALUE ...] [--scenes DIR] [--test-scenes-dir DIR]
        [--threads N]

An imbalanced real pool (fog, snow and night each ``--rare-prob``), a balanced held-out real test set
on other scenes, a layout-conditioned generator trained on the pool only, and four training sets for a
condition classifier and a vehicle detector, all trained for the same steps and batch size:
(a) real, (b) real + generated rare, (c) generated only, (d) real + real rare (oracle). Writes
downstream.json, downstream.md and downstream.png to --out. The protocol is documented in
aigc_synth/benchmarks/downstream/__init__.py.

``--quick``: pool 1,500 images (500 scenes), test 450 (10 per combination), 250 steps of batch 32,
three seeds, and (unless a generator flag is given) a generator trained for 400 steps on that pool:
``aigc-synth benchmark downstream --out runs/downstream_quick --quick --threads 2``. Measured on this
2-core machine: 12 min 41 s in all (generator 4.9 min, downstream 7.2 min). A 400-step generator is a smoke test of the protocol, not of the generator:
the full run's figures are the ones to quote. Explicit size flags override the quick values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aigc_synth.benchmarks.downstream import QUICK, QUICK_GENERATOR_STEPS, DownstreamConfig
from aigc_synth.errors import AigcSynthError


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> DownstreamConfig:
    """The command line → a :class:`DownstreamConfig` (argparse exits 2 on a bad line)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (downstream.json/.md/.png; generator/ if trained here)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--generator", help="a layout_gan generator checkpoint trained on this benchmark's pool")
    g.add_argument("--train-generator-steps", type=int, help="train a layout_gan on the pool in-process for N steps")
    p.add_argument("--generator-override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra `aigc-synth train` override for --train-generator-steps (repeatable), e.g. train.batch_size=16")
    p.add_argument("--quick", action="store_true", help="small pools and steps (see the module docstring)")
    p.add_argument("--seeds", default="0,1,2", help="downstream training seeds, comma-separated")
    p.add_argument("--steps", type=int, help="optimiser steps per model, the same for every row (1500; quick 250)")
    p.add_argument("--batch-size", type=int, help="batch size, the same for every row (64; quick 32)")
    p.add_argument("--rare-prob", type=float, default=0.02, help="pool probability of fog, of snow and of night")
    p.add_argument("--mix-ratio", default="balance",
                   help="generated rare images per real pool image in (b) (and real ones in (d)); 'balance' "
                        "(default) tops the rare weather x time cells up to the common cells' mean count")
    p.add_argument("--pool-size", type=int, help="real training images (10000; quick 1500)")
    p.add_argument("--pool-scenes", type=int, help="scenes behind the pool (3000; quick 500)")
    p.add_argument("--test-per-combination", type=int, help="held-out images per each of the 45 combinations (40; quick 10)")
    p.add_argument("--test-scenes", type=int, help="held-out scenes (600; quick 150)")
    p.add_argument("--synthetic-size", type=int, help="generated images of row (c) (default: the pool size)")
    p.add_argument("--scenes", help="pool scenes from this scene folder instead of the bundled scene model")
    p.add_argument("--test-scenes-dir", help="held-out scenes from this scene folder")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (0 = torch's default; default: 1 with --quick, where the time estimate was measured, else 0)")
    a = p.parse_args(argv)
    if a.generator is None and a.train_generator_steps is None:
        if not a.quick:
            p.error("one of --generator or --train-generator-steps is required (--quick alone trains "
                    f"{QUICK_GENERATOR_STEPS} steps)")
        a.train_generator_steps = QUICK_GENERATOR_STEPS
    try:
        seeds = tuple(int(s) for s in a.seeds.split(",") if s.strip())
        mix = None if a.mix_ratio == "balance" else float(a.mix_ratio)
    except ValueError as exc:
        p.error(str(exc))
    sizes = {k: getattr(a, k) for k in ("steps", "batch_size", "pool_size", "pool_scenes", "test_per_combination",
                                        "test_scenes") if getattr(a, k) is not None}
    base = {**(QUICK if a.quick else {}), **sizes}
    return DownstreamConfig(out=a.out, generator=a.generator, train_generator_steps=a.train_generator_steps or 0,
                            generator_overrides=tuple(a.generator_override), rare_prob=a.rare_prob, mix_ratio=mix,
                            synthetic_size=a.synthetic_size, seeds=seeds, scenes_dir=a.scenes,
                            test_scenes_dir=a.test_scenes_dir, quick=a.quick, **base,
                            threads=a.threads if a.threads is not None else (1 if a.quick else 0))


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run the benchmark; print the Markdown table (``aigc-synth benchmark downstream``)."""
    cfg = parse_args(argv, prog)
    from aigc_synth.benchmarks.downstream import run_downstream

    try:
        result = run_downstream(cfg)
    except AigcSynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    print(Path(result["outputs"]["md"]).read_text())
    return 0

