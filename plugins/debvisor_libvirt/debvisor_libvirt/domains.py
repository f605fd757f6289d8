"""Reading domains: state names, devices from the XML, DebVisor metadata, uptime."""

from __future__ import annotations

import os
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .nodes import lv

if TYPE_CHECKING:
    import libvirt

META_NS = "https://debvisor.org/xmlns/hv/1"
META_KEY = "debvisor"

# libvirt VIR_DOMAIN_* state numbers -> names
STATE_NAMES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown",
               5: "shutoff", 6: "crashed", 7: "pmsuspended"}
FILTERS = {
    "running": {"running", "blocked"},
    "paused": {"paused", "pmsuspended"},
    "stopped": {"shutoff", "shutdown", "crashed", "nostate"},
}


def state_name(code: int) -> str:
    return STATE_NAMES.get(code, f"state-{code}")


@dataclass
class Devices:
    """What the domain XML says about consoles, graphics, disks and NICs."""

    serial: bool = False
    graphics: list[dict[str, Any]] = field(default_factory=list)
    disks: list[dict[str, Any]] = field(default_factory=list)
    interfaces: list[dict[str, Any]] = field(default_factory=list)


def devices(xml: str) -> Devices:
    root = ET.fromstring(xml)
    out = Devices()
    devs = root.find("devices")
    if devs is None:
        return out
    out.serial = devs.find("serial") is not None or devs.find("console") is not None
    for g in devs.findall("graphics"):
        listen = g.get("listen")
        lst = g.find("listen")
        if lst is not None and lst.get("address"):
            listen = lst.get("address")
        out.graphics.append({
            "type": g.get("type"), "port": int(g.get("port") or -1),
            "autoport": g.get("autoport") == "yes", "listen": listen,
            "passwd": g.get("passwd") is not None,
        })
    for d in devs.findall("disk"):
        src = d.find("source")
        tgt = d.find("target")
        out.disks.append({
            "type": d.get("type"), "device": d.get("device"),
            "source": None if src is None else (src.get("file") or src.get("dev")
                                                 or src.get("name") or src.get("volume")),
            "protocol": None if src is None else src.get("protocol"),
            "target": None if tgt is None else tgt.get("dev"),
            "shareable": d.find("shareable") is not None,
            "readonly": d.find("readonly") is not None,
        })
    for i in devs.findall("interface"):
        tgt, mac = i.find("target"), i.find("mac")
        out.interfaces.append({"type": i.get("type"),
                               "target": None if tgt is None else tgt.get("dev"),
                               "mac": None if mac is None else mac.get("address")})
    return out


def memory_kib(xml: str) -> int:
    node = ET.fromstring(xml).find("memory")
    if node is None or not node.text:
        return 0
    factor = {"KiB": 1, "k": 1, "KB": 1, "MiB": 1024, "M": 1024, "GiB": 1024 ** 2, "G": 1024 ** 2,
              "b": 1 / 1024, "bytes": 1 / 1024}.get(node.get("unit", "KiB"), 1)
    return int(int(node.text) * factor)


# --- DebVisor metadata ----------------------------------------------------------------------


def read_meta(dom: libvirt.virDomain, *, inactive: bool = False) -> dict[str, Any] | None:
    """The DebVisor inventory record stored in the domain, or None if not registered."""
    libvirt = lv()
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if inactive else 0
    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, META_NS, flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return None
        raise
    return parse_meta(xml)


def parse_meta(xml: str) -> dict[str, Any]:
    root = ET.fromstring(xml)

    def text(tag: str) -> str | None:
        n = root.find(tag)
        return n.text if n is not None else None

    vnc = root.find("vnc")
    port: Any = None if vnc is None else vnc.get("port")
    if isinstance(port, str) and port.isdigit() and port.isascii():
        port = int(port)  # anything else stays as written: `vnc ensure` refuses it
    return {
        "registered": root.get("registered") == "yes",
        "owner": text("owner"),
        "role": text("role"),
        "tags": [t.text for t in root.findall("tags/tag") if t.text],
        "addresses": [a.text for a in root.findall("addresses/address") if a.text],
        "registered_at": text("registered-at"),
        "vnc": None if vnc is None else {"listen": vnc.get("listen"), "port": port},
    }


def meta_xml(record: dict[str, Any]) -> str:
    """Serialise an inventory record (see :func:`parse_meta`)."""
    root = ET.Element("vm", registered="yes" if record.get("registered") else "no")
    for tag in ("owner", "role", "registered-at"):
        key = tag.replace("-", "_")
        if record.get(key):
            ET.SubElement(root, tag).text = str(record[key])
    if record.get("tags"):
        tags = ET.SubElement(root, "tags")
        for t in record["tags"]:
            ET.SubElement(tags, "tag").text = t
    if record.get("addresses"):
        addrs = ET.SubElement(root, "addresses")
        for a in record["addresses"]:
            ET.SubElement(addrs, "address").text = a
    if record.get("vnc"):
        ET.SubElement(root, "vnc", listen=str(record["vnc"]["listen"]),
                      port=str(record["vnc"]["port"]))
    return ET.tostring(root, encoding="unicode")


def write_meta(dom: libvirt.virDomain, record: dict[str, Any] | None) -> None:
    """Store (or with None remove) the record in the persistent and the live definition."""
    libvirt = lv()
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    xml = None if record is None else meta_xml(record)
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml,
                    META_KEY if xml else None, META_NS, flags)


# --- uptime ---------------------------------------------------------------------------------


def qemu_start_times() -> dict[str, float]:
    """Domain UUID -> start time (epoch) of QEMU processes visible on this machine."""
    out: dict[str, float] = {}
    try:
        btime = next(float(ln.split()[1]) for ln in open("/proc/stat") if ln.startswith("btime"))
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError):
        return out
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if not argv or b"qemu-system" not in argv[0]:
                continue
            uuid = argv[argv.index(b"-uuid") + 1].decode()
            with open(f"/proc/{pid}/stat") as f:
                start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        except (OSError, ValueError, IndexError):
            continue
        out[uuid] = btime + start_ticks / hz
    return out


def uptime_from(start: float | None) -> float | None:
    return None if start is None else max(0.0, time.time() - start)


def guest_addresses(dom: libvirt.virDomain) -> list[str]:
    """IP addresses the guest's interfaces have (DHCP leases, then ARP), if any are known."""
    libvirt = lv()
    out: list[str] = []
    for source in (libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
                   libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP):
        try:
            ifaces = dom.interfaceAddresses(source, 0) or {}
        except libvirt.libvirtError:
            continue
        for info in ifaces.values():
            for a in info.get("addrs") or []:
                addr = a.get("addr")
                if addr and addr not in out and not re.match(r"(127\.|::1$|fe80:)", addr):
                    out.append(addr)
        if out:
            break
    return out
