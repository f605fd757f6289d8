"""Names, record values and RRset states as plain JSON-able data.

An RRset state is ``{"ttl": int | None, "values": [canonical rdata text, ...]}``;
``values == []`` means the RRset does not exist. A change is
``{"zone", "name", "type", "old": state | None, "new": state}`` with absolute names;
``old`` None means "read it just before applying" (hook-contributed steps).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename

from debvisor_core.errors import BadInput

from .config import TYPES, DnsConfig, ZoneConfig, absolute

DNSSEC_TYPES = frozenset({"RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DNSKEY", "CDS", "CDNSKEY",
                          "TYPE65534"})
ABSENT: dict[str, Any] = {"ttl": None, "values": []}


def state(ttl: int | None, values: list[str]) -> dict[str, Any]:
    return {"ttl": ttl if values else None, "values": sorted(values)}


def same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Equal RRset states (values as sets; TTL only when the RRset exists)."""
    a, b = a or ABSENT, b or ABSENT
    if sorted(a["values"]) != sorted(b["values"]):
        return False
    return not a["values"] or a["ttl"] == b["ttl"]


def show_state(s: dict[str, Any] | None) -> str:
    if s is None:
        return "(current)"
    if not s["values"]:
        return "(none)"
    return f"{', '.join(s['values'])} ttl {s['ttl']}"


def key(change: dict[str, Any]) -> str:
    return f"{change['name']}/{change['type']}"


def describe_change(change: dict[str, Any], zone: str | None = None) -> str:
    name = change["name"]
    if zone and name.endswith("." + zone):
        name = name[: -len(zone) - 1]
    return f"{name} {change['type']}: {show_state(change.get('old'))} → {show_state(change['new'])}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def resolve(cfg: DnsConfig, name: str, zone_opt: str | None, rdtype: str = "A"
            ) -> tuple[ZoneConfig, str]:
    """(zone, absolute owner name) for NAME as typed.

    A name ending in a dot or in a configured zone is absolute; a single label is
    relative to ``--zone``, else to ``vm_zone``, else to the only forward zone. For
    PTR an IP address stands for its reverse name.
    """
    text = name.strip()
    if not text:
        raise BadInput("the record name is empty")
    if rdtype == "PTR" and _is_ip(text):
        text = dns.reversename.from_address(text).to_text()
    zone = cfg.zone(zone_opt) if zone_opt else None
    low = text.lower()
    if low.endswith(".") or cfg.zone_of(absolute(low)) is not None or "." in low.rstrip("."):
        fqdn = absolute(low)
    else:
        if zone is None:
            zone = _default_zone(cfg, rdtype)
        fqdn = absolute(f"{low}.{zone.name}")
    try:
        dns.name.from_text(fqdn)
    except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel) as exc:
        raise BadInput(f"{name!r} is not a valid DNS name: {exc}") from None
    target = zone or cfg.zone_of(fqdn)
    if target is None or not (fqdn == target.name or fqdn.endswith("." + target.name)):
        where = f"zone {zone.name.rstrip('.')}" if zone else "any configured zone"
        raise BadInput(f"{fqdn} is outside {where}",
                       hint="give a name inside the zone, or a single label with --zone")
    return target, fqdn


def _default_zone(cfg: DnsConfig, rdtype: str) -> ZoneConfig:
    if cfg.vm_zone and rdtype != "PTR":
        return cfg.zone(cfg.vm_zone)
    forward = [z for z in cfg.zones.values() if z.reverse == (rdtype == "PTR")]
    if len(forward) == 1:
        return forward[0]
    raise BadInput("a single-label name needs --zone (several zones are configured)")


_LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _hostname(value: str, zone: ZoneConfig, what: str) -> str:
    v = value.strip().lower()
    if not v or _is_ip(v):
        raise BadInput(f"{what} value {value!r} must be a host name, not an address")
    labels = v.rstrip(".").split(".")
    if any(not lab or len(lab) > 63 or set(lab) - _LABEL_CHARS for lab in labels):
        raise BadInput(f"{what} value {value!r} is not a valid host name")
    return absolute(v) if "." in v.rstrip(".") or v.endswith(".") else absolute(f"{v}.{zone.name}")


def _txt(value: str) -> str:
    raw = value.encode()
    if not raw:
        raise BadInput("a TXT value must not be empty")
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)]
    out = []
    for c in chunks:
        s = "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else
                    (f"\\{chr(b)}" if chr(b) in '"\\' else f"\\{b:03d}") for b in c)
        out.append(f'"{s}"')
    return " ".join(out)


def canonical(rdtype: str, value: str, zone: ZoneConfig) -> str:
    """The canonical rdata text of VALUE for TYPE, or BadInput."""
    t = rdtype.upper()
    if t == "A":
        try:
            text = str(ipaddress.IPv4Address(value.strip()))
        except ValueError:
            raise BadInput(f"A value {value!r} is not an IPv4 address") from None
    elif t == "AAAA":
        try:
            text = str(ipaddress.IPv6Address(value.strip()))
        except ValueError:
            raise BadInput(f"AAAA value {value!r} is not an IPv6 address") from None
    elif t in ("CNAME", "PTR"):
        text = _hostname(value, zone, t)
    elif t == "TXT":
        text = _txt(value)
    else:
        raise BadInput(f"record type {rdtype} is not supported (use {', '.join(TYPES)})")
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(t), text)
    return rd.to_text()


def valid_rdata(rdtype: str, text: str) -> bool:
    """True if TEXT is the canonical rdata text of a TYPE record."""
    try:
        rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)
    except Exception:  # noqa: BLE001 - dnspython raises many kinds of syntax errors
        return False
    return bool(rd.to_text() == text)


def address_type(address: str) -> tuple[str, str]:
    """('A' or 'AAAA', address) for an address, with an optional /prefix dropped."""
    ip = ipaddress.ip_address(address.split("/")[0].strip())
    return ("A" if ip.version == 4 else "AAAA"), str(ip)


def ptr_change(cfg: DnsConfig, address: str, fqdn: str, *, delete: bool,
               ttl: int | None) -> dict[str, Any] | None:
    """The PTR change for ADDRESS → FQDN if a reverse zone for it is configured."""
    rev = dns.reversename.from_address(address).to_text().lower()
    zone = cfg.zone_of(rev)
    if zone is None:
        return None
    new = ABSENT if delete else state(ttl, [fqdn])
    return {"zone": zone.name, "name": rev, "type": "PTR", "old": None, "new": new}
