"""One error hierarchy for everything a user can cause or meet.

Every error the project raises on purpose derives from :class:`AigcSynthError`, which carries the
CLI's exit status: **2** for bad input (a config, a job spec, a checkpoint, a schema, an output
location: nothing was written), **1** for a runtime failure (a stalled job, a cluster that failed).
The CLI catches the base class once and prints ``aigc-synth <verb>: error: <one line>``.

The classes also derive from the builtin they used to be (``ValueError`` / ``RuntimeError``) so
``except ValueError`` in user code keeps working.
"""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_FAILURE = 1


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (or its type name), cut at ``limit``."""
    text = str(exc).strip()
    if not text and isinstance(exc, BaseException):
        return type(exc).__name__
    return text.splitlines()[0][:limit] if text else ""


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


class SubmitError(RuntimeFailure):
    """The cluster or the job failed (unreachable job server, refused submission)."""
