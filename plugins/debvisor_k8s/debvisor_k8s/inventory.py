"""Reads of the cluster for `k8s nodes` and `k8s workloads`: plain JSON objects (as the
API sends them) in, the report's rows out. No client import here: the caller fetches."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

#: the annotation `k8s drain --reason` / `k8s cordon --reason` leaves on a cordoned node
CORDON_REASON = "debvisor.io/cordon-reason"
PRESSURE = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
_SUFFIX: dict[str, int | Decimal] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity (``500m``, ``8Gi``, ``1e3``) as a number; 0 when absent.

    Not ``kubernetes.utils.parse_quantity``: importing ``kubernetes.utils`` loads the
    YAML and dynamic-client modules too (this is called for every pod of the cluster)."""
    if value is None:
        return Decimal(0)
    text = str(value).strip()
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if suffix and text.endswith(suffix) and not (suffix == "E" and "e" in text[:-1].lower()):
            number, mult = text[: -len(suffix)], _SUFFIX[suffix]
            break
    else:
        number, mult = text, 1
    try:
        return Decimal(number) * Decimal(mult)
    except InvalidOperation:
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from None


def parse_time(stamp: str | None) -> dt.datetime | None:
    if not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def _age_s(stamp: str | None, now: dt.datetime) -> float | None:
    t = parse_time(stamp)
    return None if t is None else max((now - t).total_seconds(), 0.0)


def _human_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def pod_requests(pod: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """(CPU cores, memory bytes) the scheduler counts for ``pod``: pod-level requests when
    set, else the containers' sum against the init containers' peak (a native sidecar, an
    init container with restartPolicy Always, keeps running and adds to both), plus the
    pod overhead."""
    spec = pod.get("spec") or {}

    def req(c: dict[str, Any], what: str) -> Decimal:
        return quantity(((c.get("resources") or {}).get("requests") or {}).get(what))

    out = []
    for what in ("cpu", "memory"):
        pod_level = ((spec.get("resources") or {}).get("requests") or {}).get(what)
        total = sum((req(c, what) for c in spec.get("containers") or []), Decimal(0))
        side = peak = Decimal(0)
        for c in spec.get("initContainers") or []:
            if c.get("restartPolicy") == "Always":
                total += req(c, what)
                side += req(c, what)
                peak = max(peak, side)
            else:
                peak = max(peak, req(c, what) + side)
        base = quantity(pod_level) if pod_level is not None else max(total, peak)
        out.append(base + quantity((spec.get("overhead") or {}).get(what)))
    return out[0], out[1]


def _terminated(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def node_rows(nodes: list[dict[str, Any]], pods: list[dict[str, Any]],
              now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One row per node: conditions, cordon, taints, kubelet, allocatable vs requested,
    pod count, and ``attention`` (what an operator should look at, most urgent first)."""
    now = now or dt.datetime.now(dt.UTC)
    by_node: dict[str, list[dict[str, Any]]] = {}
    for p in pods:
        name = (p.get("spec") or {}).get("nodeName")
        if name and not _terminated(p):
            by_node.setdefault(name, []).append(p)
    rows = []
    for n in nodes:
        meta, spec, status = n.get("metadata") or {}, n.get("spec") or {}, n.get("status") or {}
        name = meta.get("name", "")
        conds = {c.get("type"): c for c in status.get("conditions") or []}
        ready = conds.get("Ready")
        is_ready = None if ready is None else ready.get("status") == "True"
        alloc = status.get("allocatable") or {}
        on = by_node.get(name, [])
        cpu = sum((pod_requests(p)[0] for p in on), Decimal(0))
        mem = sum((pod_requests(p)[1] for p in on), Decimal(0))
        labels = meta.get("labels") or {}
        roles = sorted(k.split("/", 1)[1] for k in labels
                       if k.startswith("node-role.kubernetes.io/") and "/" in k)
        reason = (meta.get("annotations") or {}).get(CORDON_REASON)
        attention: list[str] = []
        if is_ready is not True:
            since = _age_s(ready.get("lastTransitionTime") if ready else None, now)
            why = f": {ready.get('reason')}" if ready and ready.get("reason") else ""
            attention.append(f"NotReady for {_human_age(since)}{why}" if ready
                             else "no Ready condition reported")
        for kind in PRESSURE:
            c = conds.get(kind)
            if c and c.get("status") == "True":
                attention.append(f"{kind}" + (f": {c['message']}" if c.get("message") else ""))
        if spec.get("unschedulable") and not reason:
            attention.append("cordoned without a reason (annotation " + CORDON_REASON + ")")
        rows.append({
            "name": name,
            "ready": is_ready,
            "ready_for_s": None if ready is None else _age_s(ready.get("lastTransitionTime"), now),
            "roles": roles,
            "conditions": [{"type": c.get("type"), "status": c.get("status"),
                            "reason": c.get("reason"), "message": c.get("message"),
                            "since": c.get("lastTransitionTime")}
                           for c in status.get("conditions") or []],
            "cordoned": bool(spec.get("unschedulable")),
            "cordon_reason": reason,
            "taints": [{"key": t.get("key"), "value": t.get("value"), "effect": t.get("effect")}
                       for t in spec.get("taints") or []],
            "kubelet": (status.get("nodeInfo") or {}).get("kubeletVersion"),
            "allocatable": {"cpu": float(quantity(alloc.get("cpu"))),
                            "memory_bytes": int(quantity(alloc.get("memory"))),
                            "pods": int(quantity(alloc.get("pods")))},
            "requested": {"cpu": float(cpu), "memory_bytes": int(mem)},
            "pods": len(on),
            "attention": attention,
        })
    return rows


def _pct(used: float, total: float) -> str:
    return f"{100 * used / total:.0f}%" if total else "-"


def nodes_text(data: dict[str, Any]) -> str:
    """The `k8s nodes` table, then one line per thing needing attention."""
    from debvisor_core.output import human_bytes, table

    rows = []
    for n in data["nodes"]:
        status = {True: "Ready", False: "NotReady", None: "Unknown"}[n["ready"]]
        if n["cordoned"]:
            status += ",SchedulingDisabled"
        a, r = n["allocatable"], n["requested"]
        rows.append({
            "name": n["name"], "status": status, "roles": ",".join(n["roles"]) or "<none>",
            "version": n["kubelet"] or "?",
            "cpu": f"{r['cpu']:g}/{a['cpu']:g} ({_pct(r['cpu'], a['cpu'])})",
            "mem": f"{human_bytes(r['memory_bytes'])}/{human_bytes(a['memory_bytes'])} "
                   f"({_pct(r['memory_bytes'], a['memory_bytes'])})",
            "pods": f"{n['pods']}/{a['pods']}",
            "taints": ",".join(f"{t['key']}" + (f"={t['value']}" if t.get("value") else "")
                               + f":{t['effect']}" for t in n["taints"]) or "",
        })
    out = [table(rows, [("name", "NAME"), ("status", "STATUS"), ("roles", "ROLES"),
                        ("version", "KUBELET"), ("cpu", "CPU REQ/ALLOC"),
                        ("mem", "MEMORY REQ/ALLOC"), ("pods", "PODS"), ("taints", "TAINTS")])]
    for n in data["nodes"]:
        out += [f"{n['name']}: {a}" for a in n["attention"]]
    if not any(n["attention"] for n in data["nodes"]):
        out.append(f"{len(data['nodes'])} node(s), nothing needs attention")
    return "\n".join(out)


# -- workloads ---------------------------------------------------------------------------
def workload_rows(deployments: list[dict[str, Any]], statefulsets: list[dict[str, Any]],
                  daemonsets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ready/desired/updated per workload; ``ok`` when every replica is ready and updated."""
    rows = []
    for kind, items in (("Deployment", deployments), ("StatefulSet", statefulsets),
                        ("DaemonSet", daemonsets)):
        for w in items:
            meta, spec, st = w.get("metadata") or {}, w.get("spec") or {}, w.get("status") or {}
            if kind == "DaemonSet":
                desired = int(st.get("desiredNumberScheduled") or 0)
                ready = int(st.get("numberReady") or 0)
                updated = int(st.get("updatedNumberScheduled") or 0)
            else:
                desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
                ready = int(st.get("readyReplicas") or 0)
                updated = int(st.get("updatedReplicas") or 0)
            rows.append({"kind": kind, "namespace": meta.get("namespace"),
                         "name": meta.get("name"), "desired": desired, "ready": ready,
                         "updated": updated,
                         "ok": ready >= desired and updated >= desired})
    return rows


def pod_problem(pod: dict[str, Any]) -> dict[str, Any] | None:
    """Why ``pod`` is not healthy (reason, message, restarts), or None when it is."""
    st = pod.get("status") or {}
    phase = st.get("phase") or "Unknown"
    statuses = (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    meta = pod.get("metadata") or {}
    base = {"namespace": meta.get("namespace"), "name": meta.get("name"),
            "node": (pod.get("spec") or {}).get("nodeName"), "phase": phase,
            "restarts": restarts}
    if phase == "Succeeded":
        return None
    for c in statuses:
        state = c.get("state") or {}
        waiting = state.get("waiting")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            return {**base, "container": c.get("name"), "reason": waiting.get("reason"),
                    "message": waiting.get("message") or ""}
        term = state.get("terminated")
        if term and phase != "Succeeded" and term.get("exitCode", 0) != 0:
            return {**base, "container": c.get("name"), "reason": term.get("reason") or "Error",
                    "message": term.get("message") or f"exit code {term.get('exitCode')}"}
    if phase == "Pending":
        for cond in st.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return {**base, "container": None,
                        "reason": cond.get("reason") or "Unschedulable",
                        "message": cond.get("message") or ""}
        return {**base, "container": None, "reason": "Pending", "message": st.get("message") or ""}
    if phase in ("Failed", "Unknown"):
        return {**base, "container": None, "reason": st.get("reason") or phase,
                "message": st.get("message") or ""}
    if meta.get("deletionTimestamp"):
        return None
    for c in st.get("containerStatuses") or []:
        if not c.get("ready"):
            return {**base, "container": c.get("name"), "reason": "NotReady",
                    "message": "the container is running but not ready"}
    return None


def workloads_text(data: dict[str, Any]) -> str:
    from debvisor_core.output import table

    rows = [{**w, "state": f"{w['ready']}/{w['desired']}", "flag": "" if w["ok"] else "!"}
            for w in data["workloads"]]
    out = [table(rows, [("flag", ""), ("kind", "KIND"), ("namespace", "NAMESPACE"),
                        ("name", "NAME"), ("state", "READY"), ("updated", "UPDATED")])
           if rows else "no deployments, statefulsets or daemonsets"]
    if data["pods"]:
        out.append("pods that are not healthy:")
        out.append(table(data["pods"], [("namespace", "NAMESPACE"), ("name", "POD"),
                                        ("reason", "REASON"), ("restarts", "RESTARTS"),
                                        ("node", "NODE"), ("message", "MESSAGE")]))
    else:
        out.append("every pod is healthy")
    return "\n".join(out)
