"""Many queries at once (issue 18, the `dns update --batch` slow path).

A batch reads the current RRsets with one pipelined exchange per zone, takes the snapshot
an undo trusts over one TCP connection (every query TSIG-signed, every answer's MAC
checked over the whole message), and proves propagation per server with the SOA serial
and then one pass over the changed RRsets, each asked once. What is proven is unchanged:
these tests check the answers against dnspython's own single queries, and that a
tampered or unsigned answer is still refused.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_hostile_dns import Relay

pytestmark = [pytest.mark.lab, pytest.mark.root]


def _server(addr: str) -> Any:
    from debvisor_dns.config import parse_server

    return parse_server(addr, "test")


def _asked(relay: Relay, *, transport: str, do: bool | None = None, tsig: bool | None = None
           ) -> Counter[str]:
    """How many distinct queries (a resent datagram keeps its id) asked for each name."""
    seen = {(r["qname"], r["id"], r["conn"]) for r in relay.seen
            if r["transport"] == transport and (do is None or r["do"] == do)
            and (tsig is None or r["tsig"] == tsig)}
    return Counter(q for q, _, _ in seen)


def test_batch_reads_once_pipelines_the_snapshot_and_proves_each_rrset_once_per_server(
        dv: Any, dv_state: Any, lab_config: Any, name: str, tmp_path: Path) -> None:
    lab = lab_config
    primary, secondary = (Relay(lab.hostport(a)) for a in (lab.primary, lab.secondary))
    try:
        dv_state.config({"dns": {"zones": {lab.zone: {"primaries": [primary.addr],
                                                      "servers": [primary.addr,
                                                                  secondary.addr]}}}},
                        base=dv_state.config_path)
        n = 60
        fqdns = {f"{name}-{i}.{lab.zone}." for i in range(n)}
        batch = tmp_path / "changes.txt"
        batch.write_text("".join(f"update {name}-{i} A 10.77.5.{i + 1}\n" for i in range(n)))
        res = dv("--json", "dns", "update", "--batch", str(batch), "--yes")
        assert res.code == 0, res
        assert lab.both(f"{name}-{n - 1}") == [(300, [f"10.77.5.{n}"])] * 2

        # planning: one plain read per RRset
        assert _asked(primary, transport="udp", do=False, tsig=False) == Counter(fqdns)
        # the snapshot: every RRset and the SOA, TSIG-signed, on one TCP connection
        snap = [r for r in primary.seen if r["transport"] == "tcp" and r["qtype"] != 48
                and r["opcode"] == 0]
        assert all(r["tsig"] for r in snap), snap
        assert {r["qname"] for r in snap} == fqdns | {f"{lab.zone}."}
        assert len({r["conn"] for r in snap}) == 1
        # propagation proof: each changed RRset asked once of each server, DNSSEC on
        for relay in (primary, secondary):
            assert _asked(relay, transport="udp", do=True) - Counter(
                {f"{lab.zone}.": 10_000}) == Counter(fqdns)
        prop = res.json["result"]["dns"]["propagation"]
        assert {(p["server"], p["dnssec"]) for p in prop} == {(primary.addr, "valid"),
                                                              (secondary.addr, "valid")}

        primary.seen.clear()
        res = dv("dns", "update", "--rollback", "--yes")
        assert res.code == 0, res
        assert lab.both(f"{name}-0") == [(None, [])] * 2
        undo = [r for r in primary.seen if r["transport"] == "tcp" and r["opcode"] == 0
                and r["qname"] in fqdns]
        assert {r["qname"] for r in undo} >= fqdns and all(r["tsig"] for r in undo)
    finally:
        primary.close()
        secondary.close()


def test_exchange_answers_in_order_as_single_queries_do(lab_config: Any, name: str) -> None:
    import dns.message
    import dns.query
    from debvisor_dns import wire

    lab = lab_config
    lab.set_directly(f"{name}-a", "A", 300, ["10.77.5.1", "10.77.5.2"])
    lab.set_directly(f"{name}-t", "TXT", 60, ['"x"'])
    lab.settle(f"{name}-t", "TXT", 60, ['"x"'])
    questions = [(f"{name}-{s}.{lab.zone}.", t) for s in ("a", "t", "none") for t in ("A", "TXT")]
    questions = questions * 50  # 300 queries, in flight together
    host, port = lab.hostport(lab.secondary)
    for tcp in (False, True):
        for dnssec in (False, True):
            qs = [wire.make_query(q, t, dnssec=dnssec) for q, t in questions]
            got = wire.exchange(_server(lab.secondary), qs, timeout=2, tcp=tcp)
            for (q, t), r in zip(questions, got, strict=True):
                one = dns.query.udp(dns.message.make_query(q, t, want_dnssec=dnssec), host,
                                    port=port, timeout=2)
                assert r.question == one.question and r.rcode() == one.rcode()
                assert r.answer == one.answer, (tcp, dnssec, q, t)


def test_a_truncated_udp_answer_is_asked_again_over_tcp(lab_config: Any, name: str) -> None:
    import dns.flags
    import dns.message
    import dns.query
    from debvisor_dns import wire

    lab = lab_config
    fqdn = f"{name}.{lab.zone}."
    values = [f'"{i:03d}{"x" * 200}"' for i in range(12)]  # ~2.5 KB: over the EDNS size
    lab.set_directly(name, "TXT", 300, values)
    host, port = lab.hostport(lab.secondary)
    deadline = time.monotonic() + 10
    while len(dns.query.tcp(dns.message.make_query(fqdn, "TXT"), host, port=port,
                            timeout=2).answer) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    plain = dns.query.udp(dns.message.make_query(fqdn, "TXT", want_dnssec=True), host,
                          port=port, timeout=2)
    assert plain.flags & dns.flags.TC  # over UDP, BIND truncates it
    qs = [wire.make_query(fqdn, "TXT", dnssec=True) for _ in range(3)]
    got = wire.exchange(_server(lab.secondary), qs, timeout=2)
    assert [len(rr) for r in got for rr in r.answer if rr.rdtype == 16] == [12, 12, 12]


class _Lossy:
    """A UDP relay to ``upstream`` that drops the first datagram of every third query."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seen: Counter[bytes] = Counter()
        self.dropped = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                continue
            self.seen[data[:2]] += 1
            if self.seen[data[:2]] == 1 and len(self.seen) % 3 == 0:
                self.dropped += 1
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                up.settimeout(2)
                up.sendto(data, self.upstream)
                self.sock.sendto(up.recv(65535), peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def lossy(dns_lab: Any) -> Iterator[_Lossy]:
    relay = _Lossy(dns_lab.hostport(dns_lab.primary))
    try:
        yield relay
    finally:
        relay.close()


def test_udp_exchange_sends_a_lost_query_again(lab_config: Any, lossy: _Lossy) -> None:
    from debvisor_dns import wire

    lab = lab_config
    qs = [wire.make_query(f"ns1.{lab.zone}.", "A") for _ in range(30)]
    got = wire.exchange(_server(f"127.0.0.1:{lossy.port}"), qs, timeout=3)
    assert lossy.dropped >= 5
    assert all(r.answer[0][0].to_text() == "10.77.0.53" for r in got)


def test_signed_reads_check_the_mac_over_the_whole_answer(lab_config: Any, name: str) -> None:
    import dns.exception
    import dns.tsig
    from debvisor_dns import wire
    from debvisor_dns.config import ZoneConfig
    from debvisor_dns.tsigkey import read_tsig_keyfile

    lab = lab_config
    lab.set_directly(name, "A", 300, ["10.77.5.9"])
    lab.settle(name, "A", 300, ["10.77.5.9"])
    fqdn = f"{name}.{lab.zone}."
    zone = ZoneConfig(f"{lab.zone}.", [_server(lab.primary)], [], None)
    key = lab.key()
    wire._failed.clear()
    (r,) = wire.read_signed_many(zone, [(fqdn, "A")], timeout=2, key=key)
    assert r.had_tsig and wire.rrset_state(r, fqdn, "A") == {"ttl": 300, "values": ["10.77.5.9"]}

    q = wire.make_query(fqdn, "A", key=key)
    (raw,) = wire.exchange_wire(_server(lab.primary), [q], timeout=2, tcp=True)
    full = wire.answer(raw, q)
    assert wire.answer(raw, q, answer_only=True).answer == full.answer
    assert full.authority  # the fast path leaves these unparsed, but under the MAC
    # a byte changed after the answer section (ns1 -> os1 in the NS record) fails the MAC
    at = raw.index(b"\x03ns1")
    bad = raw[:at + 1] + b"o" + raw[at + 2:]
    for answer_only in (False, True):
        with pytest.raises(dns.tsig.BadSignature):
            wire.answer(bad, q, answer_only=answer_only)
    # the same answer without its TSIG record is refused
    unsigned = wire.make_query(fqdn, "A")
    (plain,) = wire.exchange_wire(_server(lab.primary), [unsigned], timeout=2, tcp=True)
    with pytest.raises(dns.exception.FormError, match="requires a TSIG"):
        wire.answer(q.id.to_bytes(2, "big") + plain[2:], q, answer_only=True)

    wrong = read_tsig_keyfile(lab.dns["lab"]["wrong_key_file"]).dns_key()
    wire._failed.clear()
    with pytest.raises(wire.TsigRejected, match="bad signature"):
        wire.read_signed_many(zone, [(fqdn, "A"), (f"{lab.zone}.", "SOA")], timeout=2,
                              key=wrong)


def test_an_answer_seen_again_byte_for_byte_is_not_validated_again(
        lab_config: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from debvisor_dns import dnssec, propagation, wire
    from debvisor_dns.config import ZoneConfig

    lab = lab_config
    lab.set_directly(name, "A", 300, ["10.77.5.10"])
    lab.settle(name, "A", 300, ["10.77.5.10"])
    fqdn = f"{name}.{lab.zone}."
    zone = ZoneConfig(f"{lab.zone}.", [_server(lab.primary)], [], None)
    keys = dnssec.zone_keys(zone, lab.key(), timeout=2, mode="require", refresh=True)
    checked: list[str] = []
    real = dnssec.validate_answer

    def counting(*args: Any) -> str:
        checked.append(args[4])
        return real(*args)

    monkeypatch.setattr(dnssec, "validate_answer", counting)
    ch = {"name": fqdn, "type": "A"}
    want = {"ttl": 300, "values": ["10.77.5.10"]}
    for addr in (lab.primary, lab.secondary, lab.primary):
        q = wire.make_query(fqdn, "A", dnssec=True)
        (raw,) = wire.exchange_wire(_server(addr), [q], timeout=2)
        assert propagation.served(_server(addr), keys, ch, q, raw) == want
    assert checked == [lab.primary]  # the secondary served the same bytes: the same answer

    # past the validity period of its RRSIG, the remembered answer is checked anew
    k = next(iter(keys.answers))
    got, start, _ = keys.answers[k]
    keys.answers[k] = (got, start, 0.0)
    assert propagation.served(_server(lab.primary), keys, ch, q, raw) == want
    assert checked == [lab.primary, lab.primary]

    # one byte of the rdata changed: not the same answer, so validated (and bogus)
    at = raw.index(bytes([10, 77, 5, 10]))
    forged = raw[:at] + bytes([10, 66, 66, 66]) + raw[at + 4:]
    with pytest.raises(dnssec.Bogus, match="is bogus"):
        propagation.served(_server(lab.secondary), keys, ch, q, forged)
