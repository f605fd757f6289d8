"""Core features written as plugins; their table (word -> module, help) lives in
:mod:`debvisor_core.discovery` so `debvisor --help` reads it without importing them."""

from __future__ import annotations

from ..discovery import BUILTIN_COMMANDS, BUILTIN_HOOKS

__all__ = ["BUILTIN_COMMANDS", "BUILTIN_HOOKS"]
