"""Generator families and the registry that builds them from plain keyword arguments."""

from aigc_synth.models.registry import FAMILIES, build_discriminator, build_generator

__all__ = ["FAMILIES", "build_discriminator", "build_generator"]
