#!/usr/bin/env python
"""Scene generators against SUMO ground truth, per road kind: ``aigc-synth evaluate`` on each model, one table.

    python scripts/build_scene_dataset.py --num-scenes 24000 --seed 0 --out data/roads --split train --roads straight curve merge lane_drop
    python scripts/build_scene_dataset.py --num-scenes 7200 --seed 0 --out data/roads --split heldout --roads straight curve merge lane_drop
    python scripts/build_scene_dataset.py --num-scenes 7200 --seed 1 --out data/roads --split heldout2 --roads straight curve merge lane_drop
    python scripts/bench_scenes.py --train data/roads/train --reference data/roads/heldout \\
        --floor data/roads/heldout2 --out outputs/bench_scenes

One protocol with the user's ``aigc-synth evaluate``: every row **is** an evaluation
(:func:`aigc_synth.evaluation.scenes.evaluate_scenes`, written to ``--out/<row>/``) of a scene
checkpoint against ``scene_reference=--reference`` and ``scene_floor=--floor``, with
``n_per_condition`` = the reference's scenes per (road, traffic, lanes) cell, so generated and real
sets have the same size and composition. Rows: the ``scene_ar`` checkpoint (default: the bundled
one), ``scene_marginal`` fitted on ``--train`` and ``scene_random`` (both exported as checkpoints
first, like ``aigc-synth train`` does), plus SUMO itself: the replay of the floor set.

Per road kind: MMD / floor per feature, count accuracy, overlap rate at t = 0, and ``--replay`` scenes
per row driven 10 s in SUMO (collision, hard-braking, min-TTC < 0.95 s shares; on merges the share
of ramp vehicles that merge before their acceleration lane ends, replayed on every merge scene of each
set: ``replay_all_merges``). Goals per road kind (issue 29):
every MMD <= 2x the floor, count accuracy >= 0.95, collision share <= 1.5x SUMO's and <= 0.2x
scene_random's, hard braking <= 3x SUMO's, merge completion within 0.05 of SUMO's. Writes
``bench.json`` and ``bench.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from aigc_synth.config import compose
from aigc_synth.evaluation.scenes import evaluate_scenes
from aigc_synth.metrics.scenes import FEATURES
from aigc_synth.models.configs import SceneMarginalConfig, SceneRandomConfig
from aigc_synth.models.scene_families import export_scene_generator, resolve_scene_checkpoint
from aigc_synth.scenes.baselines import MarginalSceneSampler
from aigc_synth.scenes.dataset import read_scenes
from aigc_synth.scenes.format import LANE_COUNTS, ROAD_KINDS, TRAFFIC_LEVELS

GOALS = {"mmd_ratio": 2.0, "collision_vs_truth": 1.5, "collision_vs_random": 0.2, "count_accuracy": 0.95,
         "hard_braking_vs_truth": 3.0, "merge_completion_gap": 0.05}
TRUTH = "SUMO (independent runs)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True, help="SUMO training scenes (fits scene_marginal)")
    ap.add_argument("--reference", required=True, help="held-out SUMO scenes")
    ap.add_argument("--floor", required=True, help="a second, independent SUMO set")
    ap.add_argument("--checkpoint", default="default", help="scene_ar generator.pt (default: bundled)")
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=CHECKPOINT",
                    help="another scene_ar checkpoint as an extra row 'scene_ar (LABEL)' (repeatable; 'bundled' = the shipped one)")
    ap.add_argument("--replay", type=int, default=1200, help="scenes replayed per row (spread over the road kinds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("outputs/bench_scenes"))
    args = ap.parse_args(argv)

    compare = {}
    for item in args.compare:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            ap.error(f"--compare wants LABEL=CHECKPOINT, got {item!r}")
        compare[f"scene_ar ({label})"] = str(resolve_scene_checkpoint(None if path in ("default", "bundled") else path))
    reference = read_scenes(args.reference)
    per_cell = min(Counter((sc.road.kind, sc.traffic, sc.num_lanes) for sc in reference).values())
    args.out.mkdir(parents=True, exist_ok=True)
    train = read_scenes(args.train)
    roads = [r for r in ROAD_KINDS if any(sc.road.kind == r for sc in train)]
    export_scene_generator(args.out / "scene_marginal.pt", family="scene_marginal", model_config=asdict(SceneMarginalConfig()),
                           state=MarginalSceneSampler.fit(train).to_dict(), traffic=TRAFFIC_LEVELS, lanes=LANE_COUNTS, roads=roads)
    export_scene_generator(args.out / "scene_random.pt", family="scene_random", model_config=asdict(SceneRandomConfig()), state={},
                           traffic=TRAFFIC_LEVELS, lanes=LANE_COUNTS, roads=roads)
    sources = {"scene_ar": str(resolve_scene_checkpoint(None if args.checkpoint == "default" else args.checkpoint)), **compare,
               "scene_marginal": str(args.out / "scene_marginal.pt"), "scene_random": str(args.out / "scene_random.pt")}
    evaluations = {}
    for name, source in sources.items():
        # the reference and floor sets are replayed once, with the first row (SUMO's own figures)
        cfg = compose("evaluate", [f"source={source}", f"n_per_condition={per_cell}", f"replay_scenes={args.replay}",
                                   f"replay_real={not evaluations}", f"scene_reference={args.reference}", f"scene_floor={args.floor}",
                                   f"seed={args.seed}", f"out_dir={args.out / row_dir(name)}", "overwrite=true"])
        evaluations[name] = evaluate_scenes(cfg, log=lambda *a: print(f"{name}:", *a, flush=True))
    kinds = evaluations["scene_ar"]["road_kinds"]
    result = {"reference": args.reference, "floor": args.floor, "n_per_condition": per_cell,
              "checkpoint": evaluations["scene_ar"]["source"], "by_road": {k: bench_road(evaluations, k) for k in kinds}}
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    md = "\n".join(f"## {kind}\n\n{table(r)}" for kind, r in result["by_road"].items())
    (args.out / "bench.md").write_text(md)
    print(md)
    return 0


def row_dir(name: str) -> str:
    """A row's folder under --out: its name with anything but letters, digits, '.' and '-' as '_'."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_")


def _of(evaluation: dict, kind: str) -> tuple[dict, dict | None]:
    """(the comparison, the replay) of one road kind in an evaluation's metrics."""
    scores = evaluation["by_road"][kind] if "by_road" in evaluation else evaluation
    replay = evaluation.get("replay_by_road", {}).get(kind) or evaluation.get("replay")
    return scores, replay


def bench_road(evaluations: dict[str, dict], kind: str) -> dict:
    """One road kind's rows and goal checks."""
    rows = {}
    for name, evaluation in evaluations.items():
        scores, replay = _of(evaluation, kind)
        rows[name] = {"features": scores["features"], "count_accuracy": scores["count_accuracy"]["accuracy"],
                      "overlap_rate": scores["overlap_rate"]["generated"], "scenes": scores["scenes"]["generated"],
                      "replay": replay["generated"] if replay else None, "merges": _merges(evaluation, kind, "generated")}
    scores, replay = _of(evaluations["scene_ar"], kind)  # the row that replayed the reference and floor
    rows[TRUTH] = {"features": {f: {"ratio": 1.0} for f in FEATURES}, "count_accuracy": scores["count_accuracy_floor"]["accuracy"],
                   "overlap_rate": scores["overlap_rate"]["real_floor"], "scenes": scores["scenes"]["real_floor"],
                   "replay": replay["real_floor"] if replay else None, "merges": _merges(evaluations["scene_ar"], kind, "real_floor")}
    ar = rows["scene_ar"]
    checks = {"every MMD <= 2x floor": all(ar["features"][f]["ratio"] <= GOALS["mmd_ratio"] for f in FEATURES),
              "count accuracy >= 0.95": ar["count_accuracy"] >= GOALS["count_accuracy"]}
    if ar["replay"] is not None:
        truth, rnd = rows[TRUTH]["replay"], rows["scene_random"]["replay"]
        checks["collision share <= 1.5x SUMO"] = ar["replay"]["collision_share"] <= GOALS["collision_vs_truth"] * truth["collision_share"]
        checks["collision share <= 0.2x scene_random"] = ar["replay"]["collision_share"] <= GOALS["collision_vs_random"] * rnd["collision_share"]
        checks["hard braking <= 3x SUMO"] = ar["replay"]["hard_braking_share"] <= GOALS["hard_braking_vs_truth"] * truth["hard_braking_share"]
        # every merge scene's replay when the evaluation has it (replay_all_merges), else the replay sample's
        ours, sumo = merge_completion(ar), merge_completion(rows[TRUTH])
        if ours is not None and sumo is not None:
            checks["merge completion within 0.05 of SUMO"] = abs(ours - sumo) <= GOALS["merge_completion_gap"]
    result = {"rows": rows, "checks": checks}
    reference = _merges(evaluations["scene_ar"], kind, "real")
    if reference is not None and rows[TRUTH]["merges"] is not None:  # what two SUMO sets differ by: the goal's scale
        result["merge_completion_sumo_spread"] = reference["merge_completion"] - rows[TRUTH]["merges"]["merge_completion"]
    return result


def _merges(evaluation: dict, kind: str, name: str) -> dict | None:
    """The replay summary of every merge scene of one set (``replay_merges``), on the merge road only."""
    return evaluation.get("replay_merges", {}).get(name) if kind == "merge" else None


def merge_completion(row: dict) -> float | None:
    """A row's merge completion: from every merge scene when measured, else from the replay sample."""
    summary = row.get("merges") or row.get("replay") or {}
    return summary.get("merge_completion")


def table(result: dict) -> str:
    head = ("| row | scenes | " + " | ".join(f"{f} MMD/floor" for f in FEATURES)
            + " | count acc. | overlap t=0 | collision | hard brake | TTC<0.95 s | merge completion |")
    lines = [head, "|" + "---|" * (len(FEATURES) + 8)]
    for name, r in result["rows"].items():
        ratios = " | ".join("n/a" if r["features"][f]["ratio"] is None else f"{r['features'][f]['ratio']:.2f}" for f in FEATURES)
        rp, every = r["replay"], r.get("merges")
        merged = "n/a" if merge_completion(r) is None else f"{merge_completion(r):.3f}"
        if every and every["merge_completion_95"]:  # None when the merge scenes held no ramp vehicle
            low, high = every["merge_completion_95"]
            merged += f" ({every['merged_vehicles']} of {every['ramp_vehicles']}; 95 % {low:.3f}–{high:.3f})"
        replay = (f"{rp['collision_share']:.4f} | {rp['hard_braking_share']:.4f} ({rp.get('hard_braking_vehicles', '?')}) | "
                  f"{rp['low_ttc_share']:.4f} | {merged}" if rp
                  else "n/a | n/a | n/a | n/a")
        lines.append(f"| {name} | {r['scenes']} | {ratios} | {r['count_accuracy']:.3f} | {r['overlap_rate']:.4f} | {replay} |")
    lines.append("")
    lines += [f"- {k}: {'yes' if v else 'NO'}" for k, v in result["checks"].items()]
    if "merge_completion_sumo_spread" in result:
        lines.append(f"- merge completion, SUMO reference minus SUMO floor (two independent sets): "
                     f"{result['merge_completion_sumo_spread']:+.3f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
