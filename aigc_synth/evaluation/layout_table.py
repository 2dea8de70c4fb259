"""The layout-conditioning acceptance table: several generators, one evaluation, one run
(``scripts/eval_layout_models.py`` is its command line).

Every row is scored on the same ``45 × n`` samples: sample ``i`` gets condition ``i // n`` and a scene
(:func:`~aigc_synth.evaluation.layout.evaluation_scenes`, exactly as an image job with that seed picks
them). The reference is the renderer's picture of each scene under the same weather and time; the
scene domain classifier gives FD / KID / precision / recall / density / coverage and condition
accuracy (:func:`~aigc_synth.evaluation.evaluate.compute_metrics`); the vehicle detector gives layout
AP50 and box recall against each sample's requested boxes. Besides one row per model:

* ``real (second render of the same scenes)``: the same scenes rendered again with other cosmetic
  seeds, scored like a model (the real-vs-real values and the AP50 ceiling);
* the shuffled-layout floor of the first model (its images against another sample's boxes).

Each row also holds the flat-rectangle rate, the broken-image count (high-frequency energy over
:data:`BROKEN_HF_FACTOR` × the real renders' median for that weather), high-frequency and border
energy ratios (:mod:`aigc_synth.evaluation.image_statistics`), recall / coverage split by weather and
time of day, and the variety across latents for a fixed scene and condition.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from aigc_synth.data.scene_render import draw_boxes
from aigc_synth.errors import EvaluationError
from aigc_synth.evaluation.evaluate import compute_metrics, score_images
from aigc_synth.evaluation.image_statistics import BORDER_WIDTH, border_energy, group_variety, high_frequency_energy
from aigc_synth.evaluation.layout import (
    REFERENCE_SCENE_SEED,
    SCENE_CLASSIFIER,
    evaluation_scenes,
    layout_images,
    scene_reference,
)
from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema
from aigc_synth.seeds import LATENT_STREAM, derive_seeds

ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: The rows when none are given (``NAME=PATH``; a missing file is skipped by the command line).
DEFAULT_MODELS = ["layout_gan (bundled)=default", f"cgan (previous bundled)={ASSETS / 'cgan_generator.pt'}",
                  "dcgan baseline (scene renders)=runs/dcgan_scenes/generator.pt"]
SECOND_RENDER_SEED = REFERENCE_SCENE_SEED + 1
VARIETY_REAL_SEED = REFERENCE_SCENE_SEED + 2
VARIETY_LATENTS = 8  # images per (scene, condition) group in the variety measurement
VARIETY_STEP = 50  # every 50th evaluated sample's scene and condition forms a group (90 groups at n = 100)
BROKEN_HF_FACTOR = 3.0  # an image with this many times the real median high-frequency energy is garbled
#: The resolution of the scene renders the table scores (the scene classifier's and the detector's).
RESOLUTION = 64

ModelSpec = tuple[str, str, dict[str, Any]]


# ------------------------------------------------------------------------------------------------
# the models
# ------------------------------------------------------------------------------------------------
def parse_model_spec(spec: str) -> ModelSpec:
    """``NAME=PATH`` with optional ``@psi=X`` and ``@particles=on|off`` (layout_gan) or ``@steps=N`` and
    ``@guidance=G`` (layout_diffusion) → (name, path, sampling options; empty for the checkpoint's own).
    A malformed spec raises :class:`EvaluationError`."""
    try:
        name, path = spec.split("=", 1)
        path, *opts = path.split("@")
        options: dict[str, Any] = {}
        for opt in opts:
            key, _, value = opt.partition("=")
            if key == "psi" and value and 0 < float(value) <= 1:
                options["psi"] = float(value)
            elif key == "particles" and value in ("on", "off"):
                options["particles"] = value == "on"
            elif key == "steps" and value.isdigit() and int(value) >= 1:
                options["steps"] = int(value)
            elif key == "guidance" and value and float(value) >= 0:
                options["guidance"] = float(value)
            elif key in ("guidance_t_min", "guidance_t_max") and value.isdigit():
                options[key] = int(value)
            else:
                raise ValueError(opt)
    except ValueError:
        raise EvaluationError(f"model {spec!r}: NAME=PATH, options @psi=X with X in (0, 1] and @particles=on|off "
                              "(layout_gan), @steps=N, @guidance=G, @guidance_t_min=T and @guidance_t_max=T (layout_diffusion)") from None
    return name, path, options


def load_generator_with_options(path: str, options: dict[str, Any] | None = None):
    """The checkpoint at ``path`` ('default': the bundled one) with its sampling options replaced by
    ``options``' (weights unchanged): truncation ψ (``"psi"``) and particle overlay (``"particles"``) of
    layout_gan, the solver's ``"steps"`` and ``"guidance"`` of layout_diffusion."""
    from aigc_synth.models.exported import load_generator, resolve_checkpoint_path

    gen = load_generator(resolve_checkpoint_path(path))
    options = dict(options or {})
    solver = {k: options.pop(k) for k in ("steps", "guidance", "guidance_t_min", "guidance_t_max") if k in options}
    if solver:
        if not hasattr(gen.module, "configure_sampling"):
            raise EvaluationError(f"{path}: family {gen.family} has no solver options ({sorted(solver)})")
        gen.module.configure_sampling(**solver)
    if options and gen.family != "layout_gan":
        raise EvaluationError(f"{path}: family {gen.family} has no options {sorted(options)}")
    if "psi" in options:
        gen.module.truncation = options["psi"]
    if "particles" in options:
        gen.module.set_particles(options["particles"], gen.schema.factors)
    return gen


# ------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------
def layout_table(models: Sequence[ModelSpec], n_per_condition: int, seed: int = 0, scenes_dir: str | None = None,
                 progress: bool = True, log: Callable[[str], None] = print, road: str | None = None,
                 spread: bool = False) -> dict[str, Any]:
    """Score every ``(name, path, options)`` of ``models`` (see the module docstring); return the
    table as a dict (``rows``: one per model, then the second render, then the first model's
    shuffled-layout floor). Each row is logged as one JSON line when done. Values are raw floats:
    :func:`~aigc_synth.evaluation.evaluate.json_safe` makes the dict JSON-safe."""
    from aigc_synth.metrics.artifacts import flat_rectangle_rate
    from aigc_synth.metrics.distribution import real_sample_hits
    from aigc_synth.metrics.domain import load_domain_classifier
    from aigc_synth.metrics.layout import load_vehicle_detector, score_layout

    if not models:
        raise EvaluationError("no model to evaluate")
    schema = DEFAULT_SCHEMA
    combos = np.array([schema.encode(c) for c in schema.combinations()], dtype=np.int64)
    codes = np.repeat(combos, n_per_condition, axis=0)
    t0 = time.perf_counter()
    scenes, codes = evaluation_scenes(codes, seed, schema, scenes_dir, road=road, spread=spread)
    ref, boxes, visible = scene_reference(scenes, codes, schema, RESOLUTION)
    classifier = load_domain_classifier(SCENE_CLASSIFIER)
    detector = load_vehicle_detector(None)
    ref_scores = score_images(classifier, ref, "score reference", progress)
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
    v_real, _, _ = scene_reference(v_scenes, v_codes, schema, RESOLUTION, seed=VARIETY_REAL_SEED)
    real_variety = group_variety(v_real, score_images(classifier, v_real, "score variety (real)", progress).features,
                                 VARIETY_LATENTS)

    def row(name: str, images: np.ndarray, extra: dict, variety_images: np.ndarray) -> dict:
        scores = score_images(classifier, images, f"score {name}", progress)
        v = group_variety(variety_images, score_images(classifier, variety_images, f"score variety {name}", progress).features,
                          VARIETY_LATENTS)
        variety = {**v, **{f"{k}_ratio": v[k] / real_variety[k] for k in v}}
        m = compute_metrics(codes, scores, codes, ref_scores, schema)
        lay = score_layout(detector, images, boxes, visible)
        flat = flat_rectangle_rate(images)
        hf = high_frequency_energy(images)
        broken = int((hf > broken_limit).sum())
        hf_ratio = {v: float(hf[codes[:, w_col] == k].mean() / ref_hf[codes[:, w_col] == k].mean())
                    for k, v in enumerate(schema.values("weather"))}
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
             "flat_rectangles": flat["count"], "images": flat["images"], "broken_images": broken,
             "intra_kid_mean": m["overall"]["intra_kid_mean"], "confusion": m["confusion"], "high_frequency_ratio": hf_ratio,
             "border_ratio": border_ratio, "recall_coverage_by": by_condition, "latent_variety": variety}
        log(json.dumps({k: v for k, v in r.items() if k != "confusion"}, default=float))
        return r

    first_floor: dict[str, Any] = {}
    for n, (name, path, opts) in enumerate(models):
        gen = load_generator_with_options(path, opts)
        seeds = derive_seeds(seed, np.arange(len(codes)), stream=LATENT_STREAM)
        t = time.perf_counter()
        images = layout_images(gen, scenes, codes, seeds, progress=progress)
        rate = len(images) / (time.perf_counter() - t)
        v_seeds = derive_seeds(seed + 1, np.arange(len(v_codes)), stream=LATENT_STREAM)
        rows.append(row(name, images, {"path": path, "psi": getattr(gen.module, "truncation", None),
                                       "particles": getattr(gen.module, "particles", None) is not None, "family": gen.family,
                                       "model_id": gen.model_id[:12], "step": gen.meta.get("step"),
                                       "sampling_img_per_s": round(rate, 1)},
                        layout_images(gen, v_scenes, v_codes, v_seeds)))
        if n == 0:
            floor = score_layout(detector, images, [boxes[j] for j in rolled], [visible[j] for j in rolled])
            first_floor = {"name": f"{name}: shuffled layout (floor)", "ap50": floor["ap50"], "box_recall": floor["recall"]}
    real2, _, _ = scene_reference(scenes, codes, schema, RESOLUTION, seed=SECOND_RENDER_SEED)
    v_real2, _, _ = scene_reference(v_scenes, v_codes, schema, RESOLUTION, seed=VARIETY_REAL_SEED + 1)
    rows.append(row("real (second render of the same scenes)", real2, {"family": "renderer"}, v_real2))
    rows.append(first_floor)
    return {"n_per_condition": n_per_condition, "n": int(len(codes)), "seed": seed, "scenes": scenes_dir or "bundled scene model", "road": road, "spread": spread,
            "classifier": classifier.classifier_id, "detector": detector.detector_id,
            "reference_condition_accuracy": compute_metrics(codes, ref_scores, codes, ref_scores, schema)["overall"]["condition_accuracy"],
            "rows": rows, "elapsed_s": round(time.perf_counter() - t0, 1)}


def layout_table_markdown(result: dict[str, Any], schema: ConditionSchema = DEFAULT_SCHEMA) -> str:
    """The markdown tables of a :func:`layout_table` result (raw, not JSON-cleaned): the main table,
    high-frequency / border energy ratios, recall / coverage by weather and time, latent variety."""
    rows = result["rows"]
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
    groups = len(range(0, result["n"], VARIETY_STEP))
    lines += ["", f"Variety across latents for one scene and condition ({groups} groups of {VARIETY_LATENTS}; real: "
              "the same groups under other cosmetic seeds), generated ÷ real:", "",
              "| model | pixel std ratio | feature distance ratio |", "|---|---|---|"]
    for r in rows:
        if "latent_variety" in r:
            lv = r["latent_variety"]
            lines.append(f"| {r['name']} | {lv['pixel_std_ratio']:.2f} | {lv['feature_distance_ratio']:.2f} |")
    return "\n".join(lines)


def ap50_ratio_line(result: dict[str, Any]) -> str | None:
    """``AP50 ratio to real: <model> <ratio>, ...`` (each model's AP50 ÷ the second render's), or
    ``None`` when the second render's AP50 is 0 or missing."""
    rows = result["rows"]
    ceiling = rows[-2]
    if not ceiling.get("ap50"):
        return None
    return "AP50 ratio to real: " + ", ".join(f"{r['name']} {r['ap50'] / ceiling['ap50']:.3f}" for r in rows[:-2])


# ------------------------------------------------------------------------------------------------
# the sample grid
# ------------------------------------------------------------------------------------------------
def sample_grid(path: str, out: str, seed: int, columns: int = 5, scale: int = 2, options: dict[str, Any] | None = None,
                scenes_dir: str | None = None, road: str | None = None) -> None:
    """Write a sample grid of the checkpoint at ``path`` to ``out`` (PNG, or JPEG by suffix): rows =
    weather × time (one scene each, traffic from the scene), column 0 the real render, then latents;
    the right half repeats it with the requested boxes drawn (boxes the detector ignores in grey)."""
    from PIL import Image

    from aigc_synth.data.scene_render import render_scene
    from aigc_synth.metrics.layout import gt_ignore_mask

    gen = load_generator_with_options(path, options)
    schema = gen.schema
    pairs = [(w, t) for w in schema.values("weather") for t in schema.values("time_of_day")]
    traffic = schema.values("traffic")
    codes = np.array([schema.encode({"weather": w, "time_of_day": t, "traffic": traffic[(k + 1) % 3]})
                      for k, (w, t) in enumerate(pairs)])
    scenes, codes = evaluation_scenes(codes, seed + 17, schema, scenes_dir, road=road)
    seeds = derive_seeds(seed, np.arange(columns), stream=LATENT_STREAM)
    # every row in one call: the sampler pads each call to a full micro-batch, so a call per row of 5 images
    # cost a diffusion model ~6x the work (as long as the 450-image evaluation itself)
    all_fakes = layout_images(gen, [sc for sc in scenes for _ in range(columns)], np.repeat(codes, columns, 0),
                              np.tile(seeds, len(scenes)))
    rows_plain, rows_boxed = [], []
    for k, (sc, code) in enumerate(zip(scenes, codes)):
        w, t = schema.values("weather")[code[0]], schema.values("time_of_day")[code[1]]
        real = render_scene(sc, w, t, 99, gen.resolution)
        fakes = all_fakes[k * columns:(k + 1) * columns]
        ignore = gt_ignore_mask(real.boxes, real.visible, gen.resolution)
        tiles = [real.image, *fakes]
        rows_plain.append(np.concatenate([np.repeat(np.repeat(x, scale, 0), scale, 1) for x in tiles], 1))
        rows_boxed.append(np.concatenate([draw_boxes(x, real.boxes, ignore, scale) for x in tiles], 1))
    gap = np.full((len(pairs) * gen.resolution * scale, 8, 3), 255, np.uint8)
    grid = np.concatenate([np.concatenate(rows_plain, 0), gap, np.concatenate(rows_boxed, 0)], 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if out.lower().endswith((".jpg", ".jpeg")):
        Image.fromarray(grid).save(out, quality=85)
    else:
        Image.fromarray(grid).save(out)
