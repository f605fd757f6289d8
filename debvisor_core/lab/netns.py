"""Network namespaces and veth pairs for lab hosts (iproute2, argument lists only)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

from .process import run

_CLONE_NEWNET = 0x40000000


def exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def create(name: str, *, loopback: bool = True) -> None:
    """Create namespace ``name`` (no-op if present) and bring its loopback up."""
    if not exists(name):
        run(["ip", "netns", "add", name])
    if loopback:
        run(["ip", "-n", name, "link", "set", "lo", "up"])


def delete(name: str) -> None:
    """Delete namespace ``name`` if present (its veth ends go with it)."""
    if exists(name):
        run(["ip", "netns", "delete", name], check=False)


def veth(ns_a: str, if_a: str, addr_a: str, ns_b: str, if_b: str, addr_b: str) -> None:
    """Join two namespaces with a veth pair; addresses in CIDR form (``10.77.0.1/24``)."""
    if run(["ip", "-n", ns_a, "link", "show", if_a], check=False).returncode != 0:
        run(["ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b,
             "netns", ns_b])
    for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
        run(["ip", "-n", ns, "addr", "replace", addr, "dev", ifname])
        run(["ip", "-n", ns, "link", "set", ifname, "up"])


def pids_in(name: str) -> list[int]:
    """Pids of processes running inside namespace ``name``."""
    res = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def connect(name: str | None, host: str, port: int, *, timeout: float = 3.0) -> socket.socket:
    """A TCP connection to ``host:port`` made inside namespace ``name`` (here if None).

    setns(2) changes only the calling thread, so it runs in a short-lived thread; the
    socket keeps the namespace it was created in."""
    if not name:
        return socket.create_connection((host, port), timeout=timeout)
    box: dict[str, Any] = {}

    def inside() -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {name} failed")
            finally:
                os.close(fd)
            box["sock"] = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            box["error"] = exc

    th = threading.Thread(target=inside, daemon=True)
    th.start()
    th.join(timeout + 2)
    if "error" in box:
        raise box["error"]
    if "sock" not in box:
        raise TimeoutError(f"connect to {host}:{port} in {name} timed out")
    sock: socket.socket = box["sock"]
    return sock
