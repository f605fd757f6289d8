"""The `hv` click group (alias `hvctl`). Each command delegates to a small module."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from debvisor_core.commands import json_option, operation_options, pass_ctx
from debvisor_core.context import Context
from debvisor_core.engine import Operation, Step, execute
from debvisor_core.errors import BadInput
from debvisor_core.identity import operator

from .nodes import Cluster, check_vm_name

# Subcommands owned by other modules, imported only when typed (or listed for --help).
LAZY = {
    "iso": "debvisor_libvirt.media.commands:iso",
    "convert": "debvisor_libvirt.media.commands:convert",
}


class HvGroup(click.Group):
    """`hv` with lazily imported subcommands (the media commands pull in pycdlib)."""

    def _lazy_available(self, name: str) -> bool:
        mod = LAZY[name].partition(":")[0]
        try:
            return importlib.util.find_spec(mod) is not None
        except ImportError:
            return False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx),
                       *(n for n in LAZY if self._lazy_available(n))])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY and cmd_name not in self.commands:
            if not self._lazy_available(cmd_name):
                return None
            mod, _, attr = LAZY[cmd_name].partition(":")
            cmd: click.Command = getattr(importlib.import_module(mod), attr)
            cmd.name = cmd_name
            return cmd
        return super().get_command(ctx, cmd_name)


@click.group("hv", cls=HvGroup)
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


def _fmt_uptime(s: Any) -> str:
    from debvisor_core.output import human_duration

    return "-" if s is None else human_duration(s)


@hv.command("list")
@click.option("--filter", "state_filter", default="all", show_default=True,
              type=click.Choice(["running", "stopped", "paused", "all"]),
              help="Only VMs in this state.")
@click.option("--node", help="Only this node.")
@json_option
@pass_ctx
def list_cmd(ctx: Context, state_filter: str, node: str | None) -> None:
    """List the VMs of every configured node (queried concurrently).

    Columns: name, node, state, vCPUs, memory, uptime, registered in DebVisor's
    inventory. Unreachable nodes are reported and make the exit code 1.

    \b
    Example:
      hvctl list
      hvctl list --filter running --node node2 --json
    """
    from debvisor_core import log
    from debvisor_core.output import table

    from .listing import list_vms

    data = list_vms(ctx, state_filter=state_filter, node=node)

    def human(d: dict[str, Any]) -> None:
        rows = [{**r, "memory": f"{r['memory_mib']} MiB", "uptime": _fmt_uptime(r["uptime_s"]),
                 "registered": "yes" if r["registered"] else "no"} for r in d["vms"]]
        if rows:
            print(table(rows, [("name", "NAME"), ("node", "NODE"), ("state", "STATE"),
                               ("vcpus", "VCPUS"), ("memory", "MEMORY"), ("uptime", "UPTIME"),
                               ("registered", "REGISTERED")]))
        else:
            print("no VMs" + ("" if state_filter == "all" else f" {state_filter}"))

    ctx.emit(data, human)
    for n, err in data["unreachable"].items():
        log.error(err if n in err else f"node {n}: {err}")
    if data["unreachable"]:
        raise click.exceptions.Exit(1)


@hv.command("resources")
@click.argument("vm")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.1, 300),
              help="Seconds between the two samples the rates come from.")
@click.option("--node", help="Node to look on (default: all).")
@json_option
@pass_ctx
def resources_cmd(ctx: Context, vm: str, interval: float, node: str | None) -> None:
    """Show a VM's vCPUs, memory and balloon, CPU %, disk and network I/O rates.

    \b
    Example:
      hvctl resources vm1
      hvctl resources vm1 --interval 5 --json
    """
    from .resources import render, sample

    with Cluster(ctx) as cluster:
        node_name, dom = cluster.find(vm, node_name=node)
        ctx.emit(sample(dom, node_name, interval), render)


@hv.command("snapshot")
@click.argument("vm")
@click.argument("action", type=click.Choice(["create", "list", "revert", "delete"]))
@click.argument("name", required=False)
@click.option("--node", help="Node to look on (default: all).")
@json_option
@operation_options("hv.snapshot", destructive=False)
@pass_ctx
def snapshot_cmd(ctx: Context, vm: str, action: str, name: str | None, node: str | None) -> None:
    """Create, list, revert to or delete a VM's snapshots.

    `create` without NAME picks dv-YYYYmmdd-HHMMSS-XXXX (XXXX random); `--rollback` after
    a create deletes that snapshot, and a failed create never deletes a snapshot it did
    not create. Rolling back a `delete` cannot bring the snapshot back and ends
    rollback-incomplete (exit 5). `revert` first takes a safety snapshot (safety-…) so the revert can be
    rolled back. `delete` is irreversible and needs --yes when not interactive.

    \b
    Example:
      hvctl snapshot vm1 create
      hvctl snapshot vm1 create before-upgrade
      hvctl snapshot vm1 list --json
      hvctl snapshot vm1 revert before-upgrade --yes
      hvctl snapshot vm1 delete before-upgrade --yes
      hvctl snapshot vm1 create --rollback --yes
    """
    from debvisor_core.output import table

    from . import snapshots as sn

    if name is not None:
        sn.check_snapshot_name(name)
    with Cluster(ctx) as cluster:
        node_name, dom = cluster.find(vm, node_name=node)
        if action == "list":
            rows = sn.list_snapshots(dom)
            ctx.emit({"vm": vm, "node": node_name, "snapshots": rows},
                     lambda d: print(table([{**r, "current": "*" if r["current"] else ""}
                                            for r in d["snapshots"]],
                                           [("current", ""), ("name", "NAME"),
                                            ("created", "CREATED"), ("state", "STATE")])
                                     if d["snapshots"] else f"{vm} has no snapshots"))
            return
        if action in ("revert", "delete") and not name:
            raise BadInput(f"`snapshot {vm} {action}` needs the snapshot NAME")
        if action in ("revert", "delete") and name not in {s["name"] for s in sn.list_snapshots(dom)}:
            raise BadInput(f"VM {vm} has no snapshot named {name!r} (see `hvctl snapshot {vm} list`)")
    steps: list[Any]
    if action == "create":
        name = name or sn.default_name()
        steps = [sn.CreateSnapshot(node_name, vm, name)]
        title = f"create snapshot {name} of {vm}"
    elif action == "revert":
        assert name is not None
        safety = sn.default_name("safety")
        steps = [sn.CreateSnapshot(node_name, vm, safety, f"safety snapshot before reverting to {name}"),
                 sn.RevertSnapshot(node_name, vm, name, safety)]
        title = f"revert {vm} to snapshot {name} (safety snapshot {safety})"
    else:
        assert name is not None
        steps = [sn.DeleteSnapshot(node_name, vm, name)]
        title = f"delete snapshot {name} of {vm}"
    op = Operation(kind="hv.snapshot", title=title, steps=steps,
                   params={"vm": vm, "node": node_name, "action": action, "name": name},
                   destructive=action == "delete", locks=[f"hv.vm.{vm}"])
    execute(ctx, op, human=lambda res: print(f"{title}: done"))


def _vm_arg(vm: str) -> str:
    return check_vm_name(vm)


@hv.command("migrate")
@click.argument("vm")
@click.argument("target")
@click.option("--bandwidth", help="Cap the migration stream, e.g. 100Mbps, 1Gbps, 50MiB/s.")
@click.option("--max-downtime", default="300ms", show_default=True,
              help="Longest acceptable pause at switch-over (e.g. 300ms).")
@click.option("--timeout", "timeout_", default="10m", show_default=True,
              help="Abort (VM keeps running on the source) after this long, e.g. 90s or 10m.")
@click.option("--copy-storage", is_flag=True, help="Copy disks the target cannot see.")
@click.option("--tls/--no-tls", default=None,
              help="Encrypt the migration stream (VIR_MIGRATE_TLS) or not; default "
                   "[hv.migration] tls.")
@json_option
@operation_options("hv.migrate")
@pass_ctx
def migrate_cmd(ctx: Context, vm: str, target: str, bandwidth: str | None, max_downtime: str,
                timeout_: str, copy_storage: bool, tls: bool | None) -> None:
    """Live-migrate VM to node TARGET, with pre-checks, progress and migrate-back.

    Pre-checks: both nodes reachable and healthy (distinct hosts), free memory and
    CPU on the target, disks visible from both (or --copy-storage), no VM of that
    name on the target. Then a downtime estimate (warns above --max-downtime), the
    migration with a progress bar (% transferred, rate, ETA), and validation: running
    on the target, gone from the source, guest CPU advancing. If validation fails the
    VM is migrated back automatically. Ctrl-C or --timeout aborts; the VM keeps
    running on the source. `--rollback` migrates the last migrated VM back.

    \b
    Example:
      hvctl migrate vm1 node2
      hvctl migrate vm1 node2 --bandwidth 100Mbps --max-downtime 300ms --timeout 10m
      hvctl migrate vm1 node2 --check
      hvctl migrate vm1 node2 --dry-run --json
    """
    from debvisor_core.engine import run
    from debvisor_core.output import emit

    from .migrate import MigrateVM, PrecreateDisks, local_disks, storage_locks
    from .nodes import node as get_node
    from .units import bandwidth_mib, parse_bandwidth, parse_duration

    check_vm_name(vm)
    get_node(ctx, target)
    bw = parse_bandwidth(bandwidth) if bandwidth else None
    downtime_ms = int(parse_duration(max_downtime, default_unit="ms", what="max downtime") * 1000)
    timeout_s = parse_duration(timeout_, default_unit="s", what="timeout")
    if tls is None:
        from debvisor_core.settings import Section

        tls = Section.of(ctx, "hv").sub("migration").boolean("tls", False)
    locks = [f"hv.vm.{vm}"]
    with Cluster(ctx) as cluster:
        source, dom = cluster.find(vm)
        if source == target:
            raise BadInput(f"{vm} already runs on {target}")
        if copy_storage:  # the target directories' temporary pools are shared by every VM
            try:
                disks = local_disks(get_node(ctx, source), get_node(ctx, target),
                                    cluster.conn(target), dom.XMLDesc(0))
            except Exception as exc:  # noqa: BLE001 - preflight names an unreachable node
                from debvisor_core import log

                log.debug(f"cannot list the disks to copy yet: {exc}")
                disks = []
            locks += storage_locks(target, [d["path"].rpartition("/")[0] or "/" for d in disks])
    step = MigrateVM(vm, source, target, bandwidth_mib(bw) if bw else None, downtime_ms,
                     timeout_s, copy_storage, tls)
    steps: list[Step] = [step]
    if copy_storage:
        steps.insert(0, PrecreateDisks(vm, source, target))
    op = Operation(kind="hv.migrate", title=f"migrate {vm} from {source} to {target}",
                   steps=steps, locks=locks,
                   params={"vm": vm, "source": source, "target": target, "bandwidth_bps": bw,
                           "max_downtime_ms": downtime_ms, "timeout_s": timeout_s,
                           "copy_storage": copy_storage, "tls": tls})
    step.sink = op.result  # type: ignore[attr-defined]
    res = run(ctx, op)
    if res.status in ("checked", "dry-run"):
        res.result = op.result  # the estimate, for --json
    if ctx.json:
        emit(ctx, res.to_dict())
        return
    est = op.result.get("estimate")
    mig = op.result.get("migration")
    if mig:
        from .units import human_rate

        print(f"{vm} now runs on {target}: {mig['total_s']:.1f}s total, downtime "
              f"{mig['downtime_ms']} ms, average {human_rate(mig['avg_rate_bps'])}")
    elif est and res.status in ("checked", "dry-run"):
        print(f"estimated downtime {est['downtime_s'] * 1000:.0f} ms, "
              f"total {est['total_s']:.1f}s")


@hv.command("register")
@click.argument("vm")
@click.option("--owner", help="Who answers for this VM (user or team).")
@click.option("--role", help="What it does, e.g. web, db.")
@click.option("--tags", default="", help="Comma-separated tags.")
@click.option("--address", "addresses", multiple=True,
              help="An IP address of the VM (repeatable); guest interface addresses are added.")
@click.option("--node", help="Node to look on (default: all).")
@json_option
@operation_options("hv.register")
@pass_ctx
def register_cmd(ctx: Context, vm: str, owner: str | None, role: str | None, tags: str,
                 addresses: tuple[str, ...], node: str | None) -> None:
    """Record VM in DebVisor's inventory and announce it to other plugins.

    Verification: the VM exists on a configured node, is persistent, has a console
    (serial or VNC/SPICE) and satisfies the autostart policy ([hv.register] autostart
    = enable | require | ignore). Other plugins add steps (the DNS plugin adds the
    VM's record); all of it is one operation, undone together.

    \b
    Example:
      hvctl register vm1 --owner ops --role web --tags prod,eu --address 10.0.0.5
      hvctl register vm1 --dry-run
      hvctl register --rollback --yes
    """
    import ipaddress

    from . import registry as rg
    from .domains import guest_addresses

    if owner:
        rg.check_label(owner, "owner")
    if role:
        rg.check_label(role, "role")
    tag_list = [rg.check_label(t.strip(), "tag") for t in tags.split(",") if t.strip()]
    for a in addresses:
        try:
            ipaddress.ip_address(a)
        except ValueError:
            raise BadInput(f"bad address {a!r}: give an IPv4 or IPv6 address") from None
    policy = rg.autostart_policy(ctx)
    with Cluster(ctx) as cluster:
        node_name, dom = cluster.find(vm, node_name=node)
        addrs = list(dict.fromkeys([*addresses, *guest_addresses(dom)]))
        autostart = bool(dom.autostart()) if dom.isPersistent() else False
    record = rg.new_record(owner, role, tag_list, addrs)
    steps: list[Any] = [rg.WriteInventory(node_name, vm, record, policy)]
    if policy == "enable" and not autostart:
        steps.append(rg.SetAutostart(node_name, vm, True))
    vm_info = {"name": vm, "node": node_name, "owner": owner, "role": role, "tags": tag_list,
               "addresses": addrs}
    steps += rg.contributed(ctx, "debvisor_vm_registered", vm_info)
    op = Operation(kind="hv.register", title=f"register {vm}", steps=steps,
                   params={"vm": vm_info}, locks=[f"hv.vm.{vm}"])
    execute(ctx, op, human=lambda res: print(f"{vm} registered on {node_name}"))


@hv.command("unregister")
@click.argument("vm")
@click.option("--node", help="Node to look on (default: all).")
@json_option
@operation_options("hv.unregister", destructive=True)
@pass_ctx
def unregister_cmd(ctx: Context, vm: str, node: str | None) -> None:
    """Remove VM from DebVisor's inventory (other plugins drop what they added).

    \b
    Example:
      hvctl unregister vm1 --yes
      hvctl unregister --rollback --yes
    """
    from . import registry as rg
    from .domains import read_meta

    with Cluster(ctx) as cluster:
        node_name, dom = cluster.find(vm, node_name=node)
        meta = read_meta(dom, inactive=dom.isPersistent())
    if not meta or not meta.get("registered"):
        raise BadInput(f"{vm} is not registered")
    vm_info = {"name": vm, "node": node_name, "owner": meta.get("owner"),
               "role": meta.get("role"), "tags": meta.get("tags") or [],
               "addresses": meta.get("addresses") or []}
    record = {**meta, "registered": False}
    steps: list[Any] = [rg.WriteInventory(node_name, vm, record, "ignore")]
    steps += rg.contributed(ctx, "debvisor_vm_unregistered", vm_info)
    op = Operation(kind="hv.unregister", title=f"unregister {vm}", steps=steps,
                   params={"vm": vm_info}, destructive=True, locks=[f"hv.vm.{vm}"])
    execute(ctx, op, human=lambda res: print(f"{vm} unregistered"))


def vnc_endpoint(node_name: str, uri: str, g: dict[str, Any]) -> str:
    """HOST:PORT an operator connects to for graphics ``g`` of a VM on a node."""
    import re

    host = g.get("listen") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        m = re.match(r"[a-z0-9+]+://(?:[^@/]*@)?([^/:?]+)", uri)
        host = m.group(1) if m else node_name
    return f"{host}:{g['port']}"


@hv.command("console")
@click.argument("vm")
@click.option("--force", is_flag=True, help="Take the console over from another session.")
@click.option("--graphical", is_flag=True, help="Print the VNC endpoint instead of attaching.")
@click.option("--linger", default=1.0, show_default=True, type=click.FloatRange(0, 60),
              help="With stdin not a terminal: seconds of output kept after end of input.")
@click.option("--node", help="Node to look on (default: all).")
@json_option
@pass_ctx
def console_cmd(ctx: Context, vm: str, force: bool, graphical: bool, linger: float,
                node: str | None) -> None:
    """Attach to VM's serial console like `virsh console`; Ctrl-] detaches.

    A VM with only a graphical console (or with --graphical) gets its VNC endpoint
    printed and how to get a one-time ticket for it.

    \b
    Example:
      hvctl console vm1            (Ctrl-] to leave)
      hvctl console vm1 --graphical --json
    """
    from .console import attach, start_event_loop
    from .domains import devices

    check_vm_name(vm)
    start_event_loop()  # before the connection is opened
    with Cluster(ctx) as cluster:
        node_name, dom = cluster.find(vm, node_name=node)
        if not dom.isActive():
            raise BadInput(f"{vm} is not running on {node_name}; start it first")
        from .nodes import lv

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
        raise click.exceptions.Exit(attach(dom, force=force, linger=linger))


@hv.group("ticket")
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


@ticket.command("create")
@click.argument("vm")
@click.option("--ttl", default=300, show_default=True, type=click.IntRange(10, 86400),
              help="Seconds the ticket stays valid.")
@click.option("--mode", required=True, type=click.Choice(["view", "admin"]),
              help="admin: keyboard and mouse. view (watch only) is refused: plain VNC "
                   "cannot enforce it.")
@json_option
@pass_ctx
def ticket_create(ctx: Context, vm: str, ttl: int, mode: str) -> None:
    """Issue a console ticket for VM (audited with VM, requester, TTL and mode).

    \b
    Example:
      hvctl ticket create vm1 --ttl 300 --mode admin --json
    """
    from . import tickets

    if mode != "admin":
        raise BadInput(tickets.VIEW_REFUSED)
    with Cluster(ctx) as cluster:
        node_name, _dom = cluster.find(vm)
    t = tickets.create(ctx, vm, node_name, ttl, mode)
    ctx.audit("issued", what="console ticket", vm=vm, node=node_name, requester=t["by"],
              ttl=ttl, mode=mode, ticket_id=t["jti"])
    ctx.emit(t, lambda d: print(
        f"{d['token']}\n\nValid {ttl}s, {mode} mode, single use. Use it with:\n"
        f"  hvctl ticket use -    (TOKEN on stdin; sets a short-lived VNC password and "
        f"prints the endpoint)"))


@ticket.command("verify")
@click.argument("token")
@click.option("--vm", help="The VM the ticket must be for.")
@click.option("--mode", type=click.Choice(["view", "admin"]), help="The access asked for.")
@json_option
@pass_ctx
def ticket_verify(ctx: Context, token: str, vm: str | None, mode: str | None) -> None:
    """Say whether TOKEN is valid, expired, forged, of the wrong scope or already used.

    Exit 0 only when valid. Read-only: nothing is consumed or created. TOKEN `-` reads
    it from stdin.

    \b
    Example:
      hvctl ticket verify - --vm vm1 --mode admin < token.txt
    """
    from . import tickets

    _scrub_argv(ctx)
    res = tickets.verify(ctx, tickets.read_token(token), vm=vm, mode=mode)
    ctx.emit(res, lambda d: print(f"{d['status']}: {d['reason']}"))
    if res["status"] != "valid":
        raise click.exceptions.Exit(1)


@ticket.command("use")
@click.argument("token")
@click.option("--vm", help="The VM the ticket must be for.")
@json_option
@pass_ctx
def ticket_use(ctx: Context, token: str, vm: str | None) -> None:
    """Consume TOKEN: set a one-time VNC password for connecting now.

    The password stops working [hv.tickets] password_ttl seconds later (default 60) or
    when the ticket expires, whichever is first; a session already connected stays.
    TOKEN `-` reads the token from stdin (keep it out of argv: the audit log records
    only a keyed digest of one given there). View-only tickets are refused.

    \b
    Example:
      hvctl ticket use - < token.txt
    """
    import secrets as sec

    from . import tickets
    from .domains import devices

    _scrub_argv(ctx)
    res = tickets.verify(ctx, tickets.read_token(token), vm=vm)
    claims = res.get("claims") or {}
    refusal = None
    if res["status"] == "valid" and claims.get("mode") != "admin":
        refusal = ("view-only", tickets.VIEW_REFUSED)
    elif res["status"] != "valid" or not tickets.consume(ctx, claims):
        status = res["status"] if res["status"] != "valid" else "used"
        refusal = (status, f"ticket {status}: {res.get('reason', 'ticket was already used')}")
    if refusal:
        ctx.audit("refused", what="console ticket use", vm=claims.get("vm"), status=refusal[0],
                  requester=operator(), ticket_id=claims.get("jti"))
        raise BadInput(refusal[1])
    password = sec.token_urlsafe(6)[:8]  # VNC passwords are at most 8 characters
    valid_to = tickets.password_valid_to(ctx, claims)
    with Cluster(ctx) as cluster:
        try:
            node_name, dom = cluster.find(claims["vm"], node_name=claims["node"])
            tickets.set_vnc_password(dom, password, valid_to)
        except BaseException:
            tickets.release(ctx, claims["jti"])  # nothing was granted: the ticket stays usable
            raise
        vnc = [g for g in devices(dom.XMLDesc(0)).graphics if g["type"] == "vnc"]
        endpoint = vnc_endpoint(node_name, cluster.nodes[node_name].uri, vnc[0])
    ctx.audit("used", what="console ticket", vm=claims["vm"], node=node_name,
              requester=operator(), issued_by=claims["by"],
              ttl=claims["exp"] - claims["iat"], mode=claims["mode"], ticket_id=claims["jti"])
    from debvisor_core.output import iso_utc

    data = {"vm": claims["vm"], "endpoint": endpoint, "password": password,
            "mode": claims["mode"], "expires": claims["exp"], "password_valid_to": valid_to}
    ctx.emit(data, lambda d: print(f"VNC {d['endpoint']}  password {d['password']} "
                                   f"(connect before {iso_utc(valid_to)})\n"
                                   f"connect: vncviewer {d['endpoint']}"))


def _scrub_argv(ctx: Context) -> None:
    """Keep a ticket given on the command line out of the audit log: argv as recorded
    holds its keyed digest (the core's redaction), never the bearer token."""
    safe = getattr(ctx, "safe_argv", None)
    if callable(safe):
        ctx.argv = list(safe())


@hv.group("vnc")
def vnc() -> None:
    """VNC consoles: probe and repair (ensure), set a VM's VNC target.

    \b
    Example:
      hvctl vnc ensure
      hvctl vnc target vm1 --listen 0.0.0.0 --port auto
    """


@vnc.command("ensure")
@click.argument("vms", nargs=-1)
@json_option
@operation_options("hv.vnc-ensure")
@pass_ctx
def vnc_ensure(ctx: Context, vms: tuple[str, ...]) -> None:
    """Probe the VNC console of each running VM (RFB banner) and repair drift.

    Drift: not answering, no authentication while [hv.vnc] require_auth is set,
    persistent config or live endpoint differing from the target set by `vnc target`,
    missing nftables rule. Config and firewall drift is repaired (one operation);
    a live endpoint only changes at the VM's next start. Domains whose name is not a
    valid VM name, and VNC targets in metadata that are not an IP address and a port
    5900-65535, are skipped with a warning. Exit 1 if drift remains or something was
    skipped.

    \b
    Example:
      hvctl vnc ensure
      hvctl vnc ensure vm1 vm2 --dry-run --json
    """
    from debvisor_core import log
    from debvisor_core.output import table

    from .vnc import survey

    for v in vms:
        check_vm_name(v)
    skipped: list[dict[str, Any]] = []
    with Cluster(ctx) as cluster:
        rows = survey(ctx, cluster, list(vms), skipped)
    missing = set(vms) - {r["vm"] for r in rows}
    if missing:
        raise BadInput(f"not a running VM with VNC: {', '.join(sorted(missing))}")
    repairs = [s for r in rows for s in r.pop("repairs")]
    result: dict[str, Any] = {"vms": rows, "repaired": []}
    if repairs:
        locks = sorted({f"hv.vm.{s.vm}" for s in repairs} | {f"hv.vnc.{s.node}" for s in repairs})
        op = Operation(kind="hv.vnc-ensure", title=f"repair VNC drift of {len(repairs)} item(s)",
                       steps=repairs, params={"vms": sorted({r["vm"] for r in rows})},
                       locks=locks)
        from debvisor_core.engine import run

        res = run(ctx, op) if ctx.json else execute(ctx, op)
        if res.status == "succeeded":
            result["repaired"] = [s.describe(ctx) for s in repairs]
            from .vnc import SetVncTarget, prune_stash_locked

            prune_stash_locked(ctx, [s.vm for s in repairs if isinstance(s, SetVncTarget)])
    unrepaired = [r for r in rows if any("not answering" in d or "no authentication" in d
                                         or "live endpoint" in d for d in r["drift"])]
    result["skipped"] = skipped
    result["status"] = "drift" if unrepaired or skipped else "ok"
    ctx.emit(result, lambda d: print(table(
        [{**r, "banner": r["probe"].get("banner") or "-",
          "auth": ",".join(r["probe"].get("security") or []) or "-",
          "drift": "; ".join(r["drift"]) or "none"} for r in d["vms"]],
        [("vm", "VM"), ("node", "NODE"), ("live", "LIVE"), ("banner", "BANNER"),
         ("auth", "AUTH"), ("drift", "DRIFT")]) if d["vms"] else "no running VM with VNC"))
    for r in unrepaired:
        log.warn(f"{r['vm']}: {'; '.join(r['drift'])}")
    if unrepaired or skipped:
        raise click.exceptions.Exit(1)


@vnc.command("target")
@click.argument("vm")
@click.option("--listen", required=True, help="Address the VNC server listens on.")
@click.option("--port", required=True, help="A port number, or `auto` (from [hv.vnc] port_range).")
@click.option("--password-file", type=click.Path(dir_okay=False),
              help="Owner-only file with the VNC password (at most 8 characters).")
@json_option
@operation_options("hv.vnc-target")
@pass_ctx
def vnc_target(ctx: Context, vm: str, listen: str, port: str, password_file: str | None) -> None:
    """Reconfigure VM's VNC endpoint (applies at its next start), validated.

    The port must be free on the node (no other VM's graphics use it); `auto` picks the
    lowest free port of [hv.vnc] port_range. With [hv.vnc] firewall = true an nftables
    rule opens it on the node. TLS/SASL are set in the node's qemu.conf (see README).

    \b
    Example:
      hvctl vnc target vm1 --listen 0.0.0.0 --port auto --password-file /etc/debvisor/vm1.vncpw
      hvctl vnc target vm1 --listen 10.0.0.5 --port 5905 --dry-run
    """
    from debvisor_core.secrets import read_secret

    from . import vnc as vn

    check_vm_name(vm)
    vn.check_listen(listen)
    cfg = vn.settings(ctx)
    lo, hi = cfg["port_range"]
    if port != "auto" and not (port.isdigit() and 5900 <= int(port) <= 65535):
        raise BadInput(f"bad port {port!r}: give a number in 5900-65535 or `auto`")
    if password_file:
        pw = read_secret(password_file, "VNC password file").strip()
        if not 1 <= len(pw) <= 8:
            raise BadInput(f"VNC password in {password_file} must be 1-8 characters")
    with Cluster(ctx) as cluster:
        node_name, dom = cluster.find(vm)
        number = vn.pick_port(dom.connect(), vm, lo, hi) if port == "auto" else int(port)
    steps: list[Any] = [vn.SetVncTarget(node_name, vm, listen, number, password_file)]
    if cfg.get("firewall"):
        steps.append(vn.OpenVncPort(node_name, vm, number))
    op = Operation(kind="hv.vnc-target", title=f"VNC target of {vm}: {listen}:{number}",
                   steps=steps, params={"vm": vm, "listen": listen, "port": number},
                   locks=[f"hv.vm.{vm}", f"hv.vnc.{node_name}"])
    res = execute(ctx, op, human=lambda res: print(
        f"{vm}: VNC at {listen}:{number} from its next start"))
    if res.status == "succeeded":  # the older saved passwords of vm are not needed any more
        vn.prune_stash_locked(ctx, [vm])
