"""End-to-end generation jobs on the shared local Ray (2 CPUs), with a tiny 32-px checkpoint."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from aigc_synth.config import GenerateRoot
from aigc_synth.io.atomic import TMP_MARKER
from aigc_synth.io.reader import GeneratedDataset, verify_output
from aigc_synth.errors import JobSpecError
from aigc_synth.jobs.cluster import plan_pool
from aigc_synth.jobs.generate import run_generation
from tests.helpers import compose_generate


def _cfg(out: Path, ckpt: Path, *extra: str) -> GenerateRoot:
    return compose_generate([f"output_dir={out}", f"job.checkpoint={ckpt}", "job.num_samples=200", "job.shard_size=50",
                             "preview=false", *extra])


def _images_by_id(out: Path) -> dict[int, bytes]:
    table = pq.read_table(out / "parquet")
    ids = table.column("sample_id").to_pylist()
    data = table.column("image").combine_chunks().field("bytes").to_pylist()
    return dict(zip(ids, data))


@pytest.fixture(scope="module")
def two_runs(ray_session, tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    a, b = root / "a", root / "b"
    man_a = run_generation(_cfg(a, tiny_checkpoint, "resources.actors=1", "resources.batch_size=16"), progress=False)
    man_b = run_generation(_cfg(b, tiny_checkpoint, "resources.actors=2", "resources.batch_size=64"), progress=False)
    return a, man_a, b, man_b


def test_bytes_identical_across_actor_counts_and_batch_sizes(two_runs):
    a, man_a, b, man_b = two_runs
    run_a, run_b = (json.loads((d / "run.json").read_text()) for d in (a, b))
    assert run_a["resources"]["actors"] == 1 and run_b["resources"]["actors"] == 2
    # the manifest is a pure function of the job: same bytes whatever the actor count or batch size
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    img_a, img_b = _images_by_id(a), _images_by_id(b)
    assert sorted(img_a) == list(range(200))
    assert img_a == img_b
    assert [s["sha256"] for s in man_a["shards"]] == [s["sha256"] for s in man_b["shards"]]
    assert [s["png_sha256"] for s in man_a["shards"]] == [s["png_sha256"] for s in man_b["shards"]]


def test_manifest_integrity_and_counts(two_runs):
    a, man, _, _ = two_runs
    assert verify_output(a) == []
    on_disk = json.loads((a / "manifest.json").read_text())
    assert on_disk["num_samples"] == 200 and len(on_disk["shards"]) == 4
    assert on_disk["schema"]["weather"][3] == "fog" and len(on_disk["model_id"]) == 64
    for key in ("ray", "torch", "pyarrow", "aigc_synth"):
        assert key in on_disk["versions"]
    assert "timings" not in on_disk and "resources" not in on_disk
    run = json.loads((a / "run.json").read_text())
    assert {"generate_s", "ray_start_s", "total_s", "images_per_s"} <= set(run["timings"])
    table = pq.read_table(a / "parquet")
    written = Counter("/".join(r) for r in zip(*(table.column(n).to_pylist() for n in ("weather", "time_of_day", "traffic"))))
    assert written == Counter(on_disk["counts_per_condition"])
    assert sum(on_disk["counts_per_condition"].values()) == 200
    for shard in on_disk["shards"]:
        assert (a / shard["png_dir"]).is_dir() and len(list((a / shard["png_dir"]).iterdir())) == shard["rows"]
    assert not [p for p in a.rglob(f"{TMP_MARKER}*")]
    assert set(table.column("model_id").to_pylist()) == {on_disk["model_id"]}


def test_verify_detects_tampering(two_runs, tmp_path):
    import shutil

    a = two_runs[0]
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    shard = json.loads((copy / "manifest.json").read_text())["shards"][1]
    (copy / shard["path"]).write_bytes(b"garbage")
    problems = verify_output(copy)
    assert any("sha256 mismatch" in p for p in problems)


def test_png_files_equal_parquet_bytes(two_runs):
    a = two_runs[0]
    images = _images_by_id(a)
    table = pq.read_table(a / "parquet", columns=["sample_id", "image"])
    paths = table.column("image").combine_chunks().field("path").to_pylist()
    for sid, rel in list(zip(table.column("sample_id").to_pylist(), paths))[:20]:
        assert (a / rel).read_bytes() == images[sid]


def test_read_back_with_ray_data_and_hf_datasets(two_runs, ray_session):
    import ray

    a = two_runs[0]
    ds = ray.data.read_parquet(str(a / "parquet"))
    assert ds.count() == 200
    assert set(ds.schema().names) >= {"sample_id", "seed", "weather", "time_of_day", "traffic", "image", "width", "height", "model_id"}
    datasets = pytest.importorskip("datasets")
    hf = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in (a / "parquet").glob("*.parquet")),
                               split="train", cache_dir=str(a.parent / "hf_cache"))
    assert isinstance(hf.features["image"], datasets.Image)
    first = hf[0]["image"]
    assert first.size == (32, 32) and first.mode == "RGB"


def test_torch_reader_with_condition_filter(two_runs):
    a, man, _, _ = two_runs
    fog = GeneratedDataset(a, conditions={"weather": "fog", "time_of_day": ["night", "dusk"]})
    expected = sum(n for k, n in man["counts_per_condition"].items() if k.startswith("fog/") and k.split("/")[1] in ("night", "dusk"))
    assert len(fog) == expected > 0
    item = fog[0]
    assert item["image"].shape == (3, 32, 32) and item["conditions"]["weather"] == "fog"
    assert len(GeneratedDataset(a)) == 200
    with pytest.raises(ValueError, match="allowed values"):
        GeneratedDataset(a, conditions={"weather": "hail"})


def test_rerun_into_finished_output_is_refused(two_runs, tiny_checkpoint):
    a = two_runs[0]
    before = sorted(p.name for p in a.rglob("*"))
    with pytest.raises(JobSpecError, match="already holds a finished job"):
        run_generation(_cfg(a, tiny_checkpoint), progress=False)
    assert sorted(p.name for p in a.rglob("*")) == before


# ------------------------------------------------------------------ bad input: nothing written
@pytest.mark.parametrize("overrides, match", [
    (["job.plan.kind=grid", "+job.plan.factors.weather=[hail]"], r"unknown value 'hail' for factor 'weather'; allowed values"),
    (["job.num_samples=0"], "num_samples must be a positive integer"),
    (["job.num_samples=-5"], "num_samples must be a positive integer"),
    (["job.shard_size=0"], "shard_size must be a positive integer or 'auto'"),
    (["job.shard_size=big"], "shard_size must be a positive integer or 'auto', got big"),
    (["resources.batch_size=0"], "batch_size must be a positive integer"),
    (["job.num_samples=1000", "job.max_samples=100"], "exceeds job.max_samples"),
])
def test_bad_job_spec_fails_before_writing(tmp_path, tiny_checkpoint, overrides, match):
    out = tmp_path / "out"
    cfg = _cfg(out, tiny_checkpoint, *overrides)
    with pytest.raises(JobSpecError, match=match):
        run_generation(cfg, progress=False)
    assert not out.exists()


def test_missing_checkpoint_fails_before_writing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(JobSpecError, match="checkpoint not found"):
        run_generation(_cfg(out, tmp_path / "nope.pt"), progress=False)
    assert not out.exists()


def test_gpu_request_on_cpu_cluster_fails_fast(ray_session, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    t0 = time.time()
    with pytest.raises(JobSpecError, match="has no GPUs"):
        run_generation(_cfg(out, tiny_checkpoint, "resources.num_gpus=1"), progress=False)
    assert time.time() - t0 < 30
    assert not out.exists()


def test_pool_planning_leaves_room_for_ray_data_tasks():
    from aigc_synth.config import ResourcesConfig

    plan = plan_pool(ResourcesConfig(), cluster_cpus=2, cluster_gpus=0)
    assert plan.actors == 2 and plan.actors * plan.cpus_per_actor <= 1.5 and plan.torch_threads == 1
    plan = plan_pool(ResourcesConfig(actors=1), cluster_cpus=2, cluster_gpus=0)
    assert plan.cpus_per_actor == 1.5 and plan.torch_threads == 2
    with pytest.raises(JobSpecError, match="cannot fit"):
        plan_pool(ResourcesConfig(actors=2, cpus_per_actor=1.0), cluster_cpus=2, cluster_gpus=0)
    gpu = plan_pool(ResourcesConfig(num_gpus=1), cluster_cpus=8, cluster_gpus=4)
    assert gpu.actors == 4 and gpu.gpus_per_actor == 1
    with pytest.raises(JobSpecError, match="need 3 GPUs"):
        plan_pool(ResourcesConfig(num_gpus=1.5, actors=2), cluster_cpus=8, cluster_gpus=2)


def test_encode_pool_takes_the_cpus_the_generator_pool_leaves():
    """The separate encode stage is a fixed actor pool sized from what the generator pool leaves."""
    from aigc_synth.config import ResourcesConfig
    from aigc_synth.jobs.cluster import encode_pool

    # a simulated 4-node cluster: 16 GPU actors x 0.125 CPU on 4 CPUs leave 2 CPUs = 4 encoders x 0.5
    res = ResourcesConfig(num_gpus=1, cpus_per_actor=0.125)
    assert encode_pool(res, plan_pool(res, cluster_cpus=4, cluster_gpus=16)) == (0.5, 4)
    # a big GPU node: capped at 4 encoders per generator actor (each encoder is a process)
    res = ResourcesConfig(num_gpus=1, cpus_per_actor=1.0)
    assert encode_pool(res, plan_pool(res, cluster_cpus=64, cluster_gpus=2)) == (0.5, 8)
    # this machine, png_stage on CPUs: the reserve holds one encoder
    res = ResourcesConfig(actors=1)
    assert encode_pool(res, plan_pool(res, cluster_cpus=2, cluster_gpus=0)) == (0.5, 1)
    res = ResourcesConfig(actors=1, encode_actors=3)
    with pytest.raises(JobSpecError, match="encode_actors=3"):
        encode_pool(res, plan_pool(res, cluster_cpus=2, cluster_gpus=0))


def test_interrupted_run_resumes_to_identical_output(two_runs, tiny_checkpoint, tmp_path, capsys):
    import shutil

    a, man_a, _, _ = two_runs
    partial = tmp_path / "partial"
    shutil.copytree(a, partial)
    # simulate a driver killed after two shards: no manifest, shard 2 half-written, shard 3 missing
    (partial / "manifest.json").unlink()
    (partial / "parquet" / "part-00002.parquet").unlink()
    (partial / "parquet" / ".tmp-0123456789ab-part-00002.parquet").write_bytes(b"partial")
    shutil.rmtree(partial / "png" / "part-00003")
    (partial / "parquet" / "part-00003.parquet").unlink()
    cfg = _cfg(partial, tiny_checkpoint, "resources.actors=1", "resources.batch_size=16")
    manifest = run_generation(cfg, progress=False)
    assert "resuming: 2 of 4 shards already committed, skipped" in capsys.readouterr().out
    assert json.loads((partial / "run.json").read_text())["shards_skipped_on_resume"] == 2
    assert manifest["shards"] == man_a["shards"]
    # resumed run → manifest byte-identical to the clean run's
    assert (partial / "manifest.json").read_bytes() == (a / "manifest.json").read_bytes()
    assert verify_output(partial) == []


def test_output_of_another_job_is_refused(two_runs, tiny_checkpoint, tmp_path):
    import shutil

    a = two_runs[0]
    other = tmp_path / "other"
    shutil.copytree(a, other)
    (other / "manifest.json").unlink()
    before = sorted(str(p) for p in other.rglob("*"))
    with pytest.raises(JobSpecError, match="different job spec or model"):
        run_generation(_cfg(other, tiny_checkpoint, "job.seed=99"), progress=False)
    assert sorted(str(p) for p in other.rglob("*")) == before


@pytest.mark.slow  # 10-16 s; the default suite keeps under 10 min (run with -m slow)
def test_separate_png_stage_writes_the_same_bytes(two_runs, tiny_checkpoint, tmp_path):
    _, man_a, _, _ = two_runs
    out = tmp_path / "png_stage"
    manifest = run_generation(_cfg(out, tiny_checkpoint, "resources.png_stage=true", "resources.actors=1"), progress=False)
    assert manifest["shards"] == man_a["shards"]
    assert verify_output(out) == []


def test_auto_shard_size_is_a_multiple_of_the_compute_batch_with_several_shards_per_actor():
    from aigc_synth.jobs.spec import MAX_AUTO_SHARD_ROWS, MIN_AUTO_SHARD_ROWS, SHARDS_PER_ACTOR, auto_shard_size

    assert auto_shard_size(1000, 32, 2) == 64  # 16 shards: 8 per actor
    assert auto_shard_size(8192, 16, 16) == 64  # the scale-out benchmark's 16-actor point: 8 shards per actor
    assert auto_shard_size(1000, 32, 32) == MIN_AUTO_SHARD_ROWS  # not below what amortises a shard's round trip
    assert auto_shard_size(10**6, 32, 32) == MAX_AUTO_SHARD_ROWS
    assert auto_shard_size(10**6, 96, 4) == 960  # a multiple of the compute batch under the cap
    for n, batch, actors in [(4500, 16, 3), (20_000, 8, 2), (99_999, 64, 16)]:
        size = auto_shard_size(n, batch, actors)
        assert size % batch == 0 and -(-n // size) >= SHARDS_PER_ACTOR * actors


@pytest.mark.slow  # ~15 s (two pools); the auto rule itself is unit-tested by default
def test_auto_shard_size_follows_the_pool_and_a_resume_keeps_the_recorded_one(ray_session, tiny_checkpoint, tmp_path):
    """job.shard_size=auto (the default): 200 images on 2 actors → shards of 64 rows (4 shards);
    a rerun on another pool shape resumes into the same shards instead of refusing the output."""
    from aigc_synth.jobs.spec import auto_shard_size

    out = tmp_path / "auto"
    cfg = compose_generate([f"output_dir={out}", f"job.checkpoint={tiny_checkpoint}", "job.num_samples=200",
                            "job.compute_batch=8", "resources.actors=2", "preview=false"])
    assert cfg.job.shard_size == "auto"
    manifest = run_generation(cfg, progress=False)
    size = auto_shard_size(200, 8, 2)
    assert size == 64 and len(manifest["shards"]) == 4
    assert json.loads((out / "job.json").read_text())["job"]["shard_size"] == size
    (out / "manifest.json").unlink()
    (out / "parquet" / "part-00003.parquet").unlink()
    again = run_generation(compose_generate([f"output_dir={out}", f"job.checkpoint={tiny_checkpoint}", "job.num_samples=200",
                                             "job.compute_batch=8", "resources.actors=1", "preview=false"]), progress=False)
    assert again["shards"] == manifest["shards"] and verify_output(out) == []
