"""Events a proxy records in the node's audit chain (``RecordEvent``): the web panel's VNC
console proxy reports a console opened, closed, failed or refused for one of its users.

The request names a kind from :data:`KINDS` and gives its details as a JSON object of at
most :data:`MAX_BYTES` bytes whose keys come from :data:`FIELDS`, each value of that
field's type and size (or null: not known): nothing else reaches the chain. The user is never taken from the
details: rpcd attributes the event to the user of the session token the proxy forwarded
(``caller: "NAME via=PROXY"``). Light to import (no grpc): the tests and the panel check
events with it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import BadInput

#: the kinds a proxy may record
KINDS = ("console.open", "console.close", "console.failed", "console.refused")
#: the largest details document, in bytes of JSON
MAX_BYTES = 4096
#: at most this many entries in a counters field (message name -> count)
MAX_COUNTERS = 32

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:@\[\]-]{0,99}")
_COUNTER = re.compile(r"-?[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")  # "KeyEvent", "type7", "-999"
_BIG = 2**53  # integers JSON keeps exactly


def _text(limit: int) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if not isinstance(v, str) or len(v) > limit or not v.isprintable():
            raise ValueError(f"must be printable text of at most {limit} characters")
        return v
    return check


def _name(limit: int) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if not isinstance(v, str) or len(v) > limit or not _NAME.fullmatch(v):
            raise ValueError(f"must be a name or address of at most {limit} characters "
                             "(letters, digits and . _ + : @ [ ] -)")
        return v
    return check


def _choice(*values: str) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return v
    return check


def _count(maximum: int = _BIG) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= maximum:
            raise ValueError(f"must be a whole number from 0 to {maximum}")
        return v
    return check


def _seconds(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
            or not 0 <= v <= 1e7:
        raise ValueError("must be a number of seconds from 0 to 10000000")
    return v


def _counters(v: Any) -> Any:
    if not isinstance(v, dict) or len(v) > MAX_COUNTERS:
        raise ValueError(f"must be an object of at most {MAX_COUNTERS} counters "
                         '({"KeyEvent": 3})')
    for k, n in v.items():
        if not _COUNTER.fullmatch(k) or isinstance(n, bool) or not isinstance(n, int) \
                or not 0 <= n <= _BIG:
            raise ValueError(f"must map message names to counts; {str(k)[:40]!r}: {n!r} is not "
                             "a name and a whole number ≥ 0")
    return v


#: every field an event may carry, with its check
FIELDS: dict[str, Callable[[Any], Any]] = {
    "vm": _name(64),
    "mode": _choice("view", "control"),
    "ticket": _name(64),
    "client": _name(64),
    "upstream": _name(100),
    "security": _choice("vnc-password", "none"),
    "reason": _text(200),
    "code": _count(65535),
    "duration_s": _seconds,
    "dropped": _counters,
    "forwarded": _counters,
    "stripped": _counters,
    "dropped_total": _count(),
    "bytes_to_vm": _count(),
    "bytes_from_browser": _count(),
}


def checked(kind: str, details_json: str) -> dict[str, Any]:
    """The details of a ``kind`` event, checked; BadInput says what is wrong, in one
    sentence."""
    if kind not in KINDS:
        raise BadInput(f"event kind {kind[:40]!r} is not one a proxy may record "
                       f"({', '.join(KINDS)})")
    raw = details_json or "{}"
    if len(raw.encode()) > MAX_BYTES:
        raise BadInput(f"the event's details are {len(raw.encode())} bytes of JSON; at most "
                       f"{MAX_BYTES} are accepted")
    try:
        details = json.loads(raw)
    except ValueError:
        raise BadInput("details_json is not valid JSON") from None
    if not isinstance(details, dict):
        raise BadInput(f"details_json must be a JSON object, not {type(details).__name__}")
    for key, value in details.items():
        check = FIELDS.get(key)
        if check is None:
            why = (" (rpcd records the user whose token came with the call)"
                   if key in ("user", "caller") else "")
            raise BadInput(f"details key {key[:40]!r} is not an event field{why}; known: "
                           f"{', '.join(FIELDS)}")
        if value is None:  # not known (a WebSocket without a peer address): said as such
            continue
        try:
            check(value)
        except ValueError as exc:
            raise BadInput(f"details {key}: {exc}") from None
    return details


def from_proxy_event(event: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A proxy's own event dict (the panel's console events: ``{"event": KIND, "user": …,
    FIELD: …}``) as (kind, details): ``event`` gives the kind and ``user`` is dropped
    (rpcd takes the user from the session token)."""
    kind = str(event.get("event", ""))
    return kind, {k: v for k, v in event.items() if k not in ("event", "user")}


__all__ = ["FIELDS", "KINDS", "MAX_BYTES", "checked", "from_proxy_event"]
