"""Configuration file and the state/log directories.

Config: ``--config PATH`` > ``$DEBVISOR_CONFIG`` > ``/etc/debvisor/debvisor.toml``.
State: ``$DEBVISOR_STATE_DIR`` (state and logs together) or ``/var/lib/debvisor`` and
``/var/log/debvisor``. Each plugin reads its own table, e.g. ``[dns]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInput

DEFAULT_CONFIG = Path("/etc/debvisor/debvisor.toml")
SECRET_WORDS = ("secret", "password", "token", "key", "passphrase", "credential")


def config_path(explicit: str | None = None) -> Path:
    """The config file in effect."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("DEBVISOR_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def state_dir() -> Path:
    """Where journals, locks and plugin state live."""
    env = os.environ.get("DEBVISOR_STATE_DIR")
    return Path(env) if env else Path("/var/lib/debvisor")


def log_dir() -> Path:
    """Where the audit log and operation logs live."""
    env = os.environ.get("DEBVISOR_STATE_DIR")
    return Path(env, "log") if env else Path("/var/log/debvisor")


@dataclass
class Config:
    """The parsed config file; ``section(name)`` gives one plugin's table."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)
    exists: bool = False

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise BadInput(f"config {self.path}: [{name}] must be a table")
        return value


def load(path: Path, *, explicit: bool = False) -> Config:
    """Read a TOML config; a missing default file means an empty config."""
    import tomllib

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise BadInput(f"config file {path} does not exist") from None
        return Config(path)
    except OSError as exc:
        raise BadInput(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"config file {path} is not valid TOML: {exc}") from None
    return Config(path, data, True)
