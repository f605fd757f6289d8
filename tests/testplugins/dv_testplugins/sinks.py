"""Audit sinks for tests: one copies events to $DV_SINK_FILE, one fails if $DV_SINK_FAIL."""

from __future__ import annotations

import json
import os
from typing import Any

from debvisor_core import hookimpl


@hookimpl
def debvisor_audit(ctx: object, event: dict[str, Any]) -> None:
    if os.environ.get("DV_SINK_FAIL"):
        raise OSError("remote sink unreachable")
    path = os.environ.get("DV_SINK_FILE")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(event) + "\n")
