"""Exceptions that map to DebVisor's exit codes (see DESIGN.md)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PREFLIGHT = 3
EXIT_ROLLED_BACK = 4
EXIT_ROLLBACK_INCOMPLETE = 5


class DebvisorError(Exception):
    """Base error: its message is one sentence shown to the operator as `[ERROR] …`."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadInput(DebvisorError):
    """The operator's input is wrong (exit 2). Nothing was changed."""

    exit_code = EXIT_USAGE


class PreflightRefused(DebvisorError):
    """A preflight check or a confirmation refused the operation (exit 3)."""

    exit_code = EXIT_PREFLIGHT


class RolledBack(DebvisorError):
    """The operation failed and every applied step was undone (exit 4)."""

    exit_code = EXIT_ROLLED_BACK


class RollbackIncomplete(DebvisorError):
    """The operation failed and some undo failed too (exit 5): operator action needed."""

    exit_code = EXIT_ROLLBACK_INCOMPLETE


class StepFailed(DebvisorError):
    """Raised by a step's check/apply/verify to fail with a clear message."""
