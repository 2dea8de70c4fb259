"""Fixtures in BDD100K's formats: rendered frames with detection labels and, for layout models, lane
and drivable-area labels (kept apart from the readers in :mod:`aigc_synth.data.bdd100k`).
Tests, the re-weathering figure and the condition-transfer measurement build their data with these."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from aigc_synth.data.bdd100k import bdd100k_attributes, box_labels, inverse_values, resolve_mapping
from aigc_synth.schema import DEFAULT_SCHEMA


def _fixture_codes(n: int, seed: int) -> np.ndarray:
    """Condition codes of the fixture's ``n + 4`` frames: ``DEFAULT_SCHEMA.combinations()[perm[i % 45]]``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    combos = DEFAULT_SCHEMA.encode_many(DEFAULT_SCHEMA.combinations())
    order = np.random.default_rng(seed).permutation(len(combos))
    return combos[order[np.arange(n + 4) % len(combos)]]


def fixture_scenes(n: int, seed: int) -> list:
    """The traffic scenes ``write_bdd100k_fixture(out, n, seed, layout_labels=True)`` renders, one per
    frame (``n + 4``): :class:`~aigc_synth.scenes.baselines.RandomSceneSampler` at the frame's traffic
    level with 2, 3, 4, 2, ... lanes."""
    from aigc_synth.scenes.baselines import RandomSceneSampler
    from aigc_synth.seeds import derive_seeds

    codes = _fixture_codes(n, seed)
    t, levels = DEFAULT_SCHEMA.names.index("traffic"), DEFAULT_SCHEMA.values("traffic")
    seeds = derive_seeds(seed, np.arange(len(codes)), stream=1)
    return [RandomSceneSampler().sample(levels[c[t]], 2 + i % 3, int(s_) % 2**32, scene_id=i)
            for i, (c, s_) in enumerate(zip(codes, seeds))]


def write_scene_frames(out_dir: str | Path, scenes: Sequence[Any], conditions: Sequence[Mapping[str, str]],
                       seeds: Sequence[int], resolution: int = 64,
                       mapping: str | Path | Mapping[str, Any] | None = None, image_format: str = "png") -> tuple[Path, Path]:
    """Export GIVEN traffic scenes, each under a GIVEN weather and time of day, as a BDD100K data set in
    ``out_dir``; return ``(images_dir, labels_json)``.

    Frame ``i`` is ``scenes[i]`` rendered through the ego camera
    (:func:`~aigc_synth.data.scene_render.render_scene`) under ``conditions[i]["weather"]`` /
    ``["time_of_day"]`` with cosmetic seed ``seeds[i] mod 2**62``, saved as ``images/<i:06d>.<image_format>``.
    ``labels.json`` holds its boxes (category = agent kind) and attributes mapped through ``mapping``
    (weather, timeofday, scene, plus the mapping's ``traffic`` attribute = the scene's own level, as
    ``aigc-synth export --format bdd100k`` writes it); ``lanes.json`` and ``drivable.json`` hold its lane
    markings and drivable area in Scalabel ``poly2d``
    (:func:`~aigc_synth.data.annotation_layout.annotations_from_scene`), exactly as
    ``write_bdd100k_fixture(layout_labels=True)`` writes them. Every frame is usable (no skip cases).
    """
    from aigc_synth.data.annotation_layout import annotations_from_scene
    from aigc_synth.data.scene_render import render_scene
    from aigc_synth.scenes.format import require_straight

    if not (len(scenes) == len(conditions) == len(seeds)):
        raise ValueError(f"{len(scenes)} scenes, {len(conditions)} conditions, {len(seeds)} seeds: give one of each per frame")
    # the lane and drivable-area labels are straight-road only: refuse before the first image is written
    require_straight(scenes, "the BDD100K scene export (lane lines, drivable area)")
    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    m = resolve_mapping(mapping, DEFAULT_SCHEMA)
    inverse = {factor: inverse_values(spec["values"]) for factor, spec in m["factors"].items()}
    frames, lane_frames, area_frames = [], [], []
    for i, (scene, cond, seed) in enumerate(zip(scenes, conditions, seeds)):
        name = f"{i:06d}.{image_format}"
        image = render_scene(scene, cond["weather"], cond["time_of_day"], int(seed) % 2**62, resolution).image
        Image.fromarray(image).save(images_dir / name, **({"quality": 95} if image_format == "jpg" else {}))
        ann = annotations_from_scene(scene, resolution)
        attrs = bdd100k_attributes({"weather": cond["weather"], "time_of_day": cond["time_of_day"], "traffic": scene.traffic},
                                  m, inverse)
        frames.append({"name": name, "attributes": attrs, "labels": box_labels(ann.boxes, "car")})
        lane_frame, area_frame = _shape_frames(name, ann)
        lane_frames.append(lane_frame)
        area_frames.append(area_frame)
    labels_json = out / "labels.json"
    labels_json.write_text(json.dumps(frames, indent=1) + "\n")
    (out / "lanes.json").write_text(json.dumps(lane_frames, indent=1) + "\n")
    (out / "drivable.json").write_text(json.dumps(area_frames, indent=1) + "\n")
    return images_dir, labels_json


def _shape_frames(name: str, ann: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """BDD100K (Scalabel) lane and drivable-area frames of one image's FrameAnnotations: the scene's
    edge lines solid, its separators dashed, the asphalt one ``area/drivable`` polygon."""
    lanes = [{"id": str(k), "category": f"lane/{style}",
              "attributes": {"laneDirection": "parallel", "laneStyle": "solid" if k in (0, len(ann.lanes) - 1) else "dashed",
                             "laneTypes": style},
              "poly2d": [{"vertices": [[float(x), float(y)] for x, y in line], "types": "L" * len(line), "closed": False}]}
             for k, (line, style) in enumerate(zip(ann.lanes, ann.lane_styles))]
    areas = [{"id": str(k), "category": "area/drivable", "attributes": {"areaType": "direct"},
              "poly2d": [{"vertices": [[float(x), float(y)] for x, y in poly], "types": "L" * len(poly), "closed": True}]}
             for k, poly in enumerate(ann.drivable)]
    return {"name": name, "labels": lanes}, {"name": name, "labels": areas}


def write_bdd100k_fixture(out_dir: str | Path, n: int, seed: int, resolution: int = 64,
                          mapping: str | Path | Mapping[str, Any] | None = None,
                          layout_labels: bool = False) -> tuple[Path, Path]:
    """A BDD100K-shaped data set of ``n`` usable procedural scenes in ``out_dir``; return ``(images_dir, labels_json)``.

    Like real BDD100K it has no traffic attribute (the reader derives traffic from the car boxes,
    which the renderer draws in the per-level counts the default thresholds follow), alternates
    JPEG and PNG files, spells half the overcast frames "partly cloudy", and appends four frames
    the reader must skip: two ``weather: undefined``, one ``timeofday: undefined``, one whose image
    is missing. Frame ``i < n`` renders condition ``DEFAULT_SCHEMA.combinations()[perm[i % 45]]``.

    ``layout_labels=True`` renders the traffic scenes of :func:`fixture_scenes` through the ego camera
    instead (boxes labelled ``car`` / ``truck``; traffic read from the box count then follows that
    count, as for real BDD100K) and also writes BDD100K lane labels ``out_dir/lanes.json`` and
    drivable-area labels ``out_dir/drivable.json`` (Scalabel ``poly2d``, from
    :func:`~aigc_synth.data.annotation_layout.annotations_from_scene`) for every frame.
    """
    from aigc_synth.data.procedural import render_scenes
    from aigc_synth.seeds import derive_seeds

    codes = _fixture_codes(n, seed)
    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    m = resolve_mapping(mapping, DEFAULT_SCHEMA)
    inverse = {factor: inverse_values(spec["values"]) for factor, spec in m["factors"].items()}
    weather, timeofday = m["factors"]["weather"]["from"], m["factors"]["time_of_day"]["from"]
    total = n + 4
    if layout_labels:
        from aigc_synth.data.annotation_layout import annotations_from_scene
        from aigc_synth.data.scene_render import render_scene

        scenes = fixture_scenes(n, seed)
        seeds = derive_seeds(seed, np.arange(total))
        anns = [annotations_from_scene(sc, resolution) for sc in scenes]
        images = [render_scene(sc, DEFAULT_SCHEMA.decode(c)["weather"], DEFAULT_SCHEMA.decode(c)["time_of_day"],
                               int(s_) % 2**62, resolution).image for sc, c, s_ in zip(scenes, codes, seeds)]
        boxes = [a.boxes for a in anns]
    else:
        batch = render_scenes(codes, derive_seeds(seed, np.arange(total)), resolution)
        images, boxes = batch.images, [[(*b, "car") for b in bx.tolist()] for bx in batch.boxes]
    frames, lane_frames, area_frames = [], [], []
    for i in range(total):
        cond = DEFAULT_SCHEMA.decode(codes[i])
        attrs = {m["factors"][f]["from"]: inverse[f][cond[f]] for f in m["factors"]}
        attrs["scene"] = m["export"]["scene"]
        if attrs[weather] == "overcast" and i % 2 and m["factors"]["weather"]["values"].get("partly cloudy") == "overcast":
            attrs[weather] = "partly cloudy"  # the mapping's many-to-one case
        if i in (n, n + 1):
            attrs[weather] = "undefined"
        elif i == n + 2:
            attrs[timeofday] = "undefined"
        ext = "jpg" if i % 2 else "png"
        name = f"{i:06d}.{ext}"
        if i != n + 3:  # the last frame's image is "missing"
            Image.fromarray(images[i]).save(images_dir / name, **({"quality": 95} if ext == "jpg" else {}))
        labels = box_labels(boxes[i], "car")
        frames.append({"name": name, "attributes": attrs, "labels": labels})
        if layout_labels:
            lane_frame, area_frame = _shape_frames(name, anns[i])
            lane_frames.append(lane_frame)
            area_frames.append(area_frame)
    labels_json = out / "labels.json"
    labels_json.write_text(json.dumps(frames, indent=1) + "\n")
    if layout_labels:
        (out / "lanes.json").write_text(json.dumps(lane_frames, indent=1) + "\n")
        (out / "drivable.json").write_text(json.dumps(area_frames, indent=1) + "\n")
    return images_dir, labels_json
