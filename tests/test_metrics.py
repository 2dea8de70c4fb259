"""Metric correctness: each test fails if the maths is wrong."""

import numpy as np
import pytest
import torch

from aigc_synth.metrics import density_coverage, frechet_distance, kernel_inception_distance, precision_recall


def _gauss(n, d, seed, mean=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(mean, scale, (n, d))


def test_fd_of_a_set_with_itself_is_zero():
    x = _gauss(500, 16, 0)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_fd_matches_closed_form_for_gaussians():
    # exact moments: FD = ||mu1-mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2); for diagonal S: sum (s1^.5 - s2^.5)^2
    rng = np.random.default_rng(1)
    d = 8
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    # build sets whose sample mean/cov equal the targets exactly (whitened then coloured)
    def exact(mu, var, n=400, seed=0):
        z = np.random.default_rng(seed).normal(size=(n, d))
        z -= z.mean(0)
        z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T))).T
        return z * np.sqrt(var) + mu
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(exact(mu1, s1), exact(mu2, s2, seed=1)) == pytest.approx(expected, rel=1e-6)


def test_fd_grows_with_mean_shift():
    x = _gauss(1000, 4, 0)
    assert frechet_distance(x, _gauss(1000, 4, 1, mean=0.5)) > frechet_distance(x, _gauss(1000, 4, 2))


def test_kid_is_zero_within_std_for_same_distribution_and_positive_otherwise():
    a, b = _gauss(600, 32, 0), _gauss(600, 32, 1)
    mean, std = kernel_inception_distance(a, b, subsets=50, subset_size=300)
    assert abs(mean) <= 2 * std + 1e-4
    shifted_mean, shifted_std = kernel_inception_distance(a, _gauss(600, 32, 2, mean=0.5), subsets=50, subset_size=300)
    assert shifted_mean > 10 * max(std, 1e-6) and shifted_mean > 3 * shifted_std


def test_precision_recall_of_a_set_against_itself_is_one():
    x = _gauss(300, 8, 0)
    assert precision_recall(x, x) == (1.0, 1.0)
    density, coverage = density_coverage(x, x)
    assert coverage == 1.0 and density >= 1.0


def test_coverage_drops_when_samples_collapse_to_one_mode():
    real = _gauss(400, 8, 0)
    healthy = _gauss(400, 8, 1)
    collapsed = np.repeat(real[:1] + 0.01, 400, axis=0)  # every sample at one mode
    _, cov_healthy = density_coverage(real, healthy)
    _, cov_collapsed = density_coverage(real, collapsed)
    assert cov_healthy > 0.8 and cov_collapsed < 0.05
    _, recall_collapsed = precision_recall(real, collapsed)
    assert recall_collapsed < 0.05


def test_metrics_do_not_depend_on_row_order_or_dtype():
    a, b = _gauss(300, 8, 0), _gauss(300, 8, 1, mean=0.2)
    perm = np.random.default_rng(3).permutation(300)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(a[perm], torch.tensor(b, dtype=torch.float32)), rel=1e-5)
    assert precision_recall(a, b) == precision_recall(a[perm], b)


def test_real_sample_hits_are_the_indicators_of_recall_and_coverage():
    from aigc_synth.metrics.distribution import density_coverage, precision_recall, real_sample_hits

    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 8))
    fake = np.concatenate([rng.normal(size=(200, 8)), rng.normal(4.0, 1.0, size=(100, 8))])
    recalled, covered = real_sample_hits(real, fake)
    assert recalled.shape == covered.shape == (300,) and recalled.dtype == bool
    assert recalled.mean() == precision_recall(real, fake)[1]
    assert covered.mean() == density_coverage(real, fake)[1]
    # a fake set that misses half of the real set (one cluster) misses exactly those real samples
    real2 = np.concatenate([rng.normal(size=(150, 8)), rng.normal(8.0, 1.0, size=(150, 8))])
    recalled2, covered2 = real_sample_hits(real2, rng.normal(size=(300, 8)))
    assert covered2[150:].sum() == 0 and covered2[:150].mean() > 0.8 and recalled2[150:].sum() == 0
