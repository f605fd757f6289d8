"""Health checks: libvirtd reachable per node, VMs crashed or paused (and why), VNC listening."""

from __future__ import annotations

from functools import partial

from debvisor_core.context import Context
from debvisor_core.health import CheckResult, HealthCheck

from .nodes import Node, NodeUnreachable, connect, lv, nodes


def pause_verdicts() -> dict[int, tuple[str, str]]:
    """libvirt's VIR_DOMAIN_PAUSED_* reason -> (status, the reason in virsh's words).

    ``crit``: the guest stopped on an error and needs an operator; ``warn``: paused on
    purpose or for a job that should end by itself.
    """
    libvirt = lv()
    return {
        libvirt.VIR_DOMAIN_PAUSED_UNKNOWN: ("warn", "unknown"),
        libvirt.VIR_DOMAIN_PAUSED_USER: ("warn", "user"),
        libvirt.VIR_DOMAIN_PAUSED_MIGRATION: ("warn", "migrating"),
        libvirt.VIR_DOMAIN_PAUSED_SAVE: ("warn", "saving"),
        libvirt.VIR_DOMAIN_PAUSED_DUMP: ("warn", "dumping"),
        libvirt.VIR_DOMAIN_PAUSED_IOERROR: ("crit", "I/O error"),
        libvirt.VIR_DOMAIN_PAUSED_WATCHDOG: ("crit", "watchdog"),
        libvirt.VIR_DOMAIN_PAUSED_FROM_SNAPSHOT: ("warn", "from snapshot"),
        libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN: ("warn", "shutting down"),
        libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT: ("warn", "creating snapshot"),
        libvirt.VIR_DOMAIN_PAUSED_CRASHED: ("crit", "crashed"),
        libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: ("warn", "starting up"),
        libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: ("warn", "post-copy"),
        libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: ("crit", "post-copy failed"),
    }


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
    """crit for crashed VMs and VMs paused on an error, warn for other pauses."""
    libvirt = lv()
    verdicts = pause_verdicts()
    found: dict[str, list[str]] = {"crit": [], "warn": []}
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
                found["crit"].append(f"{dom.name()}@{n.name} crashed")
            elif state == libvirt.VIR_DOMAIN_PAUSED:
                status, words = verdicts.get(reason, ("warn", f"reason {reason}"))
                found[status].append(f"{dom.name()}@{n.name} paused ({words})")
    note = f" ({', '.join(unreachable)} unreachable)" if unreachable else ""
    vms = found["crit"] + found["warn"]
    if found["crit"]:
        return CheckResult.crit(f"{len(found['crit'])} VM(s) in trouble: "
                                f"{', '.join(vms)}{note}", vms=vms)
    if found["warn"]:
        return CheckResult.warn(f"{len(vms)} VM(s) paused: {', '.join(vms)}{note}", vms=vms)
    return CheckResult.ok(f"{total} VMs, none crashed or paused{note}")


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
