"""Object-store output end to end: a local S3-compatible server (moto, server mode) on 127.0.0.1,
a tiny job writing to ``s3://bucket/run1``, read back through ``pyarrow.fs``.

Ray is started before the AWS variables are set (``s3`` depends on ``ray_session``), so the
actors' processes never inherit them: the job only works because the driver forwards them.
"""

from __future__ import annotations

import io
import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from aigc_synth.io.atomic import TMP_MARKER, open_store, redact
from aigc_synth.io.reader import GeneratedDataset, load_manifest, verify_output
from aigc_synth.io.shards import png_listing_sha256
from aigc_synth.errors import JobSpecError
from aigc_synth.jobs.generate import run_generation
from aigc_synth.jobs.report import format_summary, write_preview
from tests.helpers import compose_generate

pytest.importorskip("moto.server", reason="moto[server] (dev extra) runs the local S3 server")

BUCKET = "bucket"


@pytest.fixture(scope="module")
def s3(ray_session):
    from moto.server import ThreadedMotoServer
    from pyarrow import fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(key, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            # the main job finds the endpoint in the environment, the other tests in the URI query
            mp.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
            client = fs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", allow_bucket_creation=True)
            client.create_dir(BUCKET)
            query = f"endpoint_override={host}:{port}&scheme=http"
            yield SimpleNamespace(fs=client, query=query, uri=lambda prefix: f"s3://{BUCKET}/{prefix}?{query}")
        finally:
            server.stop()


def _cfg(out: str, ckpt: Path, *extra: str):
    return compose_generate([f"output_dir='{out}'", f"job.checkpoint={ckpt}", "job.num_samples=64", "job.shard_size=32",
                             "preview=false", "resources.batch_size=32", *extra])


def _keys(client, prefix: str) -> list[str]:
    from pyarrow import fs

    infos = client.get_file_info(fs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    return sorted(i.path[len(BUCKET) + len(prefix) + 2:] for i in infos if i.type == fs.FileType.File)


def _read(client, prefix: str, rel: str) -> bytes:
    with client.open_input_stream(f"{BUCKET}/{prefix}/{rel}") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def s3_run(s3, tiny_checkpoint):
    manifest = run_generation(_cfg("s3://bucket/run1", tiny_checkpoint), progress=False)
    return manifest, _read(s3.fs, "run1", "manifest.json")


def test_job_on_s3_commits_every_shard_once(s3, s3_run):
    manifest, manifest_bytes = s3_run
    assert json.loads(manifest_bytes) == manifest
    keys = _keys(s3.fs, "run1")
    assert not [k for k in keys if TMP_MARKER in k]
    png = [k for k in keys if k.startswith("png/")]
    assert set(keys) - set(png) == {"job.json", "run.json", "manifest.json", "parquet/part-00000.parquet",
                                    "parquet/part-00001.parquet"}
    assert len(png) == 64
    ids = []
    for shard in manifest["shards"]:
        data = _read(s3.fs, "run1", shard["path"])  # checksums recomputed from the stored objects
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        table = pq.read_table(f"{BUCKET}/run1/{shard['path']}", filesystem=s3.fs)
        assert table.num_rows == shard["rows"]
        ids += table.column("sample_id").to_pylist()
        image = table.column("image").combine_chunks()
        pngs = {rel: _read(s3.fs, "run1", rel) for rel in image.field("path").to_pylist()}
        assert list(pngs.values()) == image.field("bytes").to_pylist()  # PNG objects = Parquet image bytes
        assert png_listing_sha256((rel.rsplit("/", 1)[1], b) for rel, b in pngs.items()) == shard["png_sha256"]
    assert sorted(ids) == list(range(64))  # every sample exactly once
    assert verify_output("s3://bucket/run1") == []
    assert json.loads(_read(s3.fs, "run1", "run.json"))["images_generated"] == 64


def test_readers_and_report_over_s3(s3, s3_run):
    manifest, _ = s3_run
    uri = s3.uri("run1")
    assert load_manifest(uri) == manifest
    fog = GeneratedDataset(uri, conditions={"weather": "fog"})
    assert len(fog) == sum(n for k, n in manifest["counts_per_condition"].items() if k.startswith("fog/")) > 0
    assert fog[0]["image"].shape == (3, 32, 32) and fog[0]["conditions"]["weather"] == "fog"
    # the CLI hands report functions Path(cfg.output_dir), which folds "s3://" into "s3:/"
    assert write_preview(Path(uri), manifest) == "s3://bucket/run1/preview.png"
    preview = _read(s3.fs, "run1", "preview.png")
    assert preview.startswith(b"\x89PNG")
    from PIL import Image

    # 64 samples over 45 conditions: one row each, as many columns as the fullest row (2)
    assert Image.open(io.BytesIO(preview)).size == (2 * 32, len(manifest["counts_per_condition"]) * 32)
    summary = format_summary(Path(uri), manifest)
    assert "output: s3://bucket/run1?" in summary and "preview: s3://bucket/run1/preview.png" in summary


@pytest.mark.slow  # 10-16 s; the default suite keeps under 10 min (run with -m slow)
def test_same_bytes_as_a_local_run(s3_run, tiny_checkpoint, tmp_path):
    _, manifest_bytes = s3_run
    run_generation(_cfg(str(tmp_path / "local"), tiny_checkpoint), progress=False)
    assert (tmp_path / "local" / "manifest.json").read_bytes() == manifest_bytes


def test_rerun_into_finished_s3_output_is_refused(s3, s3_run, tiny_checkpoint):
    before = _keys(s3.fs, "run1")
    with pytest.raises(JobSpecError, match="already holds a finished job"):
        run_generation(_cfg(s3.uri("run1"), tiny_checkpoint), progress=False)
    s3.fs.copy_file(f"{BUCKET}/run1/job.json", f"{BUCKET}/other/job.json")  # an unfinished run of another job
    with pytest.raises(JobSpecError, match="different job spec or model"):
        run_generation(_cfg(s3.uri("other"), tiny_checkpoint, "job.seed=99"), progress=False)
    assert _keys(s3.fs, "run1") == before and _keys(s3.fs, "other") == ["job.json"]


@pytest.mark.slow  # resume is tested locally by default; the object-store commits by the other tests here
def test_interrupted_s3_run_resumes_to_identical_manifest(s3, s3_run, tiny_checkpoint, capsys):
    _, manifest_bytes = s3_run
    for key in _keys(s3.fs, "run1"):
        if key != "preview.png":
            s3.fs.copy_file(f"{BUCKET}/run1/{key}", f"{BUCKET}/resume/{key}")
    # a driver killed mid-job: no manifest, shard 1's Parquet missing and its PNG folder half
    # written, a temporary object left by the killed writer
    s3.fs.delete_file(f"{BUCKET}/resume/manifest.json")
    s3.fs.delete_file(f"{BUCKET}/resume/parquet/part-00001.parquet")
    for key in _keys(s3.fs, "resume/png/part-00001")[:10]:
        s3.fs.delete_file(f"{BUCKET}/resume/png/part-00001/{key}")
    with s3.fs.open_output_stream(f"{BUCKET}/resume/parquet/{TMP_MARKER}0123456789ab-part-00001.parquet") as fh:
        fh.write(b"partial")
    run_generation(_cfg(s3.uri("resume"), tiny_checkpoint), progress=False)
    assert "resuming: 1 of 2 shards already committed, skipped" in capsys.readouterr().out
    assert _read(s3.fs, "resume", "manifest.json") == manifest_bytes
    assert json.loads(_read(s3.fs, "resume", "run.json"))["shards_skipped_on_resume"] == 1
    assert not [k for k in _keys(s3.fs, "resume") if TMP_MARKER in k]
    assert verify_output(s3.uri("resume")) == []


BAD = [
    ("missing bucket", "s3://no-such-bucket/run?{query}", "bucket 'no-such-bucket' does not exist"),
    ("unknown scheme", "nosuchfs://bucket/run", "unknown scheme 'nosuchfs://'"),
    ("unparseable", "s3://bad bucket/run", "is not a valid URI"),
    ("unknown query parameter", "s3://bucket/run?{query}&colour=blue", "Unexpected query parameter in S3 URI: 'colour'"),
    ("no bucket", "s3://?{query}", "names no bucket"),
    ("unreachable endpoint", "s3://bucket/run?endpoint_override=127.0.0.1:1&scheme=http", "cannot reach output location"),
]


@pytest.mark.parametrize("name, uri, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_object_store_output_fails_before_writing(s3, tiny_checkpoint, tmp_path, capsys, monkeypatch, name, uri, needle):
    from aigc_synth.cli import main

    monkeypatch.chdir(tmp_path)
    before = _keys(s3.fs, "")
    code = main(["generate", f"output_dir='{uri.format(query=s3.query)}'", f"job.checkpoint={tiny_checkpoint}",
                 "job.num_samples=10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("aigc-synth generate: error:") and needle in err[0], err
    assert _keys(s3.fs, "") == before  # nothing written to the store...
    assert list(tmp_path.iterdir()) == []  # ...nor locally


def test_locations_resolve_without_a_server(tmp_path):
    assert open_store(str(tmp_path)).root == tmp_path
    assert open_store(f"file://{tmp_path}").root == tmp_path  # file:// URIs are plain local paths
    folded = open_store(Path("s3://b/runs/x?region=eu-west-1"))  # what Path(cfg.output_dir) makes of a URI
    assert folded.remote and folded.base == "b/runs/x" and folded.uri == "s3://b/runs/x?region=eu-west-1"
    assert redact("s3://AKIA:secret@b/p?region=x") == "s3://***@b/p?region=x"


def test_evaluate_reads_an_s3_job_output(s3, s3_run, tmp_path, capsys):
    from aigc_synth.cli import main

    out = tmp_path / "eval"
    uri = s3.uri("run1")
    assert main(["evaluate", f"source='{uri}'", f"out_dir={out}", "kid_subsets=5", "kid_subset_size=20", "max_samples=40"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["source"]["kind"] == "job_output" and result["source"]["n"] == 40
    assert result["source"]["model_id"] == s3_run[0]["model_id"]
    missing = s3.uri("no-such-run")
    assert main(["evaluate", f"source='{missing}'", f"out_dir={tmp_path / 'e2'}"]) == 2
    assert not (tmp_path / "e2").exists()
