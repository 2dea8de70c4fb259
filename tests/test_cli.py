"""The CLI as a user runs it: real config composition, subprocesses, exit codes, nothing written on error."""

from __future__ import annotations

import json
import os

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
    # not a checkpoint at all: named as such (it used to read "IndexError: list index out of range")
    (["job.checkpoint=/etc/passwd"], "/etc/passwd is not a checkpoint: expected a file written by torch.save (a zip archive), found text"),
    # kernel pseudo-filesystems are refused before Ray starts (they used to fail inside the first actor)
    (["output_dir=/proc/aigc-synth-out"], "output_dir /proc/aigc-synth-out is on proc, a kernel pseudo-filesystem"),
])
def test_cli_bad_input_one_line_error_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "out"
    proc = run_cli("generate", f"output_dir={out}", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not out.exists() and not (tmp_path / "outputs").exists()


@pytest.mark.slow  # 33 s with a Ray of its own; tests/test_console.py runs the default job through the CLI by default
def test_cli_generate_with_bundled_model_end_to_end(tmp_path):
    out = tmp_path / "gen"
    proc = run_cli("generate", f"output_dir={out}", "job.num_samples=90", "job.shard_size=45", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 90 and manifest["model"]["resolution"] == 64
    assert (out / "preview.png").is_file()
    # the bundled model is layout-conditioned: every row names its scene and carries its boxes
    import pyarrow.parquet as pq

    table = pq.read_table(out / "parquet")
    assert manifest["model"]["family"] == "layout_gan" and {"scene_id", "boxes"} <= set(table.column_names)
    assert sum(len(b) for b in table.column("boxes").to_pylist()) > 0
    assert "throughput" in proc.stdout and "fog/night" in proc.stdout and str(out) in proc.stdout
    # a healthy job prints no error lines: neither ours nor Ray's C++ core worker's (" E " / core_worker.cc)
    assert "core_worker" not in proc.stderr and not [ln for ln in proc.stderr.splitlines() if " E " in ln[:40] or "ERROR" in ln]
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


@pytest.mark.slow  # 33 s: two CLI runs, each starting its own Ray (the in-process root-cause tests run by default)
def test_a_failing_actor_is_reported_by_its_root_cause(tmp_path):
    """An OSError inside a Ray actor used to end as `RayTaskError(UserCodeException): ray::MapWorker(...)`."""
    import shutil

    out = tmp_path / "gen"
    args = ("generate", f"output_dir={out}", "job.num_samples=20", "job.shard_size=10", "preview=false")
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    (out / "manifest.json").unlink()  # as if the run had died: the rerun resumes into this directory
    shutil.rmtree(out / "parquet")
    shutil.rmtree(out / "png")
    (out / "parquet").write_text("a file where the shard directory belongs")
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 1
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("aigc-synth generate: failed:")]
    assert len(line) == 1 and "FileExistsError: [Errno 17] File exists:" in line[0] and "(raised in a Ray worker)" in line[0]


def test_describe_failure_unwraps_ray_errors():
    import errno

    from aigc_synth.errors import describe_failure, root_cause

    class RayTaskError(Exception):  # the shape of Ray's wrapper: the original under .cause
        def __init__(self, cause):
            super().__init__("ray::MapWorker(...) failed\nTraceback ...")
            self.cause = cause

    disk_full = OSError(errno.ENOSPC, "No space left on device", "/data/parquet/part-00003.parquet")
    assert root_cause(RayTaskError(disk_full)) is disk_full
    assert describe_failure(RayTaskError(disk_full)) == (
        "OSError: [Errno 28] No space left on device: '/data/parquet/part-00003.parquet' (raised in a Ray worker)")

    class UserCodeException(Exception):
        pass

    lost = RayTaskError(UserCodeException("UDF failed"))  # the original did not survive pickling: read the traceback
    lost.args = ("Traceback (most recent call last):\n  ...\nPermissionError: [Errno 13] Permission denied: '/x'\n\n"
                 "The above exception was the direct cause of the following exception:\n\nUserCodeException: UDF failed",)
    assert describe_failure(lost) == "PermissionError: [Errno 13] Permission denied: '/x' (raised in a Ray worker)"
    plain = ValueError("bad")
    assert describe_failure(plain) == "ValueError: bad"


@pytest.mark.slow  # 45 s (a real tmpfs filled, then remounted larger); the preview's disk-full case runs by default
def test_a_full_disk_is_named_and_the_rerun_resumes_exactly(tmp_path, tiny_checkpoint):
    """The issue's own case: a job whose disk fills up. Needs root (a 256 KiB tmpfs); skipped elsewhere."""
    import subprocess

    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        out = mnt / "job"
        args = ("generate", f"output_dir={out}", f"job.checkpoint={tiny_checkpoint}", "job.num_samples=300",
                "job.shard_size=50", "preview=false", "resources.actors=1")
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 1
        line = [ln for ln in proc.stderr.splitlines() if ln.startswith("aigc-synth generate: failed:")]
        assert len(line) == 1 and "[Errno 28]" in line[0] and "No space left on device" in line[0], proc.stderr[-2000:]
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        assert run_cli(*args, cwd=tmp_path).returncode == 0  # resumes what was committed before the disk filled
        clean = tmp_path / "clean"
        assert run_cli(*args[:1], f"output_dir={clean}", *args[2:], cwd=tmp_path).returncode == 0
        assert (out / "manifest.json").read_bytes() == (clean / "manifest.json").read_bytes()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
