"""The k8s plugin's registered steps: cordon, uncordon, evict (drain). Each undoes itself,
so `k8s drain`, `debvisor maintenance` and the upgrade orchestrator can roll them back."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from debvisor_core import log
from debvisor_core.errors import StepFailed
from debvisor_core.model import Finding, Step

from .inventory import CORDON_REASON

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context

    from .client import Api

_PDB_RE = re.compile(r"disruption budget (\S+)")
MIRROR = "kubernetes.io/config.mirror"


def api(ctx: Context) -> Api:
    """The client of this config's API server, shared by the steps of a run (5 min)."""
    from .client import Api

    client: Api = ctx.cached(("k8s.api", str(ctx.config.path)), 300, lambda: Api(ctx))
    return client


def node_path(name: str) -> str:
    return f"/api/v1/nodes/{name}"


def pod_path(ns: str, name: str) -> str:
    return f"/api/v1/namespaces/{ns}/pods/{name}"


def get_node(ctx: Context, name: str, *, planning: bool = False) -> dict[str, Any]:
    """The node object; a missing node is bad input while planning (exit 2), a failed
    step later."""
    from debvisor_core.errors import BadInput

    from .client import ApiError

    try:
        node: dict[str, Any] = api(ctx).get(node_path(name))
    except ApiError as exc:
        if exc.status == 404:
            raise (BadInput if planning else StepFailed)(f"no node {name} in the cluster") \
                from None
        raise
    return node


def set_cordon(ctx: Context, name: str, cordoned: bool, reason: str | None) -> None:
    """``spec.unschedulable`` and the reason annotation in one strategic-merge patch."""
    api(ctx).call("PATCH", node_path(name),
                  body={"spec": {"unschedulable": cordoned or None},
                        "metadata": {"annotations": {CORDON_REASON: reason}}},
                  content_type="application/strategic-merge-patch+json")


def _cordon_state(node: dict[str, Any]) -> dict[str, Any]:
    return {"was_cordoned": bool((node.get("spec") or {}).get("unschedulable")),
            "old_reason": ((node.get("metadata") or {}).get("annotations") or {})
            .get(CORDON_REASON)}


@dataclass
class _CordonState(Step):
    """A change of NODE's cordon; undo puts back the state and reason it had."""

    node: str

    def check(self, ctx: Context) -> list[Finding] | None:
        get_node(ctx, self.node)
        return None

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        return _cordon_state(get_node(ctx, self.node))

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        from .client import ApiError

        try:
            set_cordon(ctx, self.node, bool(record.get("was_cordoned")), record.get("old_reason"))
        except ApiError as exc:
            if exc.status != 404:
                raise
            log.warn(f"node {self.node} is gone from the cluster: nothing to restore")


@dataclass
class Cordon(_CordonState):
    """Mark NODE unschedulable, with the reason as an annotation (undo: as it was)."""

    TYPE = "k8s.cordon"
    NAME = "Cordon"
    reason: str = ""

    def describe(self, ctx: Context) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"cordon {self.node}{why}"

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        set_cordon(ctx, self.node, True, self.reason or prior.get("old_reason") or None)
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        if not _cordon_state(get_node(ctx, self.node))["was_cordoned"]:
            raise StepFailed(f"{self.node} is still schedulable after the cordon")


@dataclass
class Uncordon(_CordonState):
    """Make NODE schedulable again and drop the cordon reason (undo: cordon it again)."""

    TYPE = "k8s.uncordon"
    NAME = "Uncordon"

    def describe(self, ctx: Context) -> str:
        return f"uncordon {self.node}"

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        set_cordon(ctx, self.node, False, None)
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        if _cordon_state(get_node(ctx, self.node))["was_cordoned"]:
            raise StepFailed(f"{self.node} is still cordoned")


# -- drain -------------------------------------------------------------------------------
def pod_key(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _controller(pod: dict[str, Any]) -> dict[str, Any] | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def classify(pods: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Pods on a node as drain sees them: ``evict`` (to move), ``daemonset`` and ``mirror``
    (left: their controller or the kubelet would recreate them at once), ``unmanaged`` (no
    controller: an eviction deletes them for good), ``emptydir`` (their local data goes)."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in
                                            ("evict", "daemonset", "mirror", "unmanaged",
                                             "emptydir")}
    for p in pods:
        meta = p.get("metadata") or {}
        owner = _controller(p)
        if MIRROR in (meta.get("annotations") or {}):
            out["mirror"].append(p)
            continue
        if owner and owner.get("kind") == "DaemonSet":
            out["daemonset"].append(p)
            continue
        out["evict"].append(p)
        if owner is None and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            out["unmanaged"].append(p)
        if any("emptyDir" in v for v in (p.get("spec") or {}).get("volumes") or []):
            out["emptydir"].append(p)
    return out


def pods_on(ctx: Context, node: str) -> list[dict[str, Any]]:
    return api(ctx).items("/api/v1/pods", fieldSelector=f"spec.nodeName={node}")


def _blocker(ctx: Context, pod: dict[str, Any], body: dict[str, Any]) -> str:
    """The PodDisruptionBudget that refused ``pod``'s eviction, in words."""
    ns = (pod.get("metadata") or {}).get("namespace")
    for cause in (body.get("details") or {}).get("causes") or []:
        m = _PDB_RE.search(str(cause.get("message") or ""))
        if m:
            return f"PodDisruptionBudget {ns}/{m.group(1)} ({cause['message']})"
    return f"a PodDisruptionBudget ({body.get('message') or 'HTTP 429'})"


@dataclass
class Evict(Step):
    """Evict NODE's pods through the Eviction API (PodDisruptionBudgets are honoured),
    leaving DaemonSet and mirror pods, and wait until they are gone. A pod whose budget
    refuses is retried every ``retry_s`` until ``timeout_s``; then the step fails naming
    each blocking budget and pod. Undo: nothing to restore (their controllers have
    recreated the evicted pods elsewhere; uncordoning lets them come back)."""

    TYPE = "k8s.evict"
    NAME = "Evict"
    node: str
    timeout_s: float = 600.0
    grace_period_s: int | None = None
    force: bool = False
    delete_emptydir_data: bool = False
    retry_s: float = 5.0
    #: the pods the plan saw (for the plan and the journal; apply lists them again)
    planned: list[str] = field(default_factory=list)

    def describe(self, ctx: Context) -> str:
        what = (f"{len(self.planned)} pod(s): {', '.join(self.planned[:5])}"
                + (f" and {len(self.planned) - 5} more" if len(self.planned) > 5 else "")
                if self.planned else "its pods")
        return (f"evict {what} from {self.node} (PDB-aware, timeout "
                f"{self.timeout_s:g}s), DaemonSet pods stay")

    def _refusals(self, kinds: dict[str, list[dict[str, Any]]]) -> list[str]:
        out = []
        if kinds["unmanaged"] and not self.force:
            out.append(f"pods not managed by a controller would be deleted for good: "
                       f"{_names(kinds['unmanaged'])} (give --force)")
        if kinds["emptydir"] and not self.delete_emptydir_data:
            out.append(f"pods with emptyDir volumes would lose that data: "
                       f"{_names(kinds['emptydir'])} (give --delete-emptydir-data)")
        return out

    def check(self, ctx: Context) -> list[Finding] | None:
        return [Finding("error", m, "k8s.drain")
                for m in self._refusals(classify(pods_on(ctx, self.node)))]

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from .client import ApiError

        deadline = time.monotonic() + self.timeout_s
        evicted: dict[str, str] = {}  # pod -> uid
        told: dict[str, str] = {}  # pod -> the blocker last logged
        while True:
            blocked: dict[str, str] = {}
            kinds = classify(pods_on(ctx, self.node))
            refused = self._refusals(kinds)  # pods that came after the preflight count too
            if refused:
                raise StepFailed(f"drain of {self.node}: {'; '.join(refused)}")
            fresh = [p for p in kinds["evict"] if pod_key(p) not in evicted]
            if not fresh:
                break  # a listing with nothing new to evict: the node is drained
            for pod in fresh:
                key, meta = pod_key(pod), pod.get("metadata") or {}
                if key in evicted or meta.get("deletionTimestamp"):
                    evicted.setdefault(key, str(meta.get("uid")))
                    continue
                try:
                    self._evict(ctx, pod)
                except ApiError as exc:
                    if exc.status == 404:
                        continue
                    if exc.status != 429:
                        raise StepFailed(f"eviction of pod {key} refused: {exc}") from None
                    blocked[key] = _blocker(ctx, pod, exc.body)
                    if told.get(key) != blocked[key]:
                        left = max(deadline - time.monotonic(), 0)
                        log.warn(f"pod {key}: eviction blocked by {blocked[key]}; retrying "
                                 f"every {self.retry_s:g}s until the timeout ({left:.0f}s "
                                 f"left)")
                        told[key] = blocked[key]
                    continue
                evicted[key] = str(meta.get("uid"))
                log.info(f"evicting pod {key}")
            if not blocked:
                continue  # list again: a pod bound after the cordon must go too
            if time.monotonic() + self.retry_s > deadline:
                lines = "; ".join(f"pod {k} by {v}" for k, v in sorted(blocked.items()))
                raise StepFailed(f"drain of {self.node} did not finish within "
                                 f"{self.timeout_s:g}s: eviction blocked: {lines}")
            time.sleep(self.retry_s)
        self._wait_gone(ctx, evicted, deadline)
        if ctx.operation is not None:  # in the operation's result (--json), not only the journal
            ctx.operation.result["evicted"] = sorted(evicted)
        return {"evicted": sorted(evicted)}

    def _evict(self, ctx: Context, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction",
                                "metadata": {"name": meta["name"], "namespace": meta["namespace"]}}
        if self.grace_period_s is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": int(self.grace_period_s)}
        api(ctx).call("POST", pod_path(meta["namespace"], meta["name"]) + "/eviction",
                      body=body)

    def _wait_gone(self, ctx: Context, evicted: dict[str, str], deadline: float) -> None:
        from .client import ApiError

        left = dict(evicted)
        while left:
            for key, uid in list(left.items()):
                ns, name = key.split("/", 1)
                try:
                    pod = api(ctx).get(pod_path(ns, name))
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    pod = None
                if pod is None or str((pod.get("metadata") or {}).get("uid")) != uid:
                    del left[key]
            if not left:
                return
            if time.monotonic() > deadline:
                raise StepFailed(f"drain of {self.node}: evicted pods still terminating after "
                                 f"{self.timeout_s:g}s: {', '.join(sorted(left)[:10])}")
            time.sleep(0.5)

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        left = [p for p in classify(pods_on(ctx, self.node))["evict"]
                if not (p.get("metadata") or {}).get("deletionTimestamp")]
        if left:
            raise StepFailed(f"pods still on {self.node} after the drain: {_names(left)}")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        if record.get("evicted"):
            log.info(f"{len(record['evicted'])} evicted pod(s) are not brought back: their "
                     f"controllers recreated them elsewhere")


def _names(pods: list[dict[str, Any]], limit: int = 10) -> str:
    keys = [pod_key(p) for p in pods]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# -- manifests (addons) -------------------------------------------------------------------
def clean(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without what the server owns (status, uid, resourceVersion…): re-appliable."""
    out = {k: v for k, v in obj.items() if k != "status"}
    from .client import SERVER_OWNED

    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_OWNED}
    out["metadata"] = meta
    return out


def server_apply(ctx: Context, obj: dict[str, Any], *, dry_run: bool = False,
                 force: bool = True) -> dict[str, Any]:
    """Server-side apply of ``obj`` as field manager ``debvisor``; without ``force`` a
    field another manager set otherwise is a conflict (HTTP 409)."""
    import json

    from .addons import FIELD_MANAGER

    a = api(ctx)
    result: dict[str, Any] = a.call(
        "PATCH", a.object_path(obj), body=json.dumps(obj),
        content_type="application/apply-patch+yaml",
        query={"fieldManager": FIELD_MANAGER, "force": "true" if force else None,
               "dryRun": "All" if dry_run else None})
    return result


def current(ctx: Context, obj: dict[str, Any]) -> dict[str, Any] | None:
    from .client import ApiError

    a = api(ctx)
    try:
        live: dict[str, Any] = a.get(a.object_path(obj))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return live


def delete_object(ctx: Context, obj: dict[str, Any]) -> None:
    from .client import ApiError

    a = api(ctx)
    try:
        a.call("DELETE", a.object_path(obj), query={"propagationPolicy": "Background"})
    except ApiError as exc:
        if exc.status != 404:
            raise


@dataclass
class ApplyObjects(Step):
    """Server-side apply ADDON's objects, in order (undo: delete what was created, re-apply
    the previous version of what was changed)."""

    TYPE = "k8s.apply"
    NAME = "ApplyObjects"
    addon: str
    objects: list[dict[str, Any]]
    #: the plan's diff, one line per object (for the plan and the journal)
    diff: list[str] = field(default_factory=list)
    #: take fields other managers set (else their conflict fails the step)
    force_conflicts: bool = False

    def describe(self, ctx: Context) -> str:
        lines = "".join(f"\n      {d}" for d in self.diff)
        return f"server-side apply addon {self.addon}: {len(self.objects)} object(s){lines}"

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        before = []
        for obj in self.objects:
            live = current(ctx, obj)
            before.append(None if live is None else clean(live))
        return {"before": before}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from .addons import created_by, key, with_mark

        before = prior.get("before") or [None] * len(self.objects)
        for obj, old in zip(self.objects, before, strict=False):
            mine = old is None or created_by(old, self.addon)  # created now, or by us before
            server_apply(ctx, with_mark(obj, self.addon) if mine else obj,
                         force=self.force_conflicts)
            log.info(f"applied {key(obj)}")
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        from .addons import key

        missing = [key(o) for o in self.objects if current(ctx, o) is None]
        if missing:
            raise StepFailed(f"addon {self.addon}: not on the server after the apply: "
                             f"{', '.join(missing)}")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        before = record.get("before") or [None] * len(self.objects)
        for obj, old in reversed(list(zip(self.objects, before, strict=False))):
            if old is None:
                delete_object(ctx, obj)
            else:
                server_apply(ctx, old)


@dataclass
class DeleteObjects(Step):
    """Delete ADDON's objects, in reverse order (undo: apply them again as they were)."""

    TYPE = "k8s.delete"
    NAME = "DeleteObjects"
    addon: str
    objects: list[dict[str, Any]]

    def describe(self, ctx: Context) -> str:
        from .addons import key

        return (f"delete addon {self.addon}: "
                + ", ".join(key(o) for o in reversed(self.objects)))

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        return {"before": [None if (live := current(ctx, o)) is None else clean(live)
                           for o in self.objects]}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from .addons import key

        for obj in reversed(self.objects):
            delete_object(ctx, obj)
            log.info(f"deleted {key(obj)}")
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        from .addons import key

        left = [key(o) for o in self.objects
                if (live := current(ctx, o)) is not None
                and not (live.get("metadata") or {}).get("deletionTimestamp")]
        if left:
            raise StepFailed(f"addon {self.addon}: still on the server: {', '.join(left)}")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        for old in record.get("before") or []:
            if old is not None:
                server_apply(ctx, old)


# -- the upgrade contract (plugin.debvisor_steps) ------------------------------------------
@dataclass
class UpgradeCordon(Cordon):
    """Cordon this node before an upgrade (ORDER 12, after Ceph's noout); a node already
    cordoned keeps its own reason."""

    TYPE = "k8s.upgrade-cordon"
    NAME = "K8sUpgradeCordon"
    ORDER = 12

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        keep = prior.get("old_reason") if prior.get("was_cordoned") else None
        set_cordon(ctx, self.node, True, keep or self.reason or None)
        return {}


@dataclass
class UpgradeUncordon(_CordonState):
    """After the upgrade (ORDER 88): uncordon the node, unless its cordon is no longer the
    upgrade's (someone cordoned it for another reason meanwhile, or before)."""

    TYPE = "k8s.upgrade-uncordon"
    NAME = "K8sUpgradeUncordon"
    ORDER = 88
    reason: str = ""

    def describe(self, ctx: Context) -> str:
        return f"uncordon {self.node} (if still cordoned for: {self.reason})"

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        if prior.get("was_cordoned") and prior.get("old_reason") == self.reason:
            set_cordon(ctx, self.node, False, None)
            return {"uncordoned": True}
        if prior.get("was_cordoned"):
            log.info(f"{self.node} stays cordoned: {prior.get('old_reason') or 'no reason'}")
        return {"uncordoned": False}


@dataclass
class UpgradeEvict(Evict):
    """Drain this node before an upgrade (ORDER 14)."""

    TYPE = "k8s.upgrade-evict"
    NAME = "K8sUpgradeEvict"
    ORDER = 14
