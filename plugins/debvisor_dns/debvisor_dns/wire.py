"""DNS on the wire: queries, RRset reads, and RFC 2136 UPDATEs with primary failover.

Many queries to one server go out at once (:func:`exchange`): pipelined on one connected
UDP socket, or on one TCP connection, answers matched by id. Planning a batch, its
snapshot and each propagation pass are one such exchange per zone and server instead of
one round trip per RRset.

Servers that failed (timeout, connection refused, REFUSED…) in this process are
tried last afterwards, so one dead primary costs one timeout per run, not one per
query. Every UPDATE attempt builds and signs a fresh message: a TSIG signature
covers the message id and time, and re-sending an already signed message is what
makes other tools get FORMERR from the next primary.
"""

from __future__ import annotations

import contextlib
import errno
import random
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.update
import dns.wire

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


class BadResponse(dns.exception.FormError):
    """A message that is not the answer to the query it came back for."""


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
    return exchange(server, [make_query(qname, rdtype, key=key, dnssec=dnssec)],
                    timeout=timeout, tcp=tcp)[0]


# -- many queries to one server, pipelined ------------------------------------------------
#: UDP queries in flight at once on one socket (the server's receive buffer holds them)
WINDOW = 64
#: queries on one TCP connection (their ids must differ)
TCP_BATCH = 2000
#: a UDP query still unanswered after this long (or 3 x the slowest answer so far, if
#: longer) is sent again, the same message
RESEND = 0.2


def make_query(qname: str | dns.name.Name, rdtype: str, *, key: dns.tsig.Key | None = None,
               dnssec: bool = False) -> dns.message.Message:
    """A non-recursive query, TSIG-signed with ``key`` if given."""
    q = dns.message.make_query(qname, rdtype, want_dnssec=dnssec)
    q.flags &= ~dns.flags.RD
    if key is not None:
        q.use_tsig(key)
    return q


def _skip_name(wire: bytes, i: int) -> int:
    """The offset just after the (possibly compressed) name at ``i``."""
    while True:
        n = wire[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        if n & 0xC0:
            raise ValueError("unknown label type")
        i += n + 1


def _signed_answer_only(wire: bytes, q: dns.message.Message) -> dns.message.Message | None:
    """The answer ``wire`` to the TSIG-signed ``q``, its TSIG checked on the whole wire (as
    dnspython does: dns.tsig.validate, a rejection raises) and the records parsed up to the
    answer section only. None when the wire is not the plain shape (one TSIG, the last
    record): the caller then parses it whole, which raises what is wrong with it."""
    try:
        qd, an, ns, ar = struct.unpack_from("!HHHH", wire, 4)
        if not ar:
            return None
        i = 12
        for _ in range(qd):
            i = _skip_name(wire, i) + 4
        for _ in range(an + ns + ar - 1):
            i = _skip_name(wire, i)
            rdtype, _, _, rdlen = struct.unpack_from("!HHIH", wire, i)
            if rdtype == dns.rdatatype.TSIG:
                return None
            i += 10 + rdlen
        start = i
        parser = dns.wire.Parser(wire, start)
        owner = parser.get_name(decompress=True)
        rdtype, rdclass, _, rdlen = parser.get_struct("!HHIH")
        if rdtype != dns.rdatatype.TSIG or rdclass != dns.rdataclass.ANY:
            return None
        with parser.restrict_to(rdlen):
            rd = dns.rdata.from_wire_parser(rdclass, rdtype, parser)
    except (ValueError, IndexError, struct.error, dns.exception.DNSException):
        return None
    dns.tsig.validate(wire, q.keyring, owner, rd, int(time.time()), q.mac, start)
    r = dns.message.from_wire(wire[:8] + b"\0\0\0\0" + wire[12:], ignore_trailing=True)
    r.keyring = q.keyring
    r.tsig = dns.rrset.from_rdata(owner, 0, rd)
    return r


def _parse(wire: bytes, q: dns.message.Message, answer_only: bool = False
           ) -> dns.message.Message:
    """The answer ``wire`` to ``q`` (TSIG checked against ``q``'s MAC when ``q`` is signed).

    The authority and additional sections (NS, glue, SOA, their RRSIGs) are most of the
    parsing time, so the records are parsed up to the answer section only when nobody reads
    the rest: always with ``answer_only`` (plain and signed reads: the TSIG is then checked
    on the whole wire first), otherwise, for an unsigned query, when the answer holds the
    RRset asked for (a denial, a CNAME or a referral is parsed whole). The rcode and flags
    are in the header either way.
    """
    if len(wire) >= 12 and wire[2] & 0x80:
        if q.keyring is None:
            ancount = struct.unpack_from("!H", wire, 6)[0]
            if answer_only or (ancount and not wire[3] & 0x0F):
                r = dns.message.from_wire(wire[:8] + b"\0\0\0\0" + wire[12:],
                                          ignore_trailing=True)
                qn, qt = q.question[0].name, q.question[0].rdtype
                if answer_only or any(rr.name == qn and rr.rdtype == qt for rr in r.answer):
                    return r
        elif answer_only and isinstance(q.keyring, dns.tsig.Key):
            signed = _signed_answer_only(wire, q)
            if signed is not None:
                return signed
    return dns.message.from_wire(wire, keyring=q.keyring, request_mac=q.mac,
                                 ignore_trailing=True)


def _fresh_id(q: dns.message.Message, busy: dict[int, Any]) -> bytes:
    """``q`` on the wire with an id no query in flight has (re-signed if it changed)."""
    while q.id in busy:
        q.id = random.randint(0, 0xFFFF)
    return q.to_wire()


def _closed(server: Server) -> OSError:
    return OSError(errno.ECONNRESET, f"{server} closed the connection")


def _udp_many(server: Server, queries: Sequence[dns.message.Message], timeout: float
              ) -> list[bytes | None]:
    """Send every query over one connected UDP socket, at most WINDOW in flight, and return
    each answer's wire (matched by id), None for one that came back truncated (TC). A query
    unanswered after RESEND is sent again; one unanswered after ``timeout`` raises Timeout,
    as a single query would."""
    out: list[bytes | None] = [None] * len(queries)
    todo = list(range(len(queries)))[::-1]
    flight: dict[int, list[Any]] = {}  # id -> [index, wire, first sent, last sent]
    resend = RESEND  # grows to 3 x the slowest answer seen: a far server is not flooded
    af = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    with socket.socket(af, socket.SOCK_DGRAM) as s:
        s.connect((server.host, server.port))  # the kernel drops datagrams from anyone else
        s.setblocking(False)
        while todo or flight:
            now = time.monotonic()
            while todo and len(flight) < WINDOW:
                i = todo.pop()
                wire = _fresh_id(queries[i], flight)
                flight[queries[i].id] = [i, wire, now, now]
                with contextlib.suppress(BlockingIOError):  # a full buffer: sent again later
                    s.send(wire)
            oldest = min(f[2] for f in flight.values())
            if now - oldest > timeout:
                raise dns.exception.Timeout(timeout=timeout)
            for f in flight.values():
                if now - f[3] > resend:
                    f[3] = now
                    with contextlib.suppress(BlockingIOError):
                        s.send(f[1])
            wait = min(min(f[3] for f in flight.values()) + resend, oldest + timeout) - now
            if not select.select([s], [], [], max(0.0, wait))[0]:
                continue
            while True:
                try:
                    wire = s.recv(65535)
                except BlockingIOError:
                    break
                if len(wire) < 12 or not wire[2] & 0x80:
                    continue  # not an answer
                f = flight.pop(struct.unpack_from("!H", wire)[0], [])
                if not f:
                    continue  # a late answer to a query sent twice, or not ours
                resend = max(resend, 3 * (time.monotonic() - f[2]))
                out[f[0]] = None if wire[2] & 0x02 else wire  # TC: asked again over TCP
    return out


def _tcp_many(server: Server, queries: Sequence[dns.message.Message], timeout: float
              ) -> list[bytes]:
    """Send every query over one TCP connection, pipelined, and return each answer's wire,
    matched by id: answers may come back in any order (RFC 7766). Writing and reading are
    interleaved (the socket is non-blocking), so a batch larger than the socket buffers
    cannot deadlock. Raises Timeout when the server neither reads nor answers for
    ``timeout``."""
    out: list[bytes] = [b""] * len(queries)
    flight: dict[int, int] = {}  # id -> index
    chunks = []
    for i, q in enumerate(queries):
        wire = _fresh_id(q, flight)
        flight[q.id] = i
        chunks.append(struct.pack("!H", len(wire)) + wire)
    outgoing = memoryview(b"".join(chunks))
    buf = b""
    try:
        s = socket.create_connection((server.host, server.port), timeout=timeout)
    except TimeoutError:
        raise dns.exception.Timeout(timeout=timeout) from None
    with s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        while flight:
            readable, writable, _ = select.select([s], [s] if outgoing else [], [], timeout)
            if not readable and not writable:
                raise dns.exception.Timeout(timeout=timeout)
            if writable:
                with contextlib.suppress(BlockingIOError):
                    outgoing = outgoing[s.send(outgoing):]
            if not readable:
                continue
            try:
                chunk = s.recv(65535)
            except BlockingIOError:
                continue
            if not chunk:
                raise _closed(server)
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + (n := struct.unpack_from("!H", buf)[0]):
                wire, buf = buf[2:2 + n], buf[2 + n:]
                i = flight.pop(struct.unpack_from("!H", wire)[0], -1) if len(wire) >= 12 else -1
                if i < 0:
                    raise dns.exception.FormError(f"{server} answered a query it was not asked")
                out[i] = wire
    return out


def exchange_wire(server: Server, queries: Sequence[dns.message.Message], *, timeout: float,
                  tcp: bool = False) -> list[bytes]:
    """The wire of each answer of ``server`` to ``queries``, in order (matched by id, not yet
    parsed: see :func:`answer`). All are sent at once, pipelined, over one UDP socket (at
    most WINDOW in flight) or one TCP connection when ``tcp``; a truncated UDP answer is
    asked again over TCP. Raises Timeout or OSError, as a single query does."""
    if not queries:
        return []
    if tcp:  # ids must be unique on one connection: a fresh one every TCP_BATCH queries
        return [w for i in range(0, len(queries), TCP_BATCH)
                for w in _tcp_many(server, queries[i:i + TCP_BATCH], timeout)]
    got = _udp_many(server, queries, timeout)
    again = [i for i, w in enumerate(got) if w is None]
    retried = exchange_wire(server, [queries[i] for i in again], timeout=timeout, tcp=True)
    for i, w in zip(again, retried, strict=True):
        got[i] = w
    return [w for w in got if w is not None]


def answer(wire: bytes, q: dns.message.Message, answer_only: bool = False
           ) -> dns.message.Message:
    """The parsed answer ``wire`` to ``q``: TSIG-checked when ``q`` is signed (a rejection
    raises dns.tsig.PeerError), BadResponse when it does not answer ``q``'s question."""
    r = _parse(wire, q, answer_only)
    if not q.is_response(r):
        raise BadResponse("the answer does not answer the question asked")
    return r


def exchange(server: Server, queries: Sequence[dns.message.Message], *, timeout: float,
             tcp: bool = False, answer_only: bool = False) -> list[dns.message.Message]:
    """The answers of ``server`` to ``queries``, in order, sent pipelined (see
    :func:`exchange_wire`) and parsed (:func:`answer`). ``answer_only``: the caller reads only
    the header and the answer section of each answer (see :func:`_parse`). Raises
    DNSException (Timeout, a TSIG PeerError, ...) or OSError, as a single query does."""
    wires = exchange_wire(server, queries, timeout=timeout, tcp=tcp)
    return [answer(w, q, answer_only) for w, q in zip(wires, queries, strict=True)]


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


def _why_not(r: dns.message.Message, key: dns.tsig.Key | None) -> str | None:
    """Why answer ``r`` is not a usable authoritative answer (None: it is)."""
    if key is not None and not r.had_tsig:
        return "answered a TSIG-signed query unsigned"
    if r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) and r.flags & dns.flags.AA:
        return None
    return f"answered {dns.rcode.to_text(r.rcode())}" + (
        "" if r.flags & dns.flags.AA else " without authority")


def ask_many(servers: list[Server], questions: Sequence[tuple[str, str]], *, timeout: float,
             key: dns.tsig.Key | None = None, key_name: str = "", dnssec: bool = False,
             tcp: bool = False, what: str = "", answer_only: bool = False
             ) -> list[tuple[Server, dns.message.Message]]:
    """Like :func:`ask` for many (name, type) questions at once: each server (failed ones
    last) gets every question still unanswered, pipelined (:func:`exchange`); the questions
    it did not answer usefully go to the next one. The answers, in order."""
    out: list[tuple[Server, dns.message.Message] | None] = [None] * len(questions)
    todo = list(range(len(questions)))
    errors = []
    for server in ordered(servers):
        if not todo:
            break
        queries = [make_query(questions[i][0], questions[i][1], key=key, dnssec=dnssec)
                   for i in todo]
        try:
            answers = exchange(server, queries, timeout=timeout, tcp=tcp,
                               answer_only=answer_only)
        except dns.tsig.PeerError as exc:
            raise tsig_error(exc, server, key_name) from None
        except (OSError, dns.exception.DNSException) as exc:
            why: str | None = _fail_text(exc)
            failed = todo
        else:
            failed, why = [], None
            for i, r in zip(todo, answers, strict=True):
                bad = _why_not(r, key)
                if bad is None:
                    out[i] = (server, r)
                else:
                    failed.append(i)
                    why = why or bad
        if not failed:
            _failed.pop(server, None)
            todo = []
            break
        assert why is not None
        mark_failed(server, why)
        q = questions[failed[0]]
        log.debug(f"{server}: {why} ({q[0]} {q[1]}"
                  f"{f' and {len(failed) - 1} more' if len(failed) > 1 else ''})")
        errors.append(f"{server} {why}")
        todo = failed
    if todo:
        q = questions[todo[0]]
        asked = what or f"{q[0]} {q[1]}" + (f" and {len(todo) - 1} more" if len(todo) > 1
                                            else "")
        raise NoServer(f"no server answered {asked}: {'; '.join(errors)}")
    return [a for a in out if a is not None]


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


def read_many(zone: ZoneConfig, questions: Sequence[tuple[str, str]], *, timeout: float
              ) -> list[dict[str, Any]]:
    """Each (NAME, TYPE) as the zone's primaries serve it (see :func:`read`), pipelined."""
    answers = ask_many(zone.primaries, questions, timeout=timeout, answer_only=True)
    return [rrset_state(r, n, t) for (n, t), (_, r) in zip(questions, answers, strict=True)]


def read_signed_many(zone: ZoneConfig, questions: Sequence[tuple[str, str]], *,
                     timeout: float, key: dns.tsig.Key) -> list[dns.message.Message]:
    """The answers of a primary to TSIG-signed queries for each (NAME, TYPE), pipelined over
    one TCP connection; each answer must be signed with the same key (its MAC is checked).
    For the reads an undo trusts: an on-path spoofer cannot forge them, so a rollback never
    writes planted values."""
    one = f"{questions[0][0]} {questions[0][1]}" if len(questions) == 1 else ""
    answers = ask_many(zone.primaries, questions, timeout=timeout, key=key,
                       key_name=key.name.to_text(True), tcp=True, answer_only=True,
                       what=f"{one or f'{len(questions)} questions'} (signed, TCP)")
    return [r for _, r in answers]


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
                timeout: float, key_name: str, out: UpdateOutcome | None = None) -> UpdateOutcome:
    """Send a freshly built and signed UPDATE to each primary until one takes it.

    Timeout, connection errors, REFUSED, NOTAUTH, SERVFAIL, NOTIMP: try the next.
    A failed prerequisite or a TSIG rejection stops at once (PrerequisiteFailed /
    TsigRejected), since another primary would say the same. ``out``: filled as the
    primaries answer, so a caller has the attempts even when this raises.
    """
    out = out if out is not None else UpdateOutcome(None, "")
    order = ordered(zone.primaries)
    log.debug(f"UPDATE retry policy for {zone.name}: primaries in order "
              f"{', '.join(map(str, order))} (failed earlier in this run last), {timeout:g} s "
              "each over TCP, a freshly signed message per attempt; stop at NOERROR, a failed "
              "prerequisite or a TSIG rejection")
    for server in order:
        msg = build()  # fresh id, fresh TSIG time and MAC for every attempt
        t = time.monotonic()
        try:
            r = exchange(server, [msg], timeout=timeout, tcp=True)[0]
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
