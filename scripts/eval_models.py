"""Evaluate several generators against the same reference set and print the README's model table.

    python scripts/eval_models.py [--n-per-condition 100] [--out outputs/model_table] \
        [--model cgan=default --model dcgan=runs/dcgan_baseline/generator.pt --model cvae=runs/cvae/generator.pt]

Every model is sampled with the same seeds (n per condition, all 45 conditions), compared with the
same procedural reference, and scored with the same domain classifier (its id is printed). The
last row is the reference set itself scored by the classifier: the ceiling of condition accuracy.
Sampling img/s is measured in this process (one after the other, same threads), so the figures
compare with each other; the generation job's own throughput is in scripts/bench_generate.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aigc_synth.config import EvaluateRoot
from aigc_synth.evaluation import evaluate
from aigc_synth.models.exported import read_generator_header, resolve_checkpoint_path

DEFAULT_MODELS = [
    "cgan (bundled)=default",
    "cgan, projection only (previous bundled)=runs/default_cgan/generator.pt",
    "cgan + aux classifier from scratch=runs/cgan_ac/generator.pt",
    "dcgan baseline=runs/dcgan_baseline/generator.pt",
    "cvae=runs/cvae/generator.pt",
]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="name=checkpoint (repeatable)")
    ap.add_argument("--n-per-condition", type=int, default=100)
    ap.add_argument("--out", default="outputs/model_table")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    rows, ref = [], None
    for spec in a.model or DEFAULT_MODELS:
        name, _, path = spec.partition("=")
        ckpt = resolve_checkpoint_path(path)
        if not ckpt.is_file():
            print(f"skip {name}: {ckpt} not found")
            continue
        meta = read_generator_header(ckpt).get("meta", {})
        steps = meta.get("step")
        if (meta.get("train_config") or {}).get("init_from"):
            steps = f"+{steps} (fine-tune)"
        out = Path(a.out) / _slug(name)
        cfg = EvaluateRoot(source=str(ckpt), out_dir=str(out), overwrite=True, n_per_condition=a.n_per_condition,
                           threads=a.threads)
        print(f"== {name}: {ckpt} (step {steps})")
        r = evaluate(cfg, progress=False)
        o = r["overall"]
        rows.append({"model": name, "steps": steps, "fd": o["fd"], "kid": o["kid"], "kid_std": o["kid_std"],
                     "precision": o["precision"], "recall": o["recall"], "coverage": o["coverage"],
                     **{f"acc_{k}": v for k, v in o["condition_accuracy"].items()},
                     "intra_kid": o["intra_kid_mean"], "img_per_s": r["sampling_img_per_s"], "report": str(out / "report.md")})
        ref = r["reference_condition_accuracy"], r["feature_extractor"]["id"], r["reference"]["n"]
    if not rows:
        raise SystemExit("no model found")
    factors = [k[4:] for k in rows[0] if k.startswith("acc_")]
    head = ("| model | steps | FD ↓ | KID ↓ (± std) | precision | recall | coverage | "
            + " | ".join(f"acc. {f}" for f in factors) + " | mean intra-KID ↓ | sampling img/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['steps']} | {r['fd']:.2f} | {r['kid']:.3f} ± {r['kid_std']:.3f} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {r['coverage']:.3f} | " + " | ".join(f"{r['acc_' + f]:.3f}" for f in factors)
                     + f" | {r['intra_kid']:.3f} | {r['img_per_s']:.0f} |")
    acc, fe_id, n = ref
    lines.append("| *real scenes (classifier ceiling)* | – | 0 | 0 | – | – | – | " + " | ".join(f"{acc[f]:.3f}" for f in factors) + " | – | – |")
    table = "\n".join(lines)
    footer = f"\n\nFeature extractor `{fe_id}`; reference: {n} procedural scenes with the same conditions; {a.n_per_condition} per condition."
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "table.md").write_text(table + footer + "\n")
    (Path(a.out) / "table.json").write_text(json.dumps(rows, indent=2))
    print(table + footer)


if __name__ == "__main__":
    main()
