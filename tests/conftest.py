"""Shared fixtures: one Ray instance per test session, tiny checkpoints, composed configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from tests.helpers import make_tiny_checkpoint  # noqa: E402

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


@pytest.fixture(scope="session")
def compose_config():
    """``compose_config(name, overrides)``: the real ``conf/`` composed exactly as the CLI does."""
    from aigc_synth.config import compose

    return compose
