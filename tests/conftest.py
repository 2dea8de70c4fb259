"""Shared fixtures: one Ray instance per test session, tiny checkpoints, composed configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


#: Tiny CPU overrides on top of the real ``conf/train.yaml`` (lightning-hydra-template style).
TINY_TRAIN_OVERRIDES = ["model.resolution=32", "model.z_dim=16", "model.base_channels=8", "model.d_base_channels=8",
                        "train.steps=2", "train.batch_size=8", "train.threads=1", "train.eval_every=0", "train.device=cpu",
                        "train.log_every=1", "train.sample_every=2", "train.checkpoint_every=2"]


@pytest.fixture(scope="session")
def tiny_train_config(compose_config):
    """``tiny_train_config(out_dir, *overrides)``: the real train config, composed with tiny CPU
    overrides (the family's own keys come from its preset: ``model=dcgan_baseline`` works)."""

    def make(out_dir, *overrides: str):
        return compose_config("train", [*TINY_TRAIN_OVERRIDES, f"train.out_dir={out_dir}", *overrides])

    return make
