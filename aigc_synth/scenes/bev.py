"""Bird's-eye view of scenes: what ``preview.png`` of a scene job and the scene report show.

The road runs left to right (driving direction →) in the ego's frame (:mod:`aigc_synth.scenes.road`):
lane 0 (the rightmost lane) at the bottom, a curve bends up (left) or down (right), a merge road's
on-ramp comes in from below, a dropped lane ends. The window spans ``-WINDOW_BEHIND .. WINDOW_AHEAD``
metres along the road (white bars). The ego is red, cars blue, trucks orange; a vehicle overlapping
another is outlined in magenta, so an invalid scene is visible at a glance.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from aigc_synth.scenes.format import (
    EGO_LENGTH,
    EGO_WIDTH,
    LANE_WIDTH,
    RAMP_LANE,
    WINDOW_AHEAD,
    WINDOW_BEHIND,
    Scene,
    lane_exists,
    overlap_pairs,
)
from aigc_synth.scenes.road import lane_offset, to_plane, vehicle_pose

PX_PER_M = 2.0
MARGIN_M = 10.0  # road drawn beyond the window on both ends (vehicles whose centre is inside may stick out)
COLOURS = {"ego": (220, 40, 40), "car": (40, 90, 200), "truck": (230, 140, 20)}
STEP_M = 2.0  # sampling of the lane outlines along s


def _lane_spans(scene: Scene, lane: int, s0: float, s1: float) -> list[tuple[float, float]]:
    """Stretches of ``[s0, s1]`` where ``lane`` exists (at most one: lanes only start or end once)."""
    ss = np.arange(s0, s1 + STEP_M / 2, STEP_M)
    on = [s for s in ss if lane_exists(scene.road, scene.num_lanes, lane, float(s))]
    return [(float(on[0]), float(on[-1]))] if on else []


def render_bev(scene: Scene, max_lanes: int = 4, px_per_m: float = PX_PER_M) -> np.ndarray:
    """One scene as an (H, W, 3) uint8 image. The width is fixed by the window; the height fits
    ``max_lanes`` lanes plus whatever the road's shape needs (a curve's bend, a ramp), so tiles of
    straight roads with the same ``max_lanes`` align in a grid (:func:`bev_grid` pads the others)."""
    road, n = scene.road, scene.num_lanes
    s0, s1 = -WINDOW_BEHIND - MARGIN_M, WINDOW_AHEAD + MARGIN_M
    lanes = list(range(RAMP_LANE if road.kind == "merge" else 0, n))
    polys: list[tuple[int, list[tuple[float, float]]]] = []  # (lane, outline in the plane)
    for lane in lanes:
        for a, b in _lane_spans(scene, lane, s0, s1):
            ss = list(np.arange(a, b, STEP_M)) + [b]
            right = [to_plane(road, s, lane_offset(road, n, lane, s) - LANE_WIDTH / 2)[:2] for s in ss]
            left = [to_plane(road, s, lane_offset(road, n, lane, s) + LANE_WIDTH / 2)[:2] for s in ss]
            polys.append((lane, right + left[::-1]))
    xs = [x for _, p in polys for x, _ in p]
    ys = [y for _, p in polys for _, y in p] + [0.0, max_lanes * LANE_WIDTH]
    x_min, y_max = min(xs + [s0]), max(ys) + 1.0
    w = int(round((max(xs + [s1]) - x_min) * px_per_m)) + 1
    h = int(round((y_max - (min(ys) - 1.0)) * px_per_m)) + 12
    img = Image.new("RGB", (w, h), (245, 245, 245))
    draw = ImageDraw.Draw(img)

    def px(x: float, y: float) -> tuple[float, float]:
        return (x - x_min) * px_per_m, 12 + (y_max - y) * px_per_m

    for _, poly in polys:
        draw.polygon([px(x, y) for x, y in poly], fill=(90, 90, 90))
    for lane in lanes[1:]:  # dashed markings between a lane and the one to its right, where both exist
        for a, b in _lane_spans(scene, lane, s0, s1):
            for s in np.arange(a, b, 6.0):
                if lane_exists(road, n, lane - 1, float(s)):
                    off = lambda t: lane_offset(road, n, lane, t) - LANE_WIDTH / 2  # noqa: E731
                    draw.line([px(*to_plane(road, s, off(s))[:2]), px(*to_plane(road, s + 3.0, off(s + 3.0))[:2])],
                              fill=(230, 230, 230))
    for edge in (-WINDOW_BEHIND, WINDOW_AHEAD):  # the window's ends, across the main lanes
        draw.line([px(*to_plane(road, edge, 0.0)[:2]), px(*to_plane(road, edge, n * LANE_WIDTH)[:2])], fill=(255, 255, 255))
    overlapping = {i for pair in overlap_pairs(scene) for i in pair}

    def box(lane: int, s: float, d: float, length: float, width: float, colour: tuple, outline: bool) -> None:
        x, y, heading = vehicle_pose(road, n, lane, s, d)
        c, si = math.cos(heading), math.sin(heading)
        corners = [(x + u * c - v * si, y + u * si + v * c) for u, v in
                   ((-length / 2, -width / 2), (length / 2, -width / 2), (length / 2, width / 2), (-length / 2, width / 2))]
        draw.polygon([px(*p) for p in corners], fill=colour, outline=(255, 0, 255) if outline else colour)
        draw.line([px(*corners[1]), px(*corners[2])], fill=(255, 255, 255))  # the front

    box(scene.ego_lane, 0.0, 0.0, EGO_LENGTH, EGO_WIDTH, COLOURS["ego"], -1 in overlapping)
    for i, a in enumerate(scene.agents):
        box(a.lane, a.s, a.d, a.length, a.width, COLOURS.get(a.kind, (0, 0, 0)), i in overlapping)
    label = {"straight": "", "curve": f" curve R{1 / road.curvature:+.0f} m" if road.curvature else "",
             "merge": f" merge, accel. lane ends at {road.event_s:+.0f} m", "lane_drop": f" lane drop at {road.event_s:+.0f} m"}
    draw.text((3, 1), f"{scene.traffic} {n}L {len(scene.agents)} agents  ego {scene.ego_speed:.0f} m/s{label[road.kind]}",
              fill=(0, 0, 0))
    return np.asarray(img)


def bev_grid(rows: Sequence[Sequence[Scene]], columns: int = 2, max_lanes: int = 4) -> np.ndarray:
    """Rows of scenes (e.g. one row per condition) as one image, ``columns`` scenes per row (tiles
    of different heights are top-aligned in rows as tall as their tallest tile)."""
    tiles = [[render_bev(sc, max_lanes) for sc in row[:columns]] for row in rows]
    w = max(t.shape[1] for row in tiles for t in row)
    heights = [max(t.shape[0] for t in row) for row in tiles]
    grid = np.full((sum(h + 2 for h in heights), columns * (w + 4), 3), 255, np.uint8)
    y = 0
    for row, h in zip(tiles, heights):
        for c, tile in enumerate(row):
            grid[y:y + tile.shape[0], c * (w + 4):c * (w + 4) + tile.shape[1]] = tile
        y += h + 2
    return grid
