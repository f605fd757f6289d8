"""DebVisor Kubernetes plugin: the hooks. Light on purpose: the ``kubernetes`` client is
imported only when a command talks to the API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from debvisor_core import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    import click

    from debvisor_core.actions import Action
    from debvisor_core.context import Context
    from debvisor_core.engine import Step
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

    return [steps.Cordon, steps.Uncordon, steps.Evict, steps.ApplyObjects, steps.DeleteObjects]


@hookimpl
def debvisor_health(ctx: Context) -> list[HealthCheck]:
    from .health import checks

    return checks()
