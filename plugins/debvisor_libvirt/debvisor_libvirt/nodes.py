"""Cluster nodes from the `[hv]` config, libvirt connections to them, and VM lookup.

With no ``[hv.nodes]`` table the plugin talks to libvirt's built-in ``test:///default``
(node ``local``), so every read-only command works on a bare machine.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from debvisor_core.context import Context
from debvisor_core.errors import BadInput, DebvisorError, PreflightRefused

if TYPE_CHECKING:
    import socket
    import subprocess
    from collections.abc import Callable, Hashable

    import libvirt

DEFAULT_URI = "test:///default"
VM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class NodeUnreachable(DebvisorError):
    """A configured node's libvirtd does not answer."""


@dataclass(frozen=True)
class Node:
    """One hypervisor node: a libvirt URI plus where its migration traffic goes.

    ``netns`` (lab/testing) is the network namespace the node's guest ports live in;
    ``ssh`` is ``user@host`` for node-local commands (nft) on a remote node;
    ``shared_storage`` lists path prefixes every node sees (for migration pre-checks).
    """

    name: str
    uri: str
    migration_address: str | None = None
    netns: str | None = None
    ssh: str | None = None
    shared_storage: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_local(self) -> bool:
        """True when the node is this machine (UNIX socket, no host in the URI)."""
        m = re.match(r"[a-z0-9+]+://([^/]*)/", self.uri)
        return m is not None and m.group(1) in ("", "localhost")


def nodes(ctx: Context) -> dict[str, Node]:
    """The configured nodes by name (``local`` -> ``test:///default`` when none)."""
    from .hvconfig import config_error, string, string_list, table

    raw = table(ctx, "nodes")
    if not raw:
        return {"local": Node("local", DEFAULT_URI)}
    out: dict[str, Node] = {}
    for name, spec in raw.items():
        where = f"[hv.nodes.{name}]"
        if not NODE_NAME_RE.fullmatch(name):
            raise config_error(ctx, "[hv.nodes]", f"has a bad node name {name!r}")
        if not isinstance(spec, dict) or not isinstance(spec.get("uri"), str):
            raise config_error(ctx, where, "needs uri = \"qemu+tls://HOST/system\"")
        ssh = string(ctx, where, spec, "ssh")
        if ssh is not None:
            check_ssh_destination(ctx, where, ssh)
        out[name] = Node(
            name=name,
            uri=spec["uri"],
            migration_address=string(ctx, where, spec, "migration_address"),
            netns=string(ctx, where, spec, "netns"),
            ssh=ssh,
            shared_storage=tuple(string_list(ctx, where, spec, "shared_storage")),
        )
    return out


def check_ssh_destination(ctx: Context, where: str, dest: str) -> str:
    """Refuse an ``ssh`` value ssh would read as an option, or that splits into words."""
    from .hvconfig import config_error

    if dest.startswith("-") or any(c.isspace() for c in dest):
        raise config_error(ctx, f"{where} ssh", f"must be [USER@]HOST without spaces and not "
                           f"starting with '-', not {dest!r}")
    return dest


def node(ctx: Context, name: str) -> Node:
    """Node ``name`` or one clear error naming the configured ones."""
    all_nodes = nodes(ctx)
    if name not in all_nodes:
        raise BadInput(f"unknown node {name!r}; configured nodes: {', '.join(sorted(all_nodes))}")
    return all_nodes[name]


def check_vm_name(name: str) -> str:
    if not VM_NAME_RE.fullmatch(name):
        raise BadInput(
            f"bad VM name {name!r}: use 1-64 letters, digits, '.', '_', '+' or '-' "
            "(starting with a letter or digit)"
        )
    return name


_quiet_lock = threading.Lock()


def lv() -> ModuleType:
    """The libvirt module, with its default stderr error printer silenced."""
    import libvirt

    with _quiet_lock:
        if not getattr(libvirt, "_debvisor_quiet", False):
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            setattr(libvirt, "_debvisor_quiet", True)  # noqa: B010 - a marker attribute
    return libvirt


_conn_cache: dict[str, Any] = {}


def connect(n: Node, *, timeout: float = 10.0) -> libvirt.virConnect:
    """Open ``n`` (read-write, cached per process); NodeUnreachable after ``timeout`` s."""
    libvirt = lv()
    cached = _conn_cache.get(n.uri)
    if cached is not None:
        try:
            if cached.isAlive():
                return cached
        except libvirt.libvirtError:
            pass
        _conn_cache.pop(n.uri, None)
    box: dict[str, Any] = {}

    def opener() -> None:
        try:
            box["conn"] = libvirt.open(n.uri)
        except libvirt.libvirtError as exc:
            box["error"] = exc.get_error_message() or str(exc)

    th = threading.Thread(target=opener, daemon=True, name=f"connect-{n.name}")
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise NodeUnreachable(f"node {n.name} ({n.uri}) did not answer within {timeout:g}s")
    if "error" in box:
        raise NodeUnreachable(f"node {n.name} ({n.uri}) is unreachable: {box['error']}")
    conn = box["conn"]
    try:  # detect a dead peer during long jobs (migration)
        conn.setKeepAlive(5, 3)
    except libvirt.libvirtError:
        pass  # test:/// and local drivers have no keepalive
    _conn_cache[n.uri] = conn
    return conn


K = TypeVar("K", bound="Hashable")


def in_threads(calls: dict[K, Callable[[], Any]]) -> dict[K, tuple[Any, BaseException | None]]:
    """Run every call in a thread of its own; (result, exception) by key, once all ended.

    Plain threads, not concurrent.futures: that and the logging it imports cost a read
    such as `hv list` ~3 ms of imports (compiled anew by every run without .pyc files)."""
    out: dict[K, tuple[Any, BaseException | None]] = {}

    def run(key: K, call: Callable[[], Any]) -> None:
        try:
            out[key] = (call(), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out[key] = (None, exc)

    if len(calls) == 1:  # no thread for one call
        [(key, call)] = calls.items()
        run(key, call)
        return out
    threads = [threading.Thread(target=run, args=(k, c), daemon=True) for k, c in calls.items()]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {k: out[k] for k in calls}


class Cluster:
    """Lazily opened connections to the configured nodes (close with ``close()``)."""

    def __init__(self, ctx: Context, only: str | None = None) -> None:
        self.ctx = ctx
        self.nodes = nodes(ctx)
        if only is not None:
            self.nodes = {only: node(ctx, only)}
        self._conns: dict[str, libvirt.virConnect] = {}
        self._lock = threading.Lock()
        self._node_locks: dict[str, threading.Lock] = {}

    def conn(self, name: str) -> libvirt.virConnect:
        """The connection to node ``name``, opened once; different nodes are opened at the
        same time (one lock per node, not one for all)."""
        with self._lock:
            if name in self._conns:
                return self._conns[name]
            node_lock = self._node_locks.setdefault(name, threading.Lock())
        with node_lock:
            with self._lock:
                opened = self._conns.get(name)
            if opened is None:
                opened = connect(self.nodes[name])
                with self._lock:
                    self._conns[name] = opened
            return opened

    def try_all(self) -> tuple[dict[str, libvirt.virConnect], dict[str, str]]:
        """Connect to every node concurrently: (connections, errors by node)."""
        errors: dict[str, str] = {}

        def one(name: str) -> None:
            try:
                self.conn(name)
            except NodeUnreachable as exc:
                errors[name] = exc.message

        for _, exc in in_threads({n: partial(one, n) for n in self.nodes}).values():
            if exc is not None:
                raise exc
        return {n: c for n, c in self._conns.items() if n not in errors}, errors

    def find(self, vm: str, *, node_name: str | None = None) -> tuple[str, libvirt.virDomain]:
        """(node, domain) of VM ``vm``; a running copy wins over a defined-only one."""
        check_vm_name(vm)
        libvirt = lv()
        names = [node_name] if node_name else list(self.nodes)
        if node_name:
            node(self.ctx, node_name)
        conns, errors = self.try_all() if not node_name else ({node_name: self.conn(node_name)}, {})
        found: list[tuple[str, Any]] = []
        for n in names:
            if n not in conns:
                continue
            try:
                found.append((n, conns[n].lookupByName(vm)))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise DebvisorError(f"node {n}: {exc.get_error_message()}") from None
        if not found:
            where = f"node {node_name}" if node_name else f"any node ({', '.join(sorted(conns))})"
            if errors:  # it may be on a node we cannot see: not the operator's typo
                raise PreflightRefused(f"no VM named {vm!r} on {where}, and "
                                       + "; ".join(errors[n] for n in sorted(errors)))
            raise BadInput(f"no VM named {vm!r} on {where}")
        found.sort(key=lambda t: 0 if t[1].isActive() else 1)
        return found[0]

    def close(self) -> None:
        """Forget the connections (they stay cached for this process's later steps)."""
        self._conns.clear()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reaching guest ports and running node-local commands ------------------------------

def tcp_connect(n: Node, host: str, port: int, *, timeout: float = 3.0) -> socket.socket:
    """A TCP connection to ``host:port`` as the node sees it (inside ``n.netns`` if set)."""
    from debvisor_core.lab.netns import connect

    return connect(n.netns, host, port, timeout=timeout)


def ssh_argv(dest: str, argv: list[str]) -> list[str]:
    """``ssh DEST -- 'QUOTED ARGV'``: ssh hands the remote shell one string, so it is quoted.

    ``dest`` must not look like an option or contain whitespace (checked again here).
    """
    import shlex

    if not dest or dest.startswith("-") or any(c.isspace() for c in dest):
        raise BadInput(f"bad ssh destination {dest!r}: use [USER@]HOST")
    return ["ssh", "-o", "BatchMode=yes", dest, "--", shlex.join(argv)]


def node_command(n: Node, argv: list[str], *, timeout: float = 30,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` on node ``n`` (locally, in its netns, or over ssh); argument lists only.

    ``input`` goes to the command's stdin (data, e.g. nft's JSON: never parsed as a
    command line)."""
    if n.netns:
        full = ["ip", "netns", "exec", n.netns, *argv]
    elif n.ssh:
        full = ssh_argv(n.ssh, argv)
    elif n.is_local:
        full = list(argv)
    else:
        raise BadInput(
            f"node {n.name} is remote: set [hv.nodes.{n.name}] ssh = \"root@HOST\" to run {argv[0]} there"
        )
    import subprocess  # not at the top: `hv list` and the other reads never run a command

    return subprocess.run(full, capture_output=True, text=True, timeout=timeout,  # noqa: S603
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)
