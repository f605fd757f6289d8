"""DNSSEC validation of authoritative answers (RRSIG against the zone's DNSKEY).

Trust: the zone's DNSKEY RRset is fetched from a primary with a TSIG-signed query
(so it is authenticated by the shared key, not just by the network) and must be
self-signed. Every answer polled from any server is then checked against it; a
bogus answer is an error, never "not propagated yet".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import dns.dnssec
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig

from debvisor_core.errors import StepFailed

from .config import ZoneConfig
from .wire import ask


class Bogus(StepFailed):
    """An answer failed DNSSEC validation."""


@dataclass
class ZoneKeys:
    """The validated DNSKEY RRset of a signed zone (None: the zone is unsigned)."""

    zone: dns.name.Name
    dnskey: dns.rrset.RRset | None
    #: answers already parsed and validated, by question and wire (id left out): what the
    #: asked RRset held and the period in which every RRSIG of the answer is valid (see
    #: propagation.served)
    answers: dict[tuple[str, str, bytes], tuple[dict[str, Any], float, float]] = field(
        default_factory=dict, compare=False, repr=False)

    @property
    def signed(self) -> bool:
        return self.dnskey is not None


_cache: dict[str, ZoneKeys] = {}


def zone_keys(zone: ZoneConfig, key: dns.tsig.Key, *, timeout: float, mode: str,
              refresh: bool = False) -> ZoneKeys:
    """The zone's DNSKEYs from a primary (TSIG-signed query), self-signature checked."""
    if mode == "off":
        return ZoneKeys(dns.name.from_text(zone.name), None)
    if zone.name in _cache and not refresh:
        return _cache[zone.name]
    server, r = ask(zone.primaries, zone.name, "DNSKEY", timeout=timeout, key=key,
                    key_name=key.name.to_text(True), dnssec=True, tcp=True,
                    what=f"the DNSKEY of {zone.name}")
    zname = dns.name.from_text(zone.name)
    dnskey = _find(r, zname, dns.rdatatype.DNSKEY)
    if dnskey is None:
        if mode == "require":
            raise Bogus(f"zone {zone.name} is not signed ({server} serves no DNSKEY) but "
                        "[dns] dnssec = require")
        keys = ZoneKeys(zname, None)
    else:
        sig = _find(r, zname, dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY)
        _check(dnskey, sig, {zname: dnskey}, f"the DNSKEY of {zone.name} from {server}")
        keys = ZoneKeys(zname, dnskey)
    _cache[zone.name] = keys
    return keys


def _find(r: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType,
          covers: dns.rdatatype.RdataType = dns.rdatatype.NONE) -> dns.rrset.RRset | None:
    for section in (r.answer, r.authority):
        for rrset in section:
            if (rrset.name == name and rrset.rdtype == rdtype and rrset.covers == covers
                    and rrset.rdclass == dns.rdataclass.IN):
                return rrset
    return None


def _check(rrset: dns.rrset.RRset, sig: dns.rrset.RRset | None, keys: dict[Any, Any],
           what: str, now: float | None = None) -> None:
    if sig is None or not len(sig):
        raise Bogus(f"DNSSEC: {what} has no RRSIG although the zone is signed (bogus answer)")
    try:
        dns.dnssec.validate(rrset, sig, keys, now=now)
    except dns.dnssec.ValidationFailure as exc:
        raise Bogus(f"DNSSEC: {what} is bogus ({exc}: the RRSIG does not match the "
                    "records with the zone's DNSKEY)") from None


def validate_rrset(keys: ZoneKeys, rrset: dns.rrset.RRset, sig: dns.rrset.RRset | None,
                   what: str, now: float | None = None) -> None:
    """Raise :class:`Bogus` unless ``sig`` validates ``rrset`` with the zone's DNSKEY."""
    if keys.dnskey is None:
        return
    _check(rrset, sig, {keys.zone: keys.dnskey}, what, now)


def validate_answer(keys: ZoneKeys, r: dns.message.Message, name: str, rdtype: str,
                    server: str) -> str:
    """Validate NAME/TYPE in a DO-bit answer: 'valid', 'unsigned' or 'absent'.

    An absent RRset is accepted only if the answer carries a validated NSEC/NSEC3 or
    SOA proof in the authority section (the signed denial is checked for signatures).
    """
    if keys.dnskey is None:
        return "unsigned"
    n = dns.name.from_text(name)
    t = dns.rdatatype.from_text(rdtype)
    rrset = _find(r, n, t)
    what = f"the answer for {name} {rdtype} from {server}"
    if rrset is not None:
        validate_rrset(keys, rrset, _find(r, n, dns.rdatatype.RRSIG, t), what)
        return "valid"
    denial = 0
    for rr in r.authority:
        if rr.rdtype in (dns.rdatatype.NSEC, dns.rdatatype.NSEC3, dns.rdatatype.SOA):
            sig = _find(r, rr.name, dns.rdatatype.RRSIG, rr.rdtype)
            validate_rrset(keys, rr, sig, f"the denial of {name} {rdtype} from {server}")
            denial += 1
    if not denial:
        raise Bogus(f"DNSSEC: {what} denies the record without a signed proof (bogus answer)")
    return "absent"


def sig_window(r: dns.message.Message) -> tuple[float, float]:
    """(latest inception, earliest expiration) of the RRSIGs in the answer and authority
    sections of ``r``: the period in which every one of them is valid."""
    sigs = [rd for section in (r.answer, r.authority) for rr in section
            if rr.rdtype == dns.rdatatype.RRSIG for rd in rr]
    if not sigs:
        return 0.0, float("inf")
    return max(rd.inception for rd in sigs), min(rd.expiration for rd in sigs)


def signature_expiry(rrsets: list[dns.rrset.RRset]) -> float | None:
    """The earliest RRSIG expiration (epoch seconds) among ``rrsets``."""
    times = [int(rd.expiration) for rr in rrsets if rr.rdtype == dns.rdatatype.RRSIG for rd in rr]
    return min(times) if times else None


def days_left(expiry: float) -> float:
    return (expiry - time.time()) / 86400

