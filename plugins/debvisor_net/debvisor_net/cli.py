"""`debvisor net …` (alias `debvisor-netcfg`): the group, the commands generated from
actions.py, and `interactive` (the terminal UI). Light on purpose: pyroute2 and textual are
imported only by the commands that use them."""

from __future__ import annotations

from pathlib import Path

import click

from debvisor_core.actions import attach
from debvisor_core.lazygroup import LazyGroup

from .actions import ACTIONS


@click.group("net", cls=LazyGroup)
def net() -> None:
    """Node networking: show, diff, apply behind probes and a confirmation, roll back.

    The desired state is a netplan v2-like YAML file (ethernets, bonds, bridges, vlans,
    addresses, routes, nameservers, MTU). An apply keeps a change only when the probes pass
    and it is confirmed; a detached watchdog restores the prior state otherwise, even if the
    applying process dies. `debvisor-netcfg ...` is the same as `debvisor net ...`.

    \b
    Example:
      debvisor net show
      debvisor net diff /etc/debvisor/net.yaml
      debvisor net apply /etc/debvisor/net.yaml --probe dns --confirm-timeout 120
      debvisor net confirm
      debvisor net rollback
      debvisor-netcfg interactive /etc/debvisor/net.yaml
    """


attach(net, ACTIONS)

INTERACTIVE_HELP = """Edit the desired state in a terminal UI, see the diff, apply it.

Keys: a add, d delete, ctrl+s save, v diff, ctrl+a save and apply (the apply runs here,
with its probes and confirmation countdown), q quit.

\b
Example:
  debvisor-netcfg interactive /etc/debvisor/net.yaml
"""


@net.command("interactive", help=INTERACTIVE_HELP,
             short_help="Edit the desired state in a terminal UI and apply it")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path),
                default=Path("/etc/debvisor/net.yaml"))
def interactive(file: Path) -> None:
    from debvisor_core.actions import exit_with, find, run
    from debvisor_core.commands import get_ctx

    from .editor import callbacks
    from .tui import run as run_tui

    ctx = get_ctx()
    diff, validate = callbacks(ctx, file)
    if run_tui(file, diff=diff, validate=validate) == "apply":
        action = find(ctx, "net.apply")
        exit_with(run(ctx, action, action.validate({"file": str(file)})))
