"""The CLI as a user runs it: real config composition, subprocesses, exit codes, nothing written on error."""

from __future__ import annotations

import json

import pytest

from aigc_synth.config import compose
from aigc_synth.errors import UsageError
from aigc_synth.sampling.plan import ConditionPlan
from aigc_synth.schema import DEFAULT_SCHEMA

from tests.helpers import run_cli  # noqa: E402  (used below)


@pytest.mark.parametrize("job", ["balanced", "rare_conditions", "mixture_example"])
def test_job_presets_compose_and_validate(job):
    cfg = compose("generate", [f"job={job}", "job.num_samples=90", "resources.actors=1"])
    assert cfg.job.name == job and cfg.job.num_samples == 90 and cfg.resources.actors == 1
    plan = ConditionPlan(cfg.job.plan.__dict__, DEFAULT_SCHEMA, cfg.job.num_samples, cfg.job.seed)
    assert sum(plan.counts().values()) == 90


def test_balanced_preset_covers_all_45_conditions():
    cfg = compose("generate", [])
    counts = ConditionPlan(cfg.job.plan.__dict__, DEFAULT_SCHEMA, cfg.job.num_samples, cfg.job.seed).counts()
    assert len(counts) == 45 and cfg.job.num_samples == 1000 and cfg.output_dir.startswith("outputs/")


def test_rare_conditions_preset_emphasises_fog_snow_and_night_rain():
    cfg = compose("generate", ["job=rare_conditions"])
    counts = ConditionPlan(cfg.job.plan.__dict__, DEFAULT_SCHEMA, cfg.job.num_samples, cfg.job.seed).counts()
    rare = sum(n for k, n in counts.items() if k.startswith(("fog/", "snow/")) or k.startswith("rain/night"))
    assert rare / cfg.job.num_samples > 0.9


@pytest.mark.parametrize("model", ["cgan", "dcgan_baseline"])
def test_model_presets_compose(model):
    cfg = compose("train", [f"model={model}", "train.steps=1", "model.resolution=32"])
    assert cfg.model.resolution == 32 and cfg.train.steps == 1
    if model == "dcgan_baseline":
        assert (cfg.model.family, cfg.model.loss, cfg.model.lr_g, cfg.model.beta1) == ("dcgan", "bce", 2e-4, 0.5)


@pytest.mark.parametrize("override", ["job.num_sample=3", "resources.actors=two", "job=nonexistent"])
def test_bad_overrides_raise_usage_error(override):
    with pytest.raises(UsageError, match="invalid configuration"):
        compose("generate", [override])


@pytest.mark.parametrize("args, needle", [
    (["job.num_samples=0"], "job.num_samples must be a positive integer"),
    (["+job.plan.factors.weather=[hail]"], "unknown value 'hail' for factor 'weather'; allowed values: ['clear', 'overcast', 'rain', 'fog', 'snow']"),
    (["job.checkpoint=/definitely/missing.pt"], "checkpoint not found: /definitely/missing.pt"),
    (["job.num_sampels=5"], "invalid configuration"),
])
def test_cli_bad_input_one_line_error_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "out"
    proc = run_cli("generate", f"output_dir={out}", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not out.exists() and not (tmp_path / "outputs").exists()


def test_cli_generate_with_bundled_model_end_to_end(tmp_path):
    out = tmp_path / "gen"
    proc = run_cli("generate", f"output_dir={out}", "job.num_samples=90", "job.shard_size=45", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 90 and manifest["model"]["resolution"] == 64
    assert (out / "preview.png").is_file()
    assert "throughput" in proc.stdout and "fog/night" in proc.stdout and str(out) in proc.stdout
    verify = run_cli("verify", str(out))
    assert verify.returncode == 0 and "OK" in verify.stdout


def test_cli_train_then_info(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", f"train.out_dir={out}", "train.steps=2", "train.batch_size=4", "model.resolution=32",
                   "model.base_channels=8", "model.d_base_channels=8", "train.sample_every=1", "train.threads=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "generator.pt").is_file() and (out / "samples" / "step_000002.png").is_file()
    info = run_cli("info", str(out / "generator.pt"))
    assert info.returncode == 0
    assert json.loads(info.stdout)["schema"] == DEFAULT_SCHEMA.to_dict()
