"""The durable operation journal: one JSON-lines file per operation under
``STATE/ops/``, appended with fsync before and after every step's apply.

Events: ``created`` (kind, title, params, steps, phases) · ``intent`` (step, prior) ·
``applied`` (step, record) · ``verified`` · ``failed`` (step, error) ·
``rollback`` (reason) · ``undone`` / ``undo-failed`` (step) · ``paused`` (phase, reason) ·
``resumed`` · ``finished`` (status).
A running process holds an exclusive flock on its journal file, so a journal whose
status is ``running`` and whose lock is free belongs to an interrupted operation.

A journal is data, never code: ids are validated and resolved inside ``STATE/ops``,
files are opened without following symlinks and must be regular files, and a
corrupt file is named in one line (:class:`CorruptJournal`) instead of breaking
every command that lists operations.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import log
from .errors import BadInput, DebvisorError
from .timefmt import iso_utc

ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
ORIGIN_RE = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}\.[0-9]{1,5}")
"""``OPID.STEP``: the remote operation step a run is for (``--origin``)."""
_PREFIX_RE = re.compile(r"^[0-9][0-9a-f-]{0,21}$")
#: statuses whose operation still holds its resources (new operations on its locks wait)
BLOCKING = ("interrupted", "rollback-incomplete", "paused")


class CorruptJournal(DebvisorError):
    """A journal file that is not a readable DebVisor journal."""

    exit_code = 2


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a short write is retried, not torn)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - write(2) returns >0 or raises
            raise OSError("short write")
        view = view[n:]


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
        j = cls(path, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            j.append("created", **header)
            _fsync_dir(path.parent)
        except BaseException:
            j.close()
            path.unlink(missing_ok=True)  # nothing ran: leave no "interrupted" journal
            raise
        return j

    @classmethod
    def open_existing(cls, state_dir: Path, op_id: str) -> Journal:
        """Open and lock an existing journal; refuse if its process still runs."""
        path = find(state_dir, op_id)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BadInput(f"operation {op_id} is still running in another process") from None
        return cls(path, fd)

    def append(self, event: str, **data: Any) -> None:
        line = json.dumps({"event": event, "t": time.time(), **data}, default=str)
        _write_all(self.fd, (line + "\n").encode())
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def check_id(op_id: str) -> str:
    """``op_id`` if it is an operation id or a prefix of one, else one clear refusal."""
    if not isinstance(op_id, str) or not _PREFIX_RE.fullmatch(op_id):
        shown = op_id[:40] + "…" if isinstance(op_id, str) and len(op_id) > 40 else op_id
        raise BadInput(f"{shown!r} is not an operation id (like 20261125-101500-ab12cd, or a "
                       "unique prefix of one); see `debvisor ops list`")
    return op_id


def find(state_dir: Path, op_id: str) -> Path:
    """The journal of ``op_id`` (a unique prefix is enough), inside ``STATE/ops``."""
    check_id(op_id)
    base = ops_dir(state_dir)
    if ID_RE.fullmatch(op_id) and os.path.lexists(base / f"{op_id}.jsonl"):
        return base / f"{op_id}.jsonl"
    matches = sorted(p for p in base.iterdir()
                     if p.suffix == ".jsonl" and ID_RE.fullmatch(p.stem) and p.stem.startswith(op_id))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise BadInput(f"no operation {op_id!r}; see `debvisor ops list`")
    raise BadInput(f"operation id {op_id!r} is ambiguous ({len(matches)} match); give more of it")


@dataclass
class StepState:
    index: int
    name: str
    type: str
    params: dict[str, Any]
    description: str
    status: str = "pending"  # pending, in-flight, applied, verified, failed, undone, undo-failed
    prior: dict[str, Any] | None = None
    phase: int | None = None
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
    phases: list[dict[str, Any]] = field(default_factory=list)
    target: dict[str, Any] | None = None
    origin: str | None = None
    paused_phase: int | None = None
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
            "target": self.target,
            "origin": self.origin,
        }

    def to_dict(self) -> dict[str, Any]:
        d = self.summary()
        d["params"] = self.params
        d["locks"] = self.locks
        d["rollback_of"] = self.rollback_of
        d["steps"] = [
            {"index": s.index + 1, "name": s.name, "type": s.type, "description": s.description,
             "status": s.status, "error": s.error, "record": s.record, "phase": s.phase}
            for s in self.steps
        ]
        d["phases"] = self.phases
        d["paused_phase"] = self.paused_phase
        return d


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return iso_utc(t)


def _read(path: Path) -> bytes:
    """A journal's bytes: a regular file inside the ops dir, opened without following
    symlinks or blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise CorruptJournal(f"journal {path.name} cannot be opened: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptJournal(f"journal {path.name} is not a regular file")
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def load(path: Path) -> OpState:
    """Fold a journal file into an :class:`OpState`; a torn last line is ignored.

    Raises :class:`CorruptJournal` (one sentence naming the file) for anything that is
    not a DebVisor journal: bad JSON before the last line, non-UTF-8 bytes, a missing
    ``created`` header, wrong field types, a FIFO or a symlink.
    """
    try:
        return _fold(path, _read(path))
    except CorruptJournal:
        raise
    except Exception as exc:  # noqa: BLE001 - any way a hostile file breaks the fold
        raise CorruptJournal(f"journal {path.name} is corrupt ({type(exc).__name__}: "
                             f"{str(exc)[:80]})") from None


def _fold(path: Path, data: bytes) -> OpState:
    st = OpState(id=path.stem, path=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptJournal(f"journal {path.name} is not UTF-8 text") from None
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]
    for n, raw in enumerate(complete, 1):
        try:
            ev = json.loads(raw, parse_constant=_no_constant)
        except (json.JSONDecodeError, RecursionError):
            raise CorruptJournal(f"journal {path.name} line {n} is not JSON") from None
        _apply_event(st, ev, path, n)
    if tail.strip():
        try:  # a last line without its newline: a torn write unless it parses
            _apply_event(st, json.loads(tail, parse_constant=_no_constant), path, len(lines))
        except (json.JSONDecodeError, RecursionError):
            pass  # torn write at a crash: the event did not happen
    if not st.kind:
        raise CorruptJournal(f"journal {path.name} has no 'created' record")
    _check_phases(st, path)
    return st


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _time(value: Any) -> float:
    """An event's time: a finite epoch in a sane range, or ValueError."""
    t = float(value)
    if not 0 <= t < 1e11:
        raise ValueError(f"time {value!r} is out of range")
    return t


def _check_phases(st: OpState, path: Path) -> None:
    """Phases must be contiguous, in order and cover every step exactly (a journal that
    pairs one step's class with another's record is refused, never rebuilt)."""
    if not st.phases:
        return
    n = 0
    for k, ph in enumerate(st.phases):
        first, count = ph.get("first"), ph.get("count")
        if (not isinstance(first, int) or not isinstance(count, int) or first != n or count < 0
                or ph.get("on_failure", "rollback-all") not in _POLICIES
                or ph.get("gate", "auto") not in ("auto", "pause")):
            raise CorruptJournal(f"journal {path.name}: phase {k + 1} is not a valid phase")
        if any(s.phase != k for s in st.steps[first:first + count]):
            raise CorruptJournal(f"journal {path.name}: phase {k + 1} does not match its steps")
        n += count
    if n != len(st.steps):
        raise CorruptJournal(f"journal {path.name}: its phases do not cover its steps")


_POLICIES = ("rollback-all", "rollback-phase-and-pause", "pause")


def _apply_event(st: OpState, ev: Any, path: Path, n: int) -> None:
    if not isinstance(ev, dict) or not isinstance(ev.get("event"), str):
        raise CorruptJournal(f"journal {path.name} line {n} is not a journal event")
    st.events += 1
    kind = ev["event"]
    if kind != "created" and not st.kind:
        raise CorruptJournal(f"journal {path.name} does not start with a 'created' record")
    idx = ev.get("step")
    step = st.steps[idx] if isinstance(idx, int) and 0 <= idx < len(st.steps) else None
    if kind == "created":
        if not isinstance(ev.get("kind"), str) or not isinstance(ev.get("steps", []), list):
            raise CorruptJournal(f"journal {path.name}: its 'created' record lacks kind or steps")
        st.kind, st.title = ev["kind"], str(ev.get("title", ""))
        st.params, st.locks = dict(ev.get("params") or {}), [str(x) for x in ev.get("locks", [])]
        st.user, st.started = str(ev.get("user", "")), _time(ev["t"])
        st.rollback_of = ev.get("rollback_of")
        st.target = ev.get("target") if isinstance(ev.get("target"), dict) else None
        st.origin = ev.get("origin") if isinstance(ev.get("origin"), str) else None
        st.phases = [p for p in ev.get("phases") or [] if isinstance(p, dict)]
        st.steps = [
            StepState(i, str(s["name"]), str(s["type"]), dict(s.get("params") or {}),
                      str(s.get("description", "")),
                      phase=s.get("phase") if isinstance(s.get("phase"), int) else None)
            for i, s in enumerate(ev["steps"])
        ]
    elif kind == "intent" and step:
        step.status, step.prior = "in-flight", dict(ev.get("prior") or {})
    elif kind == "applied" and step:
        step.status, step.record = "applied", dict(ev.get("record") or {})
    elif kind == "verified" and step:
        step.status = "verified"
    elif kind == "failed":
        st.error = ev.get("error")
        if step:
            step.error = ev.get("error")
            if step.status == "pending":
                step.status = "failed"
    elif kind == "undone" and step:
        step.status = "undone"
    elif kind == "undo-failed" and step:
        step.status, step.error = "undo-failed", ev.get("error")
    elif kind == "rollback":
        st.status = "rolling-back"
    elif kind == "paused":
        st.status = "paused"
        st.paused_phase = ev.get("phase") if isinstance(ev.get("phase"), int) else None
        st.error = ev.get("error", st.error)
    elif kind == "resumed":
        st.status = "running"
        st.paused_phase = None
    elif kind == "finished":
        st.status, st.ended = str(ev["status"]), _time(ev["t"])
        st.error = ev.get("error", st.error)


def all_ops(state_dir: Path, *, warn: bool = True) -> list[OpState]:
    """Every readable journalled operation, newest first; a corrupt or foreign file is
    named in one ``[WARN]`` line and skipped."""
    found = []
    for p in ops_dir(state_dir).iterdir():
        if p.suffix != ".jsonl":
            continue
        try:
            if not ID_RE.fullmatch(p.stem):
                raise CorruptJournal(f"{p.name} in {p.parent} is not named like a journal")
            found.append(load(p))
        except CorruptJournal as exc:
            if warn:
                log.warn(f"skipping {exc.message}")
    return sorted(found, key=lambda o: (o.started, o.id), reverse=True)
