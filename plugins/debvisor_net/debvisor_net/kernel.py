"""The netlink handle and small helpers that read kernel state of one network namespace.

Light module: pyroute2 is imported only when a socket is opened.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from debvisor_core.errors import BadInput

NETNS_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _netns_path(netns: str) -> str:
    """/run/netns/NAME, refusing names that are paths (pyroute2 would open those as files)."""
    if not netns or "/" in netns or netns in (".", "..") or "\0" in netns:
        raise BadInput(f"{netns!r} is not a network namespace name")
    return os.path.join(NETNS_DIR, netns)


def open_netlink(netns: str | None = None) -> Any:
    """A pyroute2 IPRoute in NETNS (the current namespace when None); never creates one.

    pyroute2's default flags create a missing namespace silently: flags=0 refuses that.
    """
    from pyroute2 import IPRoute

    if netns is None:
        return IPRoute()
    path = _netns_path(netns)
    if not os.path.exists(path):
        raise BadInput(f"network namespace {netns} does not exist")
    try:
        return IPRoute(netns=netns, flags=0)
    except FileNotFoundError:  # removed between the check and the open
        raise BadInput(f"network namespace {netns} does not exist") from None


def netns_of(ipr: Any) -> str | None:
    """The namespace name IPR was opened in (None: the current one)."""
    status = getattr(ipr, "status", None)
    try:
        name = status["netns"] if status is not None else None
    except (KeyError, TypeError):
        return None
    return str(name) if name else None


def run_in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """FN() run in a short-lived thread that joined NETNS (only that thread changes namespace).

    Files under /proc/thread-self/net and /proc/sys/net opened by FN belong to NETNS, and so do
    sockets it creates.
    """
    if netns is None:
        return fn()
    path = _netns_path(netns)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def read_proc_net(netns: str | None, relpath: str) -> str | None:
    """The text of /proc/net/RELPATH as seen in NETNS, or None when it does not exist."""

    def read() -> str | None:
        try:
            with open(f"/proc/thread-self/net/{relpath}", encoding="utf-8",
                      errors="replace") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    return run_in_netns(netns, read)
