"""The checkpoint of a pending change and its detached watchdog.

Before an apply touches the kernel, the prior state goes to ``STATE/plugins/net/checkpoint/
snapshot.json`` and a watchdog process starts in its own session (it outlives the applying
process, even a SIGKILLed one, and works in the network namespace it was started in). It
waits until the deadline; unless the change was confirmed or finished by then, it restores
the snapshot, announces the addresses again and audits what it did. netplan try keeps its
timer in the applying process, so its revert dies with it; nmstate's kernel checkpoints
work like this one.

Whoever finishes the change (the applying process: kept or restored; the watchdog: restored)
does so under an flock on ``lock`` and leaves ``finished.json``, so the other one stands down.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from debvisor_core.errors import BadInput

SNAPSHOT, DEADLINE, PID, CONFIRMED, FINISHED, LOCK, LOG, APPLIER = (
    "snapshot.json", "deadline", "watchdog.pid", "confirmed", "finished.json", "lock",
    "watchdog.log", "applier.pid")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


class Checkpoint:
    """The directory of one pending change."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @classmethod
    def under(cls, plugin_state: Path) -> Checkpoint:
        return cls(plugin_state / "checkpoint")

    # -- state ---------------------------------------------------------------------------
    def pending(self) -> dict[str, Any] | None:
        """What is pending (deadline, watchdog pid, confirmed), or None when nothing is."""
        if not (self.dir / SNAPSHOT).is_file() or (self.dir / FINISHED).exists():
            return None
        try:
            deadline = float((self.dir / DEADLINE).read_text())
            pid = int((self.dir / PID).read_text())
        except (OSError, ValueError):
            deadline, pid = 0.0, 0
        try:
            applier = int((self.dir / APPLIER).read_text())
        except (OSError, ValueError):
            applier = 0
        return {"deadline": deadline, "seconds_left": max(0.0, deadline - time.time()),
                "watchdog_pid": pid, "watchdog_alive": bool(pid) and _alive(pid),
                "applier_pid": applier, "applier_alive": bool(applier) and _alive(applier),
                "confirmed": (self.dir / CONFIRMED).exists()}

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.dir / SNAPSHOT).read_text())
        return data

    def finished(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.dir / FINISHED).read_text())
        except (OSError, ValueError):
            return None
        return data

    # -- the applying process ------------------------------------------------------------
    def create(self, snapshot: dict[str, Any]) -> None:
        """Write a new checkpoint (refused while another change waits for confirmation)."""
        now = self.pending()
        if now and now["watchdog_alive"]:
            raise BadInput("another network change is waiting for confirmation "
                           f"({now['seconds_left']:.0f} s left): `net confirm` keeps it, "
                           "`net rollback` restores it")
        if self.dir.exists():
            for p in self.dir.iterdir():
                if p.is_file() and not p.is_symlink():
                    p.unlink()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(self.dir / SNAPSHOT, json.dumps(snapshot, sort_keys=True))
        _write(self.dir / APPLIER, f"{os.getpid()}\n")

    def start_watchdog(self, seconds: float, config_file: str | None) -> int:
        """Start the detached watchdog that restores the snapshot in ``seconds``."""
        _write(self.dir / DEADLINE, f"{time.time() + seconds:.3f}\n")
        argv = [sys.executable, "-m", "debvisor_net.watchdog", str(self.dir)]
        if config_file:
            argv += ["--config", config_file]
        with open(self.dir / LOG, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,  # noqa: S603 - argv list
                                    start_new_session=True, close_fds=True)
        _write(self.dir / PID, f"{proc.pid}\n")
        return proc.pid

    def confirm(self) -> None:
        _write(self.dir / CONFIRMED, f"{time.time():.3f}\n")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def finish(self, how: str, **details: Any) -> None:
        """Record the end of the change (under the lock) and stop the watchdog."""
        _write(self.dir / FINISHED, json.dumps({"how": how, "at": time.time(), **details}))
        self.stop_watchdog()

    def stop_watchdog(self) -> None:
        try:
            pid = int((self.dir / PID).read_text())
        except (OSError, ValueError):
            return
        if pid > 1 and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
