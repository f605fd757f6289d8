"""Health checks contributed by plugins, run concurrently with a timeout each.

JSON shape of ``debvisor health --json``::

    {"status": "ok|warn|crit", "host": "...", "time": "...", "duration_ms": 12,
     "counts": {"ok": 3, "warn": 1, "crit": 0},
     "checks": [{"name": "dns.servers", "plugin": "dns", "status": "ok",
                 "summary": "2 servers answer", "details": {...}, "duration_ms": 5}]}
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .timefmt import iso_utc

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context

ORDER = {"ok": 0, "warn": 1, "crit": 2}


@dataclass
class CheckResult:
    """What a check returns. ``status`` is ok, warn or crit."""

    status: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, summary: str, **details: Any) -> CheckResult:
        return cls("ok", summary, details)

    @classmethod
    def warn(cls, summary: str, **details: Any) -> CheckResult:
        return cls("warn", summary, details)

    @classmethod
    def crit(cls, summary: str, **details: Any) -> CheckResult:
        return cls("crit", summary, details)


@dataclass
class HealthCheck:
    """A named check: ``fn(ctx)`` returns a :class:`CheckResult`; raising means crit."""

    name: str
    fn: Callable[[Context], CheckResult]
    timeout: float = 10.0
    plugin: str = ""


def run_checks(ctx: Context, checks: list[HealthCheck], order: dict[str, int] | None = None,
               failed: str = "crit") -> dict[str, Any]:
    """Run every check in its own daemon thread; a check that raises or is past its timeout
    is ``failed``. ``order`` ranks the statuses a check may return (default ok < warn <
    crit; the upgrade checker's are skip < pass < warn < fail)."""
    order = order or ORDER
    t0 = time.monotonic()
    results: dict[int, dict[str, Any]] = {}
    threads: list[tuple[int, HealthCheck, threading.Thread, float]] = []

    def worker(i: int, chk: HealthCheck) -> None:
        start = time.monotonic()
        try:
            r = chk.fn(ctx)
            if not isinstance(r, CheckResult) or r.status not in order:
                raise TypeError(f"check returned {r!r}, not a CheckResult")
            out: dict[str, Any] = {"status": r.status, "summary": r.summary, "details": r.details}
        except Exception as exc:  # noqa: BLE001 - a failing check is a failed result
            msg = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            out = {"status": failed, "summary": f"check failed: {msg}", "details": {}}
        out["duration_ms"] = int((time.monotonic() - start) * 1000)
        results[i] = out

    for i, chk in enumerate(checks):
        th = threading.Thread(target=worker, args=(i, chk), daemon=True, name=chk.name)
        th.start()
        threads.append((i, chk, th, time.monotonic() + chk.timeout))
    rows = []
    for i, chk, th, deadline in threads:
        th.join(max(0.0, deadline - time.monotonic()))
        r = results.get(i) or {"status": failed, "summary": f"timed out after {chk.timeout:g}s",
                               "details": {}, "duration_ms": int(chk.timeout * 1000)}
        rows.append({"name": chk.name, "plugin": chk.plugin, **r})
    counts = {k: sum(1 for r in rows if r["status"] == k) for k in order}
    best = min(order, key=order.__getitem__)
    worst = max((r["status"] for r in rows), key=order.__getitem__, default=best)
    import socket

    return {
        "status": worst,
        "host": socket.gethostname(),
        "time": iso_utc(),
        "duration_ms": int((time.monotonic() - t0) * 1000),
        "counts": counts,
        "checks": rows,
    }


def collect(ctx: Context, hook_name: str = "debvisor_health",
            failed: str = "crit") -> list[HealthCheck]:
    """Every plugin's checks (of hook ``hook_name``), each tagged with its plugin's name."""
    checks: list[HealthCheck] = []
    hook = getattr(ctx.hook, hook_name)
    for impl in hook.get_hookimpls():
        try:
            got = impl.function(ctx=ctx) or []
        except Exception as exc:  # noqa: BLE001 - a broken plugin becomes a failed check
            got = [HealthCheck(f"{impl.plugin_name}.checks", _raiser(exc, failed))]
        for chk in got:
            chk.plugin = chk.plugin or impl.plugin_name
            checks.append(chk)
    return checks


def _raiser(exc: Exception, failed: str = "crit") -> Callable[[Context], CheckResult]:
    def fn(_ctx: Context) -> CheckResult:
        return CheckResult(failed, f"could not list checks: {type(exc).__name__}: {exc}")

    return fn
