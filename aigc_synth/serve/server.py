"""Start and stop the Serve application: every check that a user can fail runs before Ray starts."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable

from aigc_synth.errors import ServeConfigError  # noqa: F401 (re-exported from its former home)
from aigc_synth.config import ServeConfig, ServeRoot
from aigc_synth.sampling.scene import SCENE_KIND
from aigc_synth.serve.protocol import TOKEN_ENV, check_bind, token_digest


@dataclass
class RunningServer:
    url: str
    app_name: str
    model_id: str
    checkpoint: str
    auth: bool


def resolve_token(cfg: ServeConfig) -> str | None:
    """``serve.token``, else ``$AIGC_SYNTH_TOKEN``; blank counts as unset."""
    token = cfg.token if cfg.token not in (None, "") else os.environ.get(TOKEN_ENV, "")
    token = str(token).strip()
    return token or None


def validate_serve_config(cfg: ServeConfig) -> tuple[str | None, str | None]:
    """Check the config (pure, nothing started); return (token, warning or None)."""
    checks = [
        (isinstance(cfg.port, int) and 0 < cfg.port < 65536, f"serve.port must be in 1..65535, got {cfg.port}"),
        (isinstance(cfg.num_replicas, int) and cfg.num_replicas >= 1, f"serve.num_replicas must be >= 1, got {cfg.num_replicas}"),
        (cfg.num_cpus is not None and cfg.num_cpus >= 0, f"serve.num_cpus must be >= 0, got {cfg.num_cpus}"),
        (cfg.num_gpus is not None and cfg.num_gpus >= 0, f"serve.num_gpus must be >= 0, got {cfg.num_gpus}"),
        (cfg.ingress_cpus is not None and cfg.ingress_cpus >= 0, f"serve.ingress_cpus must be >= 0, got {cfg.ingress_cpus}"),
        (isinstance(cfg.max_n, int) and cfg.max_n >= 1, f"serve.max_n must be >= 1, got {cfg.max_n}"),
        (isinstance(cfg.max_body_bytes, int) and cfg.max_body_bytes >= 256, f"serve.max_body_bytes must be >= 256, got {cfg.max_body_bytes}"),
        (isinstance(cfg.max_batch_images, int) and cfg.max_batch_images >= 1, f"serve.max_batch_images must be >= 1, got {cfg.max_batch_images}"),
        (cfg.batch_wait_timeout_s is not None and cfg.batch_wait_timeout_s >= 0, f"serve.batch_wait_timeout_s must be >= 0, got {cfg.batch_wait_timeout_s}"),
        (isinstance(cfg.compute_batch, int) and cfg.compute_batch >= 1, f"serve.compute_batch must be >= 1, got {cfg.compute_batch}"),
        (cfg.torch_threads is None or cfg.torch_threads >= 1, f"serve.torch_threads must be >= 1 (or null), got {cfg.torch_threads}"),
        (bool(str(cfg.host).strip()), "serve.host must not be empty"),
    ]
    for ok, message in checks:
        if not ok:
            raise ServeConfigError(message)
    token = resolve_token(cfg)
    try:
        warning = check_bind(str(cfg.host), token)
    except ValueError as exc:
        raise ServeConfigError(str(exc)) from None
    return token, warning


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServeConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another serve.port") from None


def start_server(root: ServeRoot, log: Callable[[str], Any] = lambda m: print(m, file=sys.stderr),
                 on_ray_connected: Callable[[], Any] | None = None) -> RunningServer:
    """Validate, load the checkpoint, connect Ray, deploy; return once the app answers.

    ``on_ray_connected`` runs right after Ray is up (before deploying): the CLI installs its signal
    handlers there, since ``ray.init`` replaces them and a stop signal may come during deployment."""
    import ray

    from aigc_synth.runtime.cluster import connect_ray

    cfg = root.serve
    token, warning = validate_serve_config(cfg)
    # every endpoint's job, resolved by its kind as a job's is (CheckpointError & co: one line, exit 2, nothing started)
    generate = _endpoint(cfg.sampler, cfg.checkpoint, "checkpoint", cfg.compute_batch, cfg.max_batch_images, cfg.sampling)
    endpoints = {"generate": {**generate, "deployment": "Generator", "num_replicas": cfg.num_replicas, "num_cpus": cfg.num_cpus,
                              "num_gpus": cfg.num_gpus, "max_batch_rows": cfg.max_batch_images,
                              "torch_threads": cfg.torch_threads or max(1, int(cfg.num_cpus + 0.5))}}
    if cfg.scenes:
        scenes = _endpoint(SCENE_KIND.name, cfg.scene_checkpoint, "scene_checkpoint", cfg.scene_compute_batch, cfg.max_n)
        endpoints["scenes"] = {**scenes, "deployment": "SceneGenerator", "num_replicas": 1, "num_cpus": cfg.scene_num_cpus,
                               "num_gpus": 0.0, "max_batch_rows": cfg.max_n, "torch_threads": 1}
    local = not ray.is_initialized() and not (root.ray.address or os.environ.get("RAY_ADDRESS"))
    if local:  # a local proxy would fail to bind later, inside Ray, with a less clear error
        _check_port_free(str(cfg.host), cfg.port)
    connect_ray(root.ray.address, root.ray.num_cpus)
    if on_ray_connected is not None:
        on_ray_connected()
    cluster = ray.cluster_resources()
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    if cfg.num_gpus > 0 and gpus < cfg.num_gpus * cfg.num_replicas:
        raise ServeConfigError(f"serve.num_gpus={cfg.num_gpus:g} × {cfg.num_replicas} replica(s) but the Ray cluster has "
                               f"{gpus:g} GPU(s); use serve.num_gpus=0 to run on CPUs")
    need = cfg.num_cpus * cfg.num_replicas + cfg.ingress_cpus + (cfg.scene_num_cpus if cfg.scenes else 0.0)
    if need > cpus + 1e-9:
        raise ServeConfigError(f"the app needs {need:g} CPUs ({cfg.num_replicas} × serve.num_cpus={cfg.num_cpus:g} + "
                               f"serve.ingress_cpus={cfg.ingress_cpus:g}) but the cluster has {cpus:g}")

    from ray import serve

    from aigc_synth.serve.app import build_app

    app = build_app(endpoints=endpoints, token_digest=token_digest(token) if token else None, ingress_cpus=cfg.ingress_cpus,
                    max_n=cfg.max_n, max_body_bytes=cfg.max_body_bytes, batch_wait_timeout_s=cfg.batch_wait_timeout_s)
    serve.start(http_options={"host": str(cfg.host), "port": int(cfg.port)})
    serve.run(app, name=cfg.app_name, route_prefix="/", blocking=False)
    if warning:
        log(warning)
    host = f"[{cfg.host}]" if ":" in str(cfg.host) else str(cfg.host)
    job = generate["job"]
    return RunningServer(url=f"http://{host}:{cfg.port}", app_name=cfg.app_name, model_id=job["model_id"],
                         checkpoint=job["checkpoint"], auth=token is not None)


def _endpoint(kind_name: str, checkpoint: str | None, key: str, compute_batch: int, batch_size: int,
              sampling: Any = None) -> dict[str, Any]:
    """``{kind, job, checkpoint_bytes}`` of one endpoint, checked in the driver: ServeConfigError naming ``serve.<key>``."""
    from aigc_synth.errors import JobSpecError
    from aigc_synth.jobs.spec import serving_job

    try:
        kind, job, data = serving_job(kind_name, checkpoint, compute_batch, batch_size, sampling)
    except JobSpecError as exc:
        raise ServeConfigError(f"serve.{key}: {exc}") from None
    return {"kind": kind, "job": job, "checkpoint_bytes": data}


def stop_server(*, shutdown_ray: bool = False, ray_terminating: bool = False) -> None:
    """Shut Serve down (controller, proxies, replicas); the Ray instance stays unless ``shutdown_ray``.

    ``ray_terminating``: the local Ray that this process started is being stopped with it (``aigc-synth serve``
    got SIGTERM). A SIGTERM to the process group also reaches that Ray's GCS, raylet and autoscaler monitor:
    they are our children, in our group, and Ray blocks only SIGINT in them. Their SIGTERM handlers start a
    graceful shutdown that stalls (measured: still alive 8 s later), and with it nothing answers Serve's
    controller any more: ``serve.shutdown()`` waits its full 30 s, then ``ray.shutdown()`` ~8 s more (5 s for
    the stalled raylet, then SIGTERM + 1 s + SIGKILL per process): 44 s to over a minute in all. Serve's actors
    live in that Ray and go with it, so SIGKILL its processes at once instead (their workers exit with their
    raylet). The caller should then leave with ``os._exit``: ``ray.shutdown()``, also the one ``atexit`` runs,
    still spends 5 s on the driver's disconnect from the dead raylet.
    """
    import ray
    from ray import serve

    if ray_terminating:
        # the Node object of the instance ray.init started here (None when this process joined a cluster)
        node = getattr(ray._private.worker, "_global_node", None)
        if node is not None:
            node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)  # SIGKILL, then reap
        return
    serve.shutdown()
    if shutdown_ray:
        ray.shutdown()
