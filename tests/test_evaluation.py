"""Evaluation: the domain classifier, condition metrics, `aigc-synth evaluate`, the generation gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from aigc_synth.data.datasets import ProceduralDrivingDataset
from aigc_synth.metrics.condition import condition_accuracy, condition_kl, inception_score_analogue, mean_pairwise_distance
from aigc_synth.metrics.distribution import density_coverage, frechet_distance, kernel_inception_distance, precision_recall
from aigc_synth.metrics.domain import ClassifierScores, load_domain_classifier
from aigc_synth.schema import DEFAULT_SCHEMA
from aigc_synth.io.reader import verify_output
from tests.helpers import compose_generate, write_shards_in_process


@pytest.fixture(scope="module")
def classifier():
    return load_domain_classifier()


@pytest.fixture(scope="module")
def real_batch():
    b = ProceduralDrivingDataset(180, seed=555, resolution=64).batch(range(180))
    return b["image"].permute(0, 2, 3, 1).numpy(), b["codes"].numpy(), b["vehicle_count"].numpy()


# -- the classifier --------------------------------------------------------------------------------
def test_bundled_classifier_is_versioned_and_accurate_on_fresh_real_scenes(classifier, real_batch):
    assert classifier.classifier_id.startswith("domain-v1-") and len(classifier.classifier_id) == 22
    held = classifier.meta["heldout"]
    assert held["n"] >= 1000 and all(held[f"accuracy_{f}"] >= 0.8 for f in DEFAULT_SCHEMA.names)
    images, codes, counts = real_batch
    scores = classifier.score(images)
    acc = condition_accuracy(codes, scores.predicted_codes(), DEFAULT_SCHEMA)
    assert all(v >= 0.8 for v in acc["per_factor"].values()), acc["per_factor"]
    assert np.abs(scores.count - counts).mean() < 1.5
    assert scores.features.shape == (180, classifier.feature_dim)


def test_scores_do_not_depend_on_how_images_are_batched(classifier, real_batch):
    images = real_batch[0][:70]
    whole = classifier.score(images)
    pieces = [classifier.score(images[i:i + 7]) for i in range(0, 70, 7)]
    joined = np.concatenate([p.features for p in pieces])
    np.testing.assert_allclose(joined, whole.features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([p.probs[0] for p in pieces]), whole.probs[0], rtol=1e-5, atol=1e-7)
    # and the metrics computed from them agree
    ref = classifier.score(real_batch[0][70:140]).features
    assert frechet_distance(ref, joined) == pytest.approx(frechet_distance(ref, whole.features), rel=1e-4)
    assert kernel_inception_distance(ref, joined, subsets=10, subset_size=50)[0] == pytest.approx(
        kernel_inception_distance(ref, whole.features, subsets=10, subset_size=50)[0], rel=1e-3, abs=1e-7)
    assert precision_recall(ref, joined) == precision_recall(ref, whole.features)
    assert density_coverage(ref, joined) == pytest.approx(density_coverage(ref, whole.features))


def test_classifier_checkpoint_of_the_wrong_kind_is_refused(tiny_checkpoint):
    from aigc_synth.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not a domain classifier"):
        load_domain_classifier(tiny_checkpoint)
    with pytest.raises(CheckpointError, match="not found"):
        load_domain_classifier("/nonexistent/classifier.pt")


# -- condition metrics ------------------------------------------------------------------------------
def test_condition_accuracy_and_confusion():
    req = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 0, 1]])
    pred = np.array([[0, 0, 0], [1, 1, 2], [3, 2, 2], [3, 0, 1]])
    acc = condition_accuracy(req, pred, DEFAULT_SCHEMA)
    assert acc["per_factor"] == {"weather": 0.75, "time_of_day": 1.0, "traffic": 0.75}
    assert acc["all_factors"] == 0.5
    cm = np.array(acc["confusion"]["weather"]["matrix"])
    assert cm[2, 3] == 1 and cm.trace() == 3 and cm.sum() == 4
    assert acc["per_condition"]["clear/day/light"] == 1.0 and acc["per_condition"]["overcast/dusk/moderate"] == 0.0


def test_is_analogue_bounds():
    confident_varied = np.eye(5)[np.arange(100) % 5]
    assert inception_score_analogue(confident_varied) == pytest.approx(5.0, rel=1e-3)
    collapsed = np.tile(np.eye(5)[2], (100, 1))
    assert inception_score_analogue(collapsed) == pytest.approx(1.0, rel=1e-3)
    uncertain = np.full((100, 5), 0.2)
    assert inception_score_analogue(uncertain) == pytest.approx(1.0, rel=1e-3)


def test_condition_kl_is_zero_when_the_requested_mix_is_seen_and_positive_otherwise():
    req = np.array([[w, t, r] for w in range(5) for t in range(3) for r in range(3)])
    probs = [np.eye(c)[req[:, f]] for f, c in enumerate(DEFAULT_SCHEMA.cardinalities)]
    assert max(condition_kl(req, probs, req, DEFAULT_SCHEMA).values()) < 1e-4
    wrong = req.copy()
    wrong[:, 0] = 0  # everything looks clear
    kl = condition_kl(req, [np.eye(5)[wrong[:, 0]], *probs[1:]], wrong, DEFAULT_SCHEMA)
    assert kl["weather"] > 1.0 and kl["joint"] > 1.0 and kl["time_of_day"] < 1e-4


def test_diversity_and_coverage_drop_when_samples_collapse_to_one_mode():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 8))
    healthy = rng.normal(size=(300, 8))
    collapsed = real[:1] + 0.01 * rng.normal(size=(300, 8))
    assert mean_pairwise_distance(collapsed) < 0.1 * mean_pairwise_distance(healthy)
    assert density_coverage(real, collapsed)[1] < 0.2 < density_coverage(real, healthy)[1]


# -- aigc-synth evaluate ---------------------------------------------------------------------------
def _eval_cfg(source, out, *extra):
    from aigc_synth.config import compose

    return compose("evaluate", [f"source={source}", f"out_dir={out}", "kid_subsets=10", "kid_subset_size=50", *extra])


def _check_report(out: Path, result: dict, n: int):
    assert (out / "metrics.json").is_file() and json.loads((out / "metrics.json").read_text()) == result
    for name in ("report.md", "per_condition.png", "confusion.png", "grid_real_vs_generated.png"):
        assert (out / name).stat().st_size > 1000, name
    from PIL import Image

    assert Image.open(out / "per_condition.png").size[0] > 300
    o = result["overall"]
    assert result["source"]["n"] == n and result["reference"]["n"] == n
    assert o["fd"] >= 0 and o["kid_std"] >= 0 and 0 <= o["precision"] <= 1 and 0 <= o["coverage"] <= 1
    assert set(o["condition_accuracy"]) == set(DEFAULT_SCHEMA.names)
    assert result["feature_extractor"]["id"].startswith("domain-v1-")
    assert "| weather |" in (out / "report.md").read_text()


def test_evaluate_a_checkpoint_writes_metrics_and_report(tiny_checkpoint, tmp_path):
    from aigc_synth.evaluation import EvaluationError, evaluate

    out = tmp_path / "eval"
    result = evaluate(_eval_cfg(tiny_checkpoint, out, "n_per_condition=3"), progress=False, log=lambda *a: None)
    _check_report(out, result, 135)
    assert len(result["per_condition"]) == 45 and result["sampling_img_per_s"] > 0
    # a random network is far from real scenes: its KID is far above zero, the reference's own accuracy high
    assert result["overall"]["kid"] > 2 * result["overall"]["kid_std"] > 0
    # (32-px scenes upscaled: weather and light stay readable; small vehicles, hence traffic, less so)
    ref_acc = result["reference_condition_accuracy"]
    assert ref_acc["weather"] >= 0.8 and ref_acc["time_of_day"] >= 0.9
    with pytest.raises(EvaluationError, match="already holds an evaluation"):
        evaluate(_eval_cfg(tiny_checkpoint, out, "n_per_condition=3"), progress=False, log=lambda *a: None)


def test_evaluate_a_job_output_through_the_cli(ray_session, tiny_checkpoint, tmp_path, capsys):
    from aigc_synth.cli import main
    from aigc_synth.jobs.generate import run_generation

    job = tmp_path / "job"
    run_generation(compose_generate([f"output_dir={job}", f"job.checkpoint={tiny_checkpoint}", "job.num_samples=90",
                                     "job.shard_size=45", "preview=false"]), progress=False)
    out = tmp_path / "eval"
    assert main(["evaluate", f"source={job}", f"out_dir={out}", "kid_subsets=10", "kid_subset_size=50", "max_samples=60"]) == 0
    assert "report:" in capsys.readouterr().out
    result = json.loads((out / "metrics.json").read_text())
    assert result["source"]["kind"] == "job_output" and result["source"]["n"] == 60
    _check_report(out, result, 60)
    # the same output with standard Inception metrics from a local (here random) weights file
    from aigc_synth.metrics.inception import save_random_inception_weights

    weights = save_random_inception_weights(tmp_path / "inception.pth")
    out2 = tmp_path / "eval_inception"
    assert main(["evaluate", f"source={job}", f"out_dir={out2}", "kid_subsets=5", "kid_subset_size=4", "max_samples=6",
                 f"inception_weights={weights}"]) == 0
    inc = json.loads((out2 / "metrics.json").read_text())["inception"]
    assert inc["fid"] >= 0 and inc["is_mean"] >= 1 and inc["num_fake"] == 6
    assert "## Inception (local weights)" in (out2 / "report.md").read_text()


def test_evaluate_refuses_bad_requests_before_any_work(tmp_path, capsys):
    from aigc_synth.cli import main

    out = tmp_path / "eval"
    assert main(["evaluate", "n_per_condition=1", f"out_dir={out}"]) == 2
    assert "n_per_condition must be at least 2" in capsys.readouterr().err
    assert main(["evaluate", "reference=/nonexistent/folder", f"out_dir={out}"]) == 2
    assert main(["evaluate", "source=/nonexistent.pt", f"out_dir={out}"]) == 2
    assert not out.exists()


# -- the generation gate ---------------------------------------------------------------------------
class _BrightnessJudge:
    """A stand-in classifier: an image 'shows' its requested condition iff it is bright enough."""

    def __init__(self, codes, threshold):
        self.codes, self.threshold = codes, threshold

    def score(self, images):
        bright = images.reshape(len(images), -1).mean(1) > self.threshold
        probs = []
        for f, c in enumerate(DEFAULT_SCHEMA.cardinalities):
            p = np.full((len(images), c), 0.1 / (c - 1))
            p[np.arange(len(images)), (self.codes[:len(images), f] + (~bright)) % c] = 0.9
            probs.append(p)
        return ClassifierScores(np.zeros((len(images), 4)), probs, np.zeros(len(images)))


def test_gate_retries_rejects_from_the_next_derived_seeds(tiny_checkpoint):
    from aigc_synth.models.exported import load_generator
    from aigc_synth.jobs.gate import DomainJudge, gated_sample
    from aigc_synth.sampling.base import SampleBatch
    from aigc_synth.sampling.sampler import generate_images
    from aigc_synth.seeds import GATE_STREAM, attempt_seeds, derive_seeds

    gen = load_generator(tiny_checkpoint)
    ids = np.arange(100, 164)
    codes = np.zeros((64, 3), np.int64)  # one condition: the stand-in judge compares against it
    first = derive_seeds(7, ids)
    render = lambda c, s: generate_images(gen, c, s)  # noqa: E731
    plain = render(codes, first)
    threshold = float(np.median(plain.reshape(64, -1).mean(1)))  # about half pass the first try
    judge = DomainJudge(_BrightnessJudge(codes, threshold), min_confidence=0.5)

    def sample(sample_ids, attempt):  # a sampler of one condition, seeded like a job's
        seeds, c = attempt_seeds(7, sample_ids, attempt), np.zeros((len(sample_ids), 3), np.int64)
        return SampleBatch(sample_ids=np.asarray(sample_ids), columns={"seed": seeds}, images=render(c, seeds), codes=c)

    def gated():
        batch = gated_sample(sample, judge, ids, max_tries=4)
        return batch.images, batch.columns

    images, cols = gated()
    first_ok = plain.reshape(64, -1).mean(1) > threshold
    assert 0 < first_ok.sum() < 64
    # first-try passes are untouched; every other row was retried
    assert (cols["gate_attempts"][first_ok] == 1).all() and (cols["gate_attempts"][~first_ok] >= 2).all()
    assert (images[first_ok] == plain[first_ok]).all() and (cols["seed"][first_ok] == first[first_ok]).all()
    assert cols["gate_passed"].sum() > first_ok.sum()  # retries rescue some
    # a rescued row is exactly the image of its recorded seed (from stream GATE_STREAM + attempt - 1)
    rescued = np.flatnonzero(~first_ok & cols["gate_passed"])
    for i in rescued[:5]:
        t = int(cols["gate_attempts"][i]) - 1
        assert cols["seed"][i] == derive_seeds(7, ids[i:i + 1], stream=GATE_STREAM + t)[0]
        assert (render(codes[i:i + 1], cols["seed"][i:i + 1])[0] == images[i]).all()
    assert (cols["gate_confidence"][cols["gate_passed"]] == np.float32(0.9 ** 3)).all()
    # pure function of (job, ids): the same call gives the same bits
    again, cols2 = gated()
    assert (again == images).all() and all((cols[k] == cols2[k]).all() for k in cols)


def _gate_cfg(out, ckpt, *extra):
    return compose_generate([f"output_dir={out}", f"job.checkpoint={ckpt}", "job.num_samples=24", "job.shard_size=12",
                             "preview=false", "job.gate.enabled=true", "job.gate.max_tries=3", *extra])


@pytest.fixture(scope="module")
def gated_runs(ray_session, tmp_path_factory):
    """The bundled generator, gated: a Ray job with 2 actors × batch 64 (``a``), and the same job's shards
    written in this process by one worker × batch 16 (``b``, no manifest)."""
    from aigc_synth.jobs.generate import run_generation

    root = tmp_path_factory.mktemp("gate")
    man_a = run_generation(_gate_cfg(root / "a", "default", "resources.actors=2", "resources.batch_size=64"), progress=False)
    write_shards_in_process(_gate_cfg(root / "b", "default", "resources.actors=1", "resources.batch_size=16"))
    return {"a": (root / "a", man_a), "b": root / "b"}


def test_gate_records_accept_rates_and_per_row_confidence(gated_runs):
    out, man = gated_runs["a"]
    g = man["gate"]
    assert g["classifier_id"].startswith("domain-v1-") and g["max_tries"] == 3
    assert sum(r["rows"] for r in g["per_condition"].values()) == 24
    assert 0 < g["accept_rate_first_try"] <= g["pass_rate"] <= 1 and g["mean_attempts"] >= 1
    if g["accept_rate_first_try"] < 1:  # retries happened and were counted
        assert g["mean_attempts"] > 1
    t = pq.read_table(out / "parquet")
    conf, attempts, passed = (t.column(c).to_numpy() for c in ("gate_confidence", "gate_attempts", "gate_passed"))
    assert ((conf >= 0) & (conf <= 1)).all() and set(attempts) <= {1, 2, 3}
    assert (attempts[~passed] == 3).all()  # a failing sample used every try
    assert passed.mean() == pytest.approx(g["pass_rate"], abs=1e-4)
    assert verify_output(out) == []


def test_gated_output_is_identical_across_actor_counts(gated_runs):
    (a, man_a), b = gated_runs["a"], gated_runs["b"]
    shards = sorted((b / "parquet").iterdir())
    assert len(shards) == len(man_a["shards"]) == 2
    assert all(p.read_bytes() == (a / "parquet" / p.name).read_bytes() for p in shards)


def test_gate_needs_parquet_and_a_matching_classifier(tiny_checkpoint, tmp_path):
    from aigc_synth.errors import JobSpecError
    from aigc_synth.jobs.spec import validate_job

    with pytest.raises(JobSpecError, match="needs 'parquet'"):
        validate_job(_gate_cfg(tmp_path / "o", tiny_checkpoint, "job.formats=[png]"))
    with pytest.raises(JobSpecError, match="max_tries"):
        validate_job(_gate_cfg(tmp_path / "o", tiny_checkpoint, "job.gate.max_tries=0"))
    with pytest.raises(JobSpecError, match="not a domain classifier"):
        validate_job(_gate_cfg(tmp_path / "o", tiny_checkpoint, f"job.gate.classifier={tiny_checkpoint}"))
    assert not (tmp_path / "o").exists()
