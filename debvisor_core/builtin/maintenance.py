"""`debvisor maintenance`: while enabled, new operations are refused."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from .. import hookimpl
from ..commands import json_option, pass_ctx
from ..context import Context
from ..engine import Finding
from ..health import CheckResult, HealthCheck
from ..timefmt import iso_utc

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import Operation


def _path(ctx: Context) -> Any:
    return ctx.state_dir / "maintenance.json"


def current(ctx: Context) -> dict[str, Any] | None:
    """The maintenance record if maintenance mode is on."""
    try:
        return json.loads(_path(ctx).read_text())
    except (OSError, ValueError):
        return None


@click.group("maintenance")
def maintenance() -> None:
    """Enable, disable or show maintenance mode.

    While it is on, every new operation is refused at preflight unless it is run
    with --force-maintenance. Changes are audited.

    \b
    Example:
      debvisor maintenance enable --reason "kernel upgrade node3"
      debvisor maintenance status
      debvisor maintenance disable
    """


@maintenance.command("enable")
@click.option("--reason", default="", help="Why (shown to anyone whose operation is refused).")
@json_option
@pass_ctx
def enable(ctx: Context, reason: str) -> None:
    """Turn maintenance mode on.

    \b
    Example:
      debvisor maintenance enable --reason "Ceph upgrade"
    """
    from ..audit import unwritable_reason
    from ..errors import PreflightRefused

    problem = unwritable_reason(ctx)
    if problem:
        raise PreflightRefused(problem)
    from ..identity import operator

    rec = {"enabled": True, "reason": reason, "since": iso_utc(),
           "by": operator()}
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = _path(ctx).with_suffix(".tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, _path(ctx))
    ctx.audit("enabled", reason=reason)
    ctx.emit(rec, f"maintenance mode enabled{': ' + reason if reason else ''}")


@maintenance.command("disable")
@json_option
@pass_ctx
def disable(ctx: Context) -> None:
    """Turn maintenance mode off.

    \b
    Example:
      debvisor maintenance disable
    """
    from ..audit import unwritable_reason
    from ..errors import PreflightRefused

    problem = unwritable_reason(ctx)
    if problem:
        raise PreflightRefused(problem)
    was = current(ctx)
    _path(ctx).unlink(missing_ok=True)
    ctx.audit("disabled", previous=was)
    ctx.emit({"enabled": False}, "maintenance mode disabled" if was else "maintenance mode was not on")


@maintenance.command("status")
@json_option
@pass_ctx
def status(ctx: Context) -> None:
    """Show whether maintenance mode is on, since when, by whom and why.

    \b
    Example:
      debvisor maintenance status --json
    """
    rec = current(ctx) or {"enabled": False}
    ctx.emit(rec, (f"maintenance mode ON since {rec['since']} by {rec['by']}: {rec['reason']}"
                   if rec.get("enabled") else "maintenance mode off"))


@hookimpl
def debvisor_preflight(ctx: Context, op: Operation) -> list[Finding]:
    rec = current(ctx)
    if not rec:
        return []
    why = f": {rec['reason']}" if rec.get("reason") else ""
    return [Finding("error", f"maintenance mode is on since {rec['since']} (by {rec['by']}){why}",
                    "maintenance", override="force_maintenance")]


@hookimpl
def debvisor_health(ctx: Context) -> list[HealthCheck]:
    def check(c: Context) -> CheckResult:
        rec = current(c)
        if rec:
            return CheckResult.warn(f"maintenance mode on since {rec['since']}: {rec['reason']}")
        return CheckResult.ok("maintenance mode off")

    return [HealthCheck("core.maintenance", check, timeout=5)]


@hookimpl
def debvisor_commands() -> click.Command:
    return maintenance
