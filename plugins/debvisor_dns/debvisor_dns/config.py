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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from debvisor_core.errors import BadInput

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


def _num(sec: dict[str, Any], key: str, kind: type) -> Any:
    value = sec.get(key, DEFAULTS[key])
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise BadInput(f"config [dns] {key} must be a number, not {value!r}") from None
    if out <= 0:
        raise BadInput(f"config [dns] {key} must be positive")
    return out


def _servers(value: Any, where: str) -> list[Server]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise BadInput(f"config [dns] {where} must be a list of addresses")
    return [parse_server(v, where) for v in value]


def parse(sec: dict[str, Any]) -> DnsConfig:
    """Validate the ``[dns]`` table (one clear BadInput for the first problem)."""
    zones_raw = sec.get("zones") or {}
    if not isinstance(zones_raw, dict):
        raise BadInput("config [dns] zones must be a table of zone tables")
    key_file = sec.get("tsig_key_file")
    zones: dict[str, ZoneConfig] = {}
    for zname, z in zones_raw.items():
        if not isinstance(z, dict):
            raise BadInput(f"config [dns.zones.\"{zname}\"] must be a table")
        where = f'zones."{zname}"'
        primaries = _servers(z.get("primaries", z.get("primary")), f"{where}.primaries")
        if not primaries:
            raise BadInput(f"config [dns] {where} lists no primaries")
        servers = _servers(z.get("servers"), f"{where}.servers")
        zones[absolute(zname)] = ZoneConfig(absolute(zname), primaries, servers,
                                            z.get("tsig_key_file", key_file))
    dnssec = str(sec.get("dnssec", DEFAULTS["dnssec"])).lower()
    if dnssec not in ("auto", "require", "off"):
        raise BadInput("config [dns] dnssec must be auto, require or off")
    vm_zone = sec.get("vm_zone")
    return DnsConfig(
        zones=zones,
        default_ttl=_num(sec, "default_ttl", int),
        algorithm=sec.get("algorithm"),
        vm_zone=absolute(vm_zone) if vm_zone else None,
        vm_ptr=bool(sec.get("vm_ptr", True)),
        timeout=_num(sec, "timeout", float),
        update_timeout=_num(sec, "update_timeout", float),
        propagation_timeout=_num(sec, "propagation_timeout", float),
        sig_expiry_warn_days=_num(sec, "sig_expiry_warn_days", float),
        dnssec=dnssec,
        raw=sec,
    )


def load(ctx: Context) -> DnsConfig:
    """The ``[dns]`` table of the config in effect; at least one zone is required."""
    cfg = parse(ctx.section("dns"))
    if not cfg.zones:
        raise BadInput(f"no DNS zones configured: add [dns.zones.\"ZONE\"] to {ctx.config.path}",
                       hint="`debvisor lab up dns` writes a working example config")
    return cfg
