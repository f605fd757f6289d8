"""`debvisor actions`: every installed action as data — its parameter schema, privilege
and whether it changes state — and a JSON-in, JSON-out runner."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import actions, hookimpl
from ..commands import json_option, pass_ctx
from ..context import Context
from ..errors import BadInput
from ..output import table


@click.group("actions")
def actions_group() -> None:
    """List, describe and run the declared actions (what the daemon and the panel serve).

    \b
    Examples:
      debvisor actions list
      debvisor actions show example.note.add --json
      echo '{"name": "hello", "text": "hi"}' | debvisor actions run example.note.add - --yes
    """


@actions_group.command("list")
@click.option("--plugin", help="Only this plugin's actions.")
@json_option
@pass_ctx
def list_(ctx: Context, plugin: str | None) -> None:
    """List every installed action: path, whether it changes state, privilege, summary.

    \b
    Examples:
      debvisor actions list
      debvisor actions list --plugin hv --json
    """
    rows = [a.describe() for a in actions.installed(ctx).values()
            if plugin is None or a.plugin == plugin]

    def human(rs: list[dict[str, Any]]) -> None:
        print(table([{**r, "changes": "yes" if r["changes_state"] else "no"} for r in rs], [
            ("path", "ACTION"), ("changes", "CHANGES"), ("privilege", "PRIVILEGE"),
            ("summary", "SUMMARY")]) if rs else "no actions declared")

    ctx.emit(rows, human)


@actions_group.command("show")
@click.argument("path")
@json_option
@pass_ctx
def show(ctx: Context, path: str) -> None:
    """Show one action: its parameters as JSON Schema, privilege, result and examples.

    \b
    Examples:
      debvisor actions show example.note.add
    """
    d = actions.find(ctx, path).describe()

    def human(x: dict[str, Any]) -> None:
        print(f"{x['path']}  ({'changes state' if x['changes_state'] else 'read-only'}"
              f"{', destructive' if x['destructive'] else ''}; privilege {x['privilege']})")
        print(f"  {x['summary']}")
        for name, p in x["params"]["properties"].items():
            req = " (required)" if name in x["params"]["required"] else ""
            secret = " [secret]" if p.get("x-secret") else ""
            print(f"  {name}{req}{secret}: {p['description']}")
        if x["result"]:
            print(f"  result: {x['result']}")
        for e in x["examples"]:
            print(f"  e.g. {e}")

    ctx.emit(d, human)


@actions_group.command("run")
@click.argument("path")
@click.argument("params_file", metavar="PARAMS", required=False, default=None)
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--check", is_flag=True, help="Run the preflight checks only.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force-maintenance", is_flag=True, help="Run even though maintenance mode is on.")
@pass_ctx
def run(ctx: Context, path: str, params_file: str | None, dry_run: bool, check: bool, yes: bool,
        force_maintenance: bool) -> None:
    """Run action PATH with parameters from a JSON object (file PARAMS, or - for stdin).

    The result is printed as one JSON document; exit codes are the CLI's. Secrets go
    in the JSON object, never on the command line.

    \b
    Examples:
      echo '{"name": "a", "text": "b"}' | debvisor actions run example.note.add - --yes
      debvisor actions run example.note.show
    """
    ctx.json = True
    raw: Any = {}
    if params_file is not None:
        try:
            text = sys.stdin.read() if params_file == "-" else open(params_file, encoding="utf-8").read()
            raw = json.loads(text) if text.strip() else {}
        except OSError as exc:
            raise BadInput(f"cannot read {params_file}: {exc.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInput(f"{params_file}: not a JSON object ({exc})") from None
    ctx.yes = ctx.yes or yes
    ctx.op_options.dry_run, ctx.op_options.check = dry_run, check
    ctx.op_options.force_maintenance = force_maintenance
    action = actions.find(ctx, path)
    actions.exit_with(actions.run(ctx, action, action.validate(raw)))


@hookimpl
def debvisor_commands() -> click.Command:
    return actions_group

