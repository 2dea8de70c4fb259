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
import functools
import json
import math
import os
import time
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from aigc_synth.config import DataConfig, TrainConfig
from aigc_synth.data.datasets import FolderDataset, ProceduralDrivingDataset
from aigc_synth.data.scene_images import SceneImageDataset
from aigc_synth.data.scene_render import render_scene
from aigc_synth.errors import UsageError
from aigc_synth.io.checkpoint import TRAIN_STATE_FORMAT, load_checkpoint, save_checkpoint
from aigc_synth.models.exported import GENERATOR_FORMAT, current_model_config, export_generator
from aigc_synth.errors import CheckpointError
from aigc_synth.models.configs import ImageModelConfig
from aigc_synth.models.registry import Family, build_discriminator, build_generator, get_family
from aigc_synth.sampling.sampler import to_uint8
from aigc_synth.seeds import EPOCH_ORDER_STREAM, latents_for_seeds
from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema
from aigc_synth.training.steps import TrainContext, train_step_for

GRID_COLUMNS = 8


def _to_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float().div_(127.5).sub_(1.0)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):  # BatchNorm statistics are copied, not averaged
        b_ema.copy_(b)


#: A family without a second network (diffusion) still gets the loop's second optimiser: over this,
#: a tensor that no step ever touches (torch refuses an optimiser with no parameters).
_UNUSED = torch.zeros(0, requires_grad=True)


def _procedural(data: DataConfig, model: ImageModelConfig, schema: ConditionSchema, train: TrainConfig):
    return ProceduralDrivingDataset(length=2**62, seed=train.seed, resolution=model.resolution, schema=schema)


def _folder(data: DataConfig, model: ImageModelConfig, schema: ConditionSchema, train: TrainConfig):
    if not data.folder or not data.labels_csv:
        raise ValueError("data.source=folder needs data.folder and data.labels_csv")
    return FolderDataset(data.folder, data.labels_csv, schema=schema, resolution=model.resolution)


def _scene_renders(data: DataConfig, model: ImageModelConfig, schema: ConditionSchema, train: TrainConfig):
    from aigc_synth.scenes.dataset import read_scenes

    if not data.scenes:
        raise UsageError("data.source=scenes needs data.scenes (a directory of scene Parquet: a scene job's output)")
    scenes = read_scenes(data.scenes)
    print(f"scenes: {len(scenes)} from {data.scenes}")
    return SceneImageDataset(scenes, seed=train.seed, resolution=model.resolution, schema=schema)


def _bdd100k(data: DataConfig, model: ImageModelConfig, schema: ConditionSchema, train: TrainConfig):
    from aigc_synth.data.bdd100k import BDD100KDataset, format_skipped

    if not data.images or not data.labels:
        raise UsageError("data.source=bdd100k needs data.images (image directory) and data.labels (labels JSON)")
    if get_family(model.family).layout:  # boxes, lanes and drivable areas → the layout raster
        from aigc_synth.data.annotated_images import bdd100k_layout_dataset

        ds = bdd100k_layout_dataset(data.images, data.labels, data.lanes, data.drivable, schema, model.resolution,
                                    data.bdd100k_mapping, getattr(model, "layout_unknown_flags", False))
        print(f"bdd100k: {ds.summary()}")
        return ds
    if data.lanes or data.drivable:
        print("bdd100k: data.lanes / data.drivable are read by the layout families only; ignored")
    ds = BDD100KDataset(data.images, data.labels, schema, model.resolution, mapping=data.bdd100k_mapping)
    print(f"bdd100k: {len(ds)} frames, {format_skipped(ds.skipped)}")  # a mapping that drops most frames shows here
    return ds


def _coco(data: DataConfig, model: ImageModelConfig, schema: ConditionSchema, train: TrainConfig):
    from aigc_synth.data.annotated_images import coco_layout_dataset

    if not data.images or not data.labels:
        raise UsageError("data.source=coco needs data.images (the directory file_name is relative to) and "
                         "data.labels (instances.json)")
    if data.lanes or data.drivable:
        raise UsageError("data.lanes / data.drivable are BDD100K label files (data.source=bdd100k); COCO has boxes only")
    ds = coco_layout_dataset(data.images, data.labels, schema, model.resolution, data.bdd100k_mapping,
                             getattr(model, "layout_unknown_flags", False))
    print(f"coco: {ds.summary()}")
    return ds


#: ``data.source`` → the dataset builder ``(data, model, schema, train) → Dataset``; a family lists the
#: sources it can train on (``Family.data_sources``).
DATA_SOURCES: dict[str, Callable[..., Any]] = {"procedural": _procedural, "folder": _folder, "scenes": _scene_renders,
                                              "bdd100k": _bdd100k, "coco": _coco}


def make_training_data(data: DataConfig, model: ImageModelConfig, schema: ConditionSchema, train: TrainConfig):
    """The training set ``data.source`` names (:data:`DATA_SOURCES`); UsageError for an unknown one."""
    if data.source not in DATA_SOURCES:
        raise UsageError(f"unknown data.source {data.source!r}; use one of {', '.join(repr(k) for k in DATA_SOURCES)}")
    return DATA_SOURCES[data.source](data, model, schema, train)


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


@torch.no_grad()
def layout_sample_grid(generator: torch.nn.Module, data, rows: int = 15, columns: int = GRID_COLUMNS, seed: int = 1234) -> np.ndarray:
    """Layout models: row ``r`` = weather × time combination ``r`` on one real scene of ``data``
    (the first column is that scene rendered for real; for annotated data, the photo in its own
    conditions), the other columns share a latent each."""
    schema = data.schema
    combos = [c for c in schema.combinations()]
    picked, seen = [], set()
    for c in combos:  # one row per weather × time pair (traffic comes from the scene)
        key = (c["weather"], c["time_of_day"])
        if key not in seen:
            seen.add(key)
            picked.append(c)
    picked = picked[:rows]
    z = latents_for_seeds(np.arange(columns - 1) + seed, generator.z_dim)
    was_training = generator.training
    generator.eval()
    out = []
    for r, cond in enumerate(picked):
        item = data.batch([r * 7919])
        codes = item["codes"][0].clone()
        codes[schema.names.index("weather")] = schema.factors[schema.names.index("weather")][1].index(cond["weather"])
        codes[schema.names.index("time_of_day")] = schema.factors[schema.names.index("time_of_day")][1].index(cond["time_of_day"])
        if hasattr(data, "scenes"):
            real = render_scene(data.scenes[int(item["scene_index"][0])], cond["weather"], cond["time_of_day"], 7,
                                data.resolution).image
        else:  # annotated photos: the frame as it was taken (its own conditions)
            real = item["image"][0].permute(1, 2, 0).numpy()
        layout = item["layout"]
        fake = to_uint8(generator(z, codes[None].expand(columns - 1, -1), layout.expand(columns - 1, -1, -1, -1)))
        out.append(np.concatenate([real[None], fake]))
    generator.train(was_training)
    grid = np.stack(out)
    n_rows, n_cols, r = grid.shape[0], grid.shape[1], grid.shape[2]
    return grid.transpose(0, 2, 1, 3, 4).reshape(n_rows * r, n_cols * r, 3)


def resolve_device(name: str) -> torch.device:
    """``train.device`` → a torch device: ``auto`` is the first CUDA device when there is one, else
    the CPU; asking for CUDA where there is none fails here, before any work."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N; got {name!r}") from exc
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N; got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={name}: this machine has no CUDA device (torch {torch.__version__}); "
                             "use train.device=cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"train.device={name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def _on_cpu(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` itself when it lives on the CPU, else a CPU copy: sample grids and periodic evaluation
    run on the CPU whatever the training device, so they are the same computation everywhere."""
    param = next(module.parameters(), None)
    return module if param is None or param.device.type == "cpu" else copy.deepcopy(module).cpu()


class _StepBatches(torch.utils.data.Dataset):
    """Item ``step`` = the training batch of that step (``data.batch`` of its ``batch_size`` indices):
    a pure function of the step, so loader workers that build batches ahead change nothing."""

    def __init__(self, data, batch_size: int, steps: int, seed: int = 0):
        self.data, self.batch_size, self.steps, self.seed = data, int(batch_size), int(steps), int(seed)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> dict[str, Any]:
        return self.data.batch(step_item_indices(len(self.data), self.seed, step, self.batch_size))


def _as_is(batch: Any) -> Any:
    return batch


#: a dataset at least this long is a stream: every item is already a fresh random draw (procedural
#: images, renders of random scenes under random conditions), read in index order
STREAM_LENGTH = 2**62


@functools.lru_cache(maxsize=4)  # a step needs one epoch's order, two at an epoch's end: drawn once, not per step
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([EPOCH_ORDER_STREAM, int(seed), int(epoch)]).permutation(n)


def step_item_indices(n: int, seed: int, step: int, batch_size: int) -> list[int]:
    """The dataset items of training step ``step``: window ``step·B .. (step+1)·B`` of the item stream.
    A finite data set of ``n`` items (a folder, a BDD100K or COCO export) is read epoch by epoch, each
    epoch in its own permutation drawn from (``seed``, epoch): annotation files come sorted (by video,
    by traffic level, ...) and reading them in file order gives batches of one kind at a time and a
    cycle the GAN follows (measured on issue 28's export, ordered by traffic level: see
    docs/experiments.md). A pure function of the step, so resuming and loader workers change nothing."""
    lo, hi = step * batch_size, (step + 1) * batch_size
    if n >= STREAM_LENGTH:
        return list(range(lo, hi))
    return [int(_epoch_order(n, seed, i // n)[i % n]) for i in range(lo, hi)]


def step_batches(data, batch_size: int, start: int, steps: int, workers: int, seed: int = 0):
    """The batches of steps ``start .. steps - 1`` in order (items: :func:`step_item_indices`);
    ``workers > 0`` builds them in that many processes (rendering scene images is the CPU cost a GPU
    step would otherwise wait for)."""
    if workers <= 0:
        n = len(data)
        return (data.batch(step_item_indices(n, seed, s, batch_size)) for s in range(start, steps))
    return iter(torch.utils.data.DataLoader(_StepBatches(data, batch_size, steps, seed), sampler=range(start, steps), batch_size=None,
                                            num_workers=workers, collate_fn=_as_is, prefetch_factor=4,
                                            # the workers' base seed from a generator of their own: drawn from the
                                            # global one it would shift every later latent of the run
                                            generator=torch.Generator().manual_seed(0)))


def _growable(key: str) -> bool:
    """Generator parameters a fine-tune may add to a trained state (they start in a neutral state that
    leaves the images unchanged): the layout GAN's per-vehicle code convs."""
    return key.startswith("stem_norm.instance.") or ".norm.instance." in key


def _critic_growable(key: str) -> bool:
    """Critic parameters a fine-tune may add: the auxiliary class heads."""
    return key.startswith("aux_heads.") or ".aux_heads." in key


def _moments_with_new_parameters(saved: dict[str, Any], module: torch.nn.Module, new_keys: set[str]) -> dict[str, Any]:
    """A saved optimiser state re-indexed for ``module`` after it gained the parameters ``new_keys``.

    The saved state indexes the old module's parameters in registration order, which is this
    module's order with the new parameters left out (modules are only ever added, never moved).
    The new parameters get no entry, so Adam starts their moments at their first step."""
    names = [n for n, _ in module.named_parameters()]
    old_names = [n for n in names if n not in new_keys]
    groups = saved["param_groups"]
    if len(groups) != 1 or len(groups[0]["params"]) != len(old_names):
        raise CheckpointError(f"the source's optimiser has {sum(len(g['params']) for g in groups)} parameters "
                              f"in {len(groups)} groups, expected {len(old_names)} in 1")
    position = {n: i for i, n in enumerate(names)}
    old_index = groups[0]["params"]
    state = {position[old_names[old_index.index(k)]]: v for k, v in saved["state"].items()}
    return {"state": state, "param_groups": [{**groups[0], "params": list(range(len(names)))}]}


def _has_critic(D: torch.nn.Module) -> bool:
    """Whether the family trains a critic (a GAN); diffusion's placeholder critic has no parameters."""
    return any(True for _ in D.parameters())


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _exported_as_fine_tune_source(exported: dict[str, Any], path: Path | str, ctx: TrainContext,
                                  critic_warmup: int) -> dict[str, Any]:
    """An exported generator (``generator.pt``, a bundled checkpoint) as a fine-tune source: its weights
    become the generator and the EMA, the optimisers start fresh. This is how training continues on a
    machine that kept only the exported file (the bundled checkpoints are fine-tuned session after
    session). A GAN's critic is not exported, and restarting it against a trained generator was
    measured harmful (see :func:`load_training_state`), so a GAN family needs ``critic_warmup`` > 0:
    the fresh critic trains alone first (:func:`train`)."""
    if _has_critic(ctx.D) and critic_warmup <= 0:
        raise CheckpointError(f"{path} is an exported generator: a {exported.get('family')} run needs a critic, which "
                              "it lacks; fine-tune from the run's state.pt, or set train.critic_warmup=<steps> to "
                              "train a fresh critic alone first (a few hundred)")
    # a post-hoc colour calibration (training/calibration.py) was fitted to the source's weights: the
    # fine-tune changes them, so the table is dropped (refit it on the result)
    weights = {k: v for k, v in exported["state_dict"].items() if k != "row_calibration"}
    return {"format": TRAIN_STATE_FORMAT, "schema": exported["schema"],
            "model_config": {**exported["model_config"], "family": exported.get("family")},
            "G": weights, "G_ema": weights, "D": {}, "opt_g": ctx.opt_g.state_dict(), "opt_d": ctx.opt_d.state_dict()}


def load_training_state(path: Path | str, family: Family, cfg: ImageModelConfig, schema: ConditionSchema, ctx: TrainContext,
                        G_ema: torch.nn.Module | None, resume: bool, critic_warmup: int = 0) -> dict[str, Any]:
    """The one way weights enter a run, for resume and fine-tune alike; returns the state dict.

    The source must be a training state (or, for a fine-tune of a family without a critic, an exported
    generator: :func:`_exported_as_fine_tune_source`) for the same schema whose ``family.arch_keys`` equal this
    run's (everything else, e.g. learning rates, may differ: the run's own values apply). The
    generator, its EMA and both optimisers' moments always load. The critic loads too, except for
    parts the source lacks (:func:`_critic_growable`: the auxiliary classifier), which start fresh
    (its other parameters keep their moments). A fine-tune (not a resume) may also add a generator
    layer that :func:`_growable` names: the existing parameters keep their moments, only the new
    ones start fresh. (With both optimisers restarted, a layout GAN fine-tune's critic loss fell
    2.4 → 0.9 at the restart and the run ended with FD 1.96 → 6.86.) A source trained with an option
    that has since been retired is refused (:func:`~aigc_synth.models.exported.current_model_config`).
    ``resume=True`` additionally restores the RNGs and the step counter, which is what makes a
    resumed run equal an uninterrupted one.
    """
    state = load_checkpoint(path)
    if state.get("format") == GENERATOR_FORMAT and not resume:
        state = _exported_as_fine_tune_source(state, path, ctx, critic_warmup)
    if state.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} is not a training state (use a run's state.pt)")
    if state["schema"] != schema.to_dict():
        raise CheckpointError(f"{path} was trained for another condition schema")
    source = state["model_config"]
    # an architecture key added after the source was written is absent there: it had the key's default
    defaults = {f.name: f.default for f in fields(family.config) if f.default is not MISSING}
    # a fresh critic (an exported source) is built from this run's keys: only the generator's must match
    critic_only = set(family.critic_keys) - set(family.generator_keys) if not state["D"] else set()
    for key in ("family", *family.arch_keys):
        if key not in critic_only and source.get(key, defaults.get(key)) != getattr(cfg, key):
            raise CheckpointError(f"{path} has model.{key}={source.get(key)!r}, this run {getattr(cfg, key)!r}; "
                                  "use a new train.out_dir for another architecture")
    current_model_config(family.name, source, str(path))  # a state trained with a retired option is refused
    g_missing, g_unexpected = ctx.G.load_state_dict(state["G"], strict=False)
    if g_unexpected or any(not _growable(k) for k in g_missing):
        raise CheckpointError(f"{path}: generator does not match (missing {g_missing}, unexpected {g_unexpected})")
    if g_missing and resume:
        raise CheckpointError(f"{path} lacks generator layers this run has ({g_missing[0]}, …): "
                              "start a fine-tune instead (train.init_from=<that state.pt> with a new train.out_dir)")
    fresh_critic = not state["D"]  # an exported generator: the critic starts fresh (and warms up alone)
    missing, unexpected = ctx.D.load_state_dict(state["D"], strict=False)
    if unexpected or not fresh_critic and any(not _critic_growable(k) for k in missing):
        raise CheckpointError(f"{path}: discriminator does not match (missing {missing}, unexpected {unexpected})")
    if G_ema is not None:  # a gained layer starts equal in G and G_ema; a source without an EMA starts it at G
        G_ema.load_state_dict(state["G_ema"] if state.get("G_ema") else ctx.G.state_dict(), strict=not g_missing)
    if not g_missing:
        ctx.opt_g.load_state_dict(state["opt_g"])
    else:  # the generator gained layers: its old parameters keep their moments, the new ones start fresh
        ctx.opt_g.load_state_dict(_moments_with_new_parameters(state["opt_g"], ctx.G, set(g_missing)))
    for group in ctx.opt_g.param_groups:  # the moments carry over; the hyper-parameters are this run's
        group["lr"], group["betas"] = cfg.lr_g, (cfg.beta1, cfg.beta2)
    # a critic that gained heads: its old parameters keep their moments, the new ones start fresh
    if not fresh_critic:
        ctx.opt_d.load_state_dict(_moments_with_new_parameters(state["opt_d"], ctx.D, set(missing)) if missing else state["opt_d"])
    for group in ctx.opt_d.param_groups:
        group["lr"], group["betas"] = cfg.lr_d, (cfg.beta1, cfg.beta2)
    if resume:
        ctx.aug_gen.set_state(state["aug_rng"])
        torch.set_rng_state(state["torch_rng"])
    return state


def train(train_cfg: TrainConfig, model_cfg: ImageModelConfig, data_cfg: DataConfig,
          schema: ConditionSchema = DEFAULT_SCHEMA, progress: bool = True, *, dataset: Any = None) -> Path:
    """Train (or resume, or fine-tune) and export the generator; return the exported checkpoint path.

    ``model_cfg`` is the family's own config dataclass (:mod:`aigc_synth.models.configs`); the
    loop calls the family's objective (``training/steps.py``) with the batch's ``family.inputs`` and knows nothing else about the family.

    ``dataset``: train on this dataset (anything with ``batch(indices)`` like the built-in ones,
    e.g. a :class:`SceneImageDataset` with ``condition_probs``) instead of the one ``data_cfg``
    describes; its ``description`` attribute (plain data), or its class name, is stored in the
    exported meta as ``data["dataset"]``.
    """
    family = get_family(model_cfg.family)
    if not isinstance(model_cfg, family.config):
        raise TypeError(f"model config for family {family.name!r} must be a {family.config.__name__}, got {type(model_cfg).__name__}")
    if getattr(model_cfg, "aux_class_weight", 0.0) < 0:
        raise ValueError(f"model.aux_class_weight must be >= 0, got {model_cfg.aux_class_weight}")
    if train_cfg.init_from and not Path(train_cfg.init_from).is_file():
        raise FileNotFoundError(f"train.init_from: no such file {train_cfg.init_from}")
    device = resolve_device(train_cfg.device)
    if train_cfg.loader_workers < 0:
        raise ValueError(f"train.loader_workers must be >= 0, got {train_cfg.loader_workers}")
    out = Path(train_cfg.out_dir)  # created only once every input has been checked (below)
    if train_cfg.threads > 0:
        torch.set_num_threads(train_cfg.threads)
    torch.manual_seed(train_cfg.seed)
    # an unknown data.source is refused first, naming the known ones
    data = make_training_data(data_cfg, model_cfg, schema, train_cfg) if dataset is None else dataset
    if dataset is None and data_cfg.source not in family.data_sources:
        raise UsageError(f"model.family={family.name} trains on data.source={' or '.join(family.data_sources)}, "
                         f"not {data_cfg.source!r}" + (f" (its generator takes {', '.join(family.inputs)} per sample)" if family.inputs else ""))
    train_step = train_step_for(family)
    params = asdict(model_cfg)
    data_meta = asdict(data_cfg)
    if dataset is not None:
        data_meta["dataset"] = getattr(dataset, "description", None) or type(dataset).__name__
    G = build_generator(model_cfg.family, schema.cardinalities, factors=schema.factors, **params).to(device)
    D = build_discriminator(model_cfg.family, schema.cardinalities, **params).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if model_cfg.ema_decay > 0 else None
    betas = (model_cfg.beta1, model_cfg.beta2)
    g_params = list(G.parameters()) + (list(D.parameters()) if family.joint_optimizer else [])
    ctx = TrainContext(G=G, D=D, opt_g=torch.optim.Adam(g_params, lr=model_cfg.lr_g, betas=betas),
                       opt_d=torch.optim.Adam(list(D.parameters()) or [_UNUSED], lr=model_cfg.lr_d, betas=betas), cfg=model_cfg,
                       aug_gen=torch.Generator().manual_seed(train_cfg.seed + 1))

    state_path, export_path, log_path = out / "state.pt", out / "generator.pt", out / "log.jsonl"
    best_path = out / "best_generator.pt"
    evaluator = None
    best_metric = "kid" if train_cfg.best_metric == "auto" else train_cfg.best_metric
    if train_cfg.eval_every > 0:
        from aigc_synth.training.periodic_eval import BEST_METRICS, PeriodicEvaluator

        if best_metric not in BEST_METRICS:
            raise ValueError(f"train.best_metric must be one of {sorted(BEST_METRICS)} or auto, got {train_cfg.best_metric!r}")
        evaluator = PeriodicEvaluator(data, schema, train_cfg.eval_samples, train_cfg.classifier)
    best: dict[str, Any] = {}  # {"value", "step"} of the best evaluation so far
    start = 0
    critic_warmup = 0  # steps in which only the critic learns (a GAN fine-tuned from an exported generator)
    if train_cfg.resume and state_path.exists():
        state = load_training_state(state_path, family, model_cfg, schema, ctx, G_ema, resume=True)
        start = int(state["step"])
        critic_warmup = int(state.get("critic_warmup", 0))
        best = dict(state.get("best", {}))
        print(f"resuming from {state_path} at step {start}")
    elif train_cfg.init_from:
        source = load_training_state(train_cfg.init_from, family, model_cfg, schema, ctx, G_ema, resume=False,
                                     critic_warmup=train_cfg.critic_warmup)
        print(f"fine-tuning from {train_cfg.init_from}")
        if not source["D"] and _has_critic(D):
            critic_warmup = train_cfg.critic_warmup
            print(f"a fresh critic: it trains alone for the first {critic_warmup} steps")
    G, D, opt_g, opt_d, aug_gen = ctx.G, ctx.D, ctx.opt_g, ctx.opt_d, ctx.aug_gen
    # every input is checked (data, model, state to resume or fine-tune from): only now the run directory
    (out / "samples").mkdir(parents=True, exist_ok=True)

    def save_all(step: int, elapsed: float) -> None:
        save_checkpoint({
            "format": TRAIN_STATE_FORMAT, "step": step, "model_config": params, "schema": schema.to_dict(),
            "G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "G_ema": G_ema.state_dict() if G_ema is not None else {}, "aug_rng": aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(), "train_config": asdict(train_cfg), "best": best,
            "critic_warmup": critic_warmup,
        }, state_path)
        export_generator(export_path, family=model_cfg.family, model_params=params, schema=schema,
                         generator=G_ema if G_ema is not None else G,
                         meta={"step": step, "train_config": asdict(train_cfg), "recipe": params,
                               "data": data_meta, "train_seconds_this_run": round(elapsed, 1),
                               "device": str(device)})

    def save_grid(step: int) -> None:
        net = _on_cpu(G_ema if G_ema is not None else G)
        # a generator with per-sample inputs (a layout) is previewed on items of its data, others per condition
        grid = layout_sample_grid(net, data) if family.inputs else sample_grid(net, schema)
        tmp = out / "samples" / f".tmp-step_{step:06d}.png"
        Image.fromarray(grid).save(tmp)
        os.replace(tmp, out / "samples" / f"step_{step:06d}.png")

    # The EMA copies G until ema_start in a run from scratch (early weights are not worth averaging). A
    # fine-tune averages from its first step instead: its EMA starts as the source's, which copying the
    # raw G over for ema_start steps would throw away (measured: visibly noisier samples at step 100).
    ema_start = 0 if train_cfg.init_from else model_cfg.ema_start
    B = train_cfg.batch_size
    G.train(); D.train()
    t0 = time.time()
    bar = tqdm(range(start, train_cfg.steps), initial=start, total=train_cfg.steps, disable=not progress,
               desc=f"train {model_cfg.family}", unit="step")
    batches = step_batches(data, B, start, train_cfg.steps, train_cfg.loader_workers, train_cfg.seed)
    if start < critic_warmup:  # the critic's warm-up: the generator's steps run at learning rate 0 (no change)
        _set_lr(opt_g, 0.0)
    with open(log_path, "a") as log:
        for step in bar:
            t_step = time.time()
            batch = next(batches)
            inputs = {name: batch[name].to(device) for name in family.inputs}
            frozen = step < critic_warmup
            scalars = train_step(ctx, _to_unit(batch["image"]).to(device), batch["codes"].to(device), **inputs)
            if step + 1 == critic_warmup:  # warm-up over: the generator's moments start at its first real step
                _set_lr(opt_g, model_cfg.lr_g)
                opt_g.state.clear()
            if G_ema is not None and not frozen:  # (a frozen G's batch statistics still move: keep the EMA's)
                ema_update(G_ema, G, 0.0 if step < ema_start else model_cfg.ema_decay)
            done = step + 1
            values = {k: float(v.item()) for k, v in scalars.items()}
            if not all(math.isfinite(v) for v in values.values()):
                raise FloatingPointError(f"non-finite loss at step {done}: {values}")
            if done % train_cfg.log_every == 0 or done == train_cfg.steps:
                rec = {"step": done, **{k: round(v, 5) for k, v in values.items()},
                       "sec_per_step": round(time.time() - t_step, 4), "elapsed_s": round(time.time() - t0, 1)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix({k: f"{v:.3f}" for k, v in values.items() if k.startswith("loss")})
            if evaluator is not None and (done % train_cfg.eval_every == 0 or done == train_cfg.steps):
                metrics = evaluator(_on_cpu(G_ema if G_ema is not None else G))
                log.write(json.dumps({"step": done, **metrics}) + "\n")
                log.flush()
                value = metrics[f"eval_{best_metric}"]
                higher = BEST_METRICS[best_metric]
                if not best or (value > best["value"] if higher else value < best["value"]):
                    best = {"value": value, "step": done, "metric": best_metric}
                    export_generator(best_path, family=model_cfg.family, model_params=params, schema=schema,
                                     generator=G_ema if G_ema is not None else G,
                                     meta={"step": done, "best": best, "eval": metrics, "train_config": asdict(train_cfg),
                                           "recipe": params, "data": data_meta})
            if done % train_cfg.sample_every == 0 or done == train_cfg.steps:
                save_grid(done)
            if done % train_cfg.checkpoint_every == 0 or done == train_cfg.steps:
                save_all(done, time.time() - t0)
    if start >= train_cfg.steps and not export_path.exists():
        save_all(start, 0.0)
    return export_path
