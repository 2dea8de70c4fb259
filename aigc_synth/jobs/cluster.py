"""Sizing a job's actor pool from the cluster's resources (connecting: :mod:`aigc_synth.runtime.cluster`)."""

from __future__ import annotations

from dataclasses import dataclass

from aigc_synth.errors import JobSpecError


@dataclass
class PoolPlan:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    torch_threads: int
    cluster_cpus: float
    cluster_gpus: float


def plan_pool(resources, cluster_cpus: float, cluster_gpus: float) -> PoolPlan:
    """Size the actor pool so it always leaves ``reserve_cpus`` for Ray Data's other tasks.

    On 2 CPUs, two actors of 1 CPU each starve the read task and Ray waits forever; here the
    default gives each actor (CPUs − reserve) / actors, e.g. 0.75 each, and fails fast with a
    clear message when a request cannot fit.
    """
    gpus = float(resources.num_gpus or 0)
    reserve = float(resources.reserve_cpus)
    if gpus > 0:
        if cluster_gpus <= 0:
            raise JobSpecError(f"resources.num_gpus={gpus} per actor but the Ray cluster has no GPUs "
                               f"(cluster resources: {cluster_cpus:g} CPU, 0 GPU); use resources.num_gpus=0 to run on CPUs")
        actors = resources.actors or max(1, int(cluster_gpus // gpus))
        if actors * gpus > cluster_gpus + 1e-9:
            raise JobSpecError(f"{actors} actors × {gpus:g} GPU need {actors * gpus:g} GPUs but the cluster has {cluster_gpus:g}")
    else:
        actors = resources.actors or max(1, int(round(cluster_cpus - reserve)))
    free = cluster_cpus - reserve
    if resources.cpus_per_actor is not None:
        cpus = float(resources.cpus_per_actor)
    elif gpus > 0:
        cpus = min(1.0, free / actors) if free > 0 else 0.0
    else:
        cpus = free / actors if free > 0 else 0.0
    if cpus <= 0 or actors * cpus > free + 1e-9:
        raise JobSpecError(f"cannot fit {actors} actor(s) × {cpus:g} CPU on {cluster_cpus:g} CPUs while keeping "
                           f"{reserve:g} CPU free for Ray Data's read/write tasks; lower resources.actors or resources.cpus_per_actor")
    threads = max(1, int(cpus + 0.5))
    return PoolPlan(actors, round(cpus, 4), gpus, threads, cluster_cpus, cluster_gpus)


def encode_pool(resources, pool: PoolPlan) -> tuple[float, int]:
    """``(CPUs per encode actor, encode actors)`` of the separate encode stage (``resources.png_stage``).

    Each actor takes ``min(1, reserve_cpus)`` CPU (at least 0.1); there are ``resources.encode_actors``
    of them, or by default as many as the CPUs the generator pool leaves hold, at most 4 per generator
    actor (a GAN on a GPU outruns several encode cores; each encoder is a process of its own, so the
    cap bounds the memory), at least 1 (``plan_pool`` always leaves the reserve free).
    """
    cpus = max(0.1, min(1.0, float(resources.reserve_cpus)))
    free = pool.cluster_cpus - pool.actors * pool.cpus_per_actor
    if resources.encode_actors is not None:
        count = int(resources.encode_actors)
        if count < 1 or count * cpus > free + 1e-9:
            raise JobSpecError(f"resources.encode_actors={count} × {cpus:g} CPU does not fit the {free:g} CPU the "
                               f"generator pool leaves free; lower it or leave it unset (automatic)")
        return cpus, count
    return cpus, max(1, min(int((free + 1e-9) // cpus), 4 * pool.actors))
