"""Training loop for the conditional generators (cGAN with hinge loss, DCGAN baseline with BCE).

Per step: one discriminator update on real vs generated images, then one generator update; both
see the same DiffAugment when enabled. The EMA generator (if ``ema_decay > 0``) is what gets
exported. Everything is deterministic given ``train.seed`` (data batch ``k`` is the same on every
run), which is what makes resuming exact: the training state holds weights, optimisers, EMA and
the step counter.

Outputs in ``train.out_dir``: ``log.jsonl`` (losses), ``samples/step_XXXXXX.png`` grids (one row
per condition combination, columns share a latent), ``state.pt`` (training state) and
``generator.pt`` (the exported generator).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from tqdm import tqdm

from aigc_synth.config import DataConfig, ModelConfig, TrainConfig
from aigc_synth.data.datasets import FolderDataset, ProceduralDrivingDataset
from aigc_synth.io.checkpoint import TRAIN_STATE_FORMAT, CheckpointError, export_generator, load_checkpoint, save_checkpoint
from aigc_synth.models.cvae import cvae_loss, reparameterise
from aigc_synth.models.registry import build_discriminator, build_generator
from aigc_synth.sampling.sampler import to_uint8
from aigc_synth.sampling.seeds import latents_for_seeds
from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema
from aigc_synth.training.augment import diff_augment

GRID_COLUMNS = 8


def _to_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float().div_(127.5).sub_(1.0)


def d_loss_fn(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    raise ValueError(f"unknown loss {kind!r}; use 'hinge' or 'bce'")


def g_loss_fn(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    raise ValueError(f"unknown loss {kind!r}; use 'hinge' or 'bce'")


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):  # BatchNorm statistics are copied, not averaged
        b_ema.copy_(b)


def make_training_data(data: DataConfig, model: ModelConfig, schema: ConditionSchema, train: TrainConfig):
    if data.source == "procedural":
        return ProceduralDrivingDataset(length=2**62, seed=train.seed, resolution=model.resolution, schema=schema)
    if data.source == "folder":
        if not data.folder or not data.labels_csv:
            raise ValueError("data.source=folder needs data.folder and data.labels_csv")
        return FolderDataset(data.folder, data.labels_csv, schema=schema, resolution=model.resolution)
    raise ValueError(f"unknown data.source {data.source!r}; use 'procedural' or 'folder'")


@torch.no_grad()
def sample_grid(generator: torch.nn.Module, schema: ConditionSchema, columns: int = GRID_COLUMNS, seed: int = 1234) -> np.ndarray:
    """One row per condition combination, one shared latent per column → uint8 (rows*R, cols*R, 3)."""
    combos = schema.encode_many(schema.combinations())
    z = latents_for_seeds(np.arange(columns) + seed, generator.z_dim)
    rows = []
    was_training = generator.training
    generator.eval()
    for code in combos:
        codes = torch.as_tensor(code)[None].expand(columns, -1)
        rows.append(to_uint8(generator(z, codes)))
    generator.train(was_training)
    grid = np.stack(rows)  # (rows, cols, R, R, 3)
    n_rows, n_cols, r = grid.shape[0], grid.shape[1], grid.shape[2]
    return grid.transpose(0, 2, 1, 3, 4).reshape(n_rows * r, n_cols * r, 3)


def aux_class_loss(class_logits: list[torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
    """Sum over condition factors of the cross-entropy of the discriminator's class heads."""
    return sum(F.cross_entropy(logits, codes[:, f]) for f, logits in enumerate(class_logits))


def gan_step(G, D, opt_g, opt_d, real, codes, model_cfg: ModelConfig, policies, aug_gen):
    """One discriminator update then one generator update; returns (loss_d, loss_g, D(real), D(fake))."""
    B = real.shape[0]
    z = torch.randn(B, G.z_dim)
    fake_codes = codes  # generate the same condition mix as the real batch
    with torch.no_grad():
        fake = G(z, fake_codes)
    real_in = diff_augment(real, policies, aug_gen) if policies else real
    fake_in = diff_augment(fake, policies, aug_gen) if policies else fake
    use_aux = model_cfg.aux_class_weight > 0
    if use_aux:  # the auxiliary classifier learns from real images only (fakes would teach it their errors)
        real_logits, real_class_logits = D(real_in, codes, return_aux=True)
    else:
        real_logits = D(real_in, codes)
    fake_logits = D(fake_in, fake_codes)
    loss_d = d_loss_fn(model_cfg.loss, real_logits, fake_logits)
    if use_aux:
        loss_d = loss_d + aux_class_loss(real_class_logits, codes)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    if model_cfg.mode_seeking > 0:
        # pair each sample of the first half with one of the second half that has the same
        # condition but another z; MSGAN's term grows when their images are alike
        half = B // 2
        fake_codes = torch.cat([codes[:half], codes[:half], codes[2 * half:]])
    fake = G(z, fake_codes)
    fake_in = diff_augment(fake, policies, aug_gen) if policies else fake
    if use_aux:
        fake_logits_g, fake_class_logits = D(fake_in, fake_codes, return_aux=True)
        loss_g = (g_loss_fn(model_cfg.loss, fake_logits_g)
                  + model_cfg.aux_class_weight * aux_class_loss(fake_class_logits, fake_codes))
    else:
        loss_g = g_loss_fn(model_cfg.loss, D(fake_in, fake_codes))
    if model_cfg.mode_seeking > 0:
        ratio = (fake[:half] - fake[half:2 * half]).abs().mean() / (z[:half] - z[half:2 * half]).abs().mean()
        loss_g = loss_g + model_cfg.mode_seeking / (ratio + 1e-5)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return loss_d, loss_g, real_logits, fake_logits


def init_weights_from(path: str, model_cfg: ModelConfig, schema: ConditionSchema, G, D, G_ema, opt_g) -> None:
    """Load another run's training state as the starting point of a fine-tune.

    The generator must match exactly (same family, sizes and schema); the discriminator may lack
    only the auxiliary-classifier heads, which then start from their initialisation. The
    discriminator's optimiser starts afresh (its parameter list changed); the generator's continues.
    """
    state = load_checkpoint(path)
    if state.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} is not a training state (use a run's state.pt)")
    source = state["model_config"]
    if state["schema"] != schema.to_dict():
        raise CheckpointError(f"{path} was trained for another condition schema")
    for key in ("family", "resolution", "z_dim", "base_channels", "d_base_channels", "embed_dim"):
        if source.get(key) != getattr(model_cfg, key):
            raise CheckpointError(f"{path} has model.{key}={source.get(key)!r}, this run {getattr(model_cfg, key)!r}")
    G.load_state_dict(state["G"])
    missing, unexpected = D.load_state_dict(state["D"], strict=False)
    if unexpected or any(not k.startswith("aux_heads.") for k in missing):
        raise CheckpointError(f"{path}: discriminator does not match (missing {missing}, unexpected {unexpected})")
    if G_ema is not None and state.get("G_ema"):
        G_ema.load_state_dict(state["G_ema"])
    opt_g.load_state_dict(state["opt_g"])
    for group in opt_g.param_groups:  # the moments carry over; the hyper-parameters are this run's
        group["lr"], group["betas"] = model_cfg.lr_g, (model_cfg.beta1, model_cfg.beta2)


def train(train_cfg: TrainConfig, model_cfg: ModelConfig, data_cfg: DataConfig,
          schema: ConditionSchema = DEFAULT_SCHEMA, progress: bool = True) -> Path:
    """Train (or resume) and export the generator; return the exported checkpoint path."""
    if model_cfg.aux_class_weight < 0 or (model_cfg.aux_class_weight > 0 and model_cfg.family != "cgan"):
        raise ValueError(f"model.aux_class_weight must be ≥ 0 and is only supported by family cgan "
                         f"(got {model_cfg.aux_class_weight} for {model_cfg.family!r})")
    if train_cfg.init_from and not Path(train_cfg.init_from).is_file():
        raise FileNotFoundError(f"train.init_from: no such file {train_cfg.init_from}")
    out = Path(train_cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    if train_cfg.threads > 0:
        torch.set_num_threads(train_cfg.threads)
    torch.manual_seed(train_cfg.seed)
    data = make_training_data(data_cfg, model_cfg, schema, train_cfg)
    params = asdict(model_cfg)
    G = build_generator(model_cfg.family, schema.cardinalities, **params)
    D = build_discriminator(model_cfg.family, schema.cardinalities, **params)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if model_cfg.ema_decay > 0 else None
    betas = (model_cfg.beta1, model_cfg.beta2)
    is_vae = model_cfg.family == "cvae"  # D is then the encoder, trained jointly with the decoder G
    opt_g = torch.optim.Adam(list(G.parameters()) + (list(D.parameters()) if is_vae else []), lr=model_cfg.lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=model_cfg.lr_d, betas=betas)
    aug_gen = torch.Generator().manual_seed(train_cfg.seed + 1)

    state_path, export_path, log_path = out / "state.pt", out / "generator.pt", out / "log.jsonl"
    best_path = out / "best_generator.pt"
    evaluator = None
    if train_cfg.eval_every > 0:
        from aigc_synth.training.periodic_eval import BEST_METRICS, PeriodicEvaluator

        if train_cfg.best_metric not in BEST_METRICS:
            raise ValueError(f"train.best_metric must be one of {sorted(BEST_METRICS)}, got {train_cfg.best_metric!r}")
        evaluator = PeriodicEvaluator(data, schema, train_cfg.eval_samples, train_cfg.classifier)
    best: dict[str, Any] = {}  # {"value", "step"} of the best evaluation so far
    start = 0
    if train_cfg.resume and state_path.exists():
        state = load_checkpoint(state_path)
        if state.get("format") != TRAIN_STATE_FORMAT:
            raise CheckpointError(f"{state_path} is not a training state")
        # a state saved before a config key existed was trained with that key's default
        saved = {**asdict(ModelConfig()), **state["model_config"]}
        if saved != params or state["schema"] != schema.to_dict():
            raise CheckpointError(f"{state_path} was trained with another model config or schema; use a new train.out_dir")
        G.load_state_dict(state["G"]); D.load_state_dict(state["D"])
        opt_g.load_state_dict(state["opt_g"]); opt_d.load_state_dict(state["opt_d"])
        if G_ema is not None:
            G_ema.load_state_dict(state["G_ema"])
        aug_gen.set_state(state["aug_rng"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        best = dict(state.get("best", {}))
        print(f"resuming from {state_path} at step {start}")
    elif train_cfg.init_from:
        init_weights_from(train_cfg.init_from, model_cfg, schema, G, D, G_ema, opt_g)
        print(f"fine-tuning from {train_cfg.init_from}")

    def save_all(step: int, elapsed: float) -> None:
        save_checkpoint({
            "format": TRAIN_STATE_FORMAT, "step": step, "model_config": params, "schema": schema.to_dict(),
            "G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "G_ema": G_ema.state_dict() if G_ema is not None else {}, "aug_rng": aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(), "train_config": asdict(train_cfg), "best": best,
        }, state_path)
        export_generator(export_path, family=model_cfg.family, model_params=params, schema=schema,
                         generator=G_ema if G_ema is not None else G,
                         meta={"step": step, "train_config": asdict(train_cfg), "recipe": params,
                               "data": asdict(data_cfg), "train_seconds_this_run": round(elapsed, 1)})

    def save_grid(step: int) -> None:
        grid = sample_grid(G_ema if G_ema is not None else G, schema)
        tmp = out / "samples" / f".tmp-step_{step:06d}.png"
        Image.fromarray(grid).save(tmp)
        os.replace(tmp, out / "samples" / f"step_{step:06d}.png")

    B = train_cfg.batch_size
    policies = ("translation", "cutout") if model_cfg.diffaugment else ()
    G.train(); D.train()
    t0 = time.time()
    bar = tqdm(range(start, train_cfg.steps), initial=start, total=train_cfg.steps, disable=not progress,
               desc=f"train {model_cfg.family}", unit="step")
    with open(log_path, "a") as log:
        for step in bar:
            t_step = time.time()
            batch = data.batch(range(step * B, (step + 1) * B))
            real, codes = _to_unit(batch["image"]), batch["codes"]
            if is_vae:
                mu, logvar = D(real, codes)
                recon = G(reparameterise(mu, logvar), codes)
                loss_total, loss_d, loss_g = cvae_loss(real, recon, mu, logvar, model_cfg.kl_weight)  # logged as rec / kl
                opt_g.zero_grad(set_to_none=True)
                loss_total.backward()
                opt_g.step()
                real_logits = fake_logits = torch.zeros(1)
            else:
                loss_d, loss_g, real_logits, fake_logits = gan_step(G, D, opt_g, opt_d, real, codes, model_cfg, policies, aug_gen)
            if G_ema is not None:
                ema_update(G_ema, G, 0.0 if step < model_cfg.ema_start else model_cfg.ema_decay)
            done = step + 1
            if not math.isfinite(loss_d.item()) or not math.isfinite(loss_g.item()):
                raise FloatingPointError(f"non-finite loss at step {done}: loss_d={loss_d.item()} loss_g={loss_g.item()}")
            if done % train_cfg.log_every == 0 or done == train_cfg.steps:
                names = ("loss_rec", "loss_kl") if is_vae else ("loss_d", "loss_g")
                rec = {"step": done, names[0]: round(loss_d.item(), 5), names[1]: round(loss_g.item(), 5),
                       "d_real": round(real_logits.mean().item(), 4), "d_fake": round(fake_logits.mean().item(), 4),
                       "sec_per_step": round(time.time() - t_step, 4), "elapsed_s": round(time.time() - t0, 1)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix({names[0]: f"{loss_d.item():.3f}", names[1]: f"{loss_g.item():.3f}"})
            if evaluator is not None and (done % train_cfg.eval_every == 0 or done == train_cfg.steps):
                metrics = evaluator(G_ema if G_ema is not None else G)
                log.write(json.dumps({"step": done, **metrics}) + "\n")
                log.flush()
                value = metrics[f"eval_{train_cfg.best_metric}"]
                higher = BEST_METRICS[train_cfg.best_metric]
                if not best or (value > best["value"] if higher else value < best["value"]):
                    best = {"value": value, "step": done, "metric": train_cfg.best_metric}
                    export_generator(best_path, family=model_cfg.family, model_params=params, schema=schema,
                                     generator=G_ema if G_ema is not None else G,
                                     meta={"step": done, "best": best, "eval": metrics, "train_config": asdict(train_cfg),
                                           "recipe": params, "data": asdict(data_cfg)})
            if done % train_cfg.sample_every == 0 or done == train_cfg.steps:
                save_grid(done)
            if done % train_cfg.checkpoint_every == 0 or done == train_cfg.steps:
                save_all(done, time.time() - t0)
    if start >= train_cfg.steps and not export_path.exists():
        save_all(start, 0.0)
    return export_path
