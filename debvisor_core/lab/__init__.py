"""The lab: real local services contributed by plugins through `debvisor_lab_services()`.

A plugin returns :class:`LabService` objects. `debvisor lab up` starts each one (in
dependency order), merges the config fragments they return into one TOML file that
points the CLI at them, and `debvisor lab down` stops them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LabContext:
    """What a service's start/stop/status functions get.

    ``dir`` is the service's own directory under the lab dir (created for it);
    ``lab_dir`` is the whole lab; ``config`` holds the fragments of the services
    started before this one (so a service can find another's address).
    """

    dir: Path
    lab_dir: Path
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class LabService:
    """A real service a plugin can start locally for the lab and the tests.

    ``start(lctx)`` starts it (idempotently: a running service is left as it is) and
    returns a config fragment, e.g. ``{"dns": {"zones": {...}}}``, merged into the lab
    config. ``stop(lctx)`` stops it and must leave no process, namespace or mount
    behind. ``status(lctx)`` returns a dict with at least ``running: bool``.
    ``needs`` lists executables that must exist; ``root`` says whether it needs root;
    ``after`` names services that must start first.
    """

    name: str
    start: Callable[[LabContext], dict[str, Any]]
    stop: Callable[[LabContext], None]
    status: Callable[[LabContext], dict[str, Any]]
    needs: list[str] = field(default_factory=list)
    root: bool = False
    after: list[str] = field(default_factory=list)
    description: str = ""
