"""The root of cortexbox's errors.

It lives here, in the lowest package, so that benchmarks and the orchestrator raise into one hierarchy without
benchmarks importing the orchestrator (which imports benchmarks). ``cortexbox.orchestrator.errors`` adds the
model's failures and re-exports both classes; the CLI prints any :class:`UserError` as one line with its hint,
exit code 2. Errors that are also a built-in kind subclass it too (scikit-learn style), so
``except FileNotFoundError`` keeps working: ``class DataNotFoundError(UserError, FileNotFoundError)``.
"""

from __future__ import annotations

__all__ = ["CortexboxError", "UserError"]


class CortexboxError(Exception):
    """Base of every error cortexbox raises on purpose; the CLI reports it as one line, never a traceback."""


class UserError(CortexboxError):
    """The request cannot be carried out as asked (unknown benchmark, missing image or data, ...): something the
    user fixes, so it is never stored as a model's failed run. ``hint`` says how."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint
