"""Rasterise a scene's layout for the layout-conditioned image generator.

The layout is everything the scene fixes about the image and nothing the weather, time of day or
cosmetic seed decides: the road surface and lane boundaries seen from the ego camera, and every
vehicle's rear face as the renderer (:mod:`aigc_synth.data.scene_render`) projects it: the same
camera, painter's order and exact pixel coverage, all of :mod:`aigc_synth.data.camera`, so a
generator that follows the layout puts vehicles exactly inside the boxes the renderer reports for
that scene (:func:`~aigc_synth.data.scene_render.scene_boxes`).

Every road kind is drawn with the renderer's geometry: a straight road in closed form (unchanged
since before road kinds), a curve, a merge's ramp and acceleration lane and a lane drop's ending
lane through :func:`~aigc_synth.data.camera.road_raster` (the same surface and lines the
renderer paints); a face turned relative to the camera (on a curve or the ramp) is the renderer's
exact trapezoid coverage.

Channels (:data:`LAYOUT_CHANNELS`, float32 in [0, 1], shape ``(C, size, size)``)
    ``road``        asphalt (lanes and shoulders) not hidden by a vehicle
    ``lane_lines``  every lane boundary and edge line as a solid line (the renderer dashes the
                    separators at a phase drawn from its cosmetic seed, which the layout does not fix)
    ``car``         visible share of each pixel covered by a car's rear face
    ``truck``       the same for trucks
    ``nearness``    ``min(1, NEAR_SCALE / depth)`` of the front-most face (``depth`` of the face's
                    centre): lets the generator size lamps and details, and separates a near car
                    from a far one behind it
    ``edges``       a one-pixel ring inside each visible face (for a trapezoid: its sides moved in
                    and its top and bottom edges moved down and up by one pixel): separates touching
                    vehicles

The map is a pure function of ``(scene, size)``; it never looks at pixels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from aigc_synth.data.camera import (
    CAMERA_HEIGHT,
    HORIZON,
    LINE_WIDTH,
    SHOULDER,
    project_vehicles,
    road_raster,
    shape_alpha,
    span_coverage,
)
from aigc_synth.scenes.format import LANE_WIDTH, Scene

LAYOUT_CHANNELS: tuple[str, ...] = ("road", "lane_lines", "car", "truck", "nearness", "edges")
NEAR_SCALE = 8.0  # m: faces nearer than this get nearness 1


def face_alpha(box: tuple[float, float, float, float], size: int) -> tuple[slice, slice, np.ndarray] | None:
    """(rows, columns, exact fractional coverage) of a pixel box on a ``size`` grid; None if it covers no pixel."""
    return shape_alpha(tuple(box), size, size)


def scene_layout(scene: Scene, size: int = 64) -> np.ndarray:
    """float32 ``(len(LAYOUT_CHANNELS), size, size)`` layout of ``scene`` (see the module docstring)."""
    H = W = int(size)
    hz, cx, h = HORIZON * H, W / 2.0, CAMERA_HEIGHT
    ys = (np.arange(H, dtype=np.float32) + 0.5)[:, None]
    xs = (np.arange(W, dtype=np.float32) + 0.5)[None, :]
    ground = np.clip(ys + 0.5 - np.float32(hz), 0.0, 1.0)
    k = np.maximum(ys - np.float32(hz), 0.0) / np.float32(h)
    x_right = -(scene.ego_lane + 0.5) * LANE_WIDTH
    x_left = (scene.num_lanes - scene.ego_lane - 0.5) * LANE_WIDTH
    out = np.zeros((len(LAYOUT_CHANNELS), H, W), np.float32)
    road, lines, car, truck, near, edges = out
    if scene.road.kind == "straight":
        road[:] = span_coverage(cx - (x_left + SHOULDER) * k, cx - (x_right - SHOULDER) * k, xs) * ground
        for b in range(scene.num_lanes + 1):
            xb = x_right + b * LANE_WIDTH
            lines += span_coverage(cx - (xb + LINE_WIDTH / 2) * k, cx - (xb - LINE_WIDTH / 2) * k, xs) * ground
    else:
        geometry = road_raster(scene, W)
        road[:] = geometry.surface * ground
        for mark in geometry.marks:
            lines += mark.coverage
    np.clip(lines, 0.0, 1.0, out=lines)
    for v in project_vehicles(scene, W):  # far to near: nearer faces overwrite, as in the renderer
        face = shape_alpha(v.shape(), W, W)
        if face is None:
            continue
        sy, sx, a = face
        keep = 1.0 - a
        for ch in (road, lines, car, truck, near, edges):
            ch[sy, sx] *= keep
        (truck if v.kind == "truck" else car)[sy, sx] += a
        near[sy, sx] += a * min(1.0, NEAR_SCALE / v.depth)
        if v.quad is None:
            x0, y0, x1, y1 = v.box
            inner = face_alpha((x0 + 1, y0 + 1, x1 - 1, y1 - 1), W) if x1 - x0 > 2 and y1 - y0 > 2 else None
        else:
            xa, xb, ta, tb, ba, bb = v.quad
            inner = (shape_alpha((xa + 1, xb - 1, ta + 1, tb + 1, ba - 1, bb - 1), W, W)
                     if xb - xa > 2 and min(ba - ta, bb - tb) > 2 else None)
        ring = a.copy()
        if inner is not None:
            iy, ix, ia = inner
            ring[iy.start - sy.start:iy.stop - sy.start, ix.start - sx.start:ix.stop - sx.start] -= ia
        edges[sy, sx] += np.clip(ring, 0.0, 1.0)
    return np.clip(out, 0.0, 1.0)


def scene_layouts(scenes: Sequence[Scene], size: int = 64) -> np.ndarray:
    """Stacked :func:`scene_layout` of each scene: float32 ``(n, C, size, size)``."""
    if not len(scenes):
        return np.zeros((0, len(LAYOUT_CHANNELS), size, size), np.float32)
    return np.stack([scene_layout(s, size) for s in scenes])
