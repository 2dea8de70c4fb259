"""Train the domain classifier on real procedural scenes (never on generated images).

The training pool and the held-out set come from different dataset seeds, so no held-out scene
is ever seen in training. Augmentations (flip, small shifts, blur, noise) make the classifier
robust to the softness and grain of generated images without touching the colour cues that
carry weather and time of day.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from aigc_synth.data.datasets import ProceduralDrivingDataset
from aigc_synth.data.procedural import MAX_VEHICLES
from aigc_synth.models.classifier import CLASSIFIER_INPUT, DomainClassifier
from aigc_synth.schema import DEFAULT_SCHEMA

from aigc_synth.metrics.domain import CLASSIFIER_FORMAT
TRAIN_SEED, HELDOUT_SEED = 7001, 9001


def render_pool(n: int, seed: int, chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` procedural scenes at the classifier's input size: images uint8 (n,3,S,S), codes, counts."""
    ds = ProceduralDrivingDataset(n, seed=seed, resolution=CLASSIFIER_INPUT)
    images, codes, counts = [], [], []
    for start in range(0, n, chunk):
        b = ds.batch(range(start, min(n, start + chunk)))
        images.append(b["image"]); codes.append(b["codes"]); counts.append(b["vehicle_count"])
    return torch.cat(images), torch.cat(codes), torch.cat(counts).float()


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
    out: dict[str, Any] = {"n": int(len(images))}
    for f, name in enumerate(DEFAULT_SCHEMA.names):
        out[f"accuracy_{name}"] = round(float((pred[:, f] == codes[:, f]).float().mean()), 4)
    out["accuracy_all_factors"] = round(float((pred == codes).all(1).float().mean()), 4)
    out["count_mae"] = round(float((torch.cat(count_pred) - counts).abs().mean()), 4)
    return out


def train_domain_classifier(out_path: str, steps: int = 1500, batch_size: int = 128, train_pool: int = 30000,
                            heldout: int = 5000, seed: int = 0, threads: int = 0, stem: int = 16,
                            progress: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Train, evaluate on the held-out set, export atomically; return the checkpoint's metadata."""
    from aigc_synth.io.checkpoint import save_checkpoint

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    images, codes, counts = render_pool(train_pool, TRAIN_SEED)
    ho_images, ho_codes, ho_counts = render_pool(heldout, HELDOUT_SEED)
    model = DomainClassifier(DEFAULT_SCHEMA.cardinalities, stem=stem)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, train_pool, (batch_size,), generator=gen)
        x = augment(images[idx].float() / 127.5 - 1.0, gen)
        logits, count, _ = model(x)
        ce = sum(F.cross_entropy(lg, codes[idx, f]) for f, lg in enumerate(logits))
        count_loss = F.smooth_l1_loss(count / MAX_VEHICLES, counts[idx] / MAX_VEHICLES)
        loss = ce + 4.0 * count_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step(); sched.step()
        if progress and (step % 50 == 0 or step == steps):
            progress(step, {"loss": loss.item(), "ce": ce.item(), "count": count_loss.item()})
    model.eval()
    held = evaluate_classifier(model, ho_images, ho_codes, ho_counts)
    meta = {"heldout": held, "train_seconds": round(time.perf_counter() - t0, 1),
            "recipe": {"stem": stem, "steps": steps, "batch_size": batch_size, "train_pool": train_pool, "train_seed": TRAIN_SEED,
                       "heldout_seed": HELDOUT_SEED, "seed": seed, "optimizer": "AdamW lr 2e-3 one-cycle",
                       "augment": "flip, shift<=4px, blur p=.5, noise<=0.06"}}
    save_checkpoint({"format": CLASSIFIER_FORMAT, "schema": DEFAULT_SCHEMA.to_dict(),
                     "model_config": {"width": model.width, "feature_dim": model.feature_dim, "stem": model.stem},
                     "state_dict": {k: v.detach().contiguous() for k, v in model.state_dict().items()},
                     "meta": meta}, out_path)
    return meta
