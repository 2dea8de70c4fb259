#!/usr/bin/env python
"""Downstream benchmark: the same as ``aigc-synth benchmark downstream`` (see
aigc_synth/benchmarks/downstream_cli.py for the flags and aigc_synth/benchmarks/downstream.py for the protocol).

    python scripts/bench_downstream.py --out DIR (--generator PATH | --train-generator-steps N) [--quick] ...
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigc_synth.benchmarks.downstream_cli import main, parse_args  # noqa: E402,F401  (parse_args: used by tests)

if __name__ == "__main__":
    sys.exit(main())
