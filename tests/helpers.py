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


PINS = Path(__file__).parent / "data" / "pinned_job_images.json"
THUMB_CELLS = 8  # a pinned image's thumbnail: the mean of each of 8 x 8 cells, rounded to uint8
THUMB_TOLERANCE = 2  # levels: what another CPU's vector kernels can move a cell mean by
MAX_HASH_MISMATCH = 0.5  # share of images whose bytes may differ (each still within the thumbnail tolerance)


def write_shards_in_process(cfg) -> Path:
    """Every shard of the job ``cfg`` sampled and committed by one :class:`ShardWorker` in this process
    (no Ray, no manifest): the same worker code as a Ray job's actors, for tests of bytes, not of Ray."""
    from dataclasses import asdict

    from aigc_synth.jobs.spec import validate_job
    from aigc_synth.jobs.worker import ShardWorker

    job = validate_job(cfg)
    classifier = Path(job.gate["classifier"]).read_bytes() if job.gate else None
    worker = ShardWorker(asdict(job), Path(job.checkpoint).read_bytes(), 1, False, classifier_bytes=classifier)
    worker({"id": list(range(job.num_shards))})
    return Path(job.output_dir)


def _thumbnail(image_bytes: bytes) -> list[int]:
    import io

    import numpy as np
    from PIL import Image

    x = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"), dtype=np.float64)
    h, w = x.shape[0] // THUMB_CELLS, x.shape[1] // THUMB_CELLS
    cells = x[:h * THUMB_CELLS, :w * THUMB_CELLS].reshape(THUMB_CELLS, h, THUMB_CELLS, w, 3).mean(axis=(1, 3))
    return np.rint(cells).astype(int).ravel().tolist()


def check_pinned_images(name: str, images: dict[int, bytes]) -> None:
    """Assert a job's images equal the pins of ``name`` (``AIGC_SYNTH_REPIN=1`` re-pins them).

    Exact bytes on the CPU that pinned them. Another CPU's vector kernels (AVX-512 / AMX against AVX2)
    can round a float differently and flip a pixel of a PNG (seen here: 1 of 88 cGAN images, 3 of 12 diffusion images), so an image whose
    sha256 differs still passes when its 8 x 8 thumbnail is within ``THUMB_TOLERANCE`` levels, for at most
    ``MAX_HASH_MISMATCH`` of the images; a changed seed, condition or model moves every thumbnail by far more.
    """
    import hashlib
    import json

    got = {str(i): {"sha256": hashlib.sha256(b).hexdigest(), "thumb": _thumbnail(b)} for i, b in images.items()}
    if os.environ.get("AIGC_SYNTH_REPIN"):
        pins = json.loads(PINS.read_text()) if PINS.exists() else {}
        pins[name] = got
        PINS.write_text(json.dumps(pins, sort_keys=True, separators=(",", ":")).replace('},"', '},\n"') + "\n")
    pinned = json.loads(PINS.read_text())[name]
    assert sorted(got) == sorted(pinned), "the job's sample ids differ from the pinned ones"
    mismatched = [i for i in got if got[i]["sha256"] != pinned[i]["sha256"]]
    for i in mismatched:
        worst = max(abs(a - b) for a, b in zip(got[i]["thumb"], pinned[i]["thumb"]))
        assert worst <= THUMB_TOLERANCE, f"image {i} of {name!r} changed (thumbnail cells differ by up to {worst} levels)"
    assert len(mismatched) <= MAX_HASH_MISMATCH * len(got), f"{len(mismatched)} of {len(got)} images of {name!r} changed bytes"
