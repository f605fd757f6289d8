"""`hv list`: every node queried concurrently, one row per domain.

Per node: one ``getAllDomainStats`` call (every domain with its state, vCPUs and
memory), one ``listAllDomains`` of the transient domains (instead of an ``isPersistent``
call per domain) and one ``metadata`` call per listed domain for the inventory columns
(registered; owner, role and tags of a registered VM): libvirt has no call that returns
several domains' metadata.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from .domains import FILTERS, qemu_start_times, read_meta, state_name, uptime_from
from .nodes import Cluster, NodeUnreachable, in_threads, lv

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


def _inventories(doms: list[libvirt.virDomain]) -> list[dict[str, Any]]:
    return [_inventory(d) for d in doms]


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
        n = min(threads, len(doms))  # thread i reads domains i, i + n, i + 2n, ...
        parts = in_threads({i: partial(_inventories, doms[i::n]) for i in range(n)})
        inventory: list[dict[str, Any]] = [{}] * len(doms)
        for i, (part, exc) in parts.items():
            if exc is not None:
                raise exc
            inventory[i::n] = part
    else:
        inventory = [_inventory(d) for d in doms]
    for row, inv in zip(rows, inventory, strict=True):
        row.update(inv)
    return rows


def list_vms(ctx: Any, *, state_filter: str = "all", node: str | None = None) -> dict[str, Any]:
    """Rows of every VM on every configured node (or ``node``) plus unreachable nodes.

    One thread per node connects and lists at once (a slow node delays no other); a
    further thread reads the local QEMU processes' start times (uptime) meanwhile."""
    states = None if state_filter == "all" else FILTERS[state_filter]
    with Cluster(ctx, only=node) as cluster:
        local = {n for n, nd in cluster.nodes.items() if nd.is_local}

        def one(n: str) -> list[dict[str, Any]]:
            return _node_rows(cluster.conn(n), n, states,
                              threads=1 if n in local else REMOTE_META_THREADS)

        calls: dict[str | None, Any] = {n: partial(one, n) for n in cluster.nodes}
        if local:
            calls[None] = qemu_start_times
        done = in_threads(calls)
        starts, exc = done.pop(None, ({}, None))
        if exc is not None:
            raise exc
        rows: list[dict[str, Any]] = []
        # the unreachable nodes first, then the nodes that failed to list (as before)
        errors = {n: exc.message for n, (_, exc) in done.items()
                  if n is not None and isinstance(exc, NodeUnreachable)}
        connected: list[str] = []
        for n, (got, exc) in done.items():
            if n is None or n in errors:
                continue
            connected.append(n)
            if isinstance(exc, lv().libvirtError):
                errors[n] = f"node {n}: {exc.get_error_message()}"
            elif exc is not None:
                raise exc
            else:
                rows.extend(got)
    for r in rows:
        if r["state"] == "running" and r["uuid"] in starts:
            r["uptime_s"] = round(uptime_from(starts[r["uuid"]]) or 0)
    rows.sort(key=lambda r: (r["node"], r["name"]))
    return {"vms": rows, "nodes": sorted(connected), "unreachable": errors}
