"""Reading a job's output back: a torch Dataset with a condition filter, and manifest verification.

Every entry point takes a local directory or a ``pyarrow.fs`` URI (``s3://bucket/prefix``, ...).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from aigc_synth.errors import IntegrityError
from aigc_synth.io.atomic import TMP_MARKER, LocalStore, Store, open_store
from aigc_synth.io.shards import png_folder_sha256
from aigc_synth.schema import ConditionSchema


def load_manifest(output_dir: str | Path | Store) -> dict[str, Any]:
    """The finished job's ``manifest.json``; :class:`~aigc_synth.errors.BadFileError` naming it when it is
    missing (not a finished job) or not valid JSON (truncated, edited)."""
    from aigc_synth.errors import BadFileError, reading

    store = open_store(output_dir)
    if not store.is_file("manifest.json"):
        raise BadFileError(f"no manifest.json in {store.display}: not a finished aigc_synth job")
    where = f"{store.display.rstrip('/')}/manifest.json"
    with reading(where, "manifest"):
        manifest = json.loads(store.read_bytes("manifest.json"))
    if not isinstance(manifest, dict) or "shards" not in manifest:
        raise BadFileError(f"cannot read manifest {where}: not an aigc_synth manifest (no shard list)")
    return manifest


def iter_image_rows(output_dir: str | Path | Store, limit: int | None = None):
    """Every row of a finished image job, shard by shard: ``{"sample_id", "seed", "conditions" (dict),
    "image" (encoded bytes), "path" (the row's file name / path in the job), "width", "height",
    "model_id"}`` plus ``"boxes"`` and ``"source_frame"`` when the job wrote those columns. Reads one shard at a time; stops
    after ``limit`` rows. Raises FileNotFoundError without a manifest, ValueError for a scene job."""
    store = open_store(output_dir)
    manifest = load_manifest(store)
    names = list(manifest["schema"])
    done = 0
    for shard in manifest["shards"]:
        table = store.read_table(shard["path"])
        if "image" not in table.column_names:
            raise ValueError(f"{store.display} holds a {manifest['job'].get('sampler')} job's output, not images")
        cols = {c: table.column(c) for c in table.column_names}
        images = cols["image"].combine_chunks()
        data, paths = images.field("bytes").to_pylist(), images.field("path").to_pylist()
        plain = {c: cols[c].to_pylist() for c in ("sample_id", "seed", "width", "height", "model_id", "boxes", "source_frame", *names)
                 if c in cols}
        for row in range(table.num_rows):
            item = {"sample_id": plain["sample_id"][row], "seed": plain["seed"][row],
                    "conditions": {n: plain[n][row] for n in names}, "image": data[row], "path": paths[row],
                    "width": plain["width"][row], "height": plain["height"][row], "model_id": plain["model_id"][row]}
            if "boxes" in plain:
                item["boxes"] = plain["boxes"][row]
            if "source_frame" in plain:  # condition transfer: the annotated frame the image redraws
                item["source_frame"] = plain["source_frame"][row]
            yield item
            done += 1
            if limit is not None and done >= limit:
                return


class GeneratedDataset(Dataset):
    """Images of a finished job, optionally filtered by condition.

    ``conditions`` is a partial ``{factor: value or [values]}`` filter, validated against the
    job's schema. Items are ``{"image": uint8 (3, H, W), "sample_id", "seed", "conditions",
    "codes"}``. Only the small metadata columns are read up front; image bytes are read per shard.
    """

    def __init__(self, output_dir: str | Path, conditions: Mapping[str, Any] | None = None):
        self.store = open_store(output_dir)
        #: the local directory, or the URI string of an object-store output
        self.root = self.store.root if isinstance(self.store, LocalStore) else self.store.uri
        self.manifest = load_manifest(self.store)
        self.schema = ConditionSchema.from_dict(self.manifest["schema"])
        wanted: dict[str, set[str]] = {}
        for factor, value in (conditions or {}).items():
            values = [value] if isinstance(value, str) else list(value)
            for v in values:
                self.schema.validate({factor: v}, partial=True)
            wanted[factor] = set(values)
        self._index: list[tuple[int, int]] = []  # (shard position, row)
        self._meta: list[dict[str, Any]] = []
        self._shard_paths = [s["path"] for s in self.manifest["shards"]]
        for pos, path in enumerate(self._shard_paths):
            table = self.store.read_table(path, columns=["sample_id", "seed", *self.schema.names])
            cols = {name: table.column(name).to_pylist() for name in table.column_names}
            for row in range(table.num_rows):
                cond = {n: cols[n][row] for n in self.schema.names}
                if all(cond[f] in vals for f, vals in wanted.items()):
                    self._index.append((pos, row))
                    self._meta.append({"sample_id": cols["sample_id"][row], "seed": cols["seed"][row], "conditions": cond})
        self._cache: tuple[int, list[bytes]] | None = None

    def __len__(self) -> int:
        return len(self._index)

    def _shard_images(self, pos: int) -> list[bytes]:
        if self._cache is None or self._cache[0] != pos:
            column = self.store.read_table(self._shard_paths[pos], columns=["image"]).column("image").combine_chunks()
            self._cache = (pos, column.field("bytes").to_pylist())
        return self._cache[1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        pos, row = self._index[index]
        with Image.open(io.BytesIO(self._shard_images(pos)[row])) as im:
            image = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
        meta = self._meta[index]
        return {"image": image, "sample_id": meta["sample_id"], "seed": meta["seed"], "conditions": meta["conditions"],
                "codes": torch.tensor(self.schema.encode(meta["conditions"]))}


def shard_problem(store: Store, shard: Mapping[str, Any]) -> str | None:
    """What is wrong with one Parquet shard of a manifest (``shard["path"]``), or None: the file is
    missing, its sha256 is not the manifest's, or it holds another number of rows."""
    if not store.is_file(shard["path"]):
        return f"missing shard file {shard['path']}"
    if store.sha256(shard["path"]) != shard["sha256"]:
        return f"{shard['path']}: sha256 mismatch"
    rows = store.read_metadata(shard["path"]).num_rows
    if rows != shard["rows"]:
        return f"{shard['path']}: {rows} rows, manifest says {shard['rows']}"
    return None


def check_shards(output_dir: str | Path | Store, limit: int | None = None) -> None:
    """Before reading a job's Parquet shards: each one a reader of the first ``limit`` rows (every row
    without a limit) opens, in manifest order, must pass :func:`shard_problem`, as in ``aigc-synth verify``.
    Raises IntegrityError naming the first shard that does not."""
    store = open_store(output_dir)
    manifest = load_manifest(store)
    done = 0
    for shard in manifest["shards"]:
        if limit is not None and done >= limit:
            return
        problem = shard_problem(store, shard)
        if problem:
            raise IntegrityError(f"{problem} in {store.display}: not what the job wrote "
                                 f"(`aigc-synth verify {store.display}` checks every shard)")
        done += shard["rows"]


def verify_output(output_dir: str | Path | Store) -> list[str]:
    """Check a job's output against its manifest; return a list of problems (empty = valid).

    A missing or unreadable manifest is not a problem list but a :class:`~aigc_synth.errors.BadFileError`
    naming it (there is nothing to check against)."""
    problems: list[str] = []
    root = open_store(output_dir)
    manifest = load_manifest(root)
    total, expected_next = 0, 0
    for shard in manifest["shards"]:
        if shard["first_sample_id"] != expected_next:
            problems.append(f"shard {shard['shard']}: starts at sample {shard['first_sample_id']}, expected {expected_next}")
        expected_next = shard["last_sample_id"] + 1
        total += shard["rows"]
        if "path" in shard:
            problem = shard_problem(root, shard)
            if problem:  # one problem per shard: its PNG folder is not checked then
                problems.append(problem)
                continue
        if "png_dir" in shard:
            if not root.is_dir(shard["png_dir"]):
                problems.append(f"missing PNG folder {shard['png_dir']}")
            elif png_folder_sha256(root, shard["png_dir"]) != shard["png_sha256"]:
                problems.append(f"{shard['png_dir']}: content checksum mismatch")
    if total != manifest["num_samples"]:
        problems.append(f"shards hold {total} rows, manifest says num_samples={manifest['num_samples']}")
    leftovers = [rel for rel in root.walk() if rel.rpartition("/")[2].startswith(TMP_MARKER)]
    if leftovers:
        problems.append(f"temporary files left: {leftovers[:5]}")
    return problems
