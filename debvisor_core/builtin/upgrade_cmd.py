"""`debvisor upgrade check [--diff]`: the pre-upgrade checklist of this node, contributed by
plugins (hook ``debvisor_upgrade_checks``), and the package changes apt predicts;
`debvisor upgrade run`: this node's upgrade as a ``node.upgrade`` operation (the checklist
is its preflight; plugins add their steps around it: Ceph's noout, Kubernetes' drain)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from .. import hookimpl, log
from ..actions import Action, Outcome, Param, attach
from ..context import Context
from ..health import HealthCheck

if TYPE_CHECKING:  # pragma: no cover
    from ..model import Finding, Operation, OpResult, Step

KIND = "node.upgrade"

MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def _check(ctx: Context, p: dict[str, Any]) -> Any:
    from ..health import collect, run_checks
    from ..upgrade import ORDER, Node, checklist, simulate

    if p["only"]:
        checks = [c for c in collect(ctx, "debvisor_upgrade_checks", failed="fail")
                  if c.name.startswith(p["only"])]
        report = run_checks(ctx, checks, order=ORDER, failed="fail")
    else:
        report = checklist(ctx)
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


def _plan_run(ctx: Context, p: dict[str, Any]) -> Operation | None:
    import os

    from ..model import Operation
    from ..upgrade import AptDistUpgrade, Node, RebootCheck, _apt_ok, simulate

    node = Node.of(ctx)
    if not p["no_refresh"]:  # the package lists only (a cache): the plan sees what is new
        _apt_ok(node.apt("-q", "update", timeout=600), "apt-get update")
    sim = simulate(node)
    s = sim["summary"]
    if not (s.get("upgraded") or s.get("installed") or s.get("removed")):
        return None
    predicted = (f"{s.get('upgraded', 0)} upgraded, {s.get('installed', 0)} new, "
                 f"{s.get('removed', 0)} removed"
                 + ("; a new kernel" if sim["reboot_expected"] else ""))
    host = os.uname().nodename
    return Operation(kind=KIND, title=f"upgrade {host}",
                     steps=[AptDistUpgrade(predicted), RebootCheck()], destructive=True,
                     params={"node": host, "predicted": sim["summary"]})


def _status(ctx: Context, p: dict[str, Any]) -> Any:
    from ..upgrade import Node, boot_state, last_reboot

    return {**boot_state(Node.of(ctx)),
            "last_reboot": last_reboot(ctx, p["for_operation"] or None)}


def _render_status(r: dict[str, Any]) -> None:
    print(f"boot {r['boot_id']}: runs {r['running_kernel']}, newest installed "
          f"{r['newest_kernel']}" + (" - reboot needed" if r["reboot_required"] else ""))


def _reboot(ctx: Context, p: dict[str, Any]) -> Any:
    from ..engine import _confirm
    from ..upgrade import Node, boot_state, reboot

    state = boot_state(Node.of(ctx))
    if p["if_needed"] and not state["reboot_required"]:
        return {"rebooting": False, **state}
    _confirm(ctx, f"Reboot this node now (runs {state['running_kernel']}, newest "
                  f"{state['newest_kernel']})?", "reboot")
    return {"rebooting": True, **reboot(ctx, p["for_operation"] or None)}


def _plan_rolling(ctx: Context, p: dict[str, Any]) -> Operation:
    """Two phases per batch of nodes: each node's `upgrade run` through its transport
    (a failure undoes that batch's upgrades and pauses), then the reboot into the newest
    kernel and its verification (a failure pauses and keeps the packages)."""
    from ..errors import BadInput
    from ..model import GATE_AUTO, GATE_PAUSE, PAUSE, ROLLBACK_PHASE_AND_PAUSE, Operation, Phase
    from ..remote import RebootAndVerify, RemoteAction

    inventory = ctx.section("cluster").get("nodes") or {}
    names = [n.strip() for n in ",".join(p["nodes"] or []).split(",") if n.strip()] \
        or sorted(inventory)
    if not names:
        raise BadInput("no nodes: list them in [cluster.nodes.NAME] or give --nodes")
    unknown = [n for n in names if n not in inventory]
    if unknown:
        raise BadInput(f"not in the inventory ([cluster.nodes]): {', '.join(unknown)}")
    if len(set(names)) != len(names):
        raise BadInput("a node is named twice in --nodes")
    batch = int(p["batch"])
    drain = not p["no_drain"]
    phases = []
    for i in range(0, len(names), batch):
        group = names[i:i + batch]
        node = group[0] if len(group) == 1 else None
        gate = GATE_PAUSE if p["pause"] else GATE_AUTO
        # each node's own maintenance with its drain (VMs migrated away, Kubernetes drained)
        # around its upgrade; its undo (or `maintenance disable`) brings them back
        enter = [RemoteAction(n, "maintenance.enable",
                              {"drain": True, "reason": f"rolling upgrade ({', '.join(group)})"},
                              timeout=float(p["timeout"])) for n in group] if drain else []
        leave = [RemoteAction(n, "maintenance.disable", {}, timeout=float(p["timeout"]),
                              force_maintenance=True) for n in group] if drain else []
        upgrades = [RemoteAction(n, "upgrade.run", {}, timeout=float(p["timeout"]),
                                 force_maintenance=drain) for n in group]
        if p["no_reboot"]:
            phases.append(Phase(", ".join(group), [*enter, *upgrades, *leave], node=node,
                                on_failure=ROLLBACK_PHASE_AND_PAUSE, gate=gate,
                                nodes=tuple(group)))
            continue
        phases.append(Phase(", ".join(group), [*enter, *upgrades], node=node,
                            on_failure=ROLLBACK_PHASE_AND_PAUSE, nodes=tuple(group)))
        phases.append(Phase(f"{', '.join(group)}: reboot",
                            [*(RebootAndVerify(n, timeout=float(p["reboot_timeout"]),
                                               settle_s=float(p["services_wait"]))
                               for n in group), *leave],
                            node=node, on_failure=PAUSE, gate=gate, nodes=tuple(group)))
    return Operation(kind="cluster.upgrade", title=f"rolling upgrade of {len(names)} node(s)",
                     phases=phases, destructive=True, locks=["cluster.upgrade"],
                     params={"nodes": names, "batch": batch})


def _render_run(res: OpResult) -> None:
    r = res.result or {}
    pk = r.get("packages") or {}
    print(f"{res.title}: {len(pk.get('upgraded', []))} upgraded, "
          f"{len(pk.get('installed', []))} installed, {len(pk.get('removed', []))} removed")
    if r.get("reboot_required"):
        print(f"reboot needed: kernel {r['newest_kernel']} is installed, "
              f"{r['running_kernel']} runs")


def _render_rolling(res: OpResult) -> None:
    """Per node: the package changes, the kernel before and after, services that changed."""
    for name, n in ((res.result or {}).get("nodes") or {}).items():
        parts = []
        pk = (n.get("upgrade.run") or {}).get("packages")
        if isinstance(pk, dict):
            parts.append(f"{len(pk.get('upgraded', []))} upgraded, "
                         f"{len(pk.get('installed', []))} installed, "
                         f"{len(pk.get('removed', []))} removed")
        rb = n.get("reboot") or {}
        if rb.get("rebooted"):
            parts.append(f"kernel {rb.get('kernel_before')} -> {rb.get('kernel_after')} "
                         f"(back after {rb.get('reboot_s')}s)")
        elif rb:
            parts.append(f"kernel {rb.get('kernel_after')}, no reboot")
        sv = rb.get("services") or {}
        for verb in ("stopped", "started"):
            if sv.get(verb):
                parts.append(f"services {verb}: {', '.join(sv[verb])}")
        print(f"  {name}: {'; '.join(parts) or 'nothing to report'}")
    print(f"{res.title}: done (operation {res.id})")


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
    Action(
        "upgrade.run", "Upgrade this node (apt-get dist-upgrade) as an operation: the "
                       "checklist first, the plugins' drain around it",
        plan=_plan_run, kind=KIND, render=_render_run, destructive=True,
        description="The package lists are refreshed first (apt-get update; --no-refresh "
                    "plans from them as they are), then a failing check of `upgrade check` "
                    "refuses it (a warning is shown). The plugins add their steps around the "
                    "upgrade (Ceph: noout; Kubernetes: "
                    "cordon, drain, uncordon). The package lists before and after are "
                    "journalled; the result says whether a reboot is needed (the newest "
                    "installed kernel is not the running one). --rollback puts the previous "
                    "package versions back while the repositories still have them. It does "
                    "not reboot.",
        params=(Param("no_refresh", "Plan from the package lists as they are (no apt-get "
                                    "update first).", type="bool", default=False),),
        unchanged="nothing to upgrade",
        result="the operation result: id, kind, title, status, steps, findings, "
               "duration_ms, error; result: packages {upgraded [{name, from, to}], installed "
               "[{name, version}], removed [{name, version}]}, running_kernel, "
               "newest_kernel, reboot_required",
        examples=("debvisor upgrade run --dry-run", "debvisor upgrade run --yes",
                  "debvisor upgrade run --rollback --yes"),
    ),
    Action(
        "upgrade.status", "This node's boot: its id, the running and the newest installed "
                          "kernel, and whether a reboot is needed",
        query=_status, render=_render_status, privilege="none",
        description="The running kernel is read from [upgrade] running_kernel_file and the "
                    "boot id from [upgrade] boot_id_file; a reboot is needed when the newest "
                    "/boot/vmlinuz-* is not the running kernel. Services: systemd's running "
                    "service units (without systemd, the processes init started). "
                    "last_reboot is what `upgrade reboot` kept before the last reboot it "
                    "made. The rolling upgrade asks it to see a node come back from its "
                    "reboot with the services it ran before.",
        result="{boot_id, running_kernel, newest_kernel, reboot_required, kernels [oldest "
               "first], services [running, less [upgrade] ignore_services; null if systemd "
               "cannot say], last_reboot {boot_id, running_kernel, services, tag, at} or "
               "null}",
        params=(Param("for_operation", "Give the last reboot made for this operation "
                                       "(`upgrade reboot --for-operation`), not the last "
                                       "reboot.", default=""),),
        examples=("debvisor upgrade status", "debvisor --json upgrade status"),
    ),
    Action(
        "upgrade.reboot", "Reboot this node ([upgrade] reboot_command), audited first",
        execute=_reboot, destructive=True,
        description="Asks for confirmation (or the global --yes). The reboot command (default "
                    "`systemctl reboot`) is started detached, so the answer may be cut off by "
                    "the reboot itself. --if-needed reboots only when the newest installed "
                    "kernel is not the running one.",
        params=(Param("if_needed", "Reboot only if a newer kernel is installed.", type="bool",
                      default=False),
                Param("for_operation", "The operation that asks (kept with the services "
                                       "running before, for its check after the reboot).",
                      default="")),
        result="{rebooting, boot_id, running_kernel, newest_kernel, reboot_required, kernels, "
               "services}",
        examples=("debvisor --yes upgrade reboot --if-needed",),
    ),
    Action(
        "upgrade.rolling", "Upgrade the cluster's nodes one batch at a time (each node's "
                           "`upgrade run` through its transport), pausing on any failure",
        plan=_plan_rolling, kind="cluster.upgrade", destructive=True,
        render=_render_rolling,
        description="Nodes come from [cluster.nodes] (transport ssh or local), in name "
                    "order or as --nodes gives them. Each batch's nodes first go into "
                    "maintenance with --drain (`maintenance enable --drain` there: VMs "
                    "migrated away, Kubernetes drained; --no-drain skips it) and leave it "
                    "after their reboot (`maintenance disable`: VMs back, uncordoned). "
                    "A node whose upgrade fails (its "
                    "checklist refuses it, dpkg fails, it cannot be reached) has its own "
                    "upgrade rolled back and the rolling upgrade pauses there: fix it, then "
                    "`debvisor ops resume ID` continues from that node; `debvisor ops "
                    "rollback ID` undoes every node done. After each batch's upgrade, a node "
                    "whose newest installed kernel is not the running one is rebooted "
                    "(`upgrade reboot` there), waited for (a new boot id) and checked to run "
                    "that kernel; one that boots another kernel pauses the upgrade with its "
                    "packages kept. --pause stops after each batch for a human. Each node "
                    "journals and audits its own upgrade too. The orchestrator itself killed: "
                    "`debvisor ops resume ID` continues where it stopped.",
        params=(Param("nodes", "The nodes, in order (comma-separated or repeated; default "
                               "every node of [cluster.nodes]).", type="list", default=None,
                      metavar="NODE[,NODE]"),
                Param("batch", "Nodes upgraded together in one phase.", type="int",
                      default=1, minimum=1),
                Param("pause", "Stop after each batch until `debvisor ops resume ID`.",
                      type="bool", default=False),
                Param("timeout", "Longest one node's upgrade may take.", type="duration",
                      default=3600.0, minimum=1),
                Param("no_reboot", "Do not reboot nodes into a newly installed kernel.",
                      type="bool", default=False),
                Param("no_drain", "Do not put each node in maintenance with --drain (its VMs "
                                  "migrated away, Kubernetes drained) around its upgrade.",
                      type="bool", default=False),
                Param("reboot_timeout", "Longest a node may take to come back after its "
                                        "reboot.", type="duration", default=900.0, minimum=1),
                Param("services_wait", "Longest a node back from its reboot may take to run "
                                       "every service it ran before (then the upgrade pauses "
                                       "naming the missing ones).", type="duration",
                      default=120.0, minimum=0)),
        result="the operation result: id, kind, title, status (succeeded, paused), steps, "
               "findings, duration_ms, error; result: nodes {NODE: {upgrade.run: its result "
               "(packages, kernels), reboot: {rebooted, kernel_before, kernel_after, "
               "reboot_s, services {stopped, started}}}}",
        examples=("debvisor upgrade rolling --dry-run", "debvisor upgrade rolling --yes",
                  "debvisor upgrade rolling --no-reboot --no-drain --yes",
                  "debvisor upgrade rolling --nodes node3,node1 --pause --yes",
                  "debvisor ops resume ID --yes"),
    ),
]


@click.group("upgrade")
def upgrade() -> None:
    """This node's upgrade: the pre-upgrade checklist, the package diff, the upgrade.

    \b
    Example:
      debvisor upgrade check
      debvisor upgrade check --diff --json
      debvisor upgrade run --dry-run
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
def debvisor_step_types() -> list[type[Step]]:
    from ..remote import RebootAndVerify
    from ..upgrade import AptDistUpgrade, RebootCheck

    return [AptDistUpgrade, RebootCheck, RebootAndVerify]


@hookimpl
def debvisor_preflight(ctx: Context, op: Operation) -> list[Finding] | None:
    """The checklist is the upgrade's preflight: a failed check refuses, a warning shows."""
    if op.kind != KIND or op.params.get("checks") is False:
        return None
    from ..model import Finding
    from ..upgrade import checklist

    report = checklist(ctx)
    level = {"fail": "error", "warn": "warn"}
    return [Finding(level[c["status"]], f"{c['name']}: {c['summary']}", "upgrade")
            for c in report["checks"] if c["status"] in level]


@hookimpl
def debvisor_commands() -> click.Command:
    return upgrade
