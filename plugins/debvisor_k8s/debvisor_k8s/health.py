"""`debvisor health` checks of the k8s plugin: the API answers, nodes are Ready, no pod is
crash-looping, and the kubeconfig's certificates are not near expiry."""

from __future__ import annotations

import base64
import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context
    from debvisor_core.health import CheckResult, HealthCheck

#: certificates that expire sooner than this are a warning (crit within a day)
CERT_WARN_DAYS = 30


def configured(ctx: Context) -> bool:
    """A kubeconfig (or the in-cluster account) exists: else the checks say so and pass."""
    from .client import Settings, existing, kubeconfig_paths

    paths = kubeconfig_paths(Settings.of(ctx))
    return paths is None or bool(existing(paths))


def _cluster(ctx: Context) -> CheckResult:
    from debvisor_core.health import CheckResult

    from .inventory import node_rows, pod_problem
    from .steps import api

    if not configured(ctx):
        return CheckResult.ok("no kubeconfig: Kubernetes is not used on this node")
    a = api(ctx)
    nodes = a.items("/api/v1/nodes")
    pods = a.items("/api/v1/pods")
    rows = node_rows(nodes, [p for p in pods if (p.get("status") or {}).get("phase")
                             not in ("Succeeded", "Failed")])
    not_ready = [r["name"] for r in rows if r["ready"] is not True]
    looping = [p for p in (pod_problem(x) for x in pods)
               if p and p["reason"] == "CrashLoopBackOff"]
    details: dict[str, Any] = {"nodes": len(rows), "not_ready": not_ready,
                               "crash_looping": [f"{p['namespace']}/{p['name']}" for p in looping]}
    if not_ready:
        return CheckResult.crit(f"{len(not_ready)} of {len(rows)} node(s) NotReady: "
                                f"{', '.join(not_ready[:5])}", **details)
    if looping:
        return CheckResult.warn(f"{len(looping)} pod(s) crash-looping: "
                                f"{', '.join(details['crash_looping'][:5])}", **details)
    return CheckResult.ok(f"API answers; {len(rows)} node(s) Ready, no pod crash-looping",
                          **details)


def cert_expiries(kubeconfig: dict[str, Any]) -> list[tuple[str, dt.datetime]]:
    """(what, notAfter) of each certificate embedded in a kubeconfig (CA and client)."""
    from cryptography import x509

    found = []
    for kind, key, field in (("clusters", "cluster", "certificate-authority-data"),
                             ("users", "user", "client-certificate-data")):
        for entry in kubeconfig.get(kind) or []:
            data = (entry.get(key) or {}).get(field)
            if not data:
                continue
            cert = x509.load_pem_x509_certificate(base64.b64decode(data))
            found.append((f"{key} {entry.get('name')}", cert.not_valid_after_utc))
    return found


def _certs(ctx: Context) -> CheckResult:
    import yaml

    from debvisor_core.health import CheckResult

    from .client import Settings, existing, kubeconfig_paths

    files = existing(kubeconfig_paths(Settings.of(ctx)))
    if not files:
        return CheckResult.ok("no kubeconfig with certificates")
    found = []
    for path in files:
        try:
            found += cert_expiries(yaml.safe_load(path.read_text()) or {})
        except ImportError:
            return CheckResult.ok("cannot read certificates here (python3-cryptography missing)")
        except (OSError, ValueError, yaml.YAMLError) as exc:
            return CheckResult.warn(f"cannot read the certificates of {path}: {exc}")
    now = dt.datetime.now(dt.UTC)
    left = sorted(((exp - now).total_seconds() / 86400, what) for what, exp in found)
    details = {"certificates": [{"what": w, "days_left": round(d, 1)} for d, w in left]}
    if not left:
        return CheckResult.ok("the kubeconfig embeds no certificates", **details)
    days, what = left[0]
    if days < 1:
        return CheckResult.crit(f"{what}'s certificate expires in {days:.1f} days", **details)
    if days < CERT_WARN_DAYS:
        return CheckResult.warn(f"{what}'s certificate expires in {days:.0f} days", **details)
    return CheckResult.ok(f"{len(left)} certificate(s), the first to expire in {days:.0f} days",
                          **details)


def checks() -> list[HealthCheck]:
    from debvisor_core.health import HealthCheck

    return [HealthCheck("k8s.cluster", _cluster, timeout=20),
            HealthCheck("k8s.certificates", _certs, timeout=5)]


def _upgrade_nodes(ctx: Context) -> CheckResult:
    """Before an upgrade (`debvisor upgrade check`): every node Ready; this node's drain
    will need the others to take its pods."""
    from debvisor_core.health import CheckResult

    from .client import Settings
    from .inventory import node_rows
    from .steps import api

    if not configured(ctx):
        return CheckResult("skip", "no kubeconfig: Kubernetes is not used on this node")
    rows = node_rows(api(ctx).items("/api/v1/nodes"), [])
    not_ready = [r["name"] for r in rows if r["ready"] is not True]
    me = Settings.of(ctx).this_node()
    others = [r["name"] for r in rows if r["name"] != me and r["ready"] is True
              and not r["cordoned"]]
    details = {"nodes": len(rows), "not_ready": not_ready, "schedulable_others": others}
    if not_ready:
        return CheckResult("fail", f"{len(not_ready)} node(s) NotReady: "
                                   f"{', '.join(not_ready[:5])}: fix them before draining "
                                   f"another", details)
    if len(rows) > 1 and not others:
        return CheckResult("warn", f"no other Ready, schedulable node to take {me}'s pods",
                           details)
    return CheckResult("pass", f"{len(rows)} node(s) Ready", details)


def upgrade_checks() -> list[HealthCheck]:
    from debvisor_core.health import HealthCheck

    return [HealthCheck("k8s.nodes-ready", _upgrade_nodes, timeout=20)]
