"""The node's network state as plain data, keyed by names (never ifindexes), and its diff.

A snapshot is JSON-serialisable, so another process (the rollback watchdog) can restore it.
It holds what a restore must recreate and nothing the kernel derives on its own: IPv6
link-locals, lo's loopback addresses, connected-prefix routes, the local table, the default
rules and the bridge timers are left out; addresses carry no transient flags.

    {"links": {NAME: {"kind": "veth"|"bridge"|"bond"|"vlan"|"macvlan"|"dummy"|None,
                      "master": NAME|None, "mtu": int, "mac": str|None, "up": bool,
                      # one of these, by kind:
                      "bridge": {"stp": bool, "forward_delay": centiseconds, "priority": int},
                      "bond": {"mode": "active-backup"|..., "miimon": int,
                               "primary": NAME|None, "xmit_hash_policy": str,
                               "lacp_rate": str, "slaves": [NAME, ...] enslavement order},
                      "vlan": {"id": int, "link": NAME},
                      "macvlan": {"mode": "bridge"|..., "link": NAME},
                      "veth": {"peer": NAME|None (None: the peer is in another namespace)}}},
     "addresses": [{"dev": NAME, "address": "10.50.0.10/24"}, ...],
     "routes": [{"family": 4|6, "dst": "default"|NETWORK, "gateway": str|None,
                 "dev": NAME|None, "metric": int, "table": int, "proto": int, "scope": int,
                 "type": int, "prefsrc": str|None,
                 "multipath"?: [{"gateway": str|None, "dev": NAME|None}, ...]}, ...],
     "rules": [{"family", "priority", "src", "dst", "table", "iifname", "oifname",
                "fwmark", "action"}, ...]}

Kind None is a physical NIC or a kind debvisor does not create (tun, vxlan, ...).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import socket
from typing import Any

from .kernel import netns_of, read_proc_net

#: kinds a snapshot names; any other kind (and a physical NIC) reads as None
KINDS = ("veth", "bridge", "bond", "vlan", "macvlan", "dummy")
IFF_UP = 0x1
RT_TABLE_LOCAL = 255
RTPROT_KERNEL = 2
RTN_MULTICAST = 5
#: the kernel's own rules: (priority, table)
DEFAULT_RULES = {(0, 255), (32766, 254), (32767, 253)}

BOND_MODES = {0: "balance-rr", 1: "active-backup", 2: "balance-xor", 3: "broadcast",
              4: "802.3ad", 5: "balance-tlb", 6: "balance-alb"}
BOND_HASH_POLICIES = {0: "layer2", 1: "layer3+4", 2: "layer2+3", 3: "encap2+3",
                      4: "encap3+4", 5: "vlan+srcmac"}
LACP_RATES = {0: "slow", 1: "fast"}
MACVLAN_MODES = {1: "private", 2: "vepa", 4: "bridge", 8: "passthru", 16: "source"}
PROTOS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 9: "ra",
          16: "dhcp", 186: "bgp", 188: "ospf"}
TABLES = {253: "default", 254: "main", 255: "local"}
ROUTE_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
               6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}


# -- reading the kernel ------------------------------------------------------------------
def _info(msg: Any) -> tuple[str | None, dict[str, Any]]:
    """(IFLA_INFO_KIND, IFLA_INFO_DATA as a dict) of a link message."""
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    if linkinfo is None:
        return None, {}
    kind = linkinfo.get_attr("IFLA_INFO_KIND")
    data = linkinfo.get_attr("IFLA_INFO_DATA")
    attrs: dict[str, Any] = {}
    if data is not None and hasattr(data, "get"):
        for name, value in data.get("attrs", []):
            attrs[name] = value
    return kind, attrs


def _mode_name(value: Any, names: dict[int, str]) -> str | int:
    if isinstance(value, str):
        return value
    return names.get(int(value), int(value))


def bond_slave_order(text: str) -> list[str]:
    """Slave names in enslavement order from the text of /proc/net/bonding/BOND."""
    prefix = "Slave Interface:"
    return [ln[len(prefix):].strip() for ln in text.splitlines() if ln.startswith(prefix)]


def _links(ipr: Any) -> tuple[dict[str, dict[str, Any]], dict[int, str]]:
    msgs = list(ipr.get_links())
    names = {int(m["index"]): str(m.get_attr("IFLA_IFNAME")) for m in msgs}
    netns = netns_of(ipr)
    links: dict[str, dict[str, Any]] = {}
    masters: dict[str, list[tuple[int, str]]] = {}
    for m in msgs:
        name = names[int(m["index"])]
        kind, data = _info(m)
        master_ix = m.get_attr("IFLA_MASTER")
        master = names.get(int(master_ix)) if master_ix else None
        if master:
            masters.setdefault(master, []).append((int(m["index"]), name))
        link: dict[str, Any] = {
            "kind": kind if kind in KINDS else None,
            "master": master,
            "mtu": int(m.get_attr("IFLA_MTU")),
            "mac": str(m.get_attr("IFLA_ADDRESS") or "").lower() or None,
            "up": bool(int(m["flags"]) & IFF_UP),
        }
        lower_ix = m.get_attr("IFLA_LINK")
        same_ns = m.get_attr("IFLA_LINK_NETNSID") is None
        lower = names.get(int(lower_ix)) if lower_ix and same_ns else None
        if kind == "bridge":
            link["bridge"] = {"stp": bool(data.get("IFLA_BR_STP_STATE", 0)),
                              "forward_delay": int(data.get("IFLA_BR_FORWARD_DELAY", 0)),
                              "priority": int(data.get("IFLA_BR_PRIORITY", 32768))}
        elif kind == "bond":
            primary_ix = data.get("IFLA_BOND_PRIMARY")
            link["bond"] = {
                "mode": _mode_name(data.get("IFLA_BOND_MODE", 0), BOND_MODES),
                "miimon": int(data.get("IFLA_BOND_MIIMON", 0)),
                "primary": names.get(int(primary_ix)) if primary_ix else None,
                "xmit_hash_policy": _mode_name(data.get("IFLA_BOND_XMIT_HASH_POLICY", 0),
                                               BOND_HASH_POLICIES),
                "lacp_rate": _mode_name(data.get("IFLA_BOND_AD_LACP_RATE", 0), LACP_RATES),
                "slaves": [],
            }
        elif kind == "vlan":
            link["vlan"] = {"id": int(data.get("IFLA_VLAN_ID", 0)), "link": lower}
        elif kind == "macvlan":
            link["macvlan"] = {"mode": _mode_name(data.get("IFLA_MACVLAN_MODE", 4),
                                                  MACVLAN_MODES), "link": lower}
        elif kind == "veth":
            # the peer's name when it sits in this namespace; None: elsewhere (not recreatable)
            link["veth"] = {"peer": lower}
        links[name] = link
    for name, link in links.items():
        if link["kind"] != "bond":
            continue
        ports = [n for _, n in sorted(masters.get(name, []))]  # fallback: ifindex order
        text = read_proc_net(netns, f"bonding/{name}")
        if text is not None:
            listed = [n for n in bond_slave_order(text) if n in ports]
            ports = listed + [n for n in ports if n not in listed]
        link["bond"]["slaves"] = ports
    return links, names


def _prefix(address: str, prefixlen: int) -> str:
    return str(ipaddress.ip_interface(f"{address}/{prefixlen}"))


def _skip_address(dev: str, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bool:
    if iface.version == 6 and iface.ip.is_link_local:
        return True
    return dev == "lo" and iface.ip.is_loopback


def _addresses(ipr: Any, names: dict[int, str]) -> tuple[list[dict[str, str]], set[tuple]]:
    out: list[dict[str, str]] = []
    connected: set[tuple] = set()  # (dev, network) of every address, loopback included
    for m in ipr.get_addr():
        dev = names.get(int(m["index"]))
        addr = m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")
        if dev is None or addr is None:
            continue
        iface = ipaddress.ip_interface(_prefix(str(addr), int(m["prefixlen"])))
        connected.add((dev, str(iface.network)))
        peer = m.get_attr("IFA_ADDRESS")  # a point-to-point address: the peer's prefix
        if peer is not None and str(peer) != str(addr):
            connected.add((dev, str(ipaddress.ip_interface(
                _prefix(str(peer), int(m["prefixlen"]))).network)))
        if not _skip_address(dev, iface):
            out.append({"dev": dev, "address": str(iface)})
    out.sort(key=lambda a: (a["dev"], ipaddress.ip_interface(a["address"]).version,
                            ipaddress.ip_interface(a["address"])))
    return out, connected


def route_dst(dst: Any, dst_len: int) -> str:
    """A route destination as a snapshot writes it: "default" or a network."""
    if not dst_len:
        return "default"
    return str(ipaddress.ip_network(f"{dst}/{dst_len}", strict=False))


def _routes(ipr: Any, names: dict[int, str], connected: set[tuple]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in ipr.get_routes():
        fam = int(m["family"])
        if fam not in (socket.AF_INET, socket.AF_INET6):
            continue
        family = 4 if fam == socket.AF_INET else 6
        table = m.get_attr("RTA_TABLE")
        table = int(table if table is not None else m["table"])
        if table == RT_TABLE_LOCAL:
            continue
        proto, rtype = int(m["proto"]), int(m["type"])
        dst = route_dst(m.get_attr("RTA_DST"), int(m["dst_len"]))
        oif = m.get_attr("RTA_OIF")
        dev = names.get(int(oif)) if oif else None
        if proto == RTPROT_KERNEL and (
                (dev, dst) in connected or rtype == RTN_MULTICAST
                or (family == 6 and dst != "default"
                    and ipaddress.ip_network(dst).is_link_local)):
            continue
        metric = m.get_attr("RTA_PRIORITY")
        gateway = m.get_attr("RTA_GATEWAY")
        prefsrc = m.get_attr("RTA_PREFSRC")
        route: dict[str, Any] = {
            "family": family, "dst": dst,
            "gateway": str(gateway) if gateway else None, "dev": dev,
            "metric": int(metric) if metric is not None else 0,
            "table": table, "proto": proto, "scope": int(m["scope"]), "type": rtype,
            "prefsrc": str(prefsrc) if prefsrc else None,
        }
        multipath = m.get_attr("RTA_MULTIPATH")
        if multipath:
            route["multipath"] = sorted(
                ({"gateway": str(hop.get_attr("RTA_GATEWAY") or "") or None,
                  "dev": names.get(int(hop["oif"])) if hop["oif"] else None}
                 for hop in multipath), key=lambda h: (h["dev"] or "", h["gateway"] or ""))
        out.append(route)
    out.sort(key=sort_key)
    return out


def _rules(ipr: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in ipr.get_rules():
        fam = int(m["family"])
        if fam not in (socket.AF_INET, socket.AF_INET6):
            continue
        table = m.get_attr("FRA_TABLE")
        table = int(table if table is not None else m["table"])
        priority = int(m.get_attr("FRA_PRIORITY") or 0)
        src, dst = m.get_attr("FRA_SRC"), m.get_attr("FRA_DST")
        rule: dict[str, Any] = {
            "family": 4 if fam == socket.AF_INET else 6,
            "priority": priority,
            "src": str(ipaddress.ip_network(f"{src}/{m['src_len']}", strict=False))
            if src else None,
            "dst": str(ipaddress.ip_network(f"{dst}/{m['dst_len']}", strict=False))
            if dst else None,
            "table": table,
            "iifname": m.get_attr("FRA_IIFNAME"),
            "oifname": m.get_attr("FRA_OIFNAME"),
            "fwmark": m.get_attr("FRA_FWMARK"),
            "action": int(m["action"]),
        }
        selectors = (rule["src"], rule["dst"], rule["iifname"], rule["oifname"],
                     rule["fwmark"])
        if (priority, table) in DEFAULT_RULES and not any(selectors) and rule["action"] == 1:
            continue
        out.append(rule)
    out.sort(key=sort_key)
    return out


def sort_key(item: dict[str, Any]) -> str:
    """A total order for routes and rules (their canonical JSON)."""
    return json.dumps(item, sort_keys=True)


def snapshot(ipr: Any) -> dict[str, Any]:
    """The namespace's links, addresses, routes and rules as a name-keyed, JSON-able dict."""
    from pyroute2.netlink.exceptions import NetlinkDumpInterrupted

    for attempt in range(3):  # a dump the kernel interrupted (state changed meanwhile)
        try:
            links, names = _links(ipr)
            addresses, connected = _addresses(ipr, names)
            return {"links": links, "addresses": addresses,
                    "routes": _routes(ipr, names, connected), "rules": _rules(ipr)}
        except NetlinkDumpInterrupted:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# -- normalising a target ---------------------------------------------------------------
def _family(*addresses: str | None) -> int:
    for a in addresses:
        if a and a != "default":
            return ipaddress.ip_network(a, strict=False).version
    return 4


def _norm_route(r: dict[str, Any]) -> dict[str, Any]:
    out = dict(r)
    dst = str(out.get("dst") or "default")
    if dst not in ("default", "0.0.0.0/0", "::/0"):
        try:
            dst = str(ipaddress.ip_network(dst))
        except ValueError as exc:
            raise ValueError(f"route destination {dst!r} is not a network: {exc}") from None
    family = out.get("family") or _family(dst, out.get("gateway"))
    if dst in ("0.0.0.0/0", "::/0"):
        dst = "default"
    out["family"], out["dst"] = int(family), dst
    for key in ("gateway", "dev", "prefsrc"):
        out[key] = out.get(key) or None
    if out["gateway"]:
        out["gateway"] = str(ipaddress.ip_address(out["gateway"]))
    if out.get("metric") is None:
        out["metric"] = 1024 if family == 6 else 0
    out.setdefault("table", 254)
    out.setdefault("proto", 3)
    out.setdefault("type", 1)
    if out.get("scope") is None:
        link_scope = family == 4 and out["type"] == 1 and not out["gateway"] and out["dev"]
        out["scope"] = 253 if link_scope and not out.get("multipath") else 0
    if out.get("multipath"):
        out["multipath"] = sorted(
            ({"gateway": str(ipaddress.ip_address(h["gateway"])) if h.get("gateway") else None,
              "dev": h.get("dev") or None} for h in out["multipath"]),
            key=lambda h: (h["dev"] or "", h["gateway"] or ""))
    else:
        out.pop("multipath", None)
    return out


def _norm_rule(r: dict[str, Any]) -> dict[str, Any]:
    if r.get("priority") is None:
        raise ValueError(f"rule {r} has no priority")
    out: dict[str, Any] = {
        "family": int(r.get("family") or _family(r.get("src"), r.get("dst"))),
        "priority": int(r["priority"]), "table": int(r.get("table", 254)),
        "action": int(r.get("action", 1))}
    for key in ("src", "dst"):
        out[key] = str(ipaddress.ip_network(r[key], strict=False)) if r.get(key) else None
    for key in ("iifname", "oifname", "fwmark"):
        out[key] = r.get(key)
    return out


def normalise(snap: dict[str, Any]) -> dict[str, Any]:
    """A copy of SNAP with defaults filled in and addresses in canonical form (a snapshot
    taken from the kernel is already normal)."""
    links: dict[str, dict[str, Any]] = {}
    for name, link in (snap.get("links") or {}).items():
        lk = copy.deepcopy(link)
        lk.setdefault("kind", None)
        lk.setdefault("master", None)
        lk.setdefault("mtu", None)
        lk["mac"] = str(lk["mac"]).lower() if lk.get("mac") else None
        lk["up"] = bool(lk.get("up", True))
        links[str(name)] = lk
    addresses = []
    for a in snap.get("addresses") or []:
        try:
            iface = ipaddress.ip_interface(a["address"])
        except ValueError as exc:
            raise ValueError(f"address {a['address']!r} is not valid: {exc}") from None
        addresses.append({"dev": a["dev"], "address": str(iface)})
    return {"links": links, "addresses": addresses,
            "routes": [_norm_route(r) for r in snap.get("routes") or []],
            "rules": [_norm_rule(r) for r in snap.get("rules") or []]}


# -- showing and comparing -----------------------------------------------------------------
def _name(value: int, names: dict[int, str]) -> str:
    return names.get(value, str(value))


def format_route(route: dict[str, Any]) -> str:
    """One route the way `ip route` writes it, with the protocol in brackets."""
    parts = []
    rtype = route.get("type", 1)
    if rtype != 1:
        parts.append(_name(rtype, ROUTE_TYPES))
    dst = route["dst"]
    if dst == "default" and route.get("family") == 6 and not route.get("gateway"):
        dst = "default (IPv6)"
    parts.append(dst)
    if route.get("gateway"):
        parts.append(f"via {route['gateway']}")
    if route.get("dev"):
        parts.append(f"dev {route['dev']}")
    for hop in route.get("multipath") or []:
        parts.append(f"nexthop via {hop['gateway']} dev {hop['dev']}")
    table = route.get("table", 254)
    if table != 254:
        parts.append(f"table {_name(table, TABLES)}")
    if route.get("scope"):
        parts.append(f"scope {_name(route['scope'], SCOPES)}")
    if route.get("prefsrc"):
        parts.append(f"src {route['prefsrc']}")
    parts.append(f"metric {route.get('metric') or 0}")
    return " ".join(parts) + f" (proto {_name(route.get('proto', 3), PROTOS)})"


def format_rule(rule: dict[str, Any]) -> str:
    """One rule the way `ip rule` writes it."""
    parts = [f"{rule.get('priority', 0)}:", "from", rule.get("src") or "all"]
    if rule.get("dst"):
        parts += ["to", rule["dst"]]
    if rule.get("fwmark") is not None:
        parts += ["fwmark", hex(rule["fwmark"])]
    if rule.get("iifname"):
        parts += ["iif", rule["iifname"]]
    if rule.get("oifname"):
        parts += ["oif", rule["oifname"]]
    action = rule.get("action", 1)
    if action == 1:
        parts += ["lookup", _name(rule["table"], TABLES)]
    else:
        parts.append(_name(action, ROUTE_TYPES))
    text = " ".join(parts)
    return f"IPv6 {text}" if rule.get("family") == 6 else text


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "up" if value else "down"
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def _lacp(*bonds: dict[str, Any]) -> bool:
    """Whether one of BONDS is in 802.3ad mode: in any other the kernel keeps a lacp_rate but
    neither uses it nor lets it be set, so it is not compared."""
    return any(b.get("mode") is not None and _mode_name(b["mode"], BOND_MODES) == "802.3ad"
               for b in bonds)


def _link_diff(name: str, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    lines = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if va == vb or (key in ("mac", "mtu") and va is None):
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            for sub in sorted(va):
                if va.get(sub) != vb.get(sub) and not (
                        key == "bond" and sub == "lacp_rate" and not _lacp(va, vb)):
                    lines.append(f"~ link {name}: {key} {sub} {_show(va.get(sub))} -> "
                                 f"{_show(vb.get(sub))}")
        elif key == "up":
            lines.append(f"~ link {name}: {_show(va)} -> {_show(vb)}")
        else:
            lines.append(f"~ link {name}: {key} {_show(va)} -> {_show(vb)}")
    return lines


def _set_diff(label: str, a: list[dict[str, Any]], b: list[dict[str, Any]],
              fmt: Any) -> list[str]:
    ka = {sort_key(x): x for x in a}
    kb = {sort_key(x): x for x in b}
    lines = [f"- {label} {fmt(ka[k])}" for k in sorted(ka.keys() - kb.keys())]
    lines += [f"+ {label} {fmt(kb[k])}" for k in sorted(kb.keys() - ka.keys())]
    return lines


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs from snapshot A to snapshot B, one line each ("-" only in A, "+" only in
    B, "~" changed); empty when they are equal.

    A may be a target rather than a snapshot: a link's mac or mtu None there, or a bridge or
    bond parameter it leaves out, is not compared; nor is a bond's lacp_rate outside 802.3ad
    mode.
    """
    a, b = normalise(a), normalise(b)
    lines: list[str] = []
    la, lb = a["links"], b["links"]
    for name in sorted(la.keys() - lb.keys()):
        lines.append(f"- link {name} ({la[name].get('kind') or 'physical'})")
    for name in sorted(lb.keys() - la.keys()):
        lines.append(f"+ link {name} ({lb[name].get('kind') or 'physical'})")
    for name in sorted(la.keys() & lb.keys()):
        lines += _link_diff(name, la[name], lb[name])
    lines += _set_diff("address", a["addresses"], b["addresses"],
                       lambda x: f"{x['address']} on {x['dev']}")
    lines += _set_diff("route", a["routes"], b["routes"], format_route)
    lines += _set_diff("rule", a["rules"], b["rules"], format_rule)
    return lines
