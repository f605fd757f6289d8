"""What `net interactive` gives the terminal UI: the diff against the kernel and the same
checks `net apply` makes, both on the data being edited (nothing is written or applied)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context


def callbacks(ctx: Context, file: Path) -> tuple[Callable[[dict[str, Any]], str],
                                                Callable[[dict[str, Any]], list[str]]]:
    """(diff, validate) for :func:`debvisor_net.tui.run` editing ``file``."""
    from debvisor_core.errors import BadInput

    from . import desired

    def validate(data: dict[str, Any]) -> list[str]:
        import yaml

        from debvisor_core.netconfig import Report, check_network_config

        report = Report()
        check_network_config(yaml.safe_dump(data).encode(), str(file), report)
        return [str(e) for e in report.errors] or desired.rules(data.get("network", data),
                                                               str(file))

    def diff(data: dict[str, Any]) -> str:
        from .actions import _applied, _running
        from .converge import plan

        problems = validate(data)
        if problems:
            return "\n".join(problems)
        now = _running()
        try:
            target = desired.target(data.get("network", data), now, _applied(ctx))
        except (BadInput, ValueError) as exc:
            return str(exc)
        try:
            lines = [c.description for c in plan(now, target)]
        except ValueError as exc:
            return str(exc)
        return "\n".join(lines) or "the kernel already holds this state"

    return diff, validate
