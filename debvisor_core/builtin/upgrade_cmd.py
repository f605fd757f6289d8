"""`debvisor upgrade check [--diff]`: the pre-upgrade checklist of this node, contributed by
plugins (hook ``debvisor_upgrade_checks``), and the package changes apt predicts."""

from __future__ import annotations

import json
from typing import Any

import click

from .. import hookimpl, log
from ..actions import Action, Outcome, Param, attach
from ..context import Context
from ..health import HealthCheck

MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def _check(ctx: Context, p: dict[str, Any]) -> Any:
    from ..health import collect, run_checks
    from ..upgrade import ORDER, Node, simulate

    checks = collect(ctx, "debvisor_upgrade_checks", failed="fail")
    if p["only"]:
        checks = [c for c in checks if c.name.startswith(p["only"])]
    report = run_checks(ctx, checks, order=ORDER, failed="fail")
    if p["diff"]:
        report["diff"] = simulate(Node.of(ctx))
    if report["counts"]["fail"]:
        return Outcome(report, 1, f"{report['counts']['fail']} check(s) failed: solve them "
                                  f"one at a time and run `debvisor upgrade check` again")
    return report


def _render(r: dict[str, Any]) -> None:
    from ..output import table
    from ..upgrade import diff_text

    rows = [{**c, "mark": MARK[c["status"]]} for c in r["checks"]]
    cols = [("mark", "STATUS"), ("name", "CHECK"), ("summary", "SUMMARY")]
    print(table(rows, cols))
    c = r["counts"]
    print(f"\nTOTAL {len(r['checks'])}: {c['pass']} passed, {c['warn']} warnings, "
          f"{c['fail']} failures, {c['skip']} skipped")
    if "diff" in r:
        print("\n" + diff_text(r["diff"]))
    if log.verbose():
        for row in r["checks"]:
            if row["details"]:
                print(f"{row['name']}: {json.dumps(row['details'], default=str)}")


ACTIONS = [
    Action(
        "upgrade.check", "Check whether this node is ready to upgrade (pass/warn/fail/skip), "
                         "and with --diff what the upgrade would change",
        description="The checks come from the core and every installed plugin: free disk, "
                    "apt sources, what apt would do, held packages, running vs newest kernel, "
                    "time sync, ZFS's DKMS module, unfinished operations; Ceph health and "
                    "versions; Kubernetes nodes. Nothing is changed. Exit 1 when a check fails.",
        query=_check, render=_render,
        params=(Param("diff", "Also list the package changes (apt-get -s dist-upgrade).",
                      type="bool", default=False),
                Param("only", "Run only checks whose name starts with this (e.g. ceph.).",
                      default=None)),
        result="{status, counts: {skip, pass, warn, fail}, checks: [{name, plugin, status, "
               "summary, details, duration_ms}], diff: {upgrade [{name, from, to, origin}], "
               "install [{name, to, origin}], remove [{name, version}], kept_back [name], "
               "summary {upgraded, installed, removed, not_upgraded}, kernel [name], "
               "reboot_expected} (with --diff)}",
        examples=("debvisor upgrade check", "debvisor upgrade check --diff",
                  "debvisor --json upgrade check --only core."),
    ),
]


@click.group("upgrade")
def upgrade() -> None:
    """Upgrade readiness of this node: the pre-upgrade checklist and the package diff.

    \b
    Example:
      debvisor upgrade check
      debvisor upgrade check --diff --json
    """


attach(upgrade, ACTIONS)


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS


@hookimpl
def debvisor_upgrade_checks(ctx: Context) -> list[HealthCheck]:
    from ..upgrade import core_checks

    return core_checks()


@hookimpl
def debvisor_commands() -> click.Command:
    return upgrade
