"""`debvisor health`: every plugin's checks, concurrently, with a timeout each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .. import hookimpl, log
from ..actions import Action, Outcome, Param, command
from ..context import Context
from ..errors import BadInput
from ..health import collect, run_checks
from ..output import table

MARK = {"ok": "OK  ", "warn": "WARN", "crit": "CRIT"}


def _run(ctx: Context, p: dict[str, Any]) -> Any:
    path = p["collect_diagnostics"]
    if path is not None and not path.endswith((".tar.gz", ".tgz")):
        raise BadInput("--collect-diagnostics needs a path ending in .tar.gz")
    checks = collect(ctx)
    if p["only"]:
        checks = [c for c in checks if c.name.startswith(p["only"])]
    report = run_checks(ctx, checks)
    if path:
        _bundle(ctx, Path(path), report)
    failed = report["status"] == "crit" or (p["strict"] and report["status"] == "warn")
    return Outcome(report, 1) if failed else report


def _render(r: dict[str, Any]) -> None:
    rows = [{**c, "mark": MARK[c["status"]]} for c in r["checks"]]
    cols = [("mark", "STATUS"), ("name", "CHECK"), ("summary", "SUMMARY")]
    if log.verbose():
        cols.append(("duration_ms", "MS"))
    print(table(rows, cols))
    c = r["counts"]
    print(f"\noverall: {r['status'].upper()} ({c['ok']} ok, {c['warn']} warn, {c['crit']} crit)")
    if log.verbose():
        for row in r["checks"]:
            if row["details"]:
                print(f"{row['name']}: {json.dumps(row['details'], default=str)}")


ACTION = Action(
    "health.run", "Run every installed plugin's health checks and summarise ok / warn / crit",
    description="Exit 0 unless a check is crit (or warn, with --strict). The JSON shape is in "
                "docs/health.md.",
    query=_run, render=_render, privilege="none",
    params=(Param("strict", "Exit 1 on warnings too.", type="bool", default=False),
            Param("collect_diagnostics", "Also write a diagnostics bundle (PATH.tar.gz) here.",
                  type="path", default=None),
            Param("only", "Run only checks whose name starts with this (e.g. dns.).", default=None)),
    result="{status, counts: {ok, warn, crit}, checks: [{name, plugin, status, summary, details, "
           "duration_ms}], time} (docs/health.md)",
    examples=("debvisor health", "debvisor health --json --strict",
              "debvisor health --collect-diagnostics /tmp/diag.tar.gz"),
)
health = command(ACTION, "health")


def _bundle(ctx: Context, path: Path, report: dict[str, Any]) -> None:
    from ..bundle import DiagnosticsBundle

    if not path.parent.is_dir():
        raise BadInput(f"--collect-diagnostics: directory {path.parent} does not exist")
    bundle = DiagnosticsBundle(path)
    try:
        bundle.add_text("health.json", json.dumps(report, indent=2, default=str))
        for impl in ctx.hook.debvisor_diagnostics.get_hookimpls():
            try:
                impl.function(ctx=ctx, bundle=bundle)
            except Exception as exc:  # noqa: BLE001 - one plugin must not spoil the bundle
                bundle.add_text(f"errors/{impl.plugin_name}.txt", f"{type(exc).__name__}: {exc}\n")
        bundle.close()
    except BaseException:
        bundle.abort()
        raise
    log.info(f"diagnostics written to {path} ({len(bundle.items)} items)")


@hookimpl
def debvisor_actions() -> list[Action]:
    return [ACTION]


@hookimpl
def debvisor_commands() -> click.Command:
    return health
