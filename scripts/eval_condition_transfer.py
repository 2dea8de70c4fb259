#!/usr/bin/env python
"""Issue 28's measurement where truth exists: re-weathering held-out renders with a layout model trained
from a BDD100K export of renders (no scene objects), beside the same model trained from scene objects
and a COCO-boxes-only run.

    python scripts/eval_condition_transfer.py export   --train-scenes data/scenes/transfer_train_3000 \\
        --heldout-scenes data/scenes/heldout_transfer --work runs/transfer_data
    python scripts/eval_condition_transfer.py commands --work runs/transfer_data --steps 600     # the 3 trainings
    python scripts/eval_condition_transfer.py commands --work runs/transfer_data --steps 600 --run A     # then B, C
    python scripts/eval_condition_transfer.py evaluate --work runs/transfer_data --frames 200 --jobs-dir runs/transfer_data/jobs_spread200 \\
        --model "A scenes=runs/transfer_A_scenes/generator.pt" \\
        --model "B bdd100k export=runs/transfer_B_bdd100k/generator.pt" \\
        --model "C coco boxes=runs/transfer_C_coco/generator.pt@coco" \\
        --model "bundled layout_gan (scene-trained, reference)=default@scene" \\
        --json docs/data/condition_transfer.json --md /tmp/condition_transfer.md --grid /tmp/condition_transfer.png

Rerunnable: the exports, each model's transfer job (``WORK/jobs/<name>``) and the scene-path images are
reused when they exist; only the scoring runs again.

**Training sets** (``export``). Model A trains with ``data.source=scenes`` on ``--train-scenes``
(:class:`~aigc_synth.data.scene_images.SceneImageDataset`: item ``i`` is a random scene under a weather
and time of day drawn uniformly per item). Model B trains from ``work/train_bdd100k`` alone: scene ``k`` of
the same list rendered ONCE, under the weather / time of day and cosmetic seed that SceneImageDataset
(seed ``--train-seed``) draws for item ``k`` (same rule, same streams; a real data set has one photo per
scene, so B sees each scene under one condition where A sees it under a fresh one every time it is
drawn), written by :func:`~aigc_synth.data.bdd100k.write_scene_frames` (PNG images, boxes, weather /
timeofday / traffic attributes, ``lanes.json``, ``drivable.json``). Model C trains from the same images
and boxes as COCO ``instances.json`` (:func:`~aigc_synth.data.annotated_images.bdd100k_boxes_to_coco`:
no lanes, no drivable area).

**Source frames**: the held-out scenes rendered in clear / day, exported the same way
(``work/heldout_clear_day``, and its COCO version for model C). **Re-weathering** (``evaluate``): for
each model the real condition-transfer job (``aigc_synth.jobs.generate.run_generation``, Ray with
``ray.num_cpus=1``, one actor) draws every source frame under every other weather × time-of-day cell
(14 cells; traffic is the frame's own): ``job.layouts`` = the BDD100K export (+ lanes + drivable) for
A and B, the COCO export with ``job.layouts_unknown_as_zero=true`` for a model marked ``@coco``.
**Truth**: the renderer's picture of the same scene under the requested condition (cosmetic seeds of
:data:`~aigc_synth.evaluation.layout.REFERENCE_SCENE_SEED`). Scores, as in
:mod:`aigc_synth.evaluation.layout_table`: the scene classifier's condition accuracy against the
requested condition and FD / recall / coverage in its feature space against the truth renders; the
vehicle detector's layout AP50 against the source boxes (the job rows' ``boxes``, with their
``visible``). Extra rows: model A through the ordinary scene path (the same scenes' layouts from scene
objects, same conditions and latent seeds) and a second render of the truth (the ceiling).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from aigc_synth.schema import DEFAULT_SCHEMA

#: cosmetic seeds of the held-out clear/day source frames (independent of the truth renders')
SOURCE_SEED = 424_242
SOURCE_CONDITION = {"weather": "clear", "time_of_day": "day"}
RESOLUTION = 64


def transfer_cells(schema=DEFAULT_SCHEMA) -> list[dict[str, str]]:
    """Every weather × time-of-day cell of the schema except the source frames' clear / day, schema order."""
    return [{"weather": w, "time_of_day": t} for w in schema.values("weather") for t in schema.values("time_of_day")
            if {"weather": w, "time_of_day": t} != SOURCE_CONDITION]


def training_conditions(n: int, seed: int, scenes) -> tuple[list[dict[str, str]], np.ndarray]:
    """The weather / time of day and cosmetic seed :class:`SceneImageDataset` (seed ``seed``) draws for
    items ``0 .. n-1``, used for scene ``k`` = item ``k`` (see the module docstring)."""
    from aigc_synth.data.scene_images import SceneImageDataset

    codes, seeds, _ = SceneImageDataset(scenes, seed=seed, resolution=RESOLUTION).items(np.arange(n))
    decoded = [DEFAULT_SCHEMA.decode(c) for c in codes]
    return [{"weather": d["weather"], "time_of_day": d["time_of_day"]} for d in decoded], seeds


def export(train_scenes: str, heldout_scenes: str, work: Path, train_seed: int = 0, limit: int | None = None,
           heldout_limit: int | None = None, renders_per_scene: int = 1) -> dict:
    """Write ``work/train_bdd100k`` (+ ``instances.json``) and ``work/heldout_clear_day`` (+ ``instances.json``)
    unless they exist; return their description (also ``work/export.json``). ``renders_per_scene`` R > 1
    exports every training scene R times: frame ``k + r·N`` is scene ``k`` under item ``k + r·N``'s draw
    (the data-amount control: R × more photos of the same scenes)."""
    from aigc_synth.data.annotated_images import bdd100k_boxes_to_coco
    from aigc_synth.data.bdd100k_fixtures import write_scene_frames
    from aigc_synth.scenes.dataset import read_scenes
    from aigc_synth.seeds import derive_seeds

    work.mkdir(parents=True, exist_ok=True)
    desc_path = work / "export.json"
    if desc_path.is_file():
        return json.loads(desc_path.read_text())
    t0 = time.perf_counter()
    if renders_per_scene < 1:
        raise ValueError(f"renders_per_scene must be >= 1, got {renders_per_scene}")
    train = read_scenes(train_scenes, limit) * renders_per_scene
    conds, seeds = training_conditions(len(train), train_seed, train)
    write_scene_frames(work / "train_bdd100k", train, conds, seeds, RESOLUTION)
    bdd100k_boxes_to_coco(work / "train_bdd100k" / "labels.json", work / "train_bdd100k" / "instances.json", RESOLUTION, RESOLUTION)
    held = read_scenes(heldout_scenes, heldout_limit)
    write_scene_frames(work / "heldout_clear_day", held, [SOURCE_CONDITION] * len(held),
                       derive_seeds(SOURCE_SEED, np.arange(len(held))), RESOLUTION)
    bdd100k_boxes_to_coco(work / "heldout_clear_day" / "labels.json", work / "heldout_clear_day" / "instances.json",
                          RESOLUTION, RESOLUTION)
    from collections import Counter

    desc = {"train_scenes": train_scenes, "num_train": len(train), "train_seed": train_seed,
            **({"renders_per_scene": renders_per_scene} if renders_per_scene > 1 else {}),
            "train_conditions": dict(Counter(f"{c['weather']}/{c['time_of_day']}" for c in conds)),
            "heldout_scenes": heldout_scenes, "num_heldout": len(held), "source_condition": SOURCE_CONDITION,
            "elapsed_s": round(time.perf_counter() - t0, 1)}
    desc_path.write_text(json.dumps(desc, indent=1) + "\n")
    return desc


def train_commands(work: Path, train_scenes: str, steps: int, batch_size: int = 32, seed: int = 0,
                   out_prefix: str = "runs/transfer") -> dict[str, list[str]]:
    """The three trainings, same budget (``aigc-synth train`` argument lists)."""
    d = work / "train_bdd100k"
    common = ["model=layout_gan", f"train.steps={steps}", f"train.batch_size={batch_size}", f"train.seed={seed}",
              "train.threads=1", "train.eval_every=0"]
    return {"A": common + ["data.source=scenes", f"data.scenes={train_scenes}", f"train.out_dir={out_prefix}_A_scenes"],
            "B": common + ["data.source=bdd100k", f"data.images={d / 'images'}", f"data.labels={d / 'labels.json'}",
                           f"data.lanes={d / 'lanes.json'}", f"data.drivable={d / 'drivable.json'}",
                           f"train.out_dir={out_prefix}_B_bdd100k"],
            "C": common + ["data.source=coco", f"data.images={d / 'images'}", f"data.labels={d / 'instances.json'}",
                           f"train.out_dir={out_prefix}_C_coco"]}


def source_frames(work: Path, frames: int | None = None) -> Path:
    """The held-out source frames' label files: ``work/heldout_clear_day``, or with ``frames`` an evenly
    spaced subset of ``frames`` of them (frame ``floor(i * F / frames)``; a scene folder is written in
    traffic-level blocks, so the first N would miss the heavy scenes): labels, lanes, drivable areas and
    COCO instances in ``work/heldout_spread<frames>`` (images read from ``heldout_clear_day/images``)."""
    src = work / "heldout_clear_day"
    if frames is None:
        return src
    sub = work / f"heldout_spread{frames}"
    if not (sub / "instances.json").is_file():
        sub.mkdir(parents=True, exist_ok=True)
        total = len(json.loads((src / "labels.json").read_text()))
        keep_idx = sorted({int(i * total // frames) for i in range(min(frames, total))})
        for name in ("labels.json", "lanes.json", "drivable.json"):
            items = json.loads((src / name).read_text())
            (sub / name).write_text(json.dumps([items[i] for i in keep_idx], indent=1) + "\n")
        doc = json.loads((src / "instances.json").read_text())
        doc["images"] = [doc["images"][i] for i in keep_idx]
        keep = {im["id"] for im in doc["images"]}
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
        (sub / "instances.json").write_text(json.dumps(doc, indent=1) + "\n")
    return sub


def run_transfer_job(checkpoint: str, work: Path, out: Path, coco: bool, seed: int = 0, num_cpus: int = 1,
                     frames: int | None = None) -> tuple[list[dict], float]:
    """The condition-transfer job of ``checkpoint`` on the held-out source frames (every cell of
    :func:`transfer_cells`); return its rows sorted by sample id and the job's wall time (0 when reused)."""
    import pyarrow.parquet as pq

    from aigc_synth.config import compose
    from aigc_synth.jobs.generate import run_generation

    src = source_frames(work, frames)
    elapsed = 0.0
    if not (out / "manifest.json").is_file():
        items = ",".join(f"{{conditions:{{weather:{c['weather']},time_of_day:{c['time_of_day']}}}}}" for c in transfer_cells())
        layouts = ([f"job.layouts={src / 'instances.json'}", "job.layouts_unknown_as_zero=true"] if coco else
                   [f"job.layouts={src / 'labels.json'}", f"job.layouts_lanes={src / 'lanes.json'}",
                    f"job.layouts_drivable={src / 'drivable.json'}", f"job.layouts_images={work / 'heldout_clear_day' / 'images'}"])
        cfg = compose("generate", [f"output_dir={out}", f"job.checkpoint={checkpoint}", *layouts, f"job.seed={seed}",
                                   "job.plan.kind=list", f"job.plan.items=[{items}]", "preview=false",
                                   f"ray.num_cpus={num_cpus}", "resources.actors=1"])
        t = time.perf_counter()
        run_generation(cfg, progress=False)
        elapsed = time.perf_counter() - t
    rows = pq.read_table(out / "parquet").to_pylist()
    return sorted(rows, key=lambda r: r["sample_id"]), elapsed


def decode(rows: list[dict]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB")) for r in rows])


def evaluate(models: list[tuple[str, str, bool, bool]], work: Path, jobs_dir: Path, seed: int = 0, grid: str | None = None,
             frames: int | None = None, log=print) -> dict:
    """Score every model's re-weathered held-out frames against the truth renders (module docstring)."""
    import torch

    from aigc_synth.evaluation.evaluate import compute_metrics, score_images
    from aigc_synth.evaluation.layout import SCENE_CLASSIFIER, layout_images, scene_reference
    from aigc_synth.evaluation.layout_table import SECOND_RENDER_SEED, load_generator_with_options
    from aigc_synth.metrics.distribution import real_sample_hits  # noqa: F401 (same radii as the layout table)
    from aigc_synth.metrics.domain import load_domain_classifier
    from aigc_synth.metrics.layout import load_vehicle_detector, score_layout
    from aigc_synth.scenes.dataset import read_scenes
    from aigc_synth.seeds import LATENT_STREAM, derive_seeds

    torch.set_num_threads(1)
    schema = DEFAULT_SCHEMA
    desc = json.loads((work / "export.json").read_text())
    held = read_scenes(desc["heldout_scenes"], desc["num_heldout"])
    names = {f["name"]: i for i, f in enumerate(json.loads((work / "heldout_clear_day" / "labels.json").read_text()))}
    classifier = load_domain_classifier(SCENE_CLASSIFIER)
    detector = load_vehicle_detector(None)
    result: dict = {"protocol": {**desc, "frames": frames or desc["num_heldout"], "cells": transfer_cells(), "job_seed": seed,
                                 "classifier": classifier.classifier_id, "detector": detector.detector_id}, "rows": []}
    ref = None
    outputs: dict[str, np.ndarray] = {}
    for n_model, (name, path, coco, scene_path) in enumerate(models):
        t0 = time.perf_counter()
        slug = "".join(ch if ch.isalnum() else "_" for ch in name)
        rows, job_s = run_transfer_job(path, work, jobs_dir / slug, coco, seed, frames=frames)
        if ref is None:  # the protocol's samples (identical for every model: same frames, same cells)
            frame_of = [names[r["source_frame"]] for r in rows]
            codes = np.stack([schema.encode({f: r[f] for f in schema.names}) for r in rows]).astype(np.int64)
            scenes = [held[k] for k in frame_of]
            boxes = [np.array([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in r["boxes"]], np.float32).reshape(-1, 4) for r in rows]
            visible = [np.array([b["visible"] for b in r["boxes"]], np.float32) for r in rows]
            ref, _, _ = scene_reference(scenes, codes, schema, RESOLUTION)
            ref_scores = score_images(classifier, ref, "score truth", False)
            key = [(r["source_frame"], r["weather"], r["time_of_day"]) for r in rows]
        else:
            mine = [(r["source_frame"], r["weather"], r["time_of_day"]) for r in rows]
            if mine != key or not all(np.array_equal(schema.encode({f: r[f] for f in schema.names}), c) for r, c in zip(rows, codes)):
                raise SystemExit(f"{name}: the job's samples differ from the first model's (frames / cells / traffic)")
        images = decode(rows)
        outputs[name] = images

        def score(row_name: str, imgs: np.ndarray, extra: dict) -> dict:
            s = score_images(classifier, imgs, f"score {row_name}", False)
            m = compute_metrics(codes, s, codes, ref_scores, schema)
            lay = score_layout(detector, imgs, boxes, visible)
            # the floor: sample i scored against the previous frame's boxes under the same cell (rows are frame-major)
            rolled = [int(j) for j in np.roll(np.arange(len(boxes)), len(transfer_cells()))]
            floor = score_layout(detector, imgs, [boxes[j] for j in rolled], [visible[j] for j in rolled])
            acc = m["overall"]["condition_accuracy"]
            r = {"name": row_name, **extra, "ap50": lay["ap50"], "box_recall": lay["recall"],
                 "ap50_shuffled": floor["ap50"],
                 "coverage": m["overall"]["coverage"], "recall": m["overall"]["recall"],
                 "precision": m["overall"]["precision"], "fd": m["overall"]["fd"], "kid": m["overall"]["kid"],
                 "condition_accuracy": acc, "condition_accuracy_wt": (acc["weather"] + acc["time_of_day"]) / 2,
                 "condition_accuracy_all": m["overall"]["condition_accuracy_all_factors"],
                 "per_condition_accuracy": m["per_condition"] if "per_condition" in m else None}
            log(json.dumps({k: v for k, v in r.items() if k != "per_condition_accuracy"}, default=float))
            return r

        gen = load_generator_with_options(path)
        result["rows"].append(score(name, images, {"path": path, "layouts": "COCO export (boxes only)" if coco else
                                                   "BDD100K export (boxes + lanes + drivable)", "job_s": round(job_s, 1),
                                                   "step": gen.meta.get("step"), "model_id": gen.model_id[:12]}))
        if n_model == 0 or scene_path:  # the first model (A) also through the ordinary scene path, same samples
            seeds = np.array([r["seed"] for r in rows], np.int64) if "seed" in rows[0] else \
                derive_seeds(seed, np.array([r["sample_id"] for r in rows]), stream=LATENT_STREAM)
            cache = jobs_dir / f"{slug}_scene_layouts.npy"  # reused by a rerun, like the jobs
            if cache.is_file():
                scene_imgs = np.load(cache)
            else:
                scene_imgs = layout_images(gen, scenes, codes, seeds)
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.save(cache, scene_imgs)
            outputs[f"{name} (scene layouts)"] = scene_imgs
            result["rows"].append(score(f"{name} via scene layouts", scene_imgs, {"path": path, "layouts": "scene objects"}))
        log(f"{name}: {time.perf_counter() - t0:.1f} s")
    real2, _, _ = scene_reference(scenes, codes, schema, RESOLUTION, seed=SECOND_RENDER_SEED)
    result["rows"].append(score("real (second render of the truth)", real2, {"layouts": "renderer"}))
    first = result["rows"][0]
    for r in result["rows"]:
        r["ratio_to_first"] = {k: (r[k] / first[k] if first[k] else None) for k in ("ap50", "coverage", "condition_accuracy_wt")}
    if grid:
        write_grid(grid, work, rows, ref, outputs, [m[0] for m in models])
    return result


def write_grid(path: str, work: Path, rows: list[dict], truth: np.ndarray, outputs: dict[str, np.ndarray],
               model_names: list[str], frames: int = 6, cells=(("fog", "day"), ("snow", "dusk"), ("rain", "night"), ("clear", "night"))) -> None:
    """Per source frame (a row): the source, then per cell: truth | each model's output."""
    from PIL import Image

    src_dir = work / "heldout_clear_day" / "images"
    index = {(r["source_frame"], r["weather"], r["time_of_day"]): i for i, r in enumerate(rows)}
    picked = sorted({r["source_frame"] for r in rows})[:: max(1, len({r['source_frame'] for r in rows}) // frames)][:frames]
    gap = np.full((RESOLUTION, 3, 3), 255, np.uint8)
    lines = []
    for fr in picked:
        cols = [np.asarray(Image.open(src_dir / fr).convert("RGB")), gap, gap]
        for w, t in cells:
            i = index[(fr, w, t)]
            cols += [truth[i]] + [outputs[n][i] for n in model_names] + [gap, gap]
        lines.append(np.concatenate(cols, 1))
    img = np.concatenate([np.concatenate([ln, np.full((3, ln.shape[1], 3), 255, np.uint8)], 0) for ln in lines], 0)
    Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(path)


def markdown(result: dict) -> str:
    first = result["rows"][0]["name"]
    lines = [f"| model | layouts at sampling | AP50 | AP50 floor (shuffled boxes) | coverage | recall | FD ↓ | acc. weather | acc. time | acc. traffic | "
             f"acc. (weather+time)/2 | ratio to {first}: AP50 / coverage / acc. |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        a, q = r["condition_accuracy"], r["ratio_to_first"]
        f = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731
        lines.append(f"| {r['name']} | {r['layouts']} | {r['ap50']:.3f} | {r['ap50_shuffled']:.3f} | {r['coverage']:.3f} | {r['recall']:.3f} | {r['fd']:.1f} | "
                     f"{a['weather']:.3f} | {a['time_of_day']:.3f} | {a['traffic']:.3f} | {r['condition_accuracy_wt']:.3f} | "
                     f"{f(q['ap50'])} / {f(q['coverage'])} / {f(q['condition_accuracy_wt'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--train-scenes", required=True)
    e.add_argument("--heldout-scenes", required=True)
    e.add_argument("--work", required=True)
    e.add_argument("--train-seed", type=int, default=0)
    e.add_argument("--limit", type=int, default=None, help="first N training scenes (default: all in --train-scenes)")
    e.add_argument("--heldout-limit", type=int, default=None)
    e.add_argument("--renders-per-scene", type=int, default=1,
                   help="export each training scene R times under R drawn conditions (data-amount control)")
    c = sub.add_parser("commands")
    c.add_argument("--work", required=True)
    c.add_argument("--steps", type=int, required=True)
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out-prefix", default="runs/transfer")
    c.add_argument("--run", choices=["A", "B", "C"], default=None, help="run that training now (else print all three)")
    v = sub.add_parser("evaluate")
    v.add_argument("--work", required=True)
    v.add_argument("--model", action="append", required=True,
                   help="NAME=PATH[@coco][@scene] (@coco: sampled from the COCO export; @scene: also through scene layouts, "
                        "as the first model always is; the first is the reference of the ratios)")
    v.add_argument("--jobs-dir", default=None, help="where the transfer jobs write (default: WORK/jobs); reused when finished")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--frames", type=int, default=None, help="N evenly spaced held-out frames only (default: all)")
    v.add_argument("--json", default=None)
    v.add_argument("--md", default=None)
    v.add_argument("--grid", default=None)
    a = ap.parse_args(argv)
    work = Path(a.work)
    if a.cmd == "export":
        print(json.dumps(export(a.train_scenes, a.heldout_scenes, work, a.train_seed, a.limit, a.heldout_limit,
                                a.renders_per_scene), indent=1))
    elif a.cmd == "commands":
        desc = json.loads((work / "export.json").read_text())
        cmds = train_commands(work, desc["train_scenes"], a.steps, a.batch_size, a.seed, a.out_prefix)
        if a.run:
            return subprocess.call([str(Path(sys.executable).parent / "aigc-synth"), "train", *cmds[a.run]])
        for k, args in cmds.items():
            print(f"# {k}\naigc-synth train {' '.join(args)}")
    else:
        models = []
        for spec in a.model:
            name, _, path = spec.partition("=")
            path, *opts = path.split("@")
            if set(opts) - {"coco", "scene"}:
                raise SystemExit(f"--model {spec}: options are @coco and @scene")
            models.append((name, path, "coco" in opts, "scene" in opts))
        t0 = time.perf_counter()
        result = evaluate(models, work, Path(a.jobs_dir) if a.jobs_dir else work / "jobs", a.seed, a.grid, a.frames)
        result["elapsed_s"] = round(time.perf_counter() - t0, 1)
        from aigc_synth.evaluation.evaluate import json_safe

        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(json_safe(result), indent=1) + "\n")
        md = markdown(result)
        print(md)
        if a.md:
            Path(a.md).write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
