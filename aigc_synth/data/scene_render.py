"""Render a traffic :class:`~aigc_synth.scenes.format.Scene` through the procedural forward camera.

:mod:`aigc_synth.data.procedural` invents its vehicles; this module takes them from a scene (SUMO
ground truth or any sampler) and returns, with each image, the exact 2-D box of every visible
vehicle, the index of the agent it shows and the visible fraction of the box. The real image set
then becomes scenes × weather × time of day. Colours, sky, weather and lighting follow
``procedural.py`` (its palettes and light tables are imported); the geometry is a true pinhole
camera instead of procedural's screen-space trapezoid.

Camera model (all distances in metres, image coordinates in pixels)
    * A pinhole camera sits on the ego's lane centre at the ego's longitudinal position (``s = 0``),
      :data:`CAMERA_HEIGHT` above the road, looking along +s with zero pitch and roll. The image is
      square, ``size`` × ``size``.
    * Pixel ``(i, j)`` covers ``[j, j + 1] × [i, i + 1]`` (x right, y down); pixel centres sit at
      ``+ 0.5``. The principal point is the image centre ``(W / 2, hz)`` with the horizon row
      ``hz = HORIZON * H``; the focal length is ``f = FOCAL * W`` pixels for both axes.
    * A point at depth ``Z`` (ahead of the camera), lateral offset ``X`` (positive **left**, the
      scene's ``d`` convention) and height ``Y`` above the road projects to
      ``x = W/2 - f X / Z`` and ``y = hz + f (CAMERA_HEIGHT - Y) / Z``: things to the left of the
      ego appear left of the image centre.
    * A vehicle is drawn as its rear face, a ``width`` × :data:`VEHICLE_HEIGHT` [kind] rectangle
      standing on the road at depth ``Z = s - length / 2`` and lateral offset
      ``X = (lane - ego_lane) * LANE_WIDTH + d``. Only faces with ``Z > NEAR_CLIP`` are drawn, so
      vehicles behind or beside the ego never appear (and get no box).
    * The road is straight and flat: ``num_lanes`` lanes of ``LANE_WIDTH`` with lane 0 on the
      right, solid edge lines (white right, yellow left), dashed separators, a :data:`SHOULDER` of
      asphalt beyond each edge line and verge beyond that. Markings use the same projection as the
      vehicles, so a vehicle always stands inside its lane's lines.

Boxes and visibility
    Vehicles are painted far to near (painter's order; ties by agent index), anti-aliased by exact
    pixel coverage, so a nearer vehicle hides whatever it overlaps. ``boxes`` are the projected rear
    faces clipped to the image. ``visible`` is the fraction of the *unclipped* projected face that
    is neither outside the image nor under a face painted later (a nearer one), computed exactly on
    the rectangles. Vehicles with ``visible == 0`` (fully hidden, entirely outside the view or
    behind the near clip) are **omitted**, so every returned box has ``visible > 0``.

Determinism
    The output is a pure function of ``(scene, weather, time_of_day, seed, size)``. Geometry
    (hence boxes and visibility) depends on the scene and ``size`` only; ``seed`` drives cosmetic
    randomness alone: vehicle colours (per agent index), sky/verge colour jitter, light level, fog
    density, dash phase, rain streaks, snow flakes and sensor noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from aigc_synth.data.procedural import CAR_COLOURS, DUSK_SKY, LIGHT, SKY_DAY, TINT
from aigc_synth.schema import DEFAULT_SCHEMA
from aigc_synth.scenes.format import LANE_WIDTH, Scene, SceneError

CAMERA_HEIGHT = 1.4  # m, a dash camera behind the windscreen
HORIZON = 0.41  # horizon row / image height: the middle of procedural's 0.36..0.46 range
FOCAL = 1.0  # focal length / image width: horizontal field of view 2 atan(0.5) = 53.1 degrees
NEAR_CLIP = 2.0  # m; rear faces nearer than this are not drawn
VEHICLE_HEIGHT = {"car": 1.5, "truck": 3.5}  # m, rear-face height per agent kind
SHOULDER = 0.6  # m of asphalt beyond each edge line
LINE_WIDTH = 0.15  # m, lane marking width
DASH_LENGTH, DASH_PERIOD = 4.0, 12.0  # m: a 4 m dash every 12 m

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


@dataclass(frozen=True)
class _Vehicle:
    index: int
    kind: str
    depth: float  # Z of the rear face, m
    lateral: float  # X, m, positive left
    box: tuple[float, float, float, float]  # unclipped x0, y0, x1, y1 pixels


def project_vehicles(scene: Scene, size: int) -> list[_Vehicle]:
    """Rear faces of the agents ahead of the near clip, in painter's order (far first)."""
    f, hz, cx = FOCAL * size, HORIZON * size, size / 2.0
    out = []
    for i, a in enumerate(scene.agents):
        z = a.s - a.length / 2.0
        if z <= NEAR_CLIP:
            continue
        x = (a.lane - scene.ego_lane) * LANE_WIDTH + a.d
        height = VEHICLE_HEIGHT.get(a.kind, VEHICLE_HEIGHT["car"])
        box = (cx - f * (x + a.width / 2) / z, hz + f * (CAMERA_HEIGHT - height) / z,
               cx - f * (x - a.width / 2) / z, hz + f * CAMERA_HEIGHT / z)
        out.append(_Vehicle(i, a.kind, z, x, box))
    out.sort(key=lambda v: (-v.depth, v.index))
    return out


def _uncovered_area(clip: tuple[float, float, float, float], rects: np.ndarray) -> float:
    """Exact area of the rectangle ``clip`` not covered by the union of ``rects`` (k, 4).

    Coordinate compression: the rectangles' edges cut ``clip`` into cells that are either wholly
    covered or wholly free, so summing the free cells is exact (and exactly 0 when all are covered).
    """
    x0, y0, x1, y1 = clip
    if x1 <= x0 or y1 <= y0:
        return 0.0
    if len(rects):
        r = np.column_stack([np.clip(rects[:, 0], x0, x1), np.clip(rects[:, 1], y0, y1),
                             np.clip(rects[:, 2], x0, x1), np.clip(rects[:, 3], y0, y1)])
        rects = r[(r[:, 2] > r[:, 0]) & (r[:, 3] > r[:, 1])]
    if not len(rects):
        return (x1 - x0) * (y1 - y0)
    xs = np.unique(np.concatenate([[x0, x1], rects[:, 0], rects[:, 2]]))
    ys = np.unique(np.concatenate([[y0, y1], rects[:, 1], rects[:, 3]]))
    mx, my = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    covered = ((rects[:, 0, None, None] < mx[None, None, :]) & (mx[None, None, :] < rects[:, 2, None, None])
               & (rects[:, 1, None, None] < my[None, :, None]) & (my[None, :, None] < rects[:, 3, None, None])).any(axis=0)
    return float((np.outer(np.diff(ys), np.diff(xs)) * ~covered).sum())


def pixel_coverage(a: float, b: float, n: int) -> tuple[int, int, np.ndarray]:
    """Pixels ``i0..i1`` touched by the interval [a, b] and the length of [a, b] inside each one."""
    i0, i1 = max(int(math.floor(a)), 0), min(int(math.ceil(b)), n)
    if i1 <= i0:
        return i0, i0, np.zeros(0, np.float32)
    idx = np.arange(i0, i1, dtype=np.float64)
    return i0, i1, np.clip(np.minimum(idx + 1, b) - np.maximum(idx, a), 0.0, 1.0).astype(np.float32)


def span_coverage(lo: np.ndarray, hi: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Per pixel column, the length of [lo, hi] (per row, broadcast) inside [x - 0.5, x + 0.5]."""
    return np.clip(np.minimum(xs + 0.5, hi) - np.maximum(xs - 0.5, lo), 0.0, 1.0)


def _dash_integral(z: np.ndarray) -> np.ndarray:
    """Length of dash painted between depth 0 and ``z`` (so dash coverage of a row is exact)."""
    return np.floor(z / DASH_PERIOD) * DASH_LENGTH + np.minimum(np.mod(z, DASH_PERIOD), DASH_LENGTH)


def dash_coverage(dy: np.ndarray, fh: float, phase: float) -> np.ndarray:
    """Share of each row a dashed separator paints: ``dy`` (H, 1) row centres minus the horizon row,
    ``fh`` focal length (px) × camera height (m), ``phase`` (m) where the dash pattern starts. Exact:
    the dash length inside the row's depth span over that span; the row straddling the horizon
    reaches infinity and sees the mean duty cycle."""
    z_near = np.float32(fh) / (dy + 0.5)
    far_ok = dy > 0.5
    z_far = np.float32(fh) / np.where(far_ok, dy - 0.5, 1.0)
    return np.where(far_ok, (_dash_integral(z_far + phase) - _dash_integral(z_near + phase))
                    / np.maximum(z_far - z_near, 1e-6), DASH_LENGTH / DASH_PERIOD).astype(np.float32)


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
    from aigc_synth.scenes.format import require_straight

    require_straight([scene], "the camera renderer")


def render_scene(scene: Scene, weather: str, time_of_day: str, seed: int, size: int = 64) -> RenderedScene:
    """Render ``scene`` from the ego's camera under ``weather`` and ``time_of_day``.

    ``weather`` / ``time_of_day`` take the default schema's values; ``seed`` (>= 0) only changes
    cosmetics, never boxes. See the module docstring for the camera and the box conventions.
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

    x_right = -(scene.ego_lane + 0.5) * LANE_WIDTH  # right edge line (lane 0's right boundary)
    x_left = (scene.num_lanes - scene.ego_lane - 0.5) * LANE_WIDTH
    on_road = span_coverage(cx - (x_left + SHOULDER) * k, cx - (x_right - SHOULDER) * k, xs)

    sky_t = np.clip(ys / np.float32(hz), 0.0, 1.0)[..., None]
    img = np.broadcast_to(sky_top * (1 - sky_t) + sky_hor * sky_t, (H, W, 3)).astype(np.float32)
    ground_col = verge * (0.75 + 0.25 * depth_t)[..., None]
    road_col = road * (0.85 + 0.15 * depth_t)[..., None]
    ground_col = ground_col * (1 - on_road[..., None]) + road_col * on_road[..., None]
    img = img * (1 - ground[..., None]) + ground_col * ground[..., None]

    # lane markings: exact horizontal coverage per row; dashes by their exact share of the row's depth span
    dash_cov = dash_coverage(dy, f * h, dash_phase)
    mark_alpha = np.float32(0.35 if weather == "snow" else 0.9)  # snow half-covers the paint
    for b in range(scene.num_lanes + 1):
        xb = x_right + b * LANE_WIDTH
        cov = span_coverage(cx - (xb + LINE_WIDTH / 2) * k, cx - (xb - LINE_WIDTH / 2) * k, xs) * ground
        if 0 < b < scene.num_lanes:
            cov = cov * dash_cov
        colour = _YELLOW if b == scene.num_lanes else _WHITE  # yellow on the left edge, as on divided highways
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
        ix0, ix1, wx = pixel_coverage(x0, x1, W)
        iy0, iy1, wy = pixel_coverage(y0, y1, H)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        alpha = np.outer(wy, wx)  # exact share of each pixel covered by the face
        palette = _TRUCK_COLOURS if v.kind == "truck" else CAR_COLOURS
        patch = np.empty((iy1 - iy0, ix1 - ix0, 3), np.float32)
        patch[:] = palette[min(int(colour_u[v.index] * len(palette)), len(palette) - 1)]
        em = np.zeros_like(patch)
        fw, fh = x1 - x0, y1 - y0
        for (u0, v0, u1, v1), role in _face_layers(v.kind):
            jx0, jx1, lx = pixel_coverage(x0 + u0 * fw, x0 + u1 * fw, W)
            jy0, jy1, ly = pixel_coverage(y0 + v0 * fh, y0 + v1 * fh, H)
            if jx1 <= jx0 or jy1 <= jy0:
                continue
            sl = (slice(jy0 - iy0, jy1 - iy0), slice(jx0 - ix0, jx1 - ix0))
            # the part's share of the *face* inside each pixel, so the final blend by alpha stays exact
            r = np.clip(np.outer(ly, lx) / np.maximum(alpha[sl], 1e-6), 0.0, 1.0)[..., None]
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
    found = []
    for n_, v in enumerate(vehicles):  # same painter's order as the renderer
        x0, y0, x1, y1 = v.box
        clip = (max(x0, 0.0), max(y0, 0.0), min(x1, float(W)), min(y1, float(H)))
        vis = _uncovered_area(clip, rects[n_ + 1:]) / ((x1 - x0) * (y1 - y0))
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


__all__ = ["CAMERA_HEIGHT", "FOCAL", "HORIZON", "NEAR_CLIP", "VEHICLE_HEIGHT", "RenderedScene", "contact_sheet",
           "render_scene", "render_scenes_from"]


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
