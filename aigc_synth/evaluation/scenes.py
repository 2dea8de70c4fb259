"""``aigc-synth evaluate`` on traffic scenes: distribution distances, counts and simulated realism.

The **source** is a scene job's output or a scene checkpoint (sampled ``n_per_condition`` scenes
per road kind x traffic level x lane count it was trained on). The **reference** is held-out SUMO ground truth:
``scene_reference=DIR`` (e.g. ``scripts/build_scene_dataset.py --split heldout --scenes-per-run 5``),
or, by default, scenes simulated here from seeds no training split uses, :data:`EVAL_SCENES_PER_RUN`
per SUMO run; the **floor** is a second, independent SUMO set (``scene_floor=DIR`` or simulated), so
every distance is read against what two samples of the real process differ by
(:func:`aigc_synth.metrics.scenes.compare_scene_sets`). ``scripts/bench_scenes.py`` is this
evaluation run on several models against the same two folders. Reference and
floor hold the same road kinds, traffic levels and lane counts as the source. With more than one
road kind the figures are given pooled (top level) and per kind (``by_road``).

**Simulated realism**: ``replay_scenes`` scenes of each set are driven for 10 s in SUMO
(:func:`aigc_synth.scenes.replay.replay_scene`) on the Ray pool - one task per chunk, each worker
process with its own libsumo - giving the collision, hard-braking and low-TTC shares, and on merge
roads the share of ramp vehicles that merge before their acceleration lane ends; per road kind too
(``replay_by_road``) when there is more than one. Merge completion is also measured on **every** merge
scene of each set (``replay_merges``; ``replay_all_merges=false`` skips it): the replay sample holds too
few ramp vehicles to decide a share to within 0.05.

Writes ``metrics.json`` (last: its presence means the evaluation finished), ``report.md`` and
plots (feature histograms, bird's-eye samples of both sets).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from aigc_synth.errors import EvaluationError
from aigc_synth.scenes.format import Scene, SceneError, road_kind_problems

REFERENCE_SEED_SPLIT, FLOOR_SEED_SPLIT = "eval_reference", "eval_floor"
REPLAY_CHUNK = 20  # scenes per Ray task (a libsumo reload is ~10 ms, a task round trip more)
# Scenes cut from one SUMO run in a simulated reference or floor. A run's scenes share its density and speed
# limit, so a set of few long runs is one noisy draw: with 20 per run (900 scenes, 45 runs) two independent
# sets differed by up to 11x "the floor" on gaps and 3.9x on speeds, and one model scored 2.2x-5.5x on
# relative speed against different draws; with 5 per run the floor-vs-floor ratios stay within 0.5-1.8x
# (docs/benchmarks.md, "Scene figures": why the benchmark and evaluate disagreed).
EVAL_SCENES_PER_RUN = 5


def _generated(cfg) -> tuple[list[Scene], dict[str, Any]]:
    from aigc_synth.scenes.dataset import read_scenes
    from aigc_synth.models.scene_families import load_scene_generator, resolve_scene_checkpoint

    path = Path(cfg.source)
    if (path / "manifest.json").is_file():
        manifest = json.loads((path / "manifest.json").read_text())
        scenes = read_scenes(path, cfg.max_samples)
        return scenes, {"kind": "job_output", "path": str(path), "model_id": manifest["model_id"],
                        "family": manifest["model"]["family"], "n": len(scenes)}
    ckpt = resolve_scene_checkpoint(None if cfg.source in ("default_scenes", "bundled_scenes") else cfg.source)
    gen = load_scene_generator(ckpt)
    cells = [(r, t, n) for r in gen.roads for t in gen.traffic for n in gen.lanes if not road_kind_problems(r, n)]
    roads = [r for r, _, _ in cells for _ in range(cfg.n_per_condition)]
    traffic = [t for _, t, _ in cells for _ in range(cfg.n_per_condition)]
    lanes = [n for _, _, n in cells for _ in range(cfg.n_per_condition)]
    from aigc_synth.seeds import attempt_seeds

    ids = np.arange(len(traffic))
    t0 = time.perf_counter()
    scenes = gen.sample(traffic, lanes, attempt_seeds(cfg.seed, ids).tolist(), ids.tolist(), roads=roads)
    rate = len(scenes) / max(time.perf_counter() - t0, 1e-9)
    return scenes, {"kind": "checkpoint", "path": str(ckpt), "model_id": gen.model_id, "family": gen.family, "n": len(scenes),
                    "sampling_scenes_per_s": round(rate, 1)}


def _ray_map(fn: Callable, items: list) -> list:
    """``[fn(x) for x in items]`` as Ray tasks, results in order (the pool of the running Ray)."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=1)(fn)
    return ray.get([task.remote(x) for x in items])


def _replay_chunk(scenes: list[Scene]) -> list[dict[str, Any]]:
    from aigc_synth.scenes.replay import replay_scene

    return [replay_scene(sc) for sc in scenes]


def replay_on_ray(scenes: Sequence[Scene], chunk: int = REPLAY_CHUNK) -> list[dict[str, Any]]:
    """:func:`replay_scene` of every scene, fanned out over the Ray pool in chunks (results in order)."""
    chunks = [list(scenes[i:i + chunk]) for i in range(0, len(scenes), chunk)]
    return [r for part in _ray_map(_replay_chunk, chunks) for r in part]


def _cell_counts(scenes: Sequence[Scene]) -> tuple[list[str], list[int], list[str], int]:
    from aigc_synth.scenes.format import ROAD_KINDS, TRAFFIC_LEVELS

    traffic = [t for t in TRAFFIC_LEVELS if any(sc.traffic == t for sc in scenes)]
    lanes = sorted({sc.num_lanes for sc in scenes})
    roads = [r for r in ROAD_KINDS if any(sc.road.kind == r for sc in scenes)]
    per_cell = max(1, len(scenes) // max(len(traffic) * len(lanes) * len(roads), 1))
    return traffic, lanes, roads, per_cell


def _reference(path: str | None, split: str, traffic: list[str], lanes: list[int], roads: list[str], per_cell: int, seed: int
               ) -> tuple[list[Scene], dict]:
    from aigc_synth.scenes.dataset import read_scenes, split_seed
    from aigc_synth.scenes.sumo import SimOptions
    from aigc_synth.scenes.sumo_dataset import sumo_scene_dataset

    if path:
        scenes = [sc for sc in read_scenes(path) if sc.traffic in traffic and sc.num_lanes in lanes and sc.road.kind in roads]
        missing = sorted(set(roads) - {sc.road.kind for sc in scenes})
        if not scenes or missing:
            raise EvaluationError(f"{path} holds no scenes of the evaluated cells ({traffic} x {lanes} lanes on "
                                  f"{missing or roads} roads)")
        return scenes, {"kind": "folder", "path": path, "n": len(scenes)}
    ds_seed = split_seed(seed, split)
    scenes = sumo_scene_dataset(per_cell * len(traffic) * len(lanes) * len(roads), ds_seed, traffic, lanes, map_runs=_map_runs,
                                road_kinds=roads, options=SimOptions(scenes_per_run=EVAL_SCENES_PER_RUN))
    return scenes, {"kind": "sumo", "seed": ds_seed, "split": split, "n": len(scenes), "scenes_per_run": EVAL_SCENES_PER_RUN}


def _map_runs(fn: Callable, jobs: list) -> list:
    return _ray_map(fn, jobs)


def evaluate_scenes(cfg, progress: bool = True, log: Callable[..., None] = print) -> dict[str, Any]:
    """Evaluate a scene source (see the module docstring); return metrics.json's dict."""
    from aigc_synth.io.atomic import atomic_write_json
    from aigc_synth.runtime.cluster import connect_ray
    from aigc_synth.metrics.scenes import compare_scene_sets, replay_summary

    if cfg.n_per_condition < 2 or cfg.max_samples < 2:
        raise EvaluationError("n_per_condition and max_samples must be at least 2")
    if cfg.replay_scenes < 0:
        raise EvaluationError(f"replay_scenes must be >= 0, got {cfg.replay_scenes}")
    out = Path(cfg.out_dir)
    if (out / "metrics.json").exists() and not cfg.overwrite:
        raise EvaluationError(f"{out} already holds an evaluation (metrics.json); choose another out_dir or pass overwrite=true")
    for key in ("scene_reference", "scene_floor"):
        if getattr(cfg, key) and not Path(getattr(cfg, key)).exists():
            raise EvaluationError(f"{key}={getattr(cfg, key)}: no such file or directory")
    needs_sumo = cfg.replay_scenes > 0 or not (cfg.scene_reference and cfg.scene_floor)
    if needs_sumo and any(importlib.util.find_spec(m) is None for m in ("libsumo", "sumo")):
        raise EvaluationError("scene evaluation simulates and replays scenes in SUMO, which is not installed: "
                              "pip install 'aigc_synth[sim]' (or give scene_reference=, scene_floor= and replay_scenes=0)")
    t0 = time.perf_counter()
    try:
        generated, source = _generated(cfg)
    except SceneError as exc:
        raise EvaluationError(str(exc)) from None
    traffic, lanes, roads, per_cell = _cell_counts(generated)
    connect_ray(None, None)  # RAY_ADDRESS if set, else a local instance: the replays' pool
    cells = len(traffic) * len(lanes) * len(roads)
    log(f"{len(generated)} generated scenes; reference and floor: SUMO, {per_cell} per cell x {cells} cells ({', '.join(roads)} roads)")
    real, ref_info = _reference(cfg.scene_reference, REFERENCE_SEED_SPLIT, traffic, lanes, roads, per_cell, cfg.seed)
    floor, floor_info = _reference(cfg.scene_floor, FLOOR_SEED_SPLIT, traffic, lanes, roads, per_cell, cfg.seed)
    result: dict[str, Any] = {"format": "aigc_synth.scene_metrics/v1", "source": source, "reference": ref_info, "floor": floor_info,
                              "road_kinds": roads}
    result.update(compare_scene_sets(generated, real, floor, seed=cfg.seed))
    if len(roads) > 1:
        of = lambda scs, r: [sc for sc in scs if sc.road.kind == r]  # noqa: E731
        result["by_road"] = {r: compare_scene_sets(of(generated, r), of(real, r), of(floor, r), seed=cfg.seed) for r in roads}
    if cfg.replay_scenes:
        log(f"replaying {cfg.replay_scenes} scenes of each set in SUMO for 10 s (Ray tasks)")
        pick = lambda scs: list(scs)[:: max(1, len(scs) // cfg.replay_scenes)][: cfg.replay_scenes]  # noqa: E731
        sets = (("generated", generated), ("real", real), ("real_floor", floor)) if cfg.replay_real else (("generated", generated),)
        replays = {name: (picked := pick(scs), replay_on_ray(picked)) for name, scs in sets}
        result["replay"] = {name: replay_summary(res) for name, (_, res) in replays.items()}
        if len(roads) > 1:
            result["replay_by_road"] = {r: {name: replay_summary([x for sc, x in zip(scs, res) if sc.road.kind == r])
                                            for name, (scs, res) in replays.items()} for r in roads}
        if cfg.replay_all_merges and "merge" in roads:
            full = dict(sets)
            log("replaying every merge scene of each set for merge completion")
            result["replay_merges"] = {name: replay_summary(_replay_merges(full[name], picked, res))
                                       for name, (picked, res) in replays.items()}
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)
    result = _clean(result)
    out.mkdir(parents=True, exist_ok=True)
    write_scene_report(out, result, generated, real)
    atomic_write_json(out / "metrics.json", result)
    return result


def _replay_merges(scenes: Sequence[Scene], picked: Sequence[Scene], picked_results: Sequence[dict]) -> list[dict]:
    """Replay results of every merge scene in ``scenes``, reusing those of the ones already replayed (``picked``)."""
    done = {id(sc): r for sc, r in zip(picked, picked_results)}
    merges = [sc for sc in scenes if sc.road.kind == "merge"]
    fresh = iter(replay_on_ray([sc for sc in merges if id(sc) not in done]))
    return [done[id(sc)] if id(sc) in done else next(fresh) for sc in merges]


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4f}"


def _hard_braking(replay: dict[str, Any]) -> str:
    """Share, count and 95 % interval: at a few in 10,000 the count says more than the share."""
    if "hard_braking_vehicles" not in replay:  # a summary written before the count was kept
        return _fmt(replay["hard_braking_share"])
    low, high = replay["hard_braking_share_95"]
    return f"{_fmt(replay['hard_braking_share'])} ({replay['hard_braking_vehicles']}; 95 % {_fmt(low)}–{_fmt(high)})"


def write_scene_report(out: Path, result: dict[str, Any], generated: Sequence[Scene], real: Sequence[Scene]) -> None:
    """``report.md`` + ``features.png`` (histograms, generated vs real) + ``samples.png`` (bird's-eye)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from aigc_synth.io.atomic import atomic_write_with
    from aigc_synth.metrics.scenes import FEATURES, scene_features
    from aigc_synth.scenes.bev import bev_grid
    from aigc_synth.scenes.format import ROAD_KINDS

    gf, rf = scene_features(generated), scene_features(real)
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, name in zip(axes.flat, FEATURES):
        lo, hi = np.percentile(np.concatenate([rf[name], gf[name]]), [0.5, 99.5]) if len(rf[name]) else (0, 1)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
        ax.hist(rf[name], bins=bins, density=True, alpha=0.5, label="real (SUMO)")
        ax.hist(gf[name], bins=bins, density=True, alpha=0.5, label="generated")
        f = result["features"][name]
        ax.set_title(f"{name}: MMD {f['mmd']:.4f} (floor {f['floor']:.4f})" if f["mmd"] is not None else name, fontsize=9)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    atomic_write_with(out / "features.png", lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
    rows = []
    for group in (generated, real):
        by_cell: dict[tuple, list[Scene]] = {}
        for sc in group:
            by_cell.setdefault((ROAD_KINDS.index(sc.road.kind), sc.traffic, sc.num_lanes), []).append(sc)
        kinds = sorted({k[0] for k in by_cell})
        per_kind = max(1, 9 // len(kinds))  # up to 9 rows per set, each road kind shown
        rows += [by_cell[k][:2] for kind in kinds for k in sorted(k for k in by_cell if k[0] == kind)[:per_kind]]
    grid = bev_grid(rows, columns=2)
    atomic_write_with(out / "samples.png", lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
    lines = [f"# Scene evaluation: {result['source'].get('family')} {result['source'].get('model_id', '')[:12]}", "",
             f"{result['scenes']['generated']} generated vs {result['scenes']['real']} real (SUMO) scenes; floor = "
             f"{result['scenes']['real_floor']} other SUMO scenes. MMD: biased estimator, Gaussian kernels, bandwidths from the real set.",
             "", "| feature | MMD | floor | ratio | bandwidths |", "|---|---|---|---|---|"]
    for name, f in result["features"].items():
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"| {name} | {fmt(f['mmd'])} | {fmt(f['floor'])} | {fmt(f['ratio'])} | "
                     f"{', '.join(f'{h:.3g}' for h in f['bandwidths'])} |")
    ca = result["count_accuracy"]
    lines += ["", f"Count accuracy (1 - relative error of the mean count per traffic x lanes cell): {ca['accuracy']:.3f} "
                  f"(floor {result['count_accuracy_floor']['accuracy']:.3f}); in the real 95 % range: {ca['in_range']:.3f}",
              f"Overlap rate at t = 0: generated {result['overlap_rate']['generated']:.4f}, real {result['overlap_rate']['real']:.4f}"]
    if "by_road" in result:
        lines += ["", "Per road kind (MMD as a multiple of the floor; count accuracy; overlap rate generated / real):", "",
                  "| road | " + " | ".join(result["features"]) + " | count accuracy (floor) | overlap |",
                  "|---|" + "---|" * (len(result["features"]) + 2)]
        for road, r in result["by_road"].items():
            ratios = " | ".join("n/a" if f["ratio"] is None else f"{f['ratio']:.2f}x" for f in r["features"].values())
            lines.append(f"| {road} | {ratios} | {r['count_accuracy']['accuracy']:.3f} ({r['count_accuracy_floor']['accuracy']:.3f}) | "
                         f"{r['overlap_rate']['generated']:.4f} / {r['overlap_rate']['real']:.4f} |")
    if "replay" in result:
        lines += ["", "| replay (10 s in SUMO) | road | scenes | vehicles | collision share | hard braking share | min TTC < 0.95 s "
                  "| merge completion |", "|---|---|---|---|---|---|---|---|"]
        groups = [("all", result["replay"])] + list(result.get("replay_by_road", {}).items())
        for road, replay in groups:
            for name, r in replay.items():
                merged = "n/a" if r.get("merge_completion") is None else f"{r['merge_completion']:.3f}"
                lines.append(f"| {name} | {road} | {r['scenes']} | {r['vehicles']} | {_fmt(r['collision_share'])} | "
                             f"{_hard_braking(r)} | {_fmt(r['low_ttc_share'])} | {merged} |")
    if "replay_merges" in result:
        lines += ["", "Merge completion on every merge scene (ramp vehicles at t = 0 that reach the main road before their "
                  "acceleration lane ends; 10 s replay, 95 % Wilson interval):", "",
                  "| set | merge scenes | ramp vehicles | merged | share (95 %) |", "|---|---|---|---|---|"]
        for name, r in result["replay_merges"].items():
            low, high = r["merge_completion_95"] or (None, None)
            share = "n/a" if r["merge_completion"] is None else f"{r['merge_completion']:.3f} ({_fmt(low)}–{_fmt(high)})"
            lines.append(f"| {name} | {r['scenes']} | {r['ramp_vehicles']} | {r['merged_vehicles']} | {share} |")
    lines += ["", "![features](features.png)", "", "Top: generated, bottom: real.", "", "![samples](samples.png)", ""]
    atomic_write_with(out / "report.md", lambda tmp: Path(tmp).write_text("\n".join(lines)))
