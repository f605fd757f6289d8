"""Operation locks: a node-local flock per lock name, plus an optional cluster-wide
lock that a plugin provides through the ``debvisor_cluster_lock`` hook."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import log
from .errors import PreflightRefused

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context
    from .model import Operation


def _lock_path(state_dir: Path, name: str) -> Path:
    d = state_dir / "locks"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".lock")


@contextlib.contextmanager
def node_lock(state_dir: Path, names: list[str], *, wait: float | None = None) -> Iterator[None]:
    """Hold exclusive flocks on every name (sorted, to avoid deadlock), waiting up to
    ``wait`` seconds ($DEBVISOR_LOCK_WAIT, default 30) for each."""
    if wait is None:
        wait = float(os.environ.get("DEBVISOR_LOCK_WAIT", "30"))
    fds: list[int] = []
    try:
        for name in sorted(set(names)):
            path = _lock_path(state_dir, name)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fds.append(fd)
            deadline = time.monotonic() + wait
            told = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                    if time.monotonic() > deadline:
                        raise PreflightRefused(
                            f"lock {name!r} is held by pid {holder or '?'}; another operation "
                            "is running (see `debvisor ops list`)"
                        ) from None
                    if not told:
                        log.info(f"waiting for lock {name!r} held by pid {holder or '?'}")
                        told = True
                    time.sleep(0.1)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        for fd in reversed(fds):
            os.close(fd)


@contextlib.contextmanager
def hold(ctx: Context, op: Operation, names: list[str]) -> Iterator[Any]:
    """The node-local lock, then the cluster lock if a plugin provides one; yields the
    cluster lock object (or None), whose ``lost()`` the engine checks before each step."""
    with node_lock(ctx.state_dir, names):
        cluster = ctx.hook.debvisor_cluster_lock(ctx=ctx, op=op, names=names)
        if cluster is None:
            yield None
        else:
            log.debug(f"cluster lock {names} via {type(cluster).__name__}")
            with cluster:
                yield cluster


def local_locks(state_dir: Path) -> list[dict[str, Any]]:
    """This node's operation locks: each lock file's name, whether a process holds it and
    which (its pid and command line). Probing takes a shared flock for an instant; anything
    but a regular file there (a planted FIFO, a link) is skipped, never opened to wait."""
    import stat

    d = state_dir / "locks"
    out = []
    for path in sorted(d.glob("*.lock")) if d.is_dir() else []:
        entry: dict[str, Any] = {"name": path.stem, "held": False}
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                entry["held"] = True
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
                entry["pid"] = int(pid) if pid.isdigit() else None
                entry["command"] = _cmdline(entry["pid"])
        finally:
            os.close(fd)
        out.append(entry)
    return out


def _cmdline(pid: int | None) -> str | None:
    if pid is None:
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a)[:300]
