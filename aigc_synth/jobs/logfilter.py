"""Dropping one known-benign line that Ray's C++ core worker writes to the driver's stderr.

Ray Data hands every actor of a pool its map function *by reference* (``ray.put`` of the map
transformer, ``ActorPoolMapOperator``) and sets ``max_restarts=-1``; the core worker then logs, for
every actor, ``core_worker.cc: Actor ... has constructor arguments in the object store and
max_restarts > 0`` at ERROR level (ray-project/ray#53727). Our pool keeps the transformer alive for
the whole job, so the warning never applies, but it reads like a failure on every healthy job.

The line comes from C++ straight to file descriptor 2, so Python logging cannot filter it: for the
duration of a job the driver's fd 2 goes through a pipe and a thread that forwards everything
except lines containing :data:`BENIGN` (progress bars' ``\\r`` updates pass through at once).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Iterator, Sequence

BENIGN: tuple[bytes, ...] = (b"has constructor arguments in the object store and max_restarts > 0",)


@contextlib.contextmanager
def drop_stderr_lines(substrings: Sequence[bytes] = BENIGN) -> Iterator[None]:
    """Forward fd 2 minus lines containing any of ``substrings`` (no-op when fd 2 is not usable)."""
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
            cut = pending.rfind(b"\r")  # a progress bar redraws with \r and no newline: pass it on now
            if cut >= 0 and not any(s in pending for s in substrings):
                out, pending = out + pending[:cut + 1], pending[cut + 1:]
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
