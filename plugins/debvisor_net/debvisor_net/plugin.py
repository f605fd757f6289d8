"""DebVisor network plugin: the hooks. Light on purpose: pyroute2 is imported only when a
command talks to the kernel."""

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
    from .cli import net

    return net


@hookimpl
def debvisor_actions() -> list[Action]:
    from .actions import ACTIONS

    return ACTIONS


@hookimpl
def debvisor_step_types() -> list[type[Step]]:
    from . import steps

    return [steps.NetApply, steps.NetConfirm, steps.NetPersist]


@hookimpl
def debvisor_health(ctx: Context) -> list[HealthCheck]:
    from .health import checks

    return checks()
