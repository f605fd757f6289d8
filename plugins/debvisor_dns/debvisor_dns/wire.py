"""DNS on the wire: queries, RRset reads, and RFC 2136 UPDATEs with primary failover.

Servers that failed (timeout, connection refused, REFUSED…) in this process are
tried last afterwards, so one dead primary costs one timeout per run, not one per
query. Every UPDATE attempt builds and signs a fresh message: a TSIG signature
covers the message id and time, and re-sending an already signed message is what
makes other tools get FORMERR from the next primary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.update

from debvisor_core import log
from debvisor_core.errors import StepFailed

from .config import Server, ZoneConfig
from .records import DNSSEC_TYPES, state

_failed: dict[Server, tuple[float, str]] = {}  # server -> (when, why), this process

PREREQ_RCODES = {dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN, dns.rcode.NXRRSET, dns.rcode.YXRRSET}


class TsigRejected(StepFailed):
    """A server rejected our TSIG key (wrong secret, unknown key, clock skew)."""


class PrerequisiteFailed(StepFailed):
    """An UPDATE's prerequisites did not hold: someone changed the records meanwhile."""


class NoServer(StepFailed):
    """No server of a list answered usefully."""


def ordered(servers: list[Server]) -> list[Server]:
    """Servers in configured order, the ones that failed in this process last."""
    return sorted(servers, key=lambda s: s in _failed)


def mark_failed(server: Server, why: str) -> None:
    _failed[server] = (time.monotonic(), why)


def tsig_error(exc: dns.tsig.PeerError, server: Server, key_name: str) -> TsigRejected:
    """One clear sentence for a TSIG rejection."""
    if isinstance(exc, dns.tsig.PeerBadSignature):
        why = "bad signature: the secret does not match the server's copy of the key"
    elif isinstance(exc, dns.tsig.PeerBadKey):
        why = "the server does not know this key name"
    elif isinstance(exc, dns.tsig.PeerBadTime):
        why = "the clocks of this host and the server differ too much"
    else:
        why = f"{type(exc).__name__}"
    return TsigRejected(f"{server} rejected TSIG key {key_name!r}: {why}; nothing was changed")


def query(server: Server, qname: str | dns.name.Name, rdtype: str, *, timeout: float,
          key: dns.tsig.Key | None = None, dnssec: bool = False, tcp: bool = False
          ) -> dns.message.Message:
    """One query (UDP, TCP when truncated or asked). Raises DNSException/OSError."""
    q = dns.message.make_query(qname, rdtype, want_dnssec=dnssec)
    q.flags &= ~dns.flags.RD
    if key is not None:
        q.use_tsig(key)
    if tcp:
        return dns.query.tcp(q, server.host, port=server.port, timeout=timeout)
    r = dns.query.udp(q, server.host, port=server.port, timeout=timeout, ignore_trailing=True)
    if r.flags & dns.flags.TC:
        r = dns.query.tcp(q, server.host, port=server.port, timeout=timeout)
    return r


def _fail_text(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


def ask(servers: list[Server], qname: str, rdtype: str, *, timeout: float,
        key: dns.tsig.Key | None = None, key_name: str = "", dnssec: bool = False,
        tcp: bool = False, what: str = "") -> tuple[Server, dns.message.Message]:
    """The first authoritative answer from ``servers`` (failed ones last)."""
    errors = []
    for server in ordered(servers):
        try:
            r = query(server, qname, rdtype, timeout=timeout, key=key, dnssec=dnssec, tcp=tcp)
        except dns.tsig.PeerError as exc:
            raise tsig_error(exc, server, key_name) from None
        except (OSError, dns.exception.DNSException) as exc:
            why = _fail_text(exc)
        else:
            if key is not None and not r.had_tsig:
                why = "answered a TSIG-signed query unsigned"
            elif r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) and r.flags & dns.flags.AA:
                _failed.pop(server, None)
                return server, r
            else:
                why = f"answered {dns.rcode.to_text(r.rcode())}" + (
                    "" if r.flags & dns.flags.AA else " without authority")
        mark_failed(server, why)
        log.debug(f"{server}: {why} ({qname} {rdtype})")
        errors.append(f"{server} {why}")
    raise NoServer(f"no server answered {what or f'{qname} {rdtype}'}: {'; '.join(errors)}")


def rrset_state(r: dns.message.Message, name: str, rdtype: str) -> dict[str, Any]:
    """The state of NAME/TYPE in an answer (absent if the answer has no such RRset)."""
    n = dns.name.from_text(name)
    t = dns.rdatatype.from_text(rdtype)
    for rrset in r.answer:
        if rrset.name == n and rrset.rdtype == t and rrset.rdclass == dns.rdataclass.IN:
            return state(rrset.ttl, [rd.to_text() for rd in rrset])
    return state(None, [])


def read(zone: ZoneConfig, name: str, rdtype: str, *, timeout: float) -> dict[str, Any]:
    """NAME/TYPE as the zone's primaries serve it (plain query: for plans and display)."""
    _, r = ask(zone.primaries, name, rdtype, timeout=timeout, what=f"{name} {rdtype}")
    return rrset_state(r, name, rdtype)


def ask_signed(zone: ZoneConfig, qname: str, rdtype: str, *, timeout: float,
               key: dns.tsig.Key) -> tuple[Server, dns.message.Message]:
    """The first answer from a primary to a TSIG-signed query over TCP, whose answer must be
    signed with the same key (dnspython checks the MAC). For reads that an undo trusts: an
    on-path spoofer cannot forge them, so a rollback never writes planted values."""
    return ask(zone.primaries, qname, rdtype, timeout=timeout, key=key,
               key_name=key.name.to_text(True), tcp=True, what=f"{qname} {rdtype} (signed, TCP)")


def read_signed(zone: ZoneConfig, name: str, rdtype: str, *, timeout: float,
                key: dns.tsig.Key) -> dict[str, Any]:
    """NAME/TYPE as the zone's primaries serve it, read over TCP with TSIG (see ask_signed)."""
    _, r = ask_signed(zone, name, rdtype, timeout=timeout, key=key)
    return rrset_state(r, name, rdtype)


def read_all(zone: ZoneConfig, name: str, *, timeout: float) -> dict[str, dict[str, Any]]:
    """Every non-DNSSEC RRset at NAME (an ANY query over TCP to a primary)."""
    _, r = ask(zone.primaries, name, "ANY", timeout=timeout, tcp=True, what=f"{name} ANY")
    n = dns.name.from_text(name)
    out: dict[str, dict[str, Any]] = {}
    for rrset in r.answer:
        t = dns.rdatatype.to_text(rrset.rdtype)
        if rrset.name == n and t not in DNSSEC_TYPES:
            out[t] = state(rrset.ttl, [rd.to_text() for rd in rrset])
    return out


def soa_serial(r: dns.message.Message, zone: str) -> int | None:
    n = dns.name.from_text(zone)
    for rrset in r.answer:
        if rrset.name == n and rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def serial_lt(a: int, b: int) -> bool:
    """RFC 1982: serial ``a`` is older than ``b``."""
    return a != b and (b - a) % 2**32 < 2**31


def prove_key(zone: ZoneConfig, key: dns.tsig.Key, *, timeout: float) -> Server:
    """A TSIG-signed SOA query answered (and signed) by a primary proves the key works."""
    server, r = ask(zone.primaries, zone.name, "SOA", timeout=timeout, key=key,
                    key_name=key.name.to_text(True), what=f"a TSIG-signed SOA query for {zone.name}")
    if not r.had_tsig:
        raise TsigRejected(f"{server} answered the signed SOA query for {zone.name} unsigned")
    if soa_serial(r, zone.name) is None:
        raise NoServer(f"{server} does not serve zone {zone.name}")
    return server


@dataclass
class UpdateOutcome:
    """Which primary took an UPDATE, and what the others said."""

    server: Server | None
    rcode: str
    attempts: list[dict[str, Any]] = field(default_factory=list)
    sent_at: float = 0.0


def send_update(zone: ZoneConfig, build: Callable[[], dns.update.UpdateMessage], *,
                timeout: float, key_name: str) -> UpdateOutcome:
    """Send a freshly built and signed UPDATE to each primary until one takes it.

    Timeout, connection errors, REFUSED, NOTAUTH, SERVFAIL, NOTIMP: try the next.
    A failed prerequisite or a TSIG rejection stops at once (PrerequisiteFailed /
    TsigRejected), since another primary would say the same.
    """
    out = UpdateOutcome(None, "")
    order = ordered(zone.primaries)
    log.debug(f"UPDATE retry policy for {zone.name}: primaries in order "
              f"{', '.join(map(str, order))} (failed earlier in this run last), {timeout:g} s "
              "each over TCP, a freshly signed message per attempt; stop at NOERROR, a failed "
              "prerequisite or a TSIG rejection")
    for server in order:
        msg = build()  # fresh id, fresh TSIG time and MAC for every attempt
        t = time.monotonic()
        try:
            r = dns.query.tcp(msg, server.host, port=server.port, timeout=timeout)
        except dns.tsig.PeerError as exc:
            raise tsig_error(exc, server, key_name) from None
        except (OSError, dns.exception.DNSException) as exc:
            why = _fail_text(exc)
            out.attempts.append({"server": str(server), "result": why,
                                 "ms": round((time.monotonic() - t) * 1000, 1)})
            mark_failed(server, why)
            log.warn(f"primary {server} {why}; trying the next primary")
            continue
        rcode = r.rcode()
        out.attempts.append({"server": str(server), "result": dns.rcode.to_text(rcode),
                             "ms": round((time.monotonic() - t) * 1000, 1)})
        if rcode == dns.rcode.NOERROR:
            _failed.pop(server, None)
            out.server, out.rcode, out.sent_at = server, "NOERROR", time.monotonic()
            return out
        if rcode in PREREQ_RCODES:
            out.server, out.rcode = server, dns.rcode.to_text(rcode)
            return out
        if rcode in (dns.rcode.FORMERR, dns.rcode.NOTZONE):
            raise StepFailed(f"{server} answered {dns.rcode.to_text(rcode)} to the UPDATE of "
                             f"{zone.name}; nothing was changed")
        mark_failed(server, dns.rcode.to_text(rcode))
        log.warn(f"primary {server} answered {dns.rcode.to_text(rcode)}; trying the next primary")
    tried = "; ".join(f"{a['server']} {a['result']}" for a in out.attempts)
    raise NoServer(f"no primary of {zone.name} accepted the UPDATE ({tried}); nothing was changed")


def make_update(zone: str, key: dns.tsig.Key, changes: list[dict[str, Any]],
                prereq: dict[str, dict[str, Any]]) -> dns.update.UpdateMessage:
    """An UPDATE of ZONE: for each change, prerequisites from ``prereq[key]`` (the state
    it must have now: exact RRset, or absent), then delete + add the new RRset."""
    u = dns.update.UpdateMessage(zone, keyring=key)
    for ch in changes:
        name, t = dns.name.from_text(ch["name"]), ch["type"]
        before = prereq[f"{ch['name']}/{t}"]
        if before["values"]:
            # value-dependent "RRset exists": the whole RRset must equal these rdatas
            rrset = dns.rrset.from_text_list(name, 0, "IN", t, before["values"])
            u.present(name, rrset.to_rdataset())
        else:
            u.absent(name, t)
    for ch in changes:
        name, t, new = dns.name.from_text(ch["name"]), ch["type"], ch["new"]
        u.delete(name, t)
        if new["values"]:
            u.add(name, dns.rrset.from_text_list(name, new["ttl"], "IN", t,
                                                 new["values"]).to_rdataset())
    return u
