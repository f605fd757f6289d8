"""Start, watch and stop lab daemons without a shell (argument lists only)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DebvisorError


class LabError(DebvisorError):
    """A lab service failed to start or stop."""


def spawn(
    argv: Sequence[str],
    *,
    pidfile: Path,
    log: Path,
    netns: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Start ``argv`` detached in its own session, output to ``log``; write and return its pid.

    With ``netns`` the process runs inside that network namespace (``ip netns exec``).
    """
    full = list(argv)
    if netns:
        full = ["ip", "netns", "exec", netns, *full]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
            full,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def read_pid(pidfile: Path) -> int | None:
    """The pid recorded in ``pidfile`` if that process is alive and is the one the file was
    written for, else None: a process that started after the pidfile was last written has
    merely reused the pid of a daemon that died (stopping it would hit a stranger)."""
    try:
        pid = int(pidfile.read_text().split()[0])
        written = pidfile.stat().st_mtime
    except (OSError, ValueError, IndexError):
        return None
    if not alive(pid):
        return None
    started = _start_time(pid)
    if started is not None and started > written + 2.0:
        return None
    return pid


def _start_time(pid: int) -> float | None:
    """When ``pid`` started (epoch seconds), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(pid: int, *, timeout: float = 10.0, group: bool = True) -> None:
    """SIGTERM ``pid`` (and its process group), then SIGKILL after ``timeout``; wait until gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                try:
                    os.killpg(pid, sig)
                except (ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            else:
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not alive(pid):
                return
            time.sleep(0.05)
    if alive(pid):
        raise LabError(f"process {pid} did not exit after SIGKILL")


def stop_pidfile(pidfile: Path, *, timeout: float = 10.0) -> None:
    """Stop the process named in ``pidfile`` (if alive) and remove the file."""
    pid = read_pid(pidfile)
    if pid is not None:
        stop(pid, timeout=timeout)
    pidfile.unlink(missing_ok=True)


def wait_for(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    log: Path | None = None,
    pid: int | None = None,
) -> None:
    """Poll ``ready()`` until true; raise LabError with the log's tail on timeout or early death."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if ready():
            return
        if pid is not None and not alive(pid):
            raise LabError(f"{what}: process exited during start-up{_tail(log)}")
        if time.monotonic() > deadline:
            raise LabError(f"{what}: not ready after {timeout:.0f}s{_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "; log tail:\n" + "\n".join(text)


def port_open(host: str, port: int, *, netns: str | None = None, timeout: float = 0.5) -> bool:
    """True if a TCP connect to host:port succeeds (inside ``netns`` when given)."""
    from .netns import connect

    try:
        connect(netns, host, port, timeout=timeout).close()
        return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command (argument list) and capture its output; raise LabError on failure."""
    res = subprocess.run(  # noqa: S603
        list(argv), capture_output=True, text=True, timeout=timeout
    )
    if check and res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise LabError(f"{' '.join(argv[:3])}… failed: {msg[-1] if msg else res.returncode}")
    return res
