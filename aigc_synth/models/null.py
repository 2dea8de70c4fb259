"""``null``: a generator that costs nothing, to measure the pipeline's own ceiling.

It returns, for every (z, condition), one of a fixed bank of real procedural scenes (rendered once
at construction, deterministically), picked by the latent's first value: memory speed, so a job on
it measures everything *but* the network - seeds, encoding, hashing, writing, Ray - which is what a
GPU node sees when the network is almost free. The bank holds real-looking scenes, not a constant,
so PNG / JPEG encoding costs what it costs on generated images. No parameters; not trainable.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

BANK_SIZE = 64


class NullGenerator(nn.Module):
    """``forward(z, codes) -> (B, 3, R, R)`` in [-1, 1], a pure function of ``z[:, 0]`` and ``codes``."""

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, z_dim: int = 64):
        super().__init__()
        from aigc_synth.data.procedural import render_scenes

        self.cardinalities, self.resolution, self.z_dim = list(cardinalities), int(resolution), int(z_dim)
        rng = np.random.default_rng(0)
        codes = np.stack([rng.integers(0, c, BANK_SIZE) for c in (self.cardinalities or [1])], 1)
        if len(self.cardinalities) != 3:  # the renderer knows the default schema only; any codes give a picture
            codes = np.stack([rng.integers(0, c, BANK_SIZE) for c in (5, 3, 3)], 1)
        images = render_scenes(codes, list(range(BANK_SIZE)), size=self.resolution).images  # uint8 (N, R, R, 3)
        bank = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        self.register_buffer("bank", bank, persistent=False)  # rebuilt at load: the checkpoint stays empty

    def forward(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        pick = (z[:, 0].abs() * 1e4).long() + codes.sum(1)
        return self.bank[pick % BANK_SIZE]


class LatencyGenerator(NullGenerator):
    """``latency``: a stand-in for a generator on a GPU (the scale-out benchmark). Each call (one
    micro-batch) waits ``service_ms`` without using a CPU (a sleep, as a GPU-bound network leaves the
    host's cores free), then returns the ``null`` family's images, so the rows are still a pure function
    of (z, codes) and encoding costs what it costs on real pictures."""

    def __init__(self, cardinalities: Sequence[int], resolution: int = 64, z_dim: int = 64, service_ms: float = 5.0):
        super().__init__(cardinalities, resolution, z_dim)
        self.service_ms = float(service_ms)

    def forward(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        time.sleep(self.service_ms / 1000.0)
        return super().forward(z, codes)
