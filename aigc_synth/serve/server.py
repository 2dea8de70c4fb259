"""Start and stop the Serve application: every check that a user can fail runs before Ray starts."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aigc_synth.errors import ServeConfigError  # noqa: F401 (re-exported from its former home)
from aigc_synth.config import ServeConfig, ServeRoot
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

    from aigc_synth.models.exported import load_generator_from_bytes
    from aigc_synth.models.exported import resolve_checkpoint_path
    from aigc_synth.runtime.cluster import connect_ray

    cfg = root.serve
    token, warning = validate_serve_config(cfg)
    path = resolve_checkpoint_path(cfg.checkpoint)
    if not path.is_file():
        raise ServeConfigError(f"checkpoint not found: {path}")
    data = Path(path).read_bytes()
    loaded = load_generator_from_bytes(data, source=str(path))  # CheckpointError: one line, exit 2, nothing started
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
    scenes = _scene_model(cfg) if cfg.scenes else None
    need = cfg.num_cpus * cfg.num_replicas + cfg.ingress_cpus + (cfg.scene_num_cpus if scenes else 0.0)
    if need > cpus + 1e-9:
        raise ServeConfigError(f"the app needs {need:g} CPUs ({cfg.num_replicas} × serve.num_cpus={cfg.num_cpus:g} + "
                               f"serve.ingress_cpus={cfg.ingress_cpus:g}) but the cluster has {cpus:g}")

    from ray import serve

    from aigc_synth.serve.app import build_app

    threads = cfg.torch_threads or max(1, int(cfg.num_cpus + 0.5))
    app = build_app(checkpoint_bytes=data, source=str(path), model_id=loaded.model_id, schema=loaded.schema.to_dict(),
                    family=loaded.family, resolution=loaded.resolution,
                    token_digest=token_digest(token) if token else None, num_replicas=cfg.num_replicas,
                    num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, ingress_cpus=cfg.ingress_cpus, torch_threads=threads,
                    compute_batch=cfg.compute_batch, max_n=cfg.max_n, max_body_bytes=cfg.max_body_bytes,
                    max_batch_images=cfg.max_batch_images, batch_wait_timeout_s=cfg.batch_wait_timeout_s, scenes=scenes,
                    layout_scenes=_layout_scenes(loaded))
    serve.start(http_options={"host": str(cfg.host), "port": int(cfg.port)})
    serve.run(app, name=cfg.app_name, route_prefix="/", blocking=False)
    if warning:
        log(warning)
    host = f"[{cfg.host}]" if ":" in str(cfg.host) else str(cfg.host)
    return RunningServer(url=f"http://{host}:{cfg.port}", app_name=cfg.app_name, model_id=loaded.model_id,
                         checkpoint=str(path), auth=token is not None)


def _layout_scenes(loaded) -> dict[str, Any] | None:
    """A layout-conditioned generator draws each image for a scene of the bundled scene model (as
    a job without job.scenes does): its checkpoint path and id; None for condition-only models."""
    from aigc_synth.models.registry import get_family
    from aigc_synth.models.scene_families import BUNDLED_SCENE_CHECKPOINT, load_scene_generator

    if not get_family(loaded.family).layout:
        return None
    return {"scene_checkpoint": str(BUNDLED_SCENE_CHECKPOINT), "scene_model_id": load_scene_generator(BUNDLED_SCENE_CHECKPOINT).model_id}


def _scene_model(cfg: ServeConfig) -> dict[str, Any]:
    """The scene model behind ``POST /scenes``, loaded and checked in the driver (CheckpointError: exit 2)."""
    from aigc_synth.sampling.scene import scene_schema
    from aigc_synth.models.scene_families import load_scene_generator_from_bytes, resolve_scene_checkpoint

    path = resolve_scene_checkpoint(cfg.scene_checkpoint)
    if not path.is_file():
        raise ServeConfigError(f"serve.scene_checkpoint not found: {path}")
    data = path.read_bytes()
    gen = load_scene_generator_from_bytes(data, source=str(path))
    return {"checkpoint_bytes": data, "source": str(path), "model_id": gen.model_id,
            "schema": scene_schema(gen.traffic, gen.lanes).to_dict(), "num_cpus": cfg.scene_num_cpus, "torch_threads": 1,
            "compute_batch": cfg.scene_compute_batch}


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
