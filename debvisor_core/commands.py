"""Decorators for plugin commands.

::

    @click.command()
    @click.argument("name")
    @json_option
    @operation_options("example.write", destructive=True)
    @pass_ctx
    def write(ctx: Context, name: str) -> None:
        ctx_run(ctx, build_operation(name))
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .context import Context

F = TypeVar("F", bound=Callable[..., Any])


def get_ctx(click_ctx: click.Context | None = None) -> Context:
    """The DebVisor context of the current invocation."""
    c = click_ctx or click.get_current_context()
    obj = c.find_root().obj
    if not isinstance(obj, Context):  # called outside `debvisor` (tests, embedding)
        obj = Context()
        c.find_root().obj = obj
    return obj


def pass_ctx(fn: F) -> F:
    """Pass the DebVisor :class:`Context` as the first argument."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(get_ctx(), *args, **kwargs)

    return click.decorators.update_wrapper(wrapper, fn)  # type: ignore[return-value]


def _set_json(c: click.Context, _p: click.Parameter, value: bool) -> None:
    if value:
        get_ctx(c).json = True


json_option = click.option(
    "--json", "json_flag", is_flag=True, expose_value=False, callback=_set_json,
    help="Print one JSON document on stdout.",
)


def operation_options(kind: str, *, destructive: bool = False) -> Callable[[F], F]:
    """Add --dry-run, --check, --yes, --force-maintenance and --rollback.

    ``--rollback`` undoes the last successful run of operation ``kind`` and exits,
    without needing the command's other arguments.
    """

    def opt(name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
        def cb(c: click.Context, _p: click.Parameter, value: bool) -> None:
            if value:
                setattr(get_ctx(c).op_options, name, True)

        return cb

    def rollback(c: click.Context, _p: click.Parameter, value: bool) -> None:
        if not value or c.resilient_parsing:
            return
        from .engine import rollback_last

        ctx = get_ctx(c)
        ctx.op_options.rollback = True
        # --rollback is eager (it needs none of the command's arguments), so a later
        # --yes on the same command line has not been processed yet: look for it.
        if any(a in ("-y", "--yes") for a in sys.argv[1:]):
            ctx.yes = True
        rollback_last(ctx, kind)
        c.exit(0)

    def yes(c: click.Context, _p: click.Parameter, value: bool) -> None:
        if value:
            get_ctx(c).yes = True

    def deco(fn: F) -> F:
        options = [
            click.option("--dry-run", is_flag=True, expose_value=False, callback=opt("dry_run"),
                         help="Print the plan and change nothing."),
            click.option("--check", is_flag=True, expose_value=False, callback=opt("check"),
                         help="Run the preflight checks only."),
            click.option("-y", "--yes", is_flag=True, expose_value=False, callback=yes,
                         help="Do not ask for confirmation."),
            click.option("--force-maintenance", is_flag=True, expose_value=False,
                         callback=opt("force_maintenance"),
                         help="Run even though maintenance mode is on."),
            click.option("--rollback", is_flag=True, expose_value=False, is_eager=True,
                         callback=rollback,
                         help=f"Undo the last successful '{kind}' operation and exit."),
        ]
        for o in reversed(options):
            fn = o(fn)
        fn.__dict__.setdefault("__debvisor_op__", {"kind": kind, "destructive": destructive})
        return fn

    return deco
