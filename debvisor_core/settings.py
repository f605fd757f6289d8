"""Typed reading of a plugin's config table: a wrong type or value is one sentence
naming the key and the config file (exit 2), never a traceback later on.

::

    s = Section.of(ctx, "hv")                  # the [hv] table
    nodes = s.table("nodes")                   # [hv.nodes], {} when absent
    n1 = s.sub("nodes", "n1")                  # [hv.nodes.n1] as a Section
    lease = s.number("lock_lease", 60, minimum=1, integer=True, unit="seconds")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context


@dataclass
class Section:
    """One config table: ``source`` is the config file and ``where`` how messages name
    the table (``[hv.nodes.n1]``)."""

    source: str
    where: str
    data: dict[str, Any]

    @classmethod
    def of(cls, ctx: Context, name: str) -> Section:
        """The ``[name]`` table of the config in effect."""
        return cls(str(ctx.config.path), f"[{name}]", ctx.section(name))

    @classmethod
    def at(cls, ctx: Context, where: str, data: dict[str, Any]) -> Section:
        """Any table ``data`` of the config in effect, named ``where`` in messages."""
        return cls(str(ctx.config.path), where, data)

    def error(self, key: str, problem: str) -> BadInput:
        """``config FILE: [TABLE] KEY PROBLEM`` as bad input."""
        name = " ".join(p for p in (self.where, key) if p)
        return BadInput(f"config {self.source}: {name} {problem}")

    def table(self, key: str) -> dict[str, Any]:
        """A sub-table (empty when absent)."""
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            inner = f"{self.where[:-1]}.{key}]"
            raise self.error(key, f"must be a table ({inner}), not {value!r}")
        return value

    def sub(self, *keys: str) -> Section:
        """A nested table as a Section (``sub("nodes", "n1")``)."""
        sec = self
        for key in keys:
            sec = Section(self.source, f"{sec.where[:-1]}.{key}]", sec.table(key))
        return sec

    def string(self, key: str, default: str | None = None) -> str | None:
        """A non-empty string, or ``default`` when absent."""
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, not {value!r}")
        return value

    def strings(self, key: str, *, describe: str = 'a list of strings like ["a", "b"]') -> list[str]:
        """A list of non-empty strings (empty when absent)."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"must be {describe}, not {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {value!r}")
        return value

    def number(self, key: str, default: float, *, minimum: float | None = None,
               maximum: float | None = None, above: float | None = None, integer: bool = False,
               unit: str = "") -> float:
        """A finite number (a whole one with ``integer``) within [minimum, maximum] and
        greater than ``above``."""
        value = self.data.get(key, default)
        ok = (not isinstance(value, bool) and isinstance(value, int | float)
              and math.isfinite(value) and (not integer or isinstance(value, int))
              and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
              and (above is None or value > above))
        if not ok:
            kind = "a whole number" if integer else "a number"
            if unit:
                kind += f" of {unit}"
            if minimum is not None and maximum is not None:
                kind += f" from {_num(minimum)} to {_num(maximum)}"
            elif minimum is not None:
                kind += f" ≥ {_num(minimum)}"
            elif above is not None:
                kind += f" > {_num(above)}"
            raise self.error(key, f"must be {kind}, not {value!r}")
        return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
