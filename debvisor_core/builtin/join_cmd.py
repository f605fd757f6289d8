"""`debvisor join --mode ceph|hv|k8s|dns|all`: this node joins the cluster's services, one
operation composed of the join steps the installed plugins contribute for ``node.join``
(each plugin's own phase, in plugin order: Ceph's OSDs, the hypervisor's QEMU hook, the
Kubernetes worker, the node's DNS record);
a step that fails rolls back everything joined so far (graceful removal)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .. import hookimpl
from ..actions import Action, Param, command

if TYPE_CHECKING:  # pragma: no cover
    from ..context import Context
    from ..model import Operation, OpResult

KIND = "node.join"
#: phase order: storage first, the workload schedulers after it
PHASE_ORDER = ("ceph", "hv", "k8s", "dns")


def plan(ctx: Context, p: dict[str, Any]) -> Operation:
    from ..actions import Unchanged
    from ..model import ROLLBACK_ALL, Operation, Phase

    mode = p["mode"]
    probe = Operation(kind=KIND, title="", steps=[], params={"mode": mode})
    phases = []
    for impl in ctx.hook.debvisor_steps.get_hookimpls():
        steps = impl.function(ctx=ctx, op=probe) or []
        if steps:
            phases.append(Phase(impl.plugin_name, list(steps), on_failure=ROLLBACK_ALL))
    if not phases:
        what = "any plugin" if mode == "all" else f"the {mode} plugin"
        raise Unchanged({"status": "unchanged", "mode": mode},
                        f"nothing to join for mode {mode}: {what} has nothing to add on this "
                        f"node (already joined, or no [{mode if mode != 'all' else 'PLUGIN'}.join] "
                        f"table in the config)")
    phases.sort(key=lambda ph: PHASE_ORDER.index(ph.name) if ph.name in PHASE_ORDER else 99)
    names = ", ".join(ph.name for ph in phases)
    return Operation(kind=KIND, title=f"join this node: {names}", phases=phases,
                     params={"mode": mode}, destructive=True, locks=[KIND], contributions=False)


def render(res: OpResult) -> None:
    r = res.result or {}
    if r.get("osds"):
        print(f"ceph: created {', '.join(f'osd.{i}' for i in r['osds'])}")
    print(f"{res.title}: done (operation {res.id})")


ACTION = Action(
    "join.run", "Join this node to the cluster's services (Ceph OSDs, hypervisor hook, "
                "Kubernetes worker, DNS record) as one operation",
    plan=plan, kind=KIND, render=render, destructive=True,
    description="Each installed plugin contributes its join steps from its own config table "
                "([ceph.join]: devices, class, weight…; [k8s.join]: api, token_file, ca_hash, "
                "labels, taints…; [hv.join]: the QEMU hook that holds maintenance against "
                "plain virsh; [dns.join]: address, name, zone, ttl, ptr), checked in the "
                "preflight (monitors and control plane "
                "reachable, health, already joined?). The steps run as one journalled "
                "operation, one phase per plugin; a failure undoes everything joined so far.",
    params=(Param("mode", "What to join: one plugin's part, or all.", type="choice",
                  choices=("ceph", "hv", "k8s", "dns", "all"), default="all"),),
    unchanged="nothing to join",
    result="the operation result: id, kind, title, status, steps, findings, duration_ms, "
           "error; result.osds: the Ceph OSD ids created",
    examples=("debvisor join --mode all --dry-run", "debvisor join --mode ceph --yes",
              "debvisor join --mode dns --yes",
              "debvisor join --rollback --yes"),
)
join = command(ACTION, "join")


@hookimpl
def debvisor_actions() -> list[Action]:
    return [ACTION]


@hookimpl
def debvisor_commands() -> click.Command:
    return join
