"""Layout-conditioned images: layouts and boxes agree with the renderer, the generator is a pure
function of (z, codes, layout), layout jobs carry scene ids + boxes, are byte-identical for any
actor count, accept given scenes, and old (condition-only) checkpoints keep working."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from aigc_synth.data.layout import LAYOUT_CHANNELS, scene_layout, scene_layouts
from aigc_synth.data.scene_images import SceneImageDataset
from aigc_synth.data.scene_render import render_scene, scene_boxes
from aigc_synth.errors import JobSpecError
from aigc_synth.models.exported import export_generator, load_generator
from aigc_synth.jobs.generate import run_generation
from aigc_synth.models.registry import build_generator
from aigc_synth.sampling.sampler import generate_images
from aigc_synth.scenes.format import ROAD_KINDS, scenes_to_table
from aigc_synth.models.scene_families import BUNDLED_SCENE_CHECKPOINT, load_scene_generator
from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema
from tests.helpers import compose_generate, write_shards_in_process

TINY_LAYOUT = {"resolution": 32, "z_dim": 16, "base_channels": 8, "embed_dim": 8, "spade_hidden": 8}


@pytest.fixture(scope="module")
def scenes():
    gen = load_scene_generator(BUNDLED_SCENE_CHECKPOINT)
    traffic = ["light", "moderate", "heavy"] * 8
    lanes = [2, 3, 4] * 8
    return gen.sample(traffic, sorted(lanes), list(range(24)), list(range(24)))


@pytest.fixture(scope="module")
def layout_checkpoint(tmp_path_factory, scenes) -> Path:
    torch.manual_seed(0)
    g = build_generator("layout_gan", DEFAULT_SCHEMA.cardinalities, **TINY_LAYOUT)
    for name, p in g.named_parameters():  # SPADE starts as plain BatchNorm; a trained one uses the layout
        if ".gamma." in name or ".beta." in name:
            torch.nn.init.normal_(p, std=0.2)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        g.train()
        g(torch.randn(24, 16), torch.zeros(24, 3, dtype=torch.int64), torch.from_numpy(scene_layouts(scenes, 32)))
    g.eval()
    path = tmp_path_factory.mktemp("layout_ckpt") / "layout.pt"
    export_generator(path, family="layout_gan", model_params=TINY_LAYOUT, schema=DEFAULT_SCHEMA, generator=g)
    return path


def test_layout_channels_match_the_renderers_boxes(scenes):
    for sc in scenes:
        lay = scene_layout(sc, 64)
        assert lay.shape == (len(LAYOUT_CHANNELS), 64, 64) and lay.min() >= 0 and lay.max() <= 1
        vehicles = lay[2] + lay[3]
        boxes = scene_boxes(sc, 64).boxes
        inside = np.zeros((64, 64), bool)
        for x0, y0, x1, y1 in boxes:
            inside[int(np.floor(y0)):int(np.ceil(y1)), int(np.floor(x0)):int(np.ceil(x1))] = True
        assert vehicles[~inside].max(initial=0) == 0  # vehicle pixels only inside the renderer's boxes
        if len(boxes):
            assert vehicles.sum() > 0
        assert lay[0][:20].sum() == 0  # no road above the horizon (row 26 at 64 px)
    assert np.array_equal(scene_layout(scenes[0], 64), scene_layouts(scenes[:1], 64)[0])


def test_scene_boxes_equal_the_rendered_boxes(scenes):
    for sc in scenes[:8]:
        b, r = scene_boxes(sc, 64), render_scene(sc, "fog", "night", 3, 64)
        np.testing.assert_array_equal(b.boxes, r.boxes)
        np.testing.assert_array_equal(b.agents, r.agents)
        assert b.labels == r.labels


def test_scene_image_dataset_is_deterministic_and_labels_traffic_from_the_scene(scenes):
    ds = SceneImageDataset(scenes, seed=3, resolution=32)
    a, b = ds.batch(range(6)), ds.batch(range(6))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["layout"], b["layout"])
    t = DEFAULT_SCHEMA.names.index("traffic")
    for code, k in zip(a["codes"], a["scene_index"]):
        assert DEFAULT_SCHEMA.factors[t][1][int(code[t])] == scenes[int(k)].traffic


def test_layout_generator_rows_do_not_depend_on_their_batch(layout_checkpoint, scenes):
    gen = load_generator(layout_checkpoint)
    lay = scene_layouts(scenes[:10], 32)
    codes = np.array([DEFAULT_SCHEMA.encode(c) for c in DEFAULT_SCHEMA.combinations()[:10]])
    seeds = np.arange(10) + 100
    whole = generate_images(gen, codes, seeds, compute_batch=16, layouts=lay)
    parts = np.concatenate([generate_images(gen, codes[i:i + 3], seeds[i:i + 3], compute_batch=4, layouts=lay[i:i + 3])
                            for i in range(0, 10, 3)])
    np.testing.assert_array_equal(whole, parts)
    other = generate_images(gen, codes, seeds, compute_batch=16, layouts=np.roll(lay, 1, axis=0))
    assert not np.array_equal(whole, other)  # the layout reaches the pixels
    with pytest.raises(ValueError, match="needs a layout"):
        generate_images(gen, codes, seeds)


def test_training_a_layout_model_composes_the_real_config(tiny_train_config, tmp_path, scenes):
    from aigc_synth.training.trainer import train

    scene_dir = tmp_path / "scenes"
    scene_dir.mkdir()
    pq.write_table(scenes_to_table(scenes), scene_dir / "part-00000.parquet")
    cfg = tiny_train_config(tmp_path / "run", "model=layout_gan", "model.embed_dim=8", "model.spade_hidden=8", "model.mode_seeking=0.1",
                            "data.source=scenes", f"data.scenes={scene_dir}",
                            "train.eval_every=2", "train.eval_samples=16", "train.best_metric=coverage")
    path = train(cfg.train, cfg.model, cfg.data, progress=False)
    gen = load_generator(path)
    assert gen.family == "layout_gan" and gen.resolution == 32
    assert (tmp_path / "run" / "samples" / "step_000002.png").exists()
    # periodic evaluation samples with the scenes' layouts and keeps the best checkpoint by coverage
    evals = [r for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines()) if "eval_coverage" in r]
    assert [r["step"] for r in evals] == [2] and 0 <= evals[0]["eval_coverage"] <= 1 and "eval_recall" in evals[0]
    assert evals[0]["eval_kid_std"] > 0  # KID subsets are halves of the set, not all of it 20 times
    assert load_generator(tmp_path / "run" / "best_generator.pt").family == "layout_gan"
    bad = tiny_train_config(tmp_path / "run2", "model=layout_gan")
    from aigc_synth.errors import UsageError

    with pytest.raises(UsageError, match="data.source=scenes"):
        train(bad.train, bad.model, bad.data, progress=False)


def test_vehicle_instances_give_each_visible_face_its_own_id_inside_its_box(scenes):
    from aigc_synth.models.layout_gan import vehicle_instances

    lay = torch.from_numpy(scene_layouts(scenes, 64))
    ids = vehicle_instances(lay).numpy()
    seen = 0
    for sc, im in zip(scenes, ids):
        boxes = scene_boxes(sc, 64).boxes
        found = [k for k in np.unique(im) if k > 0]
        assert len(found) <= len(boxes)
        for k in found:  # every instance's pixels lie inside one of the scene's boxes
            ys, xs = np.nonzero(im == k)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            assert any(x0 >= b[0] - 1 and y0 >= b[1] - 1 and x1 <= b[2] + 1 and y1 <= b[3] + 1 for b in boxes), (k, boxes)
        seen += len(found)
    assert seen >= len(scenes)  # most scenes show at least one vehicle large enough for an interior
    assert np.array_equal(vehicle_instances(lay[3:5]).numpy(), ids[3:5])  # a pure function of each layout


def test_vehicle_mean_colours_average_each_face():
    from aigc_synth.training.steps import vehicle_mean_colours

    lay = torch.zeros(2, len(LAYOUT_CHANNELS), 16, 16)
    lay[0, 2, 2:6, 2:6] = 1  # a car face (interior 3:5, ring around it)
    lay[0, 5, 2:6, 2:6] = 1
    lay[0, 5, 3:5, 3:5] = 0
    lay[1, 3, 8:14, 4:12] = 1  # a truck face, no edges channel: all interior
    img = torch.zeros(2, 3, 16, 16)
    img[0, :, 2:6, 2:6] = torch.tensor([0.5, -0.5, 0.25])[:, None, None]
    img[1, :, 8:14, 4:12] = torch.tensor([-1.0, 1.0, 0.0])[:, None, None]
    means = vehicle_mean_colours(img, lay)
    torch.testing.assert_close(means, torch.tensor([[0.5, -0.5, 0.25], [-1.0, 1.0, 0.0]]))


def test_a_layout_run_fine_tunes_into_vehicle_codes_particles_and_class_heads(tiny_train_config, tmp_path, scenes):
    """A state trained without per-vehicle codes, the particle overlay and the critic's class heads
    fine-tunes into one with them (step 0 draws the source's images, plus the overlay's particles in
    rain and snow); both optimisers keep the old parameters' moments; resuming across the change is
    refused with the fix; rows stay independent of their batch."""
    from aigc_synth.errors import CheckpointError
    from aigc_synth.training.trainer import train

    scene_dir = tmp_path / "scenes"
    scene_dir.mkdir()
    # scenes with a vehicle in view at 32 px only: the per-vehicle codes learn from vehicles, so a tiny
    # batch of empty roads (a light-traffic draw of the scene model) would leave them at zero
    with_vehicles = [sc for sc in scenes if len(scene_boxes(sc, 32).boxes)]
    pq.write_table(scenes_to_table(with_vehicles), scene_dir / "part-00000.parquet")
    common = ("model=layout_gan", "model.embed_dim=8", "model.spade_hidden=8", "data.source=scenes", f"data.scenes={scene_dir}")
    src = tiny_train_config(tmp_path / "src", *common, "model.aux_class_weight=0")
    source = load_generator(train(src.train, src.model, src.data, progress=False))
    assert source.module.instance_codes == 0 and source.module.particles is None
    grow = ("model.instance_codes=4", "model.particles=true", "model.mode_seeking=0.02", "model.vehicle_mode_seeking=0.05",
            "model.aux_class_weight=0.2")
    ft = tiny_train_config(tmp_path / "ft", *common, *grow, "train.steps=0",
                           f"train.init_from={tmp_path / 'src' / 'state.pt'}")
    start = load_generator(train(ft.train, ft.model, ft.data, progress=False))
    assert start.model_config["instance_codes"] == 4 and start.module.particles is not None
    # both optimisers keep their moments: the old parameters theirs, the new ones none yet
    from aigc_synth.io.checkpoint import load_checkpoint

    src_state, ft_state = load_checkpoint(tmp_path / "src" / "state.pt"), load_checkpoint(tmp_path / "ft" / "state.pt")
    old_names = [n for n, _ in source.module.named_parameters()]
    new_names = [n for n, _ in start.module.named_parameters()]
    for name in ("to_rgb.weight", "blocks.0.norm.gamma.weight", "embed.tables.0.weight"):
        if name in old_names:
            torch.testing.assert_close(ft_state["opt_g"]["state"][new_names.index(name)]["exp_avg"],
                                       src_state["opt_g"]["state"][old_names.index(name)]["exp_avg"])
    assert any(".instance." in n for n in new_names)
    assert not any(new_names.index(n) in ft_state["opt_g"]["state"] for n in new_names if ".instance." in n)
    torch.testing.assert_close(ft_state["opt_d"]["state"][0]["exp_avg_sq"], src_state["opt_d"]["state"][0]["exp_avg_sq"])
    # the critic gained its class heads: the old parameters keep their moments, the new ones have none
    from aigc_synth.models.registry import build_discriminator

    critic = build_discriminator("layout_gan", DEFAULT_SCHEMA.cardinalities, resolution=32,
                                 d_base_channels=ft.model.d_base_channels, aux_class_weight=ft.model.aux_class_weight)
    d_names = [n for n, _ in critic.named_parameters()]
    assert any(".aux_heads." in n for n in d_names)
    assert not any(i in ft_state["opt_d"]["state"] for i, n in enumerate(d_names) if ".aux_heads." in n)
    assert len(ft_state["opt_d"]["state"]) == len(src_state["opt_d"]["state"])
    # step 0: the source's images (the vehicle codes start at zero), plus sparse particles in rain and snow
    lay = scene_layouts(scenes[:6], 32)
    weathers = ("clear", "overcast", "rain", "fog", "snow", "rain")
    codes = np.array([DEFAULT_SCHEMA.encode({"weather": w, "time_of_day": "day", "traffic": "light"}) for w in weathers])
    a = generate_images(source, codes, np.arange(6), layouts=lay).astype(int)
    b = generate_images(start, codes, np.arange(6), layouts=lay).astype(int)
    for w, x, y in zip(weathers, a, b):
        changed = (np.abs(x - y) > 2).any(axis=-1).mean()
        assert (0 < changed < 0.12) if w in ("rain", "snow") else changed == 0, (w, changed)
    ft1 = tiny_train_config(tmp_path / "ft", *common, *grow, "train.steps=1",
                            f"train.init_from={tmp_path / 'src' / 'state.pt'}")
    tuned = load_generator(train(ft1.train, ft1.model, ft1.data, progress=False))  # resumes its own state
    assert tuned.module.stem_norm.instance.weight.abs().sum() > 0  # the per-vehicle codes are being learnt
    tuned_state = load_checkpoint(tmp_path / "ft" / "state.pt")
    assert all(i in tuned_state["opt_d"]["state"] for i, n in enumerate(d_names) if ".aux_heads." in n)  # so are the heads
    whole = generate_images(tuned, codes, np.arange(6), compute_batch=6, layouts=lay)
    parts = np.concatenate([generate_images(tuned, codes[i:i + 2], np.arange(i, i + 2), compute_batch=2,
                                            layouts=lay[i:i + 2]) for i in range(0, 6, 2)])
    np.testing.assert_array_equal(whole, parts)
    bad = tiny_train_config(tmp_path / "src", *common, *grow, "train.steps=3")
    with pytest.raises(CheckpointError, match="train.init_from"):
        train(bad.train, bad.model, bad.data, progress=False)  # resume of a state without the layers
    # a state trained with an option that has since been retired is refused by name
    from aigc_synth.io.checkpoint import save_checkpoint

    src_state["model_config"] = {**src_state["model_config"], "old_layer": True}
    save_checkpoint(src_state, tmp_path / "retired.pt")
    bad = tiny_train_config(tmp_path / "ft2", *common, f"train.init_from={tmp_path / 'retired.pt'}")
    with pytest.raises(CheckpointError, match=r"model\.old_layer=True.*retired"):
        train(bad.train, bad.model, bad.data, progress=False)


# ------------------------------------------------------------------------------------------------
# retired options: checkpoints written while an option existed
# ------------------------------------------------------------------------------------------------
def _variant(source: Path, path: Path, config: dict | None = None, weights: dict | None = None) -> Path:
    """A copy of exported generator ``source`` with extra ``model_config`` keys and / or state-dict entries."""
    ckpt = torch.load(source, weights_only=True)
    ckpt["model_config"] = {**ckpt["model_config"], **(config or {})}
    ckpt["state_dict"] = {**ckpt["state_dict"], **(weights or {})}
    torch.save(ckpt, path)
    return path


def test_a_retired_option_that_was_off_is_dropped_on_load(layout_checkpoint, scenes, tmp_path):
    """Keys that the family no longer knows load when they were off switches (False, 0, None, or
    PyTorch's default conv padding "zeros"): the model is the one without them, byte for byte; the
    bundled model stores such a key."""
    from aigc_synth.models.exported import BUNDLED_CHECKPOINT, read_generator_header

    source = load_generator(layout_checkpoint)
    old = load_generator(_variant(layout_checkpoint, tmp_path / "old.pt", {"old_layer": False, "old_width": 0, "old_mode": None,
                                                                               "old_pad": "zeros"}))
    assert old.model_config == source.model_config and not {"old_layer", "old_width", "old_mode", "old_pad"} & set(old.model_config)
    codes = np.array([DEFAULT_SCHEMA.encode(c) for c in DEFAULT_SCHEMA.combinations()[:4]])
    lay = scene_layouts(scenes[:4], 32)
    np.testing.assert_array_equal(generate_images(old, codes, np.arange(4), layouts=lay),
                                  generate_images(source, codes, np.arange(4), layouts=lay))
    stored = read_generator_header(BUNDLED_CHECKPOINT)["model_config"]
    assert set(stored) - set(load_generator(BUNDLED_CHECKPOINT).model_config)  # a retired switch, off: dropped


def test_a_retired_option_that_was_on_or_its_weights_are_refused_with_one_line(layout_checkpoint, tmp_path):
    from aigc_synth.errors import CheckpointError
    from tests.helpers import run_cli

    for key, value in (("old_layer", True), ("old_width", 4), ("old_mode", "replicate")):
        bad = _variant(layout_checkpoint, tmp_path / f"{key}.pt", {key: value})
        with pytest.raises(CheckpointError, match=rf"trained with model\.{key}={value!r}.*retired \(see docs/experiments\.md\)"):
            load_generator(bad)
    # weights of a layer the model has no place for are refused, not ignored (its switch off or absent)
    extra = {"old_layer.weight": torch.zeros(3, 8, 3, 3), "old_layer.bias": torch.zeros(3)}
    for config in ({"old_layer": False}, None):
        bad = _variant(layout_checkpoint, tmp_path / "weights.pt", config, extra)
        with pytest.raises(CheckpointError, match=r"weights of layers this model does not have \(old_layer\.weight, old_layer\.bias\)"):
            load_generator(bad)
    # through the CLI: exit status 2, one line naming the option, nothing written
    bad = _variant(layout_checkpoint, tmp_path / "on.pt", {"old_layer": True})
    out = tmp_path / "out"
    proc = run_cli("generate", f"output_dir={out}", f"job.checkpoint={bad}", cwd=tmp_path)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "model.old_layer=True" in lines[0] and "retired" in lines[0] and not out.exists()


# ------------------------------------------------------------------------------------------------
# jobs (shared local Ray)
# ------------------------------------------------------------------------------------------------
def _cfg(out: Path, ckpt: Path, *extra: str):
    return compose_generate([f"output_dir={out}", f"job.checkpoint={ckpt}", "job.num_samples=40", "job.shard_size=20",
                             "preview=false", *extra])


@pytest.fixture(scope="module")
def layout_runs(ray_session, layout_checkpoint, tmp_path_factory):
    """One Ray job (2 actors, micro-batches of 16); the byte-identity test writes the same job again
    in this process with one worker, 7 rows per call and the default micro-batch."""
    root = tmp_path_factory.mktemp("layout_jobs")
    run_generation(_cfg(root / "b", layout_checkpoint, "resources.actors=2", "job.compute_batch=16"), progress=False)
    return root / "b"


def _rows(out: Path) -> list[dict]:
    return [r for f in sorted((out / "parquet").iterdir()) for r in pq.read_table(f).to_pylist()]


def test_layout_job_is_byte_identical_for_any_actor_count(layout_runs, layout_checkpoint, tmp_path):
    b = layout_runs
    assert json.loads((b / "run.json").read_text())["resources"]["actors"] == 2
    a = write_shards_in_process(_cfg(tmp_path / "a", layout_checkpoint, "resources.actors=1", "resources.batch_size=7"))
    shards = sorted((b / "parquet").iterdir())
    assert len(shards) > 1 and [p.name for p in sorted((a / "parquet").iterdir())] == [p.name for p in shards]
    for shard in shards:
        assert shard.read_bytes() == (a / "parquet" / shard.name).read_bytes()


def test_layout_job_boxes_are_the_sampled_scenes_boxes(layout_runs, layout_checkpoint):
    from aigc_synth.evaluation.layout import evaluation_scenes

    a = layout_runs
    rows = sorted(_rows(a), key=lambda r: r["sample_id"])
    assert len(rows) == 40
    manifest = json.loads((a / "manifest.json").read_text())
    # the bundled scene model knows four road kinds: road is a plan factor after the image model's own,
    # pinned to straight when the plan names none (the image model is trained on straight roads)
    schema = ConditionSchema.from_dict(manifest["schema"])
    assert schema.names == [*DEFAULT_SCHEMA.names, "road"] and schema.values("road") == ROAD_KINDS
    assert manifest["job"]["plan"]["factors"]["road"] == ["straight"]
    # the same scenes as a layout evaluation with the job's seed picks (one shared definition)
    from aigc_synth.sampling.plan import ConditionPlan

    plan = ConditionPlan(manifest["job"]["plan"], schema, 40, manifest["job"]["seed"])
    scenes, codes = evaluation_scenes(plan.codes_for(np.arange(40)), manifest["job"]["seed"], schema)
    n_boxes = 0
    for row, sc in zip(rows, scenes):
        assert row["scene_id"] == sc.scene_id == row["sample_id"]
        assert row["traffic"] == sc.traffic and row["road"] == sc.road.kind
        expected = scene_boxes(sc, 32)
        assert [b["agent"] for b in row["boxes"]] == expected.agents.tolist()
        for box in row["boxes"]:
            assert 0 <= box["x0"] < box["x1"] <= row["width"] and 0 <= box["y0"] < box["y1"] <= row["height"]
            assert 0 < box["visible"] <= 1 and box["label"] in ("car", "truck")
            assert box["label"] == sc.agents[box["agent"]].kind
        n_boxes += len(row["boxes"])
    assert n_boxes > 0
    assert {r["road"] for r in rows} == {"straight"}


def _given_scenes_job(ckpt: Path, scenes: list, tmp_path: Path, n: int) -> Path:
    """A layout job of ``n`` samples over ``scenes`` written as one Parquet folder (``job.scenes``); its
    shard written in this process (the rows are the subject here, not Ray)."""
    scene_dir = tmp_path / "scenes"
    scene_dir.mkdir()
    pq.write_table(scenes_to_table(scenes), scene_dir / "part-00000.parquet")
    return write_shards_in_process(_cfg(tmp_path / "given", ckpt, f"job.scenes={scene_dir}", f"job.num_samples={n}",
                                        f"job.shard_size={n}"))


def test_layout_job_renders_given_scenes(layout_checkpoint, scenes, tmp_path):
    out = _given_scenes_job(layout_checkpoint, scenes, tmp_path, 30)
    rows = sorted(_rows(out), key=lambda r: r["sample_id"])
    for row in rows:  # sample i shows scene i mod n, and a scene is its traffic
        sc = scenes[row["sample_id"] % len(scenes)]
        assert row["scene_id"] == sc.scene_id and row["traffic"] == sc.traffic
        assert [b["agent"] for b in row["boxes"]] == scene_boxes(sc, 32).agents.tolist()


def test_layout_jobs_on_chosen_and_given_road_kinds(ray_session, layout_checkpoint, tmp_path):
    """A plan names road kinds as it names weathers; given scenes of several kinds keep their own kind,
    and the image model (which has no road factor) still gets its own codes."""
    out = tmp_path / "chosen"
    run_generation(_cfg(out, layout_checkpoint, "+job.plan.factors.road=[curve,merge]", "job.num_samples=12",
                        "job.shard_size=12"), progress=False)
    rows = _rows(out)
    assert sorted(r["road"] for r in rows) == ["curve"] * 6 + ["merge"] * 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema"]["road"] == list(ROAD_KINDS)
    from aigc_synth.io.atomic import open_store
    from aigc_synth.sampling.image import preview_images

    # the preview keeps one row per image condition; the roads drawn share its columns
    grid = preview_images(open_store(out), manifest)
    conditions = {(r["weather"], r["time_of_day"], r["traffic"]) for r in rows}
    assert grid.shape[0] == 32 * len(conditions)
    gen = load_scene_generator(BUNDLED_SCENE_CHECKPOINT)
    mixed = gen.sample(["heavy"] * 4, [3] * 4, list(range(4)), list(range(100, 104)), roads=list(ROAD_KINDS))
    out = _given_scenes_job(layout_checkpoint, mixed, tmp_path, 8)
    for row in _rows(out):
        sc = mixed[row["sample_id"] % len(mixed)]
        assert row["scene_id"] == sc.scene_id and row["road"] == sc.road.kind
        assert [b["agent"] for b in row["boxes"]] == scene_boxes(sc, 32).agents.tolist()


def test_a_plan_that_names_no_road_draws_straight_roads():
    from aigc_synth.sampling.layout import plan_with_default_road

    assert plan_with_default_road({"kind": "grid", "factors": {"weather": ["fog"]}})["factors"] == {"weather": ["fog"], "road": ["straight"]}
    assert plan_with_default_road({"kind": "grid", "factors": {"road": ["merge"]}})["factors"] == {"road": ["merge"]}
    assert plan_with_default_road({"kind": "mixture", "probs": {}})["probs"] == {"road": {"straight": 1.0}}
    items = plan_with_default_road({"kind": "list", "items": [{"conditions": {"weather": "fog"}},
                                                             {"conditions": {"weather": "snow", "road": "curve"}}]})["items"]
    assert [i["conditions"]["road"] for i in items] == ["straight", "curve"]


def test_an_image_request_may_leave_out_the_road():
    """POST /generate to a layout model: road defaults to straight (requests from before road kinds work);
    POST /scenes keeps road a required factor of a multi-road scene model."""
    from aigc_synth.serve.protocol import RequestError, parse_generate_request

    schema = ConditionSchema.from_dict({**DEFAULT_SCHEMA.to_dict(), "road": list(ROAD_KINDS)})
    cond = {"weather": "fog", "time_of_day": "night", "traffic": "heavy"}
    req = parse_generate_request({"conditions": [cond, {**cond, "road": "merge"}]}, schema, 8, defaults={"road": "straight"})
    assert [c["road"] for c in req.conditions] == ["straight", "merge"]
    with pytest.raises(RequestError, match="missing factor 'road'"):
        parse_generate_request({"conditions": [cond]}, schema, 8)
    with pytest.raises(RequestError, match="unknown value 'ramp' for factor 'road'"):
        parse_generate_request({"conditions": [{**cond, "road": "ramp"}]}, schema, 8, defaults={"road": "straight"})


def test_scene_options_refused_for_condition_only_checkpoints(tiny_checkpoint, tmp_path):
    from aigc_synth.jobs.spec import validate_job

    with pytest.raises(JobSpecError, match="layout-conditioned"):
        validate_job(_cfg(tmp_path / "x", tiny_checkpoint, f"job.scenes={tmp_path}"))
    assert not (tmp_path / "x").exists()


def test_missing_scene_folder_is_refused_before_any_work(layout_checkpoint, tmp_path):
    from aigc_synth.jobs.spec import validate_job

    with pytest.raises(JobSpecError, match="job.scenes"):
        validate_job(_cfg(tmp_path / "x", layout_checkpoint, f"job.scenes={tmp_path / 'nope'}"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(JobSpecError, match="job.scenes"):
        validate_job(_cfg(tmp_path / "y", layout_checkpoint, f"job.scenes={empty}"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_condition_only_checkpoints_still_generate_without_boxes(tiny_checkpoint, tmp_path):
    out = write_shards_in_process(_cfg(tmp_path / "old", tiny_checkpoint, "job.num_samples=10", "job.shard_size=10"))
    table = pq.read_table(next((out / "parquet").iterdir()))
    assert "boxes" not in table.column_names and "scene_id" not in table.column_names and table.num_rows == 10


def test_serving_a_layout_model_gives_the_jobs_bytes_and_boxes(layout_runs, layout_checkpoint):
    """The serve replica (POST /generate) on a slice of the job: same bytes, scenes and boxes."""
    from aigc_synth.jobs.spec import serving_job
    from aigc_synth.serve.app import SamplerReplica

    a = layout_runs
    rows = sorted(_rows(a), key=lambda r: r["sample_id"])[:12]
    kind, job, data = serving_job("image", str(layout_checkpoint), 32, 64)
    replica = SamplerReplica.func_or_class(kind, job, data, 1, 64, 0.01, False)
    spec = json.loads((a / "manifest.json").read_text())["job"]
    request_job = {**job, "seed": spec["seed"], "num_samples": spec["num_samples"], "plan": spec["plan"]}
    (out,) = replica._respond_many([(request_job, np.array([r["sample_id"] for r in rows]), "png")])
    assert out["width"] == out["height"] == job["resolution"] and len(out["images"]) == len(rows)
    for row, served in zip(rows, out["images"]):
        assert base64.b64decode(served["data"]) == row["image"]["bytes"] and served["seed"] == row["seed"]
        assert served["scene_id"] == row["scene_id"]
        assert [b["agent"] for b in served["boxes"]] == [b["agent"] for b in row["boxes"]]


def test_coco_export_of_a_layout_job_loads_with_pycocotools(layout_runs, tmp_path):
    from pycocotools.coco import COCO

    from aigc_synth.exporters import export_output

    a = layout_runs
    out = tmp_path / "coco"
    export_output(str(a), "coco", str(out), None)
    coco = COCO(str(out / "instances.json"))
    rows = {r["sample_id"]: r for r in _rows(a)}
    assert len(coco.getImgIds()) == len(rows)
    n = 0
    for image_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        expected = rows[image_id]["boxes"]
        assert len(anns) == len(expected)
        for ann, box in zip(anns, expected):
            x, y, w, h = ann["bbox"]
            assert abs(x - box["x0"]) < 1e-3 and abs(x + w - box["x1"]) < 1e-3 and abs(y + h - box["y1"]) < 1e-3
            assert coco.loadCats(ann["category_id"])[0]["name"] == box["label"]
            n += 1
    assert n > 0


def test_evaluate_scores_a_layout_checkpoint_against_renders_of_its_scenes(layout_checkpoint, compose_config, tmp_path):
    from aigc_synth.evaluation.evaluate import evaluate

    cfg = compose_config("evaluate", [f"source={layout_checkpoint}", "n_per_condition=2", f"out_dir={tmp_path / 'ev'}",
                                      "kid_subset_size=20", "kid_subsets=5"])
    result = evaluate(cfg, progress=False, log=lambda *a: None)
    assert result["reference"]["kind"] == "scenes" and result["source"]["n"] == 90
    assert result["feature_extractor"]["id"] != "domain-v1-1defde08b3b1"  # the scene-render classifier, not procedural's
    lay = result["layout"]
    assert lay["real"]["ap50"] > 0.8  # the detector finds the real renders' vehicles (ceiling)
    assert lay["generated"]["ap50"] < lay["real"]["ap50"]  # an untrained generator draws no vehicles
    assert lay["generated"]["num_gt"] == lay["real"]["num_gt"] > 0
    assert "Layout fidelity" in (tmp_path / "ev" / "report.md").read_text()


# the resume path is the job machinery's, tested by default in tests/test_job.py; this adds the layout
# sampler's rows (scene ids, boxes) to it and costs a job (~10-20 s): -m slow
@pytest.mark.slow
def test_interrupted_layout_job_resumes_to_identical_output(layout_runs, layout_checkpoint, tmp_path):
    import shutil

    from aigc_synth.io.reader import verify_output

    a = layout_runs
    partial = tmp_path / "partial"
    shutil.copytree(a, partial)
    (partial / "manifest.json").unlink()  # a driver killed after the first shard
    (partial / "parquet" / "part-00001.parquet").unlink()
    shutil.rmtree(partial / "png" / "part-00001")
    run_generation(_cfg(partial, layout_checkpoint, "resources.actors=1", "job.compute_batch=16"), progress=False)
    assert json.loads((partial / "run.json").read_text())["shards_skipped_on_resume"] == 1
    assert (partial / "manifest.json").read_bytes() == (a / "manifest.json").read_bytes()
    assert verify_output(partial) == []


def test_truncation_scales_the_latent_at_sampling_only(scenes):
    torch.manual_seed(1)
    kwargs = {k: v for k, v in TINY_LAYOUT.items() if k != "resolution"}
    full = build_generator("layout_gan", DEFAULT_SCHEMA.cardinalities, resolution=32, **kwargs).eval()
    half = build_generator("layout_gan", DEFAULT_SCHEMA.cardinalities, resolution=32, truncation=0.5, **kwargs).eval()
    half.load_state_dict(full.state_dict())
    z, codes = torch.randn(4, 16), torch.zeros(4, 3, dtype=torch.int64)
    lay = torch.from_numpy(scene_layouts(scenes[:4], 32))
    with torch.no_grad():
        torch.testing.assert_close(half(z, codes, lay), full(z * 0.5, codes, lay))


@pytest.mark.slow  # ~14 s (the script runs a job); the sampling options themselves are tested by default
def test_sampling_options_script_writes_a_copy_with_new_psi_and_particles(layout_checkpoint, tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "set_sampling_options.py"
    out = tmp_path / "psi.pt"
    done = subprocess.run([sys.executable, str(script), str(layout_checkpoint), str(out), "--psi", "0.7", "--particles", "on",
                           "--why", "test"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    source, copy = load_generator(layout_checkpoint), load_generator(out)
    assert copy.module.truncation == 0.7 and copy.meta["truncation"] == {"psi": 0.7, "why": "test"}
    assert source.module.particles is None and copy.module.particles is not None
    assert copy.meta["sampling_options"] == {"truncation": 0.7, "particles": True, "why": "test"}
    assert copy.model_id != source.model_id
    for (k, v), w in zip(source.module.state_dict().items(), copy.module.state_dict().values()):
        assert torch.equal(v, w), k  # the weights are unchanged
    for bad in (["--psi", "1.5"], ["--psi", "0.5"], []):  # out of range; a copy onto its own source; nothing to set
        target = layout_checkpoint if bad[:2] == ["--psi", "0.5"] else out
        before = Path(target).read_bytes()
        done = subprocess.run([sys.executable, str(script), str(layout_checkpoint), str(target), *bad], capture_output=True, text=True)
        assert done.returncode != 0 and Path(target).read_bytes() == before


def test_discriminator_selection_scores_match_the_states_discriminator(scenes, tmp_path):
    import importlib.util

    from aigc_synth.models.registry import build_discriminator

    script = Path(__file__).resolve().parents[1] / "scripts" / "eval_discriminator_selection.py"
    spec = importlib.util.spec_from_file_location("eval_discriminator_selection", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    cfg = {"family": "layout_gan", "resolution": 32, "d_base_channels": 8, "aux_class_weight": 0.2}
    disc = build_discriminator("layout_gan", DEFAULT_SCHEMA.cardinalities, **{k: v for k, v in cfg.items() if k != "family"})
    disc.eval()
    state = tmp_path / "state.pt"
    torch.save({"model_config": cfg, "D": disc.state_dict()}, state)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    codes = np.array([DEFAULT_SCHEMA.encode(c) for c in list(DEFAULT_SCHEMA.combinations())[:5]], dtype=np.int64)
    layouts = scene_layouts(scenes[:5], 32)
    got = mod.discriminator_scores(str(state), images, codes, layouts)  # one chunk: the minibatch-stddev input sees all 5
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        want = disc(x, torch.from_numpy(codes), torch.from_numpy(layouts).float()).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(np.unique(got.round(5))) == 5  # one score per image, not a constant
    torch.save({"model_config": {**cfg, "family": "cgan"}, "D": disc.state_dict()}, state)
    with pytest.raises(SystemExit, match="layout_gan training state"):
        mod.discriminator_scores(str(state), images, codes, layouts)


def test_evaluation_border_energy_sees_a_seam_and_its_options_parse():
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "eval_layout_models.py"
    spec = importlib.util.spec_from_file_location("eval_layout_models", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    clean = rng.integers(100, 110, (4, 32, 32, 3)).astype(np.uint8)
    seam = clean.copy()
    seam[:, 1, 1:-1] = 250  # a bright line one pixel inside the top edge
    assert mod.border_energy(seam).mean() > 3 * mod.border_energy(clean).mean()
    # interior detail does not count as border
    inner = clean.copy()
    inner[:, 16, 8:24] = 250
    np.testing.assert_allclose(mod.border_energy(inner), mod.border_energy(clean))
    assert mod.parse_model("a=x.pt@psi=0.7@particles=on") == ("a", "x.pt", {"psi": 0.7, "particles": True})
    for bad in ("a=x.pt@psi=2", "a=x.pt@padding=replicate"):
        with pytest.raises(SystemExit):
            mod.parse_model(bad)


def test_row_calibration_fits_on_training_renders_and_corrects_the_row_means(layout_checkpoint, scenes, tmp_path):
    """calibrate_generator.py writes a copy whose per-(time of day) row means match the renderer's on
    the fit set and reduce the error on other renders of the scenes; the correction is sampling-only
    (training mode is the source's), per sample (batch-independent), and bad requests write nothing."""
    import importlib.util

    from aigc_synth.models.layout_gan import calibration_keys

    script = Path(__file__).resolve().parents[1] / "scripts" / "calibrate_generator.py"
    spec = importlib.util.spec_from_file_location("calibrate_generator", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    scene_dir = tmp_path / "scenes"
    scene_dir.mkdir()
    pq.write_table(scenes_to_table(scenes), scene_dir / "part-00000.parquet")
    out = tmp_path / "calibrated.pt"
    mod.main([str(layout_checkpoint), str(out), "--scenes", str(scene_dir), "--n", "300", "--factors", "time_of_day", "--why", "test"])
    source, copy = load_generator(layout_checkpoint), load_generator(out)
    assert copy.model_id != source.model_id and copy.model_config["calibration_factors"] == [1]
    assert copy.meta["calibration"]["factor_names"] == ["time_of_day"] and copy.meta["calibration"]["n"] == 300
    assert copy.module.row_calibration.shape == (3, 3, 32) and copy.module.row_calibration.abs().sum() > 0

    def row_error(gen, seed):  # |mean over samples of (real - generated)| per key, row and colour, in grey levels
        data = SceneImageDataset(scenes, seed=seed, resolution=32)
        b = data.batch(range(300))
        codes = b["codes"].numpy()
        fake = generate_images(gen, codes, np.arange(300) + 10_000 * seed, layouts=b["layout"].numpy())
        diff = (b["image"].numpy().astype(float) - fake.transpose(0, 3, 1, 2)).mean(axis=3)
        keys = calibration_keys(codes, [1], DEFAULT_SCHEMA.cardinalities)
        return np.mean([np.abs(diff[keys == k].mean(axis=0)).mean() for k in range(3)])

    grid = np.array([DEFAULT_SCHEMA.encode(c) for c in DEFAULT_SCHEMA.combinations()])  # one definition, numpy or torch
    expected = np.ravel_multi_index((grid[:, 0], grid[:, 1]), DEFAULT_SCHEMA.cardinalities[:2])
    np.testing.assert_array_equal(calibration_keys(grid, [0, 1], DEFAULT_SCHEMA.cardinalities), expected)
    np.testing.assert_array_equal(calibration_keys(torch.from_numpy(grid), [0, 1], DEFAULT_SCHEMA.cardinalities).numpy(), expected)
    before, after = row_error(source, 5), row_error(copy, 5)
    assert after < 0.6 * before, (before, after)  # other renders and latents than the fit's
    # sampling only: in training mode the copy is the source
    lay = torch.from_numpy(scene_layouts(scenes[:6], 32))
    z, codes = torch.randn(6, 16), torch.tensor([[0, t % 3, 0] for t in range(6)])
    with torch.no_grad():
        torch.testing.assert_close(copy.module.train()(z, codes, lay), source.module.train()(z, codes, lay))
    copy.module.eval()
    codes_np, lay_np = codes.numpy(), lay.numpy()
    whole = generate_images(copy, codes_np, np.arange(6), layouts=lay_np)
    one_by_one = np.concatenate([generate_images(copy, codes_np[i:i + 1], np.arange(6)[i:i + 1], layouts=lay_np[i:i + 1])
                                 for i in range(6)])
    np.testing.assert_array_equal(whole, one_by_one)
    for bad in (["--factors", "season"], ["--n", "0"]):
        target = tmp_path / "bad.pt"
        with pytest.raises(SystemExit):
            mod.main([str(layout_checkpoint), str(target), "--scenes", str(scene_dir), *bad])
        assert not target.exists()
    with pytest.raises(SystemExit, match="already calibrated"):
        mod.main([str(out), str(tmp_path / "twice.pt"), "--scenes", str(scene_dir)])
    assert not (tmp_path / "twice.pt").exists()
    import subprocess
    import sys

    options = Path(__file__).resolve().parents[1] / "scripts" / "set_sampling_options.py"
    done = subprocess.run([sys.executable, str(options), str(out), str(tmp_path / "psi.pt"), "--psi", "0.7"], capture_output=True, text=True)
    assert done.returncode != 0 and "calibrat" in done.stderr and not (tmp_path / "psi.pt").exists()


def test_the_median_calibration_ignores_broken_tail_images_the_mean_follows(scenes):
    """A stand-in generator draws flat mid-grey, except a white image for ~7 % of latents (the broken
    tail a high ψ samples): the median fit matches the clean fit, the mean fit is pulled by the tail."""
    from aigc_synth.models.exported import LoadedGenerator
    from aigc_synth.training.calibration import fit_row_calibration

    class Flat(torch.nn.Module):
        def __init__(self, tail: float):
            super().__init__()
            self.resolution, self.z_dim, self.tail, self.row_calibration = 32, 8, tail, None

        def forward(self, z, codes, layout):
            return (z[:, :1, None, None] > self.tail).float().expand(-1, 3, 32, 32).clone()

    def fit(tail: float, estimator: str) -> np.ndarray:
        gen = LoadedGenerator(module=Flat(tail), family="layout_gan", model_config={}, schema=DEFAULT_SCHEMA,
                              model_id="x" * 64, path="-", meta={})
        data = SceneImageDataset(scenes, seed=3, resolution=32)
        return fit_row_calibration(gen, data, 400, [1], estimator=estimator).table

    tail_shift = {e: np.abs(fit(1.5, e) - fit(99.0, e)).mean() for e in ("median", "mean")}
    assert tail_shift["mean"] > 0.04  # ~7 % of images 127 levels too bright: the mean moves ~0.07
    assert tail_shift["median"] < 0.3 * tail_shift["mean"], tail_shift
    with pytest.raises(ValueError, match="estimator"):
        fit(1.5, "mode")


def test_evaluation_scenes_spread_takes_the_folder_at_even_steps(scenes, tmp_path):
    """A folder is written cell by cell: a small evaluation sample of its first scenes holds one cell, ``spread``
    takes as many scenes as samples at even steps through it instead."""
    import pyarrow.parquet as pq

    from aigc_synth.evaluation.layout import evaluation_scenes

    scene_dir = tmp_path / "scenes"
    scene_dir.mkdir()
    pq.write_table(scenes_to_table(scenes), scene_dir / "part-00000.parquet")
    codes = np.zeros((4, len(DEFAULT_SCHEMA.names)), np.int64)
    first, _ = evaluation_scenes(codes, 0, DEFAULT_SCHEMA, str(scene_dir))
    spread, spread_codes = evaluation_scenes(codes, 0, DEFAULT_SCHEMA, str(scene_dir), spread=True)
    assert [s.scene_id for s in first] == [scenes[i].scene_id for i in range(4)]
    assert [s.scene_id for s in spread] == [scenes[i].scene_id for i in (0, 8, 15, 23)]
    assert {s.num_lanes for s in spread} == {2, 3, 4} and {s.num_lanes for s in first} == {2}
    traffic = DEFAULT_SCHEMA.names.index("traffic")
    assert [DEFAULT_SCHEMA.values("traffic")[c] for c in spread_codes[:, traffic]] == [s.traffic for s in spread]


def test_sample_grid_samples_every_row_in_one_call_with_the_same_images(layout_checkpoint, scenes, tmp_path, monkeypatch):
    """The grid's generated tiles are the per-row samples (same scenes, codes and latent seeds), drawn in full
    micro-batches: one padded call per row made a diffusion model's grid cost as much as a 450-image evaluation."""
    from PIL import Image

    import aigc_synth.sampling.sampler as sampler
    from aigc_synth.evaluation.layout import evaluation_scenes, layout_images
    from aigc_synth.evaluation.layout_table import sample_grid
    from aigc_synth.seeds import LATENT_STREAM, derive_seeds

    calls = []
    real_generate = sampler.generate_images
    monkeypatch.setattr(sampler, "generate_images", lambda *a, **k: calls.append(len(a[1])) or real_generate(*a, **k))
    scene_dir = tmp_path / "scenes"
    scene_dir.mkdir()
    pq.write_table(scenes_to_table(scenes), scene_dir / "part-00000.parquet")
    sample_grid(str(layout_checkpoint), str(tmp_path / "grid.png"), seed=3, columns=4, scale=1, scenes_dir=str(scene_dir))
    rows = len(DEFAULT_SCHEMA.values("weather")) * len(DEFAULT_SCHEMA.values("time_of_day"))
    assert calls == [rows * 4]  # one call (the sampler cuts it into full micro-batches), not one per row
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    gen = load_generator(layout_checkpoint)
    schema, traffic = gen.schema, gen.schema.values("traffic")
    pairs = [(w, t) for w in schema.values("weather") for t in schema.values("time_of_day")]
    codes = np.array([schema.encode({"weather": w, "time_of_day": t, "traffic": traffic[(k + 1) % 3]}) for k, (w, t) in enumerate(pairs)])
    row_scenes, row_codes = evaluation_scenes(codes, 3 + 17, schema, str(scene_dir))
    seeds = derive_seeds(3, np.arange(4), stream=LATENT_STREAM)
    for k in (0, rows - 1):  # the first and last rows, each sampled alone as before
        alone = layout_images(gen, [row_scenes[k]] * 4, np.repeat(row_codes[k][None], 4, 0), seeds)
        r = gen.resolution
        tiles = grid[k * r:(k + 1) * r, r:5 * r]  # column 0 is the real render
        assert np.array_equal(tiles, np.concatenate(list(alone), 1)), k
