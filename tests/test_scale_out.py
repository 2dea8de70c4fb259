"""The scale-out benchmark's stand-in for a GPU generator (``latency``) and the simulated GPU node rule."""

from __future__ import annotations

import time

import torch

from aigc_synth.benchmarks.scale_out import steady_rate
from aigc_synth.models.registry import FAMILIES, build_generator
from aigc_synth.schema import DEFAULT_SCHEMA


def test_latency_waits_its_service_time_and_returns_the_null_familys_images():
    null = build_generator("null", DEFAULT_SCHEMA.cardinalities, resolution=32, z_dim=8)
    slow = build_generator("latency", DEFAULT_SCHEMA.cardinalities, resolution=32, z_dim=8, service_ms=50)
    z, codes = torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), torch.zeros(4, 3, dtype=torch.int64)
    t0 = time.perf_counter()
    images = slow(z, codes)
    assert time.perf_counter() - t0 >= 0.05 and torch.equal(images, null(z, codes))


def test_only_device_free_families_run_on_a_simulated_gpu_node():
    assert FAMILIES["latency"].device_free and FAMILIES["null"].device_free
    assert not FAMILIES["layout_gan"].device_free and not FAMILIES["layout_diffusion"].device_free


def test_the_steady_rate_excludes_each_actors_start_up():
    shards = [{"pid": 1, "start": 0.0, "busy": 10.0, "rows": 16}, {"pid": 2, "start": 0.0, "busy": 12.0, "rows": 16},
              {"pid": 1, "start": 12.0, "busy": 1.0, "rows": 16}, {"pid": 2, "start": 12.0, "busy": 2.0, "rows": 16}]
    assert steady_rate(shards) == 16.0  # 32 rows between t=12 (both started) and t=14
