"""Training for the traffic-scene families, behind the same ``aigc-synth train`` as the images.

Same run directory contract as :mod:`aigc_synth.training.trainer`: ``log.jsonl`` (losses, and the
validation loss every ``train.eval_every`` steps), ``state.pt`` (weights, optimiser, step: resume
is exact, because batch ``k`` is a pure function of ``(train.seed, k)``), ``generator.pt`` (the
exported scene generator, :mod:`aigc_synth.models.scene_families`) and ``best_generator.pt``, the
evaluation with the lowest ``train.best_metric``: ``val_mmd`` (the default) samples the model on the
validation scenes' cells and scores the distributions (:class:`SampleValidator`); ``val_loss`` is the
held-out negative log-likelihood, which can rank under-trained weights first (a head with fine bins
over-fits the loss while its samples still improve: docs/experiments.md, headway-coded gaps). ``scene_marginal`` is fitted in one pass and ``scene_random`` needs no data; both
still write ``generator.pt`` and ``log.jsonl``, so every family is used the same way.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from aigc_synth.config import DataConfig, TrainConfig
from aigc_synth.errors import CheckpointError, UsageError
from aigc_synth.io.checkpoint import TRAIN_STATE_FORMAT, load_checkpoint, save_checkpoint
from aigc_synth.models.configs import SceneARConfig, SceneModelConfig, SceneRandomConfig
from aigc_synth.scenes.dataset import read_scenes
from aigc_synth.scenes.format import LANE_COUNTS, ROAD_KINDS, TRAFFIC_LEVELS, Scene, SceneError
from aigc_synth.models.scene_families import CODINGS, build_scene_model, export_scene_generator, get_scene_family
from aigc_synth.scenes.baselines import MarginalSceneSampler

SCENE_STATE_FORMAT = TRAIN_STATE_FORMAT + "+scene"
#: ``train.best_metric`` values of the scene trainer (lower is better for both); ``auto`` means ``val_mmd``.
SCENE_BEST_METRICS = ("val_mmd", "val_loss")
VALIDATION_SEED = 31_337  # the sampling seed of every validation draw: checkpoints differ only by their weights
SAMPLES_PER_VALIDATION_SCENE = 2  # generated scenes per validation scene (halves the generated side's noise)


class SampleValidator:
    """``val_mmd`` of a scene model: how far its samples are from the validation scenes.

    Samples :data:`SAMPLES_PER_VALIDATION_SCENE` scenes in each validation scene's cell (road kind,
    traffic level, lane count; fixed seeds) and takes, per road kind, the MMD of every scene feature
    (:func:`aigc_synth.metrics.scenes.scene_mmd`, bandwidths from the validation scenes).
    ``val_mmd`` is the geometric mean over (road kind, feature): dividing every MMD by a fixed floor
    (the acceptance's MMD ÷ floor) shifts its logarithm by a constant, so this ranks checkpoints the
    same way as the geometric mean of MMD ÷ floor would for any floor, without a second SUMO set.
    """

    def __init__(self, val_set: list[Scene]):
        from aigc_synth.seeds import attempt_seeds

        rows = [sc for sc in val_set for _ in range(SAMPLES_PER_VALIDATION_SCENE)]
        self.traffic = [sc.traffic for sc in rows]
        self.lanes = [sc.num_lanes for sc in rows]
        self.roads = [sc.road.kind for sc in rows]
        self.ids = list(range(len(rows)))
        self.seeds = attempt_seeds(VALIDATION_SEED, np.arange(len(rows))).tolist()
        self.real = val_set

    def __call__(self, model: Any) -> dict[str, float]:
        from aigc_synth.metrics.scenes import geometric_mean_mmd
        from aigc_synth.models.scene_ar import sample_scenes

        generated = sample_scenes(model, self.traffic, self.lanes, self.seeds, self.ids, "validation", roads=self.roads)
        means = geometric_mean_mmd(generated, self.real)
        return {("val_mmd" if k == "all" else f"val_mmd_{k}"): round(v, 7) for k, v in means.items()}


def _split(scenes: list[Scene], fraction: float, seed: int) -> tuple[list[Scene], list[Scene]]:
    order = np.random.default_rng(seed).permutation(len(scenes))
    n_val = int(round(len(scenes) * fraction)) if len(scenes) > 1 else 0
    return [scenes[i] for i in order[n_val:]], [scenes[i] for i in order[:n_val]]


def _cells(scenes: list[Scene]) -> tuple[list[str], list[int], list[str]]:
    """The traffic levels, lane counts and road kinds present in ``scenes`` (what a model trained on them can be asked for)."""
    return ([t for t in TRAFFIC_LEVELS if any(sc.traffic == t for sc in scenes)],
            sorted({sc.num_lanes for sc in scenes}),
            [r for r in ROAD_KINDS if any(sc.road.kind == r for sc in scenes)])


def train_scene_model(train_cfg: TrainConfig, model_cfg: SceneModelConfig, data_cfg: DataConfig, progress: bool = True) -> Path:
    """Train / fit / export a scene family; return the exported generator's path."""
    if model_cfg.family not in SCENE_FITTERS:
        raise UsageError(f"not a scene family: {model_cfg.family!r}; available: {list(SCENE_FITTERS)}")
    if isinstance(model_cfg, SceneARConfig):  # before the scenes are read
        if train_cfg.best_metric not in SCENE_BEST_METRICS + ("auto",):
            raise UsageError(f"train.best_metric for a scene model must be one of {list(SCENE_BEST_METRICS)} or auto, "
                             f"got {train_cfg.best_metric!r}")
        for key, allowed in CODINGS.items():
            if getattr(model_cfg, key) not in allowed:
                raise UsageError(f"model.{key} must be one of {list(allowed)}, got {getattr(model_cfg, key)!r}")
    fitter = SCENE_FITTERS[model_cfg.family]
    out = Path(train_cfg.out_dir)  # created only once the inputs are checked (bad input leaves nothing behind)
    if not fitter.needs_scenes:
        return fitter.fit(train_cfg, model_cfg, [], {}, out, progress)
    if not data_cfg.scenes:
        raise UsageError(f"model={model_cfg.family} trains on scenes: give data.scenes=DIR "
                         "(python scripts/build_scene_dataset.py --num-scenes 18000 --out data/scenes --split train)")
    try:
        scenes = read_scenes(data_cfg.scenes)
    except SceneError as exc:
        raise UsageError(f"data.scenes: {exc}") from None
    if not scenes:
        raise UsageError(f"data.scenes: {data_cfg.scenes} holds no scenes (its Parquet files have 0 rows)")
    return fitter.fit(train_cfg, model_cfg, scenes, {"scenes": str(data_cfg.scenes), "num_scenes": len(scenes)}, out, progress)


def _fit_random(train_cfg: TrainConfig, cfg: SceneRandomConfig, scenes: list[Scene], data_meta: dict[str, Any], out: Path,
                progress: bool) -> Path:
    if not 0 <= cfg.speed_low <= cfg.speed_high:
        raise UsageError(f"model.speed_low/high must satisfy 0 <= low <= high, got {cfg.speed_low}, {cfg.speed_high}")
    out.mkdir(parents=True, exist_ok=True)
    export_scene_generator(out / "generator.pt", family=cfg.family, model_config=asdict(cfg), state={}, traffic=TRAFFIC_LEVELS,
                           lanes=LANE_COUNTS, roads=ROAD_KINDS, meta={"train_config": asdict(train_cfg)})
    _log(out / "log.jsonl", {"step": 0, "family": cfg.family, "note": "no parameters"})
    return out / "generator.pt"


def _fit_marginal(train_cfg: TrainConfig, cfg: SceneModelConfig, scenes: list[Scene], data_meta: dict[str, Any], out: Path,
                  progress: bool) -> Path:
    traffic, lanes, roads = _cells(scenes)
    state = MarginalSceneSampler.fit(scenes).to_dict()
    out.mkdir(parents=True, exist_ok=True)
    export_scene_generator(out / "generator.pt", family=cfg.family, model_config=asdict(cfg), state=state, traffic=traffic,
                           lanes=lanes, roads=roads, meta={"data": data_meta, "train_config": asdict(train_cfg)})
    _log(out / "log.jsonl", {"step": 0, "family": cfg.family, "fitted_on": len(scenes)})
    return out / "generator.pt"


def _log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _train_network(train_cfg: TrainConfig, cfg: SceneARConfig, scenes: list[Scene], data_meta: dict[str, Any], out: Path,
                   progress: bool) -> Path:
    """The optimisation loop of a scene family with a network (``scene_ar``)."""
    from aigc_synth.models.scene_ar import collate
    from aigc_synth.models.scene_tokens import encode_scene

    traffic, lanes, roads = _cells(scenes)

    if train_cfg.threads > 0:
        torch.set_num_threads(train_cfg.threads)
    torch.manual_seed(train_cfg.seed)
    train_set, val_set = _split(scenes, cfg.validation_fraction, train_cfg.seed)
    encoded = [encode_scene(sc) for sc in train_set]
    val_batch = collate([encode_scene(sc) for sc in val_set]) if val_set else None
    best_metric = "val_mmd" if train_cfg.best_metric == "auto" else train_cfg.best_metric
    validator = SampleValidator(val_set) if val_set and best_metric == "val_mmd" else None
    params = asdict(cfg)
    model = build_scene_model(cfg.family, params)
    model.fit_road_bank([sc.road for sc in train_set])  # a buffer: a resumed state restores the same bank
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state_path, export_path, best_path = out / "state.pt", out / "generator.pt", out / "best_generator.pt"
    start, best = 0, {}
    if train_cfg.resume and state_path.exists():
        state = load_checkpoint(state_path)
        if state.get("format") != SCENE_STATE_FORMAT:
            raise CheckpointError(f"{state_path} is not a scene training state; use a new train.out_dir")
        for key in get_scene_family(cfg.family).arch_keys:
            if state["model_config"].get(key) != params[key]:
                raise CheckpointError(f"{state_path} has model.{key}={state['model_config'].get(key)!r}, this run {params[key]!r}; "
                                      "use a new train.out_dir for another architecture")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, best = int(state["step"]), dict(state.get("best", {}))
        if best and best.get("metric", "val_loss") != best_metric:  # another selection rule: its best is not comparable
            print(f"train.best_metric={best_metric}: the state's best ({best.get('metric', 'val_loss')}) is not carried over")
            best = {}
        print(f"resuming from {state_path} at step {start}")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"data": data_meta, "train_config": asdict(train_cfg), "recipe": params,
            "parameters": sum(p.numel() for p in model.parameters())}

    def lr_at(step: int) -> float:  # cosine from lr to lr * lr_final_fraction
        frac = min(step / max(train_cfg.steps, 1), 1.0)
        return cfg.lr * (cfg.lr_final_fraction + (1 - cfg.lr_final_fraction) * 0.5 * (1 + math.cos(math.pi * frac)))

    def export(path: Path, step: int, extra: dict[str, Any]) -> None:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        export_scene_generator(path, family=cfg.family, model_config=params, state=weights, traffic=traffic, lanes=lanes,
                               roads=roads, meta={**meta, "step": step, **extra})

    def save_all(step: int) -> None:
        save_checkpoint({"format": SCENE_STATE_FORMAT, "step": step, "model_config": params, "model": model.state_dict(),
                         "opt": opt.state_dict(), "best": best, "train_config": asdict(train_cfg)}, state_path)
        export(export_path, step, {})

    B = train_cfg.batch_size
    t0 = time.time()
    model.train()
    bar = tqdm(range(start, train_cfg.steps), initial=start, total=train_cfg.steps, disable=not progress, desc=f"train {cfg.family}",
               unit="step")
    for step in bar:
        t_step = time.time()
        rows = np.random.default_rng([train_cfg.seed, step]).integers(0, len(encoded), B)  # batch k: a function of (seed, k)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        losses = model.loss(collate([encoded[i] for i in rows]))
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        done = step + 1
        values = {k: float(v.detach()) for k, v in losses.items()}
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"non-finite loss at step {done}: {values}")
        if done % train_cfg.log_every == 0 or done == train_cfg.steps:
            _log(out / "log.jsonl", {"step": done, **{k: round(v, 5) for k, v in values.items()}, "lr": round(lr_at(step), 7),
                                     "sec_per_step": round(time.time() - t_step, 4), "elapsed_s": round(time.time() - t0, 1)})
            bar.set_postfix(loss=f"{values['loss']:.3f}")
        if val_batch is not None and train_cfg.eval_every > 0 and (done % train_cfg.eval_every == 0 or done == train_cfg.steps):
            model.eval()
            with torch.no_grad():
                val = {f"val_{k}": round(float(v), 5) for k, v in model.loss(val_batch).items()}
            if validator is not None:
                val.update(validator(model))
            model.train()
            _log(out / "log.jsonl", {"step": done, **val})
            if math.isfinite(val[best_metric]) and (not best or val[best_metric] < best["value"]):
                best = {"value": val[best_metric], "step": done, "metric": best_metric}
                export(best_path, done, {"best": best})
        if done % train_cfg.checkpoint_every == 0 or done == train_cfg.steps:
            save_all(done)
    if start >= train_cfg.steps and not export_path.exists():
        save_all(start)
    return export_path


@dataclass(frozen=True)
class SceneFitter:
    """How ``aigc-synth train`` produces a scene family's generator.pt: ``fit(train, model, scenes, data_meta,
    out, progress) → path``; ``needs_scenes``: False for a family that learns nothing from data."""

    fit: Callable[..., Path]
    needs_scenes: bool = True


#: One per registered scene family (:data:`aigc_synth.models.scene_families.SCENE_FAMILIES`).
SCENE_FITTERS: dict[str, SceneFitter] = {
    "scene_ar": SceneFitter(_train_network),
    "scene_marginal": SceneFitter(_fit_marginal),
    "scene_random": SceneFitter(_fit_random, needs_scenes=False),
}
