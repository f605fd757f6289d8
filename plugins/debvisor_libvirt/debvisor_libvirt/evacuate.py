"""`debvisor maintenance enable --drain` on a hypervisor: every running VM of this node is
live-migrated to another node first (``EvacuateVM``, ORDER 8: before Kubernetes cordons
at 12), and the maintenance only holds when the node is empty (``VerifyNoVMs``, ORDER 96).
Undo (`maintenance disable`, or a failed drain) migrates them back, past this node's
libvirt hook (`hv hook install`), which refuses other incoming migrations meanwhile.

``[hv] node`` names this host among ``[hv.nodes]``; ``[hv] evacuate_to`` (default: every
other node) lists the targets, used in turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from debvisor_core import log
from debvisor_core.errors import BadInput, StepFailed
from debvisor_core.model import Step

from .migrate import MigrateVM

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context
    from debvisor_core.model import Operation


@dataclass
class EvacuateVM(MigrateVM):
    """Live-migrate one VM off the node going into maintenance (undo: migrate it back)."""

    TYPE = "hv.evacuate"
    NAME = "EvacuateVM"
    ORDER = 8

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Migrate the VM back while this node is still in maintenance (its step is undone
        last), past the node's libvirt hook (`hv hook install`), which refuses other
        incoming migrations meanwhile."""
        from .hookevent import allowed

        with allowed(ctx, self.vm, f"the undo of the maintenance drain of {self.source} "
                                   f"(migrating {self.vm} back)"):
            super().undo(ctx, record)


@dataclass
class VerifyNoVMs(Step):
    """The node runs no VM any more (one started meanwhile fails the drain)."""

    TYPE = "hv.verify-empty"
    NAME = "VerifyNoVMs"
    ORDER = 96
    node: str

    def describe(self, ctx: Context) -> str:
        return f"check that {self.node} runs no VM"

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        left = running_vms(ctx, self.node)
        if left:
            raise StepFailed(f"{self.node} still runs {', '.join(left)}: it is not empty")
        log.info(f"{self.node} runs no VM")
        return {}


def running_vms(ctx: Context, name: str) -> list[str]:
    from .nodes import connect, lv
    from .nodes import node as get_node

    conn = connect(get_node(ctx, name))
    return sorted(d.name() for d in conn.listAllDomains(lv().VIR_CONNECT_LIST_DOMAINS_ACTIVE))


def contributed(ctx: Context, op: Operation) -> list[Step] | None:
    """The evacuation of ``[hv] node`` (None when no node is named: not a hypervisor)."""
    from debvisor_core.settings import Section

    from .nodes import nodes

    sec = Section.of(ctx, "hv")
    me = op.params.get("hv_node") or sec.string("node")
    if not me:
        return None
    known = nodes(ctx)
    if me not in known:
        raise BadInput(f"[hv] node {me!r} is not one of [hv.nodes] ({', '.join(sorted(known))})")
    targets = [n for n in (sec.strings("evacuate_to") or sorted(known)) if n != me]
    unknown = [n for n in targets if n not in known]
    if unknown:
        raise BadInput(f"[hv] evacuate_to names unknown nodes: {', '.join(unknown)}")
    vms = running_vms(ctx, me)
    if vms and not targets:
        raise BadInput(f"{me} runs {', '.join(vms)} but [hv.nodes] has no other node to take "
                       f"them")
    timeout = float(op.params.get("drain_timeout") or 600)
    steps: list[Step] = [EvacuateVM(vm, me, targets[i % len(targets)], timeout_s=timeout)
                         for i, vm in enumerate(vms)]
    return [*steps, VerifyNoVMs(me)]
