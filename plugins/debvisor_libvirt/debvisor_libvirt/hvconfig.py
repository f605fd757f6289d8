"""Typed access to the `[hv]` config: a wrong type is one sentence naming key and file."""

from __future__ import annotations

from typing import Any

from debvisor_core.context import Context
from debvisor_core.errors import BadInput


def config_error(ctx: Context, key: str, problem: str) -> BadInput:
    """``config FILE: KEY PROBLEM`` as bad input (exit 2)."""
    return BadInput(f"config {ctx.config.path}: {key} {problem}")


def table(ctx: Context, name: str) -> dict[str, Any]:
    """The ``[hv.NAME]`` table (empty when absent)."""
    value = ctx.section("hv").get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise config_error(ctx, f"[hv] {name}", f"must be a table ([hv.{name}]), not {value!r}")
    return value


def string(ctx: Context, where: str, spec: dict[str, Any], key: str) -> str | None:
    """``spec[key]`` as a non-empty string, or None when absent."""
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise config_error(ctx, f"{where} {key}", f"must be a non-empty string, not {value!r}")
    return value


def string_list(ctx: Context, where: str, spec: dict[str, Any], key: str) -> list[str]:
    """``spec[key]`` as a list of strings (empty when absent)."""
    value = spec.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise config_error(ctx, f"{where} {key}",
                           f"must be a list of paths like [\"/srv/vmstore\"], not {value!r}")
    return value


def number(ctx: Context, where: str, spec: dict[str, Any], key: str, default: float,
           *, minimum: float = 0.0) -> float:
    """``spec[key]`` as a finite number ≥ ``minimum`` (``default`` when absent)."""
    import math

    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < minimum:
        raise config_error(ctx, f"{where} {key}", f"must be a number ≥ {minimum:g}, not {value!r}")
    return float(value)
