"""``aigc-synth export`` reads only what the job wrote: every shard it reads is checked against the manifest
(sha256, as ``verify`` checks it) before anything is written; its summary counts images or scenes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aigc_synth.errors import IntegrityError
from aigc_synth.exporters import export
from aigc_synth.io.reader import verify_output
from aigc_synth.jobs.generate import run_generation
from tests.helpers import compose_generate, run_cli

SHARD_1 = "parquet/part-00001.parquet"


@pytest.fixture(scope="module")
def jobs(ray_session, tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """A finished image job (20 images, 2 shards of 10) and scene job (8 scenes, 2 shards of 4): never modified."""
    root = tmp_path_factory.mktemp("export_jobs")
    run_generation(compose_generate([f"output_dir={root / 'image'}", f"job.checkpoint={tiny_checkpoint}",
                                     "job.num_samples=20", "job.shard_size=10", "preview=false"]), progress=False)
    run_generation(compose_generate(["job=scenes", f"output_dir={root / 'scenes'}", "job.num_samples=8",
                                     "job.shard_size=4", "preview=false"]), progress=False)
    return {"image": root / "image", "scenes": root / "scenes"}


def _tampered(job: Path, tmp_path: Path, column: str) -> Path:
    """A copy of ``job`` whose second shard was rewritten with one row's ``column`` changed (a valid Parquet file)."""
    copy = tmp_path / f"{job.name}-tampered"
    shutil.copytree(job, copy)
    path = copy / SHARD_1
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[0] = next(v for v in ("snow", "fog", "heavy", "light") if v != values[0])
    table = table.set_column(table.column_names.index(column), table.schema.field(column),
                             pa.array(values, type=table.schema.field(column).type))
    pq.write_table(table, path)
    assert verify_output(copy) == [f"{SHARD_1}: sha256 mismatch"]
    return copy


@pytest.mark.parametrize("kind, fmt, column", [("image", "coco", "weather"), ("image", "webdataset", "weather"),
                                               ("scenes", "openscenario", "traffic")])
def test_a_tampered_shard_fails_the_export_naming_it_and_nothing_is_written(jobs, tmp_path, kind, fmt, column):
    if fmt == "openscenario":
        pytest.importorskip("scenariogeneration")
    job = _tampered(jobs[kind], tmp_path, column)
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (out, empty):  # absent stays absent, empty stays empty
        proc = run_cli("export", str(job), "--format", fmt, "--out", str(target))
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("aigc-synth export: error: ") and proc.stdout == "", proc.stderr
        assert f"{SHARD_1}: sha256 mismatch" in lines[0] and str(job) in lines[0]
    assert not out.exists() and list(empty.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_limit_checks_every_shard_it_reads_and_a_missing_shard_is_named(jobs, tmp_path):
    job = _tampered(jobs["image"], tmp_path, "weather")
    assert export(job, "coco", tmp_path / "first10", limit=10).count == 10  # shard 0 only: as the job wrote it
    with pytest.raises(IntegrityError, match=f"{SHARD_1}: sha256 mismatch"):
        export(job, "coco", tmp_path / "first11", limit=11)  # the 11th image is in the tampered shard
    assert not (tmp_path / "first11").exists()
    scenes = _tampered(jobs["scenes"], tmp_path, "traffic")
    (scenes / SHARD_1).unlink()
    with pytest.raises(IntegrityError, match=f"missing shard file {SHARD_1}"):
        export(scenes, "sumo", tmp_path / "sumo")
    assert not (tmp_path / "sumo").exists()


def test_the_summary_counts_what_was_exported_in_its_unit(jobs, tmp_path):
    proc = run_cli("export", str(jobs["image"]), "--format", "coco", "--out", str(tmp_path / "coco"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"exported 20 images as coco → {tmp_path / 'coco'}"
    assert export(jobs["image"], "webdataset", tmp_path / "wds", limit=1).describe() == "1 image"
    pytest.importorskip("scenariogeneration")
    result = export(jobs["scenes"], "openscenario", tmp_path / "osc", limit=5)
    assert (result.count, result.unit, result.describe()) == (5, "scene", "5 scenes") and len(result.files) == 5
