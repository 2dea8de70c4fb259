"""Bird's-eye view of scenes: what ``preview.png`` of a scene job and the scene report show.

The road runs left to right (driving direction →), lane 0 (the rightmost lane) at the bottom; the
window spans ``-WINDOW_BEHIND .. WINDOW_AHEAD`` metres. The ego is red, cars blue, trucks orange;
a vehicle overlapping another is outlined in magenta, so an invalid scene is visible at a glance.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from aigc_synth.scenes.format import EGO_LENGTH, EGO_WIDTH, LANE_WIDTH, WINDOW_AHEAD, WINDOW_BEHIND, Scene, overlap_pairs

PX_PER_M = 2.0
MARGIN_M = 10.0  # road drawn beyond the window on both ends (vehicles whose centre is inside may stick out)
COLOURS = {"ego": (220, 40, 40), "car": (40, 90, 200), "truck": (230, 140, 20)}


def render_bev(scene: Scene, max_lanes: int = 4, px_per_m: float = PX_PER_M) -> np.ndarray:
    """One scene as an (H, W, 3) uint8 image; the height fits ``max_lanes`` lanes for aligned grids."""
    length_m = WINDOW_BEHIND + WINDOW_AHEAD + 2 * MARGIN_M
    w, lane_px = int(round(length_m * px_per_m)), LANE_WIDTH * px_per_m
    h = int(round((max_lanes * LANE_WIDTH + 2) * px_per_m)) + 12
    img = Image.new("RGB", (w, h), (245, 245, 245))
    draw = ImageDraw.Draw(img)
    road_bottom = h - px_per_m
    road_top = road_bottom - scene.num_lanes * lane_px
    draw.rectangle([0, road_top, w - 1, road_bottom], fill=(90, 90, 90))
    for k in range(1, scene.num_lanes):  # dashed lane markings
        y = road_bottom - k * lane_px
        for x in range(0, w, 12):
            draw.line([x, y, x + 6, y], fill=(230, 230, 230))
    x_of = lambda s: (s + WINDOW_BEHIND + MARGIN_M) * px_per_m  # noqa: E731
    for edge in (-WINDOW_BEHIND, WINDOW_AHEAD):  # the window's ends
        draw.line([x_of(edge), road_top, x_of(edge), road_bottom], fill=(255, 255, 255))
    overlapping = {i for pair in overlap_pairs(scene) for i in pair}

    def box(lane: int, s: float, d: float, length: float, width: float, colour: tuple, outline: bool) -> None:
        yc = road_bottom - (lane + 0.5) * lane_px - d * px_per_m
        x0, x1 = x_of(s - length / 2), x_of(s + length / 2)
        y0, y1 = yc - width / 2 * px_per_m, yc + width / 2 * px_per_m
        draw.rectangle([x0, y0, x1, y1], fill=colour, outline=(255, 0, 255) if outline else colour)
        draw.line([x1 - 1, y0, x1 - 1, y1], fill=(255, 255, 255))  # the front

    box(scene.ego_lane, 0.0, 0.0, EGO_LENGTH, EGO_WIDTH, COLOURS["ego"], -1 in overlapping)
    for i, a in enumerate(scene.agents):
        box(a.lane, a.s, a.d, a.length, a.width, COLOURS.get(a.kind, (0, 0, 0)), i in overlapping)
    draw.text((3, 1), f"{scene.traffic} {scene.num_lanes}L {len(scene.agents)} agents  ego {scene.ego_speed:.0f} m/s",
              fill=(0, 0, 0))
    return np.asarray(img)


def bev_grid(rows: Sequence[Sequence[Scene]], columns: int = 2, max_lanes: int = 4) -> np.ndarray:
    """Rows of scenes (e.g. one row per condition) as one image, ``columns`` scenes per row."""
    tiles = [[render_bev(sc, max_lanes) for sc in row[:columns]] for row in rows]
    h, w = tiles[0][0].shape[:2]
    grid = np.full((len(tiles) * (h + 2), columns * (w + 4), 3), 255, np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            grid[r * (h + 2):r * (h + 2) + h, c * (w + 4):c * (w + 4) + w] = tile
    return grid
