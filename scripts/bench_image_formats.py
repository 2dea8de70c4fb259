#!/usr/bin/env python
"""Image formats for generation jobs (``job.image_format``): encode cost, size and fidelity, in one run.

    python scripts/bench_image_formats.py --out bench_image_formats.json          # 1,000 images, bundled model
    python scripts/bench_image_formats.py --num-samples 200 --out /tmp/quick.json  # quicker

The same images of the bundled generator (the balanced grid plan of ``scripts/bench_generate.py``,
job seed 0) are encoded with every candidate: png (what jobs write by default), jpeg q90 / q75,
webp q90 / q75, and webp lossless for reference (not a job option). Per format it reports

* encode and decode ms per image, on one thread (the job encodes inside its actor, one image at a time);
* bytes per image;
* PSNR of the decoded image vs the raw uint8 array the generator produced (png is lossless: inf);
* condition accuracy of the bundled domain classifier (what ``aigc-synth evaluate`` and the gate use)
  on the decoded images vs on the raw arrays, the share of images whose predicted condition is
  unchanged, and the mean absolute change of its class probabilities: does the encoding change
  what a downstream model sees?

Prints a markdown table; writes the figures as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, features

from aigc_synth.models.exported import load_generator, resolve_checkpoint_path
from aigc_synth.metrics.condition import condition_accuracy
from aigc_synth.metrics.domain import load_domain_classifier
from aigc_synth.sampling.plan import ConditionPlan
from aigc_synth.sampling.sampler import encode_image, generate_images


def _webp_lossless(image: np.ndarray) -> bytes:
    """Reference point only: lossless WebP (method 4, as the lossy job setting) is not a job format."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="WEBP", lossless=True, quality=90, method=4)
    return buf.getvalue()


#: (row label, job.image_format, job.image_quality or None, encoder)
CANDIDATES = [
    ("png", "png", None, lambda im: encode_image(im, "png")),
    ("jpeg q90", "jpeg", 90, lambda im: encode_image(im, "jpeg", 90)),
    ("jpeg q75", "jpeg", 75, lambda im: encode_image(im, "jpeg", 75)),
    ("webp q90", "webp", 90, lambda im: encode_image(im, "webp", 90)),
    ("webp q75", "webp", 75, lambda im: encode_image(im, "webp", 75)),
    ("webp lossless (not a job option)", None, None, _webp_lossless),
]


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR over the whole set (pooled MSE); inf when identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def classify(clf, images: np.ndarray, codes: np.ndarray) -> dict:
    scores = clf.score(images)
    pred = scores.predicted_codes()
    acc = condition_accuracy(codes, pred, clf.schema)
    return {"pred": pred, "probs": scores.probs, "all_factors": acc["all_factors"], "per_factor": acc["per_factor"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--out", type=str, default=None, help="write the figures here as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)  # "per image, one thread": what one actor thread pays

    t0 = time.perf_counter()
    gen = load_generator(resolve_checkpoint_path(None if args.checkpoint == "default" else args.checkpoint))
    plan = ConditionPlan({"kind": "grid"}, gen.schema, args.num_samples, 0)
    ids = np.arange(args.num_samples)
    codes, seeds = plan.codes_for(ids), plan.seeds_for(ids)
    images = generate_images(gen, codes, seeds)
    gen_s = time.perf_counter() - t0
    clf = load_domain_classifier()
    raw = classify(clf, images, codes)

    rows = []
    for label, fmt, quality, enc in CANDIDATES:
        enc(images[0]), decode(enc(images[0]))  # warm-up (codec init)
        t = time.perf_counter()
        blobs = [enc(im) for im in images]
        enc_ms = (time.perf_counter() - t) * 1000 / len(images)
        t = time.perf_counter()
        decoded = np.stack([decode(b) for b in blobs])
        dec_ms = (time.perf_counter() - t) * 1000 / len(images)
        seen = classify(clf, decoded, codes)
        rows.append({
            "format": label, "image_format": fmt, "image_quality": quality,
            "encode_ms_per_image": enc_ms, "decode_ms_per_image": dec_ms,
            "bytes_per_image": float(np.mean([len(b) for b in blobs])),
            "psnr_db": psnr(images, decoded),
            "condition_accuracy": seen["all_factors"], "condition_accuracy_per_factor": seen["per_factor"],
            "prediction_unchanged": float((seen["pred"] == raw["pred"]).all(axis=1).mean()),
            "mean_abs_prob_change": float(np.mean([np.abs(p - q).mean() for p, q in zip(seen["probs"], raw["probs"])])),
        })
    png = rows[0]
    for r in rows:
        r["bytes_vs_png"] = r["bytes_per_image"] / png["bytes_per_image"]
        r["encode_vs_png"] = r["encode_ms_per_image"] / png["encode_ms_per_image"]

    res = gen.resolution
    print(f"{args.num_samples} images {res}x{res} of the bundled generator ({gen.family}), one thread; "
          f"generation {gen_s:.1f} s incl. load; classifier on the raw arrays: condition accuracy {raw['all_factors']:.3f}\n")
    factors = "/".join(clf.schema.names)
    raw_factors = "/".join(f"{v:.3f}" for v in raw["per_factor"].values())
    print(f"| format | encode ms/img | decode ms/img | bytes/img | vs png | PSNR dB | cond. acc (raw {raw['all_factors']:.3f}) | "
          f"{factors} acc (raw {raw_factors}) | pred. unchanged | mean abs Δp |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p = "∞ (lossless)" if r["psnr_db"] == float("inf") else f"{r['psnr_db']:.2f}"
        per = "/".join(f"{v:.3f}" for v in r["condition_accuracy_per_factor"].values())
        print(f"| {r['format']} | {r['encode_ms_per_image']:.3f} | {r['decode_ms_per_image']:.3f} | "
              f"{r['bytes_per_image']:,.0f} | "
              f"{r['bytes_vs_png']:.2f}× | {p} | {r['condition_accuracy']:.3f} | {per} | {r['prediction_unchanged']:.3f} | "
              f"{r['mean_abs_prob_change']:.4f} |")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    if args.out:
        result = {
            "num_samples": args.num_samples, "resolution": res, "model_family": gen.family, "model_id": gen.model_id,
            "classifier_id": clf.classifier_id, "raw_condition_accuracy": raw["all_factors"],
            "raw_condition_accuracy_per_factor": raw["per_factor"], "generation_s": gen_s, "rows": rows,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                        "pillow": Image.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"),
                        "libwebp": features.version("webp"), "zlib": features.version("zlib")},
        }
        # json has no inf: png's PSNR is written as null (= lossless)
        for r in result["rows"]:
            r["psnr_db"] = None if r["psnr_db"] == float("inf") else r["psnr_db"]
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
