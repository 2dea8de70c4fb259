"""Sampler kinds by name (see :mod:`aigc_synth.sampling.base`). A resolved job names its kind in
``job["sampler"]``; validation, actors, previews and the server look it up here, and nowhere else
branches on a kind's name."""

from __future__ import annotations

from pathlib import Path

from aigc_synth.sampling.base import SamplerKind
from aigc_synth.sampling.image import IMAGE_KIND
from aigc_synth.sampling.scene import SCENE_KIND

SAMPLER_KINDS: dict[str, SamplerKind] = {IMAGE_KIND.name: IMAGE_KIND, SCENE_KIND.name: SCENE_KIND}
#: The kind of a job that names none (``job.sampler``'s default; manifests of such jobs omit it).
DEFAULT_SAMPLER = IMAGE_KIND.name


def register_sampler(kind: SamplerKind) -> SamplerKind:
    """Add a kind (a plugin's, or a test's); returns it. Re-registering a name replaces that kind."""
    SAMPLER_KINDS[kind.name] = kind
    return kind


def sampler_kind(name: str) -> SamplerKind:
    """The registered kind ``name``; ValueError naming the registered ones otherwise."""
    if name not in SAMPLER_KINDS:
        raise ValueError(f"unknown sampler kind {name!r}; registered: {sorted(SAMPLER_KINDS)}")
    return SAMPLER_KINDS[name]


def job_kind(manifest: dict) -> SamplerKind:
    """The kind that wrote a job's output (its manifest or job.json)."""
    return sampler_kind(manifest.get("job", {}).get("sampler", DEFAULT_SAMPLER))


def kind_of_checkpoint(path: str | Path) -> SamplerKind | None:
    """The kind whose checkpoints have the file's ``format``; None when no kind claims it."""
    from aigc_synth.io.checkpoint import load_checkpoint

    fmt = load_checkpoint(path).get("format")
    return next((k for k in SAMPLER_KINDS.values() if k.checkpoint_format and k.checkpoint_format == fmt), None)


def kind_of_source(source: str) -> SamplerKind:
    """The kind of what ``aigc-synth evaluate source=…`` names: a job's output (its manifest), a kind's
    alias (``default_scenes``), or a checkpoint file (its ``format``); the default kind otherwise."""
    import json

    path = Path(source)
    if (path / "manifest.json").is_file():
        try:
            return job_kind(json.loads((path / "manifest.json").read_text()))
        except (OSError, ValueError):
            return SAMPLER_KINDS[DEFAULT_SAMPLER]  # not ours to judge here: the evaluator reports an unreadable manifest
    for kind in SAMPLER_KINDS.values():
        if source in kind.aliases:
            return kind
    if path.is_file():
        from aigc_synth.errors import CheckpointError

        try:
            return kind_of_checkpoint(path) or SAMPLER_KINDS[DEFAULT_SAMPLER]
        except CheckpointError:  # the default kind's evaluator reports an unreadable checkpoint
            pass
    return SAMPLER_KINDS[DEFAULT_SAMPLER]
