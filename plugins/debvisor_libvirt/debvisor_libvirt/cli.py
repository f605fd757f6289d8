"""The `hv` click group (alias `hvctl`): the groups, the commands generated from the
declarations in actions.py (when first asked for), and `console`, the one command that
needs a terminal.

Light on purpose (`hv --help` imports only this, click and the declarations): libvirt,
the engine and the node cluster are imported when a command runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from debvisor_core.errors import BadInput

from .actions import ACTIONS, vnc_endpoint

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.actions import Action
    from debvisor_core.context import Context

__all__ = ["hv", "vnc_endpoint"]


class ActionGroup(click.Group):
    """A group whose commands are built when first asked for (the ones generated from
    actions, and `console`): `hv --help` lists them from their summaries without building
    one, so it imports neither the core's command decorators nor the engine."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: name -> (short help for the listing, the function that builds the command)
        self.pending: dict[str, tuple[Callable[[int], str], Callable[[], click.Command]]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.pending})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.pending:
            self.add_command(self.pending[cmd_name][1](), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, with the short help of each command not built yet."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in self.commands:
                cmd = self.commands[name]
                if not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit)))
            else:
                rows.append((name, self.pending[name][0](limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _generate(action: Action, name: str) -> click.Command:
    """The click command of ``action`` (``debvisor_core.actions.command``); an action that
    runs its operation itself (``execute`` with a ``kind``) also gets the operation options
    of that kind (--dry-run, --check, --yes, --force-maintenance and --rollback, which
    undoes the last run on the same positional arguments), as a ``plan`` action does."""
    from debvisor_core.actions import command
    from debvisor_core.commands import operation_options

    cmd = command(action, name)
    if action.execute is not None and action.kind:
        assert cmd.callback is not None
        before = list(getattr(cmd.callback, "__click_params__", []))
        wrapped: Any = operation_options(action.op_kind,
                                         destructive=action.destructive)(cmd.callback)
        added = [p for p in getattr(wrapped, "__click_params__", []) if p not in before]
        cmd.callback = wrapped
        cmd.params = [*cmd.params, *reversed(added)]
    return cmd


def attach_lazily(group: ActionGroup, actions: list[Action]) -> ActionGroup:
    """Like ``debvisor_core.actions.attach`` (sub-groups for the middle words of a path),
    but each command is generated when first asked for."""
    for action in actions:
        words = action.path.split(".")[1:]
        g = group
        for w in words[:-1]:
            sub = g.commands.get(w)
            if not isinstance(sub, ActionGroup):
                sub = ActionGroup(w, help=f"{w} commands.")
                g.add_command(sub)
            g = sub
        g.pending[words[-1]] = (_summary(action), _factory(action, words[-1]))
    return group


def _summary(action: Action) -> Callable[[int], str]:
    text = inspect.cleandoc(action.summary).strip()  # what get_short_help_str gives
    return lambda _limit: text


def _factory(action: Action, name: str) -> Callable[[], click.Command]:
    return lambda: _generate(action, name)


@click.group("hv", cls=ActionGroup)
def hv() -> None:
    """Hypervisor: VMs, snapshots, consoles, VNC, tickets and live migration (libvirt).

    With no [hv.nodes] config it talks to libvirt's built-in test:///default.
    `hvctl ...` is the same as `debvisor hv ...`.

    \b
    Example:
      hvctl list --filter running
      hvctl migrate vm1 node2 --bandwidth 100Mbps
      hvctl snapshot vm1 create
    """


@hv.group("ticket", cls=ActionGroup)
def ticket() -> None:
    """Signed, short-lived, single-use console tickets (HMAC key in an owner-only file).

    Only `--mode admin` tickets exist for now: plain VNC has one password, which grants
    keyboard and mouse, so view-only tickets are refused. Give TOKEN as `-` to read it
    from stdin (it then stays out of the process list and shell history).

    \b
    Example:
      hvctl ticket create vm1 --ttl 300 --mode admin
      hvctl ticket verify - < token.txt
      hvctl ticket use - < token.txt
    """


@hv.group("vnc", cls=ActionGroup)
def vnc() -> None:
    """VNC consoles: probe and repair (ensure), set a VM's VNC target.

    \b
    Example:
      hvctl vnc ensure
      hvctl vnc target vm1 --listen 0.0.0.0 --port auto
    """


@hv.group("iso", cls=ActionGroup)
def iso() -> None:
    """Validated cloud-init NoCloud seed ISOs (label cidata, ISO 9660 + Joliet + Rock Ridge).

    \b
    Example:
      debvisor hv iso build -o seed.iso --user-data user-data.yaml --hostname web1 --instance-id web1
      debvisor hv iso templates
      debvisor hv iso show seed.iso
    """


attach_lazily(hv, ACTIONS)


CONSOLE_HELP = """Attach to VM's serial console like `virsh console`; Ctrl-] detaches.

    A VM with only a graphical console (or with --graphical) gets its VNC endpoint
    printed and how to get a one-time ticket for it.

    Not an action: it needs the terminal (raw mode, Ctrl-] to detach).

    \b
    Example:
      hvctl console vm1            (Ctrl-] to leave)
      hvctl console vm1 --graphical --json
    """


def console_command() -> click.Command:
    """`hv console`: a click command, not an action (it needs the terminal)."""
    from debvisor_core.commands import json_option, pass_ctx

    fn: Any = pass_ctx(console)
    fn = json_option(fn)
    for deco in reversed([
        click.argument("vm"),
        click.option("--force", is_flag=True, help="Take the console over from another session."),
        click.option("--graphical", is_flag=True,
                     help="Print the VNC endpoint instead of attaching."),
        click.option("--linger", default=1.0, show_default=True, type=click.FloatRange(0, 60),
                     help="With stdin not a terminal: seconds of output kept after end of "
                          "input."),
        click.option("--node", help="Node to look on (default: all)."),
    ]):
        fn = deco(fn)
    return click.command("console", help=CONSOLE_HELP, short_help=CONSOLE_SUMMARY)(fn)


CONSOLE_SUMMARY = "Attach to VM's serial console like `virsh console`; Ctrl-] detaches"


def _console_summary(_limit: int) -> str:
    return CONSOLE_SUMMARY


hv.pending["console"] = (_console_summary, console_command)


def console(ctx: Context, vm: str, force: bool, graphical: bool, linger: float,
            node: str | None) -> None:
    """`hv console` (see CONSOLE_HELP): attach, or print the VNC endpoint."""
    from .console import attach as attach_console
    from .console import start_event_loop
    from .domains import devices
    from .nodes import Cluster, check_vm_name, lv

    check_vm_name(vm)
    start_event_loop()  # before the connection is opened
    with Cluster(ctx) as cluster:
        node_name, dom = cluster.find(vm, node_name=node)
        if not dom.isActive():
            raise BadInput(f"{vm} is not running on {node_name}; start it first")
        dev = devices(dom.XMLDesc(lv().VIR_DOMAIN_XML_SECURE))  # shows whether passwd is set
        uri = cluster.nodes[node_name].uri
        if graphical or not dev.serial:
            vnc = [g for g in dev.graphics if g["type"] == "vnc" and g["port"] > 0]
            if not vnc:
                raise BadInput(f"{vm} has neither a serial console nor VNC graphics")
            endpoint = vnc_endpoint(node_name, uri, vnc[0])
            data = {"vm": vm, "node": node_name, "type": "vnc", "endpoint": endpoint,
                    "password_protected": vnc[0]["passwd"],
                    "ticket": f"hvctl ticket create {vm} --ttl 300 --mode admin, then "
                              f"hvctl ticket use -  (the token on stdin)"}
            ctx.emit(data, lambda d: print(
                f"{vm} has a graphical console: VNC at {d['endpoint']}\n"
                f"Get a one-time password: {d['ticket']}\n"
                f"then connect: vncviewer {d['endpoint']}"))
            return
        raise click.exceptions.Exit(attach_console(dom, force=force, linger=linger))
