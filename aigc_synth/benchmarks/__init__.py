"""Benchmarks that measure what generated images are worth to a downstream model (see :mod:`.downstream`)."""
