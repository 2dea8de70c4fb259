#!/usr/bin/env python
"""Write an exported generator as a bundled checkpoint: float weights stored in float16 (half the file).

    python scripts/bundle_checkpoint.py runs/layout_diffusion/best_generator.pt aigc_synth/assets/layout_diffusion.pt \
        --why "step 4,000 of the session-6 run; FD 11.1 at 300 samples"

The network still runs in float32: loading copies each float16 tensor into the float32 parameter, so
only the weights are rounded (to 11 significant bits). The script samples a few layout images with the
source and with the copy (same seeds, same scenes) and prints the largest and mean pixel difference, so
the rounding's effect is measured every time a checkpoint is bundled. The copy gets its own model id.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="an exported generator (a run's generator.pt / best_generator.pt)")
    ap.add_argument("out", help="where to write the bundled copy (may not be the source)")
    ap.add_argument("--why", default="", help="which run and step, and why this one (stored in meta)")
    ap.add_argument("--check", type=int, default=8, help="images sampled with both to measure the rounding")
    a = ap.parse_args(argv)
    if Path(a.out).resolve() == Path(a.source).resolve():
        raise SystemExit("out must differ from source")

    from aigc_synth.data.layout import scene_layouts
    from aigc_synth.io.checkpoint import load_checkpoint, save_checkpoint
    from aigc_synth.models.exported import load_generator
    from aigc_synth.models.scene_families import BUNDLED_SCENE_CHECKPOINT, load_scene_generator
    from aigc_synth.sampling.sampler import generate_images

    source = load_generator(a.source)  # validates it
    ckpt = load_checkpoint(a.source)
    ckpt["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    ckpt["meta"] = {**ckpt.get("meta", {}), "bundled": {"weights": "float16", "from_model_id": source.model_id, "why": a.why}}
    save_checkpoint(ckpt, a.out)  # atomic: temp name, then rename
    copy = load_generator(a.out)
    n = a.check
    scenes = load_scene_generator(BUNDLED_SCENE_CHECKPOINT).sample(["moderate"] * n, [3] * n, list(range(n)), list(range(n)))
    layouts = scene_layouts(scenes, source.resolution)
    codes, seeds = np.zeros((n, len(source.schema.names)), np.int64), np.arange(n)
    with torch.no_grad():
        x = generate_images(source, codes, seeds, "cpu", n, layouts=layouts).astype(np.int16)
        y = generate_images(copy, codes, seeds, "cpu", n, layouts=layouts).astype(np.int16)
    diff = np.abs(x - y)
    print(f"{a.out}: {Path(a.out).stat().st_size / 1e6:.1f} MB (source {Path(a.source).stat().st_size / 1e6:.1f} MB), "
          f"model_id {copy.model_id[:12]}; float16 weights vs float32 on {n} images: max pixel difference {diff.max()}, "
          f"mean {diff.mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
