"""One mapping from whatever ended a job to the record stored for it.

The run row, the run's ``failed`` event, a queued job's result and the web's batch events all take their failure
from `failure_of`, so a failure reads the same wherever it is shown. The run row's ``failure_class`` is a
:class:`FailureClass` value or None (not the model's fault: a user's mistake found mid-run, or a bug).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cortexbox.orchestrator.errors import FailureClass, ModelFailure, UserError

#: Characters of an error message stored (a model's message is its own to make long).
ERROR_CHARS = 4000


@dataclass
class Failure:
    """How a job ended when it did not end with a score."""

    kind: str  # model (a model's failure) | user (a user's mistake) | cancelled | internal (a bug, or the platform)
    failure_class: str | None  # FailureClass value; None for user and internal failures
    error: str
    log_tail: str | None = None
    hint: str = ""
    #: Not about the job at all: the Docker engine or the registry could not be reached (a restart, a network
    #: blip); another attempt may succeed (scoring/workers.py retries it).
    transient: bool = False

    def event(self) -> dict[str, Any]:
        """The data of the run's ``failed`` event."""
        data: dict[str, Any] = {"failure_class": self.failure_class, "error": self.error, "log_tail": self.log_tail}
        if self.hint:
            data["hint"] = self.hint
        return data

    def run_fields(self) -> dict[str, Any]:
        """The run row's columns."""
        return {"status": "failed", "failure_class": self.failure_class, "error": self.error, "log_tail": self.log_tail}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failure_of(exc: BaseException) -> Failure:
    """The record of ``exc``: a model's failure keeps its class and log tail; a user's mistake its one line and hint;
    an interrupt is ``cancelled``; anything else is stored as its type and message (``log_tail`` is only ever the
    model's log: a bug's traceback goes to the process's own log, not into the registry)."""
    if isinstance(exc, ModelFailure):
        return Failure("model", exc.failure.value, exc.message[:ERROR_CHARS], exc.log_tail)
    if isinstance(exc, UserError):
        from cortexbox.orchestrator.image_registry import RegistryUnavailable

        # The image registry down past a pull's own retries (a restart): the job is fine, a later delivery pulls.
        return Failure("user", None, str(exc)[:ERROR_CHARS], hint=exc.hint or "",
                       transient=isinstance(exc, RegistryUnavailable))
    if isinstance(exc, KeyboardInterrupt):
        return Failure("cancelled", FailureClass.CANCELLED.value, "interrupted")
    return Failure("internal", None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS], transient=_unreachable(exc))


def _unreachable(exc: BaseException) -> bool:
    """A connection to the Docker engine or the database failed (refused, reset, timed out)."""
    kinds = [ConnectionError, TimeoutError]
    try:
        import requests.exceptions

        kinds += [requests.exceptions.ConnectionError]
    except ImportError:  # pragma: no cover
        pass
    try:
        from sqlalchemy.exc import OperationalError

        kinds += [OperationalError]
    except ImportError:  # pragma: no cover
        pass
    seen: BaseException | None = exc
    while seen is not None:  # also what it was raised from
        if isinstance(seen, tuple(kinds)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
