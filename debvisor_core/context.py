"""Contexts, in three scopes:

- :class:`Env`: the process — config, the plugin host and a cache with expiry that
  plugins use instead of module globals (a daemon serves many invocations from one Env);
- :class:`Context`: one invocation — who asked, the flags, the run UI, the target;
- the run of one operation: :attr:`Context.operation` (its ``scratch`` dict is the
  per-run cache steps share; nothing is keyed on ``id(ctx)``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config as _config
from .config import Config
from .output import emit as _emit

if TYPE_CHECKING:  # pragma: no cover
    from .plugins import PluginHost
    from .ui import RunUI


@dataclass
class OpOptions:
    """How an operation command was asked to run."""

    dry_run: bool = False
    check: bool = False
    force_maintenance: bool = False
    rollback: bool = False


class Env:
    """What one process shares between invocations: config, plugin host, a cache."""

    def __init__(self, config_file: str | None = None) -> None:
        self.config_file = config_file
        self.config: Config | None = None
        self.host: PluginHost | None = None
        self._cache: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[Any, threading.Lock] = {}

    def cached(self, key: Any, ttl: float, fn: Callable[[], Any]) -> Any:
        """``fn()``'s value for ``key``, computed at most once per ``ttl`` seconds (callers
        asking at the same time wait for one computation)."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
            value = fn()
            self._cache[key] = (time.monotonic() + ttl, value)
            return value


@dataclass
class Context:
    """One invocation: global options, identity, UI and target, over a process :class:`Env`."""

    json: bool = False
    verbose: bool = False
    yes: bool = False
    config_file: str | None = None
    argv: list[str] = field(default_factory=lambda: list(sys.argv))
    plugin: str | None = None
    action: str | None = None
    op_options: OpOptions = field(default_factory=OpOptions)
    #: the operation the engine is running (steps may record results in ``.result``)
    operation: Any = None
    #: what the command's positional arguments name (``{"vm": "vm1"}``): journalled, and
    #: what ``--rollback`` matches
    target: dict[str, Any] | None = None
    #: option names whose values are secret (scrubbed from argv in audit and journal)
    secret_options: tuple[str, ...] = ()
    #: who asked, when it was another node's operation (``OPID.STEP``, from ``--origin``):
    #: journalled, so that node can find this run again (``ops list --origin``)
    origin: str | None = None
    #: ``--remote NODE``: declared actions run on that node's rpcd instead of here
    remote: str | None = None
    env: Env = field(default_factory=Env)
    _ui: RunUI | None = None

    @property
    def _config(self) -> Config | None:
        return self.env.config

    @_config.setter
    def _config(self, value: Config | None) -> None:
        self.env.config = value

    @property
    def _host(self) -> PluginHost | None:
        return self.env.host

    @_host.setter
    def _host(self, value: PluginHost | None) -> None:
        self.env.host = value

    def cached(self, key: Any, ttl: float, fn: Callable[[], Any]) -> Any:
        """A value shared by the invocations of this process for ``ttl`` seconds (replaces
        module-level caches, which a long-running daemon would keep forever)."""
        return self.env.cached(key, ttl, fn)

    @property
    def ui(self) -> RunUI:
        """The run UI: set by the caller (daemon, tests), else the terminal's."""
        if self._ui is None:
            from .ui import TerminalUI

            self._ui = TerminalUI(quiet=self.json, interactive=self.interactive)
        return self._ui

    @ui.setter
    def ui(self, value: RunUI) -> None:
        self._ui = value

    def safe_argv(self) -> list[str]:
        """argv with secret values replaced by a keyed digest (for audit and journal)."""
        try:
            from .redact import scrub_argv
        except ImportError:  # pragma: no cover - redact.py lands with the audit work
            return list(self.argv)
        return scrub_argv(list(self.argv), self.secret_options)

    @property
    def config(self) -> Config:
        if self._config is None:
            path = _config.config_path(self.config_file)
            explicit = bool(self.config_file or os.environ.get("DEBVISOR_CONFIG"))
            self._config = _config.load(path, explicit=explicit)
        return self._config

    def section(self, name: str) -> dict[str, Any]:
        """One plugin's config table (empty if absent)."""
        return self.config.section(name)

    @property
    def state_dir(self) -> Path:
        return _config.state_dir()

    @property
    def log_dir(self) -> Path:
        return _config.log_dir()

    def plugin_state(self, plugin: str) -> Path:
        """A plugin's own state directory (created, mode 0700)."""
        path = self.state_dir / "plugins" / plugin
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    @property
    def host(self) -> PluginHost:
        if self._host is None:
            from .plugins import PluginHost

            self._host = PluginHost()
        return self._host

    @property
    def hook(self) -> Any:
        """pluggy's hook relay with every plugin loaded."""
        return self.host.hook

    @property
    def interactive(self) -> bool:
        return sys.stdin.isatty() and not os.environ.get("CI")

    def emit(self, data: Any, human: Any = None) -> None:
        """Print ``data`` as one JSON document with --json, else call ``human(data)``
        (or print ``human`` if it is a string)."""
        _emit(self, data, human)

    def audit(self, result: str, **details: Any) -> None:
        """Record one audit event for a state-changing command that is not an operation."""
        from .audit import record

        record(self, result=result, details=details)
