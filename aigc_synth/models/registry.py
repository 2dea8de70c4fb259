"""Model registry: family name → config dataclass, modules, training objective and key lists.

Exported checkpoints store ``family`` and the generator's keyword arguments; this registry is the
only place that turns them back into modules, so a checkpoint never needs pickled code. A new
family registers a :class:`Family` here (see ``docs/architecture.md``); the training loop, the
checkpoint loader and the job machinery then work for it unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Callable, Sequence

from torch import nn

from aigc_synth.models.cgan import CondGenerator, ProjectionDiscriminator
from aigc_synth.models.configs import CGANConfig, CVAEConfig, DCGANConfig, ImageModelConfig, LayoutDiffusionConfig, LayoutGANConfig
from aigc_synth.models.cvae import CVAEDecoder, CVAEEncoder
from aigc_synth.models.dcgan import DCGANDiscriminator, DCGANGenerator
from aigc_synth.models.layout_diffusion import LayoutDiffusion, NoCritic
from aigc_synth.models.layout_gan import LayoutDiscriminator, LayoutGenerator
from aigc_synth.models.null import LatencyGenerator, NullGenerator


@dataclass(frozen=True)
class Family:
    """Everything the project needs to know about one generator family.

    * ``generator_keys``: the generator's constructor kwargs (what an exported checkpoint stores).
    * ``critic_keys``: the second network's kwargs (``d_base_channels`` is passed as ``base_channels``).
    * ``arch_keys``: config keys that must match for a training state to be resumed or fine-tuned
      from; every other key (learning rates, loss weights) may change between runs.
    * ``objective``: the name of its training step in :data:`aigc_synth.training.steps.OBJECTIVES`
      (``step(ctx, real, codes, **inputs) → {name: scalar}``); None: not trainable.
    * ``joint_optimizer``: True when one optimiser trains both networks (the VAE).
    * ``inputs``: the per-sample inputs the generator takes beside ``z`` and the codes, in order, as
      named in a training batch (``("layout",)``: ``G(z, codes, layout)``, a scene's layout raster).
    * ``data_sources``: the ``data.source`` values it can train on (a layout family needs data that
      carry layouts).
    * ``device_free``: runs no network (the benchmark stand-ins), so an actor given a GPU by Ray runs it
      even where CUDA is absent (the scale-out benchmark's simulated GPU nodes).
    """

    name: str
    config: type
    generator: Callable[..., nn.Module]
    critic: Callable[..., nn.Module]
    generator_keys: tuple[str, ...]
    critic_keys: tuple[str, ...]
    arch_keys: tuple[str, ...]
    objective: str | None
    joint_optimizer: bool = False
    inputs: tuple[str, ...] = ()
    data_sources: tuple[str, ...] = ("procedural", "folder", "bdd100k")
    device_free: bool = False

    @property
    def layout(self) -> bool:
        """The generator draws a given layout (sampling hands it one per sample)."""
        return "layout" in self.inputs


FAMILIES: dict[str, Family] = {
    "cgan": Family("cgan", CGANConfig, CondGenerator, ProjectionDiscriminator,
                   generator_keys=("resolution", "z_dim", "base_channels", "embed_dim"),
                   critic_keys=("resolution", "d_base_channels", "aux_class_weight"),
                   arch_keys=("resolution", "z_dim", "base_channels", "d_base_channels", "embed_dim"),
                   objective="gan"),
    "layout_gan": Family("layout_gan", LayoutGANConfig, LayoutGenerator, LayoutDiscriminator,
                         generator_keys=("resolution", "z_dim", "base_channels", "embed_dim", "spade_hidden", "truncation",
                                         "instance_codes", "particles", "calibration_factors", "layout_unknown_flags"),
                         critic_keys=("resolution", "d_base_channels", "aux_class_weight", "layout_unknown_flags"),
                         arch_keys=("resolution", "z_dim", "base_channels", "d_base_channels", "embed_dim", "spade_hidden",
                                    "layout_unknown_flags"),
                         objective="layout_gan", inputs=("layout",),
                         data_sources=("scenes", "bdd100k", "coco")),
    # no second network: the critic slot holds a module without parameters (one optimiser, joint)
    "layout_diffusion": Family("layout_diffusion", LayoutDiffusionConfig, LayoutDiffusion, NoCritic,
                               generator_keys=("resolution", "base_channels", "channel_mult", "layers_per_block",
                                               "sampling_steps", "guidance", "guidance_t_min", "guidance_t_max",
                                               "layout_unknown_flags"),
                               critic_keys=(), arch_keys=("resolution", "base_channels", "channel_mult", "layers_per_block",
                                                          "layout_unknown_flags"),
                               objective="diffusion", joint_optimizer=True, inputs=("layout",),
                               data_sources=("scenes", "bdd100k", "coco")),
    "dcgan": Family("dcgan", DCGANConfig, DCGANGenerator, DCGANDiscriminator,
                    generator_keys=("resolution", "z_dim", "base_channels"), critic_keys=("resolution", "d_base_channels"),
                    arch_keys=("resolution", "z_dim", "base_channels", "d_base_channels"), objective="gan"),
    # for the VAE the critic slot holds the encoder: the second network trained beside the generator
    "cvae": Family("cvae", CVAEConfig, CVAEDecoder, CVAEEncoder,
                   generator_keys=("resolution", "z_dim", "base_channels"),
                   critic_keys=("resolution", "z_dim", "d_base_channels"),
                   arch_keys=("resolution", "z_dim", "base_channels", "d_base_channels"),
                   objective="vae", joint_optimizer=True),
    # the pipeline's own ceiling (benchmarks): no network, no training; see models/null.py
    "null": Family("null", ImageModelConfig, NullGenerator, DCGANDiscriminator,
                   generator_keys=("resolution", "z_dim"), critic_keys=("resolution",), arch_keys=("resolution", "z_dim"),
                   objective=None, device_free=True),
    # a GPU-bound generator's stand-in for the scale-out benchmark: null's images after a sleep per micro-batch
    "latency": Family("latency", ImageModelConfig, LatencyGenerator, DCGANDiscriminator,
                      generator_keys=("resolution", "z_dim", "service_ms"), critic_keys=("resolution",),
                      arch_keys=("resolution", "z_dim"), objective=None, device_free=True),
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; available: {sorted(FAMILIES)}")
    return FAMILIES[name]


def _params(params: Any) -> dict[str, Any]:
    return asdict(params) if is_dataclass(params) else dict(params)


def generator_kwargs(family: str, params: Any) -> dict[str, Any]:
    """The subset of ``params`` (a config or dict) the family's generator takes."""
    p = _params(params)
    return {k: p[k] for k in get_family(family).generator_keys if k in p}


def build_generator(family_name: str, cardinalities: Sequence[int], factors: Sequence[tuple[str, Sequence[str]]] | None = None,
                    **params: Any) -> nn.Module:
    """Build a generator; ``params`` may hold extra (e.g. discriminator) keys, which are ignored.

    ``factors`` (the schema's ``(name, values)`` pairs) reaches generators that need value names:
    the layout GAN's particle overlay (which codes mean rain, snow, night)."""
    kwargs = generator_kwargs(family_name, params)
    if kwargs.get("particles"):
        kwargs["factors"] = factors
    return get_family(family_name).generator(list(cardinalities), **kwargs)


def build_discriminator(family_name: str, cardinalities: Sequence[int], **params: Any) -> nn.Module:
    """Build the family's second network (discriminator or encoder) from config keys."""
    fam = get_family(family_name)
    kwargs = {k: params[k] for k in fam.critic_keys if k in params}
    if "d_base_channels" in kwargs:
        kwargs["base_channels"] = kwargs.pop("d_base_channels")
    if "aux_class_weight" in kwargs:  # the module takes a switch, not a loss weight
        kwargs["aux_head"] = kwargs.pop("aux_class_weight") > 0
    return fam.critic(list(cardinalities), **kwargs)


def config_for(family: str, **overrides: Any) -> ImageModelConfig:
    """The family's config dataclass with ``overrides`` (unknown keys raise TypeError)."""
    return get_family(family).config(**overrides)
