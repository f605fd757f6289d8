"""`debvisor health`: every plugin's checks, concurrently, with a timeout each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .. import hookimpl, log
from ..commands import json_option, pass_ctx
from ..context import Context
from ..errors import BadInput
from ..health import collect, run_checks
from ..output import table

MARK = {"ok": "OK  ", "warn": "WARN", "crit": "CRIT"}


@click.command("health")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option("--collect-diagnostics", "bundle_path", type=click.Path(dir_okay=False),
              metavar="PATH.tar.gz", help="Also write a diagnostics bundle here.")
@click.option("--only", help="Run only checks whose name starts with this (e.g. dns.).")
@json_option
@pass_ctx
def health(ctx: Context, strict: bool, bundle_path: str | None, only: str | None) -> None:
    """Run every installed plugin's health checks and summarise ok / warn / crit.

    Exit 0 unless a check is crit (or warn, with --strict). The JSON shape is in
    docs/health.md.

    \b
    Example:
      debvisor health
      debvisor health --json --strict
      debvisor health --collect-diagnostics /tmp/diag.tar.gz
    """
    if bundle_path is not None and not bundle_path.endswith((".tar.gz", ".tgz")):
        raise BadInput("--collect-diagnostics needs a path ending in .tar.gz")
    checks = collect(ctx)
    if only:
        checks = [c for c in checks if c.name.startswith(only)]
    report = run_checks(ctx, checks)
    if bundle_path:
        _bundle(ctx, Path(bundle_path), report)

    def human(r: dict[str, Any]) -> None:
        rows = [{**c, "mark": MARK[c["status"]]} for c in r["checks"]]
        cols = [("mark", "STATUS"), ("name", "CHECK"), ("summary", "SUMMARY")]
        if ctx.verbose:
            cols.append(("duration_ms", "MS"))
        print(table(rows, cols))
        c = r["counts"]
        print(f"\noverall: {r['status'].upper()} ({c['ok']} ok, {c['warn']} warn, {c['crit']} crit)")
        if ctx.verbose:
            for row in r["checks"]:
                if row["details"]:
                    print(f"{row['name']}: {json.dumps(row['details'], default=str)}")

    ctx.emit(report, human)
    if report["status"] == "crit" or (strict and report["status"] == "warn"):
        raise click.exceptions.Exit(1)


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
def debvisor_commands() -> click.Command:
    return health
