"""`hv resources VM`: vCPUs, memory and balloon, CPU %, disk and network I/O rates."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .domains import devices, state_name
from .nodes import lv

if TYPE_CHECKING:
    import libvirt


def _counters(dom: libvirt.virDomain, disks: list[str], nics: list[str]) -> dict[str, Any]:
    libvirt = lv()
    state, _max_kib, _mem_kib, _vcpus, cpu_ns = dom.info()
    out: dict[str, Any] = {"t": time.monotonic(), "cpu_ns": cpu_ns, "disks": {}, "nics": {}}
    for d in disks:
        try:
            rd_req, rd_bytes, wr_req, wr_bytes, _errs = dom.blockStats(d)
            out["disks"][d] = (rd_bytes, wr_bytes, rd_req, wr_req)
        except libvirt.libvirtError:
            pass
    for n in nics:
        try:
            s = dom.interfaceStats(n)
            out["nics"][n] = (s[0], s[4], s[1], s[5])  # rx bytes, tx bytes, rx pkts, tx pkts
        except libvirt.libvirtError:
            pass
    return out


def sample(dom: libvirt.virDomain, node: str, interval: float) -> dict[str, Any]:
    """Counters read twice, ``interval`` seconds apart, as rates."""
    libvirt = lv()
    dev = devices(dom.XMLDesc(0))
    disks = [d["target"] for d in dev.disks if d["target"]]
    nics = [i["target"] for i in dev.interfaces if i["target"]]
    state, max_kib, mem_kib, vcpus, _ = dom.info()
    balloon: dict[str, Any] = {}
    if dom.isActive():
        try:
            balloon = dom.memoryStats()
        except libvirt.libvirtError:
            balloon = {}
    a = _counters(dom, disks, nics)
    active = dom.isActive()
    if active:
        time.sleep(interval)  # the measurement window itself
    b = _counters(dom, disks, nics) if active else a
    dt = max(b["t"] - a["t"], 1e-9)
    cpu_pct = (b["cpu_ns"] - a["cpu_ns"]) / (dt * 1e9) * 100 if active else 0.0

    def rates(kind: str, names: list[str], keys: tuple[str, ...]) -> list[dict[str, Any]]:
        rows = []
        for n in names:
            if n not in a[kind] or n not in b[kind]:
                rows.append({"device": n, "available": False})
                continue
            row: dict[str, Any] = {"device": n, "available": True}
            for i, k in enumerate(keys):
                row[k] = max(0.0, (b[kind][n][i] - a[kind][n][i]) / dt)
            rows.append(row)
        return rows

    return {
        "name": dom.name(),
        "node": node,
        "state": state_name(state),
        "interval_s": round(dt, 3) if active else 0,
        "vcpus": vcpus,
        "cpu_percent": round(cpu_pct, 1),
        "cpu_percent_per_vcpu": round(cpu_pct / max(vcpus, 1), 1),
        "memory": {
            "max_mib": max_kib // 1024,
            "current_mib": mem_kib // 1024,
            "balloon_actual_mib": balloon["actual"] // 1024 if "actual" in balloon else None,
            "guest_unused_mib": balloon["unused"] // 1024 if "unused" in balloon else None,
            "guest_available_mib": balloon["available"] // 1024 if "available" in balloon else None,
            "rss_mib": balloon["rss"] // 1024 if "rss" in balloon else None,
        },
        "disks": rates("disks", disks, ("read_bps", "write_bps", "read_iops", "write_iops")),
        "nics": rates("nics", nics, ("rx_bps", "tx_bps", "rx_pps", "tx_pps")),
    }


def render(data: dict[str, Any]) -> None:
    from debvisor_core.output import human_bytes

    m = data["memory"]
    print(f"{data['name']} on {data['node']}: {data['state']}, sampled over {data['interval_s']}s")
    print(f"  vCPUs        {data['vcpus']}  CPU {data['cpu_percent']}% "
          f"({data['cpu_percent_per_vcpu']}% per vCPU)")
    bal = "n/a" if m["balloon_actual_mib"] is None else f"{m['balloon_actual_mib']} MiB"
    print(f"  memory       {m['current_mib']} of {m['max_mib']} MiB, balloon {bal}"
          + ("" if m["guest_unused_mib"] is None else f", guest unused {m['guest_unused_mib']} MiB"))
    for d in data["disks"]:
        if d["available"]:
            print(f"  disk {d['device']:<8} read {human_bytes(d['read_bps'])}/s "
                  f"write {human_bytes(d['write_bps'])}/s "
                  f"({d['read_iops']:.0f}/{d['write_iops']:.0f} IOPS)")
        else:
            print(f"  disk {d['device']:<8} no statistics")
    for n in data["nics"]:
        if n["available"]:
            print(f"  nic  {n['device']:<8} rx {human_bytes(n['rx_bps'])}/s "
                  f"tx {human_bytes(n['tx_bps'])}/s")
        else:
            print(f"  nic  {n['device']:<8} no statistics")
