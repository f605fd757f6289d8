"""The desired-state file (netplan v2-like YAML) and the kernel state it asks for.

The file is checked by the core's network-config schema (the one the ISO builder uses),
then by the rules an apply needs: addresses unique across interfaces, MTU at least 1280 on
a link with IPv6 addresses, members and VLAN links that exist. :func:`target` turns it into
a snapshot (see snapshot.py) of what the kernel should hold: the interfaces the file names
are managed (their addresses, routes, MTU, MAC, master, admin state); every other link is
left as it is, except the virtual links an earlier applied file declared and this one drops.
"""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

from debvisor_core.errors import BadInput

SECTIONS = ("ethernets", "bonds", "bridges", "vlans")
KIND = {"bonds": "bond", "bridges": "bridge", "vlans": "vlan"}
PROTO_BOOT = 3  # what `ip route add` and ifupdown use: a file applied at boot looks the same
BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad",
              "balance-tlb", "balance-alb")


def load(path: Path) -> dict[str, Any]:
    """The ``network`` mapping of the file at ``path``; BadInput with every problem found."""
    from debvisor_core.netconfig import Report, check_network_config, read_regular

    try:
        raw = read_regular(path)
    except ValueError:
        raise BadInput(f"{path} is not a regular file") from None
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    report = Report()
    version = check_network_config(raw, str(path), report)
    problems = [str(e) for e in report.errors]
    if version is not None and version != 2:
        problems.append(f"{path}: network-config version 1 is for cloud-init; "
                        "`net apply` takes version 2 (netplan-like)")
    data: dict[str, Any] = {}
    if not problems:
        import yaml

        doc = yaml.safe_load(raw.decode("utf-8", "replace"))
        data = doc["network"] if "network" in doc else doc
        problems = rules(data, str(path))
    if problems:
        raise BadInput("; ".join(problems) if len(problems) < 4 else
                       f"{len(problems)} problems in {path}:\n  " + "\n  ".join(problems))
    return data


def interfaces(data: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every interface the file names: name -> (section, its mapping)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for section in SECTIONS:
        for name, dev in (data.get(section) or {}).items():
            out[str(name)] = (section, dev or {})
    return out


def rules(data: dict[str, Any], file: str = "the desired state") -> list[str]:
    """What an apply needs beyond the schema; one sentence a problem."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    devs = interfaces(data)
    for name, (section, dev) in devs.items():
        v6 = False
        for a in dev.get("addresses") or []:
            try:
                ip = ipaddress.ip_interface(str(a))
            except ValueError:
                problems.append(f"{file}: {section}.{name}: {a!r} is not an address with a prefix")
                continue
            v6 = v6 or ip.version == 6
            key = str(ip.ip)
            if key in seen:
                problems.append(f"{file}: {section}.{name}: {key} is also on {seen[key]}")
            seen[key] = name
        mtu = dev.get("mtu")
        if v6 and isinstance(mtu, int) and mtu < 1280:
            problems.append(f"{file}: {section}.{name}: MTU {mtu} is below 1280, the minimum "
                            "for a link with IPv6 addresses")
        params = dev.get("parameters") or {}
        if section == "bonds" and params.get("mode") not in (None, *BOND_MODES):
            problems.append(f"{file}: bonds.{name}.parameters.mode: {params['mode']!r} is not "
                            f"a bond mode ({', '.join(BOND_MODES)})")
        if section == "bonds" and params.get("primary") and \
                params["primary"] not in (dev.get("interfaces") or []):
            problems.append(f"{file}: bonds.{name}.parameters.primary: {params['primary']!r} "
                            "is not one of the bond's interfaces")
    owners: dict[str, str] = {}
    for name, (section, dev) in devs.items():
        for member in dev.get("interfaces") or []:
            if member in owners:
                problems.append(f"{file}: {section}.{name}: {member} is already a member of "
                                f"{owners[member]}")
            owners[member] = name
    return problems


def _routes(name: str, dev: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    wanted = list(dev.get("routes") or [])
    for key, default in (("gateway4", "0.0.0.0/0"), ("gateway6", "::/0")):
        if dev.get(key):
            wanted.append({"to": default, "via": dev[key]})
    for r in wanted:
        to = str(r.get("to", "default"))
        via = r.get("via")
        family = 6 if (":" in to or (via and ":" in str(via))) else 4
        dst = "default" if to in ("default", "0.0.0.0/0", "::/0") else \
            str(ipaddress.ip_network(to, strict=False))
        out.append({"family": family, "dst": dst, "gateway": str(via) if via else None,
                    "dev": name, "metric": int(r.get("metric", 0 if family == 4 else 1024)),
                    "table": int(r.get("table", 254)), "proto": PROTO_BOOT,
                    "scope": 0 if via else 253, "type": 1, "prefsrc": None})
    return out


def target(data: dict[str, Any], current: dict[str, Any],
           previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The snapshot the kernel should hold once ``data`` is applied on top of ``current``.
    ``previous`` is the last applied file: its virtual links that ``data`` drops go."""
    want = interfaces(data)
    out = copy.deepcopy(current)
    links: dict[str, Any] = out["links"]
    for name, (section, _) in interfaces(previous or {}).items():
        if name not in want and section != "ethernets" and name in links:
            del links[name]
    masters = {m: name for name, (_, dev) in want.items() for m in dev.get("interfaces") or []}
    for name, (section, dev) in want.items():
        old = links.get(name)
        if section == "ethernets" and old is None:
            raise BadInput(f"ethernets.{name}: there is no interface {name} on this node")
        link: dict[str, Any] = dict(old or {"kind": KIND[section], "mtu": 1500, "mac": None})
        if section != "ethernets" and old is not None and old.get("kind") != KIND[section]:
            raise BadInput(f"{section}.{name}: {name} exists here as a {old.get('kind') or 'device'}"
                           f", not a {KIND[section]}")
        link["master"] = masters.get(name)
        link["up"] = True
        # A bond gives its slaves its own MAC (the first slave's), and a slave released from
        # a bond gets its permanent MAC back: the kernel chooses, not the snapshot's value
        # (which verify() would otherwise hold the new slave, or the released one, to).
        was = (old or {}).get("master")
        if (link["master"] in want and want[link["master"]][0] == "bonds") or (
                was is not None and current["links"].get(was, {}).get("kind") == "bond"):
            link["mac"] = None
        if "mtu" in dev:
            link["mtu"] = int(dev["mtu"])
        if dev.get("macaddress"):
            link["mac"] = str(dev["macaddress"]).lower()
        params = dev.get("parameters") or {}
        if section == "bridges":
            fd = params.get("forward-delay")
            link["bridge"] = {**(link.get("bridge") or {}),
                              "stp": bool(params.get("stp", False)),
                              **({"forward_delay": int(float(fd) * 100)} if fd is not None else {}),
                              **({"priority": int(params["priority"])} if "priority" in params
                                 else {})}
        if section == "bonds":
            link["bond"] = {"mode": params.get("mode", "balance-rr"),
                            "miimon": int(params.get("mii-monitor-interval", 100)),
                            "primary": params.get("primary"),
                            "slaves": [str(m) for m in dev.get("interfaces") or []]}
        if section == "vlans":
            link["vlan"] = {"id": int(dev["id"]), "link": str(dev["link"])}
        links[name] = link
    managed = set(want)
    gone = {n for n in current["links"] if n not in links}
    out["addresses"] = sorted(
        [a for a in current["addresses"] if a["dev"] not in managed and a["dev"] not in gone]
        + [{"dev": name, "address": str(ipaddress.ip_interface(str(a)))}
           for name, (_, dev) in want.items() for a in dev.get("addresses") or []],
        key=lambda a: (a["dev"], a["address"]))
    routes = [r for r in current["routes"] if r.get("dev") not in managed | gone]
    for name, (_, dev) in want.items():
        routes.extend(_routes(name, dev))
    out["routes"] = sorted(routes, key=_route_key)
    return out


def _route_key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["family"], r["table"], r["dst"], r.get("dev") or "", r.get("metric") or 0)


def nameservers(data: dict[str, Any]) -> list[str]:
    """Every nameserver address the file names (the dns probe asks them)."""
    out: list[str] = []
    for _, dev in interfaces(data).values():
        for a in (dev.get("nameservers") or {}).get("addresses") or []:
            if str(a) not in out:
                out.append(str(a))
    return out


def gateways(state: dict[str, Any]) -> list[str]:
    """The default gateways of a snapshot (the gateway probe pings them)."""
    return [r["gateway"] for r in state["routes"] if r["dst"] == "default" and r.get("gateway")
            and r.get("table", 254) == 254]
