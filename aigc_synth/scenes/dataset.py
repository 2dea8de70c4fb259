"""Reading scenes back: from a scene job's output, a folder of scene Parquet files, or one file."""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from aigc_synth.errors import reading
from aigc_synth.scenes.format import SCENE_SAMPLER, Scene, SceneError, table_to_scenes


def job_manifest(path: str | Path) -> dict | None:
    """The manifest of the finished aigc_synth job at ``path``, or None (a folder of Parquet files, one
    file, or a folder with a manifest of its own: scripts/build_scene_dataset.py writes one)."""
    manifest = Path(path).expanduser() / "manifest.json"
    if not manifest.is_file():
        return None
    with reading(manifest, "manifest"):
        data = json.loads(manifest.read_text())
    if not isinstance(data, dict):
        return None
    return data if data.get("format") == "aigc_synth.manifest/v1" else None


def scene_files(path: str | Path) -> list[Path]:
    """The Parquet files of ``path``: a finished scene job (its manifest's shards, in order), a
    directory (every ``*.parquet`` below it, sorted) or a single file. SceneError if there are none."""
    path = Path(path).expanduser()
    data = job_manifest(path)
    if data is not None:  # a job's output
        sampler = data.get("job", {}).get("sampler")  # absent: the default kind, images
        if sampler != SCENE_SAMPLER:
            raise SceneError(f"{path} holds {'an image' if sampler is None else f'a {sampler}'} job's output, not scenes")
        return [path / shard["path"] for shard in data["shards"]]
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
        if files:
            return files
    raise SceneError(f"no scenes at {path}: give a scene job's output_dir, a folder of scene Parquet files or one file "
                     "(python scripts/build_scene_dataset.py --num-scenes 3000 --out data/scenes)")


def read_scenes(path: str | Path, limit: int | None = None) -> list[Scene]:
    """Every scene under ``path`` (see :func:`scene_files`), at most ``limit``, in file order."""
    scenes: list[Scene] = []
    for f in scene_files(path):
        with reading(f, "scene file"):  # unreadable, or not Parquet at all: one line naming the file
            table = pq.read_table(f)
        scenes += table_to_scenes(table)
        if limit is not None and len(scenes) >= limit:
            return scenes[:limit]
    return scenes


def scenes_id(path: str | Path) -> str:
    """sha256 identifying the scenes under ``path`` by content, not by location: over the sha256 of
    each of its Parquet files, in :func:`scene_files` order. Two copies of a scene set share it."""
    from aigc_synth.io.atomic import sha256_file

    digest = hashlib.sha256()
    for f in scene_files(path):
        digest.update(sha256_file(f).encode())
    return digest.hexdigest()


def split_seed(seed: int, split: str) -> int:
    """The SUMO dataset seed of a named split: independent streams for different names, so
    ``train``, ``heldout`` and the evaluation's own reference sets never share a simulation run."""
    return int(np.random.SeedSequence([seed, zlib.crc32(split.encode())]).generate_state(1)[0])
