"""Benchmarks: what generated images are worth to a downstream model (:mod:`.downstream`) and how a job
scales out over many GPU actors on a simulated cluster (:mod:`.scale_out`)."""
