"""Exported image generators (``format = aigc_synth.generator/v1``): write them, rebuild them.

An exported generator holds the EMA generator weights, the model family and its keyword arguments,
and the condition schema it was trained on; the family registry (:mod:`aigc_synth.models.registry`)
turns them back into a module, so no pickled code is ever needed (files are read through
:func:`aigc_synth.io.checkpoint.load_checkpoint`). Its sha256 is the ``model_id`` written into
every generated row.

Retired options. A model option that was measured as no gain is removed from the code, but
checkpoints written while it existed still store it in their ``model_config``
(:func:`current_model_config`): where it was off (``False``, ``0``, ``None``) the model never used
it, so the key is dropped and the checkpoint loads as before; where it was on, the checkpoint needs
code that no longer exists and is refused with one line naming the option. Weights that the rebuilt
model has no place for are refused too, never silently ignored.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from aigc_synth.errors import CheckpointError, first_line
from aigc_synth.io.atomic import sha256_file
from aigc_synth.io.checkpoint import load_checkpoint, load_checkpoint_bytes, require_format, save_checkpoint
from aigc_synth.models.registry import build_generator, generator_kwargs, get_family
from aigc_synth.schema import ConditionSchema, SchemaError

GENERATOR_FORMAT = "aigc_synth.generator/v1"
#: The small default generator shipped inside the package (``job.checkpoint=null`` / ``default``).
BUNDLED_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "default_generator.pt"
#: Where the options removed from the code are recorded (what they were, what they measured).
RETIRED_OPTIONS_RECORD = "docs/experiments.md"


#: The bundled image generators by name (``job.checkpoint=NAME``, ``serve.checkpoint``, ``evaluate
#: source=NAME``, ``aigc-synth info NAME``); docs/models.md has their model cards.
BUNDLED_GENERATORS = {"default": BUNDLED_CHECKPOINT, "bundled": BUNDLED_CHECKPOINT,
                      "diffusion": BUNDLED_CHECKPOINT.parent / "layout_diffusion.pt",
                      "cgan": BUNDLED_CHECKPOINT.parent / "cgan_generator.pt"}


def is_bundled_name(checkpoint: Any) -> bool:
    """Whether ``checkpoint`` names a bundled generator (None / "" = the default) rather than a path."""
    return checkpoint in (None, "") or (isinstance(checkpoint, str) and checkpoint in BUNDLED_GENERATORS)


def resolve_checkpoint_path(checkpoint: str | os.PathLike | None) -> Path:
    """``None`` / ``""`` / a name of :data:`BUNDLED_GENERATORS` → that bundled generator; anything else a path."""
    if is_bundled_name(checkpoint):
        return BUNDLED_GENERATORS[checkpoint or "default"]
    return Path(checkpoint).expanduser()


def export_generator(path: str | os.PathLike, *, family: str, model_params: dict[str, Any],
                     schema: ConditionSchema, generator: nn.Module, meta: dict[str, Any] | None = None) -> str:
    """Write an exported generator atomically; return its sha256 (the model id)."""
    state = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    save_checkpoint(
        {
            "format": GENERATOR_FORMAT,
            "family": family,
            "model_config": generator_kwargs(family, model_params),
            "schema": schema.to_dict(),
            "state_dict": state,
            "meta": meta or {},
        },
        path,
    )
    return sha256_file(path)


@dataclass
class LoadedGenerator:
    """An exported generator, rebuilt and in eval mode."""

    module: nn.Module
    family: str
    model_config: dict[str, Any]
    schema: ConditionSchema
    model_id: str
    path: str
    meta: dict[str, Any]

    @property
    def resolution(self) -> int:
        return int(self.module.resolution)

    @property
    def z_dim(self) -> int:
        return int(self.module.z_dim)


def read_generator_header(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate an exported generator's contents (no module is built)."""
    return _check_generator(load_checkpoint(path), str(path))


def _check_generator(ckpt: dict[str, Any], path: str) -> dict[str, Any]:
    require_format(ckpt, path, GENERATOR_FORMAT, "exported generator", "`aigc-synth train` writes one as generator.pt",
                   keys=("family", "model_config", "schema", "state_dict"))
    try:
        ConditionSchema.from_dict(ckpt["schema"])
    except SchemaError as exc:
        raise CheckpointError(f"exported generator {path} has an invalid schema: {exc}") from None
    return ckpt


#: A retired option's stored value that means "what the network does without it": PyTorch's own
#: conv padding (some layout checkpoints record it explicitly).
NEUTRAL_STRINGS = ("zeros",)


def _is_off(value: Any) -> bool:
    """``False``, ``0`` (``0.0``), ``None`` or a neutral string: an option that changed nothing."""
    return value is None or value in NEUTRAL_STRINGS or (isinstance(value, (bool, int, float)) and value == 0)


def current_model_config(family: str, model_config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``model_config`` (an exported generator's or a training state's) with the keys that the
    family's config and generator no longer know dropped, when their value is an off switch.

    An unknown key with any other value is an option the checkpoint was trained *with* that this
    version no longer has (see the module docstring): :class:`CheckpointError` naming it."""
    try:
        fam = get_family(family)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    known = {"family", *fam.generator_keys, *fam.critic_keys, *(f.name for f in fields(fam.config))}
    out = {}
    for key, value in model_config.items():
        if key in known:
            out[key] = value
        elif not _is_off(value):
            raise CheckpointError(f"{source} was trained with model.{key}={value!r}, an option of the {family} family that "
                                  f"was retired (see {RETIRED_OPTIONS_RECORD}); this version cannot rebuild that model")
    return out


def _listed(keys: list[str], limit: int = 4) -> str:
    return ", ".join(keys[:limit]) + (f", … ({len(keys)} in all)" if len(keys) > limit else "")


def load_module_weights(module: nn.Module, state_dict: Mapping[str, Any], source: str) -> None:
    """``module.load_state_dict(state_dict)``, every mismatch a one-line :class:`CheckpointError`:
    weights the module has no place for (e.g. a retired option's layer) are refused, not ignored."""
    own = module.state_dict()
    unexpected = [k for k in state_dict if k not in own]
    if unexpected:
        raise CheckpointError(f"{source} does not match its model config: it holds weights of layers this model does not "
                              f"have ({_listed(unexpected)}); a retired option's layers? (see {RETIRED_OPTIONS_RECORD})")
    missing = [k for k in own if k not in state_dict]
    if missing:
        raise CheckpointError(f"{source} does not match its model config: it lacks weights ({_listed(missing)})")
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as exc:  # shapes: torch lists them on the lines after its first
        raise CheckpointError(f"{source} does not match its model config: {' '.join(str(exc).split())[:300]}") from None


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedGenerator:
    """Rebuild an exported generator from its checkpoint (safe load) and move it to ``device``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return load_generator_from_bytes(path.read_bytes(), source=str(path), device=device)


def load_generator_from_bytes(data: bytes, source: str = "<bytes>", device: str | torch.device = "cpu") -> LoadedGenerator:
    """Rebuild a generator from checkpoint bytes (read once: hashed for the model id, then loaded).

    Used for files and for the bytes a job ships to its actors through Ray's object store.
    """
    ckpt = _check_generator(load_checkpoint_bytes(data, label=source), source)
    schema = ConditionSchema.from_dict(ckpt["schema"])
    model_config = current_model_config(ckpt["family"], ckpt["model_config"], f"exported generator {source}")
    try:
        module = build_generator(ckpt["family"], schema.cardinalities, factors=schema.factors, **model_config)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"exported generator {source} does not match its model config: {first_line(exc, 200)}") from None
    load_module_weights(module, ckpt["state_dict"], f"exported generator {source}")
    module.eval().requires_grad_(False).to(device)
    return LoadedGenerator(module=module, family=ckpt["family"], model_config=model_config, schema=schema,
                           model_id=hashlib.sha256(data).hexdigest(), path=source, meta=dict(ckpt.get("meta", {})))
