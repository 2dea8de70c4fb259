#!/usr/bin/env python
"""Audit generated images for flat mid-grey rectangles (DiffAugment cutout leaking into the generator).

    python scripts/audit_flat_rectangles.py --checkpoint default --examples flat.png --json flat.json
    python scripts/audit_flat_rectangles.py --job runs/gen-0001 --examples flat.png

Generates ``--num-samples`` images (default 4,500 = 100 per condition of the 45-cell grid plan, exactly
as a job with that plan and ``--seed`` would) from a checkpoint, or reads a finished job's images
(``--job``), runs :func:`aigc_synth.metrics.artifacts.flat_rectangles` on them and on as many real
procedural images with the same conditions and seeds, plus those real images with a synthetic cutout
pasted in (the detector's recall check: should be 100 %), and prints one table row per source:
images, images with a flat rectangle, rate, mean size of each flagged image's largest rectangle and
the five conditions with the highest rate. ``--examples PNG`` draws up to 16 flagged generated images,
4x upscaled, with every rectangle outlined; ``--json FILE`` keeps everything.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from aigc_synth.data.procedural import render_scenes
from aigc_synth.metrics.artifacts import (
    CUTOUT_VALUE,
    cutout_side,
    flat_rectangle_rate,
    paste_cutout,
)
from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema

WORST = 5
UPSCALE = 4


def generated_from_checkpoint(checkpoint: str, n: int, seed: int, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(images, codes, seeds, label): the grid plan's first ``n`` samples, as a generate job computes them."""
    from aigc_synth.models.exported import load_generator, resolve_checkpoint_path
    from aigc_synth.sampling.plan import ConditionPlan
    from aigc_synth.sampling.sampler import generate_images

    path = resolve_checkpoint_path(checkpoint)
    gen = load_generator(path, device=device)
    if list(gen.schema.to_dict().items()) != list(DEFAULT_SCHEMA.to_dict().items()):
        raise SystemExit(f"{path} was trained on another schema; the real renderer only knows {DEFAULT_SCHEMA.to_dict()}")
    plan = ConditionPlan({"kind": "grid"}, DEFAULT_SCHEMA, n, seed)
    ids = np.arange(n)
    codes, seeds = plan.codes_for(ids), plan.seeds_for(ids)
    from aigc_synth.models.registry import get_family

    if get_family(gen.family).layout:  # each image drawn for the scene a job with this seed samples
        from aigc_synth.evaluation.layout import evaluation_scenes, layout_images

        global LAYOUT_SCENES
        LAYOUT_SCENES, codes = evaluation_scenes(codes, seed, DEFAULT_SCHEMA)
        return layout_images(gen, LAYOUT_SCENES, codes, seeds), codes, seeds, f"{gen.family} {path.name}"
    return generate_images(gen, codes, seeds, device=device), codes, seeds, f"{gen.family} {path.name}"


#: the scenes of a layout-conditioned checkpoint's images (their real rows are renders of them)
LAYOUT_SCENES = None


def generated_from_job(job: str, limit: int | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, str]:
    """(images, codes or None when the job's schema is not the renderer's, seeds, label) of a finished job."""
    from PIL import Image

    from aigc_synth.io.reader import iter_image_rows, load_manifest

    schema = ConditionSchema.from_dict(load_manifest(job)["schema"])
    same = schema.to_dict() == DEFAULT_SCHEMA.to_dict()
    images, codes, seeds = [], [], []
    for row in iter_image_rows(job, limit=limit):
        with Image.open(io.BytesIO(row["image"])) as im:
            images.append(np.asarray(im.convert("RGB")))
        codes.append(schema.encode(row["conditions"]))
        seeds.append(int(row["seed"]))
    if not images:
        raise SystemExit(f"{job} holds no images")
    return np.stack(images), np.asarray(codes, np.int64) if same else None, np.asarray(seeds, np.int64), f"job {job}"


def real_images(codes: np.ndarray, seeds: np.ndarray, size: int, chunk: int = 1000) -> np.ndarray:
    """Real images for the same conditions: renders of the same scenes for a layout model, else
    procedural scenes for the same (condition, seed) pairs, rendered in chunks to bound memory."""
    if LAYOUT_SCENES is not None:
        from aigc_synth.evaluation.layout import scene_reference

        return scene_reference(LAYOUT_SCENES, codes, DEFAULT_SCHEMA, size)[0]
    return np.concatenate([render_scenes(codes[s:s + chunk], seeds[s:s + chunk], size=size).images
                           for s in range(0, len(codes), chunk)])


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def summarise(name: str, images: np.ndarray, keys: list[str] | None, kw: dict) -> dict:
    t0 = time.perf_counter()
    res = flat_rectangle_rate(images, **kw)
    res["source"] = name
    res["seconds"] = round(time.perf_counter() - t0, 2)
    if keys is not None:
        total, hit = defaultdict(int), defaultdict(int)
        for k in keys:
            total[k] += 1
        for i in res["indices"]:
            hit[keys[i]] += 1
        per = {k: hit[k] / total[k] for k in total}
        res["per_condition"] = dict(sorted(per.items(), key=lambda kv: (-kv[1], kv[0])))
        res["flagged_conditions"] = [keys[i] for i in res["indices"]]
    return res


def print_table(rows: list[dict]) -> None:
    head = (f"{'source':<34s} {'images':>7s} {'flagged':>8s} {'rate':>7s}  {'mean largest rect (w x h, area)':<32s} "
            "worst conditions")
    print(head)
    print("-" * len(head))
    for r in rows:
        size = (f"{r['mean_width']:.1f} x {r['mean_height']:.1f}, {r['mean_area']:.0f} px" if r["count"] else "-")
        worst = ", ".join(f"{k} {v:.0%}" for k, v in list(r.get("per_condition", {}).items())[:WORST] if v > 0) or "-"
        print(f"{r['source']:<34s} {r['images']:>7d} {r['count']:>8d} {r['rate']:>7.2%}  {size:<32s} {worst}")
        if "recall_note" in r:
            print(f"{'':<34s} {r['recall_note']}")


def draw_examples(path: str, images: np.ndarray, res: dict, keys: list[str] | None, limit: int = 16) -> int:
    """A 4-column grid of up to ``limit`` flagged images, upscaled, every rectangle outlined (largest in magenta)."""
    from PIL import Image, ImageDraw

    picks = list(zip(res["indices"], res["rectangles"]))[:limit]
    if not picks:
        return 0
    h, w = images.shape[1:3]
    tw, th, cap = w * UPSCALE, h * UPSCALE, 14
    cols = min(4, len(picks))
    rows = (len(picks) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (tw + 4), rows * (th + cap + 4)), (0, 0, 0))
    for k, (i, rects) in enumerate(picks):
        tile = Image.fromarray(images[i]).resize((tw, th), Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        for j, (x0, y0, x1, y1) in enumerate(rects):
            # outline drawn just outside the rectangle so the flat pixels themselves stay visible
            draw.rectangle([x0 * UPSCALE - 1, y0 * UPSCALE - 1, x1 * UPSCALE, y1 * UPSCALE],
                           outline=(255, 0, 255) if j == 0 else (0, 255, 255), width=2)
        x, y = (k % cols) * (tw + 4), (k // cols) * (th + cap + 4)
        canvas.paste(tile, (x, y + cap))
        label = f"#{i} {keys[i] if keys else ''} {rects[0][2] - rects[0][0]}x{rects[0][3] - rects[0][1]}"
        ImageDraw.Draw(canvas).text((x + 2, y + 1), label, fill=(255, 255, 0))
    canvas.save(path)
    return len(picks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", default=None, help="generator checkpoint ('default' = the bundled one; the default source)")
    src.add_argument("--job", default=None, help="a finished image job's output dir instead of a checkpoint")
    ap.add_argument("--num-samples", type=int, default=4500, help="images to generate / read (4,500 = 100 per condition)")
    ap.add_argument("--seed", type=int, default=0, help="the grid plan's job seed (checkpoint mode)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--min-side", type=int, default=None, help="default: a quarter of the cutout side (8 at 64x64)")
    ap.add_argument("--tolerance", type=int, default=None, help="default: 8 with a value, 2 with --value any")
    ap.add_argument("--value", default=str(CUTOUT_VALUE), help="flat value (128 = cutout grey) or 'any' for any single colour")
    ap.add_argument("--no-real", action="store_true", help="skip the real and pasted-cutout rows")
    ap.add_argument("--examples", default=None, help="PNG grid of up to 16 flagged generated images")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    value = None if args.value.lower() in ("any", "none") else int(args.value)
    kw = {"min_side": args.min_side, "tolerance": args.tolerance, "value": value}

    t0 = time.perf_counter()
    if args.job:
        images, codes, seeds, label = generated_from_job(args.job, args.num_samples)
    else:
        images, codes, seeds, label = generated_from_checkpoint(args.checkpoint or "default", args.num_samples, args.seed,
                                                                args.device)
    print(f"{len(images)} generated images ({label}) in {time.perf_counter() - t0:.1f} s")
    keys = DEFAULT_SCHEMA.keys_of(codes) if codes is not None else None
    size = images.shape[1]
    rows = [summarise("generated", images, keys, kw)]
    if not args.no_real and codes is not None:
        real = real_images(codes, seeds, size)
        rows.append(summarise("real scene renders" if LAYOUT_SCENES is not None else "real procedural", real, keys, kw))
        # recall check: the same real images, each with a cutout square of the training geometry pasted in
        rng = np.random.default_rng(args.seed)
        pasted, truth = zip(*(paste_cutout(im, rng) for im in real))
        rec = summarise(f"real + pasted {cutout_side(size)}px cutout", np.stack(pasted), keys, kw)
        found = dict(zip(rec["indices"], rec["rectangles"]))
        ious = [max((_iou(r, truth[i]) for r in found[i]), default=0.0) if i in found else 0.0 for i in range(len(truth))]
        exact = sum(1 for i in found if tuple(found[i][0]) == tuple(truth[i]))
        rec["pasted_mean_iou"], rec["pasted_exact"] = float(np.mean(ious)), exact
        rec["recall_note"] = (f"(recall check: {rec['count']}/{len(truth)} found, best-IoU with the pasted square "
                              f"{rec['pasted_mean_iou']:.3f}, largest rectangle exactly the pasted one in {exact})")
        rows.append(rec)
    elif codes is None:
        print("the job's schema is not the procedural renderer's: no real rows")
    params = rows[0]
    print(f"\nflat rectangles: >= {params['min_side']} px a side, every channel within {params['tolerance']} of "
          f"{'its own median colour' if value is None else value}\n")
    print_table(rows)
    if args.examples:
        shown = draw_examples(args.examples, images, rows[0], keys)
        print(f"\n{args.examples}: {shown} flagged generated image(s)" if shown
              else "\nno flagged generated image: no examples written")
    if args.json:
        out = {"source": label, "params": {"min_side": params["min_side"], "tolerance": params["tolerance"], "value": value,
                                           "num_samples": len(images), "seed": args.seed}, "rows": rows}
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
