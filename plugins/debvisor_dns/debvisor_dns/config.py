"""The ``[dns]`` configuration table: zones, their primaries and servers, the TSIG key.

::

    [dns]
    default_ttl = 300
    tsig_key_file = "/etc/debvisor/dns/tsig.key"   # BIND key file, mode 0600
    algorithm = "hmac-sha256"                       # optional: must match the key file
    vm_zone = "lab.debvisor.test"                   # where `hv register` adds VM records
    [dns.zones."lab.debvisor.test"]
    primaries = ["10.0.0.1:53", "10.0.0.2"]        # tried in order for UPDATEs
    servers = ["10.0.0.1", "10.0.0.3"]             # every authoritative server to poll

Light module: no dnspython import.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from debvisor_core.errors import BadInput
from debvisor_core.settings import Section

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context

    from .tsigkey import TsigKey

TYPES = ("A", "AAAA", "CNAME", "TXT", "PTR")
DEFAULTS: dict[str, Any] = {
    "default_ttl": 300,
    "timeout": 2.0,              # one query
    "update_timeout": 5.0,       # one UPDATE to one primary
    "propagation_timeout": 30.0,  # all servers agree
    "sig_expiry_warn_days": 3.0,  # `dns check`: RRSIGs expiring sooner warn
    "dnssec": "auto",            # auto (validate signed zones) | require | off
}


@dataclass(frozen=True, order=True)
class Server:
    """An authoritative server address."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_server(text: str, where: str) -> Server:
    """``host``, ``host:port`` or ``[v6]:port`` (IP addresses only: no resolver loops)."""
    s = str(text).strip()
    host, port = s, "53"
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = rest.lstrip(":") or "53"
    elif s.count(":") == 1:
        host, _, port = s.partition(":")
    try:
        ipaddress.ip_address(host)
        p = int(port)
        if not 0 < p < 65536:
            raise ValueError(port)
    except ValueError:
        raise BadInput(f"config [dns] {where}: {text!r} is not an IP address with an optional "
                       "port (e.g. 192.0.2.1:53)") from None
    return Server(host, p)


def absolute(name: str) -> str:
    """``name`` lower-cased with exactly one trailing dot."""
    return name.strip().rstrip(".").lower() + "."


@dataclass
class ZoneConfig:
    """One zone: where to send UPDATEs and which servers must serve the result."""

    name: str  # absolute, lower case
    primaries: list[Server]
    servers: list[Server]
    key_file: str | None

    @property
    def all_servers(self) -> list[Server]:
        """The servers to poll: the configured servers, else the primaries."""
        return self.servers or self.primaries

    @property
    def reverse(self) -> bool:
        return self.name.endswith((".in-addr.arpa.", ".ip6.arpa."))


@dataclass
class DnsConfig:
    """The parsed ``[dns]`` table."""

    zones: dict[str, ZoneConfig]
    default_ttl: int = 300
    algorithm: str | None = None
    vm_zone: str | None = None
    vm_ptr: bool = True
    timeout: float = 2.0
    update_timeout: float = 5.0
    propagation_timeout: float = 30.0
    sig_expiry_warn_days: float = 3.0
    dnssec: str = "auto"
    raw: dict[str, Any] = field(default_factory=dict)

    def zone(self, name: str) -> ZoneConfig:
        z = self.zones.get(absolute(name))
        if z is None:
            known = ", ".join(n.rstrip(".") for n in self.zones) or "none"
            raise BadInput(f"zone {name.rstrip('.')} is not configured in [dns.zones] "
                           f"(configured: {known})")
        return z

    def zone_of(self, fqdn: str) -> ZoneConfig | None:
        """The most specific configured zone containing ``fqdn`` (absolute)."""
        best: ZoneConfig | None = None
        for z in self.zones.values():
            if (fqdn == z.name or fqdn.endswith("." + z.name)) and (
                    best is None or len(z.name) > len(best.name)):
                best = z
        return best

    def key(self, zone: ZoneConfig) -> TsigKey:
        """The zone's TSIG key, read from its owner-only key file."""
        from .tsigkey import read_tsig_keyfile

        if not zone.key_file:
            raise BadInput(f"no TSIG key file configured for zone {zone.name.rstrip('.')} "
                           "(set [dns] tsig_key_file)")
        key = read_tsig_keyfile(zone.key_file)
        if self.algorithm and key.algorithm != self.algorithm.lower():
            raise BadInput(f"the TSIG key file {zone.key_file} uses {key.algorithm} but "
                           f"[dns] algorithm says {self.algorithm}")
        return key


TTL_MAX = 2**31 - 1  # RFC 2181 section 8
_ZONE_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


class _Table(Section):
    """The core's typed config reader plus the DNS value kinds (TTLs, timeouts, zones)."""

    def text(self, key: str, default: str | None = None) -> str | None:
        """A non-empty string, stripped (``default`` when absent)."""
        value = self.string(key, default)
        if value is not None and not value.strip():
            raise self.error(key, f"must be a non-empty string, not {value!r}")
        return None if value is None else value.strip()

    def ttl(self, key: str) -> int:
        return int(self.number(key, DEFAULTS[key], minimum=0, maximum=TTL_MAX, integer=True,
                               unit="seconds"))

    def seconds(self, key: str) -> float:
        return float(self.number(key, DEFAULTS[key], above=0, unit="seconds"))

    def zone_name(self, key: str) -> str | None:
        """An absolute zone name, or None when ``key`` is not set."""
        value = self.text(key)
        if value is None:
            return None
        if not is_zone_name(value):
            raise self.error(key, f"must be a DNS zone name ({ZONE_NAME_RULE}), not {value!r}")
        return absolute(value)


ZONE_NAME_RULE = "dot-separated labels of letters, digits, '-' and '_'"


def is_zone_name(name: str) -> bool:
    """True for a plain zone name (no escapes, no empty labels, at most 253 characters)."""
    fqdn = absolute(name)
    return len(fqdn) <= 254 and all(_ZONE_LABEL.match(lab) for lab in fqdn[:-1].split("."))


def _servers(t: _Table, key: str) -> list[Server]:
    value = t.data.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise t.error(key, "must be a list of addresses (strings such as \"192.0.2.1:53\")")
    out = []
    for v in value:
        try:
            out.append(parse_server(v, key))
        except BadInput:
            raise t.error(key, f"has {v!r}, which is not an IP address with an optional port "
                        "(e.g. 192.0.2.1:53)") from None
    return out


def parse(sec: dict[str, Any], source: str | os.PathLike[str] = "the config file") -> DnsConfig:
    """Validate the ``[dns]`` table (one clear BadInput naming key and file, first problem).

    ``source`` is the config file's path, for the error messages.
    """
    from .tsigkey import ALGORITHMS

    src = str(source)
    t = _Table(src, "[dns]", sec)
    zones_raw = sec.get("zones") or {}
    if not isinstance(zones_raw, dict):
        raise t.error("zones", "must be a table of zone tables ([dns.zones.\"ZONE\"])")
    key_file = t.text("tsig_key_file")
    zones: dict[str, ZoneConfig] = {}
    for zname, z in zones_raw.items():
        if not isinstance(z, dict):
            raise t.error(f'zones."{zname}"', f"must be a table, not {z!r}")
        zt = _Table(src, f'[dns.zones."{zname}"]', z)
        if not is_zone_name(zname):
            raise zt.error("", f"is not a DNS zone name ({ZONE_NAME_RULE})")
        zone = absolute(zname)
        primaries = _servers(zt, "primaries" if "primaries" in z else "primary")
        if not primaries:
            raise zt.error("primaries", "is missing or empty: list the primary servers")
        zones[zone] = ZoneConfig(zone, primaries, _servers(zt, "servers"),
                                 zt.text("tsig_key_file", key_file))
    dnssec = (t.text("dnssec", DEFAULTS["dnssec"]) or "").lower()
    if dnssec not in ("auto", "require", "off"):
        raise t.error("dnssec", f"must be auto, require or off, not {dnssec!r}")
    algorithm = t.text("algorithm")
    if algorithm is not None and algorithm.lower() not in ALGORITHMS:
        raise t.error("algorithm", f"must be one of {', '.join(sorted(ALGORITHMS))}, "
                    f"not {algorithm!r}")
    return DnsConfig(
        zones=zones,
        default_ttl=t.ttl("default_ttl"),
        algorithm=algorithm,
        vm_zone=t.zone_name("vm_zone"),
        vm_ptr=t.boolean("vm_ptr", True),
        timeout=t.seconds("timeout"),
        update_timeout=t.seconds("update_timeout"),
        propagation_timeout=t.seconds("propagation_timeout"),
        sig_expiry_warn_days=t.seconds("sig_expiry_warn_days"),
        dnssec=dnssec,
        raw=sec,
    )


def load(ctx: Context) -> DnsConfig:
    """The ``[dns]`` table of the config in effect; at least one zone is required."""
    cfg = parse(ctx.section("dns"), ctx.config.path)
    if not cfg.zones:
        raise BadInput(f"no DNS zones configured: add [dns.zones.\"ZONE\"] to {ctx.config.path}",
                       hint="`debvisor lab up dns` writes a working example config")
    return cfg
