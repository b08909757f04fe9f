"""The harness's error types: each names the file, sample id or key at fault."""

from __future__ import annotations


class McubError(Exception):
    """Base class of every error the harness raises on purpose."""


class TaskError(McubError):
    """A task or group definition is invalid, or a name is unknown."""


class DataError(McubError):
    """A question or answer file is missing, malformed or inconsistent."""


class MediaError(McubError):
    """A media file cannot be decoded into what the encoders need."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class CheckpointError(McubError):
    """A weight file is missing, unreadable, or its keys do not match the module that should hold them."""


class UnsupportedInput(McubError):
    """A model cannot take a sample as it is (longer than its context, a modality it has no encoder for)."""


class RunError(McubError):
    """A run cannot go on (strict mode met an error, a task cannot be run as asked, a run cannot be resumed)."""


class PeerLost(RunError):
    """A torchrun rank lost the others: a rank or a whole node stopped, the network failed, or none answered in
    time. The message says what the rank was doing, what was saved and how to continue."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt (see `mcub.cli.run_command`)."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM after its records were flushed: the message says what was saved and how to
    continue."""

    def __init__(self, message: str, terminated: bool):
        super().__init__(message)
        self.terminated = terminated


def problem_location(problem: dict) -> str:
    """The dotted field one pydantic problem is about (`encoders.smell`, not `encoders.smell.[key]`)."""
    return ".".join(str(part) for part in problem["loc"] if part != "[key]")


def problem_message(problem: dict) -> str:
    """A pydantic problem's message; for a validator's own ValueError, its text alone."""
    cause = problem.get("ctx", {}).get("error")
    return str(cause) if problem["type"] == "value_error" and cause else problem["msg"]


def validation_problems(error, default: str, limit: int | None = None) -> str:
    """A pydantic ValidationError as `field: message; ...` (`default` names a problem with the whole value), its
    first `limit` problems only when given."""
    problems = error.errors()[:limit]
    return "; ".join(f"{problem_location(p) or default}: {problem_message(p)}" for p in problems)
