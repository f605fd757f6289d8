"""The tamper-evident audit log: JSON lines, each carrying the hash of the previous.

Each line is a JSON object with ``seq`` (its line number), ``prev`` (the previous line's
``hash``) and ``hash`` (sha256 of the line's canonical JSON without ``hash``).

``audit.head`` records the line count and the last hash, sealed with an HMAC under a
root-only key kept outside the log directory (``STATE/keys/audit.key``, created by the
first write), so deleting lines at the end, deleting the log, rewriting the head or
replacing the chain with a fresh one are detected. Every syslog message carries the
record's ``seq`` and ``hash`` too (a copy off this host). When a write finds the log
and its sealed head disagree, it first chains a ``head-mismatch`` record, so the
evidence outlives the next write.

Writers take an exclusive flock on the log, ``verify`` a shared one, so it never sees a
half-finished write. A torn last line (a crash or ENOSPC mid-write) is cut off by the
next write, which chains a ``repaired`` record; a head one record behind (a crash
between the log and head writes) is accepted and caught up by the next write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import log
from .errors import DebvisorError
from .identity import who
from .output import iso_utc

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context

GENESIS = "0" * 64
REPAIRED = "repaired"
HEAD_MISMATCH = "head-mismatch"


def log_path(ctx: Context) -> Path:
    return ctx.log_dir / "audit.jsonl"


def head_path(path: Path) -> Path:
    """The head file of the log ``path`` (``audit.head`` next to ``audit.jsonl``)."""
    return path.with_name(path.name.replace(".jsonl", "") + ".head")


def key_path() -> Path:
    """The root-only key sealing the head: ``STATE/keys/audit.key``."""
    from .redact import key_path as _key_path

    return _key_path("audit")


def _canonical(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()


def _mac(key: bytes, count: int, last_hash: str) -> str:
    return hmac.new(key, _canonical({"count": count, "hash": last_hash}).encode(),
                    hashlib.sha256).hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: a short write is continued, a write of 0 bytes is ENOSPC."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def _fsync_dir(d: Path) -> None:
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _record(raw: bytes) -> dict[str, Any] | None:
    """The audit record in one line, or None when it is not one."""
    try:
        rec = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("hash"), str) else None


def _sealed(rec: dict[str, Any]) -> bool:
    """Whether ``rec``'s hash matches its content."""
    body = {k: v for k, v in rec.items() if k != "hash"}
    return _digest(body) == rec["hash"]


@dataclass
class _Tail:
    """The end of a log: where its complete lines end, the last one, and a torn rest."""

    end: int
    last: bytes
    torn: bytes


def _tail(fd: int) -> _Tail:
    size = os.fstat(fd).st_size
    chunk = 4096
    while True:
        start = max(0, size - chunk)
        data = os.pread(fd, size - start, start)
        nl = data.rfind(b"\n")
        body = data[:nl] if nl >= 0 else b""
        prev_nl = body.rfind(b"\n")
        if start > 0 and (nl < 0 or prev_nl < 0):
            chunk *= 4
            continue
        if nl < 0:
            return _Tail(0, b"", data)
        return _Tail(start + nl + 1, body[prev_nl + 1:], data[nl + 1:])


def _count_lines(fd: int, end: int) -> int:
    n, pos = 0, 0
    while pos < end:
        data = os.pread(fd, min(1 << 20, end - pos), pos)
        if not data:
            break
        n += data.count(b"\n")
        pos += len(data)
    return n


class _Unrepairable(DebvisorError):
    """The log ends in a complete line that is not an audit record."""


@dataclass
class _End:
    """The chain's state at its last complete record."""

    count: int
    hash: str
    prev: str  # the last record's prev (GENESIS for an empty log)
    dropped: int  # bytes of a torn tail cut off (0: none)


def _end_of(fd: int, path: Path, *, repair: bool) -> _End:
    """Where the chain ends; with ``repair``, a torn tail is cut (or completed) first."""
    t = _tail(fd)
    last = _record(t.last) if t.end else None
    if t.end and last is None:
        n = _count_lines(fd, t.end)
        raise _Unrepairable(
            f"ends in a line that is not an audit record (line {n}), which is not a torn "
            f"write and cannot be repaired automatically; keep it as evidence and move {path}, "
            f"{head_path(path)} and {key_path()} aside to start a new chain")
    count = 0
    if last is not None:
        seq = last.get("seq")
        count = seq if isinstance(seq, int) and seq > 0 else _count_lines(fd, t.end)
    end = _End(count, last["hash"] if last else GENESIS,
               str(last.get("prev", GENESIS)) if last else GENESIS, 0)
    if not t.torn or not repair:
        end.dropped = len(t.torn)
        return end
    whole = _record(t.torn)
    if whole is not None and _sealed(whole) and whole.get("prev") == end.hash:
        _write_all(fd, b"\n")  # the record was written whole but for its newline
        return _End(count + 1, whole["hash"], end.hash, 0)
    os.ftruncate(fd, t.end)
    end.dropped = len(t.torn)
    return end


def _read_key() -> bytes | None:
    """The head key, or None when there is none yet."""
    from .redact import load_key

    path = key_path()
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:  # e.g. not root: the keys directory is root-only
        raise DebvisorError(f"the audit key {path} cannot be read ({exc.strerror}); "
                            "run as root") from None
    return load_key(path, "audit key", create=False)


def _head_problem(path: Path, key: bytes | None, key_existed: bool,
                  end: _End) -> tuple[str | None, str]:
    """(what is wrong between the head and a log ending at ``end``, or None; a note)."""
    head = head_path(path)
    try:
        h = json.loads(head.read_bytes())
    except FileNotFoundError:
        if not key_existed:
            return None, ""  # not sealed yet: a log from before keyed heads, or a new one
        return (f"the head {head} is missing although the audit key {key_path()} exists "
                "(the head was deleted)"), ""
    except (OSError, ValueError) as exc:
        return f"the head {head} is not a valid head record ({exc})", ""
    if not isinstance(h, dict) or not isinstance(h.get("count"), int):
        return f"the head {head} is not a valid head record (rewritten)", ""
    count, last = h["count"], h.get("hash")
    if "mac" in h:
        if key is None:
            if count == end.count and last == end.hash:
                return None, ""  # a crash while the key was created (sealed just before)
            return (f"the head {head} is sealed but the audit key {key_path()} is missing "
                    "(the key was deleted)"), ""
        if not isinstance(last, str) or not hmac.compare_digest(str(h["mac"]),
                                                                _mac(key, count, last)):
            return (f"the head {head} does not carry a valid HMAC (the head was rewritten "
                    "or replaced)"), ""
    elif key_existed:
        return (f"the head {head} is not sealed although the audit key {key_path()} exists "
                "(the head was rewritten)"), ""
    elif last == end.hash:
        return None, ""  # an unsealed head of an older version: its count may lag
    if count == end.count and last == end.hash:
        return None, ""
    if count == end.count - 1 and last == end.prev:
        return None, ("; the head was one record behind (a crash between the log and head "
                      "writes), the next write catches it up")
    if count > end.count:
        return (f"line {end.count + 1}: missing — the head records {count} lines but the log "
                f"has {end.count} (lines deleted at the end)"), ""
    return (f"the log does not match its head: the head records {count} lines ending in "
            f"{str(last)[:12]}…, the log has {end.count} ending in {end.hash[:12]}… (the log "
            "was replaced or rewritten)"), ""


def _write_head(path: Path, count: int, last_hash: str, key: bytes) -> None:
    """Replace the head atomically and durably: tmp (O_EXCL) + fsync + rename + dir fsync."""
    head = head_path(path)
    tmp = head.with_name(f".{head.name}.tmp")  # only ever written under the log's LOCK_EX
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    body = {"count": count, "hash": last_hash, "mac": _mac(key, count, last_hash)}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    try:
        _write_all(fd, json.dumps(body).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, head)
    _fsync_dir(head.parent)


def _chained(event: dict[str, Any], seq: int, prev: str) -> dict[str, Any]:
    rec = {k: v for k, v in event.items() if k not in ("hash", "prev", "seq")}
    rec["seq"] = seq
    rec["prev"] = prev
    rec["hash"] = _digest(rec)
    return rec


def _note(result: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"time": iso_utc(), "host": socket.gethostname(), "user": who(), "result": result,
            "details": details}


def append(path: Path, event: dict[str, Any]) -> dict[str, Any]:
    """Append ``event`` to the chain at ``path`` durably; return the written record.

    A torn tail is cut first (with a ``repaired`` record), a head that disagrees with the
    log is recorded (``head-mismatch``), short writes are continued and the head is
    replaced atomically. Raises OSError or DebvisorError when the log cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_size == 0:
            _fsync_dir(path.parent)  # the log's entry is durable before a key can exist
        key = _read_key()
        end = _end_of(fd, path, repair=True)
        problem, _ = _head_problem(path, key, key is not None, end)
        if key is None:  # the first sealed write: seal the head as it is, then show the key
            from .redact import load_key

            key = load_key(key_path(), "audit key",
                           before_link=lambda k: _write_head(path, end.count, end.hash, k))
        events: list[dict[str, Any]] = []
        if end.dropped:
            events.append(_note(REPAIRED, {
                "dropped_bytes": end.dropped,
                "reason": "a torn last line (an interrupted write) was cut off"}))
        if problem:
            events.append(_note(HEAD_MISMATCH, {"problem": problem}))
        events.append(event)
        count, prev, data, rec = end.count, end.hash, b"", event
        for ev in events:
            count += 1
            rec = _chained(ev, count, prev)
            prev = rec["hash"]
            data += (_canonical(rec) + "\n").encode()
        start = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)  # no torn line left behind when we can help it
            raise
        _write_head(path, count, prev, key)
    finally:
        os.close(fd)  # releases the flock
    return rec


def verify(path: Path) -> tuple[bool, str, int]:
    """Check the whole chain and its head: (ok, message naming the first problem, lines).

    Takes a shared lock on the log, so concurrent writers never look like tampering.
    Raises DebvisorError when the audit key exists but cannot be read.
    """
    head = head_path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if head.exists():
            return False, f"the log is missing but its head {head} exists (the log was deleted)", 0
        try:
            key_exists = _read_key() is not None
        except DebvisorError as exc:
            raise DebvisorError(f"cannot check the audit log: {exc.message}") from None
        if key_exists:
            return False, (f"the log and its head are missing but the audit key {key_path()} "
                           "exists (records were written, then deleted)"), 0
        return True, "no audit log yet", 0
    except OSError as exc:
        raise DebvisorError(f"the audit log {path} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        fcntl.flock(fd, fcntl.LOCK_SH)  # writers hold LOCK_EX from the line to the head
        try:
            key = _read_key()  # under the lock: the first write creates it
        except DebvisorError as exc:
            raise DebvisorError(f"cannot check the audit log's head: {exc.message}") from None
        prev, n, notes, repaired, torn = GENESIS, 0, "", 0, 0
        last_prev = GENESIS
        for raw in f:
            if not raw.endswith(b"\n"):
                torn = len(raw)  # the rest of a crashed write: the next write cuts it
                break
            n += 1
            rec = _record(raw)
            if rec is None:
                return False, f"line {n}: not a valid audit record (edited or truncated)", n
            if not _sealed(rec):
                return False, f"line {n}: content does not match its hash (edited)", n
            if rec.get("prev") != prev:
                return False, (f"line {n}: does not follow line {n - 1} "
                               "(a line before it was deleted, or lines were reordered)"), n
            if "seq" in rec and rec["seq"] != n:
                return False, (f"line {n}: carries sequence number {rec['seq']} (lines were "
                               "deleted or moved)"), n
            if rec.get("result") == HEAD_MISMATCH:
                details = rec.get("details")
                problem = details.get("problem", "?") if isinstance(details, dict) else "?"
                return False, (f"line {n}: when it was written the log did not match its head "
                               f"— {problem}"), n
            repaired += rec.get("result") == REPAIRED
            last_prev, prev = prev, rec["hash"]
        problem, note = _head_problem(path, key, key is not None, _End(n, prev, last_prev, torn))
    if problem:
        return False, problem, n
    if repaired:
        notes += f"; {repaired} torn write(s) repaired"
    if torn:
        notes += f"; a torn last line ({torn} bytes) is cut off by the next write"
    return True, f"{n} lines, chain intact{notes}{note}", n


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
    """Why the audit log cannot be written, or None (a torn tail is repaired when written)."""
    path = log_path(ctx)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o640)
    except OSError as exc:
        return f"the audit log {path} cannot be written ({exc.strerror}); refusing to change state"
    try:
        _end_of(fd, path, repair=False)
    except _Unrepairable as exc:
        return f"the audit log {path} {exc.message}; refusing to change state"
    except OSError as exc:
        return f"the audit log {path} cannot be read ({exc.strerror}); refusing to change state"
    finally:
        os.close(fd)
    try:
        _read_key()
    except DebvisorError as exc:
        return f"{exc.message.rstrip('.')}; refusing to change state"
    kp = key_path()
    probe = kp.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the directory it will be created in
    if not os.path.lexists(kp) and not os.access(probe, os.W_OK):
        return f"the audit key {kp} cannot be created ({probe} is not writable); refusing to change state"
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


def _caller_seal(label: str) -> str | None:
    """HMAC of ``label`` under the root-only ``rpcd-caller`` key (None without access)."""
    from .redact import key_path as redact_key_path
    from .redact import load_key

    try:
        key = load_key(redact_key_path("rpcd-caller"), "rpcd caller key")
    except Exception:  # noqa: BLE001 - no key, no state dir, not root: nothing is verified
        return None
    return hmac.new(key, label.encode(), hashlib.sha256).hexdigest()


#: the variables :func:`caller_env` sets (what a process handing on a run may pass on)
CALLER_VARS = ("DEBVISOR_CALLER", "DEBVISOR_CALLER_SEAL")


def caller_env(label: str) -> dict[str, str]:
    """The environment that tells a child ``debvisor`` which rpcd caller it runs for,
    sealed so that the child can tell it from a variable anyone could set."""
    return dict(zip(CALLER_VARS, (label, _caller_seal(label) or ""), strict=True))


def rpc_caller() -> dict[str, str]:
    """``{"caller": NAME}`` when debvisor-rpcd sealed it, ``{"claimed_caller": NAME}`` when
    DEBVISOR_CALLER was set some other way, ``{}`` when it is not set (for audit events)."""
    label = os.environ.get("DEBVISOR_CALLER", "")[:200]
    if not label:
        return {}
    seal = _caller_seal(label)
    given = os.environ.get("DEBVISOR_CALLER_SEAL", "")
    if seal is not None and hmac.compare_digest(given, seal):
        return {"caller": label}
    return {"claimed_caller": label}


def record(ctx: Context, *, result: str, op_id: str | None = None,
           duration_ms: int | None = None, details: dict[str, Any] | None = None) -> None:
    """Write one audit event: to the core file chain first (which must succeed, else
    DebvisorError), then, with its ``seq``, ``prev`` and ``hash``, to every other sink.

    Secrets in argv and details are replaced by keyed digests.
    """
    from .redact import scrub

    plugin, action = _command()
    event = {
        "time": iso_utc(),
        "host": socket.gethostname(),
        "user": who(),
        "argv": ctx.safe_argv(),
        "plugin": plugin,
        "action": action,
        "operation": op_id,
        "result": result,
        "duration_ms": duration_ms,
        "details": scrub(details or {}),
    }
    event.update(rpc_caller())  # run for a debvisor-rpcd call: who the daemon authenticated
    path = log_path(ctx)
    try:
        rec = append(path, event)
    except DebvisorError as exc:
        raise DebvisorError(f"the audit log {path} cannot be written: {exc.message}") from None
    except OSError as exc:
        raise DebvisorError(f"the audit log {path} cannot be written: "
                            f"{exc.strerror or exc}") from None
    for impl in reversed(ctx.hook.debvisor_audit.get_hookimpls()):
        if impl.plugin_name == "core":
            continue  # the file chain, written above
        try:
            impl.function(ctx=ctx, event=dict(rec))
        except Exception as exc:  # noqa: BLE001 - other sinks only warn
            log.warn(f"audit sink {impl.plugin_name} failed: {exc}")
