"""The call log of debvisor-rpcd: one JSON line per call (and per denial), durable and
chained, written *before* the answer — blocking, like Vault's audit devices and the
Kubernetes ``blocking-strict`` webhook: a record that cannot be written fails the call.

Each line carries ``seq``, ``prev`` and ``hash`` (the core audit chain's format), so a
deleted or edited line shows. Group commit: a writer appends its line, then waits until
an fsync that started after its line was written has succeeded; whoever finds no fsync
running starts one that covers every line written so far, so concurrent calls share one
fsync and each still returns only once its own line is on disk (a failed fsync fails
every call it was to cover). Operations a call starts are audited by the engine as well,
in the core audit log, with the caller.

A line is the record's canonical JSON (sorted keys, as the core chain's) with ``hash``
last: the record is encoded once, hashed, and the hash appended (``audit._sealed`` checks
it the same way, over every key but ``hash``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from ..audit import _record, _tail, _write_all

#: the core chain's canonical form (``audit._canonical``), one encoder for every line
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode


class CallLog:
    """Append-only, fsynced, hash-chained JSON lines at ``path`` (mode 0600)."""

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o600)
        self._lock = threading.Lock()
        self._seq, self._prev = self._tail()
        self._sync = threading.Lock()  # held by the one fsync running
        self._synced = self._seq  # every line up to this seq is on disk
        self._lost = 0  # lines up to this seq were covered by an fsync that failed

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
            body = _canonical(rec)
            digest = hashlib.sha256(body.encode()).hexdigest()
            _write_all(self._fd, f'{body[:-1]},"hash":"{digest}"}}\n'.encode())
            self._seq, self._prev = mine, digest
        if self.durable:
            self._wait_durable(mine)

    def _wait_durable(self, seq: int) -> None:
        """Return once line ``seq`` is on disk: another writer's fsync that began after it
        was written covers it, else this thread runs one for every line written so far."""
        while self._synced < seq:
            with self._sync:
                if self._synced >= seq:  # an fsync that covered it ended while we waited
                    return
                if seq <= self._lost:  # after a failed fsync the kernel may have dropped
                    raise OSError("the call log's fsync failed")  # the line: not durable
                with self._lock:
                    upto = self._seq  # the lines written before this fsync starts
                try:
                    os.fsync(self._fd)
                except OSError:
                    self._lost = max(self._lost, upto)
                    raise  # this call fails; every other line it covered fails too
                self._synced = max(self._synced, upto)

    def close(self) -> None:
        os.close(self._fd)
