"""Road geometry: lane coordinates ``(lane, s, d)`` of a :class:`~aigc_synth.scenes.format.Scene` to the plane.

The plane frame is the ego's: the reference line (the right edge of lane 0) passes through the
origin at ``s = 0`` heading along ``+x``, ``+y`` to the left. On a straight, merge or lane-drop road
the reference line is the ``x`` axis; on a curve it is a circular arc of the road's curvature.
Every consumer that draws or exports a scene (bird's-eye view, exporters) goes through here, so a
road kind's geometry is written once.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from aigc_synth.scenes.format import LANE_WIDTH, RAMP_ANGLE, RAMP_LANE, Road


def lane_offset(road: Road, num_lanes: int, lane: int, s: float) -> float:
    """Lateral offset of lane ``lane``'s centre from the reference line at ``s``, metres (left positive).

    Lane ``k >= 0`` is at ``(k + 0.5) * LANE_WIDTH``. The on-ramp of a merge road (:data:`RAMP_LANE`)
    is at ``-0.5 * LANE_WIDTH`` along its acceleration lane and moves away to the right before it, at
    :data:`RAMP_ANGLE`.
    """
    if lane != RAMP_LANE:
        return (lane + 0.5) * LANE_WIDTH
    start = road.event_s - road.event_length  # where the acceleration lane begins
    return -0.5 * LANE_WIDTH - max(0.0, start - s) * math.tan(RAMP_ANGLE)


def lane_heading(road: Road, lane: int, s: float) -> float:
    """Heading of lane ``lane`` at ``s`` relative to the reference line's tangent there, radians (left positive)."""
    if lane == RAMP_LANE and s < road.event_s - road.event_length:
        return RAMP_ANGLE  # the ramp runs towards the road, i.e. to the left of the road's direction
    return 0.0


def to_plane(road: Road, s: float, lateral: float) -> tuple[float, float, float]:
    """The point ``lateral`` metres left of the reference line at ``s``: ``(x, y, tangent heading)``."""
    k = road.curvature
    if k == 0.0:
        return s, lateral, 0.0
    a = k * s  # the tangent's turn since s = 0
    return math.sin(a) / k - lateral * math.sin(a), (1 - math.cos(a)) / k + lateral * math.cos(a), a


def vehicle_pose(road: Road, num_lanes: int, lane: int, s: float, d: float) -> tuple[float, float, float]:
    """A vehicle's centre and heading in the plane: ``(x, y, heading)``, heading in radians from ``+x``."""
    x, y, tangent = to_plane(road, s, lane_offset(road, num_lanes, lane, s) + d)
    return x, y, tangent + lane_heading(road, lane, s)


def lanes_at(road: Road, num_lanes: int, s: float) -> list[int]:
    """The lanes that exist at ``s``, right to left (the ramp first where there is one)."""
    from aigc_synth.scenes.format import lane_exists

    return [k for k in range(RAMP_LANE, num_lanes) if lane_exists(road, num_lanes, k, s)]


def lane_length_factor(road: Road, lateral: float) -> float:
    """Length of a line ``lateral`` metres left of the reference line per metre of the reference line
    (``1 - curvature * lateral``: inner lanes of a curve are shorter)."""
    return 1.0 - road.curvature * lateral


# -- road priors: which parameters a request naming only a road kind gets ------------------------------------
def stratified_roads(roads: Sequence[Road], kind: str, size: int) -> list[tuple[float, float, float]]:
    """``size`` evenly spaced order statistics of the ``(curvature, event_s, event_length)`` of the
    ``kind`` roads among ``roads`` (empty when there are none): a fixed-size stand-in for their
    empirical distribution that keeps each road's parameters together."""
    rows = sorted((r.curvature, r.event_s, r.event_length) for r in roads if r.kind == kind)
    if not rows:
        return []
    return [rows[int(k)] for k in np.round(np.linspace(0, len(rows) - 1, size)).astype(int)]


def road_at(kind: str, rows: Sequence[Sequence[float]], u: float) -> Road:
    """The road of kind ``kind`` at uniform ``u`` in ``[0, 1)`` of a :func:`stratified_roads` table."""
    curvature, event_s, event_length = rows[min(int(u * len(rows)), len(rows) - 1)]
    return Road(kind, curvature, event_s, event_length)
