"""Operator-facing log lines on stderr: `[INFO] …`, `[WARN] …`, `[ERROR] …`, `[DEBUG] …`."""

from __future__ import annotations

import sys
import time
from typing import IO

_state: dict[str, object] = {"verbose": False, "file": None}


def configure(*, verbose: bool = False, log_file: str | None = None) -> None:
    """Set verbosity and an optional file that receives a timestamped copy of every line."""
    _state["verbose"] = verbose
    if log_file:
        _state["file"] = open(log_file, "a", encoding="utf-8")


def verbose() -> bool:
    return bool(_state["verbose"])


def _emit(level: str, msg: str) -> None:
    line = f"[{level}] {msg}"
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
