"""Health checks of node networking: what the applied desired state wants against the kernel
(links down, addresses missing, MTU mismatches) and a default route."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context
    from debvisor_core.health import HealthCheck


def problems(want: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, str]]:
    """(level, message) for each way ``now`` falls short of ``want`` (both snapshots)."""
    out: list[tuple[str, str]] = []
    for name, link in want["links"].items():
        have = now["links"].get(name)
        if have is None:
            out.append(("crit", f"{name} is missing"))
            continue
        if link.get("up") and not have.get("up"):
            out.append(("crit", f"{name} is down but the applied state wants it up"))
        if link.get("mtu") and have.get("mtu") != link["mtu"]:
            out.append(("warn", f"{name} has MTU {have.get('mtu')}, the applied state "
                                f"says {link['mtu']}"))
    have_addr = {(a["dev"], a["address"]) for a in now["addresses"]}
    for a in want["addresses"]:
        if (a["dev"], a["address"]) not in have_addr:
            out.append(("crit", f"{a['address']} is missing on {a['dev']}"))
    if not any(r["dst"] == "default" and r.get("table", 254) == 254 for r in now["routes"]):
        out.append(("warn", "there is no default route"))
    return out


def _check(ctx: Context) -> Any:
    """Links, addresses and MTUs the applied network state wants, and a default route."""
    from debvisor_core.health import CheckResult

    from .actions import _applied, _running
    from .desired import target

    now = _running()
    applied = _applied(ctx)
    want = target(applied, now) if applied else {"links": {}, "addresses": [], "routes": []}
    found = problems(want, now)
    if not found:
        what = "matches the applied desired state" if applied else "has a default route"
        return CheckResult("ok", f"the network {what}")
    worst = "crit" if any(level == "crit" for level, _ in found) else "warn"
    return CheckResult(worst, "; ".join(m for _, m in found), {"problems": [m for _, m in found]})


def checks() -> list[HealthCheck]:
    from debvisor_core.health import HealthCheck

    return [HealthCheck("net.state", _check)]
