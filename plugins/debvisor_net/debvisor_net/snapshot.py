"""The node's network state as plain data, keyed by names (never ifindexes), and its diff.

A snapshot is JSON-serialisable, so another process (the rollback watchdog) can restore it.
It holds what a restore must recreate and nothing the kernel derives on its own: IPv6
link-locals, lo's loopback addresses, connected-prefix routes, the local table, the default
rules and the bridge timers are left out; addresses carry no transient flags.

    {"links": {NAME: {"kind": "veth"|"bridge"|"bond"|"vlan"|"macvlan"|"dummy"|None,
                      "master": NAME|None, "mtu": int, "mac": str|None, "up": bool,
                      # one of these, by kind:
                      "bridge": {"stp": bool, "forward_delay": centiseconds, "priority": int,
                                 "vlan_filtering": 0|1,
                                 "vlan_default_pvid"?: int (only with vlan_filtering 1)},
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

Kind None is a physical NIC or a kind debvisor does not create (tun, vxlan, ...). A kernel
built without VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING) reads as vlan_filtering 0.

The kernel is read with four netlink dumps sent through the pyroute2 socket's own file
descriptor and decoded here, attribute by attribute, only as far as a snapshot needs: pyroute2
0.9 decodes every attribute of every message and runs an asyncio round per message, which made
a snapshot slower than the `ip -j` commands it replaces.
"""

from __future__ import annotations

import copy
import errno
import ipaddress
import itertools
import json
import select
import socket
import struct
import time
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


# -- netlink, read directly ----------------------------------------------------------------
# Message types, flags and attribute numbers from linux/netlink.h, linux/rtnetlink.h,
# linux/if_link.h, linux/if_addr.h and linux/fib_rules.h.
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP_INTR, NLM_F_DUMP = 0x1, 0x10, 0x300
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE, RTM_GETRULE = 18, 22, 26, 34
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_LINK_NETNSID = 18, 37
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE, IFLA_BR_PRIORITY = 1, 5, 6
IFLA_BR_VLAN_FILTERING, IFLA_BR_VLAN_DEFAULT_PVID = 7, 39
IFLA_BOND_MODE, IFLA_BOND_MIIMON, IFLA_BOND_PRIMARY = 1, 3, 11
IFLA_BOND_XMIT_HASH_POLICY, IFLA_BOND_AD_LACP_RATE = 14, 21
IFLA_VLAN_ID = 1
IFLA_MACVLAN_MODE = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 4, 5, 6, 7
RTA_MULTIPATH, RTA_TABLE = 9, 15
FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_PRIORITY, FRA_FWMARK = 1, 2, 3, 6, 10
FRA_TABLE, FRA_OIFNAME = 15, 17

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NLA = struct.Struct("=HH")  # len, type
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope,
#                                       type, flags (fib_rule_hdr has the same layout:
#                                       ..., table, res1, res2, action, flags)
_RTNEXTHOP = struct.Struct("=HBBi")  # len, flags, hops, ifindex
_U8, _U16, _U32, _I32 = (struct.Struct(f"={c}") for c in "BHIi")
#: the dump requests: the type and an all-zero family header (AF_UNSPEC: every family)
_DUMPS = {"links": (RTM_GETLINK, _IFINFOMSG.size), "addresses": (RTM_GETADDR, _IFADDRMSG.size),
          "routes": (RTM_GETROUTE, _RTMSG.size), "rules": (RTM_GETRULE, _RTMSG.size)}
#: how long a dump may take before the kernel is given up on
DUMP_TIMEOUT = 30.0
_SEQ = itertools.count(0x5EED0000)

#: one message of a dump: (the datagram, where the message's payload starts, where it ends)
_Msg = tuple[bytes, int, int]
#: attribute type -> (where its payload starts, where it ends), the first of each type
_Attrs = dict[int, tuple[int, int]]


def _socket(ipr: Any) -> Any:
    """The netlink socket of pyroute2 IPRoute IPR (opened in its namespace)."""
    core = getattr(ipr, "asyncore", None)
    return (core if core is not None else ipr).socket


def _recv(sock: Any, deadline: float) -> bytes:
    """The next datagram on SOCK, whatever its size (a peek tells it first)."""
    probe = bytearray(16)
    while True:
        try:
            size = sock.recv_into(probe, 0, socket.MSG_PEEK | socket.MSG_TRUNC
                                  | socket.MSG_DONTWAIT)
            # at least 32 KiB: the kernel then fills its dump datagrams up to that size
            return sock.recv(max(size, 32768), socket.MSG_DONTWAIT)
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                raise TimeoutError("the kernel did not finish a netlink dump") from None
        except OSError as exc:  # notifications were lost (a socket bound to groups); a
            if exc.errno != errno.ENOBUFS:  # dump's own messages never are
                raise


def _dump(ipr: Any, what: str) -> list[_Msg]:
    """Every message of the kernel's dump WHAT ("links", "addresses", "routes" or "rules",
    all families), read through IPR's socket to the end (a pyroute2 call after it finds
    nothing of it left). NetlinkDumpInterrupted when the state changed meanwhile."""
    from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError

    msg_type, header = _DUMPS[what]
    sock = _socket(ipr)
    seq = next(_SEQ) & 0xFFFFFFFF
    sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + header, msg_type, NLM_F_REQUEST | NLM_F_DUMP,
                             seq, 0) + bytes(header))
    deadline = time.monotonic() + DUMP_TIMEOUT
    out: list[_Msg] = []
    interrupted, error, done = False, 0, False
    while not done:
        data = _recv(sock, deadline)
        pos, size = 0, len(data)
        while pos + _NLMSGHDR.size <= size:
            length, mtype, flags, mseq, _pid = _NLMSGHDR.unpack_from(data, pos)
            if length < _NLMSGHDR.size or pos + length > size:
                break
            if mseq == seq:  # anything else (a notification) is not this dump's
                body = pos + _NLMSGHDR.size
                interrupted = interrupted or bool(flags & NLM_F_DUMP_INTR)
                if mtype in (NLMSG_DONE, NLMSG_ERROR):
                    done = True
                    if length >= _NLMSGHDR.size + 4:
                        error = -_I32.unpack_from(data, body)[0]
                elif mtype > NLMSG_DONE + 1:  # not NOOP or OVERRUN
                    out.append((data, body, pos + length))
            pos += (length + 3) & ~3
    if error > 0:
        raise NetlinkError(error)
    if interrupted:
        raise NetlinkDumpInterrupted()
    return out


def _attrs(data: bytes, pos: int, end: int) -> _Attrs:
    out: _Attrs = {}
    while pos + 4 <= end:
        length, kind = _NLA.unpack_from(data, pos)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        if kind not in out:
            out[kind] = (pos + 4, pos + length)
        pos += (length + 3) & ~3
    return out


def _int(data: bytes, attrs: _Attrs, kind: int, fmt: struct.Struct = _U32) -> int | None:
    span = attrs.get(kind)
    return None if span is None else int(fmt.unpack_from(data, span[0])[0])


def _text(data: bytes, attrs: _Attrs, kind: int) -> str | None:
    span = attrs.get(kind)
    if span is None:
        return None
    return data[span[0]:span[1]].strip(b"\0").decode("utf-8", "replace")


def _ip(data: bytes, attrs: _Attrs, kind: int) -> bytes | None:
    """An address attribute's bytes (4 or 16 of them)."""
    span = attrs.get(kind)
    return None if span is None else data[span[0]:span[1]]


def _ntop(packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(packed) > 8 else socket.AF_INET, packed)


def _network(packed: bytes, prefixlen: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The network of PACKED/PREFIXLEN (host bits cleared)."""
    if len(packed) > 8:
        return ipaddress.IPv6Network((packed, prefixlen), strict=False)
    return ipaddress.IPv4Network((packed, prefixlen), strict=False)


def _interface(packed: bytes,
               prefixlen: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if len(packed) > 8:
        return ipaddress.IPv6Interface((packed, prefixlen))
    return ipaddress.IPv4Interface((packed, prefixlen))


# -- reading the kernel ------------------------------------------------------------------
def _mode_name(value: Any, names: dict[int, str]) -> str | int:
    if isinstance(value, str):
        return value
    return names.get(int(value), int(value))


def bond_slave_order(text: str) -> list[str]:
    """Slave names in enslavement order from the text of /proc/net/bonding/BOND."""
    prefix = "Slave Interface:"
    return [ln[len(prefix):].strip() for ln in text.splitlines() if ln.startswith(prefix)]


def _bridge(data: bytes, info: _Attrs) -> dict[str, Any]:
    """A bridge's parameters; VLAN filtering reads as 0 on a kernel without it (no attribute)
    and the default PVID only with filtering on."""
    filtering = int(bool(_int(data, info, IFLA_BR_VLAN_FILTERING, _U8)))
    priority = _int(data, info, IFLA_BR_PRIORITY, _U16)
    bridge: dict[str, Any] = {
        "stp": bool(_int(data, info, IFLA_BR_STP_STATE)),
        "forward_delay": _int(data, info, IFLA_BR_FORWARD_DELAY) or 0,
        "priority": 32768 if priority is None else priority,
        "vlan_filtering": filtering}
    pvid = _int(data, info, IFLA_BR_VLAN_DEFAULT_PVID, _U16)
    if filtering and pvid is not None:
        bridge["vlan_default_pvid"] = pvid
    return bridge


def _bond(data: bytes, info: _Attrs, names: dict[int, str]) -> dict[str, Any]:
    primary_ix = _int(data, info, IFLA_BOND_PRIMARY)
    return {
        "mode": _mode_name(_int(data, info, IFLA_BOND_MODE, _U8) or 0, BOND_MODES),
        "miimon": _int(data, info, IFLA_BOND_MIIMON) or 0,
        "primary": names.get(primary_ix) if primary_ix else None,
        "xmit_hash_policy": _mode_name(_int(data, info, IFLA_BOND_XMIT_HASH_POLICY, _U8) or 0,
                                       BOND_HASH_POLICIES),
        "lacp_rate": _mode_name(_int(data, info, IFLA_BOND_AD_LACP_RATE, _U8) or 0,
                                LACP_RATES),
        "slaves": [],
    }


def _links(ipr: Any) -> tuple[dict[str, dict[str, Any]], dict[int, str]]:
    msgs = []
    names: dict[int, str] = {}
    for data, pos, end in _dump(ipr, "links"):
        _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, pos)
        attrs = _attrs(data, pos + _IFINFOMSG.size, end)
        names[index] = str(_text(data, attrs, IFLA_IFNAME))
        msgs.append((data, index, flags, attrs))
    netns = netns_of(ipr)
    links: dict[str, dict[str, Any]] = {}
    masters: dict[str, list[tuple[int, str]]] = {}
    for data, index, flags, attrs in msgs:
        name = names[index]
        kind: str | None = None
        info: _Attrs = {}
        span = attrs.get(IFLA_LINKINFO)
        if span is not None:
            linkinfo = _attrs(data, *span)
            kind = _text(data, linkinfo, IFLA_INFO_KIND)
            if IFLA_INFO_DATA in linkinfo:
                info = _attrs(data, *linkinfo[IFLA_INFO_DATA])
        master_ix = _int(data, attrs, IFLA_MASTER)
        master = names.get(master_ix) if master_ix else None
        if master:
            masters.setdefault(master, []).append((index, name))
        mac = attrs.get(IFLA_ADDRESS)  # as pyroute2 reads it: 6 bytes, whatever the length
        link: dict[str, Any] = {
            "kind": kind if kind in KINDS else None,
            "master": master,
            "mtu": _int(data, attrs, IFLA_MTU),
            "mac": data[mac[0]:mac[0] + 6].hex(":") if mac is not None else None,
            "up": bool(flags & IFF_UP),
        }
        lower_ix = _int(data, attrs, IFLA_LINK)
        same_ns = IFLA_LINK_NETNSID not in attrs
        lower = names.get(lower_ix) if lower_ix and same_ns else None
        if kind == "bridge":
            link["bridge"] = _bridge(data, info)
        elif kind == "bond":
            link["bond"] = _bond(data, info, names)
        elif kind == "vlan":
            link["vlan"] = {"id": _int(data, info, IFLA_VLAN_ID, _U16) or 0, "link": lower}
        elif kind == "macvlan":
            mode = _int(data, info, IFLA_MACVLAN_MODE)
            link["macvlan"] = {"mode": _mode_name(4 if mode is None else mode, MACVLAN_MODES),
                               "link": lower}
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


def _skip_address(dev: str, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bool:
    if iface.version == 6 and iface.ip.is_link_local:
        return True
    return dev == "lo" and iface.ip.is_loopback


def _addresses(ipr: Any, names: dict[int, str]) -> tuple[list[dict[str, str]], set[tuple]]:
    keyed: list[tuple[tuple, dict[str, str]]] = []
    connected: set[tuple] = set()  # (dev, network) of every address, loopback included
    for data, pos, end in _dump(ipr, "addresses"):
        _family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(data, pos)
        dev = names.get(index)
        if dev is None:
            continue
        attrs = _attrs(data, pos + _IFADDRMSG.size, end)
        peer = _ip(data, attrs, IFA_ADDRESS)
        addr = _ip(data, attrs, IFA_LOCAL) or peer
        if addr is None:
            continue
        iface = _interface(addr, prefixlen)
        connected.add((dev, str(iface.network)))
        if peer is not None and peer != addr:  # a point-to-point address: the peer's prefix
            connected.add((dev, str(_network(peer, prefixlen))))
        if not _skip_address(dev, iface):
            keyed.append(((dev, iface.version, iface), {"dev": dev, "address": str(iface)}))
    keyed.sort(key=lambda k: k[0])
    return [a for _, a in keyed], connected


def _hops(data: bytes, pos: int, end: int, names: dict[int, str]) -> list[dict[str, Any]]:
    """The next hops of an RTA_MULTIPATH attribute, in snapshot order."""
    hops = []
    while pos + _RTNEXTHOP.size <= end:
        length, _flags, _hops, oif = _RTNEXTHOP.unpack_from(data, pos)
        if length < _RTNEXTHOP.size:
            break
        gateway = _ip(data, _attrs(data, pos + _RTNEXTHOP.size, pos + length), RTA_GATEWAY)
        hops.append({"gateway": _ntop(gateway) if gateway else None,
                     "dev": names.get(oif) if oif else None})
        pos += (length + 3) & ~3
    return sorted(hops, key=lambda h: (h["dev"] or "", h["gateway"] or ""))


def _routes(ipr: Any, names: dict[int, str], connected: set[tuple]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for data, pos, end in _dump(ipr, "routes"):
        fam, dst_len, _src_len, _tos, rtm_table, proto, scope, rtype, _flags = \
            _RTMSG.unpack_from(data, pos)
        # the local table (rtm_table is 255 exactly when RTA_TABLE is) and the kernel's
        # multicast routes are left out before their attributes are read
        if fam not in (socket.AF_INET, socket.AF_INET6) or rtm_table == RT_TABLE_LOCAL or (
                proto == RTPROT_KERNEL and rtype == RTN_MULTICAST):
            continue
        attrs = _attrs(data, pos + _RTMSG.size, end)
        family = 4 if fam == socket.AF_INET else 6
        table = _int(data, attrs, RTA_TABLE)
        table = rtm_table if table is None else table
        if table == RT_TABLE_LOCAL:
            continue
        packed = _ip(data, attrs, RTA_DST)
        net = _network(packed, dst_len) if dst_len and packed else None
        dst = str(net) if net is not None else "default"
        oif = _int(data, attrs, RTA_OIF)
        dev = names.get(oif) if oif else None
        if proto == RTPROT_KERNEL and (
                (dev, dst) in connected
                or (family == 6 and net is not None and net.is_link_local)):
            continue
        metric = _int(data, attrs, RTA_PRIORITY)
        gateway = _ip(data, attrs, RTA_GATEWAY)
        prefsrc = _ip(data, attrs, RTA_PREFSRC)
        route: dict[str, Any] = {
            "family": family, "dst": dst,
            "gateway": _ntop(gateway) if gateway else None, "dev": dev,
            "metric": metric if metric is not None else 0,
            "table": table, "proto": proto, "scope": scope, "type": rtype,
            "prefsrc": _ntop(prefsrc) if prefsrc else None,
        }
        span = attrs.get(RTA_MULTIPATH)
        hops = _hops(data, *span, names) if span is not None else []
        if hops:
            route["multipath"] = hops
        out.append(route)
    out.sort(key=sort_key)
    return out


def _rules(ipr: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for data, pos, end in _dump(ipr, "rules"):
        fam, dst_len, src_len, _tos, hdr_table, _res1, _res2, action, _flags = \
            _RTMSG.unpack_from(data, pos)
        if fam not in (socket.AF_INET, socket.AF_INET6):
            continue
        attrs = _attrs(data, pos + _RTMSG.size, end)
        table = _int(data, attrs, FRA_TABLE)
        table = hdr_table if table is None else table
        priority = _int(data, attrs, FRA_PRIORITY) or 0
        src, dst = _ip(data, attrs, FRA_SRC), _ip(data, attrs, FRA_DST)
        rule: dict[str, Any] = {
            "family": 4 if fam == socket.AF_INET else 6,
            "priority": priority,
            "src": str(_network(src, src_len)) if src else None,
            "dst": str(_network(dst, dst_len)) if dst else None,
            "table": table,
            "iifname": _text(data, attrs, FRA_IIFNAME),
            "oifname": _text(data, attrs, FRA_OIFNAME),
            "fwmark": _int(data, attrs, FRA_FWMARK),
            "action": action,
        }
        selectors = (rule["src"], rule["dst"], rule["iifname"], rule["oifname"],
                     rule["fwmark"])
        if (priority, table) in DEFAULT_RULES and not any(selectors) and action == 1:
            continue
        out.append(rule)
    out.sort(key=sort_key)
    return out


def sort_key(item: dict[str, Any]) -> str:
    """A total order for routes and rules (their canonical JSON)."""
    return json.dumps(item, sort_keys=True)


def snapshot(ipr: Any) -> dict[str, Any]:
    """The namespace of pyroute2 IPRoute IPR: its links, addresses, routes and rules as a
    name-keyed, JSON-able dict."""
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


def _norm_bridge(bridge: dict[str, Any]) -> None:
    """VLAN filtering as 0 or 1 (None: left out, not managed); the default PVID only with
    filtering on (the kernel keeps one with filtering off too, but a snapshot does not record
    it then)."""
    if bridge.get("vlan_filtering") is None:
        bridge.pop("vlan_filtering", None)
    else:
        bridge["vlan_filtering"] = int(bool(bridge["vlan_filtering"]))
    if not bridge.get("vlan_filtering"):
        bridge.pop("vlan_default_pvid", None)


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
        if lk["kind"] == "bridge" and isinstance(lk.get("bridge"), dict):
            _norm_bridge(lk["bridge"])
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


def kind_value(key: str, params: dict[str, Any], sub: str) -> Any:
    """Parameter SUB of kind data PARAMS (of KEY, e.g. "bridge"): a bridge without
    vlan_filtering (a snapshot from before it was recorded) has it off."""
    if key == "bridge" and sub == "vlan_filtering":
        return params.get(sub) or 0
    return params.get(sub)


def _compared(key: str, sub: str, a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether parameter SUB of kind data A and B (of KEY) is compared: not a bond's lacp_rate
    outside 802.3ad mode, nor a bridge's default PVID unless both filter VLANs (with one
    off, its vlan_filtering line says it)."""
    if key == "bond" and sub == "lacp_rate":
        return _lacp(a, b)
    if key == "bridge" and sub == "vlan_default_pvid":
        return bool(kind_value(key, a, "vlan_filtering") and kind_value(key, b, "vlan_filtering"))
    return True


def _link_diff(name: str, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    lines = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if va == vb or (key in ("mac", "mtu") and va is None):
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            for sub in sorted(va):
                was, now = kind_value(key, va, sub), kind_value(key, vb, sub)
                if was != now and _compared(key, sub, va, vb):
                    lines.append(f"~ link {name}: {key} {sub} {_show(was)} -> {_show(now)}")
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
    mode, nor a bridge's vlan_default_pvid unless both have vlan_filtering on (a bridge
    without vlan_filtering has it off).
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
