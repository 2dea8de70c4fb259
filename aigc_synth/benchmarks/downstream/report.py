"""The benchmark's report: mean ± std over seeds (:func:`summarise`), the Markdown tables, the bar
plot and the atomic ``downstream.json`` / ``.md`` / ``.png`` (:func:`write_outputs`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aigc_synth.benchmarks.downstream.config import FACTORS
from aigc_synth.io.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_with,
)

# ---- summary ------------------------------------------------------------------------------------------------

#: (key, column label, path into a per-seed result) of the summary table, in column order.
SUMMARY: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    *((f"acc_{f}_{g}", f"{f} acc {g}", ("classifier", g, f)) for f in FACTORS for g in ("rare", "common")),
    ("ap50_rare", "AP50 rare", ("detector", "rare", "ap50")),
    ("ap50_common", "AP50 common", ("detector", "common", "ap50")),
)
#: Further numbers summarised (json and the second table).
DETAIL: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("acc_weather_fog", "weather acc on fog", ("classifier", "by_value", "weather", "fog")),
    ("acc_weather_snow", "weather acc on snow", ("classifier", "by_value", "weather", "snow")),
    ("acc_time_night", "time acc on night", ("classifier", "by_value", "time_of_day", "night")),
    ("acc_all_factors_rare", "all-factor acc rare", ("classifier", "rare", "all_factors")),
    ("acc_all_factors_common", "all-factor acc common", ("classifier", "common", "all_factors")),
    ("recall_rare", "recall rare", ("detector", "rare", "recall")),
    ("recall_common", "recall common", ("detector", "common", "recall")),
    ("ap50_fog", "AP50 fog", ("detector", "fog", "ap50")),
    ("ap50_snow", "AP50 snow", ("detector", "snow", "ap50")),
    ("ap50_night", "AP50 night", ("detector", "night", "ap50")),
)


def _get(d: Mapping[str, Any], path: Sequence[str]) -> float:
    for p in path:
        d = d[p]
    return float(d) if d is not None else math.nan


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the finite values."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if not len(v):
        return {"mean": None, "std": None, "n": 0, "values": list(values)}
    return {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4),
            "n": len(v), "values": [None if x is None or not math.isfinite(x) else round(float(x), 4) for x in values]}


def summarise(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {key: mean_std([_get(r, path) for r in per_seed]) for key, _, path in (*SUMMARY, *DETAIL)}


def _fmt(s: Mapping[str, Any]) -> str:
    return "n/a" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}"


def markdown(result: Mapping[str, Any]) -> str:
    cfg, rows = result["config"], result["rows"]
    mix = result["mixture"]
    lines = [
        "# Downstream benchmark: generated rare conditions for perception training",
        "",
        (f"Generator: `{result['generator']['family']}` `{result['generator']['model_id'][:12]}` "
         f"({result['generator']['source']}; trained on this pool: {result['generator']['trained_on_this_pool']}). "
         f"Real pool: {result['pool']['n']} images, fog {result['pool']['weather']['fog']}, "
         f"snow {result['pool']['weather']['snow']}, night {result['pool']['time_of_day']['night']} "
         f"(requested p = {cfg['rare_probabilities']}). "
         f"Held-out test: {result['test']['n']} real images, {result['test']['per_combination']} per each of the 45 "
         f"combinations ({result['test']['n_rare']} rare, {result['test']['n_common']} common), disjoint from all "
         "training data (scene ids, scene seeds, image seeds)."),
        "",
        (f"Mix: (b) adds {mix['num_generated']} generated rare-condition images, mix ratio {mix['mix_ratio']} "
         f"generated per real image ({mix['mode']}; the balancing ratio is {mix['balancing_ratio']}); "
         f"(d) adds the same {mix['num_generated']} (scene, condition) pairs rendered for real. "
         f"(c) trains on {rows['c']['composition']['n']} generated images, the 15 weather × time cells equally."),
        "",
        (f"Every row: {result['equal_steps']['steps']} steps of batch {result['equal_steps']['batch_size']} per model "
         f"(verified), seeds {cfg['seeds']}; mean ± sample std over seeds. "
         "Rare = test images with fog, snow or night; common = the others."),
        "",
        "| row | training set | " + " | ".join(label for _, label, _ in SUMMARY) + " |",
        "|---|---|" + "---|" * len(SUMMARY),
    ]
    for r, row in rows.items():
        lines.append(f"| ({r}) | {row['name']} ({row['composition']['n']} img) | "
                     + " | ".join(_fmt(row["summary"][k]) for k, _, _ in SUMMARY) + " |")
    lines += ["", "| row | " + " | ".join(label for _, label, _ in DETAIL) + " |", "|---|" + "---|" * len(DETAIL)]
    for r, row in rows.items():
        lines.append(f"| ({r}) | " + " | ".join(_fmt(row["summary"][k]) for k, _, _ in DETAIL) + " |")
    lines += ["", f"Quick mode: {cfg['quick']}. Full numbers, counts and disjointness evidence: downstream.json.", ""]
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    acc_keys = [k for k, _, _ in SUMMARY if k.startswith("acc_")]
    ap_keys = [k for k, _, _ in SUMMARY if k.startswith("ap50_")]
    labels = {k: lab for k, lab, _ in SUMMARY}
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    colours = ["#4477aa", "#ee6677", "#228833", "#ccbb44"]
    for ax, keys, title in ((axes[0], acc_keys, "classifier accuracy (held-out real)"),
                            (axes[1], ap_keys, "detector AP50 (held-out real)")):
        width = 0.8 / len(rows)
        for j, (r, row) in enumerate(rows.items()):
            mean = [row["summary"][k]["mean"] or 0.0 for k in keys]
            std = [row["summary"][k]["std"] or 0.0 for k in keys]
            ax.bar(np.arange(len(keys)) + (j - (len(rows) - 1) / 2) * width, mean, width, yerr=std, capsize=2,
                   color=colours[j % len(colours)], label=f"({r}) {row['name']}")
        ax.set_xticks(range(len(keys)), [labels[k] for k in keys], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_title(title, fontsize=10)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(rows), fontsize=9, frameon=False)
    fig.suptitle(f"downstream benchmark — mean ± std over seeds {result['config']['seeds']}", fontsize=10)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def write_outputs(result: Mapping[str, Any], out: str | Path) -> dict[str, str]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "downstream.json", jsonable(result))
    atomic_write_bytes(out / "downstream.md", markdown(result).encode())
    plot(result, out / "downstream.png")
    return {k: str(out / f"downstream.{k}") for k in ("json", "md", "png")}
