"""A throw-away network of namespaces for tests (root only).

    with Bed("dvn1234") as bed:   # namespaces dvn1234-node, -sw, -gw, -far, -peer
        ipr = bed.ipr("node")
        assert bed.tcp("node", bed.PEER4)

Topology: `node` has eth0..eth3, veths whose peers are ports of one bridge in `sw` (a
single L2 segment, 10.50.0.0/24 and fd00:50::/64). `gw` (10.50.0.1, fd00:50::1) sits on that
segment and forwards to a second segment where `far` (10.60.0.53) answers ping and TCP port 7.
`peer` (10.50.0.20, fd00:50::20) answers TCP port 7 on both families (it sends "ok\\n").

Node's initial config: 10.50.0.10/24 and fd00:50::10/64 (nodad) on eth0, v4 and v6 default
routes via gw (proto boot), 10.70.0.0/16 via 10.50.0.1 proto static metric 100, eth1 MTU
9000, eth2 admin-down, eth3 up without an address.

Everything is built with `ip -batch` (one process per namespace) and torn down on exit, also
when building or the test failed.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from typing import Any

from .kernel import open_netlink

IP = "ip"
ROLES = ("node", "sw", "gw", "far", "peer")

#: a TCP server on port 7 of every address; one line "ready" once it listens
_LISTENER = """
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 7))
s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(b"ok\\n")
    except OSError:
        pass
    c.close()
"""

#: connect to argv[1] port argv[2]; exit 0 when the server said "ok"
_CONNECT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as s:
        sys.exit(0 if s.recv(16).startswith(b"ok") else 1)
except OSError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


class BedError(RuntimeError):
    """Building the test bed failed."""


class Bed:
    """The namespaces above, created on enter and deleted on exit."""

    NODE4, NODE6 = "10.50.0.10", "fd00:50::10"
    GW4, GW6 = "10.50.0.1", "fd00:50::1"
    PEER4, PEER6 = "10.50.0.20", "fd00:50::20"
    FAR_GW4, FAR4 = "10.60.0.1", "10.60.0.53"
    ROUTE = "10.70.0.0/16"
    PORT = 7
    NODE_LINKS = ("eth0", "eth1", "eth2", "eth3")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.names = {role: f"{prefix}-{role}" for role in ROLES}
        self._procs: list[subprocess.Popen[str]] = []
        self._iprs: list[Any] = []
        self._created: list[str] = []

    # namespace names
    node = property(lambda self: self.names["node"])
    sw = property(lambda self: self.names["sw"])
    gw = property(lambda self: self.names["gw"])
    far = property(lambda self: self.names["far"])
    peer = property(lambda self: self.names["peer"])

    def ns(self, name: str) -> str:
        """The namespace of role NAME ("node", ...); a full namespace name passes through."""
        return self.names.get(name, name)

    def __enter__(self) -> Bed:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building ------------------------------------------------------------------------
    def _batch(self, lines: list[str], netns: str | None = None) -> None:
        argv = [IP] + (["-n", netns] if netns else []) + ["-batch", "-"]
        res = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True,  # noqa: S603
                             text=True, timeout=30, check=False)
        if res.returncode != 0:
            where = f" in {netns}" if netns else ""
            raise BedError(f"ip -batch{where} failed: {res.stderr.strip()}")

    def _build(self) -> None:
        n = self.names
        existing = set(subprocess.run([IP, "netns", "list"], capture_output=True,  # noqa: S603
                                      text=True, check=True).stdout.split())
        taken = [name for name in n.values() if name in existing]
        if taken:
            raise BedError(f"namespace {taken[0]} exists already: pick another prefix")
        self._created = list(n.values())
        host = [f"netns add {name}" for name in n.values()]
        for i in range(4):
            host.append(f"link add name eth{i} netns {n['node']} type veth "
                        f"peer name n{i} netns {n['sw']}")
        host += [f"link add name eth0 netns {n['gw']} type veth peer name g0 netns {n['sw']}",
                 f"link add name eth0 netns {n['peer']} type veth peer name p0 netns {n['sw']}",
                 f"link add name eth1 netns {n['gw']} type veth peer name eth0 netns {n['far']}"]
        self._batch(host)
        ports = ["n0", "n1", "n2", "n3", "g0", "p0"]
        self._batch(["link set dev lo up",
                     "link add name br type bridge stp_state 0 forward_delay 0 mcast_snooping 0",
                     "link set dev br up",
                     *(f"link set dev {p} master br up" for p in ports)], n["sw"])
        self._batch(["link set dev lo up", "link set dev eth0 up", "link set dev eth1 up",
                     f"addr add {self.GW4}/24 dev eth0",
                     f"addr add {self.GW6}/64 dev eth0 nodad",
                     f"addr add {self.FAR_GW4}/24 dev eth1"], n["gw"])
        self._batch(["link set dev lo up", "link set dev eth0 up",
                     f"addr add {self.FAR4}/24 dev eth0",
                     f"route add default via {self.FAR_GW4}"], n["far"])
        self._batch(["link set dev lo up", "link set dev eth0 up",
                     f"addr add {self.PEER4}/24 dev eth0",
                     f"addr add {self.PEER6}/64 dev eth0 nodad",
                     f"route add default via {self.GW4}",
                     f"route add ::/0 via {self.GW6}"], n["peer"])
        self._batch(["link set dev lo up", "link set dev eth0 up",
                     f"addr add {self.NODE4}/24 dev eth0",
                     f"addr add {self.NODE6}/64 dev eth0 nodad",
                     f"route add default via {self.GW4}",
                     f"route add ::/0 via {self.GW6}",
                     f"route add {self.ROUTE} via {self.GW4} proto static metric 100",
                     "link set dev eth1 mtu 9000 up",
                     "link set dev eth3 up"], n["node"])
        self.exec("gw", "sysctl", "-qw", "net.ipv4.ip_forward=1",
                  "net.ipv6.conf.all.forwarding=1", check=True)
        self._start_listener("peer")
        self._start_listener("far")

    def _start_listener(self, role: str) -> None:
        proc = subprocess.Popen([IP, "netns", "exec", self.ns(role), sys.executable,  # noqa: S603
                                 "-c", _LISTENER], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self._procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            raise BedError(f"the TCP listener in {self.ns(role)} did not start: {err.strip()}")

    # -- using ---------------------------------------------------------------------------
    def ipr(self, role: str) -> Any:
        """An open IPRoute in the namespace of ROLE, closed with the bed."""
        ipr = open_netlink(self.ns(role))
        self._iprs.append(ipr)
        return ipr

    def exec(self, role: str, *argv: str, check: bool = False,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ARGV in the namespace of ROLE (`ip netns exec`, no shell); output captured."""
        return subprocess.run([IP, "netns", "exec", self.ns(role), *argv],  # noqa: S603
                              capture_output=True, text=True, check=check, timeout=timeout)

    def tcp(self, role: str, host: str, port: int = PORT, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from ROLE's namespace to HOST:PORT gets "ok" back."""
        res = self.exec(role, sys.executable, "-c", _CONNECT, host, str(port), str(timeout),
                        timeout=timeout + 10)
        return res.returncode == 0

    def wait_dad(self, role: str, timeout: float = 5.0) -> None:
        """Wait until no address in ROLE's namespace is tentative (IPv6 DAD done)."""
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run([IP, "-n", self.ns(role), "-6", "addr", "show", "tentative"],  # noqa: S603
                                 capture_output=True, text=True, check=False).stdout
            if not out.strip() or time.monotonic() > deadline:
                return
            time.sleep(0.05)

    # -- tearing down --------------------------------------------------------------------
    def close(self) -> None:
        """Stop the listeners, close the sockets, delete the namespaces (errors ignored)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()
        for ipr in self._iprs:
            try:
                ipr.close()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self._iprs.clear()
        if self._created:
            subprocess.run([IP, "-force", "-batch", "-"], capture_output=True, text=True,  # noqa: S603
                           input="".join(f"netns del {name}\n" for name in self._created),
                           check=False, timeout=60)
            self._created = []


def net_cli(dv: Any, bed: Bed) -> Any:
    """For tests: ``run(*args)`` runs `debvisor net ARGS` inside the bed's node namespace
    through the test's ``dv`` runner (a leading ``--json`` goes before the word, as a global
    option; ``health`` runs the core's word)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
        lead = [a for a in args[:1] if a == "--json"]
        word = [] if args[len(lead):len(lead) + 1] == ("health",) else ["net"]
        return dv(*lead, *word, *args[len(lead):], env=env, timeout=timeout,
                  prog=[IP, "netns", "exec", bed.node, sys.executable, "-m", "debvisor_core"])

    return run


def kernel_state(run: Any) -> dict[str, Any]:
    """For tests: `net show --json` through ``run`` (see :func:`net_cli`), without the
    pending change."""
    import json

    res = run("--json", "show")
    assert res.code == 0, res
    data: dict[str, Any] = json.loads(res.stdout)
    data.pop("pending", None)
    return data

