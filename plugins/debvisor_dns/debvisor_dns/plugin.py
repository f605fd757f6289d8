"""DebVisor DNS plugin: the hooks. Light on purpose: dnspython is imported only when used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from debvisor_core import hookimpl, log

if TYPE_CHECKING:  # pragma: no cover
    import click

    from debvisor_core.actions import Action
    from debvisor_core.context import Context
    from debvisor_core.engine import Step
    from debvisor_core.health import CheckResult, HealthCheck
    from debvisor_core.lab import LabService


@hookimpl
def debvisor_commands() -> click.Command:
    from .cli import dns_group

    return dns_group


@hookimpl
def debvisor_actions() -> list[Action]:
    """update, delete, show and check, declared as data (the CLI is generated from them)."""
    from .actions import ACTIONS

    return ACTIONS


@hookimpl
def debvisor_step_types() -> list[type[Step]]:
    from . import steps

    return [steps.UpdateRRsets, steps.AwaitPropagation, steps.WaitOutTtl, steps.VmRecord,
            steps.VmPropagation]


def _zones_health(ctx: Context) -> CheckResult:
    from debvisor_core.health import CheckResult

    from . import checks
    from .config import parse

    cfg = parse(ctx.section("dns"), ctx.config.path)
    if not cfg.zones:
        return CheckResult.ok("no DNS zones configured")
    results = [checks.check_zone(cfg, z, settle=1.0) for z in cfg.zones.values()]
    worst = max((r["status"] for r in results), key=checks.LEVELS.__getitem__)
    problems = [f"{r['zone']}: {p['message']}" for r in results for p in r["problems"]]
    summary = "; ".join(problems[:3]) if problems else (
        f"{len(results)} zone(s): servers answer, serials agree, TSIG works, DNSSEC valid")
    return CheckResult(worst, summary, {"zones": results})


@hookimpl
def debvisor_health(ctx: Context) -> list[HealthCheck]:
    from debvisor_core.health import HealthCheck

    return [HealthCheck("dns.zones", _zones_health, timeout=20)]


@hookimpl
def debvisor_lab_services() -> list[LabService]:
    from .lab import services

    return services()


def _vm_steps(ctx: Context, vm: dict[str, Any], delete: bool) -> list[Step]:
    from .config import parse

    cfg = parse(ctx.section("dns"), ctx.config.path)
    if not cfg.vm_zone:
        log.debug("dns: [dns] vm_zone is not set; no VM record")
        return []
    from .plan import vm_steps

    return vm_steps(cfg, vm, delete=delete)


@hookimpl
def debvisor_steps(ctx: Context, op: Any) -> list[Step] | None:
    """`debvisor join --mode dns|all`: this node's record, from [dns.join]."""
    if op.kind != "node.join" or op.params.get("mode") not in ("dns", "all"):
        return None
    table = ctx.section("dns").get("join")
    if table is None:
        return None
    import socket

    from .config import parse
    from .plan import join_steps

    return join_steps(parse(ctx.section("dns"), ctx.config.path), table, socket.gethostname())


@hookimpl
def debvisor_vm_registered(ctx: Context, vm: dict[str, Any]) -> list[Step]:
    """Add the VM's A/AAAA (and PTR) record in [dns] vm_zone."""
    return _vm_steps(ctx, vm, delete=False)


@hookimpl
def debvisor_vm_unregistered(ctx: Context, vm: dict[str, Any]) -> list[Step]:
    """Delete the VM's A/AAAA (and PTR) records."""
    return _vm_steps(ctx, vm, delete=True)
