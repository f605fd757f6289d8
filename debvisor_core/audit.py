"""The tamper-evident audit log: JSON lines, each carrying the hash of the previous.

Each line is a JSON object with ``prev`` (the previous line's ``hash``) and ``hash``
(sha256 of the line's canonical JSON without ``hash``). ``audit.head`` records the
line count and last hash, so deleting lines at the end is detected too. Writers
take an exclusive flock, so concurrent processes keep one valid chain.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import log
from .errors import DebvisorError
from .identity import who
from .output import iso_utc

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context

GENESIS = "0" * 64


def log_path(ctx: Context) -> Path:
    return ctx.log_dir / "audit.jsonl"


def _canonical(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()


def _last_line(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunk = 4096
    while True:
        start = max(0, size - chunk)
        data = os.pread(fd, size - start, start)
        body = data.rstrip(b"\n")
        nl = body.rfind(b"\n")
        if nl >= 0 or start == 0:
            return body[nl + 1:]
        chunk *= 4


def append(path: Path, event: dict[str, Any]) -> dict[str, Any]:
    """Append ``event`` to the chain at ``path``; return the written record."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _last_line(fd)
        prev = json.loads(last)["hash"] if last else GENESIS
        rec = {k: v for k, v in event.items() if k not in ("hash", "prev")}
        rec["prev"] = prev
        rec["hash"] = _digest(rec)
        os.write(fd, (_canonical(rec) + "\n").encode())
        os.fsync(fd)
        _write_head(path, rec["hash"])
    finally:
        os.close(fd)  # releases the flock
    return rec


def _head_path(path: Path) -> Path:
    return path.with_name(path.name.replace(".jsonl", "") + ".head")


def _write_head(path: Path, last_hash: str) -> None:
    head = _head_path(path)
    try:
        count = int(json.loads(head.read_text())["count"])
    except (OSError, ValueError, KeyError):
        count = _count_lines(path) - 1
    tmp = head.with_name(head.name + ".tmp")
    tmp.write_text(json.dumps({"count": count + 1, "hash": last_hash}))
    os.replace(tmp, head)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def verify(path: Path) -> tuple[bool, str, int]:
    """Check the whole chain: (ok, message naming the first bad line, lines checked)."""
    if not path.exists():
        return True, "no audit log yet", 0
    prev = GENESIS
    n = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, raw in enumerate(f, 1):
            try:
                rec = json.loads(raw)
                claimed = rec.pop("hash")
            except (json.JSONDecodeError, KeyError, AttributeError):
                return False, f"line {n}: not a valid audit record (edited or truncated)", n
            if _digest(rec) != claimed:
                return False, f"line {n}: content does not match its hash (edited)", n
            if rec.get("prev") != prev:
                return False, (f"line {n}: does not follow line {n - 1} "
                               "(a line before it was deleted, or lines were reordered)"), n
            prev = claimed
    head = _head_path(path)
    if head.exists():
        try:
            h = json.loads(head.read_text())
        except ValueError:
            return False, f"{head}: unreadable head record", n
        if h.get("count") != n or h.get("hash") != prev:
            return False, (f"line {n + 1}: missing — the head records {h.get('count')} lines "
                           f"but the log has {n} (lines deleted at the end)"), n
    return True, f"{n} lines, chain intact", n


def read(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                continue


def unwritable_reason(ctx: Context) -> str | None:
    """Why the audit log cannot be written, or None."""
    path = log_path(ctx)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.close(fd)
    except OSError as exc:
        return f"the audit log {path} cannot be written ({exc.strerror}); refusing to change state"
    return None


def _command() -> tuple[str | None, str | None]:
    import click

    c = click.get_current_context(silent=True)
    if c is None:
        return None, None
    words = c.command_path.split()
    if os.environ.get("DEBVISOR_ALIAS") and words and words[0] == os.environ["DEBVISOR_ALIAS"]:
        words[0] = os.environ.get("DEBVISOR_ALIAS_WORD", words[0])  # `hvctl x` is `debvisor hv x`
    else:
        words = words[1:]
    return (words[0] if words else None), (" ".join(words[1:]) or None)


def record(ctx: Context, *, result: str, op_id: str | None = None,
           duration_ms: int | None = None, details: dict[str, Any] | None = None) -> None:
    """Write one audit event to every sink; the core file sink must succeed."""
    plugin, action = _command()
    event = {
        "time": iso_utc(),
        "host": socket.gethostname(),
        "user": who(),
        "argv": ctx.argv,
        "plugin": plugin,
        "action": action,
        "operation": op_id,
        "result": result,
        "duration_ms": duration_ms,
        "details": details or {},
    }
    for impl in reversed(ctx.hook.debvisor_audit.get_hookimpls()):
        try:
            impl.function(ctx=ctx, event=event)
        except Exception as exc:
            if impl.plugin_name == "core":
                raise DebvisorError(f"the audit log {log_path(ctx)} cannot be written: {exc}") from exc
            log.warn(f"audit sink {impl.plugin_name} failed: {exc}")
