"""Entry point of the `hv` plugin: hook implementations only (libvirt is imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from debvisor_core import hookimpl

if TYPE_CHECKING:
    import click

    from debvisor_core.actions import Action
    from debvisor_core.bundle import DiagnosticsBundle
    from debvisor_core.context import Context
    from debvisor_core.engine import Finding, Operation, Step
    from debvisor_core.health import HealthCheck
    from debvisor_core.lab import LabService


@hookimpl
def debvisor_commands() -> click.Command:
    from .cli import hv

    return hv


@hookimpl
def debvisor_actions() -> list[Action]:
    """Every `hv` command but `console`, declared as data (the CLI is generated from them)."""
    from .actions import ACTIONS

    return ACTIONS


@hookimpl
def debvisor_step_types() -> list[type[Step]]:
    from . import evacuate, hook, migrate, registry, snapshots, vnc

    return [registry.WriteInventory, registry.SetAutostart, migrate.MigrateVM, hook.InstallHook,
            evacuate.EvacuateVM, evacuate.VerifyNoVMs,
            migrate.PrecreateDisks, snapshots.CreateSnapshot, snapshots.RevertSnapshot,
            snapshots.DeleteSnapshot, vnc.SetVncTarget, vnc.OpenVncPort]


@hookimpl
def debvisor_steps(ctx: Context, op: Operation) -> list[Step] | None:
    """`debvisor maintenance enable --drain`: migrate this node's VMs away first
    (``[hv] node``, ``[hv] evacuate_to``), and check that the node is empty at the end.
    `debvisor join --mode hv|all` with a ``[hv.join]`` table: install the QEMU hook, so
    maintenance holds against plain virsh from the start (nothing when it is up to date)."""
    if op.kind == "node.join":
        if op.params.get("mode") not in ("hv", "all") or ctx.section("hv").get("join") is None:
            return None
        from .hook import install_step, up_to_date

        step = install_step(ctx)
        return [] if up_to_date(step) else [step]
    if op.kind != "node.maintenance" or not op.params.get("drain") \
            or op.params.get("hv_evacuate") is False:
        return None
    from .evacuate import contributed

    return contributed(ctx, op)


@hookimpl
def debvisor_health(ctx: Context) -> list[HealthCheck]:
    from .health import checks

    return checks(ctx)


@hookimpl
def debvisor_preflight(ctx: Context, op: Operation) -> list[Finding] | None:
    if op.kind != "hv.migrate":
        return None
    from .migrate import preflight

    return preflight(ctx, op)


@hookimpl
def debvisor_lab_services() -> list[LabService]:
    from .lab import services

    return services()


@hookimpl
def debvisor_diagnostics(ctx: Context, bundle: DiagnosticsBundle) -> None:
    from .nodes import nodes

    for n in nodes(ctx).values():
        bundle.add_command(f"hv-virsh-list-{n.name}", ["virsh", "-c", n.uri, "list", "--all"])
        bundle.add_command(f"hv-virsh-nodeinfo-{n.name}", ["virsh", "-c", n.uri, "nodeinfo"])
