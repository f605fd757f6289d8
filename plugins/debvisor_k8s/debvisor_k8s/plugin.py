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
    from . import join, labels, steps

    return [steps.Cordon, steps.Uncordon, steps.Evict, steps.ApplyObjects, steps.DeleteObjects,
            steps.UpgradeCordon, steps.UpgradeEvict, steps.UpgradeUncordon, labels.Label,
            labels.Taint, join.KubeadmJoin]


@hookimpl
def debvisor_health(ctx: Context) -> list[HealthCheck]:
    from .health import checks

    return checks()


@hookimpl
def debvisor_upgrade_checks(ctx: Context) -> list[HealthCheck]:
    from .health import upgrade_checks

    return upgrade_checks()


#: operation kinds this plugin drains the node around (see README "Contract for upgrades")
UPGRADE_KINDS = ("node.upgrade",)
#: `debvisor maintenance enable --drain`: cordon and drain, no uncordon (disable rolls back)
MAINTENANCE_KIND = "node.maintenance"


@hookimpl
def debvisor_steps(ctx: Context, op: Operation) -> list[Step] | None:
    """Around a ``node.upgrade`` of this node, with a kubeconfig: cordon (ORDER 12) and drain
    (ORDER 14) the Kubernetes node, uncordon it after (ORDER 88). ``params``:
    ``k8s_drain`` False opts out, ``k8s_node`` names the node (default: [k8s] node_name,
    else this host's short name), ``k8s_drain_timeout`` (seconds, default 600).
    A ``node.maintenance`` with ``drain``: cordon and drain only (``drain_timeout``).
    A ``node.join`` (mode k8s or all): the worker join of ``[k8s.join]``."""
    if op.kind == "node.join":
        if op.params.get("mode") not in ("k8s", "all"):
            return None
        from .join import contributed

        return contributed(ctx)
    maintenance = op.kind == MAINTENANCE_KIND and bool(op.params.get("drain"))
    if (op.kind not in UPGRADE_KINDS and not maintenance) or op.params.get("k8s_drain") is False:
        return None
    from .health import configured

    if not configured(ctx):
        return None
    from .client import Settings
    from .steps import UpgradeCordon, UpgradeEvict, UpgradeUncordon, classify, pod_key, pods_on

    name = str(op.params.get("k8s_node") or Settings.of(ctx).this_node())
    reason = (f"debvisor maintenance: {op.params.get('reason')}" if maintenance
              else f"debvisor {op.kind}: {op.title}")
    timeout = float(op.params.get("k8s_drain_timeout") or op.params.get("drain_timeout") or 600)
    planned = [pod_key(p) for p in classify(pods_on(ctx, name))["evict"]]
    steps: list[Step] = [UpgradeCordon(name, reason),
                         UpgradeEvict(name, timeout_s=timeout, planned=planned)]
    return steps if maintenance else [*steps, UpgradeUncordon(name, reason)]
