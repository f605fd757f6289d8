"""Health checks (cluster health, near-full, down OSDs, clock skew) from one `health detail`."""

from __future__ import annotations

import re
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


# -- before an upgrade (`debvisor upgrade check`: pass, warn, fail, skip) ------------------------
#: health codes that make an upgrade unsafe: data not fully replicated or not available
_UNSAFE = ("PG_DEGRADED", "PG_AVAILABILITY", "PG_DAMAGED", "OBJECT_UNFOUND", "OSD_DOWN",
           "MON_DOWN")


def _upgrade_skip(ctx: Context) -> CheckResult | None:
    pre = _configured(ctx)
    if pre is None:
        return None
    return CheckResult("skip" if pre.status == "ok" else "fail", pre.summary)


def upgrade_health(ctx: Context) -> CheckResult:
    """HEALTH_OK, or HEALTH_WARN whose only warning is the noout flag (set for an upgrade)
    passes; degraded or unavailable data fails; other warnings warn."""
    pre = _upgrade_skip(ctx)
    if pre:
        return pre
    h = _health(ctx)
    st = h.get("status", "HEALTH_UNKNOWN")
    live = {c: v for c, v in (h.get("checks") or {}).items() if not v.get("muted")}
    words = {c: v["summary"]["message"] for c, v in live.items()}
    details = {"status": st, "checks": words}
    unsafe = sorted(c for c in live if c in _UNSAFE)
    if unsafe or st == "HEALTH_ERR":
        what = "; ".join(f"{c} ({words[c]})" for c in (unsafe or sorted(words)))
        return CheckResult("fail", f"{st}: {what}: wait until the cluster is healthy", details)
    only_noout = set(live) == {"OSDMAP_FLAGS"} and \
        words["OSDMAP_FLAGS"].startswith("noout flag")
    if st == "HEALTH_OK" or only_noout:
        return CheckResult("pass", st + (" (noout set)" if only_noout else ""), details)
    return CheckResult("warn", f"{st}: " + "; ".join(f"{c} ({m})" for c, m in sorted(words.items())),
                       details)


def _release(version_line: str) -> tuple[int, str] | None:
    """(major, text) of a `ceph versions` key such as 'ceph version 16.2.11 (…) pacific
    (stable)'."""
    import re

    m = re.search(r"ceph version (\d+)\.(\d+)\.(\d+)", version_line)
    return (int(m.group(1)), f"{m.group(1)}.{m.group(2)}.{m.group(3)}") if m else None


def upgrade_versions(ctx: Context) -> CheckResult:
    """One running version per daemon type, monitors not older than OSDs, and the packages
    apt would install at most one release ahead (no skipped release, no downgrade)."""
    pre = _upgrade_skip(ctx)
    if pre:
        return pre
    with session(ctx, timeout=8) as c:
        versions = dict(c.mon("versions"))
    running: dict[str, list[tuple[int, str]]] = {}
    for daemon, found in versions.items():
        if daemon == "overall":
            continue
        running[daemon] = sorted(r for r in map(_release, found) if r)
    details: dict[str, Any] = {"running": {d: [t for _, t in v] for d, v in running.items()}}
    mixed = {d: v for d, v in running.items() if len(v) > 1}
    if mixed:
        return CheckResult("warn", "daemons run different versions (an unfinished upgrade?): "
                           + "; ".join(f"{d}: {', '.join(t for _, t in v)}"
                                       for d, v in sorted(mixed.items())), details)
    newest_mon = max((r for r in running.get("mon", [])), default=None)
    newest_osd = max((r for r in running.get("osd", [])), default=None)
    if newest_mon and newest_osd and newest_osd[0] > newest_mon[0]:
        return CheckResult("fail", f"OSDs run {newest_osd[1]} but monitors {newest_mon[1]}: "
                                   f"monitors are upgraded first", details)
    majors = sorted({r[0] for v in running.values() for r in v})
    if not majors:
        return CheckResult("warn", "`ceph versions` named no daemon", details)
    from debvisor_core.upgrade import Node, simulate

    sim = ctx.cached(("upgrade.simulate", str(ctx.config.path)), 60,
                     lambda: simulate(Node.of(ctx)))
    candidates = {p["name"]: p["to"] for p in sim["upgrade"] + sim["install"]
                  if p["name"] in ("ceph-base", "ceph-common", "ceph-mon", "ceph-osd")}
    details["candidates"] = candidates
    for name, version in sorted(candidates.items()):
        m = re.match(r"(?:\d+:)?(\d+)\.", version)
        if not m:
            continue
        major = int(m.group(1))
        if major > majors[-1] + 1:
            return CheckResult("fail", f"{name} {version} would skip a release (running "
                                       f"{majors[-1]}.x): upgrade one release at a time", details)
        if major < majors[0]:
            return CheckResult("fail", f"{name} {version} is older than the running "
                                       f"{majors[0]}.x: a downgrade", details)
    running_text = ", ".join(sorted({t for v in running.values() for _, t in v}))
    return CheckResult("pass", f"every daemon runs {running_text}"
                       + (f"; apt would install {', '.join(sorted(set(candidates.values())))}"
                          if candidates else "; no Ceph package to upgrade"), details)


def upgrade_checks() -> list[HealthCheck]:
    return [HealthCheck("ceph.health", upgrade_health, timeout=15),
            HealthCheck("ceph.versions", upgrade_versions, timeout=60)]
