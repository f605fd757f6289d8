"""`debvisor maintenance`: while enabled, new operations are refused."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from .. import hookimpl
from ..actions import Action, Param, attach
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


def _enable(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    from ..audit import unwritable_reason
    from ..errors import PreflightRefused
    from ..identity import operator
    from ..statefile import write_json

    problem = unwritable_reason(ctx)
    if problem:
        raise PreflightRefused(problem)
    rec = {"enabled": True, "reason": p["reason"], "since": iso_utc(), "by": operator()}
    ctx.audit("enabled", reason=p["reason"])  # audited before it happens
    write_json(_path(ctx), rec)
    return rec


def _disable(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    from ..audit import unwritable_reason
    from ..errors import PreflightRefused

    problem = unwritable_reason(ctx)
    if problem:
        raise PreflightRefused(problem)
    was = current(ctx)
    ctx.audit("disabled", previous=was)  # audited before it happens
    _path(ctx).unlink(missing_ok=True)
    return {"enabled": False, "was_enabled": bool(was)}


def _status(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    return current(ctx) or {"enabled": False}


ACTIONS = [
    Action("maintenance.enable", "Turn maintenance mode on", execute=_enable,
           description="While it is on, every new operation is refused at preflight unless it "
                       "is run with --force-maintenance. Audited.",
           params=(Param("reason", "Why (shown to anyone whose operation is refused).",
                         default=""),),
           render=lambda r: print(f"maintenance mode enabled{': ' + r['reason'] if r['reason'] else ''}"),
           result="{enabled, reason, since, by}",
           examples=('debvisor maintenance enable --reason "Ceph upgrade"',)),
    Action("maintenance.disable", "Turn maintenance mode off", execute=_disable,
           render=lambda r: print("maintenance mode disabled" if r["was_enabled"]
                                  else "maintenance mode was not on"),
           result="{enabled: false, was_enabled}",
           examples=("debvisor maintenance disable",)),
    Action("maintenance.status", "Show whether maintenance mode is on, since when, by whom and why",
           query=_status, privilege="none",
           render=lambda rec: print(f"maintenance mode ON since {rec['since']} by {rec['by']}: "
                                    f"{rec['reason']}" if rec.get("enabled") else "maintenance mode off"),
           result="{enabled, reason, since, by} (or {enabled: false})",
           examples=("debvisor maintenance status --json",)),
]


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


attach(maintenance, ACTIONS)


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS


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
