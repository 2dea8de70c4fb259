"""Render a traffic :class:`~aigc_synth.scenes.format.Scene` through the procedural forward camera.

:mod:`aigc_synth.data.procedural` invents its vehicles; this module takes them from a scene (SUMO
ground truth or any sampler) and returns, with each image, the exact 2-D box of every visible
vehicle, the index of the agent it shows and the visible fraction of the box. The real image set
then becomes scenes × weather × time of day. Colours, sky, weather and lighting follow
``procedural.py`` (its palettes and light tables are imported); the geometry is a true pinhole
camera instead of procedural's screen-space trapezoid.

The camera (:mod:`aigc_synth.data.camera`)
    A pinhole camera on the ego's lane centre at ``s = 0``, :data:`CAMERA_HEIGHT` above the flat road,
    looking along the road's tangent; the image is square, ``size`` × ``size``, horizon row
    ``HORIZON * size``, focal length ``FOCAL * size`` px. Each vehicle is drawn as its rear face (a
    rectangle, or a trapezoid with vertical sides when turned relative to the camera: on a curve, on
    a merge's ramp); only faces beyond :data:`NEAR_CLIP` are drawn. The road of every kind (straight,
    curve, merge, lane drop) is drawn with the same projection, so a vehicle always stands inside its
    lane's lines. The projection, the exact pixel-coverage primitives and the road geometry
    (:func:`~aigc_synth.data.camera.road_raster`) live in :mod:`aigc_synth.data.camera`, whose
    docstring states the camera model in full; this module adds colours, sky, weather, lighting and
    the boxes with their visibility (:func:`scene_boxes`).

Boxes and visibility
    Vehicles are painted far to near (painter's order by the depth of the face's centre; ties by
    agent index: :func:`~aigc_synth.data.camera.project_vehicles`), anti-aliased by exact pixel
    coverage (rectangles and trapezoids alike), so a nearer vehicle hides whatever it overlaps.
    ``boxes`` are the tight boxes of the projected rear faces clipped to the image (for a trapezoid:
    of its part inside the image). ``visible`` is the fraction of the *unclipped* projected face that
    is neither outside the image nor under a face painted later (a nearer one), computed exactly on
    the projected polygons (rectangles: coordinate compression; trapezoids: the faces' sides and all
    crossings of their top and bottom edges cut the x axis into slabs in which the uncovered height
    is linear; both in :mod:`aigc_synth.data.camera`: ``uncovered_area``, ``uncovered_quad_area``).
    Vehicles with ``visible == 0`` (fully hidden, entirely outside the view or behind the near clip)
    are **omitted**, so every returned box has ``visible > 0``.

Determinism
    The output is a pure function of ``(scene, weather, time_of_day, seed, size)``. Geometry
    (hence boxes and visibility) depends on the scene and ``size`` only; ``seed`` drives cosmetic
    randomness alone: vehicle colours (per agent index), sky/verge colour jitter, light level, fog
    density, dash phase, rain streaks, snow flakes and sensor noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aigc_synth.data.camera import (
    CAMERA_HEIGHT,
    DASH_PERIOD,
    FOCAL,
    HORIZON,
    LINE_WIDTH,
    NEAR_CLIP,
    SHOULDER,
    as_quad,
    clipped_quad_box,
    dash_coverage,
    project_face,
    project_vehicles,
    quad_area,
    road_raster,
    shape_alpha,
    span_coverage,
    uncovered_area,
    uncovered_quad_area,
)
from aigc_synth.data.procedural import CAR_COLOURS, DUSK_SKY, LIGHT, SKY_DAY, TINT
from aigc_synth.scenes.format import LANE_WIDTH, Scene, SceneError
from aigc_synth.schema import DEFAULT_SCHEMA

_TRUCK_COLOURS = np.array(  # box bodies and curtains: mostly white / silver, some liveries
    [(0.90, 0.90, 0.90), (0.80, 0.80, 0.82), (0.70, 0.12, 0.10), (0.15, 0.30, 0.60),
     (0.92, 0.78, 0.20), (0.35, 0.42, 0.35)],
    dtype=np.float32,
)
_WHITE = np.array([0.92, 0.92, 0.92], np.float32)
_YELLOW = np.array([0.95, 0.80, 0.20], np.float32)
_TAIL = np.array([1.0, 0.12, 0.08], np.float32)
_GLOW = {"day": 0.0, "dusk": 0.6, "night": 1.0}  # how strongly lamps (and the ego's head lights) shine
# Precipitation particles, shared with models/particles.py (the layout generator's particle overlay
# draws them with the same statistics): a particle seeds where the cosmetic uniform noise exceeds
# 1 - fraction; rain smears each seed along a slanted streak, snow grows it into a small flake.
RAIN_SEED_FRACTION = 0.015
RAIN_STREAK_STEPS = 4  # the streak: seed plus shifts (s, s // 2) for s = 1..4, down and right
RAIN_OPACITY = 0.55
RAIN_COLOUR = (0.75, 0.78, 0.85)
RAIN_MIN_LIGHT = 0.45  # particles stay visible at night (lit by the ego's beam and lamps)
SNOW_SEED_FRACTION = 0.035
SNOW_COLOUR = (0.97, 0.97, 1.0)
SNOW_MIN_LIGHT = 0.55
PRECIPITATION_HAZE = (200.0, 0.48)  # rain and snow's light haze: extinction length (m), cap
FOG_COLOUR = (0.78, 0.79, 0.80)
LIGHT_JITTER = 0.08  # each image's light level is the time of day's times U(1 - j, 1 + j)
WEATHERS: tuple[str, ...] = DEFAULT_SCHEMA.values("weather")
TIMES: tuple[str, ...] = DEFAULT_SCHEMA.values("time_of_day")


@dataclass
class RenderedScene:
    """One rendered scene.

    ``image`` uint8 (H, W, 3); ``boxes`` float32 (n, 4) as x0, y0, x1, y1 pixels clipped to the
    image; ``agents`` int64 (n,) index into ``scene.agents`` of each box (ascending); ``visible``
    float32 (n,) in (0, 1], see the module docstring; ``labels`` the agents' kinds.
    """

    image: np.ndarray
    boxes: np.ndarray
    agents: np.ndarray
    visible: np.ndarray
    labels: list[str]
    weather: str = "clear"
    time_of_day: str = "day"
    seed: int = 0


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``a`` (H, W, ...) moved by (dy, dx) pixels with zero fill (np.roll would wrap lamps around)."""
    out = np.zeros_like(a)
    H, W = a.shape[:2]
    out[max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = a[max(-dy, 0):H - max(dy, 0), max(-dx, 0):W - max(dx, 0)]
    return out


def particle_alpha(weather: str, noise: np.ndarray) -> np.ndarray | None:
    """Opacity (H, W) of the rain streaks or snow flakes seeded by ``noise`` (uniform [0, 1), H × W),
    or ``None`` for weathers without particles."""
    if weather == "rain":
        seeds_mask = noise > 1 - RAIN_SEED_FRACTION
        streak = seeds_mask.astype(np.float32)
        for s_ in range(1, RAIN_STREAK_STEPS + 1):
            streak += _shift(seeds_mask, s_, s_ // 2)
        return np.float32(RAIN_OPACITY) * np.clip(streak, 0, 1)
    if weather == "snow":
        flakes = (noise > 1 - SNOW_SEED_FRACTION).astype(np.float32)
        return np.clip(flakes + 0.5 * _shift(flakes, 0, 1) + 0.5 * _shift(flakes, 1, 0), 0, 1)
    return None


def particle_colour(weather: str, light: float) -> np.ndarray:
    """RGB of ``weather``'s particles at light level ``light`` (before haze)."""
    colour, floor = (RAIN_COLOUR, RAIN_MIN_LIGHT) if weather == "rain" else (SNOW_COLOUR, SNOW_MIN_LIGHT)
    return np.array(colour, np.float32) * np.float32(max(light, floor))


def _face_layers(kind: str) -> list[tuple[tuple[float, float, float, float], str]]:
    """Parts of a rear face as (u0, v0, u1, v1) fractions of the face (u right, v down) and a role."""
    if kind == "truck":
        return [((0.485, 0.04, 0.515, 0.86), "seam"), ((0.0, 0.86, 1.0, 1.0), "bumper"),
                ((0.04, 0.78, 0.15, 0.85), "lamp"), ((0.85, 0.78, 0.96, 0.85), "lamp")]
    return [((0.12, 0.05, 0.88, 0.42), "window"), ((0.0, 0.82, 1.0, 1.0), "bumper"),
            ((0.05, 0.52, 0.24, 0.70), "lamp"), ((0.76, 0.52, 0.95, 0.70), "lamp")]


def _check(scene: Scene, weather: str, time_of_day: str, seed: int, size: int) -> None:
    if weather not in WEATHERS:
        raise SceneError(f"unknown weather {weather!r}; allowed: {list(WEATHERS)}")
    if time_of_day not in TIMES:
        raise SceneError(f"unknown time_of_day {time_of_day!r}; allowed: {list(TIMES)}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if scene.num_lanes < 1 or not 0 <= scene.ego_lane < scene.num_lanes:
        raise SceneError(f"scene {scene.scene_id}: ego lane {scene.ego_lane} is not one of {scene.num_lanes} lanes")


def render_scene(scene: Scene, weather: str, time_of_day: str, seed: int, size: int = 64) -> RenderedScene:
    """Render ``scene`` from the ego's camera under ``weather`` and ``time_of_day``.

    ``weather`` / ``time_of_day`` take the default schema's values; ``seed`` (>= 0) only changes
    cosmetics, never boxes. See the module docstring for the box conventions and
    :mod:`aigc_synth.data.camera`'s for the camera.
    """
    _check(scene, weather, time_of_day, seed, size)
    H = W = int(size)
    f, hz, cx, h = FOCAL * W, HORIZON * H, W / 2.0, CAMERA_HEIGHT

    # ---- cosmetic parameters: two independent streams so vehicle colours do not depend on size --
    rng = np.random.default_rng([int(seed), 0])
    top, hor = SKY_DAY[weather]
    if time_of_day == "dusk" and weather in ("clear", "overcast"):
        top, hor = DUSK_SKY
    jitter = rng.uniform(-0.04, 0.04, 3)
    sky_top = np.clip(np.asarray(top) + jitter, 0, 1).astype(np.float32)
    sky_hor = np.clip(np.asarray(hor) + jitter, 0, 1).astype(np.float32)
    g = rng.uniform(-0.05, 0.05)
    if weather == "snow":
        verge, road = np.array((0.92, 0.93, 0.96), np.float32), np.array((0.55, 0.56, 0.60), np.float32)
    else:
        verge = np.array((0.25 + g, 0.45 + g, 0.18 + g) if weather in ("clear", "overcast") else (0.22 + g, 0.33 + g, 0.18 + g),
                         np.float32)
        road = np.array((0.30, 0.30, 0.32) if weather != "rain" else (0.17, 0.17, 0.19), np.float32)
    light = np.float32(LIGHT[time_of_day] * rng.uniform(1 - LIGHT_JITTER, 1 + LIGHT_JITTER))
    tint = np.asarray(TINT[time_of_day], np.float32)
    # Fog as a metric extinction length; rain and snow get a light haze. The cap keeps the sky from
    # vanishing entirely, like procedural's horizon value (1 - exp(-density * 1.3)).
    if weather == "fog":
        fog_len, fog_cap = rng.uniform(35.0, 60.0), 0.97
    elif weather in ("rain", "snow"):
        fog_len, fog_cap = PRECIPITATION_HAZE
    else:
        fog_len, fog_cap = 1.0, 0.0
    dash_phase = rng.uniform(0.0, DASH_PERIOD)
    noise = rng.random((H, W), dtype=np.float32)
    crng = np.random.default_rng([int(seed), 1])
    colour_u = crng.random(len(scene.agents))  # one draw per agent: colours follow the agent index
    glow_strength = np.float32(_GLOW[time_of_day])

    def fog_amount(z: np.ndarray | float) -> np.ndarray:
        return np.float32(fog_cap) * (1.0 - np.exp(-np.asarray(z, np.float32) / np.float32(fog_len)))

    def beam(z: np.ndarray | float, x: np.ndarray | float) -> np.ndarray:
        """The ego's low beam: strongest close ahead, widening and fading with distance."""
        z, x = np.asarray(z, np.float32), np.asarray(x, np.float32)
        return np.exp(-z / 30.0) * np.exp(-(x / (1.5 + 0.25 * z)) ** 2)

    # ---- per-pixel ground geometry ---------------------------------------------------------------
    ys = (np.arange(H, dtype=np.float32) + 0.5)[:, None]  # (H, 1)
    xs = (np.arange(W, dtype=np.float32) + 0.5)[None, :]  # (1, W)
    dy = ys - np.float32(hz)
    ground = np.clip(ys + 0.5 - np.float32(hz), 0.0, 1.0)  # share of each row below the horizon
    k = np.maximum(dy, 0.0) / np.float32(h)  # pixels per metre sideways on the road at this row
    z_row = np.float32(f * h) / np.maximum(dy, 0.25)  # road depth of each row (capped near the horizon)
    x_lat = (np.float32(cx) - xs) / np.maximum(k, 1e-6)  # lateral offset of each ground pixel, m
    depth_t = np.clip(dy / np.float32(H - hz), 0.0, 1.0)  # procedural's 0 at horizon .. 1 at the bottom

    straight = scene.road.kind == "straight"  # straight roads: closed form (their output predates road kinds)
    x_right = -(scene.ego_lane + 0.5) * LANE_WIDTH  # right edge line (lane 0's right boundary)
    x_left = (scene.num_lanes - scene.ego_lane - 0.5) * LANE_WIDTH
    if straight:
        on_road = span_coverage(cx - (x_left + SHOULDER) * k, cx - (x_right - SHOULDER) * k, xs)
    else:
        road_geometry = road_raster(scene, W)
        on_road = road_geometry.surface

    sky_t = np.clip(ys / np.float32(hz), 0.0, 1.0)[..., None]
    img = np.broadcast_to(sky_top * (1 - sky_t) + sky_hor * sky_t, (H, W, 3)).astype(np.float32)
    ground_col = verge * (0.75 + 0.25 * depth_t)[..., None]
    road_col = road * (0.85 + 0.15 * depth_t)[..., None]
    ground_col = ground_col * (1 - on_road[..., None]) + road_col * on_road[..., None]
    img = img * (1 - ground[..., None]) + ground_col * ground[..., None]

    # lane markings: exact horizontal coverage per row; dashes by their exact share of the row's depth span
    mark_alpha = np.float32(0.35 if weather == "snow" else 0.9)  # snow half-covers the paint
    if straight:
        dash_cov = dash_coverage(dy, f * h, dash_phase)
        marks = []
        for b in range(scene.num_lanes + 1):
            xb = x_right + b * LANE_WIDTH
            cov = span_coverage(cx - (xb + LINE_WIDTH / 2) * k, cx - (xb - LINE_WIDTH / 2) * k, xs) * ground
            if 0 < b < scene.num_lanes:
                cov = cov * dash_cov
            marks.append((cov, _YELLOW if b == scene.num_lanes else _WHITE))  # yellow on the left edge, as on divided highways
    else:
        marks = [(m.coverage * m.dash_share(dash_phase) if m.dash else m.coverage, _YELLOW if m.colour == "yellow" else _WHITE)
                 for m in road_geometry.marks]
    for cov, colour in marks:
        a = (cov * mark_alpha)[..., None]
        img = img * (1 - a) + colour * a

    # per-pixel buffers that vehicles overwrite with their own values (blended by coverage)
    fog_amt = np.broadcast_to(fog_amount(z_row) * ground + np.float32(fog_cap) * (1 - ground), (H, W)).astype(np.float32)
    lit = (beam(z_row, x_lat) * ground).astype(np.float32)
    emissive = np.zeros((H, W, 3), np.float32)  # light sources survive darkening

    # ---- vehicles, far to near ----------------------------------------------------------------------
    vehicles = project_vehicles(scene, W)
    for v in vehicles:
        x0, y0, x1, y1 = v.box
        face = shape_alpha(v.shape(), H, W)
        if face is None:
            continue
        (iy0, iy1), (ix0, ix1) = (face[0].start, face[0].stop), (face[1].start, face[1].stop)
        alpha = face[2]  # exact share of each pixel covered by the face
        palette = _TRUCK_COLOURS if v.kind == "truck" else CAR_COLOURS
        patch = np.empty((iy1 - iy0, ix1 - ix0, 3), np.float32)
        patch[:] = palette[min(int(colour_u[v.index] * len(palette)), len(palette) - 1)]
        em = np.zeros_like(patch)
        fw, fh = x1 - x0, y1 - y0
        for (u0, v0, u1, v1), role in _face_layers(v.kind):
            part_shape = ((x0 + u0 * fw, y0 + v0 * fh, x0 + u1 * fw, y0 + v1 * fh) if v.quad is None
                          else project_face(v.corners, W, u0, v0, u1, v1))
            part = shape_alpha(part_shape, H, W) if part_shape is not None else None
            if part is None:
                continue
            (jy0, jy1), (jx0, jx1) = (part[0].start, part[0].stop), (part[1].start, part[1].stop)
            sl = (slice(jy0 - iy0, jy1 - iy0), slice(jx0 - ix0, jx1 - ix0))
            # the part's share of the *face* inside each pixel, so the final blend by alpha stays exact
            r = np.clip(part[2] / np.maximum(alpha[sl], 1e-6), 0.0, 1.0)[..., None]
            if role == "window":
                col = 0.15 + 0.15 * sky_hor
            elif role == "bumper":
                col = np.full(3, 0.08, np.float32)
            elif role == "seam":
                col = patch[sl] * 0.6
            else:
                col = _TAIL * 0.8
                em[sl] = em[sl] * (1 - r) + _TAIL * r
            patch[sl] = patch[sl] * (1 - r) + col * r
        sl = (slice(iy0, iy1), slice(ix0, ix1))
        a3 = alpha[..., None]
        if weather == "rain":  # wet road: a faint upside-down copy of the face just below it
            n = min(iy1 - iy0, H - iy1)
            if n > 0:
                fade = np.linspace(1.0, 0.2, n, dtype=np.float32)[:, None, None]
                rs = (slice(iy1, iy1 + n), slice(ix0, ix1))
                img[rs] += 0.45 * (patch * a3)[::-1][:n] * 0.6 * fade
                emissive[rs] += 0.5 * (em * a3)[::-1][:n] * fade
        img[sl] = img[sl] * (1 - a3) + patch * a3
        emissive[sl] = emissive[sl] * (1 - a3) + em * a3
        fog_amt[sl] = fog_amt[sl] * (1 - alpha) + fog_amount(v.depth) * alpha
        lit[sl] = lit[sl] * (1 - alpha) + beam(v.depth, v.lateral) * alpha

    # ---- lighting: time of day scales the lit scene; the ego's beam and lamps shine at dusk/night --
    img *= ((light + glow_strength * 0.55 * lit)[..., None] * tint).astype(np.float32)
    if glow_strength > 0:
        glow = emissive.copy()
        for s_ in (1, 2):  # cheap halo around each lamp, as in procedural
            glow += 0.5 * (_shift(emissive, s_, 0) + _shift(emissive, -s_, 0) + _shift(emissive, 0, s_)
                           + _shift(emissive, 0, -s_)) / s_
        img += glow_strength * np.clip(glow, 0, 1.5) * np.float32(0.7)

    # ---- weather (after lighting, like procedural) -------------------------------------------------
    alpha = particle_alpha(weather, noise)
    if alpha is not None:
        img = img * (1 - alpha[..., None]) + alpha[..., None] * particle_colour(weather, light)
    if fog_cap > 0:  # blend toward the fog colour by each pixel's own distance; lamps still pierce it
        amount = fog_amt[..., None]
        fog_col = np.array(FOG_COLOUR, np.float32) * np.float32(light * 0.9 + 0.1) * tint
        img = img * (1 - amount) + fog_col * amount + 0.5 * glow_strength * emissive * (1 - amount)

    img += (noise[..., None] - np.float32(0.5)) * np.float32(0.03)  # mild sensor noise
    image = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    boxes = scene_boxes(scene, W)
    return RenderedScene(image=image, boxes=boxes.boxes, agents=boxes.agents, visible=boxes.visible, labels=boxes.labels,
                         weather=weather, time_of_day=time_of_day, seed=int(seed))


@dataclass
class SceneBoxes:
    """The labels of a scene's image without its pixels: ``boxes`` float32 (n, 4) x0, y0, x1, y1
    clipped to the image, ``agents`` int64 (n,) ascending, ``visible`` float32 (n,) in (0, 1],
    ``labels`` the agents' kinds (see the module docstring)."""

    boxes: np.ndarray
    agents: np.ndarray
    visible: np.ndarray
    labels: list[str]


def scene_boxes(scene: Scene, size: int = 64) -> SceneBoxes:
    """The boxes :func:`render_scene` returns for ``scene`` at ``size`` (geometry only: they never
    depend on weather, time or seed), without rendering. Layout-conditioned generators label their
    images with these."""
    W = H = int(size)
    vehicles = project_vehicles(scene, W)
    rects = np.array([v.box for v in vehicles], np.float64).reshape(-1, 4)
    quads = [as_quad(v.shape()) for v in vehicles]
    rectangles_only = all(v.quad is None for v in vehicles)  # every straight road
    found = []
    for n_, v in enumerate(vehicles):  # same painter's order as the renderer
        x0, y0, x1, y1 = v.box
        if rectangles_only:
            clip = (max(x0, 0.0), max(y0, 0.0), min(x1, float(W)), min(y1, float(H)))
            vis = uncovered_area(clip, rects[n_ + 1:]) / ((x1 - x0) * (y1 - y0))
        else:
            vis = uncovered_quad_area(quads[n_], quads[n_ + 1:], W, H) / quad_area(quads[n_])
            clip = clipped_quad_box(quads[n_], W, H) if vis > 0 else None
        if vis > 0:
            found.append((v.index, clip, vis, v.kind))
    found.sort()
    return SceneBoxes(
        boxes=np.array([c for _, c, _, _ in found], np.float32).reshape(-1, 4),
        agents=np.array([i for i, _, _, _ in found], np.int64),
        visible=np.array([vis for _, _, vis, _ in found], np.float32),
        labels=[kind for _, _, _, kind in found],
    )


def render_labelled(scenes: Sequence[Scene], codes: np.ndarray, seeds: Sequence[int], schema=DEFAULT_SCHEMA,
                    size: int = 64) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Render ``scenes[i]`` under the weather and time of ``codes[i]`` (codes of ``schema``) with
    cosmetic seed ``seeds[i] mod 2**62``: (images uint8 (n, size, size, 3), boxes per image, visible
    fraction per box). The one loop behind every labelled real set (evaluation reference, detector
    training, downstream benchmark)."""
    w, t = schema.names.index("weather"), schema.names.index("time_of_day")
    weathers, times = schema.values("weather"), schema.values("time_of_day")
    images = np.empty((len(scenes), size, size, 3), np.uint8)
    boxes, visible = [], []
    for i, (sc, c, s) in enumerate(zip(scenes, codes, seeds)):
        r = render_scene(sc, weathers[c[w]], times[c[t]], int(s) % 2**62, size)
        images[i] = r.image
        boxes.append(r.boxes)
        visible.append(r.visible)
    return images, boxes, visible


def render_scenes_from(scenes: Sequence[Scene], weathers: str | Sequence[str], times: str | Sequence[str],
                       seeds: int | Sequence[int], size: int = 64) -> list[RenderedScene]:
    """:func:`render_scene` for each scene; a single weather, time or seed applies to all of them.

    Item ``i`` equals ``render_scene(scenes[i], weathers[i], times[i], seeds[i], size)`` exactly.
    """
    scenes = list(scenes)
    n = len(scenes)

    def per_scene(value, name: str) -> list:
        values = [value] * n if isinstance(value, (str, int, np.integer)) else list(value)
        if len(values) != n:
            raise ValueError(f"{n} scenes but {len(values)} {name}")
        return values

    ws, ts, ss = per_scene(weathers, "weathers"), per_scene(times, "times"), per_scene(seeds, "seeds")
    return [render_scene(sc, w, t, int(s), size) for sc, w, t, s in zip(scenes, ws, ts, ss)]


def contact_sheet(rendered: Sequence[RenderedScene], columns: int | None = None, scale: int = 1, gap: int = 2) -> np.ndarray:
    """Tile the images (uint8 H', W', 3) with their boxes drawn on a copy, for a visual check.

    Boxes are outlined green (car) or orange (truck), dimmer when less than half visible; ``scale``
    enlarges each tile (nearest neighbour) before drawing so small boxes stay readable.
    """
    from PIL import Image, ImageDraw

    if not rendered:
        raise ValueError("contact_sheet needs at least one rendered scene")
    columns = columns or min(len(rendered), 8)
    rows = -(-len(rendered) // columns)
    th, tw = rendered[0].image.shape[0] * scale, rendered[0].image.shape[1] * scale
    sheet = Image.new("RGB", (columns * tw + (columns + 1) * gap, rows * th + (rows + 1) * gap), (40, 40, 40))
    for n, r in enumerate(rendered):
        tile = Image.fromarray(r.image).resize((tw, th), Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        for box, label, vis in zip(r.boxes, r.labels, r.visible):
            colour = (0, 255, 0) if label == "car" else (255, 150, 0)
            if vis < 0.5:
                colour = tuple(c // 2 for c in colour)
            x0, y0, x1, y1 = (float(c) * scale for c in box)
            draw.rectangle([math.floor(x0), math.floor(y0), max(math.ceil(x1) - 1, math.floor(x0)),
                            max(math.ceil(y1) - 1, math.floor(y0))], outline=colour)
        sheet.paste(tile, (gap + (n % columns) * (tw + gap), gap + (n // columns) * (th + gap)))
    return np.asarray(sheet, dtype=np.uint8).copy()


__all__ = ["CAMERA_HEIGHT", "FOCAL", "HORIZON", "NEAR_CLIP",  # the camera's (aigc_synth.data.camera), re-exported
           "RenderedScene", "contact_sheet", "render_scene", "render_scenes_from", "scene_boxes"]


def draw_boxes(image: np.ndarray, boxes: np.ndarray, ignore: np.ndarray | None = None, scale: int = 1) -> np.ndarray:
    """A copy of ``image`` upscaled ``scale``× with each box (x0, y0, x1, y1 pixels) outlined: green,
    or grey where ``ignore`` is set (boxes the detector's ground-truth filter does not count)."""
    big = np.repeat(np.repeat(image, scale, 0), scale, 1).copy()
    h, w = big.shape[:2]
    ignore = np.zeros(len(boxes), bool) if ignore is None else ignore
    for (x0, y0, x1, y1), ign in zip(np.asarray(boxes, np.float64).reshape(-1, 4), ignore):
        colour = (150, 150, 150) if ign else (0, 255, 0)
        a0, b0 = int(np.clip(round(x0 * scale), 0, w - 1)), int(np.clip(round(y0 * scale), 0, h - 1))
        a1, b1 = int(np.clip(round(x1 * scale) - 1, 0, w - 1)), int(np.clip(round(y1 * scale) - 1, 0, h - 1))
        big[b0, a0:a1 + 1] = colour
        big[b1, a0:a1 + 1] = colour
        big[b0:b1 + 1, a0] = colour
        big[b0:b1 + 1, a1] = colour
    return big
