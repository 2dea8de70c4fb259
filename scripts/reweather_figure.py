#!/usr/bin/env python
"""The README's before / after picture of a condition-transfer job (re-weathering labelled frames).

    python scripts/reweather_figure.py --out docs/reweather.jpg

It writes a BDD100K-shaped set of labelled frames (renders of SUMO-like traffic scenes through the ego
camera, with boxes, lane markings and drivable areas: ``write_bdd100k_fixture(layout_labels=True)``), runs
the real job on them (``aigc-synth generate job.layouts=… job.layouts_lanes=… job.layouts_drivable=…``,
the bundled layout GAN, a ``list`` plan of conditions) and draws, per frame, the source frame and its
re-weathered images with the job's ``boxes`` column outlined. The frames come from the project's own
renderer, the domain the bundled model learnt: it shows the path, not quality on real photos.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

CONDITIONS = [("clear", "day"), ("fog", "day"), ("snow", "dusk"), ("rain", "night"), ("clear", "night")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    import io

    import pyarrow.parquet as pq
    from PIL import Image

    from aigc_synth.config import compose
    from aigc_synth.data.bdd100k_fixtures import write_bdd100k_fixture
    from aigc_synth.data.scene_render import draw_boxes
    from aigc_synth.jobs.generate import run_generation

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images_dir, labels = write_bdd100k_fixture(root / "frames", a.frames, seed=a.seed, resolution=64, layout_labels=True)
        items = ",".join(f"{{conditions:{{weather:{w},time_of_day:{t}}}}}" for w, t in CONDITIONS)
        cfg = compose("generate", [f"output_dir={root / 'out'}", f"job.layouts={labels}", f"job.layouts_images={images_dir}",
                                   f"job.layouts_lanes={root / 'frames' / 'lanes.json'}",
                                   f"job.layouts_drivable={root / 'frames' / 'drivable.json'}",
                                   "job.plan.kind=list", f"job.plan.items=[{items}]", "preview=false", "ray.num_cpus=2"])
        run_generation(cfg, progress=False)
        table = pq.read_table(root / "out" / "parquet").to_pylist()
        rows = []
        for frame in sorted({r["source_frame"] for r in table}):
            mine = sorted((r for r in table if r["source_frame"] == frame), key=lambda r: r["sample_id"])
            source = np.asarray(Image.open(images_dir / frame).convert("RGB").resize((64, 64)))
            cells = [draw_boxes(source, np.zeros((0, 4)), scale=a.scale)]
            for r in mine:
                image = np.asarray(Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB"))
                boxes = np.array([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in r["boxes"]]).reshape(-1, 4)
                cells.append(draw_boxes(image, boxes, scale=a.scale))
            gap = np.full((cells[0].shape[0], 4, 3), 255, np.uint8)
            rows.append(np.concatenate([cells[0], gap, gap, *[np.concatenate([c, gap], 1) for c in cells[1:]]], 1))
    grid = np.concatenate([np.concatenate([r, np.full((4, r.shape[1], 3), 255, np.uint8)], 0) for r in rows], 0)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out, quality=92)
    print(f"{out}: {len(rows)} frames × (source + {', '.join(f'{w}/{t}' for w, t in CONDITIONS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
