"""Entry point of the `ceph` plugin: hook implementations only (rados is imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from debvisor_core import hookimpl

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import click

    from debvisor_core.actions import Action
    from debvisor_core.bundle import DiagnosticsBundle
    from debvisor_core.context import Context
    from debvisor_core.engine import Finding, Operation, Step
    from debvisor_core.health import HealthCheck
    from debvisor_core.lab import LabService
    from debvisor_core.model import Phase


@hookimpl
def debvisor_commands() -> click.Command:
    from .cli import ceph

    return ceph


@hookimpl
def debvisor_actions() -> list[Action]:
    """Every `ceph` command, declared as data (the CLI is generated from them)."""
    from .actions import ACTIONS

    return ACTIONS


@hookimpl
def debvisor_step_types() -> list[type[Step]]:
    from . import join, steps

    return [steps.OsdFlag, steps.UpgradeNoout, steps.UpgradeNooutRelease, steps.PgUpmap,
            steps.OsdReweight, steps.PoolPgNum, steps.OkToStopGate, join.CreateOsd,
            join.PlaceOsd, join.StartOsd, join.VerifyOsdUp]


@hookimpl
def debvisor_audit(ctx: Context, event: dict[str, Any]) -> None:
    """With ``[ceph] audit_anchor = true``: the audit head (seq, hash) in RADOS omap, which
    only moves forward (an anchor outside this node's disk)."""
    from .auditanchor import anchor

    anchor(ctx, event)


@hookimpl
def debvisor_lab_services() -> list[LabService]:
    from .lab import services

    return services()


@hookimpl
def debvisor_health(ctx: Context) -> list[HealthCheck]:
    from .health import checks

    return checks(ctx)


@hookimpl
def debvisor_upgrade_checks(ctx: Context) -> list[HealthCheck]:
    from .health import upgrade_checks

    return upgrade_checks()


# Operation kinds that get noout around them (see README "Contract for upgrades").
UPGRADE_KINDS = ("cluster.upgrade", "node.upgrade")


@hookimpl
def debvisor_steps(ctx: Context, op: Operation) -> list[Step] | None:
    """Contribute `noout` set (ORDER 10) / unset (ORDER 90) to cluster upgrade operations, when
    this node has a Ceph config and the operation does not pass ``params["ceph_noout"] = False``.
    A ``node.join`` (mode ceph or all): the OSDs of ``[ceph.join]`` (devices, class, weight,
    initial_weight, host), planned as `ceph join` plans them."""
    if op.kind == "node.join":
        if op.params.get("mode") not in ("ceph", "all"):
            return None
        from .actions import contributed_join

        return contributed_join(ctx)
    if op.kind == "node.maintenance":
        if not op.params.get("drain") or op.params.get("ceph_noout") is False:
            return None
        from .steps import maintenance_noout

        return maintenance_noout(ctx, str(op.params.get("reason") or "maintenance"))
    if op.kind not in UPGRADE_KINDS or op.params.get("ceph_noout") is False:
        return None
    from .client import Settings

    if not Settings.from_ctx(ctx).configured():
        return None
    from .steps import UpgradeNoout, UpgradeNooutRelease

    reason = f"debvisor {op.kind}: {op.title}"
    return [UpgradeNoout("noout", True, reason), UpgradeNooutRelease(reason)]


@hookimpl
def debvisor_phase_steps(ctx: Context, op: Operation, phase: Phase) -> list[Step] | None:
    """A rolling upgrade's batch starts only when the mgr says its nodes' OSDs are ok to
    stop (on a node with a Ceph config; ``params["ceph_ok_to_stop"] = False`` skips it)."""
    if op.kind != "cluster.upgrade" or not phase.nodes or op.params.get("ceph_ok_to_stop") is False:
        return None
    from .client import Settings

    if not Settings.from_ctx(ctx).configured():
        return None
    from .steps import ok_to_stop_gates

    return ok_to_stop_gates(ctx, phase.nodes)


@hookimpl
def debvisor_preflight(ctx: Context, op: Operation) -> list[Finding] | None:
    """Before `ceph.join` (and a `node.join` with a ceph phase): keyring present, mons
    reachable, cluster not in HEALTH_ERR."""
    if op.kind != "ceph.join" and not (op.kind == "node.join"
                                       and any(ph.name == "ceph" for ph in op.phases)):
        return None
    from pathlib import Path

    from debvisor_core.engine import Finding

    from .client import Settings, session

    s = Settings.from_ctx(ctx)
    if not Path(s.keyring).is_file():
        return [Finding("error", f"Ceph keyring {s.keyring} is missing", "ceph")]
    try:
        with session(ctx) as c:
            status = c.mon("health").get("status")
    except Exception as exc:  # noqa: BLE001 - reported as a finding
        return [Finding("error", f"Ceph mons are not reachable: {getattr(exc, 'message', exc)}", "ceph")]
    if status == "HEALTH_ERR":
        return [Finding("error", "Ceph is HEALTH_ERR (see `debvisor ceph alerts`)", "ceph",
                        override="force_maintenance")]
    if status != "HEALTH_OK":
        return [Finding("warn", f"Ceph is {status}", "ceph")]
    return []


@hookimpl
def debvisor_diagnostics(ctx: Context, bundle: DiagnosticsBundle) -> None:
    import json

    from .client import Settings, session

    if not Settings.from_ctx(ctx).configured():
        return
    try:
        with session(ctx) as c:
            bundle.add_text("ceph/report.json", json.dumps(c.mon("report"), indent=1))
            bundle.add_text("ceph/health-detail.json", json.dumps(c.mon("health", detail="detail"), indent=1))
    except Exception as exc:  # noqa: BLE001 - diagnostics never fail the bundle
        bundle.add_text("ceph/error.txt", f"{getattr(exc, 'message', exc)}\n")


@hookimpl
def debvisor_cluster_lock(ctx: Context, op: Operation,
                          names: list[str]) -> AbstractContextManager[Any] | None:
    """With `[ceph] cluster_lock = true`: an exclusive RADOS lock (with a lease) per lock name,
    held around the operation's steps (see clusterlock.py and the README)."""
    from .clusterlock import cluster_lock

    return cluster_lock(ctx, op, names)


@hookimpl
def debvisor_cluster_lock_admin(ctx: Context) -> Any:
    """`debvisor cluster lock status|break` for the RADOS locks (when they are on)."""
    from .clusterlock import lock_admin

    return lock_admin(ctx)


@hookimpl
def debvisor_cluster_maintenance(ctx: Context) -> Any:
    """With `[ceph] cluster_state = true`: maintenance is cluster-wide state in RADOS omap."""
    from .auditanchor import maintenance_store

    return maintenance_store(ctx)
