#!/usr/bin/env python
"""Scene generators against SUMO ground truth, one table from one run (issue 11's acceptance).

    python scripts/build_scene_dataset.py --num-scenes 18000 --seed 0 --out data/scenes --split train
    python scripts/build_scene_dataset.py --num-scenes 1800 --seed 0 --out data/scenes --split heldout
    python scripts/build_scene_dataset.py --num-scenes 1800 --seed 1 --out data/scenes --split heldout2
    python scripts/bench_scenes.py --train data/scenes/train --reference data/scenes/heldout \\
        --floor data/scenes/heldout2 --out outputs/bench_scenes

Rows: an independent SUMO set (the floor: what two samples of the simulator differ by), the
``scene_ar`` checkpoint (default: the bundled one), ``scene_marginal`` fitted on ``--train``, and
``scene_random``. Every model draws one scene per reference scene's (traffic, lanes) cell, so all
rows have the reference's composition. Columns: MMD / floor per feature (biased MMD, Gaussian
kernels, bandwidths from the reference: :mod:`aigc_synth.metrics.scenes`), count accuracy, overlap
rate at t = 0, and ``--replay`` scenes per row driven 10 s in SUMO on the Ray pool (collision,
hard-braking and min-TTC < 0.95 s shares). Writes ``bench.json`` and ``bench.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from aigc_synth.evaluation.scenes import replay_on_ray
from aigc_synth.metrics.scenes import FEATURES, compare_scene_sets, replay_summary
from aigc_synth.seeds import attempt_seeds
from aigc_synth.scenes.baselines import MarginalSceneSampler, RandomSceneSampler
from aigc_synth.scenes.dataset import read_scenes
from aigc_synth.models.scene_families import load_scene_generator, resolve_scene_checkpoint

GOALS = {"mmd_ratio": 2.0, "collision_vs_truth": 1.5, "collision_vs_random": 0.2, "count_accuracy": 0.95}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True, help="SUMO training scenes (fits scene_marginal)")
    ap.add_argument("--reference", required=True, help="held-out SUMO scenes")
    ap.add_argument("--floor", required=True, help="a second, independent SUMO set")
    ap.add_argument("--checkpoint", default="default", help="scene_ar generator.pt (default: bundled)")
    ap.add_argument("--replay", type=int, default=600, help="scenes replayed per row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("outputs/bench_scenes"))
    args = ap.parse_args(argv)

    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    reference, floor = read_scenes(args.reference), read_scenes(args.floor)
    traffic, lanes = [sc.traffic for sc in reference], [sc.num_lanes for sc in reference]
    ids = list(range(len(reference)))
    seeds = attempt_seeds(args.seed, np.arange(len(reference))).tolist()
    ar = load_scene_generator(resolve_scene_checkpoint(None if args.checkpoint == "default" else args.checkpoint))
    marginal = MarginalSceneSampler.fit(read_scenes(args.train))
    rows: dict[str, dict] = {}
    sets = {"SUMO (independent runs)": floor}
    timings = {}
    for name, sample in (("scene_ar", lambda: ar.sample(traffic, lanes, seeds, ids)),
                         ("scene_marginal", lambda: [marginal.sample(t, n, s, i) for t, n, s, i in zip(traffic, lanes, seeds, ids)]),
                         ("scene_random", lambda: [RandomSceneSampler().sample(t, n, s, i) for t, n, s, i in zip(traffic, lanes, seeds, ids)])):
        t0 = time.perf_counter()
        sets[name] = sample()
        timings[name] = round(len(reference) / (time.perf_counter() - t0), 1)
    for name, scenes in sets.items():
        cmp = compare_scene_sets(scenes, reference, floor, seed=args.seed)
        pick = scenes[:: max(1, len(scenes) // args.replay)][: args.replay]
        rows[name] = {"features": cmp["features"], "count_accuracy": cmp["count_accuracy"]["accuracy"],
                      "count_in_range": cmp["count_accuracy"]["in_range"], "overlap_rate": cmp["overlap_rate"]["generated"],
                      "replay": replay_summary(replay_on_ray(pick)), "scenes": len(scenes),
                      "mean_agents": float(np.mean([len(sc.agents) for sc in scenes])),
                      "sampling_scenes_per_s": timings.get(name)}
        print(f"{name}: done", flush=True)
    truth = rows["SUMO (independent runs)"]["replay"]["collision_share"]
    random_share = rows["scene_random"]["replay"]["collision_share"]
    ar_row = rows["scene_ar"]
    checks = {
        "every MMD <= 2x floor": all(ar_row["features"][f]["ratio"] <= GOALS["mmd_ratio"] for f in FEATURES),
        "collision share <= 1.5x SUMO": ar_row["replay"]["collision_share"] <= GOALS["collision_vs_truth"] * truth,
        "collision share <= 0.2x scene_random": ar_row["replay"]["collision_share"] <= GOALS["collision_vs_random"] * random_share,
        "count accuracy >= 0.95": ar_row["count_accuracy"] >= GOALS["count_accuracy"],
    }
    result = {"reference": {"path": args.reference, "scenes": len(reference)}, "floor": {"path": args.floor, "scenes": len(floor)},
              "checkpoint": {"path": ar.source, "model_id": ar.model_id}, "rows": rows, "checks": checks,
              "bandwidths": {f: rows["scene_ar"]["features"][f]["bandwidths"] for f in FEATURES}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    md = table(result)
    (args.out / "bench.md").write_text(md)
    print(md)
    return 0


def table(result: dict) -> str:
    head = "| row | " + " | ".join(f"{f} MMD/floor" for f in FEATURES) + " | count acc. | overlap t=0 | collision | hard brake | TTC<0.95 s |"
    lines = [head, "|" + "---|" * (len(FEATURES) + 6)]
    for name, r in result["rows"].items():
        ratios = " | ".join(f"{r['features'][f]['ratio']:.2f}" for f in FEATURES)
        rp = r["replay"]
        lines.append(f"| {name} | {ratios} | {r['count_accuracy']:.3f} | {r['overlap_rate']:.4f} | "
                     f"{rp['collision_share']:.4f} | {rp['hard_braking_share']:.4f} | {rp['low_ttc_share']:.4f} |")
    lines.append("")
    lines += [f"- {k}: {'yes' if v else 'NO'}" for k, v in result["checks"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
