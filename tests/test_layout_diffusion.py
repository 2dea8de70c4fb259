"""The layout-diffusion family: training through the common loop (resumable), jobs whose bytes are a pure
function of (job seed, sample id, model, sampling options) and pinned, its sampling options as job keys,
and serving the job's bytes."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from aigc_synth.errors import JobSpecError
from aigc_synth.models.exported import export_generator, load_generator
from aigc_synth.models.registry import build_generator
from aigc_synth.schema import DEFAULT_SCHEMA
from tests.helpers import check_pinned_images, compose_generate, write_shards_in_process

TINY = {"resolution": 32, "base_channels": 8, "channel_mult": [1, 2], "layers_per_block": 1, "sampling_steps": 3, "guidance": 2.0}


@pytest.fixture(scope="module")
def diffusion_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny diffusion model (seeded: the same weights on every machine)."""
    torch.manual_seed(0)
    g = build_generator("layout_diffusion", DEFAULT_SCHEMA.cardinalities, **TINY).eval()
    path = tmp_path_factory.mktemp("diffusion") / "diffusion.pt"
    export_generator(path, family="layout_diffusion", model_params=TINY, schema=DEFAULT_SCHEMA, generator=g)
    return path


def _cfg(out: Path, ckpt: Path, *extra: str):
    # straight roads only: the pins predate road kinds, and a one-kind road factor keeps every byte
    return compose_generate([f"output_dir={out}", f"job.checkpoint={ckpt}", "job.num_samples=12", "job.shard_size=6",
                             "job.seed=4", "preview=false", "+job.plan.factors.road=[straight]", *extra])


def _images(out: Path) -> dict[int, bytes]:
    table = pq.read_table(out / "parquet")
    return dict(zip(table.column("sample_id").to_pylist(), table.column("image").combine_chunks().field("bytes").to_pylist()))


@pytest.fixture(scope="module")
def diffusion_runs(ray_session, diffusion_checkpoint, tmp_path_factory):
    """One Ray job (2 actors, micro-batches of 8); its pins (test below) were made by a 1-actor job
    calling the model on 5 rows at a time, and the byte-identity test samples it again in-process that way."""
    from aigc_synth.jobs.generate import run_generation

    root = tmp_path_factory.mktemp("diffusion_jobs")
    run_generation(_cfg(root / "b", diffusion_checkpoint, "resources.actors=2", "job.compute_batch=8"), progress=False)
    return root / "b"


def test_the_model_is_small_and_rebuilds_from_its_checkpoint(diffusion_checkpoint):
    gen = load_generator(diffusion_checkpoint)
    assert gen.family == "layout_diffusion" and gen.z_dim == 3 * 32 * 32 and gen.resolution == 32
    default = build_generator("layout_diffusion", DEFAULT_SCHEMA.cardinalities)  # the shipped size
    assert 2e6 < sum(p.numel() for p in default.parameters()) < 4e6


def test_a_diffusion_job_is_byte_identical_for_any_actor_count_and_batch(diffusion_runs, diffusion_checkpoint):
    images = _images(diffusion_runs)
    assert sorted(images) == list(range(12))
    # the same job written in this process by one worker, 5 rows per call, micro-batches of the default 32
    again = write_shards_in_process(_cfg(diffusion_runs.parent / "a", diffusion_checkpoint, "resources.actors=1",
                                         "resources.batch_size=5"))
    assert _images(again) == images
    rows = pq.read_table(diffusion_runs / "parquet").to_pylist()
    assert all(r["boxes"] is not None and r["scene_id"] == r["sample_id"] for r in rows)  # labels as for the layout GAN
    first = np.asarray(Image.open(io.BytesIO(images[0])))
    assert first.std() > 1  # not a flat image


def test_diffusion_job_images_match_pins(diffusion_runs):
    """Like tests/test_pinned_bytes.py: a refactor must not change a byte (AIGC_SYNTH_REPIN=1 to re-pin)."""
    check_pinned_images("layout_diffusion", _images(diffusion_runs))


def test_sampling_options_are_job_keys_checked_before_any_work(diffusion_checkpoint, diffusion_runs, tmp_path, tiny_checkpoint):
    from dataclasses import asdict

    from aigc_synth.jobs.spec import validate_job
    from aigc_synth.sampling.image import ImageSampler

    for ckpt, override, message in [(diffusion_checkpoint, "job.sampling.steps=0", "steps must be in 1..1000"),
                                    (diffusion_checkpoint, "job.sampling.guidance_t_min=1001", "guidance_t_min must be in 0..1000"),
                                    (tiny_checkpoint, "job.sampling.guidance=3", "cgan model has no sampling options")]:
        with pytest.raises(JobSpecError, match=message):
            validate_job(_cfg(tmp_path / "bad", ckpt, override))
        assert not (tmp_path / "bad").exists()
    resolved = validate_job(_cfg(tmp_path / "steps2", diffusion_checkpoint, "job.sampling.steps=2", "job.sampling.guidance=1"))
    assert resolved.job_spec["sampling"] == {"steps": 2, "guidance": 1.0}  # in the fingerprint: another job's output
    batch = ImageSampler(asdict(resolved), diffusion_checkpoint.read_bytes()).sample(np.arange(3))
    default = ImageSampler(asdict(validate_job(_cfg(tmp_path / "d", diffusion_checkpoint))), diffusion_checkpoint.read_bytes())
    assert not np.array_equal(batch.images, default.sample(np.arange(3)).images)
    assert default.gen.module.sampling["steps"] == TINY["sampling_steps"]


def test_serving_a_diffusion_model_gives_the_jobs_bytes(diffusion_runs, diffusion_checkpoint):
    from aigc_synth.jobs.spec import serving_job
    from aigc_synth.serve.app import SamplerReplica

    a = diffusion_runs
    kind, job, data = serving_job("image", str(diffusion_checkpoint), 32, 64)
    replica = SamplerReplica.func_or_class(kind, job, data, 1, 64, 0.01, False)
    spec = json.loads((a / "manifest.json").read_text())["job"]
    request_job = {**job, "seed": spec["seed"], "num_samples": spec["num_samples"], "plan": spec["plan"]}
    (out,) = replica._respond_many([(request_job, np.arange(3, 9), "png")])
    expected = _images(a)
    assert [base64.b64decode(r["data"]) for r in out["images"]] == [expected[i] for i in range(3, 9)]


def test_training_runs_through_the_common_loop_and_resumes(tmp_path, compose_config):
    from aigc_synth.models.scene_families import BUNDLED_SCENE_CHECKPOINT, load_scene_generator
    from aigc_synth.scenes.format import scenes_to_table
    from aigc_synth.training.trainer import train

    scenes = load_scene_generator(BUNDLED_SCENE_CHECKPOINT).sample(["light", "heavy"] * 4, [3] * 8, list(range(8)), list(range(8)))
    (tmp_path / "scenes").mkdir()
    pq.write_table(scenes_to_table(scenes), tmp_path / "scenes" / "part-0.parquet")
    overrides = ["model=layout_diffusion", "data.source=scenes", f"data.scenes={tmp_path / 'scenes'}", "train.batch_size=4",
                 f"train.out_dir={tmp_path / 'run'}", "train.eval_every=0", "train.sample_every=1000", "train.log_every=1",
                 *[f"model.{k}={json.dumps(v).replace(' ', '')}" for k, v in TINY.items()]]
    cfg = compose_config("train", [*overrides, "train.steps=2"])
    train(cfg.train, cfg.model, cfg.data, progress=False)
    cfg = compose_config("train", [*overrides, "train.steps=4"])
    path = train(cfg.train, cfg.model, cfg.data, progress=False)  # resumes from state.pt at step 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if "loss" in line]
    assert steps == [1, 2, 3, 4] and load_generator(path).family == "layout_diffusion"
    with pytest.raises(Exception, match="data.source=scenes"):  # a layout family refuses data without layouts
        cfg = compose_config("train", ["model=layout_diffusion", f"train.out_dir={tmp_path / 'x'}"])
        train(cfg.train, cfg.model, cfg.data, progress=False)


def test_the_bundled_diffusion_checkpoint_is_named_small_and_samples(tmp_path):
    """``job.checkpoint=diffusion`` (and serve / evaluate / info) name the bundled diffusion model: float16
    weights (half the file), rebuilt in float32; two images through the job's sampling path."""
    from aigc_synth.models.exported import BUNDLED_GENERATORS, resolve_checkpoint_path
    from aigc_synth.sampling.sampler import generate_images

    path = resolve_checkpoint_path("diffusion")
    assert path == BUNDLED_GENERATORS["diffusion"] and path.is_file() and path.stat().st_size < 8_000_000
    gen = load_generator(path)
    assert gen.family == "layout_diffusion" and gen.meta["bundled"]["weights"] == "float16"
    assert all(p.dtype == torch.float32 for p in gen.module.parameters())
    gen.module.configure_sampling(steps=2)
    layouts = np.zeros((2, 6, gen.resolution, gen.resolution), np.float32)
    images = generate_images(gen, np.zeros((2, 3), np.int64), np.arange(2), "cpu", 2, layouts=layouts)
    assert images.shape == (2, gen.resolution, gen.resolution, 3) and images.std() > 1


def test_sampling_options_script_sets_the_guidance_and_steps_of_a_diffusion_copy(diffusion_checkpoint, tmp_path, monkeypatch):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "set_sampling_options.py"
    spec = importlib.util.spec_from_file_location("set_sampling_options", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def run(*args: str) -> None:
        monkeypatch.setattr("sys.argv", ["set_sampling_options.py", *args])
        mod.main()

    out = tmp_path / "g1.5.pt"
    run(str(diffusion_checkpoint), str(out), "--guidance", "1.5", "--steps", "4", "--why", "test")
    source, copy = load_generator(diffusion_checkpoint), load_generator(out)
    assert copy.module.sampling["guidance"] == 1.5 and copy.module.sampling["steps"] == 4
    assert source.module.sampling["guidance"] == 2.0 and copy.model_id != source.model_id
    assert copy.meta["sampling_options"] == {"guidance": 1.5, "sampling_steps": 4, "why": "test"}
    for (k, v), w in zip(source.module.state_dict().items(), copy.module.state_dict().values()):
        assert torch.equal(v, w), k  # the weights are unchanged
    run(str(diffusion_checkpoint), str(tmp_path / "interval.pt"), "--guidance-interval", "100", "800")
    assert load_generator(tmp_path / "interval.pt").module.sampling["guidance_t_min"] == 100
    assert load_generator(tmp_path / "interval.pt").module.sampling["guidance_t_max"] == 800
    for bad in (["--guidance", "25"], ["--steps", "0"], ["--psi", "0.7", "--guidance", "1.5"],  # out of range; GAN options
                ["--guidance-interval", "800", "100"]):
        target = tmp_path / "bad.pt"
        with pytest.raises(SystemExit):
            run(str(diffusion_checkpoint), str(target), *bad)
        assert not target.exists()


def test_guidance_in_a_limited_interval_guides_only_the_steps_inside_it(diffusion_checkpoint):
    """The solver's steps (3 here: timesteps 999, 666, 333) outside [guidance_t_min, guidance_t_max] are sampled
    conditionally only: an interval holding none of them gives guidance 1's bytes, the whole range the default's,
    one step in between something else; the options are checked like the others."""
    gen = load_generator(diffusion_checkpoint).module
    z = torch.randn(2, gen.z_dim, generator=torch.Generator().manual_seed(0))
    codes = torch.tensor([[0, 1, 2], [3, 0, 1]])
    layout = torch.zeros(2, 6, gen.resolution, gen.resolution)
    layout[:, 1, 10:20, 8:24] = 1.0

    def sample(**options):
        gen.configure_sampling(**{"guidance": 3.0, "guidance_t_min": 0, "guidance_t_max": 1000, **options})
        return gen(z, codes, layout)

    full, unguided = sample(), sample(guidance=1.0)
    assert torch.equal(sample(guidance_t_min=0, guidance_t_max=100), unguided)  # no step inside
    assert torch.equal(sample(guidance_t_min=300, guidance_t_max=1000), full)  # every step inside
    one_step = sample(guidance_t_min=900, guidance_t_max=1000)
    assert not torch.equal(one_step, full) and not torch.equal(one_step, unguided)
    for bad, message in [({"guidance_t_min": -1}, "0..1000"), ({"guidance_t_max": 1001}, "0..1000"),
                         ({"guidance_t_min": 600, "guidance_t_max": 500}, "above"), ({"guidance_t_min": 1.5}, "must be int")]:
        before = dict(gen.sampling)
        with pytest.raises(ValueError, match=message):
            sample(**bad)
        assert gen.sampling == before  # a bad option sets nothing
