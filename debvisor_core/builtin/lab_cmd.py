"""`debvisor lab`: real local services for trying DebVisor out and for its tests."""

from __future__ import annotations

import shlex
from typing import Any

import click

from .. import hookimpl
from ..actions import Action, Param, attach
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


def _render_up(r: dict[str, Any]) -> None:
    for name, s in r["services"].items():
        print(f"{name}: {s['status']}" + (f" ({s['reason']})" if s.get("reason") else ""))
    print(f"config: {r['config']}\nuse it: eval \"$(debvisor lab env)\"")


def _render_status(r: dict[str, Any]) -> None:
    for name, s in r["services"].items():
        state = "running" if s.get("running") else s.get("unavailable") or "stopped"
        print(f"{name}: {state}")
    if not r["services"]:
        print("no lab services are installed")


def _env(ctx: Context, p: dict[str, Any]) -> dict[str, str]:
    """DEBVISOR_CONFIG, then the variables the running services put in ``[lab.env]`` of
    the lab config (the panel's URL and its lab login, for instance)."""
    import tomllib

    out = {"DEBVISOR_CONFIG": str(manager.config_file(ctx))}
    try:
        conf = tomllib.loads(manager.config_file(ctx).read_text())
    except (OSError, ValueError):
        return out
    extra = (conf.get("lab") or {}).get("env") or {}
    if isinstance(extra, dict):
        out.update({str(k): str(v) for k, v in sorted(extra.items())
                    if str(k).isidentifier() and k != "DEBVISOR_CONFIG"})
    return out


def _render_env(d: dict[str, str]) -> None:
    for k, v in d.items():
        print(f"export {k}={shlex.quote(v)}")


_SERVICES = Param("services", "Lab services to act on (default: every one; see `debvisor lab "
                  "status`).", type="list", positional=True, default=None)

ACTIONS = [
    Action("lab.up", "Start every lab service (or the named ones); already running ones are kept",
           execute=lambda ctx, p: manager.up(ctx, tuple(p["services"] or ())), render=_render_up,
           params=(_SERVICES,), result="{services: {NAME: {status, reason}}, config}",
           examples=("debvisor lab up            # everything the installed plugins contribute",
                     "debvisor lab up dns        # only this service")),
    Action("lab.down", "Stop every lab service (or the named ones), leaving no process behind",
           execute=lambda ctx, p: manager.down(ctx, tuple(p["services"] or ())),
           render=lambda r: print("\n".join(f"{k}: {v}" for k, v in r["services"].items())
                                  or "nothing was running"),
           params=(_SERVICES,), result="{services: {NAME: status}}",
           examples=("debvisor lab down",)),
    Action("lab.status", "Show each lab service and whether it runs", privilege="none",
           query=lambda ctx, p: manager.status(ctx), render=_render_status,
           result="{services: {NAME: {running, pid, unavailable}}}",
           examples=("debvisor lab status --json",)),
    Action("lab.env", "Print shell exports that point the CLI at the lab", privilege="none",
           query=_env, render=_render_env,
           result="{DEBVISOR_CONFIG: path, NAME: value...}",
           examples=('eval "$(debvisor lab env)"',)),
]
attach(lab, ACTIONS)


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS


@hookimpl
def debvisor_commands() -> click.Command:
    return lab
