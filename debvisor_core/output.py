"""Rendering: one JSON document with --json, plain tables otherwise, progress on long work."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import log
from .timefmt import iso_utc

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context

__all__ = ["Progress", "dumps", "emit", "human_bytes", "human_duration", "iso_utc", "table"]


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)


def emit(ctx: Context, data: Any, human: Callable[[Any], None] | str | None = None) -> None:
    """Print ``data`` as one JSON document with --json, as a ``result`` event with
    --events, else call ``human(data)`` (or print ``human`` if it is a string)."""
    ui = ctx._ui
    if ui is not None and ui.events:
        ui.result(data)
    elif ctx.json:
        sys.stdout.write(dumps(data) + "\n")
    elif callable(human):
        human(data)
    elif isinstance(human, str):
        print(human)
    else:
        print(dumps(data))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Align ``rows`` under ``columns`` = [(key, header)…] as plain text."""
    cells = [[h for _, h in columns]] + [
        ["" if r.get(k) is None else str(r.get(k)) for k, _ in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def human_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """A progress bar with rate and ETA on a TTY; `[INFO]` lines at most every few
    seconds otherwise. Use as a context manager and call ``update(done, total)``."""

    def __init__(self, label: str, *, unit: str = "bytes", every: float = 5.0) -> None:
        self.label = label
        self.unit = unit
        self.every = every
        self.start = time.monotonic()
        self._last_log = 0.0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        from .ui import active

        ui = active()
        if sys.stderr.isatty() and (ui is None or not ui.events):
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            cols: list[Any] = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
            if self.unit == "bytes":
                cols += [DownloadColumn(), TransferSpeedColumn()]
            cols.append(TimeRemainingColumn())
            self._bar = RichProgress(*cols, transient=False, redirect_stdout=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=None)
        return self

    def update(self, done: float, total: float | None, *, eta: float | None = None,
               rate: float | None = None, note: str = "",
               extra: dict[str, Any] | None = None) -> None:
        """``extra``: more figures for event UIs (JSON), not drawn on a terminal."""
        from .ui import active

        ui = active()
        if ui is not None and ui.progress(self.label, done, total, eta=eta, rate=rate, note=note,
                                          extra=extra):
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total,
                             description=f"{self.label} {note}".strip())
            return
        now = time.monotonic()
        if now - self._last_log < self.every and not (total and done >= total):
            return
        self._last_log = now
        elapsed = now - self.start
        pct = f"{100.0 * done / total:.0f}%" if total else "?%"
        if rate is None:
            rate = done / elapsed if elapsed > 0 else 0.0
        if eta is None and total and rate:
            eta = max(0.0, (total - done) / rate)
        parts = [f"{self.label}: {pct}"]
        if self.unit == "bytes":
            parts.append(f"{human_bytes(done)} of {human_bytes(total or 0)}")
            parts.append(f"{human_bytes(rate)}/s")
        if eta is not None:
            parts.append(f"ETA {human_duration(eta)}")
        if note:
            parts.append(note)
        log.info(", ".join(p for p in parts if p))

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def report(exc: BaseException) -> int:
    """Say what ended a command in one line (no traceback unless --verbose) and return its
    exit code: the last resort of the CLI and of the query fast path (quickquery.py)."""
    import os
    import sys

    from . import log
    from .errors import EXIT_FAILED, DebvisorError
    from .ui import JsonEventsUI, active

    if isinstance(exc, DebvisorError):
        log.error(exc.message)
        if exc.hint:
            log.info(exc.hint)
        ui = active()
        if isinstance(ui, JsonEventsUI):
            ui.emit("exit", code=exc.exit_code, message=exc.message, hint=exc.hint)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        log.error("interrupted")
        return 130
    if isinstance(exc, BrokenPipeError):  # `debvisor ops list | head`: the reader went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    log.error(f"internal error: {type(exc).__name__}: {exc}")
    if log.verbose():
        import traceback

        traceback.print_exception(exc)
    else:
        log.info("run with --verbose for the traceback")
    return EXIT_FAILED
