"""Sampler kinds by name (see :mod:`aigc_synth.sampling.base`). A resolved job names its kind in
``job["sampler"]``; actors build it from there."""

from __future__ import annotations

from aigc_synth.sampling.base import SamplerKind
from aigc_synth.sampling.image import IMAGE_KIND
from aigc_synth.sampling.scene import SCENE_KIND

SAMPLER_KINDS: dict[str, SamplerKind] = {IMAGE_KIND.name: IMAGE_KIND, SCENE_KIND.name: SCENE_KIND}


def register_sampler(kind: SamplerKind) -> SamplerKind:
    """Add a kind (a plugin's, or a test's); returns it."""
    SAMPLER_KINDS[kind.name] = kind
    return kind


def sampler_kind(name: str) -> SamplerKind:
    if name not in SAMPLER_KINDS:
        raise ValueError(f"unknown sampler kind {name!r}; registered: {sorted(SAMPLER_KINDS)}")
    return SAMPLER_KINDS[name]
