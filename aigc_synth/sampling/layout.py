"""Scenes for layout-conditioned image jobs: which scene sample ``i`` shows, and its labels.

Two sources, both a pure function of the job and the sample id (so rows stay byte-identical for
any batch, actor count or resume):

* **Given scenes** (``job.scenes`` = a scene job's output or any folder of scene Parquet): sample
  ``i`` shows scene ``i mod n`` in file order. Its ``traffic`` is the scene's own level: the
  plan's traffic value is replaced by it (a scene *is* its traffic).
* **Sampled scenes** (no ``job.scenes``): the scene model (``job.scene_checkpoint``, default the
  bundled one) samples sample ``i``'s scene at the plan's traffic level (and road kind), with a
  lane count and a seed drawn from streams of their own, so the scene never depends on the gate
  attempt or on z. ``scene_id`` = the sample id.

**Road kinds.** When the scenes can be on more than the straight road (a scene model trained on
several kinds, or given scenes holding several), the job's plan gets one more factor, ``road``,
after the image model's own (:func:`layout_job_schema`): a plan names road kinds as it names
weathers, rows carry a ``road`` column, and the image model never sees it (its codes are the
leading columns). A plan that names no road samples straight roads (:func:`plan_with_default_road`:
the bundled image model is trained on those). With given scenes the road, like the traffic level,
is the scene's own. One actor holds both models: the scene stage costs ~3 ms per
  scene against ~20 ms per image, and a second actor pool would split a 2-core machine's CPUs
  between two stages without gaining throughput.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aigc_synth.data.layout import scene_layouts
from aigc_synth.data.scene_render import scene_boxes
from aigc_synth.seeds import SCENE_LANES_STREAM, SCENE_SEED_STREAM, derive_seeds, uniform_from_seeds
from aigc_synth.schema import ConditionSchema
from aigc_synth.scenes.format import ROAD_KINDS, Scene

ROAD_FACTOR = "road"  # the plan factor of a road kind: scene jobs and layout image jobs



class SceneSource:
    """The scene of every sample id of a layout job (see the module docstring)."""

    def __init__(self, job: dict[str, Any]):
        self.job = job
        self.scenes: list[Scene] | None = None
        self.gen = None
        if job.get("scenes"):
            from aigc_synth.scenes.dataset import read_scenes

            self.scenes = read_scenes(job["scenes"])
            if not self.scenes:
                raise RuntimeError(f"job.scenes {job['scenes']} holds no scenes")
        else:
            from aigc_synth.models.scene_families import load_scene_generator

            self.gen = load_scene_generator(job["scene_checkpoint"])
            if self.gen.model_id != job["scene_model_id"]:
                raise RuntimeError("the scene checkpoint changed since the job was validated")

    def scenes_for(self, sample_ids: np.ndarray, codes: np.ndarray, schema: ConditionSchema,
                   seed: int | None = None) -> tuple[list[Scene], np.ndarray]:
        """(scene of each id, ``codes`` with the traffic factor (and the road factor, when the job
        has one) set to the scene's own); ``seed`` overrides the job seed (the serving endpoint:
        each request names its own)."""
        t = schema.names.index("traffic")
        levels = schema.factors[t][1]
        r = schema.names.index(ROAD_FACTOR) if ROAD_FACTOR in schema.names else None
        codes = codes.copy()
        if self.scenes is not None:
            scenes = [self.scenes[int(i) % len(self.scenes)] for i in sample_ids]
            codes[:, t] = [levels.index(s.traffic) for s in scenes]
            if r is not None:
                kinds = schema.factors[r][1]
                codes[:, r] = [kinds.index(s.road.kind) for s in scenes]
            return scenes, codes
        seed = self.job["seed"] if seed is None else int(seed)
        lanes_u = uniform_from_seeds(derive_seeds(seed, sample_ids, stream=SCENE_LANES_STREAM))
        lanes = [self.gen.lanes[min(int(u * len(self.gen.lanes)), len(self.gen.lanes) - 1)] for u in lanes_u]
        seeds = derive_seeds(seed, sample_ids, stream=SCENE_SEED_STREAM)
        roads = None if r is None else [schema.factors[r][1][c] for c in codes[:, r]]
        scenes = self.gen.sample([levels[c] for c in codes[:, t]], lanes, [int(s) for s in seeds],
                                 [int(i) for i in sample_ids], compute_batch=self.job["compute_batch"], roads=roads)
        return scenes, codes


def plan_with_default_road(plan: dict[str, Any], road: str = "straight") -> dict[str, Any]:
    """``plan`` (a PlanConfig as a dict) with the road pinned to ``road`` wherever it names none: a
    grid without a ``road`` factor, a mixture without ``road`` probabilities, list items without a
    ``road`` condition. Image jobs draw straight roads unless the plan names others, because the
    bundled image model was trained on straight-road renders and is measurably worse on the other
    kinds (docs/benchmarks.md, image jobs per road kind); scene jobs cross every kind by default."""
    plan = {**plan}
    kind = plan.get("kind", "grid")
    if kind == "grid" and ROAD_FACTOR not in (plan.get("factors") or {}):
        plan["factors"] = {**(plan.get("factors") or {}), ROAD_FACTOR: [road]}
    elif kind == "mixture" and ROAD_FACTOR not in (plan.get("probs") or {}):
        plan["probs"] = {**(plan.get("probs") or {}), ROAD_FACTOR: {road: 1.0}}
    elif kind == "list":
        plan["items"] = [{**item, "conditions": {ROAD_FACTOR: road, **item["conditions"]}}
                         if isinstance(item, dict) and isinstance(item.get("conditions"), dict) else item
                         for item in plan.get("items") or []]
    return plan


def layout_job_schema(model_schema: ConditionSchema, roads: Sequence[str]) -> ConditionSchema:
    """The plan schema of a layout job: the image model's factors, then ``road`` when the scenes can
    be on more than the straight road (``roads``: the kinds, in :data:`ROAD_KINDS` order). Straight
    only: the model's schema unchanged (older jobs keep their plans, columns and fingerprints)."""
    if list(roads) == ["straight"]:
        return model_schema
    return ConditionSchema.from_dict({**model_schema.to_dict(), ROAD_FACTOR: list(roads)})


def layouts_and_labels(scenes: Sequence[Scene], resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(layouts float32 (n, L, R, R), scene ids int64 (n,), boxes: object array of per-row lists of
    ``{x0, y0, x1, y1, agent, label, visible}`` dicts in pixels)."""
    layouts = scene_layouts(scenes, resolution)
    ids = np.array([s.scene_id for s in scenes], np.int64)
    boxes = np.empty(len(scenes), dtype=object)
    for n, s in enumerate(scenes):
        b = scene_boxes(s, resolution)
        boxes[n] = [{"x0": float(x0), "y0": float(y0), "x1": float(x1), "y1": float(y1), "agent": int(a), "label": lab,
                     "visible": float(v)}
                    for (x0, y0, x1, y1), a, lab, v in zip(b.boxes.tolist(), b.agents.tolist(), b.labels, b.visible.tolist())]
    return layouts, ids, boxes


def resolve_scene_source(job: Any, family: str, schema: ConditionSchema, checkpoint: Path) -> tuple[dict[str, Any], list[str]]:
    """The scene source of an image job (checked in the driver, before any work): ``({}, [])`` for
    condition-only models; else (the ResolvedJob fields ``layout``, ``scenes`` or
    ``scene_checkpoint`` + ``scene_model_id``; the road kinds its scenes can be on, in
    :data:`ROAD_KINDS` order). Raises JobSpecError with one clear line."""
    from aigc_synth.errors import CheckpointError, JobSpecError
    from aigc_synth.models.registry import get_family

    if not get_family(family).layout:
        if job.scenes or job.scene_checkpoint:
            raise JobSpecError(f"job.scenes / job.scene_checkpoint need a layout-conditioned checkpoint; {checkpoint} is a "
                               f"{family} model, which takes no layout")
        return {}, []
    if job.scenes:
        from aigc_synth.scenes.dataset import read_scenes
        from aigc_synth.scenes.format import SceneError

        path = Path(job.scenes).expanduser()
        if not path.exists():
            raise JobSpecError(f"job.scenes: no such directory {path}")
        try:
            scenes = read_scenes(path)
        except SceneError as exc:
            raise JobSpecError(f"job.scenes: {exc}") from None
        if not scenes:
            raise JobSpecError(f"job.scenes: {path} holds no scenes (its Parquet files have 0 rows; run a scene job first: job=scenes)")
        traffic = set(schema.values("traffic"))
        bad = sorted({s.traffic for s in scenes} - traffic)
        if bad:
            raise JobSpecError(f"job.scenes: traffic levels {bad} are not in the model's schema {sorted(traffic)}")
        kinds = {s.road.kind for s in scenes}
        return {"layout": True, "scenes": str(path.absolute())}, [k for k in ROAD_KINDS if k in kinds]
    from aigc_synth.models.scene_families import load_scene_generator, resolve_scene_checkpoint

    scene_ckpt = resolve_scene_checkpoint(job.scene_checkpoint)
    try:
        gen = load_scene_generator(scene_ckpt)
    except CheckpointError as exc:
        raise JobSpecError(f"job.scene_checkpoint: {exc}") from None
    missing = sorted(set(schema.values("traffic")) - set(gen.traffic))
    if missing:
        raise JobSpecError(f"job.scene_checkpoint {scene_ckpt} cannot sample traffic {missing} (trained on {list(gen.traffic)})")
    return {"layout": True, "scene_checkpoint": str(scene_ckpt.absolute()), "scene_model_id": gen.model_id}, list(gen.roads)
