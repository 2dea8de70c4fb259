"""Ray: connecting (local instance, ``RAY_ADDRESS``, ``auto``) and sizing the actor pool."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from aigc_synth.errors import JobSpecError, first_line


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on an unreachable ``host:port`` (ray.init would retry for much longer)."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise JobSpecError(f"cannot reach the Ray cluster at {address}: {exc}") from None


def connect_ray(address: str | None, num_cpus: int | None = None) -> float:
    """Join ``address`` / ``RAY_ADDRESS`` / ``auto``, or start a local instance; return seconds taken."""
    import ray

    from aigc_synth.jobs.logfilter import configure_ray_console

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's log lines stay off the console (and in its session logs) unless --verbose / AIGC_SYNTH_VERBOSE=1;
    # before ray.init, which logs the token-authentication warning of a new local cluster
    log_to_driver = configure_ray_console()
    t0 = time.time()
    if ray.is_initialized():
        return 0.0
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto" and not address.startswith(("ray://", "http://", "https://")):
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=log_to_driver)
        else:
            # "local" forces a fresh instance instead of silently joining a `ray start` cluster
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise JobSpecError(f"cannot connect to Ray at {address or 'a new local instance'}: {first_line(exc)}") from None
    return time.time() - t0


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
