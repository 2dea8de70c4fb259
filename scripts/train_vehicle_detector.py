"""Train the bundled vehicle detector (aigc_synth/assets/vehicle_detector.pt).

    python scripts/train_vehicle_detector.py [--out PATH] [--steps 1000] [--threads 1] [--scenes DIR]

Trains only on real renders: scenes (by default sampled from the bundled scene generator, so a
clean checkout reproduces the file; ``--scenes DIR`` reads a scene set instead) × random weather,
time of day and cosmetic seed, through :class:`~aigc_synth.data.scene_images.SceneImageDataset`'s
own item choice. The held-out set uses other scenes (another scene seed) and another dataset seed.
Prints the held-out AP50 / recall under the layout metric's ground-truth filter, and the same
against shuffled boxes (each image scored with another image's boxes: the chance level); all of it
is stored in the file's meta.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from aigc_synth.data.scene_images import SceneImageDataset
from aigc_synth.data.scene_render import render_labelled
from aigc_synth.io.checkpoint import save_checkpoint
from aigc_synth.metrics.layout import DETECTOR_FORMAT, VehicleDetector, gt_filter_description, gt_ignore_mask, layout_fidelity
from aigc_synth.models.detector import DETECTOR_INPUT
from aigc_synth.scenes.format import Scene
# the recipe lives in the package (the downstream benchmark trains detectors too); re-exported here
from aigc_synth.training.detector import (  # noqa: F401
    AUGMENT_DESCRIPTION,
    GRID,
    LOSS_DESCRIPTION,
    augment,
    detection_loss,
    encode_targets,
    train_vehicle_detector,
)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "aigc_synth" / "assets" / "vehicle_detector.pt"
#: Dataset seeds (weather, time, cosmetic seed and scene of each item) and scene-sampling seeds:
#: the held-out set shares neither its scenes nor its renders with the training pool.
TRAIN_SEED, HELDOUT_SEED = 7201, 9201
TRAIN_SCENE_SEED, HELDOUT_SCENE_SEED = 1101, 2202


# ---- data ----------------------------------------------------------------------------------------------

def bundled_scenes(n: int, seed: int) -> tuple[list[Scene], str]:
    """``n`` scenes from the bundled scene generator, traffic and lane count drawn uniformly."""
    from aigc_synth.models.scene_families import load_scene_generator, resolve_scene_checkpoint

    gen = load_scene_generator(resolve_scene_checkpoint(None))
    rng = np.random.default_rng(seed)
    traffic = [gen.traffic[i] for i in rng.integers(0, len(gen.traffic), n)]
    lanes = [gen.lanes[i] for i in rng.integers(0, len(gen.lanes), n)]
    seeds = rng.integers(0, 2**31 - 1, n).tolist()
    scenes = gen.sample(traffic, lanes, seeds, list(range(seed * 1_000_000, seed * 1_000_000 + n)), compute_batch=256)
    return scenes, f"bundled scene generator {gen.model_id[:12]}, scene seed {seed}"


def render_pool(scenes: Sequence[Scene], n: int, seed: int) -> dict[str, Any]:
    """Items ``0..n-1`` of ``SceneImageDataset(scenes, seed=seed)``, with the renderer's visibility.

    (The dataset's ``batch`` drops ``visible``; the items are re-rendered from its own choices.)
    """
    ds = SceneImageDataset(scenes, length=n, seed=seed, resolution=DETECTOR_INPUT)
    codes, seeds, scene_index = ds.items(range(n))
    images, boxes, visible = render_labelled([scenes[int(k)] for k in scene_index], codes, seeds, ds.schema, DETECTOR_INPUT)
    return {"images": images, "boxes": boxes, "visible": visible,
            "ignore": [gt_ignore_mask(b, v) for b, v in zip(boxes, visible)]}


# ---- evaluation ------------------------------------------------------------------------------------------

def evaluate(detector: VehicleDetector, pool: dict[str, Any]) -> dict[str, Any]:
    """Held-out AP50 / recall, and the same against shuffled boxes (image i scored with image i+1's)."""
    t0 = time.perf_counter()
    dets = detector.detect(pool["images"])
    speed = len(pool["images"]) / (time.perf_counter() - t0)
    real = layout_fidelity(dets, pool["boxes"], pool["ignore"])
    rolled = layout_fidelity(dets, pool["boxes"][1:] + pool["boxes"][:1], pool["ignore"][1:] + pool["ignore"][:1])
    return {"ap50": round(real["ap50"], 4), "recall": round(real["recall"], 4), "num_gt": real["num_gt"],
            "num_ignored": real["num_ignored"], "num_images": real["num_images"],
            "shuffled_ap50": round(rolled["ap50"], 4), "shuffled_recall": round(rolled["recall"], 4),
            "images_per_second_1_thread": round(speed, 1)}


# ---- training --------------------------------------------------------------------------------------------

def train(out_path: str, steps: int, batch_size: int, train_pool: int, train_scenes: int, heldout: int,
          heldout_scenes: int, scenes_dir: str | None, seed: int, threads: int, lr: float,
          widths: Sequence[int]) -> dict[str, Any]:
    """Render, train, evaluate on the held-out set, export atomically; return the checkpoint's meta."""
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    if scenes_dir:
        from aigc_synth.scenes.dataset import read_scenes

        scenes, source = read_scenes(scenes_dir), f"scene set {scenes_dir}"
    else:
        scenes, source = bundled_scenes(train_scenes, TRAIN_SCENE_SEED)
    ho_scenes, ho_source = bundled_scenes(heldout_scenes, HELDOUT_SCENE_SEED)
    pool = render_pool(scenes, train_pool, TRAIN_SEED)
    ho_pool = render_pool(ho_scenes, heldout, HELDOUT_SEED)
    render_s = time.perf_counter() - t0
    print(f"rendered {train_pool} + {heldout} images from {len(scenes)} + {len(ho_scenes)} scenes in {render_s:.0f} s", flush=True)

    model = train_vehicle_detector(pool["images"], pool["boxes"], steps=steps, batch_size=batch_size, seed=seed, lr=lr,
                                   widths=widths, ignore=pool["ignore"])
    train_s = time.perf_counter() - t0
    held = evaluate(VehicleDetector(model, "vehdet-unsaved"), ho_pool)
    meta = {
        "heldout": held,
        "gt_filter": gt_filter_description(),
        "train_seconds": round(train_s, 1),
        "recipe": {"widths": list(model.widths), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                   "optimizer": "AdamW wd 1e-4, one-cycle", "scene_source": source, "train_scenes": len(scenes),
                   "train_pool": train_pool, "train_seed": TRAIN_SEED, "heldout_source": ho_source,
                   "heldout_scenes": len(ho_scenes), "heldout_pool": heldout, "heldout_seed": HELDOUT_SEED,
                   "loss": LOSS_DESCRIPTION, "augment": AUGMENT_DESCRIPTION},
    }
    save_checkpoint({"format": DETECTOR_FORMAT, "model_config": {"widths": list(model.widths)},
                     "state_dict": {k: v.detach().contiguous() for k, v in model.state_dict().items()},
                     "meta": meta}, out_path)
    return meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--train-pool", type=int, default=10000, help="training images rendered up front")
    p.add_argument("--train-scenes", type=int, default=3000, help="scenes sampled from the bundled generator")
    p.add_argument("--scenes", default=None, help="train on this scene set (a directory) instead of the bundled generator")
    p.add_argument("--heldout", type=int, default=1500, help="held-out images")
    p.add_argument("--heldout-scenes", type=int, default=600)
    p.add_argument("--widths", default="16,24,48,64", help="backbone channels at strides 2, 2, 4, 8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.steps < 8:
        p.error("--steps must be at least 8")
    meta = train(a.out, steps=a.steps, batch_size=a.batch_size, train_pool=a.train_pool, train_scenes=a.train_scenes,
                 heldout=a.heldout, heldout_scenes=a.heldout_scenes, scenes_dir=a.scenes, seed=a.seed, threads=a.threads,
                 lr=a.lr, widths=[int(w) for w in a.widths.split(",")])
    print(json.dumps(meta, indent=2))
    print(f"wrote {a.out} ({Path(a.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
