#!/usr/bin/env python
"""Bird's-eye view of SUMO ground-truth scenes on each road kind (README picture ``docs/road_kinds.png``).

    python scripts/road_kinds_figure.py --out docs/road_kinds.png      # ~20 s, needs aigc_synth[sim]

One row per road kind (straight, curve, merge, lane drop), two scenes each: moderate traffic, 3 lanes,
``simulate_scenes(..., seed=5, road=kind)``.
"""

import argparse

from PIL import Image

from aigc_synth.scenes.bev import bev_grid
from aigc_synth.scenes.format import ROAD_KINDS
from aigc_synth.scenes.sumo import SimOptions
from aigc_synth.scenes.sumo_dataset import simulate_scenes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/road_kinds.png")
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args()
    rows = []
    for road in ROAD_KINDS:
        scenes = simulate_scenes("moderate", 3, 4, seed=a.seed, road=road, options=SimOptions(scenes_per_run=4))
        rows.append([scenes[0], scenes[3]])
    Image.fromarray(bev_grid(rows, columns=2, max_lanes=3)).save(a.out, optimize=True)


if __name__ == "__main__":
    main()
