from collections import Counter

import numpy as np
import pytest

from aigc_synth.models.exported import load_generator
from aigc_synth.sampling.plan import ConditionPlan, PlanError
from aigc_synth.sampling.sampler import COMPUTE_BATCH, generate_images
from aigc_synth.seeds import derive_seeds, latents_for_seeds
from aigc_synth.schema import DEFAULT_SCHEMA


def test_seeds_are_pure_and_distinct():
    a = derive_seeds(7, np.arange(1000))
    assert np.array_equal(a, derive_seeds(7, np.arange(1000)))
    assert np.array_equal(a[500:510], derive_seeds(7, np.arange(500, 510)))
    assert len(set(a.tolist())) == 1000 and a.min() >= 0
    assert not np.array_equal(a, derive_seeds(8, np.arange(1000)))


def test_latents_depend_only_on_seed():
    z = latents_for_seeds([5, 6, 7], 8)
    assert (z[1] == latents_for_seeds([6], 8)[0]).all()


def test_generation_is_bit_identical_across_batch_sizes_and_positions(tiny_checkpoint):
    gen = load_generator(tiny_checkpoint)
    n = 2 * COMPUTE_BATCH + 5
    rng = np.random.default_rng(0)
    codes = np.stack([rng.integers(0, c, n) for c in DEFAULT_SCHEMA.cardinalities], 1)
    seeds = derive_seeds(0, np.arange(n))
    full = generate_images(gen, codes, seeds)
    singles = np.concatenate([generate_images(gen, codes[i:i + 1], seeds[i:i + 1]) for i in range(0, n, 7)])
    assert np.array_equal(full[::7], singles)
    perm = rng.permutation(n)
    assert np.array_equal(full[perm], generate_images(gen, codes[perm], seeds[perm]))


def test_grid_plan_counts_are_exact_and_interleaved():
    plan = ConditionPlan({"kind": "grid"}, DEFAULT_SCHEMA, 1000, seed=0)
    counts = plan.counts()
    assert len(counts) == 45 and sum(counts.values()) == 1000
    assert set(counts.values()) == {22, 23}
    codes = plan.codes_for(np.arange(1000))
    observed = Counter("/".join(DEFAULT_SCHEMA.decode(c).values()) for c in codes)
    assert observed == Counter(counts)
    assert len({tuple(c) for c in codes[:100]}) > 30  # the first shard already mixes conditions


def test_grid_subset_list_and_mixture_plans():
    plan = ConditionPlan({"kind": "grid", "factors": {"weather": ["fog"], "time_of_day": "night"}, "weights": [1, 1, 2]},
                         DEFAULT_SCHEMA, 400, 1)
    assert plan.counts() == {"fog/night/light": 100, "fog/night/moderate": 100, "fog/night/heavy": 200}
    lst = ConditionPlan({"kind": "list", "items": [{"conditions": {"weather": "snow", "time_of_day": "day", "traffic": "light"}, "weight": 3},
                                                   {"conditions": {"weather": "rain", "time_of_day": "night", "traffic": "heavy"}}]},
                        DEFAULT_SCHEMA, 8, 0)
    assert lst.counts() == {"rain/night/heavy": 2, "snow/day/light": 6}
    mix = ConditionPlan({"kind": "mixture", "probs": {"weather": {"fog": 0.75, "snow": 0.25}}}, DEFAULT_SCHEMA, 4000, 0)
    by_weather = Counter()
    for key, n in mix.counts().items():
        by_weather[key.split("/")[0]] += n
    assert set(by_weather) == {"fog", "snow"} and abs(by_weather["fog"] / 4000 - 0.75) < 0.03
    assert np.array_equal(mix.codes_for(np.arange(10, 20)), mix.codes_for(np.arange(4000))[10:20])


@pytest.mark.parametrize("spec, match", [
    ({"kind": "cube"}, "unknown plan kind"),
    ({"kind": "grid", "factors": {"season": ["x"]}}, "unknown factor 'season'"),
    ({"kind": "grid", "factors": {"weather": ["hail"]}}, r"unknown value 'hail'.*allowed values"),
    ({"kind": "grid", "factors": {"weather": []}}, "empty grid"),
    ({"kind": "grid", "weights": [1, 2]}, "entries but the grid has 45"),
    ({"kind": "mixture", "probs": {"weather": {"fog": 0.5, "snow": 0.4}}}, "sum to 0.9"),
    ({"kind": "mixture", "probs": {"weather": {"fog": 1.5, "snow": -0.5}}}, "negative"),
    ({"kind": "list", "items": []}, "at least one item"),
    ({"kind": "list", "items": [{"conditions": {"weather": "fog"}}]}, "missing factor"),
])
def test_plan_validation_errors(spec, match):
    with pytest.raises(PlanError, match=match):
        ConditionPlan(spec, DEFAULT_SCHEMA, 100, 0)
