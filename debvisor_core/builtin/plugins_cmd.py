"""`debvisor plugins`: what is installed and whether it loads."""

from __future__ import annotations

from typing import Any

import click

from .. import __version__, discovery, hookimpl
from ..actions import Action, Param, attach
from ..context import Context
from ..discovery import BUILTIN_COMMANDS, BUILTIN_HOOKS
from ..output import table


@click.group("plugins")
def plugins() -> None:
    """List installed plugins and their status.

    \b
    Example:
      debvisor plugins list --json
      DEBVISOR_DISABLE_PLUGINS=ceph debvisor plugins list
    """


def _list(ctx: Context, p: dict[str, Any]) -> list[dict[str, Any]]:
    no_load = p["no_load"]
    host = ctx.host
    rows: list[dict[str, Any]] = []
    for name in [*BUILTIN_HOOKS, *sorted(BUILTIN_COMMANDS)]:
        mod = None
        if not no_load:
            if name in BUILTIN_COMMANDS:
                host.load(name)
            mod = host.pm.get_plugin(name)
        hooks = sorted(c.name for c in host.pm.get_hookcallers(mod) or []) if mod else []
        rows.append({"name": name, "distribution": "debvisor-core", "version": __version__,
                     "builtin": True, "hooks": hooks, "status": "loaded" if mod else "builtin"})
    for name, entry in sorted(host.entries().items()):
        blocked = discovery.blocked_reason(name)
        if name in BUILTIN_COMMANDS:
            status = "shadowed by a built-in command"
        elif blocked:
            status = blocked
        elif no_load:
            status = "not loaded"
        else:
            status = "loaded" if host.load(name) is not None else f"failed: {host.failed[name]}"
        rows.append({"name": name, "distribution": entry.dist, "version": entry.version,
                     "builtin": False, "module": entry.module, "hooks": host.hooks_of(name),
                     "status": status})
    return rows


def _render(r: list[dict[str, Any]]) -> None:
    view = [{**x, "hooks": ",".join(h.removeprefix("debvisor_") for h in x["hooks"]) or "-"}
            for x in r]
    print(table(view, [("name", "NAME"), ("distribution", "DISTRIBUTION"),
                       ("version", "VERSION"), ("status", "STATUS"), ("hooks", "HOOKS")]))


ACTIONS = [Action(
    "plugins.list", "Show each plugin: name, distribution, version, hooks implemented, load status",
    query=_list, render=_render, privilege="none",
    params=(Param("no_load", "Do not import plugins (no hooks, no status).", type="bool",
                  default=False),),
    result="a list of {name, distribution, version, builtin, module, hooks, status}",
    examples=("debvisor plugins list", "debvisor plugins list --no-load --json"),
)]
attach(plugins, ACTIONS)


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS


@hookimpl
def debvisor_commands() -> click.Command:
    return plugins
