"""Which training loop ``aigc-synth train`` runs for ``model.family``: the image loop
(:mod:`aigc_synth.training.trainer`) for the image families of :mod:`aigc_synth.models.registry`,
the scene loop (:mod:`aigc_synth.training.scene_trainer`) for the scene families."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from aigc_synth.errors import UsageError
from aigc_synth.models.registry import FAMILIES
from aigc_synth.training.scene_trainer import SCENE_FITTERS, train_scene_model


def trainer_for(family: str) -> Callable[[Any, Any, Any], Path]:
    """``train(train_cfg, model_cfg, data_cfg) → exported generator path`` for ``family``."""
    if family in SCENE_FITTERS:
        return train_scene_model
    if family in FAMILIES:
        from aigc_synth.training.trainer import train

        return train
    raise UsageError(f"unknown model family {family!r}; available: {sorted([*FAMILIES, *SCENE_FITTERS])}")
