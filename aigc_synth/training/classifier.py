"""Train a domain classifier on real images (never on generated ones): procedural or scene renders.

Two data sources share one recipe, one model class and one checkpoint format
(:data:`~aigc_synth.metrics.domain.CLASSIFIER_FORMAT`), so either file loads with
:func:`~aigc_synth.metrics.domain.load_domain_classifier`:

``source="procedural"`` (the default; ``assets/domain_classifier.pt``)
    :mod:`aigc_synth.data.procedural` scenes. The training pool and the held-out set come from
    different dataset seeds, so no held-out scene is ever seen in training.
``source="scenes"`` (``assets/scene_classifier.pt``)
    Traffic scenes rendered through :mod:`aigc_synth.data.scene_render`'s camera by
    :class:`~aigc_synth.data.scene_images.SceneImageDataset` at :data:`SCENE_RESOLUTION` (the size
    the evaluation feeds; the model resizes to ``CLASSIFIER_INPUT`` itself, as at scoring time).
    The traffic label is the scene's own traffic level, the vehicle-count target the number of
    boxes the renderer returns (visible vehicles; like the procedural count it is not clipped,
    ``MAX_VEHICLES`` only scales the loss). The scenes come from, in order of precedence: a list
    (``scenes=``), a folder of scene Parquet (``scenes_dir=``, e.g. SUMO ``data/scenes/train``), or
    the bundled scene generator with its own training seeds (reproducible on a clean checkout).
    The held-out scenes are disjoint from the training scenes: ``heldout_scenes=`` /
    ``heldout_scenes_dir=``, else the generator's held-out seed range (generator training), else
    whole simulation runs (``Scene.seed``) split off the training list; an overlap is refused.
    ``meta["scene_source"]`` records both.

Augmentations (flip, small shifts, blur, noise) make the classifier robust to the softness and
grain of generated images without touching the colour cues that carry weather and time of day.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from aigc_synth.data.datasets import ProceduralDrivingDataset
from aigc_synth.data.procedural import MAX_VEHICLES
from aigc_synth.metrics.domain import CLASSIFIER_FORMAT
from aigc_synth.models.classifier import CLASSIFIER_INPUT, DomainClassifier
from aigc_synth.schema import DEFAULT_SCHEMA

TRAIN_SEED, HELDOUT_SEED = 7001, 9001
SOURCES = ("procedural", "scenes")
#: Side of the scene renders the scene classifier trains on: the evaluation's scene images.
SCENE_RESOLUTION = 64
#: Scene-generator seed ranges ``[base, base + n)``: training, held-out and tests never share a scene.
SCENE_TRAIN_SEED_BASE, SCENE_HELDOUT_SEED_BASE, SCENE_TEST_SEED_BASE = 10_000_000, 20_000_000, 30_000_000
#: Fraction of the simulation runs held out when only a training scene list / folder is given.
SCENE_HELDOUT_FRACTION = 0.1


def render_pool(n: int, seed: int, chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` procedural scenes at the classifier's input size: images uint8 (n,3,S,S), codes, counts."""
    ds = ProceduralDrivingDataset(n, seed=seed, resolution=CLASSIFIER_INPUT)
    images, codes, counts = [], [], []
    for start in range(0, n, chunk):
        b = ds.batch(range(start, min(n, start + chunk)))
        images.append(b["image"]); codes.append(b["codes"]); counts.append(b["vehicle_count"])
    return torch.cat(images), torch.cat(codes), torch.cat(counts).float()


def render_scene_pool(scenes: Sequence[Any], n: int, seed: int, resolution: int = SCENE_RESOLUTION,
                      chunk: int = 500) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` renders of ``scenes`` (scene × weather × time drawn per item from ``seed``): images uint8
    (n,3,R,R), codes (n,F) with traffic = the scene's own level, counts = visible vehicles (boxes)."""
    from aigc_synth.data.scene_images import SceneImageDataset

    ds = SceneImageDataset(scenes, length=n, seed=seed, resolution=resolution)
    images, codes, counts = [], [], []
    for start in range(0, n, chunk):
        b = ds.batch(range(start, min(n, start + chunk)))
        images.append(b["image"]); codes.append(b["codes"])
        counts.append(torch.tensor([len(box) for box in b["boxes"]], dtype=torch.float32))
    return torch.cat(images), torch.cat(codes), torch.cat(counts)


def sample_generator_scenes(n: int, seed_base: int, checkpoint: str | None = None) -> tuple[list[Any], dict[str, Any]]:
    """``n`` scenes of the scene generator (bundled when ``checkpoint`` is None), traffic level and lane
    count drawn uniformly, scene seeds ``seed_base + i`` and ids ``seed_base + i`` (so two disjoint
    seed ranges give disjoint scenes). Returns the scenes and a description for the metadata."""
    from aigc_synth.scenes.format import LANE_COUNTS, TRAFFIC_LEVELS
    from aigc_synth.models.scene_families import (
        load_scene_generator,
        resolve_scene_checkpoint,
    )

    gen = load_scene_generator(resolve_scene_checkpoint(checkpoint))
    traffic_levels = [t for t in TRAFFIC_LEVELS if t in gen.traffic]
    lane_counts = [n_ for n_ in LANE_COUNTS if n_ in gen.lanes]
    if not traffic_levels or not lane_counts:
        raise ValueError(f"{gen.source} covers traffic {list(gen.traffic)} / lanes {list(gen.lanes)}: "
                         f"none of {list(TRAFFIC_LEVELS)} / {list(LANE_COUNTS)}")
    rng = np.random.default_rng(seed_base)
    traffic = [traffic_levels[i] for i in rng.integers(0, len(traffic_levels), n)]
    lanes = [lane_counts[i] for i in rng.integers(0, len(lane_counts), n)]
    ids = [seed_base + i for i in range(n)]
    scenes = gen.sample(traffic, lanes, ids, ids)
    desc = {"kind": "generator", "checkpoint": "bundled" if checkpoint in (None, "", "default", "bundled") else str(checkpoint),
            "family": gen.family, "model_id": gen.model_id, "num_scenes": n, "seeds": [seed_base, seed_base + n],
            "traffic": traffic_levels, "lanes": lane_counts, "draw": "uniform"}
    return scenes, desc


def _describe(scenes: Sequence[Any], kind: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, **extra, "num_scenes": len(scenes), "model_ids": sorted({s.model_id for s in scenes}),
            "traffic_counts": {t: sum(s.traffic == t for s in scenes) for t in sorted({s.traffic for s in scenes})}}


def _split_by_run(scenes: Sequence[Any], fraction: float = SCENE_HELDOUT_FRACTION) -> tuple[list[Any], list[Any]]:
    """Hold out every scene of a fixed subset of simulation runs (``Scene.seed``): scenes of one run are
    correlated, so a split inside a run would leak. One run only: split by position."""
    runs = sorted({s.seed for s in scenes})
    if len(runs) >= 2:
        rng = np.random.default_rng(HELDOUT_SEED)
        held_runs = set(rng.choice(runs, size=max(1, round(fraction * len(runs))), replace=False).tolist())
        train = [s for s in scenes if s.seed not in held_runs]
        held = [s for s in scenes if s.seed in held_runs]
    else:
        cut = len(scenes) - max(1, round(fraction * len(scenes)))
        train, held = list(scenes[:cut]), list(scenes[cut:])
    if not train or not held:
        raise ValueError(f"cannot split {len(scenes)} scenes into training and held-out sets; give heldout scenes")
    return train, held


def resolve_scenes(scenes: Sequence[Any] | None = None, heldout_scenes: Sequence[Any] | None = None,
                   scenes_dir: str | None = None, heldout_scenes_dir: str | None = None,
                   num_scenes: int = 4000, num_heldout_scenes: int = 600,
                   scene_checkpoint: str | None = None) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """The training and held-out scene lists and ``meta["scene_source"]`` (see the module docstring)."""
    from aigc_synth.scenes.dataset import read_scenes

    generator_train = scenes is None and scenes_dir is None
    if scenes is not None:
        train, train_desc = list(scenes), _describe(scenes, "list")
    elif scenes_dir is not None:
        train = read_scenes(scenes_dir)
        train_desc = _describe(train, "dir", path=str(scenes_dir))
    else:
        train, train_desc = sample_generator_scenes(num_scenes, SCENE_TRAIN_SEED_BASE, scene_checkpoint)
    if heldout_scenes is not None:
        held, held_desc = list(heldout_scenes), _describe(heldout_scenes, "list")
    elif heldout_scenes_dir is not None:
        held = read_scenes(heldout_scenes_dir)
        held_desc = _describe(held, "dir", path=str(heldout_scenes_dir))
    elif generator_train:
        held, held_desc = sample_generator_scenes(num_heldout_scenes, SCENE_HELDOUT_SEED_BASE, scene_checkpoint)
    else:
        train, held = _split_by_run(train)
        held_desc = _describe(held, "split", of=train_desc.get("path", "list"), by="simulation run (Scene.seed)",
                              fraction=SCENE_HELDOUT_FRACTION)
        train_desc = {**_describe(train, train_desc["kind"], **({"path": train_desc["path"]} if "path" in train_desc else {})),
                      "heldout_split": "simulation runs (Scene.seed) held out"}
    if not train or not held:
        raise ValueError(f"no scenes to train on ({len(train)}) or to hold out ({len(held)})")
    overlap = set(train) & set(held)
    if overlap:
        raise ValueError(f"{len(overlap)} held-out scenes also appear in the training scenes; the sets must be disjoint")
    return train, held, {"train": train_desc, "heldout": held_desc}


def classifier_loss(model: DomainClassifier, x: torch.Tensor, codes: torch.Tensor,
                    counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training loss of the domain classifier (and of the downstream benchmark's): cross-entropy
    per factor plus 4 × the smooth-L1 of the vehicle count, scaled by ``MAX_VEHICLES``; returns
    (loss, cross-entropy, count loss)."""
    logits, count, _ = model(x)
    ce = sum(F.cross_entropy(lg, codes[:, f]) for f, lg in enumerate(logits))
    count_loss = F.smooth_l1_loss(count / MAX_VEHICLES, counts / MAX_VEHICLES)
    return ce + 4.0 * count_loss, ce, count_loss


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """[-1, 1] batch → flipped, shifted (≤ 4 px, reflect), sometimes blurred, with light noise."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = 4
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    x = padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]
    if torch.rand(1, generator=gen).item() < 0.5:
        sigma = 0.3 + 0.9 * torch.rand(1, generator=gen).item()
        x = TF.gaussian_blur(x, kernel_size=[5, 5], sigma=[sigma, sigma])
    noise = torch.randn(x.shape, generator=gen) * (0.06 * torch.rand(b, 1, 1, 1, generator=gen))
    return (x + noise).clamp(-1, 1)


@torch.no_grad()
def evaluate_classifier(model: DomainClassifier, images: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor,
                        batch: int = 500) -> dict[str, Any]:
    """Held-out accuracy per factor and vehicle-count MAE."""
    model.eval()
    preds, count_pred = [], []
    for s in range(0, len(images), batch):
        logits, count, _ = model(images[s:s + batch])
        preds.append(torch.stack([lg.argmax(1) for lg in logits], 1)); count_pred.append(count)
    pred = torch.cat(preds)
    out: dict[str, Any] = {"n": len(images)}
    for f, name in enumerate(DEFAULT_SCHEMA.names):
        out[f"accuracy_{name}"] = round(float((pred[:, f] == codes[:, f]).float().mean()), 4)
    out["accuracy_all_factors"] = round(float((pred == codes).all(1).float().mean()), 4)
    out["count_mae"] = round(float((torch.cat(count_pred) - counts).abs().mean()), 4)
    return out


def train_domain_classifier(out_path: str, steps: int = 1500, batch_size: int = 128, train_pool: int = 30000,
                            heldout: int = 5000, seed: int = 0, threads: int = 0, stem: int = 16,
                            progress: Callable[[int, dict], None] | None = None, *, source: str = "procedural",
                            scenes: Sequence[Any] | None = None, heldout_scenes: Sequence[Any] | None = None,
                            scenes_dir: str | None = None, heldout_scenes_dir: str | None = None,
                            num_scenes: int = 4000, num_heldout_scenes: int = 600, scene_checkpoint: str | None = None,
                            reference_scenes_dir: str | None = None) -> dict[str, Any]:
    """Train, evaluate on the held-out set, export atomically; return the checkpoint's metadata.

    ``source="procedural"`` (default) or ``"scenes"`` (see the module docstring for the scene
    arguments; ``num_scenes`` / ``num_heldout_scenes`` size the generator's scene lists).
    ``reference_scenes_dir`` (scenes only) adds a second held-out evaluation on another scene
    source, e.g. SUMO held-out scenes, stored as ``meta["heldout_reference"]``.
    """
    from aigc_synth.io.checkpoint import save_checkpoint

    if source not in SOURCES:
        raise ValueError(f"unknown classifier data source {source!r}; available: {list(SOURCES)}")
    if source == "procedural" and any(v is not None for v in (scenes, heldout_scenes, scenes_dir, heldout_scenes_dir,
                                                               reference_scenes_dir)):
        raise ValueError("scene arguments need source='scenes'")
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    reference = None
    if source == "procedural":
        images, codes, counts = render_pool(train_pool, TRAIN_SEED)
        ho_images, ho_codes, ho_counts = render_pool(heldout, HELDOUT_SEED)
    else:
        train_scenes, held_scenes, scene_source = resolve_scenes(scenes, heldout_scenes, scenes_dir, heldout_scenes_dir,
                                                                 num_scenes, num_heldout_scenes, scene_checkpoint)
        images, codes, counts = render_scene_pool(train_scenes, train_pool, TRAIN_SEED)
        ho_images, ho_codes, ho_counts = render_scene_pool(held_scenes, heldout, HELDOUT_SEED)
        if reference_scenes_dir is not None:
            from aigc_synth.scenes.dataset import read_scenes

            ref_scenes = read_scenes(reference_scenes_dir)
            if set(ref_scenes) & set(train_scenes):
                raise ValueError(f"{reference_scenes_dir} shares scenes with the training scenes")
            reference = (render_scene_pool(ref_scenes, heldout, HELDOUT_SEED),
                         _describe(ref_scenes, "dir", path=str(reference_scenes_dir)))
        torch.manual_seed(seed)  # the scene sampler must not decide the initial weights
    render_seconds = time.perf_counter() - t0
    model = DomainClassifier(DEFAULT_SCHEMA.cardinalities, stem=stem)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, train_pool, (batch_size,), generator=gen)
        x = augment(images[idx].float() / 127.5 - 1.0, gen)
        loss, ce, count_loss = classifier_loss(model, x, codes[idx], counts[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step(); sched.step()
        if progress and (step % 50 == 0 or step == steps):
            progress(step, {"loss": loss.item(), "ce": ce.item(), "count": count_loss.item()})
    model.eval()
    held = evaluate_classifier(model, ho_images, ho_codes, ho_counts)
    recipe = {"stem": stem, "steps": steps, "batch_size": batch_size, "train_pool": train_pool, "train_seed": TRAIN_SEED,
              "heldout_seed": HELDOUT_SEED, "seed": seed, "optimizer": "AdamW lr 2e-3 one-cycle",
              "augment": "flip, shift<=4px, blur p=.5, noise<=0.06"}
    if source == "procedural":
        meta = {"heldout": held, "train_seconds": round(time.perf_counter() - t0, 1), "recipe": recipe,
                "source": "procedural"}
    else:
        meta = {"heldout": held, "train_seconds": round(time.perf_counter() - t0, 1), "render_seconds": round(render_seconds, 1),
                "recipe": {**recipe, "render_resolution": SCENE_RESOLUTION, "heldout_images": heldout,
                           "count_target": "visible vehicles (renderer boxes), unclipped; loss scaled by MAX_VEHICLES"},
                "source": "scenes", "scene_source": scene_source}
        if reference is not None:
            (r_images, r_codes, r_counts), r_desc = reference
            meta["heldout_reference"] = {**evaluate_classifier(model, r_images, r_codes, r_counts), "scene_source": r_desc}
    save_checkpoint({"format": CLASSIFIER_FORMAT, "schema": DEFAULT_SCHEMA.to_dict(),
                     "model_config": {"width": model.width, "feature_dim": model.feature_dim, "stem": model.stem},
                     "state_dict": {k: v.detach().contiguous() for k, v in model.state_dict().items()},
                     "meta": meta}, out_path)
    return meta
