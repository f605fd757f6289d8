"""`debvisor audit`: show and verify the audit log."""

from __future__ import annotations

import time
from typing import Any

import click

from .. import audit, hookimpl
from ..actions import Action, Outcome, Param, attach
from ..context import Context
from ..errors import BadInput
from ..output import iso_utc


@click.group("audit")
def audit_group() -> None:
    """Show and verify the tamper-evident audit log (a hash chain of JSON lines).

    \b
    Example:
      debvisor audit show --since 2h
      debvisor audit verify
    """


def _since(value: str | None) -> str | None:
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        back, now = int(value[:-1]) * units[value[-1]], time.time()
        return iso_utc(now - back if back < now else 0.0)  # older than the epoch: everything
    try:
        time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S" if "T" in value else "%Y-%m-%d")
    except ValueError:
        raise BadInput(f"--since {value!r}: use a duration like 30m, 2h, 7d or a date "
                       "like 2026-11-25 or 2026-11-25T10:00:00") from None
    return value


def _show(ctx: Context, p: dict[str, Any]) -> list[dict[str, Any]]:
    cutoff = _since(p["since"])
    events = [e for e in audit.read(audit.log_path(ctx)) if not cutoff or e.get("time", "") >= cutoff]
    return events[-p["limit"]:]


def _render_show(rows: list[dict[str, Any]]) -> None:
    for e in rows:
        user = e.get("user", {})
        who = str(user.get("name", "?"))
        if user.get("sudo_user"):
            who += f" (sudo {user['sudo_user']})"
        elif user.get("claimed_sudo_user"):
            who += f" (claims sudo {user['claimed_sudo_user']}, unverified)"
        what = " ".join(x for x in (e.get("plugin"), e.get("action")) if x) or "-"
        op = f" op={e['operation']}" if e.get("operation") else ""
        print(f"{e.get('time')} {e.get('host')} {who} {what} -> {e.get('result')}{op}")
    if not rows:
        print("no audit events")


def _verify(ctx: Context, p: dict[str, Any]) -> Any:
    path = audit.log_path(ctx)
    ok, msg, n = audit.verify(path)
    data = {"ok": ok, "message": msg, "lines": n, "path": str(path)}
    return data if ok else Outcome(data, 1)


def _render_verify(r: dict[str, Any]) -> None:
    print(f"{r['path']}: {r['message']}" if r["ok"] else f"{r['path']}: TAMPERED — {r['message']}")


ACTIONS = [
    Action("audit.show", "Show recent audit events", privilege="none", query=_show,
           render=_render_show,
           params=(Param("since", "Only events after this: 30m, 2h, 7d, or an ISO date/time.",
                         default=None),
                   Param("limit", "At most this many (newest).", type="int", default=50,
                         minimum=1)),
           result="a list of audit events (time, host, user, plugin, action, result, operation, "
                  "caller, details, seq, prev, hash)",
           examples=("debvisor audit show --since 1d --json",
                     "debvisor --remote node2 audit show --since 2h")),
    Action("audit.verify", "Check the hash chain and its sealed head; exit 1 naming the first "
                           "problem",
           description="Detected: an edited, deleted or reordered line, lines deleted at the "
                       "end, a deleted log, a rewritten head, a fresh chain replacing the old "
                       "one. Needs the audit key (STATE/keys/audit.key), so run it as root.",
           privilege="root", query=_verify, render=_render_verify,
           result="{ok, message, lines, path}",
           examples=("debvisor audit verify && echo intact",
                     "debvisor --remote node2 audit verify")),
]
attach(audit_group, ACTIONS)


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS


@hookimpl
def debvisor_commands() -> click.Command:
    return audit_group
