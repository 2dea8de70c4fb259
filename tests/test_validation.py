"""Bad input: each case fails before any work with a one-line error naming the problem, a non-zero
exit status, and nothing written. Most run in-process (validation needs no Ray); a few go through
the CLI as a user would."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from aigc_synth.errors import JobSpecError
from aigc_synth.jobs.spec import validate_job
from tests.helpers import compose_generate, make_tiny_checkpoint
from tests.helpers import run_cli


def _validate(out: Path, ckpt: Path, *overrides: str):
    return validate_job(compose_generate([f"output_dir={out}", f"job.checkpoint={ckpt}", "job.num_samples=100", *overrides]))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


CASES = [
    ("unknown factor", ["+job.plan.factors.season=[winter]"], "unknown factor 'season' in plan; allowed factors"),
    ("unknown value", ["+job.plan.factors.weather=[hail]"], "unknown value 'hail' for factor 'weather'; allowed values"),
    ("probabilities not summing to 1", ["job.plan.kind=mixture", "+job.plan.probs.weather={fog: 0.5, snow: 0.2}"], "sum to 0.7, not 1"),
    ("negative probability", ["job.plan.kind=mixture", "+job.plan.probs.weather={fog: 1.5, snow: -0.5}"], "negative"),
    ("num_samples zero", ["job.num_samples=0"], "job.num_samples must be a positive integer, got 0"),
    ("num_samples negative", ["job.num_samples=-3"], "job.num_samples must be a positive integer, got -3"),
    ("num_samples above limit", ["job.num_samples=5000", "job.max_samples=1000"], "exceeds job.max_samples=1000"),
    ("shard_size zero", ["job.shard_size=0"], "job.shard_size must be a positive integer"),
    ("empty grid", ["+job.plan.factors.weather=[]"], "empty grid: factor 'weather' has no values"),
    ("batch size zero", ["resources.batch_size=0"], "resources.batch_size must be a positive integer"),
    ("negative GPUs", ["resources.num_gpus=-1"], "resources.num_gpus must be >= 0"),
    ("unknown format", ["job.formats=[parquet,tiff]"], "job.formats must be a non-empty subset"),
    ("unsupported resolution", ["job.resolution=128"], "job.resolution=128 is not supported by the checkpoint, which generates 32x32"),
    ("schema mismatch", ["+job.schema.weather=[clear,fog]"], "condition schema mismatch"),
    ("unknown plan kind", ["job.plan.kind=cube"], "unknown plan kind 'cube'"),
]


@pytest.mark.parametrize("name, overrides, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_spec_through_cli(tmp_path, tiny_checkpoint, capsys, monkeypatch, name, overrides, needle):
    """The CLI entry point in-process: exit status 2, one stderr line naming the problem, no files."""
    from aigc_synth.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code = main(["generate", f"output_dir={out}", f"job.checkpoint={tiny_checkpoint}", "job.num_samples=100", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("aigc-synth generate: error:") and needle in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written anywhere (cwd included)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(JobSpecError, match="checkpoint not found"):
        _validate(tmp_path / "out", tmp_path / "missing.pt")
    assert not (tmp_path / "out").exists()


def test_truncated_checkpoint(tmp_path, tiny_checkpoint):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_checkpoint.read_bytes()[:4096])
    with pytest.raises(JobSpecError, match="cannot read checkpoint"):
        _validate(tmp_path / "out", cut)
    assert not (tmp_path / "out").exists()


def test_corrupt_checkpoint_weights(tmp_path, tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["state_dict"].pop(next(iter(ckpt["state_dict"])))
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(JobSpecError, match="does not match its model config"):
        _validate(tmp_path / "out", bad)


def test_pickled_code_checkpoint_never_runs(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "aigc_synth.generator/v1", "x": _Payload(str(marker))}, evil)
    with pytest.raises(JobSpecError, match="refusing to load"):
        _validate(tmp_path / "out", evil)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(JobSpecError, match="refusing to load .*not a plain-tensor checkpoint"):
        _validate(tmp_path / "out", raw)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_other_schema_with_default_plan_values(tmp_path):
    from aigc_synth.schema import ConditionSchema

    other = make_tiny_checkpoint(tmp_path / "o.pt", schema=ConditionSchema.from_dict({"weather": ["clear", "fog"]}))
    with pytest.raises(JobSpecError, match="unknown factor 'time_of_day'"):
        _validate(tmp_path / "out", other, "+job.plan.factors.time_of_day=[night]")


def test_unwritable_output_dir(tmp_path, tiny_checkpoint):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(JobSpecError, match="not writable"):
        _validate(blocker / "out", tiny_checkpoint)
    with pytest.raises(JobSpecError, match="exists and is not a directory"):
        _validate(blocker, tiny_checkpoint)
    assert blocker.read_text() == "x"


def test_non_empty_foreign_output_dir(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(JobSpecError, match="is not empty and holds no aigc_synth output"):
        _validate(out, tiny_checkpoint)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_unreachable_ray_address_via_cli(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("generate", f"output_dir={out}", "job.num_samples=10", "ray.address=127.0.0.1:1", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Ray cluster at 127.0.0.1:1" in lines[0]
    assert not out.exists()
