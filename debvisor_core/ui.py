"""Run UIs: everything the engine and the actions say or ask goes through one.

- :class:`TerminalUI`: what the CLI shows — the plan on stdout, ``[INFO]`` lines on
  stderr, progress bars on a TTY, questions on the terminal;
- :class:`JsonEventsUI`: one JSON event per line (``debvisor --events …``; the daemon
  streams these): ``plan``, ``log``, ``step``, ``undo``, ``progress``, ``result``;
- :class:`RecordingUI`: keeps the events in a list, answers questions from a script
  (tests, and in-process callers).

The engine never calls ``print`` or ``input``. :func:`active` returns the UI of the
current invocation (a context variable: threads of one daemon do not mix).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import IO, TYPE_CHECKING, Any, cast

from . import log
from .log import _bound

if TYPE_CHECKING:  # pragma: no cover
    from .model import Finding


class RunUI:
    """The interface (and the terminal's behaviour where nothing else is said)."""

    #: True when results are events rather than a printed document
    events = False

    def plan(self, title: str, steps: list[str], findings: list[Finding], *,
             verb: str = "Plan") -> None:
        """Show the plan: a title and one line per step; ``findings`` are the preflight's."""

    def ask(self, question: str) -> bool | None:
        """Ask a yes/no question; None when nobody can be asked."""
        return None

    def note(self, text: str) -> None:
        """Something to show a person while planning ("Unused disks found: …")."""

    def step(self, index: int, total: int, description: str, status: str) -> None:
        """A step changed status (``running``, ``done``, ``failed``)."""

    def undo(self, index: int, description: str, status: str) -> None:
        """An undo changed status (``running``, ``done``, ``failed``)."""

    def progress(self, label: str, done: float, total: float | None, *, eta: float | None = None,
                 rate: float | None = None, note: str = "",
                 extra: dict[str, Any] | None = None) -> bool:
        """Progress of long work; False when the caller should draw it itself (terminal).
        ``extra``: more figures for UIs that show them (a migration's dirty rate, pass)."""
        return False

    def result(self, data: Any) -> None:
        """The final result document."""

    def bound(self) -> AbstractContextManager[RunUI]:
        """Make this the active UI of the current context (and route its log lines)."""
        return _Bound(self, None)


class _Bound(AbstractContextManager["RunUI"]):
    """:meth:`RunUI.bound`: ``ui`` active, and ``sink`` taking the log lines when given
    (else they go where they went: stderr, or an outer :func:`log.bound`'s sink). One
    context variable, set once (:data:`log._bound`); a class rather than a generator:
    the daemon binds a UI for every query it answers. Bindings must nest (leave the
    innermost first), as ``with`` blocks do: the variable holds the UI and the sink
    together, so leaving an outer one first would bring back a UI that has ended."""

    __slots__ = ("_ui", "_sink", "_token")

    def __init__(self, ui: RunUI, sink: Callable[[str, str], None] | None) -> None:
        self._ui, self._sink = ui, sink

    def __enter__(self) -> RunUI:
        sink = self._sink
        self._token = _bound.set((self._ui, _bound.get()[1] if sink is None else sink))
        return self._ui

    def __exit__(self, *exc: object) -> None:
        _bound.reset(self._token)


class TerminalUI(RunUI):
    """The CLI: plan on stdout unless ``quiet`` (--json), questions on the terminal."""

    def __init__(self, *, quiet: bool = False, interactive: bool = False) -> None:
        self.quiet = quiet
        self.interactive = interactive

    def plan(self, title: str, steps: list[str], findings: list[Finding], *,
             verb: str = "Plan") -> None:
        first_error = next((f for f in findings if f.level == "error"), None)
        for f in findings:
            if f is not first_error:  # the first error is the refusal's own message
                where = f" [{f.source}]" if f.source else ""
                {"error": log.error, "warn": log.warn}.get(f.level, log.info)(
                    f"preflight: {f.message}{where}")
        if self.quiet:
            return
        print(f"{verb}: {title}" if verb else title)
        for line in steps:
            print(f"  {line}")

    def note(self, text: str) -> None:
        if not self.quiet:
            print(text)

    def ask(self, question: str) -> bool | None:
        if not self.interactive:
            return None
        import click

        return bool(click.confirm(question, default=False, err=True))

    def step(self, index: int, total: int, description: str, status: str) -> None:
        if status == "running":
            log.info(f"step {index}/{total}: {description}")

    def undo(self, index: int, description: str, status: str) -> None:
        if status == "running":
            log.info(f"undo step {index}: {description}")


class JsonEventsUI(RunUI):
    """One JSON object per line on ``stream``; log lines become ``log`` events."""

    events = True

    def __init__(self, stream: IO[str] | None = None, *, answers: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.answers = answers
        self._lock = threading.Lock()

    def emit(self, event: str, **data: Any) -> None:
        line = json.dumps({"event": event, "t": round(time.time(), 3), **data}, default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def plan(self, title: str, steps: list[str], findings: list[Finding], *,
             verb: str = "Plan") -> None:
        self.emit("plan", verb=verb.lower(), title=title, steps=steps,
                  findings=[f.to_dict() for f in findings])

    def note(self, text: str) -> None:
        self.emit("note", text=text)

    def ask(self, question: str) -> bool | None:
        self.emit("question", question=question, answer=self.answers)
        return self.answers

    def step(self, index: int, total: int, description: str, status: str) -> None:
        self.emit("step", index=index, total=total, description=description, status=status)

    def undo(self, index: int, description: str, status: str) -> None:
        self.emit("undo", index=index, description=description, status=status)

    def progress(self, label: str, done: float, total: float | None, *, eta: float | None = None,
                 rate: float | None = None, note: str = "",
                 extra: dict[str, Any] | None = None) -> bool:
        more = {k: v for k, v in (extra or {}).items()
                if k not in ("event", "t", "label", "done", "total", "eta", "rate", "note")}
        self.emit("progress", label=label, done=done, total=total, eta=eta, rate=rate, note=note,
                  **more)
        return True

    def result(self, data: Any) -> None:
        self.emit("result", result=data)

    def log_line(self, level: str, message: str) -> None:
        self.emit("log", level=level.lower(), message=message)

    def bound(self) -> AbstractContextManager[RunUI]:
        return _Bound(self, self.log_line)


class RecordingUI(JsonEventsUI):
    """Keeps events in ``self.events_seen``; ``answers`` answers every question."""

    def __init__(self, *, answers: bool | None = None) -> None:
        # no stream and no lock (JsonEventsUI.emit is never called on it): the daemon
        # makes one for every query it answers, and a list's append is atomic (threads
        # of one run may emit at once)
        self.answers = answers
        self.events_seen: list[dict[str, Any]] = []

    def emit(self, event: str, **data: Any) -> None:
        self.events_seen.append({"event": event, **data})

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events_seen if e["event"] == event]


def active() -> RunUI | None:
    """The UI bound to the current invocation, if any."""
    return cast("RunUI | None", _bound.get()[0])
