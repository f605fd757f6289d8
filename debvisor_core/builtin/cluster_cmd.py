"""`debvisor cluster lock status|break`: who holds the operation locks, this node's
(flocks) and the cluster's (a plugin's, e.g. RADOS locks with a lease), and breaking a
cluster lock whose holder is gone or stuck (it is fenced: it stops before its next step)."""

from __future__ import annotations

from typing import Any

import click

from .. import hookimpl
from ..actions import Action, Param, attach
from ..context import Context


def _status(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    from ..locks import local_locks

    admin = ctx.hook.debvisor_cluster_lock_admin(ctx=ctx)
    return {"local": local_locks(ctx.state_dir),
            "cluster": admin.status() if admin is not None else None}


def _render_status(r: dict[str, Any]) -> None:
    from ..output import table

    rows = [{"scope": "node", "name": x["name"],
             "holder": f"pid {x['pid']} ({x['command'] or 'gone'})" if x["held"] else "free"}
            for x in r["local"]]
    for lk in r["cluster"] or []:
        rows.append({"scope": "cluster", "name": lk["name"],
                     "holder": "; ".join(h["summary"] for h in lk["holders"]) or "free"})
    print(table(rows, [("scope", "SCOPE"), ("name", "LOCK"), ("holder", "HOLDER")])
          if rows else "no operation lock has been taken on this node")
    if r["cluster"] is None:
        print("no cluster lock is configured (the ceph plugin's: [ceph] cluster_lock = true)")


def _break(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    from ..errors import BadInput, PreflightRefused
    from ..locks import local_locks

    name = p["name"]
    admin = ctx.hook.debvisor_cluster_lock_admin(ctx=ctx)
    if admin is None:
        mine = next((x for x in local_locks(ctx.state_dir) if x["name"] == name), None)
        why = (f": the node lock {name!r} is held by pid {mine['pid']}, and a node lock ends "
               f"with its process (`kill {mine['pid']}`)" if mine and mine["held"] else "")
        raise BadInput(f"no cluster lock is configured on this node{why}")
    held = next((lk for lk in admin.status() if lk["name"] == name), None)
    if held is None or not held["holders"]:
        return {"name": name, "broken": [], "status": "free"}
    if not ctx.yes:
        who = "; ".join(h["summary"] for h in held["holders"])
        raise PreflightRefused(f"cluster lock {name!r} is held by {who}; breaking it stops "
                               f"that operation before its next step: give --yes")
    ctx.audit("lock-broken", lock=name, holders=[h["summary"] for h in held["holders"]])
    broken = admin.break_lock(name)
    return {"name": name, "broken": broken, "status": "broken" if broken else "free"}


def _render_break(r: dict[str, Any]) -> None:
    if not r["broken"]:
        print(f"cluster lock {r['name']!r} is not held: nothing to break")
        return
    for h in r["broken"]:
        print(f"broke cluster lock {r['name']!r} held by {h['summary']}")


ACTIONS = [
    Action("cluster.lock.status", "Who holds the operation locks: this node's and the "
                                  "cluster's", query=_status, render=_render_status,
           privilege="none",
           result="{local: [{name, held, pid, command}], cluster: [{name, scope, holders: "
                  "[{summary, node, pid, user, operation, kind, title, since, lease_left_s, "
                  "entity, cookie, addr}]}] (null: no cluster lock configured)}",
           examples=("debvisor cluster lock status", "debvisor --json cluster lock status")),
    Action("cluster.lock.break", "Break a cluster lock (its holder stops before its next "
                                 "step); needs --yes", execute=_break, render=_render_break,
           destructive=True,
           description="For a holder that is stuck, or gone before its lease ran out. The "
                       "holder's operation notices at its next step that the lock is no "
                       "longer its own and fails (rolling back). Audited before it happens.",
           params=(Param("name", "The lock's name (see `cluster lock status`).",
                         positional=True, pattern=r"[A-Za-z0-9_.:-]{1,200}"),),
           result="{name, status: broken|free, broken: [holder]}",
           examples=("debvisor --yes cluster lock break ceph.flags",)),
]


@click.group("cluster")
def cluster() -> None:
    """Cluster-wide state: the operation locks.

    \b
    Example:
      debvisor cluster lock status
      debvisor --yes cluster lock break ceph.flags
    """


@cluster.group("lock")
def lock() -> None:
    """The operation locks: status, and breaking a stuck cluster lock.

    \b
    Example:
      debvisor cluster lock status --json
      debvisor --yes cluster lock break hv.migrate
    """


attach(cluster, ACTIONS)


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS


@hookimpl
def debvisor_commands() -> click.Command:
    return cluster
