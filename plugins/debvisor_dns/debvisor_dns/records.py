"""Names, record values and RRset states as plain JSON-able data.

An RRset state is ``{"ttl": int | None, "values": [canonical rdata text, ...]}``;
``values == []`` means the RRset does not exist. A change is
``{"zone", "name", "type", "old": state | None, "new": state}`` with absolute names;
``old`` None means "read it just before applying" (hook-contributed steps).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any

import dns.exception
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


# Owner names are checked here, before anything is sent, with the rules BIND applies
# (check-names): A/AAAA owners are host names (RFC 952/1123: letters, digits and inner
# hyphens), optionally with a leading "*" wildcard label. Other owners (TXT, CNAME, PTR,
# or a delete/show without --type) may also use "_" and leading/trailing hyphens, for
# service labels such as _acme-challenge or _dmarc.
_HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SERVICE_LABEL = re.compile(r"^[a-z0-9_-]{1,63}$")
HOST_RULE = "letters, digits and hyphens, a hyphen not first or last"
SERVICE_RULE = "letters, digits, '-' and '_'"


def quoted(text: str) -> str:
    """TEXT in quotes for a message: as typed (backslashes not doubled) when printable."""
    return f"'{text}'" if text.isprintable() else repr(text)


def _label_text(label: bytes) -> str | None:
    try:
        return label.decode("ascii").lower()
    except UnicodeDecodeError:
        return None


def check_owner(name: dns.name.Name, rdtype: str | None, typed: str) -> None:
    """BadInput unless every label of ``name`` (below ``zone``) is allowed for ``rdtype``."""
    host = rdtype in ("A", "AAAA")
    pattern = _HOST_LABEL if host else _SERVICE_LABEL
    labels = [_label_text(lab) for lab in name.labels if lab]
    for i, lab in enumerate(labels):
        if lab == "*" and i == 0:
            continue
        if lab is None or not pattern.match(lab):
            rule = HOST_RULE if host else SERVICE_RULE
            what = f"an {rdtype} record" if host else "a record"
            raise BadInput(f"{quoted(typed)} is not a valid owner name for {what}: each label "
                           f"has 1 to 63 of {rule}")


@functools.lru_cache(maxsize=256)
def zone_name(text: str) -> dns.name.Name:
    """A configured zone's name as a dnspython Name (immutable: parsed once per zone)."""
    return dns.name.from_text(text)


def _within(name: dns.name.Name, zone: ZoneConfig) -> bool:
    return name.is_subdomain(zone_name(zone.name))


def _zone_of(cfg: DnsConfig, name: dns.name.Name) -> ZoneConfig | None:
    """The most specific configured zone containing ``name`` (compared label by label)."""
    inside = [z for z in cfg.zones.values() if _within(name, z)]
    return max(inside, key=lambda z: len(zone_name(z.name)), default=None)


def resolve(cfg: DnsConfig, name: str, zone_opt: str | None, rdtype: str | None = None
            ) -> tuple[ZoneConfig, str]:
    """(zone, absolute owner name) for NAME as typed; ``rdtype`` None means any type.

    A name ending in a dot, holding a dot, or ending in a configured zone is absolute;
    a single label is relative to ``--zone``, else to ``vm_zone``, else to the only
    forward zone. For PTR an IP address stands for its reverse name. The name is parsed
    with dnspython (escapes included) and must be a subdomain of the zone, compared as
    DNS names, and its labels must be allowed for the type (``check_owner``).
    """
    text = name.strip()
    if not text:
        raise BadInput("the record name is empty")
    if rdtype == "PTR" and _is_ip(text):
        text = dns.reversename.from_address(text).to_text()
    zone = cfg.zone(zone_opt) if zone_opt else None
    try:
        parsed = dns.name.from_text(text, origin=None)
        if not parsed.is_absolute():
            if len(parsed) > 1 or _zone_of(cfg, parsed.concatenate(dns.name.root)):
                parsed = parsed.concatenate(dns.name.root)
            else:
                parsed = parsed.derelativize(zone_name(
                    (zone or _default_zone(cfg, rdtype or "A")).name))
    except dns.exception.DNSException as exc:
        raise BadInput(f"{quoted(name)} is not a valid DNS name: {str(exc).rstrip('.')}"
                       ) from None
    fqdn_name = parsed.canonicalize()
    target = zone or _zone_of(cfg, fqdn_name)
    fqdn = fqdn_name.to_text()
    if target is None or not _within(fqdn_name, target):
        where = f"zone {zone.name.rstrip('.')}" if zone else "any configured zone"
        raise BadInput(f"{fqdn} is outside {where}",
                       hint="give a name inside the zone, or a single label with --zone")
    check_owner(fqdn_name.relativize(zone_name(target.name)), rdtype, name)
    return target, fqdn


def _default_zone(cfg: DnsConfig, rdtype: str) -> ZoneConfig:
    if cfg.vm_zone and rdtype != "PTR":
        return cfg.zone(cfg.vm_zone)
    forward = [z for z in cfg.zones.values() if z.reverse == (rdtype == "PTR")]
    if len(forward) == 1:
        return forward[0]
    raise BadInput("a single-label name needs --zone (several zones are configured)")


def ptr_origin(cfg: DnsConfig) -> ZoneConfig | None:
    """The forward zone a single-label PTR value belongs to: ``vm_zone``, else the only
    forward zone configured; None when that is ambiguous."""
    if cfg.vm_zone:
        return cfg.zone(cfg.vm_zone)
    forward = [z for z in cfg.zones.values() if not z.reverse]
    return forward[0] if len(forward) == 1 else None


def _hostname(value: str, origin: ZoneConfig | None, what: str) -> str:
    """VALUE as an absolute target name; a single label is relative to ORIGIN.

    PTR targets are host names (BIND's check-names refuses others); CNAME targets may
    also hold "_" (e.g. _acme-challenge delegation).
    """
    v = value.strip().lower()
    if not v or _is_ip(v):
        raise BadInput(f"{what} value {value!r} must be a host name, not an address")
    body = v[:-1] if v.endswith(".") else v
    pattern, rule = (_HOST_LABEL, HOST_RULE) if what == "PTR" else (_SERVICE_LABEL, SERVICE_RULE)
    if len(body) > 253:
        raise BadInput(f"{what} value {quoted(value[:40])}… is not a valid host name (longer "
                       "than 253 characters)")
    if not all(pattern.match(lab) for lab in body.split(".")):
        raise BadInput(f"{what} value {quoted(value)} is not a valid host name (each label "
                       f"has 1 to 63 of {rule})")
    if "." in body or v.endswith("."):
        return absolute(body)
    if origin is None:
        raise BadInput(f"{what} value {value!r} is a single label and it is ambiguous which "
                       "forward zone it belongs to: give the full name (e.g. "
                       f"{body}.ZONE.) or set [dns] vm_zone")
    return absolute(f"{body}.{origin.name}")


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


def canonical(rdtype: str, value: str, zone: ZoneConfig, cfg: DnsConfig) -> str:
    """The canonical rdata text of VALUE for TYPE, or BadInput.

    A single-label CNAME value is relative to the record's ZONE; a single-label PTR
    value is relative to the forward zone (``ptr_origin``), never to the reverse zone.
    """
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
    elif t == "CNAME":
        text = _hostname(value, zone, t)
    elif t == "PTR":
        text = _hostname(value, ptr_origin(cfg), t)
    elif t == "TXT":
        text = _txt(value)
    else:
        raise BadInput(f"record type {rdtype} is not supported (use {', '.join(TYPES)})")
    try:
        rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(t), text)
    except dns.exception.DNSException as exc:
        raise BadInput(f"{t} value {value!r} is not valid: {str(exc).rstrip('.')}") from None
    return str(rd.to_text())


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
