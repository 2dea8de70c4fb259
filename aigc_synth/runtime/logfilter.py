"""What reaches the console while Ray runs: aigc_synth's own lines, not Ray's log lines.

A default job prints its own lines and one progress bar. Ray's console output is turned off at
its source and kept where Ray files it; ``--verbose`` (CLI) or ``AIGC_SYNTH_VERBOSE=1`` brings it
back unchanged (:func:`verbose`).

**Python loggers** (:func:`configure_ray_console`, called by
:func:`~aigc_synth.runtime.cluster.connect_ray` before ``ray.init``). Ray 2.60 gives two loggers a
stderr handler when imported: ``ray`` (``ray._private.log.generate_logging_config``: a
``PlainRayHandler``; it prints the token-authentication WARNING of a new local cluster) and
``ray.data`` (``ray.data._internal.logging.DEFAULT_CONFIG``: handler ``console``, which prints
``streaming_executor.py`` INFO lines and the "Progress bars disabled" WARNING, next to handler
``file``, a ``SessionFileHandler`` writing ``<session>/logs/ray-data/ray-data*.log`` at DEBUG).
Only those console handlers are raised to :data:`QUIET_LEVEL` (ERROR): loggers' levels and the
file handlers stay as Ray set them, so Ray Data's session log keeps every line, and an ERROR
(a failing job) still prints next to our own one-line error. ``ray.init(logging_level=...)`` would
cover only the ``ray`` logger (``ray.data`` keeps its own level and handlers).
Worker output stays out of the driver (``ray.init(log_to_driver=False)``, in
:func:`~aigc_synth.runtime.cluster.connect_ray`; the workers' own files under ``<session>/logs``).

**C++ lines to fd 2** (:func:`drop_stderr_lines`). Ray Data hands every actor of a pool its map
function *by reference* (``ray.put`` of the map transformer, ``ActorPoolMapOperator``) and sets
``max_restarts=-1``; the core worker then logs, for every actor, ``core_worker.cc: Actor ... has
constructor arguments in the object store and max_restarts > 0`` at ERROR level
(ray-project/ray#53727). Our pool keeps the transformer alive for the whole job, so the warning
never applies, but it reads like a failure on every healthy job. The line comes from C++ straight
to file descriptor 2, so Python logging cannot filter it: for the duration of a job the driver's
fd 2 goes through a pipe and a thread that forwards everything except lines containing
:data:`BENIGN` (progress bars' ``\\r`` redraws pass through at once). Any other known C++ line
belongs in :data:`BENIGN`, not in a second filter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import Iterator, Sequence

#: ``AIGC_SYNTH_VERBOSE=1`` (or ``--verbose``, which sets it): Ray's console output as Ray prints it
VERBOSE_ENV = "AIGC_SYNTH_VERBOSE"
#: the Python loggers to which Ray attaches a console handler at import (see the module docstring)
RAY_CONSOLE_LOGGERS: tuple[str, ...] = ("ray", "ray.data")
#: the lowest level of a Ray log record that still prints when not verbose
QUIET_LEVEL = logging.ERROR

BENIGN: tuple[bytes, ...] = (b"has constructor arguments in the object store and max_restarts > 0",)


def verbose() -> bool:
    """Whether Ray's console output is wanted (``AIGC_SYNTH_VERBOSE`` set to anything but 0/false/no/off)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def set_verbose(on: bool = True) -> None:
    """``--verbose``: through the environment, so this process and the processes it starts agree."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def configure_ray_console() -> bool:
    """Quiet (or, when :func:`verbose`, restore) the console handlers of Ray's Python loggers; return verbose.

    Imports ``ray`` and ``ray.data`` first: their import is what installs the handlers. Idempotent,
    and reversible within a process (each handler's own level is kept on it).
    """
    import ray.data  # noqa: F401  (importing ray, then ray.data, is what installs their handlers)

    loud = verbose()
    for name in RAY_CONSOLE_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not _is_console(handler):
                continue
            own = handler.__dict__.setdefault("_aigc_synth_own_level", handler.level)
            handler.setLevel(own if loud else max(own, QUIET_LEVEL))
    return loud


@contextlib.contextmanager
def drop_stderr_lines(substrings: Sequence[bytes] = BENIGN) -> Iterator[None]:
    """Forward fd 2 minus lines containing any of ``substrings`` (no-op when verbose or fd 2 is not usable)."""
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(read_end, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not any(s in line for s in substrings))
            # A progress bar redraws with "\r<bar>" and no newline: pass it on now, bar included (C++ lines have
            # no \r; held back, the bar would be dropped with a benign line written right after it)
            if b"\r" in pending and not any(s in pending for s in substrings):
                out, pending = out + pending, b""
            if out:
                os.write(saved, out)
        if pending and not any(s in pending for s in substrings):
            os.write(saved, pending)

    thread = threading.Thread(target=pump, name="aigc-synth-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end held by fd 2: the pump sees EOF
        thread.join(timeout=5)
        os.close(read_end)
        os.close(saved)
