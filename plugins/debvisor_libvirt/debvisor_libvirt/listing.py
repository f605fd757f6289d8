"""`hv list`: every node queried concurrently, one row per domain.

Per node: one ``getAllDomainStats`` call (every domain with its state, vCPUs and
memory), one ``listAllDomains`` of the transient domains (instead of an ``isPersistent``
call per domain) and one ``metadata`` call per listed domain for the inventory columns
(registered; owner, role and tags of a registered VM): libvirt has no call that returns
several domains' metadata.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .domains import FILTERS, qemu_start_times, read_meta, state_name, uptime_from
from .nodes import Cluster, lv

if TYPE_CHECKING:
    import libvirt

REMOTE_META_THREADS = 8
"""Threads reading the metadata of a remote node's domains: libvirt pipelines their
calls on the one connection, so the round trips overlap (lab, 52 domains behind a proxy
adding 1 ms each way: 147 ms one by one, 30 ms with 8 threads). A local node's UNIX
socket answers in ~0.1 ms: there threads cost more than they save, the calls go one by one."""


_UNREGISTERED: dict[str, Any] = {"registered": False, "owner": None, "role": None, "tags": []}


def _inventory(dom: libvirt.virDomain) -> dict[str, Any]:
    """The inventory columns of a row: registered, and the owner, role and tags of a
    registered VM (one metadata call)."""
    try:
        meta = read_meta(dom)
    except lv().libvirtError:  # e.g. the domain went away since it was listed
        return _UNREGISTERED
    if not (meta and meta.get("registered")):
        return _UNREGISTERED
    return {"registered": True, "owner": meta.get("owner"), "role": meta.get("role"),
            "tags": list(meta.get("tags") or [])}


def _node_rows(conn: libvirt.virConnect, node: str, states: set[str] | None = None, *,
               threads: int = 1) -> list[dict[str, Any]]:
    """Rows of ``node``'s domains (only those in ``states`` if given), ``uptime_s`` None."""
    lvm = lv()
    groups = lvm.VIR_DOMAIN_STATS_STATE | lvm.VIR_DOMAIN_STATS_VCPU | lvm.VIR_DOMAIN_STATS_BALLOON
    try:  # one round trip: every domain, with its stats on QEMU nodes
        listed: list[tuple[libvirt.virDomain, dict[str, Any]]] = conn.getAllDomainStats(groups, 0)
    except lvm.libvirtError:
        listed = [(dom, {}) for dom in conn.listAllDomains(0)]
    if not listed:
        return []
    transient = {d.UUIDString() for d in
                 conn.listAllDomains(lvm.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)}
    rows: list[dict[str, Any]] = []
    doms: list[libvirt.virDomain] = []
    for dom, st in listed:
        if "vcpu.current" in st or "balloon.maximum" in st:
            state, vcpus = st.get("state.state", 0), st.get("vcpu.current", 0)
            mem = st.get("balloon.current") or st.get("balloon.maximum", 0)
        else:  # drivers without those stats groups (test:///)
            state, _max, mem, vcpus, _cpu = dom.info()
        name = state_name(state)
        if states is not None and name not in states:
            continue  # filtered out: no metadata call for it
        uuid = dom.UUIDString()
        doms.append(dom)
        rows.append({
            "name": dom.name(),
            "node": node,
            "state": name,
            "vcpus": vcpus,
            "memory_mib": mem // 1024,
            "uptime_s": None,
            "registered": False,
            "uuid": uuid,
            "persistent": uuid not in transient,
        })
    if threads > 1 and len(doms) > 1:
        with ThreadPoolExecutor(min(threads, len(doms))) as pool:
            inventory = list(pool.map(_inventory, doms))
    else:
        inventory = [_inventory(d) for d in doms]
    for row, inv in zip(rows, inventory, strict=True):
        row.update(inv)
    return rows


def list_vms(ctx: Any, *, state_filter: str = "all", node: str | None = None) -> dict[str, Any]:
    """Rows of every VM on every configured node (or ``node``) plus unreachable nodes."""
    states = None if state_filter == "all" else FILTERS[state_filter]
    with Cluster(ctx, only=node) as cluster:
        conns, errors = cluster.try_all()
        local = {n for n in conns if cluster.nodes[n].is_local}
        rows: list[dict[str, Any]] = []
        with ThreadPoolExecutor(len(conns) + 1) as pool:
            # the QEMU processes' start times (uptime) are read while the nodes answer
            started = pool.submit(qemu_start_times) if local else None
            futures = {n: pool.submit(_node_rows, c, n, states,
                                      threads=1 if n in local else REMOTE_META_THREADS)
                       for n, c in conns.items()}
            for n, fut in futures.items():
                try:
                    rows.extend(fut.result())
                except lv().libvirtError as exc:
                    errors[n] = f"node {n}: {exc.get_error_message()}"
            starts = started.result() if started is not None else {}
    for r in rows:
        if r["state"] == "running" and r["uuid"] in starts:
            r["uptime_s"] = round(uptime_from(starts[r["uuid"]]) or 0)
    rows.sort(key=lambda r: (r["node"], r["name"]))
    return {"vms": rows, "nodes": sorted(conns), "unreachable": errors}
