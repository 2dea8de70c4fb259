"""End-of-job reporting: a preview grid and a console summary table.

``output_dir`` is a local directory or a ``pyarrow.fs`` URI; the preview is written through the
same store (atomically: temporary key, then move).
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aigc_synth.io.atomic import Store, atomic_write_with, open_store

PREVIEW_PER_CONDITION = 8


def write_preview(output_dir: Path | str | Store, manifest: dict[str, Any],
                  per_condition: int = PREVIEW_PER_CONDITION) -> Path | str | None:
    """``preview.png``: one row per generated condition (schema order), up to 8 samples each (as many
    columns as the fullest row: a small job's preview is not mostly empty).

    Returns its local path, or ``scheme://bucket/prefix/preview.png`` for an object-store output.
    """
    store = open_store(output_dir)
    if manifest["job"].get("sampler") == "scenes":
        return _write_scene_preview(store, manifest)
    names = list(manifest["schema"])
    found: dict[tuple, list[bytes]] = defaultdict(list)
    boxes: dict[tuple, list[list]] = defaultdict(list)
    wanted = len(manifest["counts_per_condition"])
    for shard in manifest["shards"]:
        if "path" not in shard:
            return None
        table = store.read_table(shard["path"])
        conds = list(zip(*[table.column(n).to_pylist() for n in names]))
        images = table.column("image").combine_chunks().field("bytes").to_pylist()
        shard_boxes = table.column("boxes").to_pylist() if "boxes" in table.column_names else [None] * len(images)
        for cond, data, bx in zip(conds, images, shard_boxes):
            if len(found[cond]) < per_condition:
                found[cond].append(data)
                boxes[cond].append(bx)
        if len(found) >= wanted and all(len(v) >= per_condition for v in found.values()):
            break
    if not found:
        return None
    order = {n: {v: i for i, v in enumerate(vals)} for n, vals in manifest["schema"].items()}
    rows = sorted(found, key=lambda c: [order[n][v] for n, v in zip(names, c)])
    first = np.asarray(Image.open(io.BytesIO(found[rows[0]][0])).convert("RGB"))
    h, w = first.shape[:2]
    columns = max(len(v) for v in found.values())
    grid = np.zeros((len(rows) * h, columns * w, 3), np.uint8)
    boxed = grid.copy()  # layout jobs: the right half repeats the grid with each image's boxes drawn
    has_boxes = any(b is not None for bs in boxes.values() for b in bs)
    for r, cond in enumerate(rows):
        for c, data in enumerate(found[cond]):
            image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
            if has_boxes:
                from aigc_synth.evaluation.layout import draw_boxes

                xyxy = np.array([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in boxes[cond][c] or []], np.float64).reshape(-1, 4)
                boxed[r * h:(r + 1) * h, c * w:(c + 1) * w] = draw_boxes(image, xyxy)
    if has_boxes:
        grid = np.concatenate([grid, np.full((grid.shape[0], 4, 3), 255, np.uint8), boxed], axis=1)
    return _save_preview(store, grid)


def _save_preview(store: Store, grid: np.ndarray) -> Path | str:
    if store.remote:
        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, format="PNG")
        store.write_bytes("preview.png", buf.getvalue())
        return store.describe("preview.png")
    path = store.path("preview.png")
    atomic_write_with(path, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
    return path


SCENES_PER_CONDITION = 2


def _write_scene_preview(store: Store, manifest: dict[str, Any]) -> Path | str | None:
    """Scene jobs: a bird's-eye view of the first scenes of every (traffic, lanes) cell, one row each."""
    from aigc_synth.scenes.bev import bev_grid
    from aigc_synth.scenes.format import table_to_scenes

    found: dict[tuple, list] = defaultdict(list)
    for shard in manifest["shards"]:
        for sc in table_to_scenes(store.read_table(shard["path"])):
            if len(found[(sc.traffic, sc.num_lanes)]) < SCENES_PER_CONDITION:
                found[(sc.traffic, sc.num_lanes)].append(sc)
        if len(found) >= len(manifest["counts_per_condition"]) and all(len(v) >= SCENES_PER_CONDITION for v in found.values()):
            break
    if not found:
        return None
    traffic_order = manifest["schema"]["traffic"]
    rows = [found[k] for k in sorted(found, key=lambda k: (traffic_order.index(k[0]), k[1]))]
    return _save_preview(store, bev_grid(rows, columns=SCENES_PER_CONDITION, max_lanes=max(k[1] for k in found)))


def format_summary(output_dir: Path | str | Store, manifest: dict[str, Any]) -> str:
    """Counts per condition as a table (rows: all factors but the last; columns: the last factor)."""
    store = open_store(output_dir)
    unit = "scenes" if manifest["job"].get("sampler") == "scenes" else "images"
    schema = manifest["schema"]
    names = list(schema)
    last = names[-1]
    counts = manifest["counts_per_condition"]
    row_keys: dict[str, dict[str, int]] = defaultdict(dict)
    for key, n in counts.items():
        parts = key.split("/")
        row_keys["/".join(parts[:-1]) or "all"][parts[-1]] = n
    head = "/".join(names[:-1]) or "condition"
    width = max(len(head), *(len(k) for k in row_keys))
    cols = schema[last]
    lines = [f"{head:<{width}}  " + "  ".join(f"{c:>9}" for c in cols) + f"  {'total':>7}"]
    lines.append("-" * len(lines[0]))
    for key in sorted(row_keys, key=lambda k: [schema[n].index(v) for n, v in zip(names[:-1], k.split("/"))] if k != "all" else [0]):
        vals = row_keys[key]
        lines.append(f"{key:<{width}}  " + "  ".join(f"{vals.get(c, 0):>9}" for c in cols) + f"  {sum(vals.values()):>7}")
    if store.is_file("run.json"):  # this run's timings (kept out of the deterministic manifest)
        t = json.loads(store.read_bytes("run.json"))["timings"]
        speed = (f"throughput: {t['images_per_s']:.1f} {unit}/s (generation {t['generate_s']:.1f} s; "
                 f"Ray start {t['ray_start_s']:.1f} s; total {t['total_s']:.1f} s)")
    else:
        speed = ""
    lines += ["-" * len(lines[0]),
              f"{unit}: {manifest['num_samples']} in {manifest['num_shards']} shard(s)   {speed}",
              f"model: {manifest['model']['family']} {manifest['model_id'][:12]}   "
              f"output: {store.display if store.remote else store.root.absolute()}"]
    if store.exists("preview.png"):
        lines.append(f"preview: {store.describe('preview.png')}")
    return "\n".join(lines)


def print_summary(output_dir: Path | str | Store, manifest: dict[str, Any]) -> None:
    print(format_summary(output_dir, manifest))
