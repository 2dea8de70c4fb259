"""Helpers shared by the tests and the subprocess scripts they start (not a test module)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from aigc_synth.config import compose
from aigc_synth.models.exported import export_generator
from aigc_synth.models.registry import build_generator
from aigc_synth.schema import DEFAULT_SCHEMA

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


CLI = [sys.executable, "-m", "aigc_synth.cli"]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def shard_actor_pids() -> list[int]:
    """PIDs of live generator actors: Ray titles their processes ``ray::MapWorker(MapBatches(ShardWorker))``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ShardWorker" in cmdline and b"MapWorker" in cmdline:
                pids.append(int(entry.name))
    return pids


def compose_generate(overrides: list[str]):
    """The real ``conf/generate.yaml`` composed with ``overrides``, exactly as the CLI does."""
    return compose("generate", overrides)
