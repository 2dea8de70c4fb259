"""Evaluation against real renders of scenes, with layout fidelity.

A scene reference pairs every generated image with a **scene**: the generated image is drawn for
that scene's layout (layout-conditioned models; models without layouts just get the conditions),
and the real image is the renderer's picture of the same scene under the same weather and time
with an independent cosmetic seed. So FD, recall and coverage compare like with like, and the
renderer's boxes are the layout every image was asked for.

Layout fidelity (:mod:`aigc_synth.metrics.layout`: a vehicle detector trained only on real renders,
COCO AP50 and box recall from pycocotools), three rows on the same boxes:

* ``generated``: the detector on the generated images, scored against their requested boxes;
* ``real``: the detector on the real renders of the same scenes (the ceiling);
* ``shuffled``: the generated images scored against another sample's boxes (the floor: what
  images that ignore the layout would score).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aigc_synth.seeds import derive_seeds
from aigc_synth.schema import ConditionSchema
from aigc_synth.scenes.format import Scene

#: The domain classifier trained on scene renders (procedural's is the wrong instrument for them).
SCENE_CLASSIFIER = str(Path(__file__).resolve().parent.parent / "assets" / "scene_classifier.pt")
#: Seed stream of the real renders' cosmetics (independent of the generated set's latent seeds).
REFERENCE_SCENE_SEED = 525_252


def evaluation_scenes(codes: np.ndarray, seed: int, schema: ConditionSchema, scenes_dir: str | None = None,
                      scene_checkpoint: str | None = None, road: str | None = None, spread: bool = False
                      ) -> tuple[list[Scene], np.ndarray]:
    """The scene of each evaluated sample ``i``, exactly as a layout job with ``job.seed=seed``
    would pick it (given scenes: ``i mod n``; else sampled by the scene model at the sample's
    traffic level), and ``codes`` with traffic set to each scene's own level. ``road``: one road
    kind for every sample (given scenes: only those of that kind; sampled: as a job whose plan
    names that road), None: as a job that names none (given scenes: all; sampled: straight). ``spread``
    (given scenes only): take as many scenes as there are samples at even steps through the folder instead
    of its first ones — a folder is written cell by cell, so a small sample of its first scenes holds one
    road / traffic / lane-count cell."""
    from aigc_synth.errors import EvaluationError
    from aigc_synth.sampling.layout import SceneSource, layout_job_schema

    from aigc_synth.models.scene_families import load_scene_generator, resolve_scene_checkpoint

    job: dict[str, Any] = {"seed": int(seed), "compute_batch": 64, "scenes": scenes_dir}
    roads = [road or "straight"]
    if not scenes_dir:
        path = resolve_scene_checkpoint(scene_checkpoint)
        gen = load_scene_generator(path)
        job.update(scene_checkpoint=str(path), scene_model_id=gen.model_id)
        roads = list(gen.roads)
    source = SceneSource(job)
    codes = np.asarray(codes, np.int64)
    if road is not None and road not in roads:
        raise EvaluationError(f"road {road!r}: the scene model was trained on {roads}")
    if source.scenes is not None:
        if road is not None:
            source.scenes = [s for s in source.scenes if s.road.kind == road]
            if not source.scenes:
                raise EvaluationError(f"{scenes_dir} holds no scenes on a {road} road")
        if spread:
            source.scenes = _evenly_spaced(source.scenes, len(codes))
        return source.scenes_for(np.arange(len(codes)), codes, schema)
    if road is None:
        return source.scenes_for(np.arange(len(codes)), codes, schema)
    with_road = layout_job_schema(schema, roads)  # the job's plan schema: the model's factors, then road
    if with_road is not schema:
        codes = np.concatenate([codes, np.full((len(codes), 1), roads.index(road), np.int64)], axis=1)
    scenes, codes = source.scenes_for(np.arange(len(codes)), codes, with_road)
    return scenes, codes[:, :len(schema.names)]


def _evenly_spaced(items: list, n: int) -> list:
    """``n`` items at even steps through ``items`` (all of them when there are not more)."""
    if len(items) <= n:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


def scene_reference(scenes: Sequence[Scene], codes: np.ndarray, schema: ConditionSchema, resolution: int,
                    seed: int = REFERENCE_SCENE_SEED) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """(real renders uint8 (n, R, R, 3), boxes per image (k, 4), visible fraction per box); the
    cosmetic seed of image ``i`` is ``derive_seeds(seed, i)``."""
    from aigc_synth.data.scene_render import render_labelled

    seeds = derive_seeds(seed, np.arange(len(scenes)))
    return render_labelled(scenes, codes, seeds, schema, resolution)


def layout_images(gen, scenes: Sequence[Scene], codes: np.ndarray, seeds: np.ndarray, chunk: int = 256,
                  progress: bool = False) -> np.ndarray:
    """Generated images for ``scenes`` (a layout model draws each scene's layout; others ignore it)."""
    from tqdm import tqdm

    from aigc_synth.data.layout import scene_layouts
    from aigc_synth.models.registry import get_family
    from aigc_synth.sampling.sampler import generate_images

    uses_layout = get_family(gen.family).layout
    out = np.empty((len(codes), gen.resolution, gen.resolution, 3), np.uint8)
    for s in tqdm(range(0, len(codes), chunk), desc="sample", unit="batch", disable=not progress):
        lay = scene_layouts(scenes[s:s + chunk], gen.resolution) if uses_layout else None
        out[s:s + chunk] = generate_images(gen, codes[s:s + chunk], seeds[s:s + chunk], layouts=lay)
    return out


def layout_fidelity(generated: np.ndarray, real: np.ndarray, boxes: Sequence[np.ndarray], visible: Sequence[np.ndarray],
                    detector_path: str | None = None) -> dict[str, Any]:
    """AP50 / box recall of the generated images, the real renders (ceiling) and the generated
    images against shuffled boxes (floor); see the module docstring."""
    from aigc_synth.metrics.layout import load_vehicle_detector, score_layout

    det = load_vehicle_detector(detector_path)
    rolled = list(np.roll(np.arange(len(boxes)), 1))  # sample i gets sample i-1's boxes
    gen = score_layout(det, generated, list(boxes), list(visible))
    ceiling = score_layout(det, real, list(boxes), list(visible))
    floor = score_layout(det, generated, [boxes[j] for j in rolled], [visible[j] for j in rolled])
    return {"detector_id": det.detector_id, "generated": gen, "real": ceiling, "shuffled": floor,
            "ap50_ratio_to_real": gen["ap50"] / ceiling["ap50"] if ceiling["ap50"] else None,
            "recall_ratio_to_real": gen["recall"] / ceiling["recall"] if ceiling["recall"] else None}


