"""The sampler interface: what a job actor (and the serving endpoint) holds.

A **sampler** is built once per actor from the checkpoint bytes and the resolved job (plain
data), then answers ``sample(sample_ids, attempt) → SampleBatch``: a pure function of (job seed,
sample id, attempt, model), whatever the batch, actor or device. An **encoder** turns a batch
into what a shard stores (an Arrow table, plus the files of the shard's folder); it needs no
model, so it can run in another process (the CPU stage of ``resources.png_stage``).

The job machinery (:mod:`aigc_synth.jobs`: plan of shards, atomic commits, resume, manifest,
gate, progress, timeouts) only calls these two; a new family of outputs (traffic scenes, images
rendered from scenes) registers a :class:`SamplerKind` in :mod:`aigc_synth.sampling.registry`
and nothing else changes.
See ``docs/architecture.md`` for a worked example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import pyarrow as pa


@dataclass
class SampleBatch:
    """Rows of samples, column-wise: every array's first axis is the row.

    ``columns`` are per-row values in the sampler's own vocabulary (``seed``, condition values,
    gate columns …); ``images`` (n, H, W, 3) uint8 for image samplers; ``codes`` the requested
    condition codes (n, F), what a condition judge compares its predictions against.
    """

    sample_ids: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    images: np.ndarray | None = None
    codes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.sample_ids)

    def replace_rows(self, rows: np.ndarray, other: "SampleBatch", other_rows: np.ndarray) -> None:
        """Overwrite ``rows`` of this batch with ``other_rows`` of ``other`` (same sample ids)."""
        assert np.array_equal(self.sample_ids[rows], other.sample_ids[other_rows])
        for name, values in self.columns.items():
            values[rows] = other.columns[name][other_rows]
        if self.images is not None:
            self.images[rows] = other.images[other_rows]


@dataclass
class EncodedShard:
    """What one shard stores: ``table`` (one row per sample, ``sample_id`` first) and the files of
    the shard's folder as ``(file name, bytes)`` in row order (empty for samplers without files)."""

    table: pa.Table
    files: list[tuple[str, bytes]]


class Sampler(Protocol):
    """Held by a job actor; loaded once in its constructor."""

    model_id: str

    def sample(self, sample_ids: np.ndarray, attempt: int = 0) -> SampleBatch:
        """Rows for ``sample_ids``; ``attempt`` t ≥ 1 draws the t-th alternative (gate retries)."""

    def encode(self, batch: SampleBatch, shard: int, formats: Sequence[str]) -> EncodedShard:
        """Shard ``shard``'s table and files for ``batch`` (``formats`` decides file references)."""


@dataclass(frozen=True)
class SamplerKind:
    """A registered kind: ``build(job, checkpoint_bytes, device) → Sampler`` and
    ``encoder(job) → (batch, shard, formats) → EncodedShard`` (no model needed)."""

    name: str
    build: Callable[[dict[str, Any], bytes, str], Sampler]
    encoder: Callable[[dict[str, Any]], Callable[[SampleBatch, int, Sequence[str]], EncodedShard]]
