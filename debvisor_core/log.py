"""Operator-facing log lines on stderr: `[INFO] …`, `[WARN] …`, `[ERROR] …`, `[DEBUG] …`.

A run UI (``ui.JsonEventsUI``, ``ui.RecordingUI``) can take the lines of its own
invocation with :func:`bound`; the sink is a context variable, so two operations
running in two threads of one process (the daemon) never see each other's lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO

_state: dict[str, object] = {"verbose": False, "file": None}
#: this context's run UI (``ui.active()``) and where its lines go (None: stderr), in one
#: variable: the daemon binds a UI for every query it answers (``ui.RunUI.bound``)
_bound: contextvars.ContextVar[tuple[object, Callable[[str, str], None] | None]] = \
    contextvars.ContextVar("debvisor_log_bound", default=(None, None))


def configure(*, verbose: bool = False, log_file: str | None = None) -> None:
    """Set verbosity and an optional file that receives a timestamped copy of every line."""
    _state["verbose"] = verbose
    if log_file:
        _state["file"] = open(log_file, "a", encoding="utf-8")


def verbose() -> bool:
    return bool(_state["verbose"])


@contextlib.contextmanager
def bound(sink: Callable[[str, str], None]) -> Iterator[None]:
    """Send this context's lines to ``sink(level, message)`` instead of stderr."""
    token = _bound.set((_bound.get()[0], sink))
    try:
        yield
    finally:
        _bound.reset(token)


def _emit(level: str, msg: str) -> None:
    sink = _bound.get()[1]
    line = f"[{level}] {msg}"
    if sink is not None:
        sink(level, msg)
    else:
        print(line, file=sys.stderr, flush=True)
    fh = _state["file"]
    if fh is not None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        f: IO[str] = fh  # type: ignore[assignment]
        f.write(f"{stamp} {line}\n")
        f.flush()


def info(msg: str) -> None:
    _emit("INFO", msg)


def warn(msg: str) -> None:
    _emit("WARN", msg)


def error(msg: str) -> None:
    _emit("ERROR", msg)


def debug(msg: str) -> None:
    if _state["verbose"]:
        _emit("DEBUG", msg)
