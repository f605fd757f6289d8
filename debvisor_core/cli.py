"""The `debvisor` command: a root click group whose words resolve lazily to plugins.

``debvisor --help`` imports click and reads the plugin cache; it imports no plugin,
no pluggy and no importlib.metadata.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from . import __version__, log
from .discovery import BUILTIN_COMMANDS
from .output import report

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_HOST_KEY = "debvisor.host"


def _host(ctx: click.Context) -> Any:
    root = ctx.find_root()
    host = root.meta.get(_HOST_KEY)
    if host is None:
        from .plugins import PluginHost

        host = root.meta[_HOST_KEY] = PluginHost()
    return host


def _one_line(summary: str, dist: str, width: int) -> str:
    """A plugin's one short line for the root --help: what comes after its name in the
    distribution's summary ("DebVisor DNS plugin (`debvisor dns`): TSIG-signed …" gives
    "TSIG-signed …"), cut at a word to fit one line."""
    text = summary.split("): ", 1)[1] if "): " in summary else summary
    text = text[:1].upper() + text[1:] if text else f"From {dist}."
    width = max(width, 30)
    if len(text) <= width:
        return text
    cut = text[: width - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


def _remote_runs(ctx: click.Context, cmd: click.Command, words: list[str]) -> None:
    """Refuse ``--remote`` before anything runs unless the words name a declared action
    (only those go through a node's rpcd; help stays local)."""
    leaf, rest = cmd, words[1:]
    while isinstance(leaf, click.Group) and rest and not rest[0].startswith("-"):
        nxt = leaf.get_command(ctx, rest[0])
        if nxt is None:
            return  # click reports the unknown command
        leaf, rest = nxt, rest[1:]
    if getattr(leaf, "debvisor_action", None) or "--help" in rest or "-h" in rest:
        return
    said = " ".join(words[: len(words) - len(rest)])
    raise click.UsageError(f"--remote runs declared actions (`debvisor actions list`); "
                           f"`{said}` is not one")


class RootGroup(click.Group):
    """Resolves ``debvisor WORD`` to a built-in or plugin command only when typed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_host(ctx).words())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _host(ctx).command(cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        try:
            name, cmd, rest = super().resolve_command(ctx, args)
        except click.UsageError:
            reason = _host(ctx).unavailable_reason(args[0]) if args else None
            if reason:  # installed, but disabled or broken: say which, and why
                raise click.UsageError(f"'{args[0]}' is {reason}") from None
            raise
        if ctx.params.get("remote") and cmd is not None and not ctx.resilient_parsing:
            _remote_runs(ctx, cmd, [str(name), *rest])
        alias = os.environ.get("DEBVISOR_ALIAS")
        if alias and not ctx.info_name and name == os.environ.get("DEBVISOR_ALIAS_WORD"):
            name = alias  # usage lines read `hvctl list`, not `hvctl hv list`
        return name, cmd, rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from . import discovery

        rows = [(w, h) for w, (_, h) in sorted(BUILTIN_COMMANDS.items())]
        plugins = []
        for entry in discovery.installed():
            if entry.name in BUILTIN_COMMANDS or discovery.blocked_reason(entry.name):
                continue
            plugins.append((entry.name, _one_line(entry.summary, entry.dist,
                                                  formatter.width - 8 - len(entry.name))))
        with formatter.section("Core commands"):
            formatter.write_dl(rows)
        if plugins:
            with formatter.section("Plugin commands"):
                formatter.write_dl(plugins)

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """Like click's, but usage errors are one `[ERROR] …` line (exit 2)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            log.error(f"{exc.format_message()}{where}")
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            log.error(exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort:
            log.error("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - one line, no traceback
            ctx.exit(report(exc))


EPILOG = """\b
Examples:
  debvisor plugins list            installed plugins and their status
  debvisor health --json           every plugin's health checks as JSON
  debvisor ops list                recent operations (journal)
  debvisor hv list --filter running
\b
Shell completion (bash):  eval "$(_DEBVISOR_COMPLETE=bash_source debvisor)"
Exit codes: 0 ok, 1 failed, 2 bad input, 3 preflight refused,
            4 failed and rolled back, 5 rollback incomplete."""


@click.group(cls=RootGroup, context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.option("--json", "json_", is_flag=True, help="Print one JSON document on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Add [DEBUG] lines (retry policies, timings).")
@click.option("--log-file", type=click.Path(dir_okay=False), help="Also append log lines here.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="Config file (default $DEBVISOR_CONFIG or /etc/debvisor/debvisor.toml).")
@click.option("-y", "--yes", is_flag=True, help="Answer yes to confirmations (for scripts).")
@click.option("--events", is_flag=True,
              help="Print one JSON event per line on stdout (plan, log, step, progress, result).")
@click.option("--origin", metavar="OPID.STEP", hidden=True,
              help="The remote operation step this run is for (set by RemoteAction).")
@click.option("--remote", metavar="NODE",
              help="Run the command (a declared action) on NODE through its debvisor-rpcd: "
                   "same output and exit code ([rpcd.client], [rpcd.nodes.NODE] address).")
@click.version_option(__version__, prog_name="debvisor")
@click.pass_context
def main_group(ctx: click.Context, json_: bool, verbose: bool, log_file: str | None,
               config_file: str | None, yes: bool, events: bool, origin: str | None,
               remote: str | None) -> None:
    """DebVisor operations toolkit: one command to run a DebVisor hypervisor cluster.

    Every state change is an operation: preflight, plan, confirmation, journalled
    steps with undo, verification and an audit event. Add --dry-run to see the plan,
    --check to run only the preflight, --rollback to undo the last run.
    """
    from .context import Context

    try:
        log.configure(verbose=verbose, log_file=log_file)
    except OSError as exc:
        raise click.BadParameter(f"cannot open {log_file}: {exc.strerror}",
                                 param_hint="--log-file") from None
    if origin is not None:
        from .journal import ORIGIN_RE

        if not ORIGIN_RE.fullmatch(origin):
            raise click.BadParameter("must be OPID.STEP", param_hint="--origin")
    dctx = Context(json=json_, verbose=verbose, yes=yes, config_file=config_file, origin=origin,
                   remote=remote)
    dctx._host = _host(ctx)
    ctx.obj = dctx
    if events and not ctx.resilient_parsing:
        from .ui import JsonEventsUI

        dctx.ui = JsonEventsUI(sys.stdout)
        ctx.with_resource(dctx.ui.bound())
    if not ctx.resilient_parsing:
        dctx.config  # noqa: B018 - a bad config file is one clear error, before any work


_GLOBAL_FLAGS = {"--json", "-v", "--verbose", "-y", "--yes", "--events"}
_GLOBAL_VALUED = {"--log-file", "--config", "--origin", "--remote"}


def _lift_verbose(args: list[str]) -> list[str]:
    """Accept --verbose anywhere before `--` (``hvctl migrate vm1 node2 --verbose``)."""
    end = args.index("--") if "--" in args else len(args)
    if "--verbose" not in args[:end]:
        return args
    head = [a for a in args[:end] if a != "--verbose"]
    return ["--verbose", *head, *args[end:]]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point of `debvisor`."""
    main_group.main(args=_lift_verbose(list(sys.argv[1:] if argv is None else argv)),
                    prog_name="debvisor")


def alias_main(word: str, prog: str) -> None:
    """Run ``debvisor WORD …`` under another name (``hvctl list`` = ``debvisor hv list``)."""
    args = sys.argv[1:]
    lead: list[str] = []
    while args and (args[0] in _GLOBAL_FLAGS or args[0] in _GLOBAL_VALUED):
        lead.append(args.pop(0))
        if lead[-1] in _GLOBAL_VALUED and args:
            lead.append(args.pop(0))
    os.environ["DEBVISOR_ALIAS"] = prog
    os.environ["DEBVISOR_ALIAS_WORD"] = word
    main_group.main(args=_lift_verbose([*lead, word, *args]), prog_name="")
