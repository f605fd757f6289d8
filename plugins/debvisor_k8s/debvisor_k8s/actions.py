"""`debvisor k8s …` declared once, as actions: nodes and workloads (reads), cordon,
uncordon and drain (state changes, journalled steps with undo). The CLI (cli.py),
`debvisor actions list|show|run` and the daemon all read these declarations.

Light module: the ``kubernetes`` client is imported only when an action runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from debvisor_core.actions import Action, Param

from .client import LABEL, SUBDOMAIN

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context
    from debvisor_core.model import Operation, OpResult

_NODE = Param("node", "The Kubernetes node's name.", positional=True, pattern=SUBDOMAIN)


# -- k8s.nodes ---------------------------------------------------------------------------
def query_nodes(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Every node with its conditions, capacity and what needs attention."""
    from .inventory import node_rows
    from .steps import api

    a = api(ctx)
    nodes = a.items("/api/v1/nodes")
    pods = a.items("/api/v1/pods", fieldSelector="status.phase!=Succeeded,status.phase!=Failed")
    return {"nodes": node_rows(nodes, pods)}


def render_nodes(data: dict[str, Any]) -> None:
    from .inventory import nodes_text

    print(nodes_text(data))


# -- k8s.workloads -----------------------------------------------------------------------
def query_workloads(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Deployments, statefulsets, daemonsets and every pod that is not healthy."""
    from .client import Settings, default_namespace
    from .inventory import pod_problem, workload_rows
    from .steps import api

    a = api(ctx)
    ns = None if params["all_namespaces"] else \
        (params["namespace"] or default_namespace(Settings.of(ctx)))
    pre = f"/namespaces/{ns}" if ns else ""
    rows = workload_rows(a.items(f"/apis/apps/v1{pre}/deployments"),
                         a.items(f"/apis/apps/v1{pre}/statefulsets"),
                         a.items(f"/apis/apps/v1{pre}/daemonsets"))
    pods = [p for p in (pod_problem(x) for x in a.items(f"/api/v1{pre}/pods")) if p]
    return {"namespace": ns, "workloads": rows, "pods": pods}


def render_workloads(data: dict[str, Any]) -> None:
    from .inventory import workloads_text

    print(workloads_text(data))


# -- cordon / uncordon / drain -----------------------------------------------------------
def plan_cordon(ctx: Context, params: dict[str, Any]) -> Operation | None:
    from debvisor_core.model import Operation

    from .steps import Cordon, get_node

    node = get_node(ctx, params["node"], planning=True)
    reason = params["reason"] or ""
    if (node.get("spec") or {}).get("unschedulable") and not reason:
        return None
    return Operation(kind="k8s.cordon", title=f"cordon {params['node']}",
                     steps=[Cordon(params["node"], reason)], target={"node": params["node"]})


def plan_uncordon(ctx: Context, params: dict[str, Any]) -> Operation | None:
    from debvisor_core.model import Operation

    from .steps import Uncordon, get_node

    if not (get_node(ctx, params["node"], planning=True).get("spec") or {}).get("unschedulable"):
        return None
    return Operation(kind="k8s.uncordon", title=f"uncordon {params['node']}",
                     steps=[Uncordon(params["node"])], target={"node": params["node"]})


def plan_drain(ctx: Context, params: dict[str, Any]) -> Operation:
    """Cordon, then evict (PDB-aware) and wait; a drain that fails un-cordons the node
    unless --keep-cordoned (then the operation pauses: `ops resume` retries the evictions,
    `ops rollback` un-cordons)."""
    from debvisor_core.model import PAUSE, ROLLBACK_ALL, Operation, Phase

    from .steps import Cordon, Evict, classify, get_node, pod_key, pods_on

    name = params["node"]
    get_node(ctx, name, planning=True)
    planned = [pod_key(p) for p in classify(pods_on(ctx, name))["evict"]]
    reason = params["reason"] or "drained by debvisor k8s drain"
    evict = Evict(name, timeout_s=float(params["timeout"]), grace_period_s=params["grace_period"],
                  force=params["force"], delete_emptydir_data=params["delete_emptydir_data"],
                  planned=planned)
    return Operation(
        kind="k8s.drain", title=f"drain {name}", target={"node": name},
        params={"node": name},
        phases=[Phase("cordon", [Cordon(name, reason)]),
                Phase("evict", [evict],
                      on_failure=PAUSE if params["keep_cordoned"] else ROLLBACK_ALL)])


def render_op(res: OpResult) -> None:
    evicted = (res.result or {}).get("evicted")
    if evicted:
        print(f"evicted: {', '.join(evicted)}")
    print(f"{res.title}: done")


# -- label / taint -----------------------------------------------------------------------
def plan_label(ctx: Context, params: dict[str, Any]) -> Operation | None:
    from debvisor_core.model import Operation

    from .labels import Label, parse_labels
    from .steps import get_node

    wanted = parse_labels(params["labels"])
    have = (get_node(ctx, params["node"], planning=True).get("metadata") or {}).get("labels") or {}
    change = {k: v for k, v in wanted.items() if have.get(k) != v}
    if not change:
        return None
    return Operation(kind="k8s.label", title=f"label {params['node']}",
                     steps=[Label(params["node"], change)], target={"node": params["node"]})


def plan_taint(ctx: Context, params: dict[str, Any]) -> Operation | None:
    from debvisor_core.model import Operation

    from .labels import Taint, merged_taints, parse_taints, same_taints
    from .steps import get_node

    add, remove = parse_taints(params["taints"])
    have = list((get_node(ctx, params["node"], planning=True).get("spec") or {}).get("taints") or [])
    if same_taints(merged_taints(have, add, remove), have):
        return None
    return Operation(kind="k8s.taint", title=f"taint {params['node']}",
                     steps=[Taint(params["node"], add, remove)], target={"node": params["node"]})


# -- join --------------------------------------------------------------------------------
def plan_join(ctx: Context, params: dict[str, Any]) -> Operation | None:
    from .join import plan

    op: Operation = plan(ctx, params)
    return op


# -- addons ------------------------------------------------------------------------------
def query_addon_list(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Every addon found, with whether its objects are there and it is ready."""
    from . import addons
    from .steps import api, current

    out = []
    for a in addons.all_addons(ctx).values():
        objs = a.objects()
        live = [current(ctx, o) for o in objs]
        present = sum(x is not None for x in live)
        applied = sum(addons.owned(x) for x in live)
        enabled = applied == len(objs)
        checks = addons.readiness(api(ctx), a) if enabled else []
        out.append({"name": a.name, "source": a.source, "description": a.description,
                    "objects": len(objs), "present": present, "applied": applied,
                    "enabled": enabled, "ready": enabled and all(c["ready"] for c in checks)})
    return {"addons": out}


def render_addon_list(data: dict[str, Any]) -> None:
    from debvisor_core.output import table

    rows = [{**a, "state": ("ready" if a["ready"] else "enabled, not ready") if a["enabled"]
             else ("partly applied" if a["applied"] else
                   ("present, not applied by debvisor" if a["present"] else "disabled"))}
            for a in data["addons"]]
    print(table(rows, [("name", "ADDON"), ("state", "STATE"), ("source", "SOURCE"),
                       ("description", "DESCRIPTION")]))


def query_addon_status(ctx: Context, params: dict[str, Any]) -> Any:
    """The addon's own readiness checks; exit 1 when one fails."""
    from debvisor_core.actions import Outcome
    from debvisor_core.errors import EXIT_FAILED

    from . import addons
    from .steps import api

    a = addons.get(ctx, params["name"])
    checks = addons.readiness(api(ctx), a)
    data = {"name": a.name, "ready": all(c["ready"] for c in checks), "checks": checks}
    if not data["ready"]:
        bad = [f"{c['kind']} {c['name']}: {c['detail']}" for c in checks if not c["ready"]]
        return Outcome(data, EXIT_FAILED, f"addon {a.name} is not ready: {'; '.join(bad)}")
    return data


def render_addon_status(data: dict[str, Any]) -> None:
    from debvisor_core.output import table

    rows = [{**c, "state": "ready" if c["ready"] else "NOT READY"} for c in data["checks"]]
    print(table(rows, [("kind", "KIND"), ("namespace", "NAMESPACE"), ("name", "NAME"),
                       ("state", "STATE"), ("detail", "DETAIL")]))


def plan_addon_enable(ctx: Context, params: dict[str, Any]) -> Operation | None:
    """Server-side dry-run of every object first (the server validates them), then the diff
    against what is there; None when nothing would change."""
    from debvisor_core.errors import PreflightRefused
    from debvisor_core.model import Operation

    from . import addons
    from .client import ApiError
    from .steps import ApplyObjects, current, server_apply

    a = addons.get(ctx, params["name"])
    force = bool(params["force_conflicts"])
    objs = a.objects()
    diff, changes = [], 0
    new_ns: set[str] = set()  # namespaces this addon creates: a dry run cannot fill them
    for obj in objs:
        ns = (obj.get("metadata") or {}).get("namespace")
        live = None if ns in new_ns else current(ctx, obj)
        if live is None and obj["kind"] == "Namespace" and obj["apiVersion"] == "v1":
            new_ns.add(obj["metadata"]["name"])
        if ns not in new_ns:
            try:
                server_apply(ctx, obj, dry_run=True, force=force)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                raise PreflightRefused(
                    f"addon {a.name}: {addons.key(obj)}: {exc.body.get('message') or exc}",
                    hint="another manager set these fields: give --force-conflicts to take "
                         "them over") from None
        if live is None:
            diff.append(f"+ {addons.key(obj)} (create)")
            changes += 1
            continue
        paths = addons.changed_paths(obj, live)
        if paths:
            more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
            diff.append(f"~ {addons.key(obj)}: {', '.join(paths[:5])}{more}")
            changes += 1
        else:
            diff.append(f"= {addons.key(obj)} (unchanged)")
    if not changes:
        return None
    return Operation(kind="k8s.addon", title=f"enable addon {a.name}", target={"name": a.name},
                     params={"addon": a.name},
                     steps=[ApplyObjects(a.name, objs, diff, force_conflicts=force)])


def plan_addon_disable(ctx: Context, params: dict[str, Any]) -> Operation | None:
    from debvisor_core import log
    from debvisor_core.model import Operation

    from . import addons
    from .steps import DeleteObjects, api, current

    a = addons.get(ctx, params["name"])
    objs = a.objects()
    there = []  # only what enabling this addon created: never what was there before
    for o in objs:
        if not addons.created_by(current(ctx, o), a.name):
            continue
        if o["kind"] == "Namespace" and o["apiVersion"] == "v1":
            others = addons.foreign_objects(api(ctx), o["metadata"]["name"], objs)
            if others:
                log.warn(f"namespace {o['metadata']['name']} stays: it holds objects that are "
                         f"not the addon's ({', '.join(others)})")
                continue
        there.append(o)
    if not there:
        return None
    return Operation(kind="k8s.addon", title=f"disable addon {a.name}", target={"name": a.name},
                     params={"addon": a.name}, destructive=True,
                     steps=[DeleteObjects(a.name, there)])


_ADDON = Param("name", "The addon (see `k8s addon list`).", positional=True,
               pattern=r"[a-z0-9][a-z0-9-]{0,62}")

_OP_RESULT = ("the operation result: id, kind, title, status, steps, findings, duration_ms, "
              'error; or {"status": "unchanged"}')

ACTIONS = [
    Action(
        path="k8s.nodes", query=query_nodes, render=render_nodes, privilege="none",
        summary="Nodes: Ready and other conditions, cordon, taints, kubelet, requested vs "
                "allocatable CPU and memory, pods, and what needs attention",
        result="an object: nodes [{name, ready, ready_for_s, roles, conditions [{type, status, "
               "reason, message, since}], cordoned, cordon_reason, taints [{key, value, "
               "effect}], kubelet, allocatable {cpu, memory_bytes, pods}, requested {cpu, "
               "memory_bytes}, pods, attention [str]}]",
        examples=("k8sctl nodes", "debvisor k8s nodes --json"),
    ),
    Action(
        path="k8s.workloads", query=query_workloads, render=render_workloads,
        privilege="none",
        summary="Deployments, statefulsets and daemonsets (ready/desired/updated) and every "
                "pod that is not healthy, with its reason",
        params=(
            Param("namespace", "Only this namespace (default: the kubeconfig context's).",
                  short="-n", default=None, pattern=LABEL),
            Param("all_namespaces", "Every namespace.", type="bool", default=False, short="-A"),
        ),
        result="an object: namespace (null: all), workloads [{kind, namespace, name, desired, "
               "ready, updated, ok}], pods [{namespace, name, node, phase, restarts, "
               "container, reason, message}] (only pods that are not healthy)",
        examples=("k8sctl workloads -A", "debvisor k8s workloads -n kube-system --json"),
    ),
    Action(
        path="k8s.cordon", kind="k8s.cordon", plan=plan_cordon, render=render_op,
        summary="Mark NODE unschedulable, recording why (undo: as it was)",
        params=(_NODE, Param("reason", "Why (kept as the node's debvisor.io/cordon-reason "
                                       "annotation).", default=None)),
        unchanged="the node is already cordoned",
        result=_OP_RESULT,
        examples=("k8sctl cordon worker2 --reason 'disk replacement' --yes",),
    ),
    Action(
        path="k8s.uncordon", kind="k8s.uncordon", plan=plan_uncordon, render=render_op,
        summary="Make NODE schedulable again",
        params=(_NODE,),
        unchanged="the node is not cordoned",
        result=_OP_RESULT,
        examples=("k8sctl uncordon worker2 --yes", "k8sctl uncordon --rollback --yes"),
    ),
    Action(
        path="k8s.label", kind="k8s.label", plan=plan_label, render=render_op,
        summary="Set or remove labels of NODE (undo: the values they had)",
        params=(_NODE, Param("labels", "key=value to set, key- to remove.", type="list",
                             positional=True, metavar="KEY=VALUE|KEY-...")),
        unchanged="the node's labels are already so",
        result=_OP_RESULT,
        examples=("k8sctl label worker2 debvisor.io/rack=r12 --yes",
                  "k8sctl label worker2 debvisor.io/rack- --yes"),
    ),
    Action(
        path="k8s.taint", kind="k8s.taint", plan=plan_taint, render=render_op,
        summary="Add or remove taints of NODE (undo: the taints it had)",
        params=(_NODE, Param("taints", "key[=value]:Effect to add (NoSchedule, "
                                       "PreferNoSchedule, NoExecute), key[:Effect]- to remove.",
                             type="list", positional=True,
                             metavar="KEY[=VALUE]:EFFECT[-]...")),
        unchanged="the node's taints are already so",
        result=_OP_RESULT,
        examples=("k8sctl taint worker2 dedicated=db:NoSchedule --yes",
                  "k8sctl taint worker2 dedicated- --yes"),
    ),
    Action(
        path="k8s.addon.list", query=query_addon_list, render=render_addon_list,
        privilege="none",
        summary="Addons (shipped and from [k8s] addon_dirs): enabled, ready",
        result="an object: addons [{name, source, description, objects, present, enabled, "
               "ready}]",
        examples=("k8sctl addon list", "debvisor k8s addon list --json"),
    ),
    Action(
        path="k8s.addon.status", query=query_addon_status, render=render_addon_status,
        privilege="none",
        summary="Check an addon's own readiness (exit 1 when it is not ready)",
        params=(_ADDON,),
        result="an object: name, ready, checks [{kind, namespace, name, ready, detail}]",
        examples=("k8sctl addon status metrics-server",),
    ),
    Action(
        path="k8s.addon.enable", kind="k8s.addon", plan=plan_addon_enable, render=render_op,
        summary="Apply an addon's manifests (server-side apply), showing the diff first",
        description=("The plan is a server-side dry run of every object and the diff against "
                     "what the cluster has (+ create, ~ change: the fields, = unchanged). "
                     "Undo deletes what was created and re-applies what was changed."),
        params=(_ADDON, Param("force_conflicts", "Take over fields another field manager set "
                                                 "(else such a conflict refuses the plan).",
                              type="bool", default=False)),
        unchanged="the addon's objects are already as its manifests say",
        result=_OP_RESULT,
        examples=("k8sctl addon enable monitoring --dry-run",
                  "k8sctl addon enable metrics-server --yes",
                  "k8sctl addon enable metrics-server --rollback --yes"),
    ),
    Action(
        path="k8s.addon.disable", kind="k8s.addon", plan=plan_addon_disable, render=render_op,
        destructive=True,
        summary="Delete the objects enabling an addon created (undo: apply them again)",
        description=("Objects that were there before the addon was enabled (a cluster's own "
                     "metrics-server, a monitoring namespace of another stack) are never "
                     "deleted, nor a namespace that holds objects the addon did not create."),
        params=(_ADDON,),
        unchanged="none of the addon's objects is there",
        result=_OP_RESULT,
        examples=("k8sctl addon disable ingress --yes",),
    ),
    Action(
        path="k8s.join", kind="k8s.join", plan=plan_join, render=render_op, destructive=True,
        summary="Join this host to a Kubernetes cluster as a worker (kubeadm), CA pinned "
                "before the token is sent",
        description=(
            "Preflight: the API server's public cluster-info must carry a CA whose hash is "
            "--ca-hash and a signature by the token (else the token is not sent: unknown, "
            "expired or wrong); then, over TLS pinned to that CA, the node name must be free "
            "(or be this host's: then nothing is done). The join runs `kubeadm join --config "
            "FILE` (the token is in an owner-only file, removed after; never on a command "
            "line or in the journal), then waits until the node is Ready with its labels and "
            "taints. Rollback deletes the Node object and runs `kubeadm reset --force`. "
            "[k8s] kubeadm and kubelet_conf override the driver's paths."),
        params=(
            Param("api", "The API server, HOST[:PORT] (port 6443 by default).",
                  pattern=r"[A-Za-z0-9.:\[\]/-]{1,300}"),
            Param("token", "The bootstrap token (`kubeadm token create`).", secret=True),
            Param("ca_hash", "sha256:HEX of the cluster CA's public key (`kubeadm token "
                             "create --print-join-command` prints it).",
                  pattern=r"sha256:[0-9a-f]{64}", metavar="sha256:HEX"),
            Param("node_name", "The node's name (default: [k8s] node_name, else the short "
                               "host name).", default=None, pattern=SUBDOMAIN),
            Param("labels", "key=value labels the kubelet registers the node with.",
                  type="list", default=None, metavar="KEY=VALUE"),
            Param("taints", "key[=value]:Effect taints the node registers with.",
                  type="list", default=None, metavar="KEY[=VALUE]:EFFECT"),
            Param("timeout", "How long discovery, the join and the wait for Ready may each "
                             "take.", type="duration", default=300.0, minimum=1),
        ),
        unchanged="this host has already joined the cluster",
        result=_OP_RESULT,
        examples=("k8sctl join --api 10.0.0.10:6443 --token-file /root/join.token "
                  "--ca-hash sha256:4b0c... --labels debvisor.io/rack=r12 --dry-run",
                  "k8sctl join --api cp.example:6443 --token-file - --ca-hash sha256:4b0c... "
                  "--taints dedicated=vm:NoSchedule --yes < join.token",
                  "k8sctl join --rollback --yes"),
    ),
    Action(
        path="k8s.drain", kind="k8s.drain", plan=plan_drain, render=render_op,
        destructive=True,
        summary="Cordon NODE and evict its pods through the Eviction API (PDB-aware), naming "
                "any PodDisruptionBudget that blocks",
        description=(
            "DaemonSet and mirror pods stay. A pod whose PodDisruptionBudget refuses is "
            "retried every 5 s until --timeout, with the budget and the pod named. If the "
            "drain fails, the cordon is undone, unless --keep-cordoned: then the node stays "
            "cordoned and the operation pauses (`debvisor ops resume ID` retries, `debvisor "
            "ops rollback ID` un-cordons). Pods without a controller and pods with emptyDir "
            "volumes are refused unless --force / --delete-emptydir-data."),
        params=(
            _NODE,
            Param("timeout", "Give up after this long (e.g. 10m).", type="duration",
                  default=600.0, minimum=1),
            Param("grace_period", "Seconds each pod gets to terminate (default: the pod's "
                                  "own).", type="int", default=None, minimum=0),
            Param("force", "Also evict pods that no controller manages (they are not "
                           "recreated).", type="bool", default=False),
            Param("delete_emptydir_data", "Also evict pods with emptyDir volumes (their data "
                                          "is lost).", type="bool", default=False),
            Param("keep_cordoned", "Leave the node cordoned if the drain fails (the operation "
                                   "pauses).", type="bool", default=False),
            Param("reason", "Why (the cordon's annotation).", default=None),
        ),
        result=_OP_RESULT + "; result.evicted: [namespace/pod]",
        examples=("k8sctl drain worker2 --timeout 10m --yes",
                  "debvisor k8s drain worker2 --dry-run",
                  "k8sctl drain worker2 --keep-cordoned --yes"),
    ),
]
