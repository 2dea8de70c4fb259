"""Distribution metrics between two feature sets (rows = samples), in float64 torch.

* :func:`frechet_distance` – ‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½) (Heusel et al. 2017), with the
  matrix square root taken through symmetric eigendecompositions (no scipy): Tr((Σ₁Σ₂)^½) equals
  Σ √λ of Σ₁^½ Σ₂ Σ₁^½, which is symmetric PSD. Biased upward at small N: prefer KID there.
* :func:`kernel_inception_distance` – unbiased MMD² with the cubic polynomial kernel
  (x·y/d + 1)³ (Bińkowski et al. 2018), mean and std over random subsets (seeded).
* :func:`precision_recall` – k-NN manifold precision/recall (Kynkäänniemi et al. 2019), k = 3.
* :func:`density_coverage` – (Naeem et al. 2020), k = 5.

They work on any features; the project's evaluation feeds them the domain classifier's embedding
(or Inception's when the user has local weights).
"""

from __future__ import annotations

import numpy as np
import torch


def _as64(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 2:
        raise ValueError(f"features must be 2-D (samples × dims), got shape {tuple(t.shape)}")
    return t.to(torch.float64)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(a, b) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b``."""
    a, b = _as64(a), _as64(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dims differ: {a.shape[1]} vs {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt
    return float(fd.clamp(min=0))


def _poly_mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
            - 2 * kxy.mean())


def kernel_inception_distance(a, b, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Unbiased KID (cubic polynomial kernel): (mean, std) over ``subsets`` random subsets."""
    a, b = _as64(a), _as64(b)
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError("need at least 2 samples per set for KID")
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        ia = torch.randperm(len(a), generator=gen)[:size]
        ib = torch.randperm(len(b), generator=gen)[:size]
        values.append(_poly_mmd2_unbiased(a[ia], b[ib]))
    v = torch.stack(values)
    return float(v.mean()), float(v.std(unbiased=True)) if len(v) > 1 else 0.0


def _kth_neighbour_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is its own nearest neighbour


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi precision (fake inside the real manifold) and recall (real inside the fake one)."""
    real, fake = _as64(real), _as64(fake)
    r_real, r_fake = _kth_neighbour_radius(real, k), _kth_neighbour_radius(fake, k)
    d = torch.cdist(fake, real)  # (fake, real)
    precision = (d <= r_real[None, :]).any(dim=1).double().mean()
    recall = (d.T <= r_fake[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


def density_coverage(real, fake, k: int = 5) -> tuple[float, float]:
    """Naeem density (how many real k-NN balls hold each fake, / k) and coverage (real balls hit)."""
    real, fake = _as64(real), _as64(fake)
    r_real = _kth_neighbour_radius(real, k)
    inside = torch.cdist(fake, real) <= r_real[None, :]  # (fake, real)
    density = inside.double().sum() / (k * len(fake))
    coverage = inside.any(dim=0).double().mean()
    return float(density), float(coverage)


def real_sample_hits(real, fake, k_recall: int = 3, k_coverage: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per real sample: is it inside the fake manifold (recall's indicator, k = ``k_recall``) and is
    its own k-NN ball hit by a fake (coverage's indicator, k = ``k_coverage``)?

    The means are exactly :func:`precision_recall`'s recall and :func:`density_coverage`'s coverage;
    the per-sample form lets a report split them by condition without changing the radii."""
    real, fake = _as64(real), _as64(fake)
    d = torch.cdist(fake, real)  # (fake, real)
    recalled = (d.T <= _kth_neighbour_radius(fake, k_recall)[None, :]).any(dim=1)
    covered = (d <= _kth_neighbour_radius(real, k_coverage)[None, :]).any(dim=0)
    return recalled.numpy(), covered.numpy()
