"""A plugin with a hanging, a warning and a raising health check, plus a diagnostics
contribution. `DV_SLOW_MODE` picks which checks exist: "all" (default) or "warn"."""

from __future__ import annotations

import os
import time

import click

from debvisor_core import hookimpl
from debvisor_core.health import CheckResult, HealthCheck


def _hang(ctx: object) -> CheckResult:
    time.sleep(30)
    return CheckResult.ok("never")


def _warn(ctx: object) -> CheckResult:
    return CheckResult.warn("something to look at", level=1)


def _raise(ctx: object) -> CheckResult:
    raise RuntimeError("check exploded")


@hookimpl
def debvisor_health(ctx: object) -> list[HealthCheck]:
    checks = [HealthCheck("slow.warn", _warn, timeout=5)]
    if os.environ.get("DV_SLOW_MODE", "all") == "all":
        checks += [HealthCheck("slow.hang", _hang, timeout=0.5),
                   HealthCheck("slow.raise", _raise, timeout=5)]
    return checks


@hookimpl
def debvisor_diagnostics(ctx: object, bundle: object) -> None:
    bundle.add_text("slow/note.txt", "contributed by the slow plugin\n")  # type: ignore[attr-defined]
    bundle.add_command("slow-uname", ["uname", "-a"])  # type: ignore[attr-defined]


@click.group("slow")
def slow() -> None:
    """Test plugin.

    \b
    Example:
      debvisor slow ping
    """


@slow.command("ping")
def ping() -> None:
    """Print pong.

    \b
    Example:
      debvisor slow ping
    """
    click.echo("pong")


@hookimpl
def debvisor_commands() -> click.Command:
    return slow
