"""Scene realism metrics: hand-computed features, MMD properties, counts, overlaps, replay aggregation.

Pure numpy, no SUMO: the ground truth here is hand-built scenes and the simulator-free baselines.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from aigc_synth.metrics.scenes import (
    FEATURES,
    HEADWAY_MAX,
    TTC_THRESHOLD,
    compare_scene_sets,
    count_accuracy,
    median_bandwidths,
    mmd_rbf,
    overlap_rate,
    poisson_interval,
    replay_summary,
    scene_features,
    scene_mmd,
)
from aigc_synth.scenes import replay  # importing it needs no SUMO (replaying does)
from aigc_synth.scenes.baselines import MarginalSceneSampler, RandomSceneSampler
from aigc_synth.scenes.format import Agent, Scene


def car(lane: int, s: float, speed: float = 20.0) -> Agent:
    return Agent(lane, s, 0.0, speed, 5.0, 1.8, "car")


def truck(lane: int, s: float, speed: float = 20.0) -> Agent:
    return Agent(lane, s, 0.0, speed, 12.0, 2.5, "truck")


def scene(*agents: Agent, ego_lane: int = 1, ego_speed: float = 20.0, num_lanes: int = 3, traffic: str = "moderate",
          speed_limit: float = 25.0, scene_id: int = 0) -> Scene:
    return Scene(scene_id, 7, traffic, num_lanes, speed_limit, ego_lane, ego_speed, agents, "test")


def with_count(n: int, traffic: str = "moderate", num_lanes: int = 3) -> Scene:
    """A scene with ``n`` agents (spread 10 m apart over the lanes: only the count matters here)."""
    return scene(*(car(i % num_lanes, -40.0 + 10.0 * i) for i in range(n)), traffic=traffic, num_lanes=num_lanes)


def sample(sampler, seeds, traffic: str = "moderate", num_lanes: int = 3) -> list[Scene]:
    return [sampler.sample(traffic, num_lanes, seed=s, scene_id=s) for s in seeds]


# -- features ------------------------------------------------------------------------------------------
def test_features_by_hand_with_the_ego_between_agents_in_its_lane():
    sc = scene(
        car(1, -20.0, speed=25.0), truck(1, 30.0, speed=15.0),  # ego lane: car, ego (s=0, 5 m, 20 m/s), truck
        car(0, 10.0, speed=0.5), car(0, 40.0, speed=30.0),  # slow follower: a gap but no headway
        car(2, 0.0, speed=10.0),  # alone in its lane: no pair
    )
    f = scene_features([sc])
    assert set(f) == set(FEATURES) and all(v.dtype == np.float64 and v.ndim == 1 for v in f.values())
    # lane 0: 40 - 10 - (5 + 5)/2 = 25; lane 1: 0 - (-20) - (5 + 5)/2 = 15 and 30 - 0 - (5 + 12)/2 = 21.5
    assert f["gap"].tolist() == pytest.approx([25.0, 15.0, 21.5])
    assert f["headway"].tolist() == pytest.approx([15.0 / 25.0, 21.5 / 20.0])  # follower speeds 25 (car), 20 (ego)
    assert f["rel_speed"].tolist() == pytest.approx([29.5, 20.0 - 25.0, 15.0 - 20.0])  # leader - follower
    assert sorted(f["speed"].tolist()) == pytest.approx(sorted(v / 25.0 for v in (25.0, 15.0, 0.5, 30.0, 10.0)))
    assert sorted(f["lane_position"].tolist()) == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert f["count"].tolist() == pytest.approx([5 / 3])


def test_headway_is_clipped_overlaps_give_negative_gaps_and_one_lane_sits_in_the_middle():
    far = scene(car(0, 105.0, speed=30.0), ego_lane=0, ego_speed=2.0, num_lanes=1)
    f = scene_features([far])
    assert f["gap"].tolist() == [100.0] and f["headway"].tolist() == [HEADWAY_MAX]  # 100 m / 2 m/s = 50 s -> 10 s
    assert f["lane_position"].tolist() == [0.5] and f["count"].tolist() == [1.0]
    f = scene_features([scene(car(1, 3.0), ego_lane=1)])  # 3 m ahead of the ego: 2 m of overlap
    assert f["gap"].tolist() == [-2.0] and f["headway"].tolist() == pytest.approx([-0.1])


def test_features_pool_over_scenes_and_are_empty_for_no_scenes():
    f = scene_features([with_count(3), with_count(6, num_lanes=2), scene()])
    assert f["count"].tolist() == [1.0, 3.0, 0.0] and len(f["speed"]) == 9
    assert all(len(v) == 0 for v in scene_features([]).values())


# -- MMD -------------------------------------------------------------------------------------------------
def test_mmd_by_hand_is_unbiased():
    # x = y = [0, 1], h = 1: within-set means k(1) each, cross mean (1 + 1 + 2 k(1)) / 4, so MMD^2 = k(1) - 1
    assert mmd_rbf([0.0, 1.0], [0.0, 1.0], (1.0,), unbiased=True) == pytest.approx(math.exp(-0.5) - 1.0)
    # the kernel is a sum over bandwidths: x = [0, 2], y = [1, 3] with h = 1 and 2
    k = lambda d: math.exp(-d * d / 2) + math.exp(-d * d / 8)
    assert mmd_rbf([0.0, 2.0], [1.0, 3.0], (1.0, 2.0), unbiased=True) == pytest.approx(2 * k(2) - 2 * (2 * k(1) + k(1) + k(3)) / 4)


def test_biased_mmd_by_hand_is_the_distance_of_the_mean_embeddings():
    # identical samples: exactly 0; x = [0, 2], y = [1, 3]: within means (k(0) + k(2)) / 2 each, cross (2 k(1) + k(1) + k(3)) / 4
    assert mmd_rbf([0.0, 1.0], [0.0, 1.0], (1.0,)) == 0.0
    k = lambda d: math.exp(-d * d / 2) + math.exp(-d * d / 8)
    assert mmd_rbf([0.0, 2.0], [1.0, 3.0], (1.0, 2.0)) == pytest.approx((k(0) + k(2)) - 2 * (3 * k(1) + k(3)) / 4)


def test_mmd_near_zero_for_one_distribution_and_large_for_a_shift():
    x, y = np.random.default_rng(0).normal(size=400), np.random.default_rng(1).normal(size=400)
    bw = median_bandwidths(y)
    same, shifted = mmd_rbf(x, y, bw), mmd_rbf(x + 1.0, y, bw)
    assert abs(same) < 0.02 and shifted > 0.3 and shifted > 20 * abs(same)


def test_mmd_does_not_depend_on_the_order_even_when_subsampling():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=300), rng.normal(0.5, 1.0, size=200)
    for max_points in (2000, 50):  # all points, and a seeded subsample of 50 per side
        ref = mmd_rbf(x, y, (0.5, 1.0), max_points=max_points)
        assert mmd_rbf(rng.permutation(x), rng.permutation(y), (0.5, 1.0), max_points=max_points) == ref
        assert mmd_rbf(x[::-1], y, (0.5, 1.0), max_points=max_points) == ref
    assert mmd_rbf(x, y, (1.0,), max_points=50, seed=1) != mmd_rbf(x, y, (1.0,), max_points=50, seed=2)


def test_mmd_edge_cases():
    assert math.isnan(mmd_rbf([], [1.0, 2.0], (1.0,))) and math.isnan(mmd_rbf([1.0], [1.0, 2.0], (1.0,)))
    assert math.isnan(mmd_rbf([], [], ()))
    with pytest.raises(ValueError, match="bandwidths"):
        mmd_rbf([0.0, 1.0], [0.0, 1.0], (0.0,))
    with pytest.raises(ValueError, match="non-finite"):
        mmd_rbf([0.0, math.inf], [0.0, 1.0], (1.0,))
    xy = np.random.default_rng(3).normal(size=(50, 2))  # 2-D samples work too
    assert mmd_rbf(xy, xy + [3.0, 0.0], (1.0,)) > 0.3


def test_median_bandwidths():
    assert median_bandwidths([0.0, 1.0, 2.0]) == (0.5, 1.0, 2.0)  # distances 1, 2, 1: median 1
    assert median_bandwidths([0.0, 1.0], [3.0]) == (1.0, 2.0, 4.0)  # pooled: 1, 3, 2
    assert median_bandwidths([5.0, 5.0, 5.0, 5.0, 7.0], scales=(1.0,)) == (2.0,)  # 6 of 10 are 0: mean of the others
    assert median_bandwidths([5.0, 5.0], scales=(1.0,)) == (1.0,)
    assert median_bandwidths([1.0]) == () and median_bandwidths([]) == ()


def test_scene_mmd_takes_its_bandwidths_from_the_real_set_only():
    random = RandomSceneSampler()
    real = sample(random, range(40))
    gen_a, gen_b = sample(random, range(100, 140)), sample(RandomSceneSampler(speed_range=(0.2, 0.4)), range(30), "heavy")
    a, b = scene_mmd(gen_a, real), scene_mmd(gen_b, real)
    real_f = scene_features(real)
    for name in FEATURES:
        assert a[name]["bandwidths"] == b[name]["bandwidths"] == list(median_bandwidths(real_f[name]))
        assert a[name]["n_real"] == len(real_f[name])
    assert b["speed"]["mmd"] > 10 * abs(a["speed"]["mmd"]) and b["count"]["mmd"] > 10 * abs(a["count"]["mmd"])
    assert scene_mmd(real, gen_b)["speed"]["bandwidths"] != a["speed"]["bandwidths"]  # the second argument is real
    pinned = scene_mmd(gen_b, real, reference_bandwidth_from=gen_a)
    assert pinned["gap"]["bandwidths"] == list(median_bandwidths(scene_features(gen_a)["gap"]))
    assert scene_mmd(gen_a, real) == a  # deterministic


def test_scene_mmd_is_nan_for_a_feature_without_values():
    alone = [scene(), scene(car(0, 10.0))]  # never two vehicles in one lane: no gap, headway, rel_speed
    out = scene_mmd(alone, sample(RandomSceneSampler(), range(10)))
    assert all(math.isnan(out[name]["mmd"]) for name in ("gap", "headway", "rel_speed"))
    assert not math.isnan(out["count"]["mmd"])


# -- counts, overlaps ------------------------------------------------------------------------------------
def test_count_accuracy_is_exactly_one_for_identical_sets():
    scenes = sample(RandomSceneSampler(), range(20)) + sample(RandomSceneSampler(), range(20), "heavy", 2)
    out = count_accuracy(scenes, scenes)
    assert out["accuracy"] == 1.0 and out["by_traffic"]["moderate"]["accuracy"] == 1.0
    assert {c["accuracy"] for c in out["cells"].values()} == {1.0} and set(out["cells"]) == {"moderate/3", "heavy/2"}


def test_count_accuracy_by_hand():
    real = [with_count(10), with_count(12), with_count(20, "heavy", 2)]
    generated = [with_count(11), with_count(13), with_count(15), with_count(30, "heavy", 2),
                 with_count(4, "light", 4)]  # no real light/4 scene: not scored
    out = count_accuracy(generated, real)
    moderate, heavy = out["cells"]["moderate/3"], out["cells"]["heavy/2"]
    assert (moderate["mean_generated"], moderate["mean_real"]) == (13.0, 11.0)
    assert moderate["accuracy"] == pytest.approx(1 - 2 / 11) and heavy["accuracy"] == pytest.approx(0.5)
    assert moderate["real_range"] == pytest.approx([10.05, 11.95]) and moderate["in_range"] == pytest.approx(1 / 3)
    assert heavy["real_range"] == [20.0, 20.0] and heavy["in_range"] == 0.0
    assert out["accuracy"] == pytest.approx((1 - 2 / 11 + 0.5) / 2)
    assert out["in_range"] == pytest.approx(1 / 4)  # of the 4 scored generated scenes
    assert out["by_traffic"]["heavy"] == {"accuracy": pytest.approx(0.5), "in_range": 0.0}
    assert out["unmatched_generated"] == 1 and out["missing_cells"] == []
    far_off = count_accuracy([with_count(40)], real)  # 40 vs 11: clipped at 0
    assert far_off["accuracy"] == 0.0 and far_off["missing_cells"] == ["heavy/2"]
    assert math.isnan(count_accuracy([], real)["accuracy"])


def test_overlap_rate_counts_vehicles_in_an_overlapping_pair():
    # ego (lane 1, s=0, 5 m) and a car 3 m ahead overlap; two others do not: 2 of 4 vehicles
    assert overlap_rate([scene(car(1, 3.0), car(1, 30.0), car(0, 1.0))]) == 0.5
    assert overlap_rate([scene(car(1, 3.0), car(1, 30.0), car(0, 1.0)), scene(car(2, 50.0))]) == pytest.approx(2 / 6)
    assert overlap_rate([scene(car(0, 0.0), car(0, 4.0), car(0, 8.0))]) == 0.75  # a chain: 3 cars in 2 pairs
    assert math.isnan(overlap_rate([]))


# -- replay ----------------------------------------------------------------------------------------------
def test_poisson_interval_matches_the_exact_garwood_table():
    # published 95 % limits (Garwood 1936; e.g. the chi-square form chi2(0.025, 2k) / 2, chi2(0.975, 2k + 2) / 2)
    table = {0: (0.0, 3.6889), 1: (0.0253, 5.5716), 2: (0.2422, 7.2247), 4: (1.0899, 10.2416), 10: (4.7954, 18.3904)}
    for count, (low, high) in table.items():
        assert poisson_interval(count) == pytest.approx((low, high), abs=1e-4), count
    assert poisson_interval(3, level=0.5)[1] < poisson_interval(3)[1]
    with pytest.raises(ValueError, match="negative"):
        poisson_interval(-1)


def test_replay_summary_on_replay_scene_shaped_results():
    assert TTC_THRESHOLD == replay.TTC_THRESHOLD
    results = [  # exactly replay_scene's keys: counts of distinct vehicles, one min TTC per vehicle (ego first)
        {"vehicles": 3, "collided": 2, "hard_braking": 1, "min_ttc": [math.inf, 0.0, 0.5]},
        {"vehicles": 2, "collided": 0, "hard_braking": 0, "min_ttc": [math.inf, 3.0]},
        {"vehicles": 1, "collided": 0, "hard_braking": 1, "min_ttc": [0.95]},  # at the threshold: not low
    ]
    out = replay_summary(results)
    assert (out["scenes"], out["vehicles"]) == (3, 6)
    assert out["collision_share"] == pytest.approx(2 / 6) and out["hard_braking_share"] == pytest.approx(2 / 6)
    assert out["low_ttc_share"] == pytest.approx(2 / 6) and out["scene_collision_share"] == pytest.approx(1 / 3)
    assert out["finite_ttc_share"] == pytest.approx(4 / 6) and out["ttc_threshold"] == 0.95
    finite = [0.0, 0.5, 0.95, 3.0]
    assert out["min_ttc_quantiles"] == pytest.approx({f"q{q:02d}": float(np.quantile(finite, q / 100)) for q in (5, 25, 50)})
    assert out["hard_braking_vehicles"] == 2
    assert out["hard_braking_share_95"] == pytest.approx([0.2422 / 6, 7.2247 / 6], rel=1e-3)  # Garwood, 2 events
    never = replay_summary([{"vehicles": 1, "collided": 0, "hard_braking": 0, "min_ttc": [math.inf]}])
    assert never["low_ttc_share"] == 0.0 and all(math.isnan(v) for v in never["min_ttc_quantiles"].values())
    assert math.isnan(replay_summary([])["collision_share"])
    with pytest.raises(ValueError, match="min TTC"):
        replay_summary([{"vehicles": 2, "collided": 0, "hard_braking": 0, "min_ttc": [1.0]}])


def test_merge_completion_counts_and_wilson_interval():
    from aigc_synth.metrics.scenes import wilson_interval

    # published values (Wilson 1927; e.g. Newcombe 1998, table I): 5 of 10, 0 of 10, 81 of 263
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    merges = [{"vehicles": 3, "collided": 0, "hard_braking": 0, "min_ttc": [math.inf] * 3, "ramp_vehicles": 2, "merged": 1},
              {"vehicles": 2, "collided": 0, "hard_braking": 0, "min_ttc": [math.inf] * 2, "ramp_vehicles": 3, "merged": 3}]
    out = replay_summary(merges)
    assert (out["ramp_vehicles"], out["merged_vehicles"], out["merge_completion"]) == (5, 4, 0.8)
    assert out["merge_completion_95"] == pytest.approx(list(wilson_interval(4, 5)))
    straight = replay_summary(merges[:0] + [{"vehicles": 1, "collided": 0, "hard_braking": 0, "min_ttc": [math.inf]}])
    assert straight["merge_completion"] is None and straight["merge_completion_95"] is None and straight["merged_vehicles"] == 0


# -- sanity on the baselines -----------------------------------------------------------------------------
def test_random_vs_random_is_at_the_floor_and_a_shifted_sampler_is_far_above():
    random = RandomSceneSampler()
    real, floor, other = sample(random, range(60)), sample(random, range(1000, 1060)), sample(random, range(2000, 2060))
    marginal = MarginalSceneSampler.fit(sample(random, range(5000, 5120)))
    slow = sample(RandomSceneSampler(speed_range=(0.2, 0.5)), range(3000, 3060))
    same = compare_scene_sets(other, real, floor)
    fitted = compare_scene_sets(sample(marginal, range(60)), real, floor)
    shifted = compare_scene_sets(slow, real, floor)
    bw = {name: v["bandwidths"] for name, v in same["features"].items()}
    assert {name: v["bandwidths"] for name, v in shifted["features"].items()} == bw  # one kernel per feature
    for name in FEATURES:
        assert abs(same["features"][name]["mmd"]) < 0.05 and abs(fitted["features"][name]["mmd"]) < 0.05
    for name in ("speed", "headway", "rel_speed"):  # slower vehicles: longer headways, smaller speed spread
        assert shifted["features"][name]["mmd"] > 5 * max(abs(same["features"][name]["mmd"]), 0.01)
    assert shifted["features"]["speed"]["mmd"] > 1.0
    f = shifted["features"]["speed"]
    assert f["excess"] == pytest.approx(f["mmd"] - f["floor"])
    assert f["ratio"] == pytest.approx(f["mmd"] / f["floor"]) if f["floor"] > 0 else math.isnan(f["ratio"])
    assert same["count_accuracy"]["accuracy"] > 0.9 and same["count_accuracy_floor"]["accuracy"] > 0.9
    assert set(same["overlap_rate"]) == {"generated", "real", "real_floor"}
    assert same["scenes"] == {"generated": 60, "real": 60, "real_floor": 60}
    assert compare_scene_sets(other, real, floor) == same  # deterministic (NaN-free here)
