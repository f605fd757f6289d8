"""The durable operation journal: one JSON-lines file per operation under
``STATE/ops/``, appended with fsync before and after every step's apply.

Events: ``created`` (kind, title, params, steps) · ``intent`` (step, prior) ·
``applied`` (step, record) · ``verified`` · ``failed`` (step, error) ·
``rollback`` (reason) · ``undone`` / ``undo-failed`` (step) · ``finished`` (status).
A running process holds an exclusive flock on its journal file, so a journal whose
status is ``running`` and whose lock is free belongs to an interrupted operation.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInput
from .output import iso_utc


def ops_dir(state_dir: Path) -> Path:
    path = state_dir / "ops"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def new_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """An open, locked journal file that we append events to."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def create(cls, state_dir: Path, op_id: str, header: dict[str, Any]) -> Journal:
        path = ops_dir(state_dir) / f"{op_id}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        j = cls(path, fd)
        j.append("created", **header)
        _fsync_dir(path.parent)
        return j

    @classmethod
    def open_existing(cls, state_dir: Path, op_id: str) -> Journal:
        """Open and lock an existing journal; refuse if its process still runs."""
        path = find(state_dir, op_id)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BadInput(f"operation {op_id} is still running in another process") from None
        return cls(path, fd)

    def append(self, event: str, **data: Any) -> None:
        line = json.dumps({"event": event, "t": time.time(), **data}, default=str)
        os.write(self.fd, (line + "\n").encode())
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def find(state_dir: Path, op_id: str) -> Path:
    """The journal of ``op_id`` (a unique prefix is enough)."""
    base = ops_dir(state_dir)
    exact = base / f"{op_id}.jsonl"
    if exact.exists():
        return exact
    safe = op_id and "/" not in op_id and "\0" not in op_id
    matches = sorted(base.glob(f"{glob.escape(op_id)}*.jsonl")) if safe else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise BadInput(f"no operation {op_id!r}; see `debvisor ops list`")
    raise BadInput(f"operation id {op_id!r} is ambiguous ({len(matches)} match)")


@dataclass
class StepState:
    index: int
    name: str
    type: str
    params: dict[str, Any]
    description: str
    status: str = "pending"  # pending, in-flight, applied, verified, failed, undone, undo-failed
    prior: dict[str, Any] | None = None
    record: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class OpState:
    """An operation as folded from its journal."""

    id: str
    path: Path
    kind: str = ""
    title: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    locks: list[str] = field(default_factory=list)
    user: str = ""
    started: float = 0.0
    ended: float | None = None
    status: str = "running"
    error: str | None = None
    rollback_of: str | None = None
    steps: list[StepState] = field(default_factory=list)
    events: int = 0

    @property
    def live(self) -> bool:
        """True if a process holds this journal's lock right now."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    @property
    def effective_status(self) -> str:
        if self.status in ("running", "rolling-back") and not self.live:
            return "interrupted"
        return self.status

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "status": self.effective_status,
            "user": self.user,
            "started": _iso(self.started),
            "ended": _iso(self.ended) if self.ended else None,
            "steps": len(self.steps),
            "error": self.error,
        }

    def to_dict(self) -> dict[str, Any]:
        d = self.summary()
        d["params"] = self.params
        d["locks"] = self.locks
        d["rollback_of"] = self.rollback_of
        d["steps"] = [
            {"index": s.index + 1, "name": s.name, "description": s.description,
             "status": s.status, "error": s.error, "record": s.record}
            for s in self.steps
        ]
        return d


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return iso_utc(t)


def load(path: Path) -> OpState:
    """Fold a journal file into an :class:`OpState`; a torn last line is ignored."""
    st = OpState(id=path.stem, path=path)
    with open(path, encoding="utf-8") as f:
        for raw in f:
            try:
                ev = json.loads(raw)
            except json.JSONDecodeError:
                continue  # torn write at a crash: the event did not happen
            st.events += 1
            kind = ev.get("event")
            idx = ev.get("step")
            step = st.steps[idx] if isinstance(idx, int) and 0 <= idx < len(st.steps) else None
            if kind == "created":
                st.kind, st.title = ev["kind"], ev.get("title", "")
                st.params, st.locks = ev.get("params", {}), ev.get("locks", [])
                st.user, st.started = ev.get("user", ""), ev["t"]
                st.rollback_of = ev.get("rollback_of")
                st.steps = [
                    StepState(i, s["name"], s["type"], s.get("params", {}), s.get("description", ""))
                    for i, s in enumerate(ev.get("steps", []))
                ]
            elif kind == "intent" and step:
                step.status, step.prior = "in-flight", ev.get("prior", {})
            elif kind == "applied" and step:
                step.status, step.record = "applied", ev.get("record", {})
            elif kind == "verified" and step:
                step.status = "verified"
            elif kind == "failed":
                st.error = ev.get("error")
                if step:
                    step.error = ev.get("error")
            elif kind == "undone" and step:
                step.status = "undone"
            elif kind == "undo-failed" and step:
                step.status, step.error = "undo-failed", ev.get("error")
            elif kind == "rollback":
                st.status = "rolling-back"
            elif kind == "resumed":
                st.status = "running"
            elif kind == "finished":
                st.status, st.ended = ev["status"], ev["t"]
                st.error = ev.get("error", st.error)
    return st


def all_ops(state_dir: Path) -> list[OpState]:
    """Every journalled operation, newest first."""
    found = [load(p) for p in ops_dir(state_dir).glob("*.jsonl")]
    return sorted(found, key=lambda o: (o.started, o.id), reverse=True)
