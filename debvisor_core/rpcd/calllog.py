"""The call log of debvisor-rpcd: one JSON line per call (and per denial), durable and
chained, written *before* the answer — blocking, like Vault's audit devices and the
Kubernetes ``blocking-strict`` webhook: a record that cannot be written fails the call.

Each line carries ``seq``, ``prev`` and ``hash`` (the core audit chain's format), so a
deleted or edited line shows. Group commit: a writer appends its line, then waits until
an fsync that started after its line was written has succeeded; whoever finds no fsync
running starts one that covers every line written so far, so concurrent calls share one
fsync and each still returns only once its own line is on disk (a failed fsync fails
every call it was to cover). An fsync costs far more CPU than a line (~55 µs on the
development VM), so the writer about to start one first waits — at most ``gather_s``,
1 ms — for the calls being served (:meth:`CallLog.enter`; the daemon's worker pool says
which) that have not written their line yet: under load one fsync then covers several
calls instead of about one, and a lone caller never waits. Only when the fsync starts
changes; what it must cover does not. Operations a call starts are audited by the engine
as well, in the core audit log, with the caller.

A line is the record's canonical JSON (sorted keys, as the core chain's) with ``hash``
last: the record is encoded once, hashed, and the hash appended (``audit._sealed`` checks
it the same way, over every key but ``hash``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..audit import _record, _tail, _write_all


def c_encoder(*, sort_keys: bool, compact: bool) -> Callable[[Any], str]:
    """``json.dumps(obj, default=str)`` (``sort_keys``; ``compact``: no spaces) of records
    that are never circular (the guard's, an event's), from the C encoder made once:
    ``JSONEncoder.encode`` builds one, and a table of the containers seen, every time.
    Sorted and compact: the core chain's canonical form (``audit._canonical``)."""
    from json import encoder as _enc

    make = getattr(_enc, "c_make_encoder", None)  # not in the typing stubs
    if make is None:  # pragma: no cover - CPython without the _json accelerator
        return json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":") if compact else None,
                                default=str).encode
    colon, comma = (":", ",") if compact else (": ", ", ")
    one = make(None, str, _enc.encode_basestring_ascii, None, colon, comma, sort_keys, False, True)

    def encode(obj: Any) -> str:
        return "".join(one(obj, 0))

    return encode


_canonical = c_encoder(sort_keys=True, compact=True)


class CallLog:
    """Append-only, fsynced, hash-chained JSON lines at ``path`` (mode 0600)."""

    def __init__(self, path: Path, *, durable: bool = True, gather_s: float = 0.001) -> None:
        self.path = path
        self.durable = durable
        self.gather_s = gather_s
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o600)
        self._lock = threading.Lock()  # the lines' order: seq, prev and the write
        self._seq, self._prev = self._tail()
        #: the fsync state below, and the writers waiting for it: the one fsync running
        #: wakes them all when it ends (a lock they took in turn woke them one by one,
        #: each after the one before had run: 2-7 % fewer durable calls/s, docs/rpcd.md)
        self._cv = threading.Condition(threading.Lock())
        self._syncing = False  # an fsync is running
        self._synced = self._seq  # every line up to this seq is on disk
        self._lost = 0  # lines up to this seq were covered by an fsync that failed
        # group commit's wait (all under _count, never held across a system call, so
        # counting a call never waits for another's write): the calls being served, the writers
        # waiting for their line to be on disk, and whether an fsync waits for the rest
        self._count = threading.Lock()
        self._calls = self._waiting = 0
        self._gathering = False
        self._gathered = threading.Event()
        self._local = threading.local()  # whether this thread's call entered

    def enter(self) -> None:
        """This thread serves a call that will write its line soon: an fsync about to
        start may wait for it (no effect if it entered already); :meth:`leave` when that
        is no longer so (the daemon's worker pool does, in a ``finally``)."""
        if self.durable and not getattr(self._local, "entered", False):
            self._local.entered = True
            with self._count:
                self._calls += 1

    def leave(self) -> None:
        """This thread's call (if it entered) is over."""
        if self.durable and getattr(self._local, "entered", False):
            self._local.entered = False
            with self._count:
                self._calls -= 1
                if self._gathering and self._calls <= self._waiting:
                    self._gathered.set()

    def _tail(self) -> tuple[int, str]:
        last = _record(_tail(self._fd).last)
        return (int(last["seq"]), last["hash"]) if last and "seq" in last else (0, "")

    def write(self, rec: dict[str, Any]) -> None:
        """Append ``rec`` (which gets ``seq`` and ``prev``; the caller's copy) durably;
        raises OSError when it cannot (the call then fails)."""
        rec.pop("hash", None)
        with self._lock:
            mine = rec["seq"] = self._seq + 1
            rec["prev"] = self._prev
            body = _canonical(rec).encode()  # ASCII: the encoder escapes the rest
            digest = hashlib.sha256(body).hexdigest()
            line = b'%s,"hash":"%s"}\n' % (body[:-1], digest.encode())
            n = os.write(self._fd, line)
            if n < len(line):  # a short write (a full disk): the rest, or ENOSPC
                _write_all(self._fd, line[n:])
            self._seq, self._prev = mine, digest
        if self.durable:
            with self._count:
                self._waiting += 1
                if self._gathering and self._calls <= self._waiting:
                    self._gathered.set()  # every call served has its line written
            try:
                self._wait_durable(mine)
            finally:
                with self._count:
                    self._waiting -= 1

    def _wait_durable(self, seq: int) -> None:
        """Return once line ``seq`` is on disk: another writer's fsync that began after it
        was written covers it, else this thread runs one for every line written so far."""
        # _synced before _lost: a failed fsync records its loss before any later fsync
        # (they run one at a time) records success, so a success seen here means a
        # failure that came before it is seen too. Linux reports a writeback error once:
        # a later fsync that succeeds says nothing of the lines the failed one covered.
        if self._synced >= seq and seq > self._lost:
            return  # covered already: no lock
        cv = self._cv
        with cv:
            while True:
                if seq <= self._lost:
                    raise OSError("the call log's fsync failed")  # the line: not durable
                if self._synced >= seq:
                    return
                if not self._syncing:
                    self._syncing = True  # this thread runs the next fsync
                    break
                cv.wait()  # the running fsync began before this line, or may not cover it
        upto = None
        try:
            self._gather()
            upto = self._seq  # every line up to it is written (set after its write)
            os.fsync(self._fd)
        except BaseException:
            with cv:
                if upto is not None:
                    self._lost = max(self._lost, upto)  # every line it was to cover fails
                self._syncing = False
                cv.notify_all()
            raise
        with cv:
            self._synced = max(self._synced, upto)
            self._syncing = False
            cv.notify_all()

    def _gather(self) -> None:
        """Wait (at most ``gather_s``) until every call being served has written its line —
        the fsync about to start then covers them too; at once when none is left (the count
        includes calls that wrote theirs and are about to leave: leaving ends the wait)."""
        with self._count:
            if self.gather_s <= 0 or self._calls <= self._waiting:
                return
            self._gathered.clear()
            self._gathering = True
        try:
            self._gathered.wait(self.gather_s)
        finally:
            with self._count:
                self._gathering = False

    def close(self) -> None:
        os.close(self._fd)
