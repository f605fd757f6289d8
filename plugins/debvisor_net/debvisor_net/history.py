"""What each kept change replaced (running state, persisted files, the applied desired
state): a stack under ``STATE/plugins/net/history``; `net rollback` returns to the top."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def _dir(state: Path) -> Path:
    d = state / "history"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def _save(state: Path, entry: dict[str, Any]) -> None:
    path = _dir(state) / f"{entry['id']}.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(entry, f, sort_keys=True)
    os.replace(tmp, path)


def push(state: Path, entry: dict[str, Any]) -> str:
    """Remember ``entry``; return its id (sortable by time)."""
    ident = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{time.time_ns() % 10**9:09d}"
    _save(state, {**entry, "id": ident})
    return ident


def entries(state: Path) -> list[dict[str, Any]]:
    """Every remembered entry, newest first (unreadable files are skipped)."""
    out = []
    for p in sorted(_dir(state).glob("*.json"), reverse=True):
        if not p.is_file() or p.is_symlink():
            continue
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("running"), dict):
            out.append(data)
    return out


def latest(state: Path) -> dict[str, Any] | None:
    found = entries(state)
    return found[0] if found else None


def drop(state: Path, ident: str) -> dict[str, Any] | None:
    """Remove entry ``ident``; return it (for an undo to put back)."""
    for e in entries(state):
        if e["id"] == ident:
            (_dir(state) / f"{ident}.json").unlink(missing_ok=True)
            return e
    return None


def put(state: Path, entry: dict[str, Any]) -> None:
    _save(state, entry)


def remove(state: Path, ident: str) -> None:
    if "/" not in ident and not ident.startswith("."):
        (_dir(state) / f"{ident}.json").unlink(missing_ok=True)
