#!/usr/bin/env python
"""Camera renders and layout rasters of SUMO scenes on each road kind (``docs/render_roads.png``).

    python scripts/render_roads_figure.py --out docs/render_roads.png      # ~15 s, needs aigc_synth[sim]

One row per road kind (straight, curve, merge, lane drop): ``simulate_scenes("moderate", 3, 4,
seed=SEED, road=kind)`` (default seed 5: a left curve of radius 490 m), of its scenes the one that
shows its road best (:func:`pick`). Left: the camera
render (clear, day, 128 px, shown 2x) with the renderer's boxes; middle: the layout raster of the
same scene (``scene_layout``: the road channel in grey, lane lines white, car faces green, truck
faces orange) with ``scene_boxes``; right: the scene's bird's-eye view (driving direction →,
lane 0 at the bottom), to check the camera against it: a left curve (positive curvature) bends up in
the bird's-eye view and left in the camera, the ramp comes in from below (the camera's right), the
dropped lane is the top one (the camera's leftmost).
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

from aigc_synth.data.layout import LAYOUT_CHANNELS, scene_layout
from aigc_synth.data.scene_render import draw_boxes, render_scene, scene_boxes
from aigc_synth.scenes.bev import render_bev
from aigc_synth.scenes.format import ROAD_KINDS, Scene
from aigc_synth.scenes.sumo import SimOptions
from aigc_synth.scenes.sumo_dataset import simulate_scenes

SIZE, SCALE, CAPTION = 128, 2, 14


def layout_image(scene: Scene, size: int) -> np.ndarray:
    """The layout raster as RGB uint8: road grey, lane lines white, cars green, trucks orange."""
    lay = scene_layout(scene, size)
    ch = {name: lay[i][..., None] for i, name in enumerate(LAYOUT_CHANNELS)}
    rgb = np.full((size, size, 3), 0.12) * (1 - ch["road"]) + 0.45 * ch["road"]
    for name, colour in (("lane_lines", (1.0, 1.0, 1.0)), ("car", (0.2, 0.8, 0.2)), ("truck", (1.0, 0.55, 0.1))):
        rgb = rgb * (1 - ch[name]) + np.array(colour) * ch[name]
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def pick(scenes: list[Scene]) -> Scene:
    """A merge whose acceleration lane runs beside the ego and ends closest to 50 m ahead; a lane drop
    ahead of the ego, closest to 30 m; else (and on ties) the scene with the most boxes, then the first."""
    def key(n: int) -> tuple:
        sc = scenes[n]
        road = sc.road
        if road.kind == "merge":
            event = (road.event_s - road.event_length <= 0 < road.event_s, -abs(road.event_s - 50.0))
        elif road.kind == "lane_drop":
            event = (road.event_s >= 0, -abs(road.event_s - 30.0))
        else:
            event = ()
        return event + (len(scene_boxes(sc, SIZE).boxes), -n)
    return scenes[max(range(len(scenes)), key=key)]


def caption(scene: Scene) -> str:
    road = scene.road
    extra = ""
    if road.kind == "curve":
        extra = f"  curvature {road.curvature:+.5f}/m (R {1 / road.curvature:+.0f} m, {'left' if road.curvature > 0 else 'right'})"
    elif road.kind == "merge":
        extra = f"  acceleration lane {road.event_s - road.event_length:+.0f}..{road.event_s:+.0f} m"
    elif road.kind == "lane_drop":
        extra = f"  leftmost lane ends at {road.event_s:+.0f} m"
    return f"{road.kind}{extra}  ego lane {scene.ego_lane}, {len(scene.agents)} agents"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/render_roads.png")
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args(argv)
    rows = []
    for kind in ROAD_KINDS:
        scenes = simulate_scenes("moderate", 3, 4, seed=a.seed, road=kind, options=SimOptions(scenes_per_run=4))
        scene = pick(scenes)
        r = render_scene(scene, "clear", "day", seed=0, size=SIZE)
        b = scene_boxes(scene, SIZE)
        assert np.array_equal(r.boxes, b.boxes), "layout boxes differ from the render's"
        tiles = [draw_boxes(r.image, r.boxes, scale=SCALE), draw_boxes(layout_image(scene, SIZE), b.boxes, scale=SCALE),
                 render_bev(scene, max_lanes=3)]
        rows.append((caption(scene), tiles))
    gap = 6
    width = max(sum(t.shape[1] for t in tiles) + gap * (len(tiles) + 1) for _, tiles in rows)
    heights = [CAPTION + max(t.shape[0] for t in tiles) + gap for _, tiles in rows]
    sheet = Image.new("RGB", (width, sum(heights) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = gap
    for (text, tiles), h in zip(rows, heights):
        draw.text((gap, y), text, fill=(0, 0, 0))
        x = gap
        for t in tiles:
            sheet.paste(Image.fromarray(t), (x, y + CAPTION))
            x += t.shape[1] + gap
        y += h
    sheet.save(a.out, optimize=True)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
