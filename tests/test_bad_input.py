"""Bad input leaves nothing behind, every error names its cause, and a finished job is never failed.

One table of hostile inputs, each through the CLI entry point (in-process, in an empty working
directory): the exit status (2 for a bad file or setting of the user's, 1 for a job output that no
longer matches its manifest), the cause named in the **one and last** stderr line, and a file tree
that did not change — no new directory anywhere, the working directory included.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from aigc_synth.cli import main


def tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` with its size (-1 for directories)."""
    return {str(p.relative_to(root)): (-1 if p.is_dir() else p.stat().st_size) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory, tiny_checkpoint, ray_session) -> Path:
    """A small finished image job (2 shards), copied by the cases that break it."""
    out = tmp_path_factory.mktemp("job") / "out"
    assert main(["generate", f"output_dir={out}", f"job.checkpoint={tiny_checkpoint}", "job.num_samples=8",
                 "job.shard_size=4", "preview=false"]) == 0
    return out


@pytest.fixture(scope="module")
def bdd100k(tmp_path_factory) -> tuple[Path, Path]:
    from aigc_synth.data.bdd100k_fixtures import write_bdd100k_fixture

    return write_bdd100k_fixture(tmp_path_factory.mktemp("bdd"), n=6, seed=0, resolution=32)


def _labels(data: Path, text: str) -> Path:
    (data / "labels.json").write_text(text)
    return data / "labels.json"


def _nan_boxes(data: Path, images: Path) -> Path:
    frames = [{"name": p.name, "attributes": {"weather": "clear", "timeofday": "daytime"},
               "labels": [{"category": "car", "box2d": {"x1": "nan", "y1": 0, "x2": 1, "y2": 1}}]}
              for p in sorted(images.iterdir())]
    return _labels(data, json.dumps(frames))


def _zero_row_scenes(data: Path) -> Path:
    import pyarrow.parquet as pq

    from aigc_synth.scenes.format import scenes_to_table

    (data / "scenes").mkdir()
    pq.write_table(scenes_to_table([]), data / "scenes" / "part-0.parquet")
    return data / "scenes"


def _not_parquet(data: Path) -> Path:
    (data / "fake.parquet").write_text("this is text, not Parquet\n")
    return data / "fake.parquet"


def _truncate_manifest(job: Path) -> None:
    text = (job / "manifest.json").read_text()
    (job / "manifest.json").write_text(text[: len(text) // 2])


def _delete_shard(job: Path) -> None:
    (job / "parquet" / "part-00001.parquet").unlink()


def _tamper_shard(job: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = job / "parquet" / "part-00000.parquet"
    table = pq.read_table(path)
    weather = table.column("weather").to_pylist()
    weather[0] = "snow" if weather[0] != "snow" else "fog"
    pq.write_table(table.set_column(table.schema.get_field_index("weather"), "weather", pa.array(weather)), path)


# (name, argv builder, exit status, regex the one stderr line must match, how to break the job copy)
# argv builders get (data dir, job copy, bdd100k (images, labels), tiny checkpoint)
CASES = [
    ("train: scene data that does not exist", lambda d, j, b, c: ["train", "model=scene_ar", "data.scenes=/nonexistent",
                                                                  "train.steps=1"], 2, r"data\.scenes.*nonexistent", None),
    ("train: scene table with 0 rows", lambda d, j, b, c: ["train", "model=scene_ar", f"data.scenes={_zero_row_scenes(d)}"],
     2, r"holds no scenes.*0 rows", None),
    ("train: labels JSON that is a dict", lambda d, j, b, c: ["train", "data.source=bdd100k", f"data.images={b[0]}",
                                                             f"data.labels={_labels(d, '{}')}", "train.steps=1"],
     2, r"must be a JSON list of frames", None),
    ("train: truncated labels JSON", lambda d, j, b, c: ["train", "data.source=bdd100k", f"data.images={b[0]}",
                                                        f"data.labels={_labels(d, '[{')}", "train.steps=1"],
     2, r"cannot read BDD100K labels .*labels\.json: .*JSONDecodeError", None),
    ("train: labels nested too deeply", lambda d, j, b, c: ["train", "data.source=bdd100k", f"data.images={b[0]}",
                                                           f"data.labels={_labels(d, '[' * 100_000 + ']' * 100_000)}"],
     2, r"cannot read BDD100K labels .*labels\.json: nested too deeply", None),
    ("train: only NaN boxes", lambda d, j, b, c: ["train", "data.source=bdd100k", f"data.images={b[0]}",
                                                 f"data.labels={_nan_boxes(d, b[0])}"],
     2, r"no usable frames .*malformed box2d", None),
    ("generate: job.scenes is a text file named .parquet", lambda d, j, b, c: [
        "generate", f"output_dir={d}/out", f"job.scenes={_not_parquet(d)}"], 2, r"cannot read scene file .*fake\.parquet", None),
    ("generate: job.scenes with 0 rows", lambda d, j, b, c: ["generate", f"output_dir={d}/out", f"job.scenes={_zero_row_scenes(d)}"],
     2, r"job\.scenes: .*holds no scenes.*0 rows", None),
    ("generate: a file that is not a checkpoint", lambda d, j, b, c: ["generate", f"output_dir={d}/out", "job.checkpoint=/etc/passwd"],
     2, r"/etc/passwd is not a checkpoint", None),
    ("generate: output on a pseudo-filesystem", lambda d, j, b, c: ["generate", "output_dir=/proc/x", f"job.checkpoint={c}"],
     2, r"/proc", None),
    ("generate: unknown key", lambda d, j, b, c: ["generate", f"output_dir={d}/out", "job.num_sample=5"], 2, r"num_sample", None),
    ("verify: truncated manifest", lambda d, j, b, c: ["verify", str(j)], 2, r"cannot read manifest .*manifest\.json", _truncate_manifest),
    ("export: truncated manifest", lambda d, j, b, c: ["export", str(j), "--format", "coco", "--out", f"{d}/coco"],
     2, r"cannot read manifest .*manifest\.json", _truncate_manifest),
    ("export: not a job output", lambda d, j, b, c: ["export", str(d), "--format", "coco", "--out", f"{d}/coco"],
     2, r"no manifest\.json in .*not a finished aigc_synth job", None),
    ("export: a deleted Parquet shard", lambda d, j, b, c: ["export", str(j), "--format", "coco", "--out", f"{d}/coco"],
     1, r"missing shard file parquet/part-00001\.parquet", _delete_shard),
    ("export: an edited Parquet shard", lambda d, j, b, c: ["export", str(j), "--format", "webdataset", "--out", f"{d}/wds"],
     1, r"part-00000\.parquet: sha256 mismatch", _tamper_shard),
    ("export: --out on a pseudo-filesystem", lambda d, j, b, c: ["export", str(j), "--format", "coco", "--out", "/proc/x"],
     2, r"--out /proc/x", None),
]


@pytest.mark.parametrize("name, argv, status, cause, breaks", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_last_line_and_changes_nothing(tmp_path, monkeypatch, capsys, finished_job, bdd100k,
                                                        tiny_checkpoint, name, argv, status, cause, breaks):
    import re

    data, work = tmp_path / "data", tmp_path / "work"
    data.mkdir()
    work.mkdir()
    job = tmp_path / "job"
    shutil.copytree(finished_job, job)
    if breaks:
        breaks(job)
    args = argv(data, job, bdd100k, tiny_checkpoint)
    before = tree(tmp_path)
    monkeypatch.chdir(work)
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == status, (err, name)
    assert err and re.search(cause, err[-1]), err
    assert err[-1].startswith(f"aigc-synth {args[0]}: error:"), err
    assert tree(tmp_path) == before, f"{name}: the file tree changed"


def test_disk_full_at_the_preview_is_a_warning_not_a_failed_job(tmp_path, monkeypatch, capsys, tiny_checkpoint, ray_session):
    """The manifest is the commit point: a preview that cannot be written after it is a warning (exit 0)
    with the command that writes it; the job verifies, a rerun is refused as finished, and
    ``aigc-synth preview`` then writes the picture."""
    from aigc_synth.jobs import report

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "preview.png"))

    out = tmp_path / "out"
    argv = ["generate", f"output_dir={out}", f"job.checkpoint={tiny_checkpoint}", "job.num_samples=4"]
    with monkeypatch.context() as m:
        m.setattr(report, "write_preview", disk_full)
        assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert "warning: the job is finished" in err[-1] and "No space left on device" in err[-1]
    assert f"aigc-synth preview {out}" in err[-1]
    assert (out / "manifest.json").is_file() and not (out / "preview.png").exists()
    assert main(["verify", str(out)]) == 0
    assert main(argv) == 2 and "already holds a finished job" in capsys.readouterr().err
    assert main(["preview", str(out)]) == 0 and (out / "preview.png").is_file()


@pytest.mark.slow  # 10-16 s; the default suite keeps under 10 min (run with -m slow)
def test_the_manifest_is_the_same_from_two_checkouts(tmp_path, monkeypatch, tiny_checkpoint, ray_session):
    """The same job run from two directories, each with its own copy of the model, writes the same
    manifest bytes (no machine-specific path in it); run.json says where the model was read from."""
    manifests = []
    for name in ("clone_a", "clone_b"):
        clone = tmp_path / name
        clone.mkdir()
        shutil.copy(tiny_checkpoint, clone / "model.pt")
        monkeypatch.chdir(clone)
        assert main(["generate", "output_dir=out", "job.checkpoint=model.pt", "job.num_samples=4", "preview=false"]) == 0
        manifests.append((clone / "out" / "manifest.json").read_bytes())
        run = json.loads((clone / "out" / "run.json").read_text())
        assert run["sources"]["checkpoint"] == str(clone / "model.pt")
    assert manifests[0] == manifests[1]
    assert str(tmp_path).encode() not in manifests[0]
