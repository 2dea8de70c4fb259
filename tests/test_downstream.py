"""The downstream benchmark (issue 13): disjoint and balanced splits, the imbalanced pool's shares,
equal optimisation for every row, the mixture's counts, a tiny end-to-end run, and the vehicle
detector's training loop moved into the package."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aigc_synth.benchmarks import downstream as D
from aigc_synth.data.layout import scene_layouts
from aigc_synth.data.scene_images import SceneImageDataset, pick_index
from aigc_synth.seeds import PLAN_STREAM
from aigc_synth.errors import SchemaError, UsageError
from aigc_synth.models.exported import export_generator
from aigc_synth.models.registry import build_generator
from aigc_synth.schema import DEFAULT_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
TINY_LAYOUT = {"resolution": 32, "z_dim": 16, "base_channels": 8, "embed_dim": 8, "spade_hidden": 8}
TINY_SIZES = {"pool_size": 60, "pool_scenes": 12, "test_per_combination": 1, "test_scenes": 9, "steps": 2,
              "batch_size": 4, "seeds": (0,), "rare_prob": 0.1, "threads": 1, "classifier_width": 8,
              "classifier_stem": 0, "detector_widths": (8, 8, 8, 8)}
TINY_GENERATOR_OVERRIDES = ["model.resolution=32", "model.z_dim=16", "model.base_channels=8", "model.d_base_channels=8",
                            "model.embed_dim=8", "model.spade_hidden=8", "train.batch_size=4", "train.log_every=1",
                            "train.sample_every=2", "train.checkpoint_every=2"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # module scope: set before the module's other fixtures run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pool_scenes():
    return D.sample_scenes(12, D.POOL_SCENE_SEED_BASE)[0]


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory, pool_scenes) -> Path:
    """A tiny layout generator (random weights, non-trivial BatchNorm), exported like a trained one."""
    torch.manual_seed(0)
    g = build_generator("layout_gan", DEFAULT_SCHEMA.cardinalities, **TINY_LAYOUT)
    with torch.no_grad():
        g.train()
        g(torch.randn(12, 16), torch.zeros(12, 3, dtype=torch.int64), torch.from_numpy(scene_layouts(pool_scenes, 32)))
    g.eval()
    path = tmp_path_factory.mktemp("downstream_gen") / "layout.pt"
    export_generator(path, family="layout_gan", model_params=TINY_LAYOUT, schema=DEFAULT_SCHEMA, generator=g)
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_generator):
    cfg = D.DownstreamConfig(out=str(tmp_path_factory.mktemp("downstream_prep")), generator=str(tiny_generator),
                             **TINY_SIZES)
    cfg.validate()
    prep, _ = D.prepare(cfg, log=lambda _: None)
    return cfg, prep


# ---- the pool's probabilities (SceneImageDataset.condition_probs) ------------------------------------------

def test_pool_shares_match_the_requested_probabilities(pool_scenes):
    probs = D.condition_probs_for(0.02)
    assert probs["weather"]["fog"] == probs["weather"]["snow"] == probs["time_of_day"]["night"] == 0.02
    assert abs(probs["weather"]["clear"] - 0.32) < 1e-12 and abs(probs["time_of_day"]["day"] - 0.49) < 1e-12
    n = 40_000
    codes = D.pool_dataset(pool_scenes, n, probs).items(range(n))[0]
    comp = D.composition(codes)
    for factor, values in probs.items():
        for v, p in values.items():
            assert abs(comp[factor][v] / n - p) < 0.006, (factor, v, comp[factor][v] / n, p)
    assert abs(D.rare_mask(codes).mean() - (1 - 0.96 * 0.98)) < 0.006  # fog, snow or night


def test_default_scene_images_are_unchanged_and_bad_probabilities_are_refused(pool_scenes):
    idx = np.arange(3000)
    plain = SceneImageDataset(pool_scenes, seed=5)
    codes, seeds, scene_index = plain.items(idx)
    expected = np.stack([pick_index(5, idx, PLAN_STREAM + f, c) for f, c in enumerate(DEFAULT_SCHEMA.cardinalities)], 1)
    expected[:, 2] = [DEFAULT_SCHEMA.values("traffic").index(pool_scenes[k].traffic) for k in scene_index]
    np.testing.assert_array_equal(codes, expected)  # the uniform draw is what it always was
    explicit = SceneImageDataset(pool_scenes, seed=5, condition_probs=None)
    a, b = plain.batch(range(4)), explicit.batch(range(4))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["codes"], b["codes"])
    weather_only = SceneImageDataset(pool_scenes, seed=5, condition_probs={"weather": {"fog": 0.5, "snow": 0.5}})
    c2, s2, _ = weather_only.items(idx)
    np.testing.assert_array_equal(c2[:, 1:], codes[:, 1:])  # time of day stays uniform, traffic the scene's
    np.testing.assert_array_equal(s2, seeds)
    assert set(c2[:, 0].tolist()) == {3, 4}
    for bad, err in (({"traffic": {"heavy": 1.0}}, SchemaError), ({"weather": {"hail": 1.0}}, SchemaError),
                     ({"weather": {"fog": 0.5}}, ValueError), ({"time_of_day": {"night": -0.5, "day": 1.5}}, ValueError)):
        with pytest.raises(err):
            SceneImageDataset(pool_scenes, condition_probs=bad)


# ---- the splits -------------------------------------------------------------------------------------------

def test_no_test_image_is_in_any_training_set_and_the_test_set_is_balanced(prepared):
    _, prep = prepared
    test = prep.test
    for name, s in {"pool": prep.pool, "generated": prep.generated, "oracle": prep.oracle, "synthetic": prep.synthetic,
                    **{f"row {r}": s for r, s in prep.rows.items()}}.items():
        assert not test.keys() & s.keys(), name  # no (scene, seed) of the test set
        assert not set(test.scene_ids.tolist()) & set(s.scene_ids.tolist()), name
        assert not set(test.scene_seeds.tolist()) & set(s.scene_seeds.tolist()), name
    assert prep.report["disjointness"]["disjoint"] is True
    combos, counts = np.unique(test.codes, axis=0, return_counts=True)
    assert len(combos) == 45 and counts.min() == counts.max() == 1
    assert D.rare_mask(test.codes).sum() == 27
    # an overlap is refused
    leaky = D.concat_sets(prep.pool, D.ImageSet(test.images[:1], test.codes[:1], test.boxes[:1], test.visible[:1],
                                                test.scene_ids[:1], test.scene_seeds[:1], test.image_seeds[:1],
                                                np.array(["pool"])))
    with pytest.raises(ValueError, match="not disjoint"):
        D.check_disjoint(test, {"pool": leaky})


def test_the_report_counts_the_pool(prepared):
    cfg, prep = prepared
    pool = prep.report["pool"]
    assert pool["n"] == cfg.pool_size == len(prep.pool)
    assert pool["weather"]["fog"] == int((prep.pool.codes[:, 0] == 3).sum())
    assert pool["requested_probabilities"]["weather"]["fog"] == pytest.approx(0.1)
    assert prep.report["generator"]["model_id"] and prep.report["generator"]["trained_on_this_pool"] is False


# ---- the mixture ------------------------------------------------------------------------------------------

def test_b_holds_the_planned_generated_rare_images_and_d_as_many_real_ones(prepared):
    _, prep = prepared
    plan = prep.report["mixture"]
    m = plan["num_generated"]
    assert m > 0 and m == sum(plan["per_cell"].values())
    b, d = prep.rows["b"], prep.rows["d"]
    assert int((b.origin == "generated").sum()) == m and int((b.origin == "pool").sum()) == len(prep.pool)
    assert int((d.origin == "oracle").sum()) == m and int((d.origin == "pool").sum()) == len(prep.pool)
    assert D.rare_mask(b.codes[b.origin == "generated"]).all()  # only rare conditions are added
    np.testing.assert_array_equal(b.codes[b.origin == "generated"], d.codes[d.origin == "oracle"])
    np.testing.assert_array_equal(b.scene_ids[b.origin == "generated"], d.scene_ids[d.origin == "oracle"])
    np.testing.assert_array_equal(b.images[: len(prep.pool)], prep.pool.images)
    assert prep.generated.images.shape[1:] == (64, 64, 3)  # the 32-px generator's images are resized
    assert set(prep.rows["c"].origin.tolist()) == {"synthetic"} and len(prep.rows["c"]) == len(prep.pool)
    cells = D.composition(prep.rows["c"].codes)["cells"]
    assert max(cells.values()) - min(cells.values()) <= 1  # (c) is balanced over weather x time


def test_the_balancing_plan_equalises_the_cells():
    rng = np.random.default_rng(0)
    probs = D.condition_probs_for(0.02)
    codes = np.stack([rng.choice(5, 5000, p=list(probs["weather"].values())),
                      rng.choice(3, 5000, p=list(probs["time_of_day"].values())), rng.integers(0, 3, 5000)], 1)
    plan = D.plan_rare_topup(codes)
    target = plan["target_per_cell"]
    for cell, n in plan["mixture_cells"].items():
        if D.is_rare_cell(*cell.split("/")):
            assert abs(n - target) <= 1, cell
    weather = plan["mixture_weather"]
    assert max(weather.values()) / min(weather.values()) < 1.1
    assert plan["mix_ratio"] == pytest.approx(plan["num_generated"] / 5000, abs=1e-4)
    half = D.plan_rare_topup(codes, mix_ratio=0.5)
    assert half["num_generated"] == 2500 and sum(half["per_cell"].values()) == 2500 and half["mode"] == "mix_ratio"


# ---- equal optimisation -----------------------------------------------------------------------------------

def test_every_row_runs_the_same_steps_and_a_mismatch_raises(prepared):
    _, prep = prepared
    ledger = D.StepLedger(steps=3, batch_size=4)
    for row, n in (("small", 2), ("large", 40)):  # a row with fewer examples still runs every step
        data = prep.pool
        cb, seen = ledger.counter()
        D.train_condition_classifier(data.images[:n], data.codes[:n], data.counts()[:n], 3, 4, seed=0, width=8, stem=0,
                                     callback=cb)
        ledger.record(row, "classifier", 0, seen["steps"], seen["batch_sizes"], n)
        assert seen["steps"] == 3 and seen["batch_sizes"] == {4}
    summary = ledger.verify()
    assert summary["verified"] and {r["steps"] for r in summary["runs"]} == {3}
    with pytest.raises(RuntimeError, match="requires 3 steps of 4"):
        ledger.record("short", "classifier", 0, 2, {4}, 10)
    with pytest.raises(RuntimeError, match="requires 3 steps of 4"):
        ledger.record("wide", "classifier", 0, 3, {8}, 10)
    ledger.records.append({"row": "odd", "model": "detector", "seed": 0, "steps": 3, "batch_size": 4})
    with pytest.raises(RuntimeError, match="same runs"):
        ledger.verify()


# ---- end to end -------------------------------------------------------------------------------------------

def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_end_to_end_run_writes_json_md_png_with_four_rows(tmp_path):
    from aigc_synth.benchmarks import downstream_cli as cli
    from aigc_synth.cli import main

    out = tmp_path / "bench"
    args = ["--out", str(out), "--train-generator-steps", "2", "--seeds", "0", "--steps", "2", "--batch-size", "4",
            "--pool-size", "60", "--pool-scenes", "12", "--test-per-combination", "1", "--test-scenes", "9",
            "--rare-prob", "0.1", "--threads", "1", *[f"--generator-override={o}" for o in TINY_GENERATOR_OVERRIDES]]
    assert main(["benchmark", "downstream", *args]) == 0  # `aigc-synth benchmark downstream ...`
    result = json.loads((out / "downstream.json").read_text())
    assert list(result["rows"]) == ["a", "b", "c", "d"]
    assert result["equal_steps"]["verified"] and result["equal_steps"]["steps"] == 2
    assert {(r["row"], r["model"]) for r in result["equal_steps"]["runs"]} == {(r, m) for r in "abcd" for m in D.MODELS}
    assert all(r["steps"] == 2 and r["batch_size"] == 4 for r in result["equal_steps"]["runs"])
    assert result["generator"]["trained_on_this_pool"] is True  # trained in-process on the pool only
    assert (out / "generator" / "generator.pt").is_file()
    assert result["disjointness"]["disjoint"] is True and result["test"]["combinations"] == 45
    assert result["mixture"]["num_generated"] == result["rows"]["b"]["composition"]["origin"]["generated"]
    for row in result["rows"].values():
        assert {"acc_weather_rare", "acc_weather_common", "ap50_rare", "ap50_common"} <= set(row["summary"])
        assert row["summary"]["acc_weather_rare"]["n"] == 1
    md = (out / "downstream.md").read_text()
    for r in "abcd":
        assert f"| ({r}) |" in md
    assert "AP50 rare" in md and "weather acc rare" in md
    assert (out / "downstream.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".tmp-*"))
    with pytest.raises(SystemExit):  # exactly one generator source
        cli.parse_args(["--out", str(out)])
    with pytest.raises(UsageError, match="exactly one"):
        D.DownstreamConfig(out=str(out)).validate()
    quick = cli.parse_args(["--out", str(out), "--generator", "g.pt", "--quick", "--steps", "7"])
    assert quick.quick and quick.pool_size == D.QUICK["pool_size"] and quick.steps == 7 and quick.seeds == (0, 1, 2)
    assert quick.threads == 1 and cli.parse_args(["--out", str(out), "--generator", "g.pt"]).threads == 0
    assert quick.train_generator_steps == 0  # a given generator is used as it is
    alone = cli.parse_args(["--out", str(out), "--quick"])  # --quick alone trains a short generator on its pool
    assert alone.generator is None and alone.train_generator_steps == D.QUICK_GENERATOR_STEPS


# ---- the vehicle detector's training loop -----------------------------------------------------------------

def test_vehicle_detector_script_help_and_the_moved_training_function(prepared):
    from aigc_synth.models.detector import VehicleCenterNet
    from aigc_synth.training.detector import train_vehicle_detector

    for command in ([str(ROOT / "scripts" / "train_vehicle_detector.py")],
                    ["-m", "aigc_synth.cli", "benchmark", "downstream"]):  # = `aigc-synth benchmark downstream`
        res = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True,
                             timeout=120, cwd=ROOT, check=False)
        assert res.returncode == 0 and "usage:" in res.stdout, res.stderr
    assert _load_script("train_vehicle_detector").train_vehicle_detector is train_vehicle_detector

    _, prep = prepared
    pool = prep.pool
    steps = []
    model = train_vehicle_detector(pool.images[:16], pool.boxes[:16], pool.visible[:16], steps=2, batch_size=4, seed=0,
                                   widths=(8, 8, 8, 8), init_seed=0, progress=False,
                                   callback=lambda step, batch, logs: steps.append((step, batch, logs["loss"])))
    assert isinstance(model, VehicleCenterNet) and not model.training
    assert [s[:2] for s in steps] == [(1, 4), (2, 4)] and all(np.isfinite(s[2]) for s in steps)
    torch.manual_seed(0)
    fresh = VehicleCenterNet((8, 8, 8, 8))
    assert any(not torch.equal(p, q) for p, q in zip(model.state_dict().values(), fresh.state_dict().values()))
    again = train_vehicle_detector(pool.images[:16], pool.boxes[:16], pool.visible[:16], steps=2, batch_size=4, seed=0,
                                   widths=(8, 8, 8, 8), init_seed=0, progress=False)
    for p, q in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(p, q)  # seeded: the same run twice is the same model


def test_cli_benchmark_verb_runs_the_downstream_command_line(tmp_path, capsys):
    from aigc_synth.cli import main

    assert main(["benchmark", "downstream", "--out", str(tmp_path / "x")]) == 2  # no generator source
    assert "one of --generator or --train-generator-steps" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before any work
    assert main(["benchmark", "nosuch"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["benchmark", "downstream", "--help"]) == 0
    assert "aigc-synth benchmark downstream" in capsys.readouterr().out
