"""What can go wrong, in two families: the user's mistakes and the model's failures.

User errors are printed as one line with a hint, never a traceback, exit code 2, and are never stored as runs.
Model failures carry a class (crash, out of memory, timeout, ...) decided from the container's state and the
protocol, and the tail of the container's log, and are stored with the run. The root (:class:`CortexboxError`,
:class:`UserError`) lives in ``cortexbox.benchmarks.errors`` so that benchmarks raise into the same hierarchy
without importing the orchestrator; the hierarchy:

    CortexboxError
    ├── UserError                        one line + hint, exit 2
    │   ├── DataNotFoundError            (also FileNotFoundError; cortexbox.benchmarks.data)
    │   └── ImageBuildError              (also RuntimeError; cortexbox.orchestrator.images)
    └── ModelFailure                     a FailureClass + log tail, stored with the run, exit 1
        ├── ProtocolViolation
        └── BadOutput
"""

from __future__ import annotations

from enum import Enum

from cortexbox.benchmarks.errors import CortexboxError, UserError

__all__ = ["BadOutput", "CortexboxError", "FailureClass", "ModelFailure", "ProtocolViolation", "UserError"]


class FailureClass(str, Enum):
    """Why a model run failed. Stored with the run; the leaderboard shows it."""

    CRASH = "crash"  # the container exited (or the server vanished) during the run
    OUT_OF_MEMORY = "out_of_memory"  # the kernel's OOM killer, or the model reported OOM
    OUT_OF_DISK = "out_of_disk"  # wrote past its run folder's budget without a tmpfs (runtime.RunDirWatch)
    TIMEOUT = "timeout"  # a deadline passed: start-up, loading, or the run itself
    PROTOCOL_VIOLATION = "protocol_violation"  # a message broke the wire contract
    BAD_OUTPUT = "bad_output"  # well-formed messages with unusable values (NaN, inf, ...)
    INCONSISTENT = "inconsistent"  # answered a repeated stimulus differently: a lookup, not a model (scoring/fair.py)
    NONCONFORMANT = "nonconformant"  # does not do what its metadata declares: layers, regions, degrees (conformance.py)
    MODEL_ERROR = "model_error"  # the model's own code raised and said so
    HANDSHAKE_FAILED = "handshake_failed"  # the socket is not served by the container we started
    REJECTED = "rejected"  # the model refused the request (unknown output, bad stimulus, ...)
    CANCELLED = "cancelled"  # the user stopped the run
    LOST = "lost"  # the process scoring the run died without finishing it (`cortexbox gc`, the live stream)


class ModelFailure(CortexboxError):
    """A model container or server failed; `failure` says how."""

    def __init__(self, failure: FailureClass, message: str, log_tail: str = "", reason: str = ""):
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.log_tail = log_tail
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.failure.value}: {self.message}"


class ProtocolViolation(ModelFailure):
    def __init__(self, message: str):
        super().__init__(FailureClass.PROTOCOL_VIOLATION, message)


class BadOutput(ModelFailure):
    def __init__(self, message: str):
        super().__init__(FailureClass.BAD_OUTPUT, message)
