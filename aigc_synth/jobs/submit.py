"""``aigc-synth submit``: run a generation job on an existing Ray cluster through its job server.

::

    aigc-synth submit [--address http://127.0.0.1:8265] [--no-wait] [--submission-id ID] -- [generate overrides]

Order of work in :func:`submit_generation`: compose the ``generate`` config locally (a misspelled
override fails here, exit 2, nothing submitted) → pin relative paths to absolute ones → compose
the exact override list the job will run once more → check the job server answers (a few seconds
at most) → submit ``aigc-synth generate <overrides>`` → stream its logs until it ends.

Choices:

* The entrypoint is built as a list and joined with :func:`shlex.join`, so no user text is ever
  interpreted by the job's shell.
* The job runs in another working directory (Ray's runtime-env directory on the head), so a
  relative ``output_dir`` (including the default ``outputs/<name>-<time>``) and a relative
  ``job.checkpoint`` are resolved against the submitter's current directory and passed as
  absolute overrides. The output directory must be on storage the cluster's nodes see.
* ``runtime_env`` ships this package's source as ``py_modules`` (the ``aigc_synth`` directory,
  ~5 MiB with the bundled model, ``__pycache__`` excluded): the job runs exactly the code that
  submitted it, never a stale copy installed on the cluster, and nothing else from the checkout
  (``runs/``, ``.venv/``, ``outputs/``) is uploaded. The cluster must still have the
  dependencies (torch, ray[data], ...) and the ``aigc-synth`` script on the PATH it was started
  with (true for a head started from this project's venv and for the KubeRay images).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shlex
import time
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from aigc_synth.config import compose
from aigc_synth.errors import SubmitError, UsageError, first_line
from aigc_synth.io.atomic import join_location
from aigc_synth.models.exported import is_bundled_name

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
RUNTIME_ENV_EXCLUDES = ["__pycache__", "*.pyc", ".pytest_cache"]
CONNECT_TIMEOUT_S = 5.0
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./+@:-]+$")


def default_address() -> str:
    """``$RAY_API_SERVER_ADDRESS`` or ``$RAY_ADDRESS`` when it is an http(s) URL, else the local dashboard."""
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(var, "").strip()
        if value.startswith(("http://", "https://")):
            return value.rstrip("/")
    return DEFAULT_ADDRESS


def default_runtime_env() -> dict[str, Any]:
    env: dict[str, Any] = {"py_modules": [str(PACKAGE_DIR)], "excludes": list(RUNTIME_ENV_EXCLUDES)}
    if os.environ.get("AIGC_SYNTH_CONF"):  # a custom config directory: the job must compose the same configs
        env["env_vars"] = {"AIGC_SYNTH_CONF": str(Path(os.environ["AIGC_SYNTH_CONF"]).resolve())}
    return env


def _hydra_value(value: str) -> str:
    """Quote a string for a Hydra override value (paths with spaces, commas, quotes...)."""
    if _PLAIN_VALUE.match(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _absolute(path: str) -> str | None:
    """The absolute form of a relative local path; None when it is already absolute, ``~``-based or a URI."""
    if not path or path.startswith("~") or os.path.isabs(path) or "://" in path:
        return None
    return os.path.abspath(path)


def build_job_overrides(overrides: Sequence[str]) -> tuple[list[str], Any]:
    """Validate ``overrides`` locally and return (the overrides the job will run, their composed config).

    Raises :class:`UsageError` for a bad override, before anything touches the network.
    """
    cfg = compose("generate", overrides)
    out = _absolute(cfg.output_dir)
    ckpt = cfg.job.checkpoint
    ckpt_abs = None if is_bundled_name(ckpt) else _absolute(ckpt)
    replaced = {"output_dir"} | ({"job.checkpoint"} if ckpt_abs else set())
    pinned = [o for o in overrides if o.split("=", 1)[0].strip() not in replaced]
    # always pin output_dir: the default contains ${now:...}, which the job would resolve to another time
    pinned.append(f"output_dir={_hydra_value(out or cfg.output_dir)}")
    if ckpt_abs:
        pinned.append(f"job.checkpoint={_hydra_value(ckpt_abs)}")
    final = compose("generate", pinned)  # the exact argv the job runs must compose too
    if final.output_dir != (out or cfg.output_dir):
        raise UsageError(f"output_dir {out!r} does not survive Hydra quoting; pick a simpler path")
    return pinned, final


def entrypoint_for(overrides: Sequence[str]) -> str:
    return shlex.join(["aigc-synth", "generate", *overrides])


def _check_address(address: str) -> str:
    address = address.strip().rstrip("/")
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--address must be the job server's http(s) URL, e.g. {DEFAULT_ADDRESS} "
                         f"(the dashboard port, not the GCS port 6379), got {address!r}")
    return address


def _local_token_headers(address: str) -> dict[str, str]:
    """The local Ray token for a loopback job server when ``RAY_AUTH_MODE`` is unset.

    ``ray start --head`` enables token auth when ``~/.ray/auth_token`` exists, but the job SDK only
    sends the token when ``RAY_AUTH_MODE=token``. Like ``ray.init()`` discovering a local cluster,
    the token is sent on its own only to this machine; set ``RAY_AUTH_MODE=token`` for remote ones.
    """
    if os.environ.get("RAY_AUTH_MODE") is not None or urlsplit(address).hostname not in _LOOPBACK:
        return {}
    try:
        from ray._raylet import AuthenticationTokenLoader

        loader = AuthenticationTokenLoader.instance()
        if loader.has_token(ignore_auth_mode=True):
            return {"Authorization": f"Bearer {loader.get_raw_token(ignore_auth_mode=True)}"}
    except Exception:  # private API moved: fall back to the SDK's own handling
        pass
    return {}


def _probe(address: str, headers: dict[str, str], timeout_s: float) -> None:
    """Fail within ``timeout_s`` when nothing answers (the SDK's own check has no timeout)."""
    import requests

    try:
        r = requests.get(f"{address}/api/version", headers=headers, timeout=timeout_s)
    except requests.exceptions.RequestException as exc:
        kind = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "connection failed"
        raise SubmitError(f"cannot reach the Ray job server at {address} ({kind}); start a head with "
                          f"`ray start --head --dashboard-host=127.0.0.1` or pass --address") from None
    if r.status_code in (401, 403):
        raise SubmitError(f"the Ray job server at {address} requires a token (HTTP {r.status_code}): "
                          f"set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or ~/.ray/auth_token)")
    if r.status_code != 200:
        raise SubmitError(f"{address}/api/version answered HTTP {r.status_code}: is this a Ray dashboard "
                          f"with the job server (ray[default]) ?")


def _tail_logs(client, submission_id: str, log: Callable[[str], Any]) -> None:
    async def follow() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            for line in chunk.splitlines():
                log(line)

    asyncio.run(follow())


def submit_generation(overrides: Sequence[str], address: str | None = None, wait: bool = True,
                      log: Callable[[str], Any] = print, *, runtime_env: dict[str, Any] | None = None,
                      submission_id: str | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                      poll_s: float = 1.0) -> dict[str, Any]:
    """Submit ``aigc-synth generate <overrides>`` to the job server at ``address``; optionally wait.

    Returns ``{"submission_id", "status", "message", "output_dir", "manifest", "entrypoint",
    "address"}``; ``status`` is the terminal :class:`ray.job_submission.JobStatus` value when
    ``wait`` (else ``"SUBMITTED"``). Raises :class:`UsageError` (bad overrides/address, nothing
    submitted) or :class:`SubmitError` (unreachable server, refused submission).
    """
    job_overrides, cfg = build_job_overrides(overrides)
    address = _check_address(address or default_address())
    entrypoint = entrypoint_for(job_overrides)
    runtime_env = default_runtime_env() if runtime_env is None else runtime_env
    try:
        from ray.job_submission import JobStatus, JobSubmissionClient
    except ImportError as exc:
        raise UsageError(f"job submission needs ray[default] ({exc}): pip install 'ray[default]==2.60.0'") from None

    for name in ("ray.dashboard.modules.job.sdk", "ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)  # upload / websocket chatter; we log our own lines
    headers = _local_token_headers(address)
    _probe(address, headers, connect_timeout_s)
    try:
        client = JobSubmissionClient(address, headers=headers or None)
        sid = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id,
                                metadata={"aigc_synth.output_dir": str(cfg.output_dir)})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SubmitError(f"submission to {address} failed: {first_line(exc)}") from None
    out = str(cfg.output_dir)
    result = {"submission_id": sid, "status": "SUBMITTED", "message": "", "output_dir": out,
              "manifest": join_location(out, "manifest.json"), "entrypoint": entrypoint, "address": address}
    log(f"submitted {sid} to {address}: {entrypoint}")
    if not wait:
        log(f"follow it with: ray job logs --follow --address {address} {sid}")
        return result

    try:
        _tail_logs(client, sid, log)
    except Exception as exc:  # the log stream broke (e.g. the head restarted): keep polling the status
        log(f"(log stream ended early: {type(exc).__name__}: {str(exc)[:200]}; polling the job status)")
    while True:
        try:
            status = client.get_job_status(sid)
        except Exception as exc:
            raise SubmitError(f"lost the job server at {address} while waiting for {sid}: "
                              f"{first_line(exc, 200)}") from None
        if JobStatus(status).is_terminal():
            break
        time.sleep(poll_s)
    info = client.get_job_info(sid)
    result["status"] = JobStatus(status).value
    # Ray appends the job's last logs to a failure message: they were streamed already
    result["message"] = " ".join((info.message or "").split(", last available logs")[0].split())
    return result


def add_submit_arguments(p: argparse.ArgumentParser) -> None:
    """``aigc-synth submit`` options (the CLI's ``submit`` subparser)."""
    p.description = ("Submit a generation job to a running Ray cluster's job server, stream its logs, "
                     "wait for it (exit 0 when it succeeded, 1 otherwise).")
    p.epilog = "Example: aigc-synth submit --address http://127.0.0.1:8265 -- job.num_samples=2000 output_dir=outputs/run1"
    p.add_argument("--address", default=None,
                   help=f"job server URL (default: $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS if http(s), else {DEFAULT_ADDRESS})")
    p.add_argument("--no-wait", action="store_true", help="print the submission id and return")
    p.add_argument("--submission-id", default=None, help="use this submission id (default: generated by Ray)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for `generate` (put them after --)")
