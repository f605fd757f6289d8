"""A query action with one parameter of every type the query fast path takes
(debvisor_core/quickquery.py), to compare its runs with the full CLI's. Like a real
plugin's actions module it imports no click: its command group is made only when asked."""

from __future__ import annotations

from typing import Any

from debvisor_core import hookimpl
from debvisor_core.actions import Action, Outcome, Param
from debvisor_core.errors import StepFailed


def query_echo(ctx: Any, params: dict[str, Any]) -> Any:
    """The parameters back; ``--fail`` raises, ``--code N`` exits N after showing them."""
    if params["fail"]:
        raise StepFailed(f"failed as asked for {params['name']}", hint="drop --fail")
    data = {**params, "json": ctx.json}
    return Outcome(data, params["code"], "exited as asked") if params["code"] else data


def render_echo(data: dict[str, Any]) -> None:
    print(" ".join(f"{k}={data[k]!r}" for k in sorted(data)))


ACTIONS = [
    Action(
        path="queries.echo", query=query_echo, render=render_echo, privilege="none",
        summary="Print the parameters back",
        params=(Param("name", "A name.", positional=True),
                Param("level", "A level.", type="choice", choices=("low", "high"),
                      default="low", case_sensitive=False),
                Param("count", "A count.", type="int", default=1, minimum=0, maximum=9,
                      short="-c"),
                Param("ratio", "A ratio.", type="float", default=None),
                Param("where", "A path.", type="path", default=None),
                Param("fail", "Fail.", type="bool", default=False),
                Param("code", "Exit with this code.", type="int", default=0)),
        examples=("debvisor queries echo x --level high",),
    ),
]


@hookimpl
def debvisor_commands() -> Any:
    import click

    from debvisor_core.actions import attach

    @click.group("queries")
    def queries() -> None:
        """Query actions for the fast path's tests.

        Example: debvisor queries echo x --level high
        """

    return attach(queries, ACTIONS)


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS
