"""`debvisor lab`: real local services for trying DebVisor out and for its tests."""

from __future__ import annotations

from typing import Any

import click

from .. import hookimpl
from ..commands import json_option, pass_ctx
from ..context import Context
from ..lab import manager


@click.group("lab")
def lab() -> None:
    """Start, stop and inspect the lab: real services that plugins contribute
    (libvirtd nodes in network namespaces, a Ceph cluster, BIND9 servers…).

    The lab lives in $DEBVISOR_LAB_DIR (default STATE_DIR/lab) and writes a config
    there that points the CLI at its services.

    \b
    Example:
      debvisor lab up
      eval "$(debvisor lab env)"; debvisor health
      debvisor lab down
    """


@lab.command("up")
@click.argument("services", nargs=-1)
@json_option
@pass_ctx
def up(ctx: Context, services: tuple[str, ...]) -> None:
    """Start every lab service (or the named ones); already running ones are kept.

    \b
    Example:
      debvisor lab up            # everything the installed plugins contribute
      debvisor lab up dns        # only this service (see `debvisor lab status`)
    """
    rep = manager.up(ctx, services)

    def human(r: dict[str, Any]) -> None:
        for name, s in r["services"].items():
            print(f"{name}: {s['status']}" + (f" ({s['reason']})" if s.get("reason") else ""))
        print(f"config: {r['config']}\nuse it: eval \"$(debvisor lab env)\"")

    ctx.emit(rep, human)


@lab.command("down")
@click.argument("services", nargs=-1)
@json_option
@pass_ctx
def down(ctx: Context, services: tuple[str, ...]) -> None:
    """Stop every lab service (or the named ones), leaving no process behind.

    \b
    Example:
      debvisor lab down
    """
    rep = manager.down(ctx, services)
    ctx.emit(rep, lambda r: print("\n".join(f"{k}: {v}" for k, v in r["services"].items())
                                  or "nothing was running"))


@lab.command("status")
@json_option
@pass_ctx
def status(ctx: Context) -> None:
    """Show each lab service and whether it runs.

    \b
    Example:
      debvisor lab status --json
    """
    rep = manager.status(ctx)

    def human(r: dict[str, Any]) -> None:
        for name, s in r["services"].items():
            state = "running" if s.get("running") else s.get("unavailable") or "stopped"
            print(f"{name}: {state}")
        if not r["services"]:
            print("no lab services are installed")

    ctx.emit(rep, human)


@lab.command("env")
@json_option
@pass_ctx
def env(ctx: Context) -> None:
    """Print shell exports that point the CLI at the lab.

    \b
    Example:
      eval "$(debvisor lab env)"
    """
    import shlex

    path = str(manager.config_file(ctx))
    ctx.emit({"DEBVISOR_CONFIG": path}, f"export DEBVISOR_CONFIG={shlex.quote(path)}")


@hookimpl
def debvisor_commands() -> click.Command:
    return lab
