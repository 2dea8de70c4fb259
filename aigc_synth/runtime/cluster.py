"""Connecting to Ray (a local instance, ``RAY_ADDRESS``, ``auto``): shared by jobs, serving and the
scene evaluation's replays, so it sits below all of them."""

from __future__ import annotations

import os
import time

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

    from aigc_synth.runtime.logfilter import configure_ray_console

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
