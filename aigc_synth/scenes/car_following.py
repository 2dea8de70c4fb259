"""SUMO's car-following safety rule, in closed form, for the scene sampler.

A scene is replayed in SUMO (step 0.1 s, Krauss model, 1 s headway time, minGap 2.5 m). At the first
step each driver moves towards the Krauss "safe speed" for its gap to the vehicle ahead; when that
asks for more than its normal deceleration (4.5 m/s² for cars, 4.0 for trucks) in one step, SUMO
brakes at that normal limit unless the kinematics demand more, and then brakes harder: 1.2 × the
deceleration that still stops the follower behind a leader braking at its own limit. Only that last
case is the replay's hard-braking event. SUMO's own snapshots almost never sit there (0.01-0.2 % of
same-lane pairs; 5-7 % need the normal limit), so the sampler treats it like the no-overlap rule: a
constraint of the data, not a choice of the model.

The formulas are SUMO's semi-implicit Euler versions (``MSCFModel::maximumSafeFollowSpeed``,
``maximumSafeStopSpeedEuler``, ``brakeGapEuler``, ``calculateEmergencyDeceleration``, SUMO 1.x),
restated here and checked against SUMO itself in ``tests/test_car_following.py``.
"""

from __future__ import annotations

import math

from aigc_synth.scenes.sumo import MIN_GAP, SCENE_SUMO_OPTIONS

HEADWAY_S = 1.0  # Krauss tau (SUMO's default)
STEP_S = float(SCENE_SUMO_OPTIONS["step-length"])  # the replay's step length
DECEL = {"car": 4.5, "truck": 4.0}  # m/s^2, SUMO's vClass defaults (passenger, truck) of the replay's vTypes
_EPS = 0.001  # SUMO's NUMERICAL_EPS, taken off the gap
EMERGENCY_AMPLIFIER = 1.2  # SUMO's EMERGENCY_DECEL_AMPLIFIER


def brake_gap(speed: float, decel: float, step: float = STEP_S) -> float:
    """Distance SUMO assumes a vehicle at ``speed`` needs to stop when braking ``decel`` every step."""
    reduction = decel * step
    steps = int(speed / reduction)
    return step * (steps * speed - reduction * steps * (steps + 1) / 2.0)


def _brake_gap_inverse(distance: float, decel: float, step: float = STEP_S) -> float:
    """Smallest speed whose :func:`brake_gap` is ``distance`` (the inverse of a piecewise linear function)."""
    if distance <= 0.0:
        return 0.0
    reduction = decel * step
    # brake_gap((m) * reduction) = step * reduction * m (m - 1) / 2: the last such knot at or below distance
    m = math.floor((1.0 + math.sqrt(1.0 + 8.0 * distance / (step * reduction))) / 2.0)
    return (distance / step + reduction * m * (m + 1) / 2.0) / m


def safe_stop_speed(gap: float, decel: float, headway: float = HEADWAY_S, step: float = STEP_S) -> float:
    """SUMO's speed from which a driver with reaction time ``headway`` still stops within ``gap`` (Euler)."""
    g = gap - _EPS
    if g <= 0.0:
        return 0.0
    b = decel * step
    n = math.floor(0.5 - (headway - 0.5 * math.sqrt(step * step + 4.0 * (step * (2.0 * g / b - headway) + headway * headway))) / step)
    h = 0.5 * n * (n - 1) * b * step + n * b * headway
    return n * b + (g - h) / (n * step + headway)


def _stop_gap_for(speed: float, decel: float, headway: float = HEADWAY_S, step: float = STEP_S) -> float:
    """Smallest gap whose :func:`safe_stop_speed` is ``speed`` (its inverse)."""
    b = decel * step
    n = math.floor(speed / b)
    return 0.5 * n * (n - 1) * b * step + n * b * headway + (speed - n * b) * (n * step + headway) + _EPS


def safe_follow_speed(gap: float, leader_speed: float, decel: float, leader_decel: float) -> float:
    """SUMO's Krauss safe speed behind a leader ``gap`` m ahead (bumper to bumper, minGap not yet taken off)."""
    return safe_stop_speed(gap - MIN_GAP + brake_gap(leader_speed, max(decel, leader_decel)), decel)


def emergency_decel(gap: float, follower_speed: float, leader_speed: float, leader_decel: float) -> float:
    """Deceleration that stops the follower behind a leader braking at ``leader_decel`` (SUMO's, without the amplifier)."""
    g = gap - MIN_GAP
    leader_stop = 0.5 * leader_speed * leader_speed / leader_decel
    if g + leader_stop <= 0.0:
        return math.inf
    b1 = 0.5 * follower_speed * follower_speed / (g + leader_stop)
    if b1 <= leader_decel:
        return b1
    return 0.5 * (follower_speed ** 2 - leader_speed ** 2) / g if g > 0.0 else math.inf


def brakes_beyond_limit(gap: float, follower_speed: float, leader_speed: float, decel: float, leader_decel: float) -> bool:
    """Whether SUMO makes this follower brake harder than ``decel`` at its first step behind this leader."""
    over = follower_speed - safe_follow_speed(gap, leader_speed, decel, leader_decel) > decel * STEP_S + 1e-9
    return over and EMERGENCY_AMPLIFIER * emergency_decel(gap, follower_speed, leader_speed, leader_decel) > decel + 1e-9


def max_follower_speed(gap: float, leader_speed: float, decel: float, leader_decel: float) -> float:
    """Fastest a follower may drive ``gap`` m behind this leader without braking harder than ``decel``.

    Either its safe speed is within one step's normal braking, or the kinematics ask for no more than
    ``decel`` / 1.2 (then SUMO brakes at ``decel``): the larger of the two speeds.
    """
    normal = safe_follow_speed(gap, leader_speed, decel, leader_decel) + decel * STEP_S
    room = gap - MIN_GAP + 0.5 * leader_speed * leader_speed / leader_decel
    kinematic = math.sqrt(2.0 * (decel / EMERGENCY_AMPLIFIER) * room) if room > 0.0 else 0.0
    return max(normal, kinematic)


def min_leader_speed(gap: float, follower_speed: float, decel: float, leader_decel: float) -> float:
    """Slowest a leader may drive so that a follower at ``follower_speed`` brakes no harder than ``decel``.

    The inverse of :func:`max_follower_speed` in the leader's speed (0 when any leader speed will do).
    """
    target = follower_speed - decel * STEP_S
    if target <= 0.0:
        return 0.0
    normal = _brake_gap_inverse(_stop_gap_for(target, decel) - (gap - MIN_GAP), max(decel, leader_decel))
    # kinematic: gap - minGap + v_l^2 / (2 b_l) >= v_f^2 / (2 decel / 1.2)
    need = follower_speed ** 2 / (2.0 * decel / EMERGENCY_AMPLIFIER) - (gap - MIN_GAP)
    kinematic = math.sqrt(2.0 * leader_decel * need) if need > 0.0 else 0.0
    return min(normal, kinematic)


__all__ = ["DECEL", "EMERGENCY_AMPLIFIER", "HEADWAY_S", "MIN_GAP", "STEP_S", "brake_gap", "brakes_beyond_limit",
           "emergency_decel", "max_follower_speed", "min_leader_speed", "safe_follow_speed", "safe_stop_speed"]
