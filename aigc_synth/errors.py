"""One error hierarchy for everything a user can cause or meet.

Every error the project raises on purpose derives from :class:`AigcSynthError`, which carries the
CLI's exit status: **2** for bad input (a config, a job spec, a checkpoint, a schema, an output
location: nothing was written), **1** for a runtime failure (a stalled job, a cluster that failed).
The CLI catches the base class once and prints ``aigc-synth <verb>: error: <one line>``.

The classes also derive from the builtin they used to be (``ValueError`` / ``RuntimeError``) so
``except ValueError`` in user code keeps working.
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator

EXIT_USAGE = 2
EXIT_FAILURE = 1


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (or its type name), cut at ``limit``."""
    text = str(exc).strip()
    if not text and isinstance(exc, BaseException):
        return type(exc).__name__
    return text.splitlines()[0][:limit] if text else ""


_WRAPPER_NAMES = ("RayTaskError", "RayActorError", "UserCodeException", "RaySystemError", "TaskCancelledError")


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception under Ray's wrappers (``RayTaskError(UserCodeException)`` around the
    ``OSError`` an actor raised): while the exception is a Ray wrapper, follow ``.cause`` (Ray's own
    link), else ``__cause__`` / ``__context__``; the first non-wrapper is the root."""
    current = exc
    for _ in range(32):  # wrappers nest a few levels; the bound guards against cycles
        if not _is_wrapper(current):
            break
        nxt = getattr(current, "cause", None)
        if not isinstance(nxt, BaseException):
            nxt = current.__cause__ or current.__context__
        if nxt is None:
            break
        current = nxt
    return current


def describe_failure(exc: BaseException, limit: int = 300) -> str:
    """One line naming the root cause of a failure: ``OSError: [Errno 28] No space left on device: '...'``.

    Ray's wrappers carry the worker's whole traceback in their message; the line a user needs is the
    original exception's. Its type and first line are kept, plus where it happened when it was
    inside Ray."""
    cause = root_cause(exc)
    if _is_wrapper(cause):  # the original did not survive pickling: find its line in the worker's traceback
        line = _original_line(str(exc))
        if line:
            return f"{line[:limit]} (raised in a Ray worker)"
    text = f"{type(cause).__name__}: {first_line(cause, limit)}"
    if cause is not exc:
        text += " (raised in a Ray worker)"
    return text


def _is_wrapper(exc: BaseException) -> bool:
    return any(name in type(exc).__name__ for name in _WRAPPER_NAMES)


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)[\w()]*): (.+)$")


def _original_line(traceback_text: str) -> str | None:
    """The first ``SomeError: message`` line of a traceback that is not a Ray wrapper's (Python prints
    a chain oldest first: the original exception, then "The above exception was the direct cause")."""
    for raw in traceback_text.splitlines():
        match = _EXCEPTION_LINE.match(raw.strip())
        if match and not any(name in match.group(1) for name in _WRAPPER_NAMES):
            return f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2)}"
    return None


class AigcSynthError(Exception):
    """Base class: reported as one line; ``exit_status`` is what the CLI returns."""

    exit_status = EXIT_USAGE


class UsageError(AigcSynthError, ValueError):
    """A bad command line or configuration."""


class SchemaError(AigcSynthError, ValueError):
    """A condition or condition schema does not validate. The message lists what is allowed."""


class PlanError(AigcSynthError, ValueError):
    """A condition plan is invalid (unknown kind, factor, value, bad weights or probabilities)."""


class JobSpecError(AigcSynthError, ValueError):
    """The job spec or the environment cannot run this job. Raised before anything is written."""


class CheckpointError(AigcSynthError, ValueError):
    """A checkpoint is missing, unreadable, unsafe or of the wrong kind."""


class StorageError(AigcSynthError, ValueError):
    """An output location cannot be parsed, resolved or reached."""


class EvaluationError(AigcSynthError, ValueError):
    """An evaluation cannot run as configured (bad source, reference or settings)."""


class ServeConfigError(UsageError):
    """The serving configuration is invalid (checked before Ray starts)."""


class RuntimeFailure(AigcSynthError, RuntimeError):
    """Something failed while running (not the user's input): exit status 1."""

    exit_status = EXIT_FAILURE


class JobStalledError(RuntimeFailure):
    """No shard finished within ``resources.progress_timeout_s``: Ray is likely waiting forever."""


class IntegrityError(RuntimeFailure):
    """A job's output does not match its manifest: a shard changed or went missing after the job wrote it."""


class SubmitError(RuntimeFailure):
    """The cluster or the job failed (unreachable job server, refused submission)."""


class BadFileError(AigcSynthError, ValueError):
    """A file the user named (or a job's output file) is missing, unreadable or not what it should be."""


class FileReadFailure(RuntimeFailure):
    """Reading a file failed for a reason that is not the file's fault (an I/O error of the system)."""


#: OSErrors that mean "this file (name) is wrong", not "the system failed": exit 2
_USER_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def file_error(path, exc: BaseException, what: str = "file") -> AigcSynthError:
    """The one translation of a failure reading ``path`` into an error naming the file and its cause.

    A file that is missing, not permitted, or not in the format it should be (invalid or truncated
    JSON, not Parquet, not an image, nested too deeply) is the user's input: :class:`BadFileError`,
    exit 2. Any other OS error while reading (an I/O fault) is :class:`FileReadFailure`, exit 1."""
    if isinstance(exc, AigcSynthError):
        return exc
    if isinstance(exc, RecursionError):
        cause = "nested too deeply"
    elif isinstance(exc, OSError) and exc.strerror:
        cause = exc.strerror
    else:
        cause = " ".join(first_line(exc, 200).split()) or type(exc).__name__
    kind = type(exc).__name__
    message = f"cannot read {what} {path}: {cause}" + ("" if kind in cause or isinstance(exc, OSError) else f" ({kind})")
    runtime = isinstance(exc, OSError) and not isinstance(exc, _USER_OS_ERRORS) and "Unidentified" not in kind \
        and "Arrow" not in kind
    return (FileReadFailure if runtime else BadFileError)(message)


@contextlib.contextmanager
def reading(path, what: str = "file") -> Iterator[None]:
    """``with reading(path, "manifest"): ...``: any failure inside becomes :func:`file_error`'s one line."""
    try:
        yield
    except AigcSynthError:
        raise
    except (OSError, ValueError, EOFError, RecursionError) as exc:  # JSONDecodeError, ArrowInvalid, PIL errors included
        raise file_error(path, exc, what) from None
