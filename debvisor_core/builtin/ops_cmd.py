"""`debvisor ops`: the operation journal, declared as actions."""

from __future__ import annotations

from typing import Any

import click

from .. import engine, hookimpl, journal
from ..actions import Action, Param, attach
from ..context import Context
from ..output import table


def _list(ctx: Context, p: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [o.summary() for o in journal.all_ops(ctx.state_dir)]
    if p["status"]:
        rows = [r for r in rows if r["status"] == p["status"]]
    if p["origin"]:
        rows = [r for r in rows if r["origin"] == p["origin"]]
    return rows[:p["limit"]]


def _render_list(rows: list[dict[str, Any]]) -> None:
    print(table(rows, [("id", "ID"), ("kind", "KIND"), ("status", "STATUS"), ("started", "STARTED"),
                       ("user", "USER"), ("title", "TITLE")]) if rows else "no operations")


def _show(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    return journal.load(journal.find(ctx.state_dir, p["id"])).to_dict()


def _render_show(d: dict[str, Any]) -> None:
    print(f"{d['id']}  {d['kind']}  {d['status']}\n  {d['title']}")
    print(f"  by {d['user']} from {d['started']} to {d['ended'] or '-'}")
    if d["error"]:
        print(f"  error: {d['error']}")
    for s in d["steps"]:
        err = f" — {s['error']}" if s["error"] else ""
        print(f"  {s['index']}. [{s['status']}] {s['description']}{err}")
    if d["status"] in journal.BLOCKING:
        print(f"  next: debvisor ops rollback {d['id']}   or   debvisor ops resume {d['id']}")


def _rollback(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    ctx.yes = ctx.yes or p["yes"]
    ctx.op_options.dry_run = p["dry_run"]
    return engine.rollback_op(ctx, p["id"]).to_dict()


def _resume(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    ctx.yes = ctx.yes or p["yes"]
    ctx.op_options.force_maintenance = p["force_maintenance"]
    return engine.resume_op(ctx, p["id"]).to_dict()


_ID = Param("id", "The operation's id (or a unique prefix of it), from `debvisor ops list`.",
            positional=True)
_YES = Param("yes", "Do not ask for confirmation.", type="bool", default=False, short="-y")

ACTIONS = [
    Action("ops.list", "List recent operations, newest first", privilege="none", query=_list,
           render=_render_list,
           params=(Param("limit", "Show at most this many.", type="int", default=20, minimum=1),
                   Param("status", "Only operations with this status (e.g. interrupted).",
                         default=None),
                   Param("origin", "Only operations run for this remote step (OPID.STEP).",
                         default=None)),
           result="a list of {id, kind, title, status, user, started, ended, steps, error, target, "
                  "origin}",
           examples=("debvisor ops list", "debvisor ops list --status interrupted --json")),
    Action("ops.show", "Show one operation with each step's status and undo record",
           privilege="none", query=_show, render=_render_show, params=(_ID,),
           result="the operation with its steps, phases, params, locks and records",
           examples=("debvisor ops show 20261125-101500-ab12cd --json",)),
    Action("ops.rollback", "Undo the applied steps of an operation, newest first",
           description="Works for succeeded, interrupted (e.g. the process was killed), paused "
                       "and rollback-incomplete operations. The operation's locks are taken "
                       "first and its journal re-read under them, so two rollbacks never both "
                       "act.",
           execute=_rollback,
           render=lambda r: print(f"rolled back {r['id']}") if r["status"] != "dry-run" else None,
           params=(_ID, Param("dry_run", "Show what would be undone; change nothing.",
                              type="bool", default=False), _YES),
           result="{id, kind, title, status, steps: [{index, name}], error}",
           examples=("debvisor ops rollback 20261125-101500-ab12cd --yes",
                     "debvisor ops rollback 20261125-101500 --dry-run")),
    Action("ops.resume", "Continue an interrupted or paused operation from where it stopped",
           description="The interrupted step is undone from its snapshot first, then applied "
                       "again. Preflight runs first (maintenance mode, interrupted operations, "
                       "each step's check).",
           execute=_resume, render=lambda r: print(f"resumed {r['id']}: {r['status']}"),
           params=(_ID, _YES, Param("force_maintenance", "Resume even though maintenance mode is on.",
                                    type="bool", default=False)),
           result="{id, kind, title, status, steps, findings, duration_ms, result: the "
                  "operation's result, the steps of every run included (a rolling upgrade's "
                  "nodes), error}",
           examples=("debvisor ops resume 20261125-101500-ab12cd --yes",)),
]


@click.group("ops")
def ops() -> None:
    """List, show, roll back and resume operations from the journal.

    \b
    Example:
      debvisor ops list
      debvisor ops show 20261125-101500-ab12cd
      debvisor ops rollback 20261125-101500-ab12cd --yes
    """


attach(ops, ACTIONS)


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS


@hookimpl
def debvisor_commands() -> click.Command:
    return ops
