"""The layout generator's fixed particle overlay draws the renderer's own rain streaks and snow
flakes (same seeds, same shapes), only in rain and snow, adds no weights (checkpoints without it
load into it), stays a pure function of each sample's latent, and round-trips through export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aigc_synth.data.layout import scene_layouts
from aigc_synth.data.scene_render import WEATHERS, particle_alpha
from aigc_synth.models.exported import export_generator, load_generator
from aigc_synth.models.particles import ParticleOverlay
from aigc_synth.models.registry import build_generator
from aigc_synth.models.scene_families import BUNDLED_SCENE_CHECKPOINT, load_scene_generator
from aigc_synth.schema import DEFAULT_SCHEMA

TINY = {"resolution": 32, "z_dim": 16, "base_channels": 8, "embed_dim": 8, "spade_hidden": 8}


@pytest.fixture(scope="module")
def layouts() -> torch.Tensor:
    gen = load_scene_generator(BUNDLED_SCENE_CHECKPOINT)
    scenes = gen.sample(["heavy"] * 4, [3] * 4, list(range(4)), list(range(4)))
    return torch.from_numpy(scene_layouts(scenes, 32))


def _codes(weather: str, time_of_day: str = "day", n: int = 1) -> torch.Tensor:
    code = DEFAULT_SCHEMA.encode({"weather": weather, "time_of_day": time_of_day, "traffic": "heavy"})
    return torch.tensor([code] * n, dtype=torch.int64)


@pytest.mark.parametrize("weather", ["rain", "snow"])
def test_overlay_draws_exactly_the_renderers_particles(weather, layouts):
    overlay = ParticleOverlay(DEFAULT_SCHEMA.factors, 32)
    noise = np.random.default_rng(3).random((32, 32), dtype=np.float32)
    args = (_codes(weather), layouts[:1], torch.from_numpy(noise)[None, None], torch.tensor([0.5]))
    black = (overlay(torch.full((1, 3, 32, 32), -1.0), *args) + 1) / 2  # = alpha * particle colour
    white = (overlay(torch.full((1, 3, 32, 32), 1.0), *args) + 1) / 2  # = 1 - alpha + alpha * colour
    alpha = (1 - white + black)[0, 0].numpy()
    expected = particle_alpha(weather, noise)
    assert expected.max() > 0  # the check is not vacuous
    np.testing.assert_allclose(alpha, expected, atol=1e-5)


def test_overlay_leaves_weathers_without_particles_untouched(layouts):
    overlay = ParticleOverlay(DEFAULT_SCHEMA.factors, 32)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    noise = torch.rand(1, 1, 32, 32)
    for weather in WEATHERS:
        out = overlay(image, _codes(weather, "night"), layouts[:1], noise, torch.tensor([0.5]))
        assert torch.equal(out, image) == (weather not in ("rain", "snow")), weather


def test_particles_add_no_weights_and_change_only_rain_and_snow(layouts):
    torch.manual_seed(0)
    plain = build_generator("layout_gan", DEFAULT_SCHEMA.cardinalities, **TINY).eval()
    with_particles = build_generator("layout_gan", DEFAULT_SCHEMA.cardinalities, factors=DEFAULT_SCHEMA.factors,
                                     particles=True, **TINY).eval()
    with_particles.load_state_dict(plain.state_dict())  # strict: the overlay has no state entries
    assert set(with_particles.state_dict()) == set(plain.state_dict())
    z = torch.randn(4, 16)
    for weather in WEATHERS:
        a = plain(z, _codes(weather, n=4), layouts)
        b = with_particles(z, _codes(weather, n=4), layouts)
        assert torch.equal(a, b) == (weather not in ("rain", "snow")), weather
    # still a pure function of each sample's latent: rows do not depend on their batch
    batch = with_particles(z, _codes("rain", n=4), layouts)
    alone = torch.cat([with_particles(z[i:i + 1], _codes("rain"), layouts[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-5)


def test_particles_need_a_weather_factor():
    with pytest.raises(ValueError, match="needs factors"):
        build_generator("layout_gan", DEFAULT_SCHEMA.cardinalities, particles=True, **TINY)
    with pytest.raises(ValueError, match="'weather' factor"):
        ParticleOverlay((("season", ("summer", "winter")),), 32)


def test_a_particle_checkpoint_round_trips_through_export(layouts, tmp_path):
    params = {**TINY, "particles": True}
    g = build_generator("layout_gan", DEFAULT_SCHEMA.cardinalities, factors=DEFAULT_SCHEMA.factors, **params).eval()
    path = tmp_path / "particles.pt"
    export_generator(path, family="layout_gan", model_params=params, schema=DEFAULT_SCHEMA, generator=g)
    loaded = load_generator(path)
    assert loaded.module.particles is not None
    z = torch.randn(4, 16)
    torch.testing.assert_close(loaded.module(z, _codes("snow", n=4), layouts), g(z, _codes("snow", n=4), layouts))
