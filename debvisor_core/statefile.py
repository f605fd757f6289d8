"""Files replaced atomically and durably (:func:`atomic_write`), and the small JSON files
of the state dir: read with a default, replaced atomically, updated under a lock."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


@contextmanager
def atomic_write(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Replace ``path`` with what the ``with`` block writes to the yielded file, durably: a
    new file next to it (``O_EXCL``, never an existing name or a symlink), ``mode``,
    fsync, rename over ``path`` (a symlink planted there is replaced, not followed), then
    the directory fsynced. On an error the temporary file goes and ``path`` is untouched."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            os.fchmod(f.fileno(), mode)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary files of :func:`atomic_write` of ``path`` that a killed process
    left (SIGKILL runs no cleanup). Call it once ``path`` itself is done with, while no
    other process writes it."""
    import glob

    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON (mode 0600) through :func:`atomic_write`: a
    reader sees the old or the new file, never half, even after a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write((json.dumps(data, indent=1) + "\n").encode())


def update_json(path: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the JSON object in ``path`` (empty if none), let ``change`` edit it, write it back
    durably — under an exclusive lock (``.NAME.lock``), so concurrent updates never lose
    each other's keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_json(path, {})
        if not isinstance(data, dict):
            data = {}
        change(data)
        write_json(path, data)
    return data
