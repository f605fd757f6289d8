"""DebVisor Kubernetes plugin: the hooks. Light on purpose: the ``kubernetes`` client is
imported only when a command talks to the API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from debvisor_core import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    import click

    from debvisor_core.actions import Action
    from debvisor_core.context import Context
    from debvisor_core.engine import Operation, Step
    from debvisor_core.health import HealthCheck


@hookimpl
def debvisor_commands() -> click.Command:
    from .cli import k8s

    return k8s


@hookimpl
def debvisor_actions() -> list[Action]:
    """nodes, workloads, cordon, uncordon and drain, declared as data."""
    from .actions import ACTIONS

    return ACTIONS


@hookimpl
def debvisor_step_types() -> list[type[Step]]:
    from . import steps

    return [steps.Cordon, steps.Uncordon, steps.Evict, steps.ApplyObjects, steps.DeleteObjects,
            steps.UpgradeCordon, steps.UpgradeEvict, steps.UpgradeUncordon]


@hookimpl
def debvisor_health(ctx: Context) -> list[HealthCheck]:
    from .health import checks

    return checks()


#: operation kinds this plugin drains the node around (see README "Contract for upgrades")
UPGRADE_KINDS = ("node.upgrade",)


@hookimpl
def debvisor_steps(ctx: Context, op: Operation) -> list[Step] | None:
    """Around a ``node.upgrade`` of this node, with a kubeconfig: cordon (ORDER 12) and drain
    (ORDER 14) the Kubernetes node, uncordon it after (ORDER 88). ``params``:
    ``k8s_drain`` False opts out, ``k8s_node`` names the node (default: [k8s] node_name,
    else this host's short name), ``k8s_drain_timeout`` (seconds, default 600)."""
    if op.kind not in UPGRADE_KINDS or op.params.get("k8s_drain") is False:
        return None
    from .health import configured

    if not configured(ctx):
        return None
    from .client import Settings
    from .steps import UpgradeCordon, UpgradeEvict, UpgradeUncordon

    name = str(op.params.get("k8s_node") or Settings.of(ctx).this_node())
    reason = f"debvisor {op.kind}: {op.title}"
    return [UpgradeCordon(name, reason),
            UpgradeEvict(name, timeout_s=float(op.params.get("k8s_drain_timeout") or 600)),
            UpgradeUncordon(name, reason)]
