"""The ego camera of :mod:`aigc_synth.data.scene_render`: projection, exact pixel coverage and the road.

Everything here is geometry, a pure function of the scene and the image size: where each vehicle's
rear face lands in the image (:func:`project_vehicles`, far to near), the exact-coverage primitives
that the renderer, the layout raster (:mod:`aigc_synth.data.layout`) and the annotation raster
(:mod:`aigc_synth.data.annotation_layout`) share (:func:`shape_alpha`, :func:`span_coverage`,
:func:`pixel_coverage`, :func:`dash_coverage`), the exact uncovered area of projected faces behind
:func:`~aigc_synth.data.scene_render.scene_boxes`' visibility (:func:`uncovered_area`,
:func:`uncovered_quad_area`) and the road of every kind as the camera sees it (:func:`road_raster`).
Colours, weather, lighting, the boxes and their visibility are :mod:`aigc_synth.data.scene_render`'s.

Camera model (all distances in metres, image coordinates in pixels)
    * A pinhole camera sits on the ego's lane centre at the ego's longitudinal position (``s = 0``),
      :data:`CAMERA_HEIGHT` above the road, looking along the road's tangent there with zero pitch
      and roll. The image is square, ``size`` × ``size``.
    * Pixel ``(i, j)`` covers ``[j, j + 1] × [i, i + 1]`` (x right, y down); pixel centres sit at
      ``+ 0.5``. The principal point is the image centre ``(W / 2, hz)`` with the horizon row
      ``hz = HORIZON * H``; the focal length is ``f = FOCAL * W`` pixels for both axes.
    * A point at depth ``Z`` (ahead of the camera), lateral offset ``X`` (positive **left**, the
      scene's ``d`` convention) and height ``Y`` above the road projects to
      ``x = W/2 - f X / Z`` and ``y = hz + f (CAMERA_HEIGHT - Y) / Z``: things to the left of the
      ego appear left of the image centre. ``(Z, X)`` is the ego frame of
      :mod:`aigc_synth.scenes.road`'s plane (``to_plane``) moved to the camera: on a straight,
      merge or lane-drop road ``Z = s`` and ``X`` the offset from the ego's lane centre.
    * A vehicle is drawn as its rear face, a ``width`` × :data:`VEHICLE_HEIGHT` [kind] rectangle
      standing on the road behind its plane pose (``vehicle_pose``: centre and heading), its two
      lower corners ``length / 2`` behind the centre along the heading and ``width / 2`` to either
      side. A face square to the camera (heading equal to the camera's: every vehicle on a straight
      road, and off the ramp on merge and lane-drop roads) projects to a rectangle; on a straight road
      it is computed as ``Z = s - length / 2``, ``X = (lane - ego_lane) * LANE_WIDTH + d`` exactly as
      before road kinds existed (the *rectangle fast path*: straight output is unchanged bit for
      bit). A face turned by its heading relative to the camera (on a curve, on the ramp) projects
      to a trapezoid with vertical sides; its ``box`` is the tight box of that trapezoid. Only faces
      whose corners both have ``Z > NEAR_CLIP`` are drawn, so vehicles behind or beside the ego never
      appear (and get no box).
    * The road is flat: ``num_lanes`` lanes of ``LANE_WIDTH`` with lane 0 on the right, solid edge
      lines (white right, yellow left), dashed separators, a :data:`SHOULDER` of asphalt beyond each
      edge line and verge beyond that. Markings use the same projection as the vehicles, so a
      vehicle always stands inside its lane's lines. On a straight road every boundary is a line
      of constant ``X`` (drawn in closed form, each row at its centre). Every other kind
      (:func:`road_raster`) samples its boundaries along ``s``, maps them through ``to_plane`` into
      the camera frame and draws each boundary where it crosses the ground depth of each sub-row
      (rows are split until no boundary moves more than :data:`SUBROW_PX` sideways within one, so a
      curve's far end sweeping across the image near the horizon stays continuous): exact
      horizontal coverage at the sub-row's middle times its height inside the boundary's stretch of
      road, summed per row; dashes by their share of the row's depth span, measured along the
      boundary's own length (``lane_length_factor``):

      - ``curve``: the lanes bend with the road's curvature (a left curve, positive curvature, bends
        left in the image); drawn until the tangent has turned :data:`CURVE_MAX_TURN` (the road
        then meets the horizon within a pixel);
      - ``merge``: the on-ramp comes in from the right at ``RAMP_ANGLE`` (its own edge lines, a
        verge gore between it and lane 0's solid edge line), runs as the acceleration lane right of
        lane 0 from ``event_s - event_length`` (line between them dashed) and ends at ``event_s``:
        its outer edge line closes in to lane 0's edge over :data:`TAPER_LENGTH` and lane 0's edge
        line continues solid;
      - ``lane_drop``: the leftmost lane ends at ``event_s``: its separator stops there and the
        yellow edge line closes in by one lane over :data:`TAPER_LENGTH`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from aigc_synth.scenes.format import LANE_WIDTH, RAMP_LANE, Road, Scene, lane_end
from aigc_synth.scenes.road import (
    lane_length_factor,
    lane_offset,
    to_plane,
    vehicle_pose,
)

CAMERA_HEIGHT = 1.4  # m, a dash camera behind the windscreen
HORIZON = 0.41  # horizon row / image height: the middle of procedural's 0.36..0.46 range
FOCAL = 1.0  # focal length / image width: horizontal field of view 2 atan(0.5) = 53.1 degrees
NEAR_CLIP = 2.0  # m; rear faces nearer than this are not drawn
VEHICLE_HEIGHT = {"car": 1.5, "truck": 3.5}  # m, rear-face height per agent kind
SHOULDER = 0.6  # m of asphalt beyond each edge line
LINE_WIDTH = 0.15  # m, lane marking width
DASH_LENGTH, DASH_PERIOD = 4.0, 12.0  # m: a 4 m dash every 12 m
TAPER_LENGTH = 15.0  # m: past event_s, an ended lane's outer edge line closes in over this length
CURVE_MAX_TURN = 1.4  # rad: a curve is drawn until its tangent has turned this much (depth still grows)
ROAD_FAR = 2000.0  # m: the farthest sample of a road boundary; a straight one continues to the horizon
SUBROW_PX, MAX_SUBROWS = 1.0, 64  # road kinds but straight: rows split until no line moves > 1 px sideways in one


Quad = tuple[float, float, float, float, float, float]  # trapezoid with vertical sides: xa, xb, top_a, top_b, bottom_a, bottom_b


@dataclass(frozen=True)
class _Vehicle:
    index: int
    kind: str
    depth: float  # Z of the rear face's centre, m
    lateral: float  # X of the rear face's centre, m, positive left
    box: tuple[float, float, float, float]  # unclipped tight box x0, y0, x1, y1 pixels
    # the projected face when it is not the rectangle ``box`` (a face turned relative to the camera):
    # x of its left and right sides, y of its top and of its bottom edge at each side
    quad: Quad | None = None
    # the face in the camera frame: (Z, X) of its image-left and image-right lower corners and its
    # height (m), so its parts (window, lamps) project exactly; None on the straight fast path
    corners: tuple[float, float, float, float, float] | None = None

    def shape(self) -> tuple[float, ...]:
        """The projected face: the box (x0, y0, x1, y1) of a rectangle, else the :data:`Quad`."""
        return self.box if self.quad is None else self.quad


def camera_pose(scene: Scene) -> tuple[float, float, float]:
    """The camera in :mod:`aigc_synth.scenes.road`'s plane: the ego's lane centre at ``s = 0``,
    looking along the road's tangent there: ``(x, y, heading)``."""
    road = scene.road
    return to_plane(road, 0.0, lane_offset(road, scene.num_lanes, scene.ego_lane, 0.0))


def to_camera(cam: tuple[float, float, float], x: float, y: float) -> tuple[float, float]:
    """Plane point ``(x, y)`` in the camera frame of pose ``cam``: ``(Z, X)``, depth and lateral offset (left positive)."""
    x0, y0, heading = cam
    c, s = math.cos(heading), math.sin(heading)
    dx, dy = x - x0, y - y0
    return c * dx + s * dy, -s * dx + c * dy


def project_face(corners: tuple[float, float, float, float, float], size: int,
                 u0: float = 0.0, v0: float = 0.0, u1: float = 1.0, v1: float = 1.0) -> Quad | None:
    """The part ``[u0, u1] × [v0, v1]`` of a rear face (fractions of the face from its image-left
    side and from its top) projected: a trapezoid with vertical sides, or None when seen edge-on."""
    zl, xl, zr, xr, height = corners
    f, hz, cx = FOCAL * size, HORIZON * size, size / 2.0
    out = []
    for u in (u0, u1):
        z, x = zl + u * (zr - zl), xl + u * (xr - xl)
        out.append((cx - f * x / z, hz + f * (CAMERA_HEIGHT - height * (1.0 - v0)) / z,
                    hz + f * (CAMERA_HEIGHT - height * (1.0 - v1)) / z))
    (xa, ta, ba), (xb, tb, bb) = out
    if not xb > xa:
        return None
    return xa, xb, ta, tb, ba, bb


def _project_on_road(scene: Scene, size: int) -> list[_Vehicle]:
    """:func:`project_vehicles` for any road kind: faces at their plane poses (``vehicle_pose``)."""
    road, n = scene.road, scene.num_lanes
    cam = camera_pose(scene)
    out = []
    for i, a in enumerate(scene.agents):
        x, y, heading = vehicle_pose(road, n, a.lane, a.s, a.d)
        c, s = math.cos(heading), math.sin(heading)
        bx, by = x - a.length / 2 * c, y - a.length / 2 * s  # centre of the rear face
        (zl, xl), (zr, xr) = (to_camera(cam, bx - side * a.width / 2 * s, by + side * a.width / 2 * c) for side in (1, -1))
        if min(zl, zr) <= NEAR_CLIP:
            continue
        corners = (zl, xl, zr, xr, VEHICLE_HEIGHT.get(a.kind, VEHICLE_HEIGHT["car"]))
        quad = project_face(corners, size)
        if quad is None:
            continue
        xa, xb, ta, tb, ba, bb = quad
        z, lateral = to_camera(cam, bx, by)
        rect = ta == tb and ba == bb  # square to the camera
        out.append(_Vehicle(i, a.kind, z, lateral, (xa, min(ta, tb), xb, max(ba, bb)), None if rect else quad, corners))
    out.sort(key=lambda v: (-v.depth, v.index))
    return out


def project_vehicles(scene: Scene, size: int) -> list[_Vehicle]:
    """Rear faces of the agents ahead of the near clip, in painter's order (far first)."""
    if scene.road.kind != "straight":
        return _project_on_road(scene, size)
    f, hz, cx = FOCAL * size, HORIZON * size, size / 2.0  # the rectangle fast path: straight output unchanged
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


def uncovered_area(clip: tuple[float, float, float, float], rects: np.ndarray) -> float:
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


def _quad_edges(q: tuple[float, ...]) -> np.ndarray:
    """(2, 2) slope and intercept (``y = m x + c``) of a :data:`Quad`'s top and bottom edges."""
    xa, xb, ta, tb, ba, bb = q
    mt, mb = (tb - ta) / (xb - xa), (bb - ba) / (xb - xa)
    return np.array([[mt, ta - mt * xa], [mb, ba - mb * xa]], np.float64)


def as_quad(shape: tuple[float, ...]) -> tuple[float, ...]:
    """A projected face (box or :data:`Quad`) as a :data:`Quad`."""
    if len(shape) == 6:
        return tuple(shape)
    x0, y0, x1, y1 = shape
    return x0, x1, y0, y0, y1, y1


def quad_area(q: tuple[float, ...]) -> float:
    """Area of a :data:`Quad`, px²."""
    xa, xb, ta, tb, ba, bb = q
    return (xb - xa) * ((ba - ta) + (bb - tb)) / 2.0


def clipped_quad_box(q: tuple[float, ...], width: int, height: int) -> tuple[float, float, float, float]:
    """Tight box of the part of :data:`Quad` ``q`` inside the ``width`` × ``height`` image (call it
    only for a quad that reaches into the image)."""
    xa, xb = q[0], q[1]
    lo, hi = max(xa, 0.0), min(xb, float(width))
    (mt, ct), (mb, cb) = _quad_edges(q)
    y0 = min(mt * lo + ct, mt * hi + ct)
    y1 = max(mb * lo + cb, mb * hi + cb)
    return lo, max(float(y0), 0.0), hi, min(float(y1), float(height))


def uncovered_quad_area(q: tuple[float, ...], others: Sequence[tuple[float, ...]], width: int, height: int) -> float:
    """Exact area of :data:`Quad` ``q`` inside the image and outside the union of the quads ``others``.

    Cut the x axis at the quads' vertical sides, the image borders and every crossing of two of the
    lines involved (tops, bottoms, ``y = 0``, ``y = height``): inside each slab no two lines cross
    and no quad starts or ends, so the uncovered height is linear in x and its value at the slab's
    middle times the slab's width is exact.
    """
    lo, hi = max(q[0], 0.0), min(q[1], float(width))
    if hi <= lo:
        return 0.0
    y_lo, y_hi = min(q[2], q[3]), max(q[4], q[5])
    others = [o for o in others if o[0] < hi and o[1] > lo and min(o[2], o[3]) < y_hi and max(o[4], o[5]) > y_lo]
    edges = [_quad_edges(q), np.array([[0.0, 0.0], [0.0, float(height)]])] + [_quad_edges(o) for o in others]
    m, c = np.concatenate(edges).T
    dm = m[:, None] - m[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        crossings = (c[None, :] - c[:, None]) / dm
    cuts = np.concatenate([[lo, hi], [x for o in others for x in o[:2]], crossings[dm != 0]])
    xs = np.unique(cuts[(cuts >= lo) & (cuts <= hi)])
    mid, w = (xs[:-1] + xs[1:]) / 2, np.diff(xs)
    top = np.maximum(m[0] * mid + c[0], 0.0)
    bottom = np.minimum(m[1] * mid + c[1], float(height))
    free = np.clip(bottom - top, 0.0, None)
    if others:
        k = len(others)
        active = np.array([(o[0] < mid) & (mid < o[1]) for o in others]).T  # (slabs, k)
        o_top = m[4:4 + 2 * k:2] * mid[:, None] + c[4:4 + 2 * k:2]
        o_bot = m[5:4 + 2 * k:2] * mid[:, None] + c[5:4 + 2 * k:2]
        a = np.where(active, np.clip(o_top, top[:, None], bottom[:, None]), top[:, None])
        b = np.where(active, np.clip(o_bot, top[:, None], bottom[:, None]), top[:, None])
        order = np.argsort(a, axis=1)
        a, b = np.take_along_axis(a, order, 1), np.take_along_axis(b, order, 1)
        reach = np.concatenate([top[:, None], np.maximum.accumulate(b, axis=1)[:, :-1]], axis=1)
        free = free - np.clip(b - np.maximum(a, reach), 0.0, None).sum(axis=1)
    return float((np.clip(free, 0.0, None) * w).sum())


def pixel_coverage(a: float, b: float, n: int) -> tuple[int, int, np.ndarray]:
    """Pixels ``i0..i1`` touched by the interval [a, b] and the length of [a, b] inside each one."""
    i0, i1 = max(int(math.floor(a)), 0), min(int(math.ceil(b)), n)
    if i1 <= i0:
        return i0, i0, np.zeros(0, np.float32)
    idx = np.arange(i0, i1, dtype=np.float64)
    return i0, i1, np.clip(np.minimum(idx + 1, b) - np.maximum(idx, a), 0.0, 1.0).astype(np.float32)


def _edge_integral(xa: float, ya: float, xb: float, yb: float, lo: np.ndarray, hi: np.ndarray,
                   rows: np.ndarray) -> np.ndarray:
    """Per row ``i`` (column vector ``rows``) and column interval ``[lo, hi]``: the integral over x of
    ``clip(l(x) - i, 0, 1)`` for the line ``l`` through ``(xa, ya)`` and ``(xb, yb)``, the area of the
    pixels of row ``i`` above ``l`` (exact: the antiderivative of the clipped ramp, piecewise quadratic)."""
    slope = (yb - ya) / (xb - xa)
    l0, l1 = ya + slope * (lo - xa), ya + slope * (hi - xa)

    def antiderivative(y: np.ndarray) -> np.ndarray:  # of clip(y - i, 0, 1) with respect to y
        t = y - rows
        return np.where(t <= 0, 0.0, np.where(t >= 1, t - 0.5, t * t / 2))

    dl = l1 - l0
    steep = np.abs(dl) > 1e-6
    exact = (antiderivative(l1) - antiderivative(l0)) / np.where(steep, dl, 1.0)
    flat = np.clip((l0 + l1) / 2 - rows, 0.0, 1.0)
    return np.where(steep, exact, flat) * (hi - lo)


def shape_alpha(shape: tuple[float, ...], height: int, width: int) -> tuple[slice, slice, np.ndarray] | None:
    """(rows, columns, exact share of each pixel covered) of a projected face on a ``height`` ×
    ``width`` grid: a box ``(x0, y0, x1, y1)`` or a :data:`Quad`; None if it covers no pixel."""
    if len(shape) == 4:
        x0, y0, x1, y1 = shape
        ix0, ix1, wx = pixel_coverage(x0, x1, width)
        iy0, iy1, wy = pixel_coverage(y0, y1, height)
        if ix1 <= ix0 or iy1 <= iy0:
            return None
        return slice(iy0, iy1), slice(ix0, ix1), np.outer(wy, wx)
    xa, xb, ta, tb, ba, bb = shape
    ix0, ix1, _ = pixel_coverage(xa, xb, width)
    iy0, iy1, _ = pixel_coverage(min(ta, tb), max(ba, bb), height)
    if ix1 <= ix0 or iy1 <= iy0 or not xb > xa:
        return None
    cols = np.arange(ix0, ix1, dtype=np.float64)
    lo, hi = np.maximum(cols, xa), np.minimum(cols + 1, xb)
    rows = np.arange(iy0, iy1, dtype=np.float64)[:, None]
    # per pixel: its part above the bottom edge minus its part above the top edge, integrated over x
    alpha = _edge_integral(xa, ba, xb, bb, lo, hi, rows) - _edge_integral(xa, ta, xb, tb, lo, hi, rows)
    return slice(iy0, iy1), slice(ix0, ix1), np.clip(alpha, 0.0, 1.0)


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


# ---- road geometry of every road kind ---------------------------------------------------------------
@dataclass(frozen=True)
class _RoadLine:
    """A line on the road (a lane boundary or the outer edge of a shoulder) sampled along ``s`` in the camera frame."""

    z: np.ndarray  # depth of the samples, m, increasing
    x: np.ndarray  # lateral offset, m, positive left
    arc: np.ndarray  # length along the line from s = 0, m (where its dashes are)
    to_horizon: bool  # the line goes on straight beyond its last sample


_S_SAMPLES = np.concatenate([np.arange(0.0, 30.0, 1.0), np.geomspace(30.0, ROAD_FAR, 120)])


def _road_line(road: Road, cam: tuple[float, float, float], lateral: Callable[[float], float], s0: float = -math.inf,
               s1: float = math.inf, breaks: Sequence[float] = ()) -> _RoadLine | None:
    """The line ``lateral(s)`` metres left of the reference line for ``s0 <= s <= s1`` (None if none of it
    lies ahead of the camera); ``breaks``: where ``lateral`` has kinks (sampled exactly)."""
    far = ROAD_FAR if road.curvature == 0 else min(ROAD_FAR, CURVE_MAX_TURN / abs(road.curvature))
    lo, hi = max(s0, 0.0), min(s1, far)
    if not hi > lo:
        return None
    ss = np.unique(np.concatenate([[lo, hi], _S_SAMPLES[(_S_SAMPLES > lo) & (_S_SAMPLES < hi)],
                                   [b for b in breaks if lo < b < hi]]))
    lat = np.array([lateral(float(s)) for s in ss])
    zx = np.array([to_camera(cam, *to_plane(road, float(s), float(off))[:2]) for s, off in zip(ss, lat)])
    return _RoadLine(zx[:, 0], zx[:, 1], ss * lane_length_factor(road, lat), road.curvature == 0 and s1 == math.inf)


@functools.lru_cache(maxsize=512)
def _road_parts(road: Road, num_lanes: int, ego_lane: int) -> tuple[list, list]:
    """The road of a scene as lines in its camera frame: ``(pieces, marks)``, ``pieces`` the asphalt as
    (right edge, left edge) pairs of shoulder edges, ``marks`` the markings as (line, colour, dashed)."""
    n, lw, e, taper = num_lanes, LANE_WIDTH, road.event_s, TAPER_LENGTH
    cam = to_plane(road, 0.0, lane_offset(road, n, ego_lane, 0.0))

    def line(lateral: Callable[[float], float], s0: float = -math.inf, s1: float = math.inf, breaks=()) -> _RoadLine | None:
        return _road_line(road, cam, lateral, s0, s1, breaks)

    def closing(s: float) -> float:  # 0 up to event_s, 1 from event_s + TAPER_LENGTH on
        return min(max((s - e) / taper, 0.0), 1.0)

    events = (e, e + taper)
    # the carriageway's left edge: a lane drop's leftmost lane closes in past event_s
    left = (lambda s: n * lw - lw * closing(s)) if road.kind == "lane_drop" else (lambda s: n * lw)
    pieces = [(line(lambda s: -SHOULDER), line(lambda s: left(s) + SHOULDER, breaks=events))]
    marks = []
    if road.kind == "merge":
        start = e - road.event_length  # where the acceleration lane begins

        def ramp_right(s: float) -> float:  # the ramp, the acceleration lane, then closing in to lane 0's edge
            return lane_offset(road, n, RAMP_LANE, min(s, e)) - lw / 2 + lw * closing(s)

        def ramp_left(s: float) -> float:
            return lane_offset(road, n, RAMP_LANE, min(s, e)) + lw / 2

        kinks = (start, e, e + taper)
        pieces.append((line(lambda s: ramp_right(s) - SHOULDER, s1=e + taper, breaks=kinks),
                       line(lambda s: ramp_left(s) + SHOULDER, s1=e + taper, breaks=kinks)))
        marks += [(line(ramp_right, s1=e + taper, breaks=kinks), "white", False),
                  (line(ramp_left, s1=start, breaks=kinks), "white", False),  # the ramp's side of the gore
                  (line(lambda s: 0.0, s1=start), "white", False),  # lane 0's edge: solid along the gore,
                  (line(lambda s: 0.0, start, e), "white", True),  # dashed beside the acceleration lane,
                  (line(lambda s: 0.0, s0=e), "white", False)]  # solid again once it has ended
    else:
        marks.append((line(lambda s: 0.0), "white", False))
    for b in range(1, n):  # separators, where the lanes on both sides exist
        marks.append((line(lambda s, b=b: b * lw, s1=min(lane_end(road, n, b - 1), lane_end(road, n, b))), "white", True))
    marks.append((line(left, breaks=events), "yellow", False))
    pieces = [(r, lf) for r, lf in pieces if r is not None and lf is not None]
    return pieces, [m for m in marks if m[0] is not None]


@dataclass(frozen=True)
class RoadMark:
    """One road marking of a :class:`RoadRaster`: ``coverage`` (H, W) float32 share of each pixel it
    paints drawn solid (the ground share of the horizon row included), ``colour`` ``"white"`` or
    ``"yellow"``; a dashed one has ``dash``: the length along the line (m) at each row's near and far
    edge, (H, 1) each, and whether the far edge is below the horizon (:meth:`dash_share`)."""

    coverage: np.ndarray
    colour: str
    dash: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def dash_share(self, phase: float) -> np.ndarray:
        """(H, 1) float32 share of each row the dashes paint, the pattern starting at ``phase`` metres
        (exact over the row's stretch of the line; the row reaching the horizon sees the duty cycle)."""
        near, far, far_ok = self.dash
        return np.where(far_ok, (_dash_integral(far + phase) - _dash_integral(near + phase)) / np.maximum(far - near, 1e-6),
                        DASH_LENGTH / DASH_PERIOD).astype(np.float32)


@dataclass(frozen=True)
class RoadRaster:
    """A scene's road seen from its camera: ``surface`` (H, W) float32 share of the ground part of each
    pixel that is asphalt (lanes and shoulders), ``marks`` its :class:`RoadMark` s."""

    surface: np.ndarray
    marks: tuple[RoadMark, ...]


def road_raster(scene: Scene, size: int) -> RoadRaster:
    """The road of ``scene`` (any kind) at ``size`` px, as the renderer and the layout raster draw
    it for every kind but straight (see the module docstring; the arrays are read-only and cached
    per road, lane count, ego lane and size)."""
    return _road_raster(scene.road, scene.num_lanes, scene.ego_lane, int(size))


@functools.lru_cache(maxsize=64)
def _road_raster(road: Road, num_lanes: int, ego_lane: int, size: int) -> RoadRaster:
    pieces, marks = _road_parts(road, num_lanes, ego_lane)
    H = W = size
    f, hz, cx, h = FOCAL * W, HORIZON * H, W / 2.0, CAMERA_HEIGHT
    fh = f * h
    rows = np.arange(H, dtype=np.float64)
    ground = np.clip(rows + 1.0 - hz, 0.0, 1.0)[:, None]
    xs = (np.arange(W, dtype=np.float64) + 0.5)[None, :]

    def y_extent(line: _RoadLine) -> tuple[float, float]:
        """Image rows (y) the line spans: from its nearest sample down ... up to its farthest (or the horizon)."""
        near = hz + fh / line.z[0] if line.z[0] > 0 else math.inf
        return near, hz if line.to_horizon else hz + fh / line.z[-1]

    def u_at(line: _RoadLine, y: np.ndarray) -> np.ndarray:
        dy = np.maximum(y - hz, 1e-9)
        return cx - np.interp(fh / dy, line.z, line.x) * dy / h

    # Rows are split into sub-rows so that no line moves more than SUBROW_PX sideways within one: a
    # curve's far end sweeps across the image within a row or two above the horizon.
    sweep = np.zeros(H)
    for line in [ln for piece in pieces for ln in piece] + [m[0] for m in marks]:
        near, far = y_extent(line)
        a, b = np.maximum(np.maximum(rows, hz), far), np.minimum(rows + 1.0, near)
        ok = b > a
        ua, ub = (np.clip(u_at(line, np.where(ok, y, hz + 1.0)), 0.0, W) for y in (a, b))
        sweep = np.maximum(sweep, np.where(ok, np.abs(ua - ub), 0.0))
    nsub = np.clip(np.ceil(sweep / SUBROW_PX), 1, MAX_SUBROWS).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(nsub)[:-1]])
    per = np.repeat(nsub, nsub).astype(np.float64)
    j = np.arange(int(nsub.sum())) - np.repeat(starts, nsub)
    y_lo = np.repeat(rows, nsub) + j / per
    y_hi = y_lo + 1.0 / per
    g_lo = np.maximum(y_lo, hz)  # the sub-row's part on the ground
    dy = np.maximum((g_lo + y_hi) / 2 - hz, 1e-9)[:, None]  # evaluated at the middle of that part
    z, k = fh / dy, dy / h
    y_lo, y_hi, g_lo = y_lo[:, None], y_hi[:, None], g_lo[:, None]

    def height(*lines: _RoadLine) -> np.ndarray:
        """Height (px) of each sub-row on ground within all of ``lines``' stretches of road."""
        near = min(y_extent(ln)[0] for ln in lines)
        far = max(y_extent(ln)[1] for ln in lines)
        return np.clip(np.minimum(y_hi, near) - np.maximum(g_lo, far), 0.0, None)

    def per_row(a: np.ndarray) -> np.ndarray:  # sum over each row's sub-rows
        return np.add.reduceat(a, starts, axis=0)

    spans = [(cx - np.interp(z, left.z, left.x) * k, cx - np.interp(z, right.z, right.x) * k, height(right, left))
             for right, left in pieces]
    surface = sum(span_coverage(lo, hi, xs) * hgt for lo, hi, hgt in spans)
    if len(spans) == 2:  # the ramp's asphalt overlaps the road's: count the overlap once
        (lo0, hi0, h0), (lo1, hi1, h1) = spans
        surface = surface - span_coverage(np.maximum(lo0, lo1), np.minimum(hi0, hi1), xs) * np.minimum(h0, h1)
    surface = np.clip(per_row(surface) / np.maximum(ground, 1e-12), 0.0, 1.0).astype(np.float32)

    dy_row = rows[:, None] + 0.5 - hz  # dashes per row, as on a straight road (dash_coverage)
    far_ok = dy_row > 0.5
    z_near, z_far = fh / np.maximum(dy_row + 0.5, 1e-9), fh / np.where(far_ok, dy_row - 0.5, 1.0)
    out = []
    for line, colour, dashed in marks:
        u = cx - np.interp(z, line.z, line.x) * k
        slope = np.interp(z, line.z, np.gradient(line.x, line.z))  # dX/dZ: a slanted line is wider across a row
        half = LINE_WIDTH / 2 * np.sqrt(1.0 + slope * slope) * k
        cov = np.clip(per_row(span_coverage(u - half, u + half, xs) * height(line)), 0.0, 1.0).astype(np.float32)
        dash = (np.interp(z_near, line.z, line.arc), np.interp(z_far, line.z, line.arc), far_ok) if dashed else None
        out.append(RoadMark(cov, colour, dash))
    for a in [surface] + [m.coverage for m in out] + [d for m in out if m.dash for d in m.dash]:
        a.setflags(write=False)
    return RoadRaster(surface, tuple(out))
