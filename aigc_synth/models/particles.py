"""A fixed particle overlay: rain streaks and snow flakes drawn, not learnt, over a generator's image.

Why not learnt. Streaks and flakes are sparse, sharp and random in position: what a small
convolutional generator draws worst (the bundled model paints snow as blotchy texture and rain as
nothing) and what its discriminator, trained on them, rejects when they come out slightly wrong. A
learnt particle layer, gated per condition, was rejected by its discriminator in every run (the gates
closed even in rain) and has been retired (``docs/experiments.md``). This overlay instead draws particles
with the renderer's own statistics (:mod:`aigc_synth.data.scene_render`'s ``RAIN_*`` / ``SNOW_*``
constants and :func:`~aigc_synth.data.scene_render.particle_alpha`, in torch), in the weathers that
have them, so the generator only has to learn the scene behind them: physically based weather
rendering on top of a learnt image, as rain-rendering augmentation does for real driving data.

What it knows is the renderer's: particle shapes, density and colour, the light level of each time
of day and the rain/snow haze, which dims far particles toward the fog colour (per pixel, from the
layout's ``nearness`` on vehicles and the ground depth of each row elsewhere). For data that are
not the bundled renderer's (users' photographs) these statistics are wrong: leave the overlay off
(``model.particles=false``, the default).

The overlay has no parameters and no state-dict entries: it depends only on the condition codes,
the layout and per-sample uniform noise that the generator draws from each sample's own seed.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from aigc_synth.data import scene_render as R
from aigc_synth.data.layout import LAYOUT_CHANNELS, NEAR_SCALE
from aigc_synth.data.procedural import LIGHT, TINT

_NONE, _RAIN, _SNOW = 0, 1, 2
_NEARNESS_CHANNEL, _CAR_CHANNEL, _TRUCK_CHANNEL = (LAYOUT_CHANNELS.index(c) for c in ("nearness", "car", "truck"))


def _kernel_rain() -> torch.Tensor:
    """The streak as a cross-correlation kernel: output (y, x) sums seeds at (y - s, x - s // 2)."""
    n = R.RAIN_STREAK_STEPS
    k = torch.zeros(2 * n + 1, 2 * n + 1)
    for s in range(n + 1):
        k[n - s, n - s // 2] = 1.0
    return k


def _kernel_snow() -> torch.Tensor:
    """The flake: the seed plus half of it one pixel down and one pixel right (``_shift`` semantics)."""
    k = torch.zeros(3, 3)
    k[1, 1], k[0, 1], k[1, 0] = 1.0, 0.5, 0.5
    return k


class ParticleOverlay(nn.Module):
    """``image`` (B, 3, R, R) in [-1, 1] → the same image with the weather's particles drawn over it.

    ``factors`` is the condition schema's ``(name, values)`` list; the overlay needs a ``weather``
    factor (particles where its value is ``rain`` or ``snow``) and reads ``time_of_day`` for the light
    level when present. ``noise`` (B, 1, R, R) uniform in [0, 1) seeds the particles; ``light_jitter``
    (B,) uniform in [0, 1) jitters the light level like the renderer's.
    """

    def __init__(self, factors: Sequence[tuple[str, Sequence[str]]], resolution: int):
        super().__init__()
        names = [n for n, _ in factors]
        if "weather" not in names:
            raise ValueError(f"the particle overlay needs a 'weather' factor; the schema has {names}")
        self.weather_index = names.index("weather")
        self.time_index = names.index("time_of_day") if "time_of_day" in names else None
        weathers = list(dict(factors)["weather"])
        kinds = [_RAIN if w == "rain" else _SNOW if w == "snow" else _NONE for w in weathers]
        times = list(dict(factors)["time_of_day"]) if self.time_index is not None else ["day"]
        unknown = [t for t in times if t not in LIGHT]
        if unknown:
            raise ValueError(f"the particle overlay knows the light of {sorted(LIGHT)}, not {unknown}")
        # buffers are not persistent: checkpoints carry the flag, never these tables
        self.register_buffer("kinds", torch.tensor(kinds, dtype=torch.long), persistent=False)
        self.register_buffer("light", torch.tensor([LIGHT[t] for t in times]), persistent=False)
        self.register_buffer("tint", torch.tensor([TINT[t] for t in times]), persistent=False)
        self.register_buffer("rain_kernel", _kernel_rain()[None, None], persistent=False)
        self.register_buffer("snow_kernel", _kernel_snow()[None, None], persistent=False)
        H = int(resolution)
        ys = torch.arange(H, dtype=torch.float64) + 0.5
        hz = R.HORIZON * H
        ground = (ys + 0.5 - hz).clamp(0, 1)
        self.register_buffer("ground", ground.float()[:, None].expand(H, H).clone(), persistent=False)
        self.register_buffer("row_depth", (R.FOCAL * H * R.CAMERA_HEIGHT / (ys - hz).clamp(min=0.25)).float()[:, None]
                             .expand(H, H).clone(), persistent=False)

    def _haze(self, layout: torch.Tensor) -> torch.Tensor:
        """(B, 1, R, R) rain/snow haze per pixel, as the renderer blends it after the particles."""
        length, cap = R.PRECIPITATION_HAZE
        far = lambda z: cap * (1 - torch.exp(-z / length))  # noqa: E731
        background = far(self.row_depth) * self.ground + cap * (1 - self.ground)
        cover = (layout[:, _CAR_CHANNEL] + layout[:, _TRUCK_CHANNEL]).clamp(0, 1)
        depth = NEAR_SCALE / layout[:, _NEARNESS_CHANNEL].clamp(min=1e-3)
        return (background * (1 - cover) + far(depth) * cover)[:, None]

    def forward(self, image: torch.Tensor, codes: torch.Tensor, layout: torch.Tensor, noise: torch.Tensor,
                light_jitter: torch.Tensor) -> torch.Tensor:
        kind = self.kinds[codes[:, self.weather_index].long()]
        if not bool((kind != _NONE).any()):
            return image
        rain = (kind == _RAIN).float()[:, None, None, None]
        snow = (kind == _SNOW).float()[:, None, None, None]
        rain_seeds = (noise > 1 - R.RAIN_SEED_FRACTION).float()
        streaks = R.RAIN_OPACITY * F.conv2d(rain_seeds, self.rain_kernel, padding=R.RAIN_STREAK_STEPS).clamp(0, 1)
        snow_seeds = (noise > 1 - R.SNOW_SEED_FRACTION).float()
        flakes = F.conv2d(snow_seeds, self.snow_kernel, padding=1).clamp(0, 1)
        alpha = rain * streaks + snow * flakes
        t = codes[:, self.time_index].long() if self.time_index is not None else torch.zeros_like(kind)
        light = self.light[t] * (1 - R.LIGHT_JITTER + 2 * R.LIGHT_JITTER * light_jitter)
        rain_col = torch.tensor(R.RAIN_COLOUR, device=image.device) * light.clamp(min=R.RAIN_MIN_LIGHT)[:, None]
        snow_col = torch.tensor(R.SNOW_COLOUR, device=image.device) * light.clamp(min=R.SNOW_MIN_LIGHT)[:, None]
        colour = (rain[:, :, 0, 0] * rain_col + snow[:, :, 0, 0] * snow_col)[:, :, None, None]
        fog = (torch.tensor(R.FOG_COLOUR, device=image.device) * (light[:, None] * 0.9 + 0.1) * self.tint[t])[:, :, None, None]
        haze = self._haze(layout)
        seen = colour * (1 - haze) + fog * haze  # a particle seen through the haze the renderer adds after it
        unit = (image + 1) / 2
        return (unit * (1 - alpha) + alpha * seen) * 2 - 1
