"""`debvisor firstboot run|status`: first-boot provisioning, once (the unit
``debvisor-firstboot.service`` runs it), and its report."""

from __future__ import annotations

from typing import Any

import click

from .. import hookimpl
from ..actions import Action, Outcome, Param, attach
from ..context import Context
from ..firstboot import Module

MARK = {"ok": "OK  ", "skipped": "SKIP", "failed": "FAIL"}


def _run(ctx: Context, p: dict[str, Any]) -> Any:
    from ..firstboot import run

    report = run(ctx, force=p["force"])
    if report.get("status") == "failed":
        return Outcome(report, 1, f"first boot stopped at {report['failed']}: fix it; the "
                                  f"next run (the unit retries) continues from there")
    return report


def _status(ctx: Context, p: dict[str, Any]) -> Any:
    from ..firstboot import Settings, marker, read_report

    s = Settings.of(ctx)
    report = read_report(s.report) or {"status": "not run", "modules": []}
    done = marker(ctx)
    return {**report, "report": str(s.report), "done": done.exists(),
            "done_at": done.read_text().strip() if done.exists() else None}


def _render(r: dict[str, Any]) -> None:
    from ..output import table

    if r.get("already_done"):
        print(f"first boot already completed at {r['done_at']}: nothing to do (--force runs "
              f"it again)")
        return
    rows = [{**m, "mark": MARK.get(m["status"], m["status"]),
             "ms": m["duration_ms"], "result": m["result"]
             + (" (earlier run)" if m.get("earlier_run") else "")} for m in r["modules"]]
    if rows:
        print(table(rows, [("mark", "STATUS"), ("name", "MODULE"), ("ms", "MS"),
                           ("result", "RESULT")]))
    print(f"first boot: {r['status']}" + (f" (report {r['report']})" if r.get("report") else "")
          + (f"; {r['disabled']}" if r.get("disabled") else ""))


ACTIONS = [
    Action("firstboot.run", "Run the first-boot modules not done yet (once; the unit runs it)",
           execute=_run, render=_render,
           description="Modules come from the core and the plugins and run in name order, "
                       "each skipped when it does not apply to [firstboot] roles. A failing "
                       "module stops the run (exit 1); the next run continues from it. When "
                       "all are done the marker is written, the report saved and the unit "
                       "disabled. Audited.",
           params=(Param("force", "Run every module again, even after completion.",
                         type="bool", default=False),),
           result="{status: ok|failed, host, started, finished, roles, failed (module), "
                  "modules: [{name, plugin, status: ok|skipped|failed, result, duration_ms, "
                  "output_tail [line]}], disabled} (or already_done, done_at)",
           examples=("debvisor firstboot run", "debvisor --json firstboot run --force")),
    Action("firstboot.status", "Show the first-boot report and whether it completed",
           query=_status, render=_render, privilege="none",
           result="the last report (see firstboot.run) plus report (its path), done, done_at",
           examples=("debvisor firstboot status", "debvisor --json firstboot status")),
]


@click.group("firstboot")
def firstboot() -> None:
    """First-boot provisioning: the modules the core and plugins contribute, run once.

    \b
    Example:
      debvisor firstboot run
      debvisor firstboot status --json
    """


attach(firstboot, ACTIONS)


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS


@hookimpl
def debvisor_firstboot_modules(ctx: Context) -> list[Module]:
    from ..firstboot import core_modules

    return core_modules()


@hookimpl
def debvisor_commands() -> click.Command:
    return firstboot
