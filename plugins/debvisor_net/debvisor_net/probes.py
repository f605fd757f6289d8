"""Connectivity probes run after an apply, in parallel, each retried until its deadline.

``gateway`` pings the default gateways, ``dns`` asks the nameservers (a reply of any kind
proves the path past the gateway), ``peers`` pings the configured peers ([net] peers),
``icmp:HOST`` pings one host and ``tcp:HOST:PORT`` connects. ICMP uses raw sockets (root),
so no ``ping`` binary is needed. Nothing here goes through a shell.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from debvisor_core.errors import BadInput

KINDS = ("gateway", "dns", "peers")


@dataclass
class Probe:
    """One probe of one target: ``kind`` (gateway, dns, peer, icmp, tcp) and ``target``."""

    kind: str
    target: str
    port: int | None = None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.target}" + (f":{self.port}" if self.port else "")


def parse(spec: str) -> str:
    """Check one ``--probe`` value (gateway, dns, peers, icmp:HOST, tcp:HOST:PORT)."""
    if spec in KINDS:
        return spec
    kind, _, rest = spec.partition(":")
    if kind == "icmp" and rest and _is_ip(rest):
        return spec
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if _is_ip(host) and port.isdigit() and 0 < int(port) < 65536:
            return spec
    raise BadInput(f"bad probe {spec!r}: use gateway, dns, peers, icmp:ADDRESS or "
                   "tcp:ADDRESS:PORT (addresses, not names: DNS may be what is broken)")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def expand(specs: list[str], *, gateways: list[str], nameservers: list[str],
           peers: list[str]) -> list[Probe]:
    """The probes ``specs`` stand for, given the target's gateways, nameservers and peers."""
    out: list[Probe] = []
    for spec in specs:
        if spec == "gateway":
            out += [Probe("gateway", g) for g in gateways]
        elif spec == "dns":
            out += [Probe("dns", n) for n in nameservers]
        elif spec == "peers":
            out += [Probe("peer", p) for p in peers]
        elif spec.startswith("icmp:"):
            out.append(Probe("icmp", spec[5:]))
        else:
            host, _, port = spec[4:].rpartition(":")
            out.append(Probe("tcp", host.strip("[]"), int(port)))
    return out


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(host: str, timeout: float) -> str | None:
    """One ICMP echo to ``host``; None when it answered, else why not."""
    v6 = ipaddress.ip_address(host).version == 6
    ident, seq = os.getpid() & 0xFFFF, int(time.monotonic() * 1000) & 0xFFFF
    kind = 128 if v6 else 8
    payload = b"debvisor-net-probe"
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    packet = header + payload if v6 else \
        struct.pack("!BBHHH", kind, 0, _checksum(header + payload), ident, seq) + payload
    fam, proto = (socket.AF_INET6, socket.IPPROTO_ICMPV6) if v6 else \
        (socket.AF_INET, socket.IPPROTO_ICMP)
    try:
        with socket.socket(fam, socket.SOCK_RAW, proto) as s:
            s.sendto(packet, (host, 0))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([s], [], [], left)[0]:
                    break
                data, addr = s.recvfrom(2048)
                icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
                if len(icmp) >= 8 and icmp[0] == (129 if v6 else 0) \
                        and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
                    return None
    except OSError as exc:
        return exc.strerror or str(exc)
    return "no echo reply"


def dns(server: str, timeout: float) -> str | None:
    """One DNS query to ``server``; None when it answered (any answer), else why not."""
    import dns.exception
    import dns.message
    import dns.query

    try:
        dns.query.udp(dns.message.make_query(".", "NS"), server, timeout=timeout)
    except (dns.exception.DNSException, OSError) as exc:
        return str(exc) or type(exc).__name__
    return None


def tcp(host: str, port: int, timeout: float) -> str | None:
    """A TCP connection to ``host:port``; None when it opened, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _once(p: Probe, timeout: float) -> str | None:
    if p.kind == "dns":
        return dns(p.target, timeout)
    if p.kind == "tcp":
        assert p.port is not None
        return tcp(p.target, p.port, timeout)
    return ping(p.target, timeout)


def _retry(p: Probe, deadline: float) -> dict[str, Any]:
    t0 = time.monotonic()
    why: str | None = "not run"
    tries = 0
    while True:
        tries += 1
        left = deadline - time.monotonic()
        why = _once(p, max(0.2, min(1.0, left)))
        if why is None or time.monotonic() + 0.2 >= deadline:
            break
        time.sleep(0.2)
    return {"probe": p.label, "kind": p.kind, "target": p.target, "ok": why is None,
            "error": why, "tries": tries, "ms": round((time.monotonic() - t0) * 1000)}


def run(probes: list[Probe], timeout: float) -> list[dict[str, Any]]:
    """Run every probe at once, each retried until ``timeout`` seconds have passed."""
    if not probes:
        return []
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=min(16, len(probes))) as pool:
        return list(pool.map(lambda p: _retry(p, deadline), probes))
