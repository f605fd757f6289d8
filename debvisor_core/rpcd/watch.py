"""Noticing that a store file changed without a system call per check: inotify.

The daemon checks the API-key store on every call that sends a key, and a revoked key
must be refused at its next use. A ``stat`` per call does that, but it is a system call
that releases the GIL: under load each one costs a thread switch, measured at about 20 µs
of CPU a call on the benchmark — more than everything else the key check does. A
:class:`DirWatch` has a daemon thread block on inotify for the store's directory and
count what happens there; a reader compares the count (a Python int) and reads the file
again only when it moved. The count moves a few microseconds after the write is done
(when the watching thread runs); a reader never sees an older file than that.

Where inotify cannot be used (not Linux, a seccomp filter, too many watches) ``ok`` is
False and readers fall back to a ``stat`` per check.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import threading
from pathlib import Path

from .. import log

# <sys/inotify.h>
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_IGNORED = 0x400, 0x800, 0x8000
_MASK = (_IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE
         | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF)
_GONE = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED
_EVENT = struct.Struct("iIII")


class DirWatch:
    """``generation`` grows whenever anything in ``directory`` changes (a file written,
    replaced, removed); ``ok`` is False when changes cannot be watched (then check the
    files yourself)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.generation = 0
        self.ok = False
        self._fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = int(libc.inotify_init1(os.O_CLOEXEC))
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1")
            if libc.inotify_add_watch(fd, os.fsencode(directory), _MASK) < 0:
                err = ctypes.get_errno()
                os.close(fd)
                raise OSError(err, f"inotify_add_watch {directory}")
        except (OSError, AttributeError) as exc:  # no inotify here: the caller stats
            log.warn(f"rpcd: cannot watch {directory} ({exc}); checking it on every call")
            return
        self._fd, self.ok = fd, True
        threading.Thread(target=self._run, daemon=True, name="rpcd-watch").start()

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except OSError:
                data = b""
            gone = not data
            at = 0
            while at + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, at)
                gone = gone or bool(mask & _GONE)
                at += _EVENT.size + length
            if gone:  # the directory itself went away: nothing more will be reported
                self.ok = False
            self.generation += 1  # after ok: a reader that saw the move stats from now on
            if gone:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                return


__all__ = ["DirWatch"]
