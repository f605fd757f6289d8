"""Audit sink to syslog/journald (through /dev/log) when the socket exists.

Every message starts with the record's ``seq`` and ``hash`` in the file chain
(``seq=12 hash=ab…``) and carries the whole record as JSON: a copy off the audit log
that anchors its head (a remote syslog or journald keeps what a local attacker cannot
rewrite). Disable with ``[audit] syslog = false`` in the config.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from .. import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from ..context import Context

DEV_LOG = "/dev/log"


def message(event: dict[str, Any]) -> str:
    """The syslog line for one audit record: ``seq=N hash=H {json}``."""
    return (f"seq={event.get('seq')} hash={event.get('hash')} "
            + json.dumps(event, sort_keys=True, default=str))


@hookimpl
def debvisor_audit(ctx: Context, event: dict[str, Any]) -> None:
    if not os.path.exists(DEV_LOG) or ctx.section("audit").get("syslog") is False:
        return
    import syslog

    syslog.openlog("debvisor-audit", 0, syslog.LOG_AUTHPRIV)
    syslog.syslog(syslog.LOG_INFO, message(event))
