"""Checkpoint files: written atomically, read safely. The one loader every checkpoint goes through.

Every checkpoint this project writes (training states, exported image generators, scene generators,
judges) holds only tensors and plain containers (dict, list, str, int, float, bool, None) plus a
``format`` key, and is read with ``torch.load(weights_only=True)``: a file that carries pickled code is
refused, never executed. What a format *means* lives with its owner: exported image generators in
:mod:`aigc_synth.models.exported`, scene generators in :mod:`aigc_synth.models.scene_families`.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from aigc_synth.errors import CheckpointError, first_line
from aigc_synth.io.atomic import atomic_path

TRAIN_STATE_FORMAT = "aigc_synth.train_state/v1"


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """Atomically ``torch.save`` a dict of tensors and plain containers."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True``; every failure is a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return _load(path, label=str(path))


def load_checkpoint_bytes(data: bytes, label: str = "<bytes>") -> dict[str, Any]:
    """:func:`load_checkpoint` for bytes already read (hashed for a model id, or shipped to an actor);
    ``label`` names them in errors."""
    return _load(io.BytesIO(data), label=label)


def _load(source: Path | io.BytesIO, label: str) -> dict[str, Any]:
    path = label
    head = source.getvalue()[:4] if isinstance(source, io.BytesIO) else _head(source)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save: a zip archive (or a legacy pickle)
        kind = "an empty file" if not head else "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "another format"
        raise CheckpointError(f"{path} is not a checkpoint: expected a file written by torch.save (a zip archive), found {kind}")
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refusing to load {path}: it is not a plain-tensor checkpoint ({first_line(exc, 200)})") from None
    except Exception as exc:  # truncated zip, wrong file type, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {first_line(exc, 200)}") from None
    if not isinstance(obj, dict) or "format" not in obj:
        raise CheckpointError(f"{path} is not an aigc_synth checkpoint (no 'format' key)")
    return obj


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None




def require_format(ckpt: dict[str, Any], label: str, fmt: str, what: str, hint: str = "",
                   keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """``ckpt`` (a loaded checkpoint) if it is a ``fmt`` checkpoint holding every key of ``keys``; else one
    CheckpointError line: what the file is instead (``what``: e.g. "scene generator"; ``hint``: how to make one)."""
    if ckpt.get("format") != fmt:
        article = "an" if what[:1] in "aeiou" else "a"
        raise CheckpointError(f"{label} is a {ckpt.get('format')!r} checkpoint, not {article} {what} ({fmt})" + (f"; {hint}" if hint else ""))
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointError(f"{what} {label} lacks {missing[0]!r}")
    return ckpt
