"""`debvisor maintenance`: while enabled, new operations are refused. ``enable --drain``
also runs a ``node.maintenance`` operation to which plugins contribute the steps that empty
the node (the k8s plugin cordons and drains it); ``disable`` rolls that operation back.

With a cluster store (hook ``debvisor_cluster_maintenance``: the ceph plugin's RADOS omap,
``[ceph] cluster_state = true``) maintenance is cluster-wide state: ``enable --node B``
on node A puts B in maintenance, and B refuses its own operations until it is lifted."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from .. import hookimpl
from ..actions import Action, Param, attach
from ..context import Context
from ..engine import Finding
from ..health import CheckResult, HealthCheck
from ..model import Step
from ..timefmt import iso_utc

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import Operation


def _path(ctx: Context) -> Any:
    return ctx.state_dir / "maintenance.json"


def _read(path: Any) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _local(ctx: Context) -> dict[str, Any] | None:
    """This node's own maintenance record (``maintenance.json``), or None. A daemon that
    watches the state directory (``ctx.env.state_watch``, an rpcd ``DirWatch``: inotify)
    reads the file again only after something there changed — no failed ``open`` per
    status query; anything else reads it every time."""
    watch = getattr(ctx.env, "state_watch", None)
    if watch is None or not watch.ok:
        return _read(_path(ctx))
    state = ctx.state_dir
    if state is not watch.directory and state != watch.directory:  # DEBVISOR_STATE_DIR moved
        return _read(_path(ctx))
    gen = watch.generation  # before the read: a change after it moves it again
    hit = getattr(watch, "maintenance", None)
    if hit is not None and hit[0] == gen:
        rec: dict[str, Any] | None = hit[1]
    else:
        rec = _read(_path(ctx))
        watch.maintenance = (gen, rec)
    return dict(rec) if rec is not None else None  # the caller's copy


def this_node(ctx: Context) -> str:
    """This node's name in the cluster: ``[cluster] node``, else the short host name."""
    import socket

    from ..settings import Section

    return Section.of(ctx, "cluster").string("node") or socket.gethostname().split(".")[0]


def store(ctx: Context) -> Any:
    """The cluster-wide maintenance store a plugin provides, or None."""
    hook = ctx.hook.debvisor_cluster_maintenance
    return hook(ctx=ctx) if hook.get_hookimpls() else None  # none: not pluggy's call


_ASK = object()  # current(): ask the plugins for the cluster store


def current(ctx: Context, st: Any = _ASK) -> dict[str, Any] | None:
    """The maintenance record if maintenance mode is on for this node: its own, else the
    one the cluster store holds for it (set from any node); ``st``: the store, when the
    caller already asked for it (:func:`store`)."""
    rec = _local(ctx)
    if rec:
        return rec
    if st is _ASK:
        st = store(ctx)
    if st is None:
        return None
    from .. import log

    try:
        return st.get(this_node(ctx))
    except Exception as exc:  # noqa: BLE001 - an unreachable store must not wedge the node
        log.warn(f"cannot read the cluster's maintenance state: {exc}")
        return None


#: the operation kind of ``enable --drain``: plugins add their drain steps to it
KIND = "node.maintenance"


def _record(ctx: Context, reason: str, **extra: Any) -> dict[str, Any]:
    from ..identity import operator

    return {"enabled": True, "reason": reason, "since": iso_utc(), "by": operator(), **extra}


def _writable(ctx: Context) -> None:
    from ..audit import unwritable_reason
    from ..errors import PreflightRefused

    problem = unwritable_reason(ctx)
    if problem:
        raise PreflightRefused(problem)


def _other_node(ctx: Context, p: dict[str, Any]) -> str | None:
    """The node ``--node`` names when it is not this one (then the cluster store is needed)."""
    from ..errors import BadInput

    node = p.get("node")
    if not node or node == this_node(ctx):
        return None
    if store(ctx) is None:
        raise BadInput(f"maintenance of another node ({node}) needs a cluster store "
                       f"([ceph] cluster_state = true); or run it there (--remote {node})")
    return str(node)


def _enable(ctx: Context, p: dict[str, Any]) -> Any:
    from ..statefile import write_json

    other = _other_node(ctx, p)
    if other is not None:
        from ..errors import BadInput

        if p["drain"]:
            raise BadInput(f"--drain runs on the node itself: `debvisor --remote {other} "
                           f"maintenance enable --drain`")
        if ctx.op_options.dry_run or ctx.op_options.check:
            return {"enabled": False, "dry_run": True, "reason": p["reason"], "node": other}
        _writable(ctx)
        rec = _record(ctx, p["reason"], set_from=this_node(ctx))
        ctx.audit("enabled", reason=p["reason"], node=other)
        store(ctx).put(other, rec)
        return {**rec, "node": other}
    if p["drain"]:
        return _enable_draining(ctx, p)
    if ctx.op_options.dry_run or ctx.op_options.check:
        from .. import log

        log.info("dry run: maintenance mode would be turned on; nothing was changed")
        return {"enabled": bool(current(ctx)), "dry_run": True, "reason": p["reason"]}
    _writable(ctx)
    rec = _record(ctx, p["reason"])
    ctx.audit("enabled", reason=p["reason"])  # audited before it happens
    write_json(_path(ctx), rec)
    st = store(ctx)
    if st is not None:
        st.put(this_node(ctx), {**rec, "set_from": this_node(ctx)})
    return rec


def _enable_draining(ctx: Context, p: dict[str, Any]) -> Any:
    """A journalled operation: this step turns maintenance on first (no new operation
    starts while the node empties), then the steps plugins contribute for ``node.maintenance``
    (ordered by their ORDER); a failed drain rolls everything back."""
    from .. import engine, log
    from ..model import Operation

    reason = p["reason"] or "node drained for maintenance"
    op = Operation(kind=KIND, title=f"maintenance mode with drain: {reason}",
                   steps=[EnterMaintenance(reason)], destructive=True,
                   params={"drain": True, "reason": reason,
                           "drain_timeout": float(p["drain_timeout"])})
    res = engine.run(ctx, op)  # the engine adds the plugins' steps (debvisor_steps)
    if len(res.steps) == 1:
        log.warn("no installed plugin drains anything on this node (hv with [hv] node, k8s "
                 "with a kubeconfig, ceph with OSDs here): only maintenance mode is on")
    return res.to_dict()


@dataclass
class EnterMaintenance(Step):
    """Turn maintenance mode on, naming the operation (undo: the mode as it was)."""

    TYPE = "core.maintenance-enter"
    NAME = "EnterMaintenance"
    ORDER = 5  # before anything a plugin contributes: no new operation starts meanwhile
    reason: str = ""

    def describe(self, ctx: Context) -> str:
        return f"turn maintenance mode on ({self.reason})"

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        return {"before": _local(ctx)}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from ..statefile import write_json

        op_id = ctx.operation.id if ctx.operation is not None else None
        rec = _record(ctx, self.reason, operation=op_id)
        write_json(_path(ctx), rec)
        st = store(ctx)
        if st is not None:
            st.put(this_node(ctx), {**rec, "set_from": this_node(ctx)})
        return {}

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        from ..statefile import write_json

        before = record.get("before")
        if before:
            write_json(_path(ctx), before)
        else:
            _path(ctx).unlink(missing_ok=True)
        st = store(ctx)
        if st is not None and not before:
            st.put(this_node(ctx), None)


def _disable(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    other = _other_node(ctx, p)
    if other is not None:
        was_there = store(ctx).get(other)
        _writable(ctx)
        ctx.audit("disabled", previous=was_there, node=other)
        store(ctx).put(other, None)
        return {"enabled": False, "was_enabled": bool(was_there), "node": other}
    was = current(ctx)
    if was and was.get("operation"):
        return _disable_draining(ctx, was)
    _writable(ctx)
    ctx.audit("disabled", previous=was)  # audited before it happens
    _path(ctx).unlink(missing_ok=True)
    st = store(ctx)
    if st is not None:
        st.put(this_node(ctx), None)
    return {"enabled": False, "was_enabled": bool(was)}


def _disable_draining(ctx: Context, was: dict[str, Any]) -> dict[str, Any]:
    """Maintenance that ``enable --drain`` turned on ends by rolling that operation back
    (uncordon, …); asking to disable is the confirmation."""
    from .. import engine, journal
    from ..errors import BadInput

    op_id = str(was["operation"])
    try:
        journal.find(ctx.state_dir, op_id)
    except BadInput:
        from .. import log

        log.warn(f"operation {op_id} that drained the node is gone from the journal: only "
                 f"maintenance mode is turned off")
        _writable(ctx)
        ctx.audit("disabled", previous=was)
        _path(ctx).unlink(missing_ok=True)
        return {"enabled": False, "was_enabled": True}
    ctx.yes = True
    res = engine.rollback_op(ctx, op_id)
    if res.status != "rolled-back":
        from ..errors import DebvisorError

        raise DebvisorError(f"rolling back operation {op_id} (the drain) ended "
                            f"{res.status}: {res.error or 'see debvisor ops show ' + op_id}")
    return {"enabled": bool(current(ctx)), "was_enabled": True, "rolled_back": op_id}


def _status(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    st = store(ctx)  # one hook call for both reads
    out = current(ctx, st) or {"enabled": False}
    if st is not None:
        out = {**out, "cluster": st.all()}
    return out


def _render_enable(r: dict[str, Any]) -> None:
    if "steps" in r:  # the drain operation's result
        if r["status"] == "succeeded":
            print(f"{r['title']}: done")
    elif r.get("dry_run"):
        print("dry run: maintenance mode would be turned on")
    else:
        where = f" on {r['node']}" if r.get("node") else ""
        print(f"maintenance mode enabled{where}{': ' + r['reason'] if r['reason'] else ''}")


ACTIONS = [
    Action("maintenance.enable", "Turn maintenance mode on; --drain also empties the node",
           execute=_enable, kind=KIND, render=_render_enable,
           description="While it is on, every new operation is refused at preflight unless it "
                       "is run with --force-maintenance. Audited. With --drain it is a "
                       "journalled operation: maintenance on, then what the installed plugins "
                       "contribute (the hv plugin live-migrates the node's VMs away and "
                       "checks that none is left, the k8s plugin cordons the node and evicts "
                       "its pods, PDB-aware); `maintenance disable` rolls it back (the VMs "
                       "come back, the node is uncordoned).",
           params=(Param("reason", "Why (shown to anyone whose operation is refused).",
                         default=""),
                   Param("node", "Another node to put in maintenance (needs the cluster "
                                 "store: [ceph] cluster_state = true).", default=None,
                         pattern=r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}"),
                   Param("drain", "Also empty the node: the steps plugins contribute (hv: "
                                  "migrate its VMs away; k8s: cordon and drain).",
                         type="bool", default=False),
                   Param("drain_timeout", "How long the drain may take (e.g. 10m).",
                         type="duration", default=600.0, minimum=1)),
           result="{enabled, reason, since, by}; with --drain the operation result",
           examples=('debvisor maintenance enable --reason "Ceph upgrade"',
                     'debvisor maintenance enable --drain --reason "disk swap" --dry-run',
                     'debvisor maintenance enable --drain --reason "disk swap" --yes')),
    Action("maintenance.disable", "Turn maintenance mode off", execute=_disable,
           description="Maintenance that `enable --drain` turned on ends by rolling that "
                       "operation back: the node is uncordoned.",
           params=(Param("node", "Another node's maintenance to lift (the cluster store).",
                         default=None, pattern=r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}"),),
           render=lambda r: print(("maintenance mode disabled" if r["was_enabled"]
                                   else "maintenance mode was not on")
                                  + (f" on {r['node']}" if r.get("node") else "")
                                  + (f" (rolled back {r['rolled_back']})"
                                     if r.get("rolled_back") else "")),
           result="{enabled: false, was_enabled, rolled_back (the drain operation, if any)}",
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
      debvisor maintenance enable --drain --reason "disk swap" --yes
      debvisor maintenance status
      debvisor maintenance disable
    """


attach(maintenance, ACTIONS)


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS


@hookimpl
def debvisor_step_types() -> list[type[Step]]:
    return [EnterMaintenance]


@hookimpl
def debvisor_preflight(ctx: Context, op: Operation) -> list[Finding]:
    rec = current(ctx)
    if not rec or op.kind == KIND:  # the maintenance operation itself
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
