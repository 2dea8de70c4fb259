"""Train a bundled domain classifier: procedural (aigc_synth/assets/domain_classifier.pt) or scene renders
(aigc_synth/assets/scene_classifier.pt).

    python scripts/train_domain_classifier.py [--out PATH] [--steps 2500] [--threads 1]
    python scripts/train_domain_classifier.py --source scenes --threads 1 \\
        [--scenes-dir data/scenes/train] [--heldout-scenes-dir data/scenes/heldout] [--reference-scenes-dir DIR]

``--source scenes`` trains on SceneImageDataset renders (64 px, the evaluation's scene images) of the
bundled scene generator's scenes (its own training / held-out seed ranges: reproducible on a clean
checkout) or of ``--scenes-dir``. Defaults not given on the command line follow the source (the
scene defaults reproduce the bundled scene_classifier.pt). Prints the held-out accuracy per factor
and the vehicle-count MAE (also stored in the file's meta).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from aigc_synth.training.classifier import SOURCES, train_domain_classifier

ASSETS = Path(__file__).resolve().parents[1] / "aigc_synth" / "assets"
DEFAULT_OUT = ASSETS / "domain_classifier.pt"
DEFAULT_SCENE_OUT = ASSETS / "scene_classifier.pt"
#: Per-source defaults of the options left unset (scenes: the recipe of the bundled scene_classifier.pt,
#: sized to train in about ten minutes on one CPU thread).
SOURCE_DEFAULTS = {
    "procedural": {"out": str(DEFAULT_OUT), "steps": 2500, "batch_size": 64, "train_pool": 30000, "heldout": 5000},
    "scenes": {"out": str(DEFAULT_SCENE_OUT), "steps": 1000, "batch_size": 64, "train_pool": 10000, "heldout": 2000},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", choices=SOURCES, default="procedural", help="training images: procedural or scene renders")
    p.add_argument("--out", default=None, help="default: assets/domain_classifier.pt (procedural), assets/scene_classifier.pt (scenes)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--train-pool", type=int, default=None, help="training images rendered up front")
    p.add_argument("--heldout", type=int, default=None, help="held-out images")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stem", type=int, default=16, help="channels of the full-resolution stem (0: none)")
    g = p.add_argument_group("scenes (--source scenes)")
    g.add_argument("--scenes-dir", default=None, help="training scenes (scene Parquet); default: the bundled scene generator")
    g.add_argument("--heldout-scenes-dir", default=None,
                   help="held-out scenes; default: the generator's held-out seeds, or runs split off --scenes-dir")
    g.add_argument("--reference-scenes-dir", default=None,
                   help="an extra held-out evaluation on these scenes (e.g. SUMO held-out), stored as meta.heldout_reference")
    g.add_argument("--num-scenes", type=int, default=4000, help="generator scenes to train on")
    g.add_argument("--num-heldout-scenes", type=int, default=600, help="generator scenes to hold out")
    g.add_argument("--scene-generator", default=None, help="scene generator checkpoint (default: the bundled one)")
    a = p.parse_args()
    if a.source == "procedural":
        scene_opts = {"--scenes-dir": a.scenes_dir, "--heldout-scenes-dir": a.heldout_scenes_dir,
                      "--reference-scenes-dir": a.reference_scenes_dir, "--scene-generator": a.scene_generator}
        given = [k for k, v in scene_opts.items() if v is not None]
        if given:
            p.error(f"{', '.join(given)}: only with --source scenes")
    for key, value in SOURCE_DEFAULTS[a.source].items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    bar = tqdm(total=a.steps, desc=f"{a.source} classifier")

    def progress(step: int, logs: dict) -> None:
        bar.n = step
        bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
        bar.refresh()

    scene_kwargs = {} if a.source == "procedural" else {
        "scenes_dir": a.scenes_dir, "heldout_scenes_dir": a.heldout_scenes_dir, "reference_scenes_dir": a.reference_scenes_dir,
        "num_scenes": a.num_scenes, "num_heldout_scenes": a.num_heldout_scenes, "scene_checkpoint": a.scene_generator}
    meta = train_domain_classifier(a.out, steps=a.steps, batch_size=a.batch_size, train_pool=a.train_pool,
                                   heldout=a.heldout, seed=a.seed, threads=a.threads, stem=a.stem, progress=progress,
                                   source=a.source, **scene_kwargs)
    bar.close()
    print(json.dumps(meta, indent=2))
    print(f"wrote {a.out} ({Path(a.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
