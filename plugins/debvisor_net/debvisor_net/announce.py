"""After an apply or a restore: wait out IPv6 duplicate-address detection, and tell the
segment where moved addresses live now (gratuitous ARP, unsolicited neighbour advertisement),
so peers that cached the old MAC reach the node again."""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from typing import Any

IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
ETH_P_ARP = 0x0806


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def garp(dev: str, mac: str, address: str) -> None:
    """One gratuitous ARP request for ``address`` from ``dev`` (AF_PACKET)."""
    me, ip = _mac_bytes(mac), socket.inet_aton(address)
    frame = (b"\xff" * 6 + me + struct.pack("!H", ETH_P_ARP)
             + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + me + ip + b"\0" * 6 + ip)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((dev, 0))
        s.send(frame)


def unsolicited_na(dev: str, mac: str, address: str) -> None:
    """One unsolicited neighbour advertisement for ``address`` to all nodes on ``dev``."""
    index = socket.if_nametoindex(dev)
    target = socket.inet_pton(socket.AF_INET6, address)
    # type 136, code 0, checksum (the kernel fills it in), flags: override
    msg = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + target + b"\x02\x01" + _mac_bytes(mac)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        s.sendto(msg, ("ff02::1", 0, 0, index))


def announce(state: dict[str, Any], before: dict[str, Any] | None = None) -> list[str]:
    """Announce every address of ``state`` that is new or moved since ``before``; return
    the ``dev address`` pairs announced (errors are skipped: a link without carrier)."""
    old = {(a["dev"], a["address"]) for a in (before or {}).get("addresses", [])}
    done = []
    for a in state["addresses"]:
        if (a["dev"], a["address"]) in old:
            continue
        link = state["links"].get(a["dev"]) or {}
        if not link.get("mac") or not link.get("up") or a["dev"] == "lo":
            continue
        ip = ipaddress.ip_interface(a["address"]).ip
        try:
            if ip.version == 4:
                garp(a["dev"], link["mac"], str(ip))
            else:
                unsolicited_na(a["dev"], link["mac"], str(ip))
        except OSError:
            continue
        done.append(f"{a['dev']} {ip}")
    return done


def wait_dad(ipr: Any, timeout: float = 10.0) -> list[str]:
    """Wait until no IPv6 address is tentative; return the addresses whose DAD failed."""
    deadline = time.monotonic() + timeout
    while True:
        tentative, failed = [], []
        for msg in ipr.get_addr(family=socket.AF_INET6):
            flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
            addr = msg.get_attr("IFA_ADDRESS")
            if flags & IFA_F_DADFAILED:
                failed.append(addr)
            elif flags & IFA_F_TENTATIVE:
                tentative.append(addr)
        if not tentative or time.monotonic() >= deadline:
            return failed
        time.sleep(0.1)
