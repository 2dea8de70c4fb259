"""Model registry: family name → generator / discriminator constructors.

Exported checkpoints store ``family`` and the generator's keyword arguments; this registry is the
only place that turns them back into modules, so a checkpoint never needs pickled code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from torch import nn

from aigc_synth.models.cgan import CondGenerator, ProjectionDiscriminator
from aigc_synth.models.cvae import CVAEDecoder, CVAEEncoder
from aigc_synth.models.dcgan import DCGANDiscriminator, DCGANGenerator


@dataclass(frozen=True)
class Family:
    generator: Callable[..., nn.Module]
    discriminator: Callable[..., nn.Module] | None
    generator_keys: tuple[str, ...]
    discriminator_keys: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    "cgan": Family(CondGenerator, ProjectionDiscriminator,
                   ("resolution", "z_dim", "base_channels", "embed_dim"),
                   ("resolution", "d_base_channels", "aux_class_weight")),
    "dcgan": Family(DCGANGenerator, DCGANDiscriminator,
                    ("resolution", "z_dim", "base_channels"), ("resolution", "d_base_channels")),
    # for the VAE the "discriminator" slot holds the encoder: the second network trained beside the generator
    "cvae": Family(CVAEDecoder, CVAEEncoder,
                   ("resolution", "z_dim", "base_channels"), ("resolution", "z_dim", "d_base_channels")),
}


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; available: {sorted(FAMILIES)}")
    return FAMILIES[name]


def generator_kwargs(family: str, params: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``params`` the family's generator takes (what an exported checkpoint stores)."""
    return {k: params[k] for k in _family(family).generator_keys if k in params}


def build_generator(family_name: str, cardinalities: Sequence[int], **params: Any) -> nn.Module:
    """Build a generator; ``params`` may hold extra (e.g. discriminator) keys, which are ignored."""
    return _family(family_name).generator(list(cardinalities), **generator_kwargs(family_name, params))


def build_discriminator(family_name: str, cardinalities: Sequence[int], **params: Any) -> nn.Module:
    fam = _family(family_name)
    kwargs = {k: params[k] for k in fam.discriminator_keys if k in params}
    if "d_base_channels" in kwargs:
        kwargs["base_channels"] = kwargs.pop("d_base_channels")
    if "aux_class_weight" in kwargs:  # the module takes a switch, not a loss weight
        kwargs["aux_head"] = kwargs.pop("aux_class_weight") > 0
    return fam.discriminator(list(cardinalities), **kwargs)
