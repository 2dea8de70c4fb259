#!/usr/bin/env python
"""The layout-conditioning acceptance table: every model, one evaluation, one run.

    python scripts/eval_layout_models.py --n-per-condition 100 --json layout_eval.json --md layout_eval.md \
        --grid docs/layout_samples.png

Every row is scored on the same 45 × n samples: sample ``i`` gets condition ``i // n`` and a scene
sampled by the bundled scene model at that condition's traffic level (``--scenes DIR`` renders a
folder of scenes instead), exactly as an image job with seed ``--seed`` picks them. The reference is
the renderer's picture of each scene under the same weather and time; the scene domain classifier
(trained on renders only) gives FD / KID / precision / recall / density / coverage and condition
accuracy; the vehicle detector (trained on renders only) gives layout AP50 and box recall against
each sample's requested boxes (pycocotools). Rows:

* the models given with ``--model NAME=PATH`` (``NAME=PATH@psi=0.8`` samples that checkpoint with
  truncation ψ 0.8 instead of its stored one, ``@particles=on|off`` with or without the fixed
  rain/snow particle overlay; default: the bundled layout model, the previous bundled cGAN and, when present, a DCGAN baseline run) — models without layout input are asked for
  the same conditions and scored against the same boxes;
* ``real (second render)``: the same scenes rendered again with other cosmetic seeds, scored like
  a model: the real-vs-real values recall / coverage are compared with, and the AP50 ceiling;
* the shuffled-layout floor of the first model (its images against another sample's boxes).

Also the flat-rectangle rate (``aigc_synth.metrics.artifacts``) of every row's images, the broken-image
rate (high-frequency energy over 3× the real renders' median for that weather: the tails' garbled
images the truncation ψ trades against variety) and, with
``--grid``, a sample grid of the first model: one row per weather × time, column 0 the real render,
then latents; the right half repeats it with the requested boxes drawn (boxes the detector ignores
in grey).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigc_synth.evaluation.evaluate import _clean, _score, compute_metrics  # noqa: E402
from aigc_synth.evaluation.layout import (  # noqa: E402
    REFERENCE_SCENE_SEED,
    draw_boxes,
    SCENE_CLASSIFIER,
    evaluation_scenes,
    layout_images,
    scene_reference,
)
from aigc_synth.io.atomic import atomic_write_json  # noqa: E402
from aigc_synth.io.checkpoint import load_generator, resolve_checkpoint_path  # noqa: E402
from aigc_synth.metrics.artifacts import flat_rectangle_rate  # noqa: E402
from aigc_synth.metrics.distribution import real_sample_hits  # noqa: E402
from aigc_synth.metrics.domain import load_domain_classifier  # noqa: E402
from aigc_synth.metrics.layout import gt_ignore_mask, load_vehicle_detector, score_layout  # noqa: E402
from aigc_synth.sampling.seeds import LATENT_STREAM, derive_seeds  # noqa: E402
from aigc_synth.schema import DEFAULT_SCHEMA  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "aigc_synth" / "assets"
DEFAULT_MODELS = ["layout_gan (bundled)=default", f"cgan (previous bundled)={ASSETS / 'cgan_generator.pt'}",
                  "dcgan baseline (scene renders)=runs/dcgan_scenes/generator.pt"]
SECOND_RENDER_SEED = REFERENCE_SCENE_SEED + 1
VARIETY_REAL_SEED = REFERENCE_SCENE_SEED + 2


def _blur_residual(x: np.ndarray) -> np.ndarray:
    """|x - its 3×3 box blur| for images (N, H, W[, C]), edges replicated."""
    pads = ((0, 0), (1, 1), (1, 1)) + ((0, 0),) * (x.ndim - 3)
    pad = np.pad(x, pads, mode="edge")
    blur = sum(pad[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(3) for j in range(3)) / 9.0
    return np.abs(x - blur)


def high_frequency_energy(images: np.ndarray) -> np.ndarray:
    """Per image, the mean |pixel - its 3×3 box blur| (grey levels): rain streaks, snow flakes and
    sensor noise live here; a generator that smooths them away scores lower than the real renders."""
    return _blur_residual(images.astype(np.float32).mean(axis=3)).mean(axis=(1, 2))


BORDER_WIDTH = 3  # px: the frame where zero padding leaves its trace in a convolutional generator


def border_energy(images: np.ndarray, width: int = BORDER_WIDTH) -> np.ndarray:
    """Per image, the mean |pixel - its 3×3 box blur| per colour channel over the outer ``width``-pixel
    frame: the bright / coloured seams a generator's zero padding draws along the image border (seen in
    the sample grids) score high here; the real renders have only their sensor noise there."""
    frame = np.ones(images.shape[1:3], bool)
    frame[width:-width, width:-width] = False
    return _blur_residual(images.astype(np.float32))[:, frame].mean(axis=(1, 2))


VARIETY_LATENTS = 8  # images per (scene, condition) group in the variety measurement
VARIETY_STEP = 50  # every 50th evaluated sample's scene and condition forms a group (90 groups at n = 100)


def group_variety(images: np.ndarray, features: np.ndarray, k: int) -> dict[str, float]:
    """Variety inside groups of ``k`` consecutive images (one scene and condition each): the mean
    per-pixel standard deviation across the group (grey levels) and the mean pairwise distance of the
    classifier features. Real groups differ by cosmetic seed (car palettes, light level, dash phase,
    particles); generated groups by latent."""
    x = images.astype(np.float32).reshape(-1, k, *images.shape[1:])
    f = np.asarray(features, np.float64).reshape(-1, k, features.shape[-1])
    d = np.linalg.norm(f[:, :, None] - f[:, None, :], axis=-1)
    return {"pixel_std": float(x.std(axis=1).mean()), "feature_distance": float(d.sum(axis=(1, 2)).mean() / (k * (k - 1)))}


BROKEN_HF_FACTOR = 3.0  # an image with this many times the real median high-frequency energy is garbled


def parse_model(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``NAME=PATH`` with optional ``@psi=X`` and ``@particles=on|off`` → (name, path, sampling options;
    empty for the checkpoint's own)."""
    name, path = spec.split("=", 1)
    path, *opts = path.split("@")
    options: dict[str, Any] = {}
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "psi" and value and 0 < float(value) <= 1:
            options["psi"] = float(value)
        elif key == "particles" and value in ("on", "off"):
            options["particles"] = value == "on"
        else:
            raise SystemExit(f"--model {spec}: options are @psi=X with X in (0, 1] and @particles=on|off")
    return name, path, options


def load_model(path: str, options: dict[str, Any] | None = None):
    """The checkpoint with its truncation ψ and particle overlay replaced by ``options``' (weights unchanged)."""
    gen = load_generator(resolve_checkpoint_path(path))
    options = options or {}
    if options and gen.family != "layout_gan":
        raise SystemExit(f"{path}: family {gen.family} has no sampling options")
    if "psi" in options:
        gen.module.truncation = options["psi"]
    if "particles" in options:
        gen.module.set_particles(options["particles"], gen.schema.factors)
    return gen


def sample_grid(path: str, out: str, seed: int, columns: int = 5, scale: int = 2, options: dict[str, Any] | None = None) -> None:
    """Rows = weather × time (one scene each, traffic from the scene), column 0 real, then latents."""
    from PIL import Image

    from aigc_synth.data.scene_render import render_scene

    gen = load_model(path, options)
    schema = gen.schema
    pairs = [(w, t) for w in schema.values("weather") for t in schema.values("time_of_day")]
    traffic = schema.values("traffic")
    codes = np.array([schema.encode({"weather": w, "time_of_day": t, "traffic": traffic[(k + 1) % 3]})
                      for k, (w, t) in enumerate(pairs)])
    scenes, codes = evaluation_scenes(codes, seed + 17, schema)
    rows_plain, rows_boxed = [], []
    for k, (sc, code) in enumerate(zip(scenes, codes)):
        w, t = schema.values("weather")[code[0]], schema.values("time_of_day")[code[1]]
        real = render_scene(sc, w, t, 99, gen.resolution)
        seeds = derive_seeds(seed, np.arange(columns), stream=LATENT_STREAM)
        fakes = layout_images(gen, [sc] * columns, np.repeat(code[None], columns, 0), seeds)
        ignore = gt_ignore_mask(real.boxes, real.visible, gen.resolution)
        tiles = [real.image, *fakes]
        rows_plain.append(np.concatenate([np.repeat(np.repeat(x, scale, 0), scale, 1) for x in tiles], 1))
        rows_boxed.append(np.concatenate([draw_boxes(x, real.boxes, ignore, scale) for x in tiles], 1))
    gap = np.full((len(pairs) * gen.resolution * scale, 8, 3), 255, np.uint8)
    grid = np.concatenate([np.concatenate(rows_plain, 0), gap, np.concatenate(rows_boxed, 0)], 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out, quality=85) if out.lower().endswith((".jpg", ".jpeg")) else Image.fromarray(grid).save(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=None, help="NAME=PATH (repeatable; default: see the docstring)")
    p.add_argument("--n-per-condition", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", default=None, help="a folder of scene Parquet (default: the bundled scene model)")
    p.add_argument("--json", default="layout_eval.json")
    p.add_argument("--md", default=None)
    p.add_argument("--grid", default=None, help="PNG: the first model's sample grid, boxes drawn on a copy")
    a = p.parse_args()
    models = [parse_model(m) for m in (a.model or DEFAULT_MODELS)]
    models = [(n, path, opts) for n, path, opts in models if path == "default" or Path(path).is_file()]
    schema = DEFAULT_SCHEMA
    combos = np.array([schema.encode(c) for c in schema.combinations()], dtype=np.int64)
    codes = np.repeat(combos, a.n_per_condition, axis=0)
    t0 = time.perf_counter()
    scenes, codes = evaluation_scenes(codes, a.seed, schema, a.scenes)
    ref, boxes, visible = scene_reference(scenes, codes, schema, 64)
    classifier = load_domain_classifier(SCENE_CLASSIFIER)
    detector = load_vehicle_detector(None)
    ref_scores = _score(classifier, ref, "score reference", True)
    ref_hf = high_frequency_energy(ref)
    ref_border = float(border_energy(ref).mean())
    w_col = schema.names.index("weather")
    broken_limit = BROKEN_HF_FACTOR * np.array([np.median(ref_hf[codes[:, w_col] == k])
                                                for k in range(len(schema.values("weather")))])[codes[:, w_col]]
    rolled = [int(j) for j in np.roll(np.arange(len(boxes)), 1)]
    rows = []
    # variety across latents for a fixed scene and condition (the collapse), against real
    # renders of the same groups under other cosmetic seeds
    picked = np.arange(0, len(codes), VARIETY_STEP)
    v_scenes = [scenes[i] for i in picked for _ in range(VARIETY_LATENTS)]
    v_codes = np.repeat(codes[picked], VARIETY_LATENTS, axis=0)
    v_real, _, _ = scene_reference(v_scenes, v_codes, schema, 64, seed=VARIETY_REAL_SEED)
    real_variety = group_variety(v_real, _score(classifier, v_real, "score variety (real)", True).features, VARIETY_LATENTS)

    def row(name: str, images: np.ndarray, extra: dict, variety_images: np.ndarray) -> dict:
        scores = _score(classifier, images, f"score {name}", True)
        v = group_variety(variety_images, _score(classifier, variety_images, f"score variety {name}", True).features,
                          VARIETY_LATENTS)
        variety = {**v, **{f"{k}_ratio": v[k] / real_variety[k] for k in v}}
        m = compute_metrics(codes, scores, codes, ref_scores, schema)
        lay = score_layout(detector, images, boxes, visible)
        flat = flat_rectangle_rate(images)
        hf = high_frequency_energy(images)
        broken = int((hf > broken_limit).sum())
        w = schema.names.index("weather")
        hf_ratio = {v: float(hf[codes[:, w] == k].mean() / ref_hf[codes[:, w] == k].mean()) for k, v in enumerate(schema.values("weather"))}
        border_ratio = float(border_energy(images).mean() / ref_border)
        # the overall recall / coverage split by the real sample's weather and time (same radii)
        recalled, covered = real_sample_hits(ref_scores.features, scores.features)
        by_condition = {f: {v: {"recall": float(recalled[codes[:, i] == k].mean()),
                                "coverage": float(covered[codes[:, i] == k].mean())}
                            for k, v in enumerate(schema.values(f))}
                        for i, f in enumerate(schema.names) if f in ("weather", "time_of_day")}
        r = {"name": name, **extra, "fd": m["overall"]["fd"], "kid": m["overall"]["kid"],
             "precision": m["overall"]["precision"], "recall": m["overall"]["recall"],
             "density": m["overall"]["density"], "coverage": m["overall"]["coverage"],
             "condition_accuracy": m["overall"]["condition_accuracy"], "ap50": lay["ap50"], "box_recall": lay["recall"],
             "flat_rectangles": flat["count"], "images": flat["images"], "broken_images": broken, "intra_kid_mean": m["overall"]["intra_kid_mean"],
             "confusion": m["confusion"], "high_frequency_ratio": hf_ratio, "border_ratio": border_ratio, "recall_coverage_by": by_condition,
             "latent_variety": variety}
        print(json.dumps({k: v for k, v in r.items() if k != "confusion"}, default=float))
        return r

    for n, (name, path, opts) in enumerate(models):
        gen = load_model(path, opts)
        seeds = derive_seeds(a.seed, np.arange(len(codes)), stream=LATENT_STREAM)
        t = time.perf_counter()
        images = layout_images(gen, scenes, codes, seeds, progress=True)
        rate = len(images) / (time.perf_counter() - t)
        v_seeds = derive_seeds(a.seed + 1, np.arange(len(v_codes)), stream=LATENT_STREAM)
        rows.append(row(name, images, {"path": path, "psi": getattr(gen.module, "truncation", None),
                                       "particles": getattr(gen.module, "particles", None) is not None, "family": gen.family, "model_id": gen.model_id[:12],
                                       "step": gen.meta.get("step"), "sampling_img_per_s": round(rate, 1)},
                        layout_images(gen, v_scenes, v_codes, v_seeds)))
        if n == 0:
            floor = score_layout(detector, images, [boxes[j] for j in rolled], [visible[j] for j in rolled])
            first_floor = {"name": f"{name}: shuffled layout (floor)", "ap50": floor["ap50"], "box_recall": floor["recall"]}
    real2, _, _ = scene_reference(scenes, codes, schema, 64, seed=SECOND_RENDER_SEED)
    v_real2, _, _ = scene_reference(v_scenes, v_codes, schema, 64, seed=VARIETY_REAL_SEED + 1)
    rows.append(row("real (second render of the same scenes)", real2, {"family": "renderer"}, v_real2))
    rows.append(first_floor)
    ceiling = rows[-2]
    result = {"n_per_condition": a.n_per_condition, "n": int(len(codes)), "seed": a.seed, "scenes": a.scenes or "bundled scene model",
              "classifier": classifier.classifier_id, "detector": detector.detector_id,
              "reference_condition_accuracy": compute_metrics(codes, ref_scores, codes, ref_scores, schema)["overall"]["condition_accuracy"],
              "rows": rows, "elapsed_s": round(time.perf_counter() - t0, 1)}
    atomic_write_json(a.json, _clean(result))
    lines = ["| model | FD ↓ | KID ↓ | precision | recall | coverage | acc. weather | acc. time | acc. traffic | layout AP50 | box recall | flat rect. | broken |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = r.get("condition_accuracy") or {}
        f = lambda k, d=3: "–" if r.get(k) is None else f"{r[k]:.{d}f}"  # noqa: E731
        lines.append(f"| {r['name']} | {f('fd', 2)} | {f('kid')} | {f('precision')} | {f('recall')} | {f('coverage')} | "
                     + " | ".join("–" if k not in acc else f"{acc[k]:.3f}" for k in ("weather", "time_of_day", "traffic"))
                     + f" | {f('ap50')} | {f('box_recall')} | "
                     + ("–" if "flat_rectangles" not in r else f"{r['flat_rectangles']} / {r['images']}") + " | "
                     + ("–" if "broken_images" not in r else f"{r['broken_images']}") + " |")
    lines += ["", "High-frequency energy per weather, generated ÷ real renders (1 = as much fine detail as real: rain streaks, "
              f"snow flakes, sensor noise); *border*: the same per colour channel in the outer {BORDER_WIDTH}-px frame, all weathers "
              "(padding seams):", "", "| model | " + " | ".join(schema.values("weather")) + " | border |",
              "|---|" + "---|" * (len(schema.values("weather")) + 1)]
    for r in rows:
        if "high_frequency_ratio" in r:
            lines.append(f"| {r['name']} | " + " | ".join(f"{r['high_frequency_ratio'][v]:.2f}" for v in schema.values("weather"))
                         + f" | {r['border_ratio']:.2f} |")
    lines += ["", "Recall / coverage split by the real sample's weather and time of day (the overall values' indicators):",
              "", "| model | " + " | ".join(v for f in ("weather", "time_of_day") for v in schema.values(f)) + " |",
              "|---|" + "---|" * (len(schema.values("weather")) + len(schema.values("time_of_day")))]
    for r in rows:
        if "recall_coverage_by" in r:
            by = r["recall_coverage_by"]
            lines.append(f"| {r['name']} | " + " | ".join(f"{by[f][v]['recall']:.2f} / {by[f][v]['coverage']:.2f}"
                                                         for f in ("weather", "time_of_day") for v in schema.values(f)) + " |")
    lines += ["", f"Variety across latents for one scene and condition ({len(picked)} groups of {VARIETY_LATENTS}; real: "
              "the same groups under other cosmetic seeds), generated ÷ real:", "",
              "| model | pixel std ratio | feature distance ratio |", "|---|---|---|"]
    for r in rows:
        if "latent_variety" in r:
            lv = r["latent_variety"]
            lines.append(f"| {r['name']} | {lv['pixel_std_ratio']:.2f} | {lv['feature_distance_ratio']:.2f} |")
    table = "\n".join(lines)
    print(table)
    if ceiling.get("ap50"):
        print("AP50 ratio to real: " + ", ".join(f"{r['name']} {r['ap50'] / ceiling['ap50']:.3f}" for r in rows[:-2]))
    if a.md:
        Path(a.md).write_text(table + "\n")
    if a.grid and models:
        sample_grid(models[0][1], a.grid, a.seed, options=models[0][2])
        print(f"grid: {a.grid}")


if __name__ == "__main__":
    main()
