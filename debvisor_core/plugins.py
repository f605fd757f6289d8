"""The plugin host: loads plugins lazily and composes them through pluggy.

A plugin is imported only when its word is typed or when a cross-plugin hook runs
(``host.hook`` loads them all). A plugin that fails to import is reported once as
``[WARN] plugin NAME failed to load: REASON`` and everything else keeps working.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import PROJECT, discovery, log
from .discovery import BUILTIN_COMMANDS, BUILTIN_HOOKS

if TYPE_CHECKING:  # pragma: no cover
    import click
    import pluggy


class PluginHost:
    """Owns one pluggy manager per process (made on first use, never at import)."""

    def __init__(self) -> None:
        self._pm: pluggy.PluginManager | None = None
        self._entries: dict[str, discovery.PluginEntry] | None = None
        self.modules: dict[str, ModuleType] = {}
        self.failed: dict[str, str] = {}
        #: the plugin selection (DEBVISOR_PLUGINS, DEBVISOR_DISABLE_PLUGINS) load_all last
        #: loaded every plugin for: a long-lived process (rpcd) calls hooks per request
        self._loaded_for: tuple[str | None, str | None] | None = None

    @property
    def pm(self) -> pluggy.PluginManager:
        if self._pm is None:
            import pluggy

            from . import hookspecs

            pm = pluggy.PluginManager(PROJECT)
            pm.add_hookspecs(hookspecs)
            for name, path in BUILTIN_HOOKS.items():
                pm.register(importlib.import_module(path), name=name)
            if os.environ.get("DEBVISOR_FAULTS"):  # tests only: see faults.py
                pm.register(importlib.import_module("debvisor_core.faults"), name="faults")
            self._pm = pm
        return self._pm

    def entries(self) -> dict[str, discovery.PluginEntry]:
        """Installed (external) plugins by name, including blocked ones."""
        if self._entries is None:
            self._entries = {e.name: e for e in discovery.installed()}
        return self._entries

    def words(self) -> list[str]:
        """Every command word: built-ins and the external plugins allowed to load."""
        ext = [n for n in self.entries() if n not in BUILTIN_COMMANDS]
        return sorted(set(BUILTIN_COMMANDS) | {n for n in ext if not discovery.blocked_reason(n)})

    def load(self, name: str) -> ModuleType | None:
        """Import and register plugin ``name``; None if unknown, blocked or broken."""
        if name in self.modules:
            return self.modules[name]
        if name in self.failed:
            return None
        if name in BUILTIN_COMMANDS:
            module = importlib.import_module(BUILTIN_COMMANDS[name][0])
        else:
            entry = self.entries().get(name)
            if entry is None or discovery.blocked_reason(name):
                return None
            try:
                module = _import(entry.module)
            except Exception as exc:  # noqa: BLE001 - any import error of a plugin
                return self._fail(name, f"{type(exc).__name__}: {exc}")
        unknown = self._unknown_hooks(module)
        if unknown:
            return self._fail(name, f"{', '.join(unknown)} is not a DebVisor hook "
                                    "(see docs/plugins.md for the hook names)")
        try:
            self.pm.register(module, name=name)
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors (wrong arguments)
            lines = str(exc).splitlines()
            return self._fail(name, "; ".join([lines[0], *lines[2:]]) if lines else repr(exc))
        self.modules[name] = module
        return module

    def unavailable_reason(self, name: str) -> str | None:
        """Why word ``name`` has no command although it is installed (one phrase), or None
        when no plugin of that name is installed at all."""
        entry = self.entries().get(name)
        if entry is None:
            return None
        blocked = discovery.blocked_reason(name)
        if blocked:
            return f"installed (from {entry.dist}) but {blocked}"
        if name in self.failed:
            return f"installed (from {entry.dist}) but broken: {self.failed[name]}"
        return f"installed (from {entry.dist}) but declares no command"

    def _unknown_hooks(self, module: ModuleType) -> list[str]:
        """Hook implementations in ``module`` that match no hook specification (a
        misspelled ``debvisor_healthcheck`` would otherwise never be called)."""

        marker = f"{PROJECT}_impl"
        return sorted(n for n, obj in vars(module).items()
                      if getattr(obj, marker, None) is not None
                      and getattr(self.pm.hook, n, None) is None)

    def _fail(self, name: str, reason: str) -> ModuleType | None:
        self.failed[name] = reason
        log.warn(f"plugin {name} failed to load: {reason}")
        return None

    def load_all(self) -> None:
        """Load every allowed plugin (for cross-plugin hooks); once per plugin selection
        (the entries are read once per host, and loading a plugin is idempotent)."""
        key = (os.environ.get("DEBVISOR_PLUGINS"), os.environ.get("DEBVISOR_DISABLE_PLUGINS"))
        if key == self._loaded_for:
            return
        for name in self.words():
            self.load(name)
        self._loaded_for = key

    @property
    def hook(self) -> Any:
        """The hook relay with every plugin loaded."""
        self.load_all()
        return self.pm.hook

    def hooks_of(self, name: str) -> list[str]:
        """Names of the hooks plugin ``name`` implements (it must be loaded)."""
        module = self.modules.get(name)
        if module is None:
            return []
        callers = self.pm.get_hookcallers(module) or []
        return sorted(c.name for c in callers)

    def command(self, name: str) -> click.Command | None:
        """The click command of word ``name`` (imports only that plugin)."""
        import click

        module = self.load(name)
        fn = getattr(module, "debvisor_commands", None) if module else None
        if fn is None:
            return None
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
            self._fail(name, f"{type(exc).__name__}: {exc}")
            return None
        cmds = result if isinstance(result, list) else [result]
        cmd = next((c for c in cmds if c.name == name), cmds[0] if cmds else None)
        if cmd is not None and not isinstance(cmd, click.Command):
            self._fail(name, "debvisor_commands() did not return a click command")
            return None
        if cmd is not None:
            cmd.name = name
        return cmd


def _import(spec: str) -> ModuleType:
    mod, _, attr = spec.partition(":")
    module = importlib.import_module(mod.strip())
    return getattr(module, attr.strip()) if attr else module
