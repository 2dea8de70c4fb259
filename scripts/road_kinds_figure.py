#!/usr/bin/env python
"""Bird's-eye view of scenes on each road kind: SUMO ground truth (README picture ``docs/road_kinds.png``)
or a scene generator's (``docs/preview_scenes.png``).

    python scripts/road_kinds_figure.py --out docs/road_kinds.png                              # ~20 s, needs aigc_synth[sim]
    python scripts/road_kinds_figure.py --checkpoint default --out docs/preview_scenes.png     # the bundled scene model

One row per road kind (straight, curve, merge, lane drop), moderate traffic, 3 lanes: SUMO's
``simulate_scenes(..., seed=5, road=kind)`` (two scenes each), or the generator's scenes of ids
0, 1, 2 with seeds ``attempt_seeds(--seed, id)`` (three each; not picked).
"""

import argparse

import numpy as np
from PIL import Image

from aigc_synth.scenes.bev import bev_grid
from aigc_synth.scenes.format import ROAD_KINDS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/road_kinds.png")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--checkpoint", default=None, help="a scene generator (default: SUMO ground truth; 'default': the bundled model)")
    a = ap.parse_args()
    rows = []
    if a.checkpoint:
        from aigc_synth.models.scene_families import load_scene_generator, resolve_scene_checkpoint
        from aigc_synth.seeds import attempt_seeds

        gen = load_scene_generator(resolve_scene_checkpoint(None if a.checkpoint == "default" else a.checkpoint))
        seeds = attempt_seeds(a.seed, np.arange(3)).tolist()
        rows = [gen.sample(["moderate"] * 3, [3] * 3, seeds, [0, 1, 2], roads=[road] * 3) for road in ROAD_KINDS]
        columns = 3
    else:
        from aigc_synth.scenes.sumo import SimOptions
        from aigc_synth.scenes.sumo_dataset import simulate_scenes

        for road in ROAD_KINDS:
            scenes = simulate_scenes("moderate", 3, 4, seed=a.seed, road=road, options=SimOptions(scenes_per_run=4))
            rows.append([scenes[0], scenes[3]])
        columns = 2
    Image.fromarray(bev_grid(rows, columns=columns, max_lanes=3)).save(a.out, optimize=True)


if __name__ == "__main__":
    main()
