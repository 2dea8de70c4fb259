#!/usr/bin/env python
"""Procedural renderer throughput (images/s) at 32, 64 and 128 px, best of 5 batches.

    python scripts/bench_renderer.py [--batch 128]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aigc_synth.data.procedural import render_scenes
from aigc_synth.schema import DEFAULT_SCHEMA


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    combos = DEFAULT_SCHEMA.encode_many(DEFAULT_SCHEMA.combinations())
    codes = np.resize(combos, (args.batch, 3))  # every condition, cycled
    for size in (32, 64, 128):
        times = []
        for r in range(args.repeats):
            seeds = np.arange(args.batch) + r * args.batch
            t0 = time.perf_counter()
            render_scenes(codes, seeds, size)
            times.append(time.perf_counter() - t0)
        print(f"{size:4d} px: {args.batch / min(times):8.0f} img/s (best of {args.repeats} batches of {args.batch}; "
              f"median {args.batch / float(np.median(times)):.0f} img/s)")


if __name__ == "__main__":
    main()
