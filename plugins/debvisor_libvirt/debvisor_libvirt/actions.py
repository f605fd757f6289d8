"""`debvisor hv …` (alias `hvctl`) declared once, as actions. The CLI (cli.py),
`debvisor actions list|show|run` and the daemon all read these declarations.

Light module on purpose (`hv --help` imports it): libvirt, the engine, the node cluster
(concurrent.futures) and the step modules are imported only inside the plan, query and
execute functions. The steps and the planning helpers stay in their modules (snapshots,
migrate, registry, vnc, tickets, ...); this module turns typed parameters into their
calls and the results into text for humans.

Three shapes:

* ``query``: reads (list, resources, ticket verify, iso templates/show).
* ``plan``: a state change that is one operation whose result is the operation result
  (snapshot, whose `list` raises Unchanged with the listing; register, unregister).
* ``execute`` with a ``kind``: a state change that runs an operation of that kind itself,
  because its result or its work does not fit ``plan``: migrate (on --dry-run/--check
  its result holds the estimate and a human sees it), vnc ensure (its result is the
  survey, exit 1 on drift), vnc target (after success it prunes the VM's older saved
  passwords). cli.py gives these commands the operation options of their kind
  (--dry-run, --check, --yes, --force-maintenance, --rollback), as a ``plan`` has.
* ``execute`` without a kind: a state change that is no journalled operation and audits
  itself (ticket create/use, iso build, convert: see media/commands.py).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from debvisor_core.actions import Action, Outcome, Param, Unchanged
from debvisor_core.errors import BadInput

from .media.commands import MEDIA_ACTIONS

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context
    from debvisor_core.model import Operation, OpResult

_OP_RESULT = ("the operation result: id, kind, title, status, steps [{name, description, "
              "status}], findings, duration_ms, result, error")


class Shown(dict[str, Any]):
    """A JSON result (the dict itself) plus the line a human is shown for it, which needs
    more than the result holds (the command's parameters); never part of the JSON."""

    def __init__(self, data: dict[str, Any], text: str | None = None, **extra: Any) -> None:
        super().__init__(data)
        self.text = text
        self.extra = extra


def _print_text(data: Any) -> None:
    text = getattr(data, "text", None)
    if text:
        print(text)


def vnc_endpoint(node_name: str, uri: str, g: dict[str, Any]) -> str:
    """HOST:PORT an operator connects to for graphics ``g`` of a VM on a node."""
    host = g.get("listen") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        m = re.match(r"[a-z0-9+]+://(?:[^@/]*@)?([^/:?]+)", uri)
        host = m.group(1) if m else node_name
    return f"{host}:{g['port']}"


def not_a_dir(option: str, path: str | None) -> None:
    """What click.Path(dir_okay=False) said about a directory, in its words."""
    import os

    if path is not None and os.path.isdir(path):
        raise BadInput(f"Invalid value for '{option}': File {path!r} is a directory.")


_NODE = Param("node", "Node to look on (default: all).", default=None)


# -- hv.list ---------------------------------------------------------------------------
def query_list(ctx: Context, params: dict[str, Any]) -> Any:
    """Every VM of every node; unreachable nodes are errors and make the exit status 1."""
    from debvisor_core import log

    from .listing import list_vms

    data = Shown(list_vms(ctx, state_filter=params["filter"], node=params["node"]),
                 filter=params["filter"])
    for n, err in data["unreachable"].items():
        log.error(err if n in err else f"node {n}: {err}")
    return Outcome(data, 1) if data["unreachable"] else data


def render_list(d: dict[str, Any]) -> None:
    from debvisor_core.output import human_duration, table

    def uptime(s: Any) -> str:
        return "-" if s is None else human_duration(s)

    rows = [{**r, "memory": f"{r['memory_mib']} MiB", "uptime": uptime(r["uptime_s"]),
             "registered": "yes" if r["registered"] else "no"} for r in d["vms"]]
    if rows:
        print(table(rows, [("name", "NAME"), ("node", "NODE"), ("state", "STATE"),
                           ("vcpus", "VCPUS"), ("memory", "MEMORY"), ("uptime", "UPTIME"),
                           ("registered", "REGISTERED")]))
    else:
        state_filter = getattr(d, "extra", {}).get("filter", "all")
        print("no VMs" + ("" if state_filter == "all" else f" {state_filter}"))


# -- hv.resources ----------------------------------------------------------------------
def query_resources(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from .nodes import Cluster
    from .resources import sample

    with Cluster(ctx) as cluster:
        node_name, dom = cluster.find(params["vm"], node_name=params["node"])
        data: dict[str, Any] = sample(dom, node_name, params["interval"])
    return data


def render_resources(d: dict[str, Any]) -> None:
    from .resources import render

    render(d)


# -- hv.snapshot -----------------------------------------------------------------------
def plan_snapshot(ctx: Context, params: dict[str, Any]) -> Operation:
    """create, revert and delete are one hv.snapshot operation; `list` reads (it raises
    Unchanged with the listing: shown as the result, exit 0, nothing journalled)."""
    from debvisor_core.engine import Operation

    from . import snapshots as sn
    from .nodes import Cluster

    vm, action, name = params["vm"], params["action"], params["name"]
    if name is not None:
        sn.check_snapshot_name(name)
    with Cluster(ctx) as cluster:
        node_name, dom = cluster.find(vm, node_name=params["node"])
        if action == "list":
            raise Unchanged({"vm": vm, "node": node_name,
                             "snapshots": sn.list_snapshots(dom)}, render_snapshot_list)
        if action in ("revert", "delete") and not name:
            raise BadInput(f"`snapshot {vm} {action}` needs the snapshot NAME")
        if action in ("revert", "delete") and name not in {
                s["name"] for s in sn.list_snapshots(dom)}:
            raise BadInput(f"VM {vm} has no snapshot named {name!r} "
                           f"(see `hvctl snapshot {vm} list`)")
    steps: list[Any]
    if action == "create":
        name = name or sn.default_name()
        steps = [sn.CreateSnapshot(node_name, vm, name)]
        title = f"create snapshot {name} of {vm}"
    elif action == "revert":
        assert name is not None
        safety = sn.default_name("safety")
        steps = [sn.CreateSnapshot(node_name, vm, safety,
                                   f"safety snapshot before reverting to {name}"),
                 sn.RevertSnapshot(node_name, vm, name, safety)]
        title = f"revert {vm} to snapshot {name} (safety snapshot {safety})"
    else:
        assert name is not None
        steps = [sn.DeleteSnapshot(node_name, vm, name)]
        title = f"delete snapshot {name} of {vm}"
    return Operation(kind="hv.snapshot", title=title, steps=steps,
                     params={"vm": vm, "node": node_name, "action": action, "name": name},
                     destructive=action == "delete", locks=[f"hv.vm.{vm}"])


def render_snapshot_list(d: dict[str, Any]) -> None:
    from debvisor_core.output import table

    print(table([{**r, "current": "*" if r["current"] else ""} for r in d["snapshots"]],
                [("current", ""), ("name", "NAME"), ("created", "CREATED"), ("state", "STATE")])
          if d["snapshots"] else f"{d['vm']} has no snapshots")


# -- hv.start / hv.stop ----------------------------------------------------------------
def plan_start(ctx: Context, params: dict[str, Any]) -> Operation:
    from debvisor_core.engine import Operation

    from .nodes import Cluster
    from .power import StartVM

    vm = params["vm"]
    with Cluster(ctx) as cluster:
        node_name, _dom = cluster.find(vm, node_name=params["node"])
    return Operation(kind="hv.start", title=f"start {vm} on {node_name}",
                     steps=[StartVM(node_name, vm)], params={"vm": vm, "node": node_name},
                     locks=[f"hv.vm.{vm}"])


def plan_stop(ctx: Context, params: dict[str, Any]) -> Operation:
    from debvisor_core.engine import Operation

    from .nodes import Cluster
    from .power import StopVM

    vm, force, timeout = params["vm"], params["force"], params["timeout"]
    with Cluster(ctx) as cluster:
        node_name, _dom = cluster.find(vm, node_name=params["node"])
    how = "power off" if force and timeout == 0 else "stop"
    return Operation(kind="hv.stop", title=f"{how} {vm} on {node_name}",
                     steps=[StopVM(node_name, vm, force, timeout)],
                     params={"vm": vm, "node": node_name, "force": force, "timeout_s": timeout},
                     locks=[f"hv.vm.{vm}"])


# -- hv.migrate ------------------------------------------------------------------------
def execute_migrate(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """One hv.migrate operation; with --dry-run/--check its result holds the estimate."""
    from debvisor_core.engine import Operation, Step, run

    from .migrate import MigrateVM, PrecreateDisks, local_disks, storage_locks
    from .nodes import Cluster, check_vm_name
    from .nodes import node as get_node
    from .units import bandwidth_mib, human_rate, parse_bandwidth, parse_duration

    vm, target = params["vm"], params["target"]
    if params["tls"] and params["no_tls"]:
        raise BadInput("give --tls or --no-tls, not both")
    tls: bool | None = True if params["tls"] else (False if params["no_tls"] else None)
    check_vm_name(vm)
    get_node(ctx, target)
    bandwidth, copy_storage = params["bandwidth"], params["copy_storage"]
    bw = parse_bandwidth(bandwidth) if bandwidth else None
    downtime_ms = int(parse_duration(params["max_downtime"], default_unit="ms",
                                     what="max downtime") * 1000)
    timeout_s = parse_duration(params["timeout"], default_unit="s", what="timeout")
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
    est = op.result.get("estimate")
    mig = op.result.get("migration")
    text = None
    if mig:
        text = (f"{vm} now runs on {target}: {mig['total_s']:.1f}s total, downtime "
                f"{mig['downtime_ms']} ms, average {human_rate(mig['avg_rate_bps'])}")
    elif est and res.status in ("checked", "dry-run"):
        text = (f"estimated downtime {est['downtime_s'] * 1000:.0f} ms, "
                f"total {est['total_s']:.1f}s")
    return Shown(res.to_dict(), text)


# -- hv.register / hv.unregister -------------------------------------------------------
def plan_register(ctx: Context, params: dict[str, Any]) -> Operation:
    import ipaddress

    from debvisor_core.engine import Operation

    from . import registry as rg
    from .domains import guest_addresses
    from .nodes import Cluster

    vm, owner, role = params["vm"], params["owner"], params["role"]
    if owner:
        rg.check_label(owner, "owner")
    if role:
        rg.check_label(role, "role")
    tags = params["tags"] or ""
    tag_list = [rg.check_label(t.strip(), "tag") for t in tags.split(",") if t.strip()]
    addresses = params["address"] or []
    for a in addresses:
        try:
            ipaddress.ip_address(a)
        except ValueError:
            raise BadInput(f"bad address {a!r}: give an IPv4 or IPv6 address") from None
    policy = rg.autostart_policy(ctx)
    with Cluster(ctx) as cluster:
        node_name, dom = cluster.find(vm, node_name=params["node"])
        addrs = list(dict.fromkeys([*addresses, *guest_addresses(dom)]))
        autostart = bool(dom.autostart()) if dom.isPersistent() else False
    record = rg.new_record(owner, role, tag_list, addrs)
    steps: list[Any] = [rg.WriteInventory(node_name, vm, record, policy)]
    if policy == "enable" and not autostart:
        steps.append(rg.SetAutostart(node_name, vm, True))
    vm_info = {"name": vm, "node": node_name, "owner": owner, "role": role, "tags": tag_list,
               "addresses": addrs}
    steps += rg.contributed(ctx, "debvisor_vm_registered", vm_info)
    return Operation(kind="hv.register", title=f"register {vm}", steps=steps,
                     params={"vm": vm_info}, locks=[f"hv.vm.{vm}"])


_RECORDED = re.compile(r"^record (\S+) on (\S+) in the inventory")


def render_register(res: OpResult) -> None:
    """"VM registered on NODE" (both from the WriteInventory step the plan put first)."""
    m = _RECORDED.match(res.steps[0]["description"]) if res.steps else None
    vm = res.title.removeprefix("register ")
    print(f"{vm} registered on {m.group(2)}" if m else f"{vm} registered")


def plan_unregister(ctx: Context, params: dict[str, Any]) -> Operation:
    from debvisor_core.engine import Operation

    from . import registry as rg
    from .domains import read_meta
    from .nodes import Cluster

    vm = params["vm"]
    with Cluster(ctx) as cluster:
        node_name, dom = cluster.find(vm, node_name=params["node"])
        meta = read_meta(dom, inactive=dom.isPersistent())
    if not meta or not meta.get("registered"):
        raise BadInput(f"{vm} is not registered")
    vm_info = {"name": vm, "node": node_name, "owner": meta.get("owner"),
               "role": meta.get("role"), "tags": meta.get("tags") or [],
               "addresses": meta.get("addresses") or []}
    record = {**meta, "registered": False}
    steps: list[Any] = [rg.WriteInventory(node_name, vm, record, "ignore")]
    steps += rg.contributed(ctx, "debvisor_vm_unregistered", vm_info)
    return Operation(kind="hv.unregister", title=f"unregister {vm}", steps=steps,
                     params={"vm": vm_info}, destructive=True, locks=[f"hv.vm.{vm}"])


def render_unregister(res: OpResult) -> None:
    print(f"{res.title.removeprefix('unregister ')} unregistered")


# -- hv.ticket.* -----------------------------------------------------------------------
def execute_ticket_create(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Issue a ticket (audited): no journalled operation, nothing to undo."""
    from . import tickets
    from .nodes import Cluster

    vm, ttl, mode = params["vm"], params["ttl"], params["mode"]
    if mode != "admin" and not tickets.proxied(ctx):
        raise BadInput(tickets.VIEW_REFUSED)
    with Cluster(ctx) as cluster:
        node_name, _dom = cluster.find(vm)
    t = tickets.create(ctx, vm, node_name, ttl, mode)
    ctx.audit("issued", what="console ticket", vm=vm, node=node_name, requester=t["by"],
              ttl=ttl, mode=mode, ticket_id=t["jti"])
    return t


def render_ticket_create(d: dict[str, Any]) -> None:
    print(f"{d['token']}\n\nValid {d['exp'] - d['iat']}s, {d['mode']} mode, single use. "
          f"Use it with:\n"
          f"  hvctl ticket use -    (TOKEN on stdin; sets a short-lived VNC password and "
          f"prints the endpoint)")


def _scrub_argv(ctx: Context) -> None:
    """Keep a ticket given on the command line out of the audit log: argv as recorded
    holds its keyed digest (the core's redaction), never the bearer token."""
    safe = getattr(ctx, "safe_argv", None)
    if callable(safe):
        ctx.argv = list(safe())


def query_ticket_verify(ctx: Context, params: dict[str, Any]) -> Any:
    """Read-only: nothing is consumed or created; exit status 1 unless valid."""
    from . import tickets

    _scrub_argv(ctx)
    res: dict[str, Any] = tickets.verify(ctx, tickets.read_token(params["token"]),
                                         vm=params["vm"], mode=params["mode"])
    return res if res["status"] == "valid" else Outcome(res, 1)


def execute_ticket_use(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Consume the ticket and set a one-time VNC password (audited, used or refused)."""
    import secrets as sec

    from debvisor_core.identity import operator

    from . import tickets
    from .domains import devices
    from .nodes import Cluster

    _scrub_argv(ctx)
    res = tickets.verify(ctx, tickets.read_token(params["token"]), vm=params["vm"])
    claims = res.get("claims") or {}
    refusal = None
    if res["status"] == "valid" and claims.get("mode") != "admin" and not tickets.proxied(ctx):
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
    return {"vm": claims["vm"], "endpoint": endpoint, "password": password,
            "mode": claims["mode"], "expires": claims["exp"], "password_valid_to": valid_to}


def render_ticket_use(d: dict[str, Any]) -> None:
    from debvisor_core.output import iso_utc

    print(f"VNC {d['endpoint']}  password {d['password']} "
          f"(connect before {iso_utc(d['password_valid_to'])})\n"
          f"connect: vncviewer {d['endpoint']}")


# -- hv.vnc.* --------------------------------------------------------------------------
def execute_vnc_ensure(ctx: Context, params: dict[str, Any]) -> Any:
    """Survey every running VM's VNC; repair config and firewall drift as one hv.vnc-ensure
    operation; exit status 1 when drift remains or something was skipped."""
    from debvisor_core import engine, log
    from debvisor_core.engine import Operation

    from .nodes import Cluster, check_vm_name
    from .vnc import SetVncTarget, prune_stash_locked, survey

    vms = params["vms"] or []
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
        res = engine.run(ctx, op) if ctx.json else engine.execute(ctx, op)
        if res.status == "succeeded":
            result["repaired"] = [s.describe(ctx) for s in repairs]
            prune_stash_locked(ctx, [s.vm for s in repairs if isinstance(s, SetVncTarget)])
    unrepaired = [r for r in rows if any("not answering" in d or "no authentication" in d
                                         or "live endpoint" in d for d in r["drift"])]
    result["skipped"] = skipped
    result["status"] = "drift" if unrepaired or skipped else "ok"
    for r in unrepaired:
        log.warn(f"{r['vm']}: {'; '.join(r['drift'])}")
    return Outcome(result, 1) if unrepaired or skipped else result


def render_vnc_ensure(d: dict[str, Any]) -> None:
    from debvisor_core.output import table

    print(table([{**r, "banner": r["probe"].get("banner") or "-",
                  "auth": ",".join(r["probe"].get("security") or []) or "-",
                  "drift": "; ".join(r["drift"]) or "none"} for r in d["vms"]],
                [("vm", "VM"), ("node", "NODE"), ("live", "LIVE"), ("banner", "BANNER"),
                 ("auth", "AUTH"), ("drift", "DRIFT")]) if d["vms"] else "no running VM with VNC")


def execute_vnc_target(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """One hv.vnc-target operation; after it succeeded the VM's older saved passwords go."""
    from debvisor_core.engine import Operation, run
    from debvisor_core.secrets import read_secret

    from . import vnc as vn
    from .nodes import Cluster, check_vm_name

    vm, listen, port = params["vm"], params["listen"], params["port"]
    password_file = params["password_file"]
    not_a_dir("--password-file", password_file)
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
    res = run(ctx, op)
    if res.status == "succeeded":  # the older saved passwords of vm are not needed any more
        vn.prune_stash_locked(ctx, [vm])
    return Shown(res.to_dict(), f"{vm}: VNC at {listen}:{number} from its next start"
                 if res.status == "succeeded" else None)


# -- hv.hook.install / hv.hook-event ---------------------------------------------------
def plan_hook_install(ctx: Context, params: dict[str, Any]) -> Operation:
    """One hv.hook-install operation (its undo removes the script, or puts back the hook
    it replaced); an installed, identical script is nothing to change."""
    from debvisor_core.engine import Operation

    from .hook import install_step, up_to_date

    step = install_step(ctx)
    if up_to_date(step):
        raise Unchanged({"path": str(step.path), "status": "installed"},
                        f"the hook {step.path} is installed and up to date")
    return Operation(kind="hv.hook-install", title=f"install the libvirt QEMU hook {step.path}",
                     steps=[step], params={"hooks_dir": step.hooks_dir, "python": step.python},
                     locks=["hv.hook"])


def execute_hook_event(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """What the hook script runs (through its module, see hookevent.py), for a person:
    the same decision and audit record; a refusal is an error (exit 3)."""
    import sys
    import time

    from debvisor_core.audit import record
    from debvisor_core.errors import PreflightRefused

    from .hookevent import Event, Outcome, handle

    t0 = time.monotonic()
    ev = Event(params["vm"], params["operation"], params["sub_operation"], params["extra"])
    xml = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()

    def audit(result: str, details: dict[str, Any], duration_ms: int) -> None:
        record(ctx, result=result, duration_ms=duration_ms, details=details)

    out = handle(ev, xml, ctx.state_dir, ctx.config, audit, Outcome(), t0)
    if ev.guarded and not out.allowed:
        raise PreflightRefused(out.message or f"refused: {ev.hook} of {ev.vm}")
    return {"vm": ev.vm, "hook": ev.hook, "allowed": True, "audited": out.audited}


# -- the declarations ------------------------------------------------------------------
ACTIONS: list[Action] = [
    Action(
        path="hv.list", query=query_list, render=render_list, privilege="root",
        summary="List the VMs of every configured node (queried concurrently)",
        description="Columns: name, node, state, vCPUs, memory, uptime, registered in "
                    "DebVisor's inventory. Unreachable nodes are reported and make the exit "
                    "code 1.",
        params=(
            Param("filter", "Only VMs in this state.", type="choice",
                  choices=("running", "stopped", "paused", "all"), default="all"),
            Param("node", "Only this node.", default=None),
        ),
        result="an object: vms [{name, node, state, vcpus, memory_mib, uptime_s, registered, "
               "owner, role, tags, uuid, persistent}] (owner, role and tags from the inventory "
               "of a registered VM, else null, null, []), nodes [the nodes that answered], "
               "unreachable {node: error}",
        examples=("hvctl list", "hvctl list --filter running --node node2 --json"),
    ),
    Action(
        path="hv.resources", query=query_resources, render=render_resources,
        summary="Show a VM's vCPUs, memory and balloon, CPU %, disk and network I/O rates",
        params=(
            Param("vm", "The VM's name.", positional=True),
            Param("interval", "Seconds between the two samples the rates come from.",
                  type="float", default=1.0, minimum=0.1, maximum=300),
            _NODE,
        ),
        result="an object: vm, node, state, vcpus, cpu_percent, memory {max_mib, "
               "balloon_actual_mib, ...}, disks [{device, read_bps, write_bps, ...}], nics "
               "[{device, rx_bps, tx_bps, ...}], interval_s",
        examples=("hvctl resources vm1", "hvctl resources vm1 --interval 5 --json"),
    ),
    Action(
        path="hv.snapshot", kind="hv.snapshot", plan=plan_snapshot,
        render=lambda res: print(f"{res.title}: done"),
        summary="Create, list, revert to or delete a VM's snapshots",
        description=(
            "`create` without NAME picks dv-YYYYmmdd-HHMMSS-XXXXXXXX (XXXXXXXX random); `--rollback` "
            "after a create deletes that snapshot, and a failed create never deletes a "
            "snapshot it did not create. Rolling back a `delete` cannot bring the snapshot "
            "back and ends rollback-incomplete (exit 5). `revert` first takes a safety "
            "snapshot (safety-…) so the revert can be rolled back. `delete` is irreversible "
            "and needs --yes when not interactive."),
        params=(
            Param("vm", "The VM's name.", positional=True),
            Param("action", "create, list, revert or delete.", type="choice",
                  choices=("create", "list", "revert", "delete"), positional=True),
            Param("name", "The snapshot's name (revert and delete need it).", positional=True,
                  default=None),
            _NODE,
        ),
        result="list: an object vm, node, snapshots [{name, created, state, current}]; "
               "create, revert, delete: " + _OP_RESULT,
        examples=(
            "hvctl snapshot vm1 create",
            "hvctl snapshot vm1 create before-upgrade",
            "hvctl snapshot vm1 list --json",
            "hvctl snapshot vm1 revert before-upgrade --yes",
            "hvctl snapshot vm1 delete before-upgrade --yes",
            "hvctl snapshot vm1 create --rollback --yes",
        ),
    ),
    Action(
        path="hv.start", kind="hv.start", plan=plan_start,
        render=lambda res: print(f"{res.title}: done"),
        summary="Start VM: boot it when it is off, resume it when it is paused",
        description="`--rollback` powers it off again (or pauses it again).",
        params=(Param("vm", "The VM's name.", positional=True), _NODE),
        result=_OP_RESULT,
        examples=("hvctl start vm1", "hvctl start vm1 --dry-run", "hvctl start --rollback --yes"),
    ),
    Action(
        path="hv.stop", kind="hv.stop", plan=plan_stop,
        render=lambda res: print(f"{res.title}: done"),
        summary="Stop VM: ask its guest to shut down (ACPI); --force powers it off",
        description=(
            "Waits --timeout seconds for the guest to shut down; a guest that ignores ACPI "
            "then makes the operation fail (nothing changed) unless --force, which powers "
            "it off. `--force --timeout 0` powers it off at once. `--rollback` starts it "
            "again."),
        params=(
            Param("vm", "The VM's name.", positional=True),
            Param("force", "Power the VM off when its guest has not shut down within "
                           "--timeout.", type="bool", default=False),
            Param("timeout", "Seconds to wait for the guest to shut down.", type="int",
                  default=60, minimum=0, maximum=3600),
            _NODE,
        ),
        result=_OP_RESULT,
        examples=("hvctl stop vm1", "hvctl stop vm1 --force --timeout 30",
                  "hvctl stop vm1 --force --timeout 0 --yes", "hvctl stop --rollback --yes"),
    ),
    Action(
        path="hv.migrate", kind="hv.migrate", execute=execute_migrate, render=_print_text,
        summary="Live-migrate VM to node TARGET, with pre-checks, progress and migrate-back",
        description=(
            "Pre-checks: both nodes reachable and healthy (distinct hosts), free memory and "
            "CPU on the target, disks visible from both (or --copy-storage), no VM of that "
            "name on the target. Then a downtime estimate (warns above --max-downtime), the "
            "migration with a progress bar (% transferred, rate, ETA), and validation: "
            "running on the target, gone from the source, guest CPU advancing. If validation "
            "fails the VM is migrated back automatically. Ctrl-C or --timeout aborts; the VM "
            "keeps running on the source. `--rollback` migrates the last migrated VM back."),
        params=(
            Param("vm", "The VM's name.", positional=True),
            Param("target", "The node to migrate it to.", positional=True),
            Param("bandwidth", "Cap the migration stream, e.g. 100Mbps, 1Gbps, 50MiB/s.",
                  default=None),
            Param("max_downtime", "Longest acceptable pause at switch-over (e.g. 300ms).",
                  default="300ms"),
            Param("timeout", "Abort (VM keeps running on the source) after this long, e.g. "
                             "90s or 10m.", default="10m"),
            Param("copy_storage", "Copy disks the target cannot see.", type="bool",
                  default=False),
            Param("tls", "Encrypt the migration stream (VIR_MIGRATE_TLS); default "
                         "[hv.migration] tls.", type="bool", default=False),
            Param("no_tls", "Do not encrypt the migration stream, whatever [hv.migration] "
                            "tls says.", type="bool", default=False),
        ),
        result=_OP_RESULT + "; result.estimate {downtime_s, total_s, ...} (also with "
               "--dry-run/--check) and, once migrated, result.migration {total_s, "
               "downtime_ms, avg_rate_bps, progress, ...}",
        examples=(
            "hvctl migrate vm1 node2",
            "hvctl migrate vm1 node2 --bandwidth 100Mbps --max-downtime 300ms --timeout 10m",
            "hvctl migrate vm1 node2 --check",
            "hvctl migrate vm1 node2 --dry-run --json",
            "hvctl migrate vm1 --rollback --yes",
        ),
    ),
    Action(
        path="hv.register", kind="hv.register", plan=plan_register, render=render_register,
        summary="Record VM in DebVisor's inventory and announce it to other plugins",
        description=(
            "Verification: the VM exists on a configured node, is persistent, has a console "
            "(serial or VNC/SPICE) and satisfies the autostart policy ([hv.register] "
            "autostart = enable | require | ignore). Other plugins add steps (the DNS plugin "
            "adds the VM's record); all of it is one operation, undone together."),
        params=(
            Param("vm", "The VM's name.", positional=True),
            Param("owner", "Who answers for this VM (user or team).", default=None),
            Param("role", "What it does, e.g. web, db.", default=None),
            Param("tags", "Comma-separated tags.", default=None),
            Param("address", "An IP address of the VM (repeatable); guest interface addresses "
                             "are added.", type="list", default=None),
            _NODE,
        ),
        result=_OP_RESULT,
        examples=(
            "hvctl register vm1 --owner ops --role web --tags prod,eu --address 10.0.0.5",
            "hvctl register vm1 --dry-run",
            "hvctl register --rollback --yes",
        ),
    ),
    Action(
        path="hv.unregister", kind="hv.unregister", plan=plan_unregister,
        render=render_unregister, destructive=True,
        summary="Remove VM from DebVisor's inventory (other plugins drop what they added)",
        params=(Param("vm", "The VM's name.", positional=True), _NODE),
        result=_OP_RESULT,
        examples=("hvctl unregister vm1 --yes", "hvctl unregister --rollback --yes"),
    ),
    Action(
        path="hv.ticket.create", execute=execute_ticket_create, render=render_ticket_create,
        summary="Issue a console ticket for VM (audited with VM, requester, TTL and mode)",
        params=(
            Param("vm", "The VM's name.", positional=True),
            Param("ttl", "Seconds the ticket stays valid.", type="int", default=300,
                  minimum=10, maximum=86400),
            Param("mode", "admin: keyboard and mouse. view (watch only) is refused: plain VNC "
                          "cannot enforce it.", type="choice", choices=("view", "admin")),
        ),
        result="an object: token, vm, node, mode, iat, exp, jti, by",
        examples=("hvctl ticket create vm1 --ttl 300 --mode admin --json",),
    ),
    Action(
        path="hv.ticket.verify", query=query_ticket_verify,
        render=lambda d: print(f"{d['status']}: {d['reason']}"),
        summary="Say whether TOKEN is valid, expired, forged, of the wrong scope or already "
                "used",
        description="Exit 0 only when valid. Read-only: nothing is consumed or created. "
                    "TOKEN `-` reads it from stdin.",
        params=(
            Param("token", "The ticket, or - to read it from stdin.", positional=True),
            Param("vm", "The VM the ticket must be for.", default=None),
            Param("mode", "The access asked for.", type="choice", choices=("view", "admin"),
                  default=None),
        ),
        result="an object: status (valid, expired, forged, wrong-scope or used), reason and, "
               "unless forged, claims {vm, node, mode, iat, exp, jti, by}",
        examples=("hvctl ticket verify - --vm vm1 --mode admin < token.txt",),
    ),
    Action(
        path="hv.ticket.use", execute=execute_ticket_use, render=render_ticket_use,
        summary="Consume TOKEN: set a one-time VNC password for connecting now",
        description=(
            "The password stops working [hv.tickets] password_ttl seconds later (default 60) "
            "or when the ticket expires, whichever is first; a session already connected "
            "stays. TOKEN `-` reads the token from stdin (keep it out of argv: the audit log "
            "records only a keyed digest of one given there). View-only tickets are "
            "refused."),
        params=(
            Param("token", "The ticket, or - to read it from stdin.", positional=True),
            Param("vm", "The VM the ticket must be for.", default=None),
        ),
        result="an object: vm, endpoint (HOST:PORT), password, mode, expires, "
               "password_valid_to (epoch seconds)",
        examples=("hvctl ticket use - < token.txt",),
    ),
    Action(
        path="hv.vnc.ensure", kind="hv.vnc-ensure", execute=execute_vnc_ensure,
        render=render_vnc_ensure,
        summary="Probe the VNC console of each running VM (RFB banner) and repair drift",
        description=(
            "Drift: not answering, no authentication while [hv.vnc] require_auth is set, "
            "persistent config or live endpoint differing from the target set by `vnc "
            "target`, missing nftables rule. Config and firewall drift is repaired (one "
            "operation); a live endpoint only changes at the VM's next start. Domains whose "
            "name is not a valid VM name, and VNC targets in metadata that are not an IP "
            "address and a port 5900-65535, are skipped with a warning. Exit 1 if drift "
            "remains or something was skipped."),
        params=(Param("vms", "Only these VMs (default: every running VM with VNC).",
                      type="list", positional=True, default=None),),
        result="an object: vms [{vm, node, live, probe {banner, security}, drift [text]}], "
               "repaired [text], skipped [{name, node, reason}], status (ok or drift)",
        examples=("hvctl vnc ensure", "hvctl vnc ensure vm1 vm2 --dry-run --json"),
    ),
    Action(
        path="hv.vnc.target", kind="hv.vnc-target", execute=execute_vnc_target,
        render=_print_text,
        summary="Reconfigure VM's VNC endpoint (applies at its next start), validated",
        description=(
            "The port must be free on the node (no other VM's graphics use it); `auto` picks "
            "the lowest free port of [hv.vnc] port_range. With [hv.vnc] firewall = true an "
            "nftables rule opens it on the node. TLS/SASL are set in the node's qemu.conf "
            "(see README)."),
        params=(
            Param("vm", "The VM's name.", positional=True),
            Param("listen", "Address the VNC server listens on."),
            Param("port", "A port number, or `auto` (from [hv.vnc] port_range)."),
            Param("password_file", "Owner-only file with the VNC password (at most 8 "
                                   "characters).", type="path", default=None),
        ),
        result=_OP_RESULT,
        examples=(
            "hvctl vnc target vm1 --listen 0.0.0.0 --port auto "
            "--password-file /etc/debvisor/vm1.vncpw",
            "hvctl vnc target vm1 --listen 10.0.0.5 --port 5905 --dry-run",
            "hvctl vnc target vm1 --rollback --yes",
        ),
    ),
    Action(
        path="hv.hook.install", kind="hv.hook-install", plan=plan_hook_install,
        render=lambda res: print(f"{res.title}: done"),
        summary="Install libvirt's QEMU hook: audit VM starts, stops and migrations, hold "
                "maintenance",
        description=(
            "Writes [hv] hooks_dir (default /etc/libvirt/hooks)/qemu atomically, mode 0755, "
            "owned by root. libvirt runs it on every VM lifecycle event; it runs `hv "
            "hook-event`, which audits start, stop and incoming migration and refuses a VM "
            "start or an incoming migration while this node is in maintenance, even one "
            "asked of plain virsh. A hook that was there before is kept as qemu.debvisor-orig "
            "and runs after DebVisor's checks. libvirtd notices a new hook script only when "
            "it starts: restart it after the first install (running VMs keep running). "
            "`--rollback` removes the script, or puts back the one it replaced, byte for "
            "byte."),
        result=_OP_RESULT,
        examples=("hvctl hook install --dry-run", "hvctl hook install",
                  "hvctl hook install --rollback --yes"),
    ),
    Action(
        path="hv.hook-event", execute=execute_hook_event, render=lambda d: None,
        summary="What libvirt's QEMU hook runs on a VM lifecycle event (audit; refuse starts "
                "in maintenance)",
        description=(
            "libvirt calls the hook with the domain XML on stdin and aborts the start or "
            "migration when it exits non-zero, showing its stderr. `prepare begin` (any "
            "start) and `migrate begin` (an incoming migration) are refused while this node "
            "is in maintenance (exit 3) and, failing closed, when its maintenance state "
            "cannot be read; `started begin`, `stopped end` and `migrate begin` are audited. "
            "Nothing is printed on stdout (libvirt reads a migrating domain's XML from it). "
            "The installed hook runs the same code without the CLI's start-up."),
        params=(
            Param("vm", "The domain's name.", positional=True),
            Param("operation", "libvirt's operation: prepare, start, started, stopped, "
                               "release, migrate, restore, reconnect or attach.",
                  positional=True),
            Param("sub_operation", "begin or end.", positional=True),
            Param("extra", "libvirt's extra argument (- when none).", positional=True,
                  default="-"),
        ),
        result="an object: vm, hook (OPERATION SUB-OPERATION), allowed, audited (the audit "
               "record's result, or null)",
        examples=("hvctl hook-event vm1 prepare begin - < vm1.xml",),
    ),
    *MEDIA_ACTIONS,
]
