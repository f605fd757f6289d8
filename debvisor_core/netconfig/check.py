"""network-config v1 and v2 against DebVisor's own schemas (cloud-init ships none).

The schemas (schemas/network-config-v{1,2}.json) cover ethernets, bonds, bridges,
vlans, addresses, routes and nameservers; a second pass checks what JSON Schema
cannot say clearly: IP addresses and prefixes, and that bond/bridge members and
VLAN links name interfaces that exist.

jsonschema and PyYAML are imported only when a document is checked (the core does
not depend on them; the plugins that call this do).
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from functools import cache
from importlib import resources
from typing import Any

from .report import Report
from .schemautil import report_errors
from .yamlutil import Loaded, dotted, load


def valid_ip(value: Any, *, cidr: bool = False, version: int | None = None) -> bool:
    """An IP address (``cidr``: an address with a prefix, like 192.0.2.10/24), of ``version`` if given."""
    try:
        if cidr:
            if "/" not in str(value):
                return False
            net = ipaddress.ip_interface(str(value))
        else:
            net = ipaddress.ip_address(str(value))  # type: ignore[assignment]
    except ValueError:
        return False
    return version is None or net.version == version


@cache
def _validator(version: int) -> Any:
    import jsonschema

    text = resources.files(__package__).joinpath(f"schemas/network-config-v{version}.json").read_text()
    return jsonschema.Draft7Validator(json.loads(text))


def check_network_config(raw: bytes, file: str, report: Report) -> int | None:
    """Check network-config; return its version (1 or 2) or None if unusable."""
    loaded = load(raw.decode("utf-8", "replace"), file, report)
    if loaded is None:
        return None
    data, prefix = loaded.data, []
    if isinstance(data, dict) and "network" in data and len(data) == 1:
        data, prefix = data["network"], ["network"]
    if not isinstance(data, dict):
        report.error(file, "network-config must be a mapping with a version key", 1)
        return None
    version = data.get("version")
    if version not in (1, 2):
        report.error(file, f"{dotted([*prefix, 'version'])}: {version!r} is not a network-config "
                     "version; use 1 or 2", loaded.line_of([*prefix, "version"]) or 1)
        return None
    report_errors(_validator(version), data, loaded, file, report, prefix=prefix)
    (_semantic_v2 if version == 2 else _semantic_v1)(data, loaded, prefix, file, report)
    return int(version)


def validate_bytes(raw: bytes, file: str) -> tuple[int | None, Report]:
    """Check one network-config document; its version (1 or 2, None if unusable) and the findings.

    ``file`` names the document in every finding (``file:line: message``)."""
    report = Report()
    return check_network_config(raw, file, report), report


def validate_file(path: str | os.PathLike[str], *, label: str | None = None) -> tuple[int | None, Report]:
    """:func:`validate_bytes` on a file's content; findings name ``label`` (default: ``path``).

    A file that cannot be read, or is not a regular file (a FIFO would hang the read), is one
    error finding, not an exception."""
    file = label if label is not None else os.fspath(path)
    report = Report()
    try:
        raw = read_regular(path)
    except ValueError:
        report.error(file, "the network-config is not a regular file")
        return None, report
    except OSError as exc:
        report.error(file, f"cannot read the network-config file: {exc.strerror or exc}")
        return None, report
    return check_network_config(raw, file, report), report


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the regular file at ``path`` (ValueError for anything else: a FIFO would
    hang the read, a device never ends); OSError when it cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{os.fspath(path)} is not a regular file")
        return f.read()


def _ip_checks(report: Report, file: str, loaded: Loaded, path: list[Any], dev: dict[str, Any]) -> None:
    def bad(sub: list[Any], msg: str) -> None:
        report.error(file, f"{dotted(path + sub)}: {msg}", loaded.line_of(path + sub))

    for i, a in enumerate(_list(dev.get("addresses"))):
        if not valid_ip(a, cidr=True):
            bad(["addresses", i], f"{a!r} is not an address with prefix like 192.0.2.10/24")
    for key, ver in (("gateway4", 4), ("gateway6", 6)):
        if isinstance(dev.get(key), str) and not valid_ip(dev[key], version=ver):
            bad([key], f"{dev[key]!r} is not an IPv{ver} address")
    ns = dev.get("nameservers")
    for i, a in enumerate(_list(ns.get("addresses")) if isinstance(ns, dict) else []):
        if not valid_ip(a):
            bad(["nameservers", "addresses", i], f"{a!r} is not an IP address")
    for i, r in enumerate(_list(dev.get("routes"))):
        if not isinstance(r, dict) or not isinstance(r.get("to"), str):
            continue
        if r["to"] not in ("default", "0.0.0.0/0", "::/0") and not valid_ip(r["to"], cidr=True) \
                and not valid_ip(r["to"]):
            bad(["routes", i, "to"], f"{r['to']!r} is not a destination like 10.0.0.0/8 or default")
        if "via" in r and not valid_ip(r["via"]):
            bad(["routes", i, "via"], f"{r['via']!r} is not a gateway IP address")


def _semantic_v2(data: dict[str, Any], loaded: Loaded, prefix: list[Any], file: str, report: Report) -> None:
    names: set[str] = set()
    for section in ("ethernets", "bonds", "bridges", "vlans"):
        if isinstance(data.get(section), dict):
            names.update(data[section])
    for section in ("ethernets", "bonds", "bridges", "vlans"):
        devs = data.get(section)
        for name, dev in (devs.items() if isinstance(devs, dict) else []):
            if not isinstance(dev, dict):
                continue
            path = [*prefix, section, name]
            _ip_checks(report, file, loaded, path, dev)
            for i, member in enumerate(_list(dev.get("interfaces"))):
                if isinstance(member, str) and member not in names:
                    where = [*path, "interfaces", i]
                    report.error(file, f"{dotted(where)}: {member!r} is not defined in ethernets, "
                                 "bonds, bridges or vlans", loaded.line_of(where))
            if section == "vlans" and isinstance(dev.get("link"), str) and dev["link"] not in names:
                report.error(file, f"{dotted([*path, 'link'])}: {dev['link']!r} is not a defined interface",
                             loaded.line_of([*path, "link"]))
            if (dev.get("dhcp4") or dev.get("dhcp6")) and dev.get("addresses") is None \
                    and "gateway4" in dev:
                report.warning(file, f"{dotted(path)}: gateway4 with DHCP and no static address is ignored",
                               loaded.line_of(path))


def _semantic_v1(data: dict[str, Any], loaded: Loaded, prefix: list[Any], file: str, report: Report) -> None:
    items = [it if isinstance(it, dict) else {} for it in _list(data.get("config"))]
    names = {it["name"] for it in items if isinstance(it.get("name"), str)}
    for i, it in enumerate(items):
        path = [*prefix, "config", i]

        def bad(sub: list[Any], msg: str, path: list[Any] = path) -> None:
            report.error(file, f"{dotted(path + sub)}: {msg}", loaded.line_of(path + sub))

        for key in ("bond_interfaces", "bridge_interfaces"):
            for j, m in enumerate(_list(it.get(key))):
                if isinstance(m, str) and m not in names:
                    bad([key, j], f"{m!r} is not a defined interface")
        if it.get("type") == "vlan" and isinstance(it.get("vlan_link"), str) and it["vlan_link"] not in names:
            bad(["vlan_link"], f"{it['vlan_link']!r} is not a defined interface")
        if it.get("type") == "nameserver" and isinstance(it.get("address"), str | list):
            addrs = it["address"] if isinstance(it["address"], list) else [it["address"]]
            for j, a in enumerate(addrs):
                if not valid_ip(a):
                    bad(["address", j] if isinstance(it["address"], list) else ["address"],
                        f"{a!r} is not an IP address")
        if it.get("type") == "route" and isinstance(it.get("destination"), str) \
                and isinstance(it.get("gateway"), str):
            if not (valid_ip(it["destination"], cidr=True) or valid_ip(it["destination"])):
                bad(["destination"], f"{it['destination']!r} is not a network like 10.0.0.0/8")
            if not valid_ip(it["gateway"]):
                bad(["gateway"], f"{it['gateway']!r} is not an IP address")
        for j, sn in enumerate(_list(it.get("subnets"))):
            if not isinstance(sn, dict):
                continue
            sp = ["subnets", j]
            if isinstance(sn.get("address"), str) and not (valid_ip(sn["address"], cidr=True) or
                                        (valid_ip(sn["address"]) and "netmask" in sn)):
                bad([*sp, "address"], f"{sn['address']!r} needs a prefix (like /24) or a netmask")
            for key in ("gateway", "netmask"):
                if isinstance(sn.get(key), str) and not valid_ip(sn[key]):
                    bad([*sp, key], f"{sn[key]!r} is not an IP address")
            for k, a in enumerate(_list(sn.get("dns_nameservers"))):
                if not valid_ip(a):
                    bad([*sp, "dns_nameservers", k], f"{a!r} is not an IP address")


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []
