"""DebVisor operations toolkit core.

Plugins import :data:`hookimpl` from here::

    from debvisor_core import hookimpl
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
PROJECT = "debvisor"
ENTRY_POINT_GROUP = "debvisor.plugins"

if TYPE_CHECKING:  # pragma: no cover
    import pluggy

    hookimpl: pluggy.HookimplMarker


def __getattr__(name: str) -> Any:
    # The marker needs pluggy; keep `debvisor --help` from importing it.
    if name == "hookimpl":
        import pluggy

        marker = pluggy.HookimplMarker(PROJECT)
        globals()["hookimpl"] = marker
        return marker
    raise AttributeError(name)
