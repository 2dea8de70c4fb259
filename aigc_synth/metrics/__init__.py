"""Offline metrics in a feature space: Fréchet distance, KID, precision/recall, density/coverage."""

from aigc_synth.metrics.distribution import (
    density_coverage,
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
)

__all__ = ["density_coverage", "frechet_distance", "kernel_inception_distance", "precision_recall"]
