#!/usr/bin/env python
"""Scale-out benchmark on a simulated multi-node cluster (:mod:`aigc_synth.benchmarks.scale_out`).

    python scripts/bench_scale_out.py --out scale_out.json                       # the default sweep
    python scripts/bench_scale_out.py --actors 1 2 4 --service-ms 1000 --out s.json   # a quicker one
"""

import sys

from aigc_synth.benchmarks.scale_out import main

if __name__ == "__main__":
    sys.exit(main())
