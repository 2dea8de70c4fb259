"""``job.image_format`` = png | jpeg | webp: deterministic bytes, right file names, resume, validation.

The job tests run a 40-image jpeg job on the shared local Ray with the tiny 32-px checkpoint;
png output itself is pinned by tests/test_pinned_bytes.py and tests/test_job.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from aigc_synth.errors import JobSpecError
from aigc_synth.io.reader import GeneratedDataset, verify_output
from aigc_synth.io.shards import committed_shard_entry, write_shard
from aigc_synth.jobs.generate import run_generation
from aigc_synth.sampling.base import SampleBatch
from aigc_synth.sampling.sampler import IMAGE_FORMATS, encode_image, encode_png
from tests.helpers import compose_generate, write_shards_in_process

N, SHARD = 40, 10
FORMATS = [("png", 90), ("jpeg", 90), ("jpeg", 75), ("webp", 90), ("webp", 75)]
EXT = {"png": "png", "jpeg": "jpg", "webp": "webp"}
PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def _images(n: int = 8, size: int = 32) -> np.ndarray:
    """Noise plus smooth blocks: both the easy and the hard case for a lossy coder."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    blocks = np.kron(rng.integers(0, 256, (n, size // 8, size // 8, 3), dtype=np.uint8), np.ones((1, 8, 8, 1), np.uint8))
    return np.concatenate([noise, blocks])


def _digest(fmt: str, quality: int) -> str:
    h = hashlib.sha256()
    for img in _images():
        h.update(encode_image(img, fmt, quality))
    return h.hexdigest()


# ------------------------------------------------------------------ the encoder
@pytest.mark.parametrize("fmt, quality", FORMATS)
def test_encode_is_deterministic_and_decodes(fmt, quality):
    for img in _images():
        first, second = encode_image(img, fmt, quality), encode_image(img, fmt, quality)
        assert first == second
        with Image.open(io.BytesIO(first)) as im:
            assert im.format == PIL_FORMAT[fmt] and im.size == (32, 32)
            decoded = np.asarray(im.convert("RGB"))
        if fmt == "png":
            assert np.array_equal(decoded, img)  # lossless


def test_encode_is_deterministic_across_processes():
    """A fresh interpreter (other allocator state, other thread start-up) writes the same bytes."""
    code = ("import json; from tests.test_image_formats import FORMATS, _digest; "
            "print(json.dumps([_digest(f, q) for f, q in FORMATS]))")
    root = Path(__file__).resolve().parents[1]
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120, check=True)
    assert json.loads(child.stdout.strip().splitlines()[-1]) == [_digest(f, q) for f, q in FORMATS]


def test_png_is_todays_encoder_and_bad_format_is_refused():
    img = _images()[0]
    assert encode_image(img, "png", 10) == encode_image(img) == encode_png(img)  # quality never touches PNG
    assert encode_image(img, "jpeg", 90) != encode_image(img, "jpeg", 75)
    with pytest.raises(ValueError, match="png.*jpeg.*webp"):
        encode_image(img, "gif")


@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_encoder_names_files_and_resume_counts_them(tmp_path, fmt):
    """The shard encoder + writer without Ray: extension, Parquet bytes == file bytes, and the resume
    check recognises the committed folder whatever the extension (and only a complete one)."""
    from aigc_synth.sampling.image import ImageEncoder
    from aigc_synth.schema import DEFAULT_SCHEMA

    ids = np.arange(20, 36, dtype=np.int64)
    images = _images()
    columns = {"seed": ids * 7}
    columns.update({name: np.asarray([values[0]] * len(ids), dtype=object) for name, values in DEFAULT_SCHEMA.factors})
    job = {"schema": DEFAULT_SCHEMA.to_dict(), "model_id": "m", "resolution": 32, "image_format": fmt, "image_quality": 80}
    encoded = ImageEncoder(job)(SampleBatch(sample_ids=ids, columns=columns, images=images), 2, ["parquet", "png"])
    assert [name for name, _ in encoded.files] == [f"{i:09d}.{EXT[fmt]}" for i in ids]
    image = encoded.table.column("image").combine_chunks()
    assert image.field("bytes").to_pylist() == [data for _, data in encoded.files]
    assert image.field("path").to_pylist()[0] == f"png/part-00002/000000020.{EXT[fmt]}"
    entry = write_shard(tmp_path, 2, sample_ids=ids, table=encoded.table, files=encoded.files, formats=["parquet", "png"])
    assert committed_shard_entry(tmp_path, 2, ids, ["parquet", "png"]) == entry
    assert committed_shard_entry(tmp_path, 2, ids, ["parquet", "png"], ext=EXT[fmt]) == entry
    other = "webp" if fmt != "webp" else "png"
    assert committed_shard_entry(tmp_path, 2, ids, ["parquet", "png"], ext=other) is None
    (tmp_path / "png" / "part-00002" / f"{ids[-1]:09d}.{EXT[fmt]}").unlink()
    assert committed_shard_entry(tmp_path, 2, ids, ["parquet", "png"]) is None


# ------------------------------------------------------------------ validation
def _cfg(out: Path, ckpt: Path, *extra: str):
    return compose_generate([f"output_dir={out}", f"job.checkpoint={ckpt}", f"job.num_samples={N}", f"job.shard_size={SHARD}",
                             "preview=false", *extra])


@pytest.mark.parametrize("overrides, match", [
    (["job.image_format=gif"], r"job.image_format must be one of \['png', 'jpeg', 'webp'\], got 'gif'"),
    (["job.image_format=jpg"], r"job.image_format must be one of \['png', 'jpeg', 'webp'\], got 'jpg'"),
    (["job.image_format=jpeg", "job.image_quality=0"], r"job.image_quality must be an integer from 1 to 100.*got 0"),
    (["job.image_format=webp", "job.image_quality=101"], r"job.image_quality must be an integer from 1 to 100.*got 101"),
])
def test_bad_format_or_quality_fails_before_writing(tmp_path, tiny_checkpoint, overrides, match):
    out = tmp_path / "out"
    with pytest.raises(JobSpecError, match=match):
        run_generation(_cfg(out, tiny_checkpoint, *overrides), progress=False)
    assert not out.exists()


def test_png_job_spec_and_manifest_record_are_unchanged(tmp_path, tiny_checkpoint):
    """png (the default) adds no key anywhere, so existing png jobs keep fingerprint and manifest bytes."""
    from aigc_synth.jobs.manifest import build_manifest, job_fingerprint
    from aigc_synth.jobs.spec import validate_job

    png = validate_job(_cfg(tmp_path / "a", tiny_checkpoint, "job.image_quality=50"))
    assert png.image_format == "png" and "image_format" not in png.job_spec and "image_quality" not in png.job_spec
    assert set(build_manifest(png, {}, [], None)["determinism"]) == {"compute_batch", "png_compress_level", "latent", "seed"}
    webp = validate_job(_cfg(tmp_path / "b", tiny_checkpoint, "job.image_format=webp", "job.image_quality=75"))
    assert (webp.job_spec["image_format"], webp.job_spec["image_quality"]) == ("webp", 75)
    assert job_fingerprint(webp) != job_fingerprint(png)  # a rerun in another format never resumes into this one
    record = build_manifest(webp, {}, [], None)["determinism"]
    assert record["image_format"] == "webp" and record["image_quality"] == 75
    assert record["webp_settings"] == {"method": 4, "lossless": False} and record["codec"].startswith("libwebp ")


# ------------------------------------------------------------------ a jpeg job on Ray
@pytest.fixture(scope="module")
def jpeg_runs(ray_session, tiny_checkpoint, tmp_path_factory):
    """One Ray job (2 actors, 8 rows per call) and the same job's shards written in this process by one
    worker, 16 rows per call (no manifest: the Ray job's is the one read)."""
    root = tmp_path_factory.mktemp("jpeg_jobs")
    a, b = root / "a", root / "b"
    fmt = ("job.image_format=jpeg", "job.image_quality=85")
    man_a = run_generation(_cfg(a, tiny_checkpoint, *fmt, "resources.actors=2", "resources.batch_size=8"), progress=False)
    write_shards_in_process(_cfg(b, tiny_checkpoint, *fmt, "resources.actors=1", "resources.batch_size=16"))
    return a, man_a, b


def test_jpeg_job_writes_jpg_files_equal_to_parquet_bytes(jpeg_runs):
    a, man, _ = jpeg_runs
    assert verify_output(a) == []
    assert man["job"]["image_format"] == "jpeg" and man["job"]["image_quality"] == 85
    assert man["determinism"]["jpeg_settings"] == {"subsampling": "4:2:0", "progressive": False, "optimize": False}
    table = pq.read_table(a / "parquet", columns=["sample_id", "image"])
    image = table.column("image").combine_chunks()
    blobs, paths = image.field("bytes").to_pylist(), image.field("path").to_pylist()
    assert sorted(table.column("sample_id").to_pylist()) == list(range(N))
    for sid, data, rel in zip(table.column("sample_id").to_pylist(), blobs, paths):
        assert rel.endswith(f"/{sid:09d}.jpg") and rel.startswith("png/part-")  # the folder keeps its name
        assert (a / rel).read_bytes() == data
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"
    files = sorted(p.name for p in (a / "png").rglob("*") if p.is_file())
    assert len(files) == N and all(name.endswith(".jpg") for name in files)
    assert GeneratedDataset(a)[0]["image"].shape == (3, 32, 32)  # the torch reader decodes whatever the format


def test_jpeg_job_reads_back_with_hf_datasets(jpeg_runs):
    datasets = pytest.importorskip("datasets")
    a = jpeg_runs[0]
    hf = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in (a / "parquet").glob("*.parquet")),
                               split="train", cache_dir=str(a.parent / "hf_cache"))
    assert isinstance(hf.features["image"], datasets.Image)
    first = hf[0]["image"]
    assert first.format == "JPEG" and first.size == (32, 32) and first.mode == "RGB"


def test_jpeg_bytes_identical_across_actor_counts(jpeg_runs):
    a, _, b = jpeg_runs
    assert json.loads((a / "run.json").read_text())["resources"]["actors"] == 2
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.relative_to(a).parts[0] in ("parquet", "png"))
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert len(files_b) > N and files_b == files_a
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_b)  # every shard and .jpg file


@pytest.mark.slow  # resume is tested on PNG jobs by default; the JPEG bytes by the other tests here
def test_jpeg_job_resumes_to_identical_output(jpeg_runs, tiny_checkpoint, tmp_path, capsys):
    a = jpeg_runs[0]
    partial = tmp_path / "partial"
    shutil.copytree(a, partial)
    (partial / "manifest.json").unlink()
    (partial / "parquet" / "part-00001.parquet").unlink()  # one shard lost its Parquet file...
    shutil.rmtree(partial / "png" / "part-00003")  # ...another its image folder
    (partial / "parquet" / "part-00003.parquet").unlink()
    cfg = _cfg(partial, tiny_checkpoint, "job.image_format=jpeg", "job.image_quality=85", "resources.actors=1")
    run_generation(cfg, progress=False)
    assert "resuming: 2 of 4 shards already committed, skipped" in capsys.readouterr().out
    assert (partial / "manifest.json").read_bytes() == (a / "manifest.json").read_bytes()
    assert verify_output(partial) == []


def test_other_format_does_not_resume_into_a_jpeg_output(jpeg_runs, tiny_checkpoint, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(jpeg_runs[0], other)
    (other / "manifest.json").unlink()
    with pytest.raises(JobSpecError, match="different job spec or model"):
        run_generation(_cfg(other, tiny_checkpoint, "job.image_format=jpeg", "job.image_quality=90"), progress=False)
