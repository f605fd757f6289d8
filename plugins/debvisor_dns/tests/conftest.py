"""Fixtures of the DNS plugin tests: the lab's BIND9 pair and direct dnspython probes.

The assertions query the servers directly with dnspython (not through the plugin),
so a bug in the plugin's own reading code cannot hide a wrong result.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class DnsLab:
    """The running lab: its config, the two servers and the key files."""

    config_path: Path
    config: dict[str, Any]

    @property
    def dns(self) -> dict[str, Any]:
        return self.config["dns"]

    @property
    def primary(self) -> str:
        return str(self.dns["lab"]["primary"])

    @property
    def secondary(self) -> str:
        return str(self.dns["lab"]["secondary"])

    zone = "lab.debvisor.test"
    rzone = "0.77.10.in-addr.arpa"

    def key(self) -> Any:
        from debvisor_dns.tsigkey import read_tsig_keyfile

        return read_tsig_keyfile(self.dns["tsig_key_file"]).dns_key()

    @staticmethod
    def hostport(addr: str) -> tuple[str, int]:
        host, _, port = addr.rpartition(":")
        return host, int(port)

    def served(self, addr: str, name: str, rdtype: str = "A") -> tuple[int | None, list[str]]:
        """(ttl, sorted values) that server ADDR answers for NAME/TYPE right now."""
        import dns.message
        import dns.name
        import dns.query
        import dns.rdatatype

        host, port = self.hostport(addr)
        fqdn = name if name.endswith(".") else f"{name}.{self.zone}."
        r = dns.query.udp(dns.message.make_query(fqdn, rdtype), host, port=port, timeout=2)
        for rrset in r.answer:
            if rrset.name == dns.name.from_text(fqdn) and rrset.rdtype == dns.rdatatype.from_text(
                    rdtype):
                return rrset.ttl, sorted(rd.to_text() for rd in rrset)
        return None, []

    def both(self, name: str, rdtype: str = "A") -> list[tuple[int | None, list[str]]]:
        return [self.served(a, name, rdtype) for a in (self.primary, self.secondary)]

    def set_directly(self, name: str, rdtype: str, ttl: int, values: list[str]) -> None:
        """Change a record behind the plugin's back (another operator, another tool)."""
        import dns.query
        import dns.rcode
        import dns.update

        u = dns.update.UpdateMessage(self.zone + ".", keyring=self.key())
        u.replace(name, ttl, rdtype, *values)
        host, port = self.hostport(self.primary)
        assert dns.query.tcp(u, host, port=port, timeout=5).rcode() == dns.rcode.NOERROR

    def settle(self, name: str, rdtype: str, ttl: int, values: list[str]) -> None:
        """Poll until both servers serve TTL/VALUES for NAME (after a direct change)."""
        from dns.rdata import from_text

        want = (ttl, sorted(from_text("IN", rdtype, v).to_text() for v in values))
        deadline = time.monotonic() + 10
        while (got := self.both(name, rdtype)) != [want, want]:
            assert time.monotonic() < deadline, f"{name} never settled: {got}"
            time.sleep(0.002)


@pytest.fixture(scope="session")
def dns_lab(dv_lab: Any) -> DnsLab:
    import tomllib

    path = dv_lab.require("dns")
    return DnsLab(path, tomllib.loads(path.read_text()))


@pytest.fixture
def lab_config(dns_lab: DnsLab, dv_state: Any, monkeypatch: pytest.MonkeyPatch) -> DnsLab:
    """The lab config with short timeouts, as this test's config file; only the dns plugin."""
    monkeypatch.setenv("DEBVISOR_PLUGINS", "dns")
    dv_state.config({"dns": {"timeout": 1.5, "update_timeout": 2.0, "propagation_timeout": 10}},
                    base=dns_lab.config_path)
    return dns_lab


@pytest.fixture
def name() -> str:
    """A record name no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def dead_ports() -> Iterator[tuple[int, int]]:
    """(closed port, silent port): nothing listens on the first; the second accepts TCP
    connections and never answers (a hung server)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        yield closed_port, silent.getsockname()[1]
    finally:
        silent.close()


class TamperingRelay:
    """A UDP 'authoritative server' that relays the primary's answers with altered A rdata."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.tampered = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import dns.message
        import dns.query
        import dns.rdatatype
        import dns.rrset

        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            q = dns.message.from_wire(data)
            r = dns.query.udp(q, self.upstream[0], port=self.upstream[1], timeout=2)
            for i, rrset in enumerate(r.answer):
                if rrset.rdtype == dns.rdatatype.A:
                    r.answer[i] = dns.rrset.from_text(rrset.name, rrset.ttl, "IN", "A",
                                                      "10.66.66.66")
                    self.tampered += 1
            self.sock.sendto(r.to_wire(), peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def tampering_relay(dns_lab: DnsLab) -> Iterator[TamperingRelay]:
    relay = TamperingRelay(dns_lab.hostport(dns_lab.primary))
    try:
        yield relay
    finally:
        relay.close()
