"""Audit sink to syslog/journald (through /dev/log) when the socket exists.

Disable with ``[audit] syslog = false`` in the config.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from .. import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from ..context import Context


@hookimpl
def debvisor_audit(ctx: Context, event: dict[str, Any]) -> None:
    if not os.path.exists("/dev/log") or ctx.section("audit").get("syslog") is False:
        return
    import syslog

    syslog.openlog("debvisor-audit", 0, syslog.LOG_AUTHPRIV)
    syslog.syslog(syslog.LOG_INFO, json.dumps(event, sort_keys=True, default=str))
