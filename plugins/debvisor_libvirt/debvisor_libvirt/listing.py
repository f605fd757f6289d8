"""`hv list`: every node queried concurrently, one row per domain."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .domains import FILTERS, qemu_start_times, read_meta, state_name, uptime_from
from .nodes import Cluster, lv

if TYPE_CHECKING:
    import libvirt


def _node_rows(conn: libvirt.virConnect, node: str, starts: dict[str, float]) -> list[dict[str, Any]]:
    lvm = lv()
    doms = conn.listAllDomains(0)
    if not doms:
        return []
    info: dict[str, tuple[int, int, int]] = {}  # uuid -> (state, vcpus, memory KiB)
    try:  # one round trip for QEMU nodes
        groups = (lvm.VIR_DOMAIN_STATS_STATE | lvm.VIR_DOMAIN_STATS_VCPU
                  | lvm.VIR_DOMAIN_STATS_BALLOON)
        for dom, st in conn.domainListGetStats(doms, groups, 0):
            if "vcpu.current" in st or "balloon.maximum" in st:
                info[dom.UUIDString()] = (st.get("state.state", 0), st.get("vcpu.current", 0),
                                          st.get("balloon.current") or st.get("balloon.maximum", 0))
    except lvm.libvirtError:
        pass

    def row(dom: libvirt.virDomain) -> dict[str, Any]:
        uuid = dom.UUIDString()
        if uuid in info:
            state, vcpus, mem = info[uuid]
        else:  # drivers without those stats groups (test:///)
            state, _max, mem, vcpus, _cpu = dom.info()
        try:
            meta = read_meta(dom)
        except lvm.libvirtError:
            meta = None
        name = state_name(state)
        return {
            "name": dom.name(),
            "node": node,
            "state": name,
            "vcpus": vcpus,
            "memory_mib": mem // 1024,
            "uptime_s": round(uptime_from(starts.get(uuid)) or 0) if name == "running"
            and uuid in starts else None,
            "registered": bool(meta and meta.get("registered")),
            "uuid": uuid,
            "persistent": bool(dom.isPersistent()),
        }

    with ThreadPoolExecutor(min(8, len(doms))) as pool:
        return list(pool.map(row, doms))


def list_vms(ctx: Any, *, state_filter: str = "all", node: str | None = None) -> dict[str, Any]:
    """Rows of every VM on every configured node (or ``node``) plus unreachable nodes."""
    with Cluster(ctx, only=node) as cluster:
        conns, errors = cluster.try_all()
        local = any(cluster.nodes[n].is_local for n in conns)
        starts = qemu_start_times() if local else {}
        rows: list[dict[str, Any]] = []
        with ThreadPoolExecutor(max(1, len(conns))) as pool:
            futures = {n: pool.submit(_node_rows, c, n, starts) for n, c in conns.items()}
            for n, fut in futures.items():
                try:
                    rows.extend(fut.result())
                except lv().libvirtError as exc:
                    errors[n] = f"node {n}: {exc.get_error_message()}"
    if state_filter != "all":
        rows = [r for r in rows if r["state"] in FILTERS[state_filter]]
    rows.sort(key=lambda r: (r["node"], r["name"]))
    return {"vms": rows, "unreachable": errors}
