"""A click group that builds its commands when first asked for (click only, so importing
it costs nothing beyond what every `debvisor` run imports)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


class LazyGroup(click.Group):
    """A group whose commands are built when first asked for: ``WORD --help`` lists them
    from their short help without building one, so it imports neither the engine nor
    the command decorators (``debvisor_core.actions.attach`` fills ``pending``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: name -> (short help for the listing, the function that builds the command)
        self.pending: dict[str, tuple[str, Callable[[], click.Command]]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.pending})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.pending:
            self.add_command(self.pending[cmd_name][1](), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, with the short help of each command not built yet."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in self.commands:
                cmd = self.commands[name]
                if not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit)))
            else:
                rows.append((name, self.pending[name][0]))
        with formatter.section("Commands"):
            formatter.write_dl(rows)
