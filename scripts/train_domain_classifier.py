"""Train the bundled domain classifier (aigc_synth/assets/domain_classifier.pt).

    python scripts/train_domain_classifier.py [--out PATH] [--steps 1500] [--threads 1]

Prints the held-out accuracy per factor and the vehicle-count MAE (also stored in the file's meta).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from aigc_synth.training.classifier import train_domain_classifier

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "aigc_synth" / "assets" / "domain_classifier.pt"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-pool", type=int, default=30000)
    p.add_argument("--heldout", type=int, default=5000)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--stem", type=int, default=16, help="channels of the full-resolution stem (0: none)")
    a = p.parse_args()
    bar = tqdm(total=a.steps, desc="domain classifier")

    def progress(step: int, logs: dict) -> None:
        bar.n = step
        bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
        bar.refresh()

    meta = train_domain_classifier(a.out, steps=a.steps, batch_size=a.batch_size, train_pool=a.train_pool,
                                   heldout=a.heldout, threads=a.threads, stem=a.stem, progress=progress)
    bar.close()
    print(json.dumps(meta, indent=2))
    print(f"wrote {a.out} ({Path(a.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
