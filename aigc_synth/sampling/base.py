"""The sampler interface: what a job actor and a serving replica hold, and what a kind registers.

A **sampler kind** (:class:`SamplerKind`) owns everything that differs between kinds of output:
checking a job's kind-specific keys and loading its checkpoint in the driver (``resolve``), the
**sampler** an actor or replica builds once from the checkpoint bytes (``build``), the **encoder**
that turns a batch into a shard's rows and files (``encoder``: no model, so it may run in another
process, the CPU stage of ``resources.png_stage``), and how a served request's rows are written
(``respond``). A sampler answers ``sample_for(job, sample_ids, attempt) → SampleBatch``: a pure
function of (job seed, sample id, attempt, model), whatever the batch, actor or device.

The job machinery (:mod:`aigc_synth.jobs`: validation, plan of shards, atomic commits, resume,
manifest, gate, progress, timeouts) and the server (:mod:`aigc_synth.serve`) only call these; a new
kind registers a :class:`SamplerKind` with :func:`aigc_synth.sampling.registry.register_sampler` and
nothing else changes (``tests/test_plugin_kind.py`` does it from outside the package).
See ``docs/architecture.md`` for a worked example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

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
    """Held by a job actor or a serving replica; loads its model once, in its constructor."""

    model_id: str
    job: dict[str, Any]

    def sample_for(self, job: dict[str, Any], sample_ids: np.ndarray, attempt: int = 0) -> SampleBatch:
        """Rows ``sample_ids`` of ``job`` (a resolved job of this sampler's model: the constructor's, or
        one with another seed / plan / size, as a served request is); ``attempt`` t ≥ 1 draws the t-th
        alternative (gate retries)."""

    def sample(self, sample_ids: np.ndarray, attempt: int = 0) -> SampleBatch:
        """``sample_for(self.job, sample_ids, attempt)``."""

    def sample_slices(self, slices: Sequence[tuple[dict[str, Any], np.ndarray]]) -> list[SampleBatch]:
        """One batch per ``(job, sample_ids)``: what a replica does with the requests it merged; same rows
        as ``sample_for`` on each (a sampler may run their network calls together)."""

    def encode(self, batch: SampleBatch, shard: int, formats: Sequence[str]) -> EncodedShard:
        """Shard ``shard``'s table and files for ``batch`` (``formats`` decides file references)."""


class SamplerBase:
    """The generic half of a sampler: subclasses load their model in ``__init__`` (after calling this
    one) and implement ``sample_for``; ``encode`` is the kind's encoder for the constructor's job."""

    def __init__(self, job: dict[str, Any], encoder: Callable[[SampleBatch, int, Sequence[str]], EncodedShard]):
        self.job = job
        self.encode = encoder

    def sample_for(self, job: dict[str, Any], sample_ids: np.ndarray, attempt: int = 0) -> SampleBatch:
        raise NotImplementedError

    def sample(self, sample_ids: np.ndarray, attempt: int = 0) -> SampleBatch:
        return self.sample_for(self.job, sample_ids, attempt)

    def sample_slices(self, slices: Sequence[tuple[dict[str, Any], np.ndarray]]) -> list[SampleBatch]:
        return [self.sample_for(job, ids) for job, ids in slices]


def check_model_id(sampler: Any, job: Mapping[str, Any]) -> None:
    """The bytes an actor or replica got are the model the driver validated (the job names its id)."""
    if sampler.model_id != job["model_id"]:
        raise RuntimeError("checkpoint bytes shipped to the actor do not match the validated model id")


@dataclass
class ResolvedModel:
    """What a kind's ``resolve`` learned from the checkpoint, in the driver."""

    path: Path
    model_id: str
    family: str
    model_config: dict[str, Any]
    schema: Any  # ConditionSchema
    resolution: int = 0  # image side in pixels; 0 for kinds without images


@dataclass
class KindResolution:
    """A kind's answer to a job spec: its model, the ResolvedJob fields only it uses (``fields``, e.g. a
    layout job's scene source), what the job fingerprint adds for it (``spec``: absent keys keep
    older jobs' fingerprints), the JobConfig keys its inputs settle (``job``: a condition-transfer
    job's ``num_samples`` and exact ``plan`` come from its frames) and the plan's schema when it adds
    factors to the model's (``schema``; None: the model's)."""

    model: ResolvedModel
    fields: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    schema: Any = None  # ConditionSchema of the job's plan when it is not the model's (a layout job's road factor)


def table_rows(batch: SampleBatch, encoder: Callable[[SampleBatch, int, Sequence[str]], EncodedShard]) -> list[dict[str, Any]]:
    """A served request's rows by default: the rows a job's shard holds for the same samples (bytes as base64)."""
    import base64

    rows = encoder(batch, 0, ["parquet"]).table.to_pylist()

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return [plain(r) for r in rows]


@dataclass(frozen=True)
class SamplerKind:
    """A registered kind of output.

    * ``resolve(job_config, formats) → KindResolution``: in the driver, before anything is written:
      the kind's own keys, its checkpoint (loaded fully), its extra job fields; raises JobSpecError.
    * ``build(job, checkpoint_bytes, device) → Sampler``; ``encoder(job) → encode`` (no model).
    * ``respond(sampler, batch, job, fmt) → dict``: the kind's part of a served response (default:
      ``{"rows": the shard rows}``); ``serve_formats``: the ``format`` values a request may name.
    * ``unit``: what one row is ("image", "scene"), for progress and summaries; ``images``: rows carry
      images (``job.image_format`` applies); ``gate``: the condition-fidelity gate applies;
      ``plan_hint``: appended to a plan error; ``checkpoint_format``: the ``format`` key of its
      checkpoints (which kind a file belongs to); ``preview(store, manifest) → uint8 image | None``:
      the job's preview.png; ``aliases``: names that mean the kind's bundled model where a path is
      expected (``evaluate source=default_scenes``).
    """

    name: str
    resolve: Callable[[Any, list[str]], KindResolution]
    build: Callable[[dict[str, Any], bytes, str], Sampler]
    encoder: Callable[[dict[str, Any]], Callable[[SampleBatch, int, Sequence[str]], EncodedShard]]
    respond: Callable[..., dict[str, Any]] | None = None
    serve_formats: tuple[str, ...] = ()
    unit: str = "sample"
    images: bool = False
    gate: bool = False
    plan_hint: str = ""
    checkpoint_format: str | None = None
    preview: Callable[[Any, dict[str, Any]], Any] | None = None
    aliases: tuple[str, ...] = ()

    def response(self, sampler: Sampler, batch: SampleBatch, job: dict[str, Any], fmt: str | None) -> dict[str, Any]:
        """The kind's part of a served response for ``batch`` (rows of ``job``)."""
        if self.respond is not None:
            return self.respond(sampler, batch, job, fmt)
        return {"rows": table_rows(batch, self.encoder(job))}
