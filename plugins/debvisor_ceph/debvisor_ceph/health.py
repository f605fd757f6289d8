"""Health checks (cluster health, near-full, down OSDs, clock skew) from one `health detail`."""

from __future__ import annotations

from typing import Any

from debvisor_core.context import Context
from debvisor_core.health import CheckResult, HealthCheck

from .client import RADOS_MISSING, Settings, session


def _fetch(ctx: Context) -> Any:
    try:
        with session(ctx, timeout=8) as c:
            return c.mon("health", detail="detail")
    except Exception as exc:  # noqa: BLE001 - every check reports it
        return exc


def _health(ctx: Context) -> dict[str, Any]:
    """`health detail`, fetched once however many checks ask at once (they run concurrently);
    kept 2 s in the process's cache, so a long-running daemon never serves a stale one."""
    got = ctx.cached(("ceph.health-detail", str(ctx.config.path)), 2.0, lambda: _fetch(ctx))
    if isinstance(got, Exception):
        raise got
    return dict(got)


def _configured(ctx: Context) -> CheckResult | None:
    if not Settings.from_ctx(ctx).configured():
        return CheckResult.ok("no Ceph cluster configured on this node")
    try:
        import rados  # noqa: F401
    except ImportError:
        return CheckResult.crit(RADOS_MISSING)
    return None


def _codes(h: dict[str, Any], *codes: str) -> dict[str, Any]:
    return {c: v for c, v in (h.get("checks") or {}).items() if c in codes and not v.get("muted")}


def _from_codes(h: dict[str, Any], codes: tuple[str, ...], ok: str) -> CheckResult:
    found = _codes(h, *codes)
    if not found:
        return CheckResult.ok(ok)
    worst = "crit" if any(v.get("severity") == "HEALTH_ERR" for v in found.values()) else "warn"
    summary = "; ".join(f"{c}: {v['summary']['message']}" for c, v in sorted(found.items()))
    details = {c: [d.get("message") for d in v.get("detail", [])][:20] for c, v in found.items()}
    return CheckResult(worst, summary, details)


def cluster(ctx: Context) -> CheckResult:
    pre = _configured(ctx)
    if pre:
        return pre
    h = _health(ctx)
    st = h.get("status", "HEALTH_UNKNOWN")
    checks = {c: v["summary"]["message"] for c, v in (h.get("checks") or {}).items() if not v.get("muted")}
    summary = st + (": " + "; ".join(f"{c} ({m})" for c, m in sorted(checks.items())) if checks else "")
    level = {"HEALTH_OK": "ok", "HEALTH_WARN": "warn"}.get(st, "crit")
    return CheckResult(level, summary, {"status": st, "checks": checks})


def _check(codes: tuple[str, ...], ok: str) -> Any:
    def fn(ctx: Context) -> CheckResult:
        pre = _configured(ctx)
        return pre or _from_codes(_health(ctx), codes, ok)

    return fn


def checks(ctx: Context) -> list[HealthCheck]:
    return [
        HealthCheck("ceph.cluster", cluster, timeout=15),
        HealthCheck("ceph.nearfull", _check(("OSD_NEARFULL", "OSD_BACKFILLFULL", "OSD_FULL",
                                             "POOL_NEARFULL", "POOL_FULL"), "no OSD or pool near full"),
                    timeout=15),
        HealthCheck("ceph.osds_down", _check(("OSD_DOWN", "OSD_HOST_DOWN", "OSD_ROOT_DOWN"),
                                             "every OSD is up"), timeout=15),
        HealthCheck("ceph.clock_skew", _check(("MON_CLOCK_SKEW",), "mon clocks agree"), timeout=15),
    ]
