"""Shared fixtures: one Ray instance per test session, tiny checkpoints, composed configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from aigc_synth.io.checkpoint import export_generator  # noqa: E402
from aigc_synth.models.registry import build_generator  # noqa: E402
from aigc_synth.schema import DEFAULT_SCHEMA  # noqa: E402

TINY_MODEL = {"resolution": 32, "z_dim": 16, "base_channels": 8, "embed_dim": 16}


def make_tiny_checkpoint(path: Path, schema=DEFAULT_SCHEMA, seed: int = 0, **overrides) -> Path:
    """A randomly initialised 32-px cGAN, exported like a trained one (fast, deterministic)."""
    params = {**TINY_MODEL, **overrides}
    torch.manual_seed(seed)
    gen = build_generator("cgan", schema.cardinalities, **params)
    # one forward in train mode so BatchNorm running stats are not the trivial init
    with torch.no_grad():
        gen.train()
        gen(torch.randn(64, params["z_dim"]), torch.stack([torch.randint(0, c, (64,)) for c in schema.cardinalities], 1))
    gen.eval()
    export_generator(path, family="cgan", model_params=params, schema=schema, generator=gen, meta={"test": True})
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session, with this machine's 2 CPUs."""
    import ray

    if not ray.is_initialized():
        # "local": always a fresh instance, never a `ray start` cluster another process left running
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def compose_generate(overrides: list[str]):
    from aigc_synth.cli import compose

    return compose("generate", overrides)


@pytest.fixture(scope="session")
def compose_config():
    """``compose_config(name, overrides)``: the real ``conf/`` composed exactly as the CLI does."""
    from aigc_synth.cli import compose

    return compose
