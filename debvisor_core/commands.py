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

from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from .context import Context
from .errors import BadInput

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


def _target(c: click.Context, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What the command's positional arguments name (``{"vm": "vm1", "action": "create"}``)."""
    names = [p.name for p in c.command.params if isinstance(p, click.Argument) and p.name]
    return {n: kwargs[n] for n in names
            if n in kwargs and kwargs[n] is not None and not isinstance(kwargs[n], tuple | list)}


def operation_options(kind: str, *, destructive: bool = False) -> Callable[[F], F]:
    """Add --dry-run, --check, --yes, --force-maintenance and --rollback.

    ``--rollback`` undoes the last successful run of operation ``kind`` on the same
    target — the command's positional arguments (``hvctl snapshot vm1 create --rollback``
    undoes vm1's last snapshot creation, never another VM's); without arguments, the
    last one of that kind. It honours --dry-run, --check and --json, and names the
    operation it picked before it acts.
    """

    def opt(name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
        def cb(c: click.Context, _p: click.Parameter, value: bool) -> None:
            if value:
                setattr(get_ctx(c).op_options, name, True)

        return cb

    def yes(c: click.Context, _p: click.Parameter, value: bool) -> None:
        if value:
            get_ctx(c).yes = True

    def rollback(c: click.Context, _p: click.Parameter, value: bool) -> None:
        if not value or c.resilient_parsing:
            return
        get_ctx(c).op_options.rollback = True
        # The command's arguments only narrow the choice: none of them is required for
        # this invocation (restored afterwards: the command object may be reused).
        relaxed = [p for p in c.command.params if p.required]
        for param in relaxed:
            param.required = False

        def restore() -> None:
            for param in relaxed:
                param.required = True

        c.call_on_close(restore)

    def deco(fn: F) -> F:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            c = click.get_current_context()
            ctx = get_ctx(c)
            ctx.target = _target(c, kwargs)
            opts = ctx.op_options
            if ctx.remote is not None and (opts.rollback or opts.force_maintenance):
                flag = "--rollback" if opts.rollback else "--force-maintenance"
                raise BadInput(f"{flag} does not go through --remote; run it on the node "
                               "(or `debvisor --remote NODE ops rollback ID`)")
            if opts.rollback:
                from .engine import rollback_last

                rollback_last(ctx, kind, ctx.target)
                return None
            return fn(*args, **kwargs)

        wrapped: Any = click.decorators.update_wrapper(wrapper, fn)
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
                         help=f"Undo the last successful '{kind}' operation on the same target "
                              "(the arguments given) instead of running."),
        ]
        for o in reversed(options):
            wrapped = o(wrapped)
        wrapped.__dict__.setdefault("__debvisor_op__", {"kind": kind, "destructive": destructive})
        return cast(F, wrapped)

    return deco

