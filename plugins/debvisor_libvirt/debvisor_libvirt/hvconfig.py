"""Typed access to the `[hv]` config, on the core's :class:`~debvisor_core.settings.Section`:
a wrong type is one sentence naming key and file."""

from __future__ import annotations

from typing import Any

from debvisor_core.context import Context
from debvisor_core.errors import BadInput
from debvisor_core.settings import Section


def config_error(ctx: Context, key: str, problem: str) -> BadInput:
    """``config FILE: KEY PROBLEM`` as bad input (exit 2)."""
    return Section.at(ctx, key, {}).error("", problem)


def table(ctx: Context, name: str) -> dict[str, Any]:
    """The ``[hv.NAME]`` table (empty when absent)."""
    return Section.of(ctx, "hv").table(name)


def string(ctx: Context, where: str, spec: dict[str, Any], key: str) -> str | None:
    """``spec[key]`` as a non-empty string, or None when absent."""
    return Section.at(ctx, where, spec).string(key)


def string_list(ctx: Context, where: str, spec: dict[str, Any], key: str) -> list[str]:
    """``spec[key]`` as a list of paths (empty when absent)."""
    return Section.at(ctx, where, spec).strings(key, describe='a list of paths like ["/srv/vmstore"]')


def number(ctx: Context, where: str, spec: dict[str, Any], key: str, default: float,
           *, minimum: float = 0.0) -> float:
    """``spec[key]`` as a finite number ≥ ``minimum`` (``default`` when absent)."""
    return float(Section.at(ctx, where, spec).number(key, default, minimum=minimum))
