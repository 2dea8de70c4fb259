"""One source of defaults: composing any ``conf/`` YAML with no overrides gives exactly the
dataclass defaults (the YAML only chooses group options and documents keys)."""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest

from aigc_synth.config import EvaluateRoot, GenerateRoot, JobConfig, ServeRoot, TrainConfig, compose

from aigc_synth.models.configs import (
    CGANConfig,
    CVAEConfig,
    DCGANConfig,
    SceneARConfig,
    SceneMarginalConfig,
    SceneRandomConfig,
)

#: Defaults that hold an interpolation (``${now:...}``): compared before resolution.
TIMESTAMPED = {"output_dir", "out_dir"}


def _without_timestamps(d: dict) -> dict:
    return {k: (_without_timestamps(v) if isinstance(v, dict) else v) for k, v in d.items() if k not in TIMESTAMPED}


@pytest.mark.parametrize("name, root", [("generate", GenerateRoot), ("serve", ServeRoot), ("evaluate", EvaluateRoot)])
def test_top_level_configs_equal_the_dataclass_defaults(name, root):
    assert _without_timestamps(asdict(compose(name, []))) == _without_timestamps(asdict(root()))


def test_train_config_equals_the_dataclass_defaults():
    cfg = compose("train", [])
    assert _without_timestamps(asdict(cfg.train)) == _without_timestamps(asdict(TrainConfig()))
    assert cfg.model == CGANConfig() and type(cfg.model) is CGANConfig
    assert cfg.train.out_dir.startswith("runs/cgan-")  # the interpolation resolved against the chosen family


@pytest.mark.parametrize("preset, config", [("cgan", CGANConfig), ("dcgan_baseline", DCGANConfig), ("cvae", CVAEConfig),
                                            ("scene_ar", SceneARConfig), ("scene_marginal", SceneMarginalConfig),
                                            ("scene_random", SceneRandomConfig)])
def test_model_presets_are_their_family_dataclass(preset, config):
    model = compose("train", [f"model={preset}"]).model
    assert type(model) is config and model == config()


def test_balanced_job_preset_is_the_job_default():
    assert compose("generate", ["job=balanced"]).job == JobConfig()


@pytest.mark.parametrize("preset", ["mixture_example", "rare_conditions", "scenes", "scenes_dense"])
def test_other_job_presets_only_set_what_differs(preset):
    from pathlib import Path

    import yaml

    from aigc_synth.config import CONF_DIR

    text = yaml.safe_load((Path(CONF_DIR) / "job" / f"{preset}.yaml").read_text())
    defaults = asdict(JobConfig())
    restated = [k for k, v in text.items() if k != "defaults" and defaults.get(k) == v]
    assert restated == [], f"{preset}.yaml restates defaults: {restated}"


def test_family_configs_hold_only_their_own_keys():
    names = lambda c: {f.name for f in fields(c)}  # noqa: E731
    assert "aux_class_weight" in names(CGANConfig) and "aux_class_weight" not in names(DCGANConfig) | names(CVAEConfig)
    assert "kl_weight" in names(CVAEConfig) and "kl_weight" not in names(CGANConfig) | names(DCGANConfig)


@pytest.mark.parametrize("preset, family", [("cgan", "cgan"), ("dcgan_baseline", "dcgan"), ("cvae", "cvae")])
def test_every_model_preset_trains_from_the_real_config(tmp_path, tiny_train_config, preset, family):
    """What the CLI composes is what trains: each preset, tiny overrides, two steps, an export."""
    from aigc_synth.models.exported import load_generator
    from aigc_synth.training.trainer import train

    overrides = [f"model={preset}"] + (["model.embed_dim=16"] if family == "cgan" else [])
    cfg = tiny_train_config(tmp_path, *overrides)
    gen = load_generator(train(cfg.train, cfg.model, cfg.data, progress=False))
    assert gen.family == family and gen.resolution == 32
