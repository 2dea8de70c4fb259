"""Per-sample seeds and latents: the root of the determinism guarantee.

A sample's seed is ``splitmix64(job_seed, sample_id)``, a pure integer function, so any actor can
compute the seed of any sample without coordination. Its latent ``z`` is drawn from a
``torch.Generator`` seeded with that seed alone (as NVlabs EDM's ``generate.py`` does per image),
on the CPU, so the same sample gets the same ``z`` whatever the batch, actor or device.
"""

from __future__ import annotations

import numpy as np
import torch

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)

# Every derive_seeds stream in one place (a new use of per-sample randomness takes a new stream):
LATENT_STREAM = 0  #: the per-sample latent seed (attempt 0)
PLAN_STREAM = 1  #: 1..F: per-factor plan draws (mixture plans; the procedural dataset's conditions)
PERMUTATION_STREAM = 99  #: the Feistel keys of exact plans (indexed by round, not by sample)
GATE_STREAM = 1 << 20  #: + t: the seed of a sample's gate attempt t ≥ 1 (far from the streams above)
CALIBRATION_STREAM = (1 << 22) + 5  #: the latents of a row-colour calibration fit (training/calibration.py)
SCENE_SEED_STREAM = (1 << 21) + 1  #: a layout job's sampled scene: its seed (sampling/layout.py)
SCENE_LANES_STREAM = (1 << 21) + 2  #: a layout job's sampled scene: its lane count (sampling/layout.py)
SCENE_STREAM = PLAN_STREAM + 100  #: which scene a layout-training item shows (data/scene_images.py)
EXTRA_SCENE_STREAM = 201  #: which pool scene a downstream benchmark's extra item shows (benchmarks/downstream)
EPOCH_ORDER_STREAM = 0x5F1E  #: the item order of each epoch of a finite training set (training/trainer.py)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays: a bijective 64-bit mix (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def derive_seeds(job_seed: int, sample_ids: np.ndarray | list[int], stream: int = 0) -> np.ndarray:
    """Per-sample seeds as non-negative int64 (63 bits), a pure function of (job_seed, sample_id, stream).

    ``stream`` separates independent uses of the same ids (e.g. 0 = latents, 1 = plan draws).
    """
    ids = np.asarray(sample_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        base = splitmix64(np.uint64(job_seed & 0xFFFFFFFFFFFFFFFF) ^ (np.uint64(stream) * np.uint64(0xD1B54A32D192ED03)))
        mixed = splitmix64(base ^ splitmix64(ids))
    return (mixed >> np.uint64(1)).astype(np.int64)


def attempt_seeds(job_seed: int, sample_ids: np.ndarray | list[int], attempt: int = 0) -> np.ndarray:
    """The latent seeds of ``sample_ids`` for a given attempt: 0 is the sample's own seed, t ≥ 1 the
    t-th retry of the condition-fidelity gate. A pure function of (job seed, sample id, attempt)."""
    return derive_seeds(job_seed, sample_ids, stream=LATENT_STREAM if attempt == 0 else GATE_STREAM + attempt)


def uniform_from_seeds(seeds: np.ndarray) -> np.ndarray:
    """Map seeds to floats in [0, 1) deterministically (53 random bits)."""
    bits = splitmix64(np.asarray(seeds, dtype=np.int64).astype(np.uint64)) >> np.uint64(11)
    return bits.astype(np.float64) / float(1 << 53)


def latents_for_seeds(seeds: np.ndarray | list[int], z_dim: int) -> torch.Tensor:
    """One standard-normal latent per seed, each from its own CPU generator: (B, z_dim) float32."""
    out = torch.empty(len(seeds), z_dim)
    gen = torch.Generator(device="cpu")
    for i, seed in enumerate(np.asarray(seeds, dtype=np.int64).tolist()):
        gen.manual_seed(int(seed))
        out[i] = torch.randn(z_dim, generator=gen)
    return out
