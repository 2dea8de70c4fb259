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
from aigc_synth.sampling.registry import job_kind


def write_preview(output_dir: Path | str | Store, manifest: dict[str, Any]) -> Path | str | None:
    """``preview.png``: the picture the job's sampler kind draws of its rows (an image grid, one row per
    condition; a scene job's bird's-eye views); None when the kind draws none or there are no rows.

    Returns its local path, or ``scheme://bucket/prefix/preview.png`` for an object-store output.
    """
    kind = job_kind(manifest)
    store = open_store(output_dir)
    grid = kind.preview(store, manifest) if kind.preview is not None else None
    return None if grid is None else _save_preview(store, grid)


def _save_preview(store: Store, grid: np.ndarray) -> Path | str:
    if store.remote:
        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, format="PNG")
        store.write_bytes("preview.png", buf.getvalue())
        return store.describe("preview.png")
    path = store.path("preview.png")
    atomic_write_with(path, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
    return path


def format_summary(output_dir: Path | str | Store, manifest: dict[str, Any]) -> str:
    """Counts per condition as a table (rows: all factors but the last; columns: the last factor)."""
    store = open_store(output_dir)
    unit = job_kind(manifest).unit + "s"
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
