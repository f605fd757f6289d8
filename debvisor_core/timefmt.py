"""Time formatting shared by the journal, audit, health and the renderers (no rendering here)."""

from __future__ import annotations

import time


def iso_utc(t: float | None = None) -> str:
    """``t`` (epoch seconds; now if None) as ``2026-11-25T10:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
