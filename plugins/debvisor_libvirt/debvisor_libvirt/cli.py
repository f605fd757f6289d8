"""The `hv` click group (alias `hvctl`): the groups, the commands generated from the
declarations in actions.py (when first asked for), and `console`, the one command that
needs a terminal.

Light on purpose (`hv --help` imports only this, click and the declarations): libvirt,
the engine and the node cluster are imported when a command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from debvisor_core.actions import attach
from debvisor_core.errors import BadInput
from debvisor_core.lazygroup import LazyGroup

from .actions import ACTIONS, vnc_endpoint

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context

__all__ = ["hv", "vnc_endpoint"]


@click.group("hv", cls=LazyGroup)
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


@hv.group("ticket", cls=LazyGroup)
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


@hv.group("vnc", cls=LazyGroup)
def vnc() -> None:
    """VNC consoles: probe and repair (ensure), set a VM's VNC target.

    \b
    Example:
      hvctl vnc ensure
      hvctl vnc target vm1 --listen 0.0.0.0 --port auto
    """


@hv.group("iso", cls=LazyGroup)
def iso() -> None:
    """Validated cloud-init NoCloud seed ISOs (label cidata, ISO 9660 + Joliet + Rock Ridge).

    \b
    Example:
      debvisor hv iso build -o seed.iso --user-data user-data.yaml --hostname web1 --instance-id web1
      debvisor hv iso templates
      debvisor hv iso show seed.iso
    """


@hv.group("hook", cls=LazyGroup)
def hook() -> None:
    """libvirt's QEMU hook: audit VM starts, stops and migrations; hold maintenance.

    The hook runs `hv hook-event` on every VM lifecycle event and refuses a VM start or
    an incoming migration while this node is in maintenance, even one asked of plain
    virsh. Restart libvirtd after the first install (it looks for hooks when it starts).

    \b
    Example:
      hvctl hook install --dry-run
      hvctl hook install
      hvctl hook install --rollback --yes
    """


attach(hv, ACTIONS)


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


hv.pending["console"] = (CONSOLE_SUMMARY, console_command)


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
