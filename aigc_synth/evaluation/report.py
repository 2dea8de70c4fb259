"""The human-readable evaluation report: ``report.md`` plus PNG plots and image grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from aigc_synth.io.atomic import atomic_write_with
from aigc_synth.metrics.condition import condition_keys
from aigc_synth.schema import ConditionSchema


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def plot_per_condition(result: dict[str, Any], path: Path) -> None:
    """Bars per condition: KID (with std) and condition accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["per_condition"]
    keys = list(rows)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.32 * len(keys)), 7), sharex=True)
    kid = [rows[k].get("kid") or 0.0 for k in keys]
    kid_std = [rows[k].get("kid_std") or 0.0 for k in keys]
    axes[0].bar(range(len(keys)), kid, yerr=kid_std, color="#4477aa", capsize=2)
    axes[0].set_ylabel("intra-KID (lower is better)")
    axes[0].set_title(f"per condition — {result['source']['family']} {result['source']['model_id'][:12]} vs {result['reference']['kind']}")
    acc = [rows[k].get("accuracy") or 0.0 for k in keys]
    axes[1].bar(range(len(keys)), acc, color="#228833")
    axes[1].axhline(0.9, color="grey", lw=0.8, ls="--")
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("condition accuracy (all factors)")
    axes[1].set_xticks(range(len(keys)), keys, rotation=90, fontsize=7)
    _save_figure(fig, path)


def plot_confusions(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = result["confusion"]
    fig, axes = plt.subplots(1, len(conf), figsize=(4.2 * len(conf), 4))
    for ax, (name, c) in zip(np.atleast_1d(axes), conf.items()):
        m = np.asarray(c["matrix"], dtype=float)
        norm = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(c["labels"])), c["labels"], rotation=45, fontsize=8)
        ax.set_yticks(range(len(c["labels"])), c["labels"], fontsize=8)
        ax.set_xlabel("predicted"); ax.set_ylabel("requested")
        ax.set_title(f"{name} (acc {result['overall']['condition_accuracy'][name]:.3f})")
    _save_figure(fig, path)


def grid_real_vs_generated(gen_images: np.ndarray, gen_codes: np.ndarray, ref_images: np.ndarray, ref_codes: np.ndarray,
                           schema: ConditionSchema, per_condition: int) -> Image.Image:
    """One row per condition: ``per_condition`` real images | ``per_condition`` generated images."""
    r = gen_images.shape[1]
    label_w, gap = 150, 8
    gen_keys, ref_keys = condition_keys(gen_codes, schema), condition_keys(ref_codes, schema)
    keys = [k for k in schema.keys() if k in set(gen_keys)]
    width = label_w + 2 * per_condition * r + gap
    canvas = Image.new("RGB", (width, 14 + len(keys) * r), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((label_w, 1), "real", fill="black")
    draw.text((label_w + per_condition * r + gap, 1), "generated", fill="black")
    for row, key in enumerate(keys):
        y = 14 + row * r
        draw.text((2, y + r // 2 - 6), key, fill="black")
        for col, idx in enumerate([i for i, k in enumerate(ref_keys) if k == key][:per_condition]):
            canvas.paste(Image.fromarray(_fit(ref_images[idx], r)), (label_w + col * r, y))
        for col, idx in enumerate([i for i, k in enumerate(gen_keys) if k == key][:per_condition]):
            canvas.paste(Image.fromarray(gen_images[idx]), (label_w + per_condition * r + gap + col * r, y))
    return canvas


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def _fmt(v: Any, digits: int = 4) -> str:
    return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def markdown(result: dict[str, Any]) -> str:
    o, src, fe = result["overall"], result["source"], result["feature_extractor"]
    lines = [f"# Evaluation: {src['family']} `{src['model_id'][:12]}` ({src['kind']}, {src['n']} images)", "",
             "KID and FD are in the domain classifier's feature space: compare them between models evaluated with the same "
             "feature extractor id, not with published Inception figures.", "",
             f"Reference: {result['reference']['kind']} ({result['reference']['n']} images). "
             f"Feature extractor: `{fe['id']}` (held-out accuracy {fe.get('heldout')}).", "",
             "## Overall (domain-classifier feature space)", "",
             "| FD | KID (± std) | precision | recall | density | coverage | diversity gen / real | sampling img/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {_fmt(o['fd'], 2)} | {o['kid']:.4f} ± {o['kid_std']:.4f} | {_fmt(o['precision'], 3)} | "
             f"{_fmt(o['recall'], 3)} | {_fmt(o['density'], 3)} | {_fmt(o['coverage'], 3)} | "
             f"{_fmt(o['diversity'], 2)} / {_fmt(o['diversity_reference'], 2)} | {_fmt(result.get('sampling_img_per_s'), 1)} |", "",
             "## Conditions", "",
             "| factor | accuracy (generated) | accuracy (reference) | IS analogue gen / real | KL(requested ‖ seen) |",
             "|---|---:|---:|---:|---:|"]
    for name in o["condition_accuracy"]:
        lines.append(f"| {name} | {_fmt(o['condition_accuracy'][name], 3)} | {_fmt(result['reference_condition_accuracy'][name], 3)} | "
                     f"{_fmt(o['is_analogue'][name], 2)} / {_fmt(o['is_analogue_reference'][name], 2)} | {_fmt(o['condition_kl'][name], 4)} |")
    lines += [f"| all factors | {_fmt(o['condition_accuracy_all_factors'], 3)} | | | joint {_fmt(o['condition_kl']['joint'], 4)} |", "",
              "![per-condition KID and accuracy](per_condition.png)", "", "![confusion matrices](confusion.png)", "",
              "## Per condition", "",
              "Small N per condition: read intra-KID first (unbiased); intra-FD is biased upward at small N.", "",
              "| condition | n | KID (± std) | FD | accuracy | diversity gen / real |", "|---|---:|---:|---:|---:|---:|"]
    for key, r in result["per_condition"].items():
        kid = "–" if r.get("kid") is None else f"{r['kid']:.4f} ± {r['kid_std']:.4f}"
        lines.append(f"| {key} | {r['n_generated']} | {kid} | {_fmt(r.get('fd'), 2)} | {_fmt(r.get('accuracy'), 3)} | "
                     f"{_fmt(r.get('diversity'), 2)} / {_fmt(r.get('diversity_reference'), 2)} |")
    if "layout" in result:  # layout fidelity: the vehicle detector against the requested boxes
        lay = result["layout"]
        lines += ["", f"## Layout fidelity (detector `{lay['detector_id']}`, COCO AP50 / box recall at IoU 0.5)", "",
                  "| images | AP50 | box recall | boxes counted | boxes ignored |", "|---|---:|---:|---:|---:|"]
        for key, label in (("generated", "generated, requested boxes"), ("real", "real renders of the same scenes (ceiling)"),
                           ("shuffled", "generated, another sample's boxes (floor)")):
            r = lay[key]
            lines.append(f"| {label} | {_fmt(r['ap50'], 3)} | {_fmt(r['recall'], 3)} | {r['num_gt']} | {r['num_ignored']} |")
        lines.append(f"\nAP50 generated / real: {_fmt(lay.get('ap50_ratio_to_real'), 3)}")
    if "inception" in result:
        i = result["inception"]
        lines += ["", "## Inception (local weights)", "", "| FID | KID ×1e3 | IS |", "|---:|---:|---:|",
                  f"| {_fmt(i.get('fid'), 2)} | {_fmt((i.get('kid_mean') or 0) * 1e3, 2)} | {_fmt(i.get('is_mean'), 2)} |"]
    lines += ["", "## Real vs generated", "", "![real vs generated](grid_real_vs_generated.png)", ""]
    return "\n".join(lines)


def write_report(out: Path, result: dict[str, Any], gen_images, gen_codes, ref_images, ref_codes, schema, per_condition: int) -> None:
    plot_per_condition(result, out / "per_condition.png")
    plot_confusions(result, out / "confusion.png")
    grid = grid_real_vs_generated(gen_images, gen_codes, ref_images, ref_codes, schema, per_condition)
    atomic_write_with(out / "grid_real_vs_generated.png", lambda tmp: grid.save(tmp, format="PNG"))
    text = markdown(result)
    atomic_write_with(out / "report.md", lambda tmp: Path(tmp).write_text(text))
