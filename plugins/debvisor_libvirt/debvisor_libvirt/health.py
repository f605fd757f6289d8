"""Health checks: libvirtd reachable per node, VMs crashed or paused on error, VNC listening."""

from __future__ import annotations

from functools import partial

from debvisor_core.context import Context
from debvisor_core.health import CheckResult, HealthCheck

from .nodes import Node, NodeUnreachable, connect, lv, nodes

# VIR_DOMAIN_PAUSED_* reasons that mean trouble (I/O error, watchdog, crashed, API error…)
BAD_PAUSE = {2: "I/O error", 6: "watchdog", 9: "shutting down", 10: "snapshot failed",
             12: "post-copy failed", 13: "API error", 11: "crashed"}


def _reachable(n: Node, ctx: Context) -> CheckResult:
    try:
        conn = connect(n, timeout=5)
        info = conn.getInfo()
    except NodeUnreachable as exc:
        return CheckResult.crit(exc.message, uri=n.uri)
    except lv().libvirtError as exc:
        return CheckResult.crit(f"node {n.name}: {exc.get_error_message()}", uri=n.uri)
    return CheckResult.ok(f"libvirtd on {n.name} answers ({info[2]} CPUs, {info[1]} MiB)",
                          uri=n.uri, version=conn.getLibVersion())


def _vm_states(ctx: Context) -> CheckResult:
    libvirt = lv()
    bad: list[str] = []
    total = 0
    unreachable = []
    for n in nodes(ctx).values():
        try:
            conn = connect(n, timeout=5)
        except NodeUnreachable:
            unreachable.append(n.name)
            continue
        for dom in conn.listAllDomains(0):
            total += 1
            state, reason = dom.state()
            if state == libvirt.VIR_DOMAIN_CRASHED:
                bad.append(f"{dom.name()}@{n.name} crashed")
            elif state == libvirt.VIR_DOMAIN_PAUSED and reason in BAD_PAUSE:
                bad.append(f"{dom.name()}@{n.name} paused ({BAD_PAUSE[reason]})")
    if bad:
        return CheckResult.crit(f"{len(bad)} VM(s) in trouble: {', '.join(bad)}", vms=bad)
    note = f" ({', '.join(unreachable)} unreachable)" if unreachable else ""
    return CheckResult.ok(f"{total} VMs, none crashed or paused on error{note}")


def _vnc_listening(ctx: Context) -> CheckResult:
    from .nodes import Cluster
    from .vnc import survey

    with Cluster(ctx) as cluster:
        rows = survey(ctx, cluster, [])
    dead = [f"{r['vm']}@{r['node']} ({r['live']})" for r in rows if not r["probe"]["ok"]]
    if dead:
        return CheckResult.crit(f"VNC not listening: {', '.join(dead)}", vms=dead)
    return CheckResult.ok(f"{len(rows)} running VM(s) with VNC, all answer RFB")


def checks(ctx: Context) -> list[HealthCheck]:
    out = [HealthCheck(f"hv.libvirtd.{n.name}", partial(_reachable, n), timeout=10)
           for n in nodes(ctx).values()]
    out.append(HealthCheck("hv.vm-states", _vm_states, timeout=20))
    out.append(HealthCheck("hv.vnc", _vnc_listening, timeout=30))
    return out
