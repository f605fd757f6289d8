"""`debvisor ops`: the operation journal."""

from __future__ import annotations

from typing import Any

import click

from .. import engine, hookimpl, journal
from ..commands import json_option, pass_ctx
from ..context import Context
from ..output import table


@click.group("ops")
def ops() -> None:
    """List, show, roll back and resume operations from the journal.

    \b
    Example:
      debvisor ops list
      debvisor ops show 20261125-101500-ab12cd
      debvisor ops rollback 20261125-101500-ab12cd --yes
    """


@ops.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1),
              help="Show at most this many.")
@click.option("--status", help="Only operations with this status (e.g. interrupted).")
@json_option
@pass_ctx
def list_(ctx: Context, limit: int, status: str | None) -> None:
    """List recent operations, newest first.

    \b
    Example:
      debvisor ops list --status interrupted
    """
    rows = [o.summary() for o in journal.all_ops(ctx.state_dir)]
    if status:
        rows = [r for r in rows if r["status"] == status]
    rows = rows[:limit]
    ctx.emit(rows, lambda r: print(table(r, [
        ("id", "ID"), ("kind", "KIND"), ("status", "STATUS"), ("started", "STARTED"),
        ("user", "USER"), ("title", "TITLE")]) if r else "no operations"))


@ops.command("show")
@click.argument("op_id", metavar="ID")
@json_option
@pass_ctx
def show(ctx: Context, op_id: str) -> None:
    """Show one operation with each step's status and undo record.

    \b
    Example:
      debvisor ops show 20261125-101500-ab12cd --json
    """
    st = journal.load(journal.find(ctx.state_dir, op_id)).to_dict()

    def human(d: dict[str, Any]) -> None:
        print(f"{d['id']}  {d['kind']}  {d['status']}\n  {d['title']}")
        print(f"  by {d['user']} from {d['started']} to {d['ended'] or '-'}")
        if d["error"]:
            print(f"  error: {d['error']}")
        for s in d["steps"]:
            err = f" — {s['error']}" if s["error"] else ""
            print(f"  {s['index']}. [{s['status']}] {s['description']}{err}")
        if d["status"] in ("interrupted", "rollback-incomplete"):
            print(f"  next: debvisor ops rollback {d['id']}   or   debvisor ops resume {d['id']}")

    ctx.emit(st, human)


@ops.command("rollback")
@click.argument("op_id", metavar="ID")
@click.option("--dry-run", is_flag=True, help="Show what would be undone; change nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_ctx
def rollback(ctx: Context, op_id: str, dry_run: bool, yes: bool) -> None:
    """Undo the applied steps of an operation, newest first.

    Works for succeeded, interrupted (e.g. the process was killed) and
    rollback-incomplete operations.

    \b
    Example:
      debvisor ops rollback 20261125-101500-ab12cd --yes
    """
    ctx.yes = ctx.yes or yes
    ctx.op_options.dry_run = dry_run
    res = engine.rollback_op(ctx, op_id)
    ctx.emit(res.to_dict(), f"rolled back {res.id}" if res.status != "dry-run" else "")


@ops.command("resume")
@click.argument("op_id", metavar="ID")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force-maintenance", is_flag=True, help="Resume even though maintenance mode is on.")
@json_option
@pass_ctx
def resume(ctx: Context, op_id: str, yes: bool, force_maintenance: bool) -> None:
    """Continue an interrupted or paused operation from the step where it stopped.

    The interrupted step is undone from its snapshot first, then applied again.
    Preflight runs first (maintenance mode, interrupted operations, each step's check).

    \b
    Example:
      debvisor ops resume 20261125-101500-ab12cd --yes
    """
    ctx.yes = ctx.yes or yes
    ctx.op_options.force_maintenance = force_maintenance
    res = engine.resume_op(ctx, op_id)
    ctx.emit(res.to_dict(), f"resumed {res.id}: {res.status}")


@hookimpl
def debvisor_commands() -> click.Command:
    return ops
