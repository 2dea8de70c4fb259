"""Torch datasets: procedural driving scenes and a user's labelled image folder.

Both return ``{"image": uint8 (3, H, W), "codes": int64 (F,), ...}`` per item and offer
``batch(indices)`` for fast batched access (the trainer uses it directly; torch's DataLoader
uses ``__getitems__``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from aigc_synth.data.procedural import render_scenes
from aigc_synth.seeds import LATENT_STREAM, PLAN_STREAM, derive_seeds, uniform_from_seeds
from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema, SchemaError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class ProceduralDrivingDataset(Dataset):
    """``length`` procedural scenes; item ``i`` has a uniform-random condition and a seed, both
    derived from ``(seed, i)``, so the dataset is identical on every machine and every epoch."""

    def __init__(self, length: int, seed: int = 0, resolution: int = 64, schema: ConditionSchema = DEFAULT_SCHEMA):
        if schema.to_dict() != DEFAULT_SCHEMA.to_dict():
            raise SchemaError("the procedural source renders the default driving schema only; use FolderDataset for others")
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        self.length, self.seed, self.resolution, self.schema = int(length), int(seed), int(resolution), schema

    def __len__(self) -> int:
        return self.length

    def conditions_and_seeds(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64)
        seeds = derive_seeds(self.seed, idx, stream=LATENT_STREAM)
        codes = np.stack(
            [np.minimum((uniform_from_seeds(derive_seeds(self.seed, idx, stream=PLAN_STREAM + f)) * c).astype(np.int64), c - 1)
             for f, c in enumerate(self.schema.cardinalities)], axis=1)
        return codes, seeds

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        codes, seeds = self.conditions_and_seeds(indices)
        scenes = render_scenes(codes, seeds, self.resolution)
        return {
            "image": torch.from_numpy(scenes.images).permute(0, 3, 1, 2).contiguous(),
            "codes": torch.from_numpy(codes),
            "seed": torch.from_numpy(seeds),
            "boxes": [torch.from_numpy(b) for b in scenes.boxes],
            "vehicle_count": torch.from_numpy(scenes.vehicle_counts),
        }

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        b = self.batch(indices)
        return [{k: (v[i]) for k, v in b.items()} for i in range(len(indices))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.__getitems__([index])[0]


class FolderDataset(Dataset):
    """A user's images plus a labels CSV mapped onto a condition schema.

    The CSV needs a ``file`` column (path relative to ``folder``) and one column per schema factor.
    Every row is validated up front: a missing column, an unknown value or a missing image is an
    error naming the row, before any training starts.
    """

    def __init__(self, folder: str | Path, labels_csv: str | Path, schema: ConditionSchema = DEFAULT_SCHEMA,
                 resolution: int = 64):
        self.folder, self.schema, self.resolution = Path(folder), schema, int(resolution)
        labels_csv = Path(labels_csv)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.folder}")
        if not labels_csv.is_file():
            raise FileNotFoundError(f"labels CSV not found: {labels_csv}")
        with open(labels_csv, newline="") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            missing = [c for c in ["file", *schema.names] if c not in columns]
            if missing:
                raise SchemaError(f"{labels_csv}: missing column(s) {missing}; expected 'file' plus {schema.names}")
            files, codes = [], []
            for line, row in enumerate(reader, start=2):
                try:
                    codes.append(schema.encode({n: (row[n] or "").strip() for n in schema.names}))
                except SchemaError as exc:
                    raise SchemaError(f"{labels_csv} line {line}: {exc}") from None
                path = self.folder / (row["file"] or "").strip()
                if not row["file"] or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                    raise FileNotFoundError(f"{labels_csv} line {line}: image {row['file']!r} not found (or not an image) in {self.folder}")
                files.append(path)
        if not files:
            raise ValueError(f"{labels_csv} has no rows")
        self.files, self.codes = files, np.asarray(codes, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> np.ndarray:
        with Image.open(self.files[i]) as im:
            im = im.convert("RGB")
            if im.size != (self.resolution, self.resolution):
                im = im.resize((self.resolution, self.resolution), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        idx = [int(i) % len(self) for i in indices]
        images = np.stack([self._load(i) for i in idx])
        return {"image": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), "codes": torch.from_numpy(self.codes[idx])}

    def __getitem__(self, index: int) -> dict[str, Any]:
        b = self.batch([index])
        return {k: v[0] for k, v in b.items()}
