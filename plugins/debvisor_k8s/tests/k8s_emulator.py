"""A Kubernetes API server emulator for the k8s plugin's tests (not shipped).

It serves real Kubernetes JSON over HTTPS (bearer token, its own CA) so the real ``kubectl``
binaries and the official Python client ``kubernetes`` can talk to it as to a cluster, for
the things the plugin uses: nodes, namespaces, pods (logs, eviction, delete, patch),
deployments, statefulsets, daemonsets, replicasets and pod disruption budgets; and, stored
generically (list per namespace and across all, get, create, update, delete, merge /
strategic merge / JSON patch, server-side apply, label and field selectors, watch), services,
configmaps, serviceaccounts, secrets, RBAC (clusterroles, clusterrolebindings, roles,
rolebindings), ingresses, ingressclasses and apiservices. ``test_kubectl_referee.py``
referees it with kubectl 1.27 and 1.33 and the Python client.

Usage (conftest.py's ``k8s_api`` fixture does the first two lines)::

    tls = make_tls(tmp_dir)                      # once per session (openssl, ~30 ms)
    emu = Emulator(tls, workdir).start()         # kubeconfig at emu.kubeconfig
    emu.add(node("n1"))                          # or emu.add(emu.node("n1")); any served kind
    emu.add(pod("web-1", node="n1", owner=("ReplicaSet", "web-5d8f")))
    emu.set_log("default", "web-1", "hello\n")
    ...                                          # run kubectl / the plugin against emu.kubeconfig
    emu.set_status("deployments", "web", "shop", {"readyReplicas": 2, ...})  # a controller's part
    emu.get("pods", "web-1"); emu.list("services", "shop"); emu.requests; emu.evictions
    emu.stop()

Builders (``node``, ``pod``, ``deployment``, ``statefulset``, ``daemonset``, ``replicaset``,
``pdb``) return the objects as a real cluster shows them; their uids are derived from
kind/namespace/name, so a pod's ownerReference names the uid its owner gets when added. The
other kinds have no builders: ``emu.add()`` takes any dict with a served ``kind``.

Discovery (legacy APIResourceList per group version; /apis lists apiregistration.k8s.io,
apps, networking.k8s.io, policy, rbac.authorization.k8s.io, all v1) gives each kind its
real name, singularName, namespaced, kind, shortNames (cm, ns, no, po, sa, svc, ds, deploy,
rs, sts, ing, pdb) and categories (``all``; ``api-extensions`` for apiservices); verbs are
what is served: create, delete, get, list, patch, update, watch (no deletecollection).

Server-side apply (``PATCH`` with ``Content-Type: application/apply-patch+yaml``, a YAML or
JSON body; kubectl sends JSON): ``fieldManager`` is required (422 Invalid ``PatchOptions``,
as the real server answers; ``force`` on any other patch is a 422 too); an absent object is
created (201, also with ``dryRun=All``, which stores nothing), else the configuration is
merged in (200): maps field by field, associative lists by their key (containers, env,
volumes... by name, container ports by containerPort, Service ports by port), other lists
replaced. Each manager's fields are kept in ``metadata.managedFields`` (operation Apply,
real ``FieldsV1``); a field the manager applied before and no longer applies is removed
unless another manager has it; a field another manager has with another value is a 409
conflict (the real message, which kubectl prints) unless ``force=true``, which moves the
field to the applier. An apply that changes nothing answers the object unchanged (same
resourceVersion); a changed spec bumps ``metadata.generation``.

Namespaces are real objects: POST creates one; creating in a missing namespace is 404, in
a terminating one 403 (NamespaceLifecycle). DELETE answers the namespace with phase
Terminating (its ``kubernetes`` finalizer) and removes it with every object in it at once,
or ``emu.namespace_delete_delay`` seconds later (the namespace controller's work; a second
DELETE meanwhile is a 409, as for real). ``kubectl delete -f`` deletes in file order, so a
manifest that starts with its Namespace needs the delay (else the later deletes are 404).

Defaulting done: pods (common fields, status Pending) on create; Services on every write
(type ClusterIP, a cluster IP from 10.96.0.0/16 derived from the name and kept, port
protocol TCP and targetPort, node ports for NodePort/LoadBalancer, status.loadBalancer);
Secrets (``stringData`` written into ``data`` as base64, type Opaque).

What it does NOT do (a real cluster would):

- no controllers or scheduler: nothing recreates evicted pods, scales workloads, schedules
  pending pods or updates workload status (a Deployment created or applied keeps the status
  it was given, none when none: ``emu.set_status`` plays the controller); no garbage
  collection of owned objects, no ``default`` ServiceAccount or ``kube-root-ca.crt``
  ConfigMap in new namespaces, no token Secrets, no Endpoints; only PDB status is computed
  (from the matching pods, every time it is read or used) and ``spec.unschedulable`` keeps
  the ``node.kubernetes.io/unschedulable`` taint in step, as the node lifecycle controller
  does;
- server-side apply simplified: status is applied like any field (the real server ignores it
  for kinds with a status subresource), no Update entries in managedFields (create, update
  and non-apply patches keep the entries as they are, so their fields count as nobody's),
  list keys are single fields (a real Service port is keyed by port and protocol), primitive
  lists (finalizers, args) are atomic, no field validation (``fieldValidation`` is ignored),
  no apply to subresources;
- watch (``watch=true``) streams ADDED/MODIFIED/DELETED from an in-memory event log, but
  sends no BOOKMARK events, ignores ``sendInitialEvents``, and PDB status changes (computed,
  never stored) make no events; kubectl drain and the commands refereed here never watch,
  ``kubectl delete``/``get -w``/``wait`` and the Python client's ``watch.Watch`` do;
- no pagination (``limit`` is accepted, everything comes back, never a ``continue`` token), no
  ``resourceVersion`` semantics on reads, no deletecollection, no subresources but
  ``pods/log`` and ``pods/eviction`` (no ``/status``, ``/scale``: ``kubectl scale`` is 404);
- no admission beyond NamespaceLifecycle, little validation (a created pod needs
  containers; names must match the URL; kind and apiVersion must match the resource), no
  defaulting beyond the above, no RBAC (one token, all rights: RBAC objects are just
  stored);
- no protobuf: JSON answers to clients that also accept JSON, but a protobuf request body
  is a 415 (kubectl 1.33's typed ``kubectl create namespace/configmap/...`` send one;
  ``kubectl create -f``, ``apply`` and the Python client send JSON); no CBOR;
- no OpenAPI (``/openapi/v2`` and ``/openapi/v3`` are 404: ``kubectl
  get/drain/logs/delete/patch/label/cordon`` never ask, but ``kubectl create/replace/apply
  -f`` validate against it: pass ``--validate=false``), no aggregated discovery (legacy
  discovery JSON is served; kubectl >= 1.30 falls back to it);
- no exec/attach/port-forward, no events, endpoints, jobs, networkpolicies, CRDs or any other
  kind;
- Table output (``kubectl get`` without ``-o``) mimics the real printers' columns and the
  pod STATUS logic, simplified (no readiness gates, no sidecar restart rules);
- log ``sinceSeconds``/``sinceTime`` are accepted and ignored; ``limitBytes`` cuts bytes.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import math
import re
import secrets
import select
import socket
import ssl
import subprocess
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

Obj = dict[str, Any]
ObjList = list[Obj]

__all__ = [
    "ApiError",
    "Emulator",
    "RequestRecord",
    "TlsFiles",
    "daemonset",
    "deployment",
    "human_duration",
    "is_pod_ready",
    "make_tls",
    "node",
    "pdb",
    "pod",
    "replicaset",
    "rfc3339",
    "selector_matches",
    "statefulset",
]

# --------------------------------------------------------------------------------------------
# time


def _monotonic() -> float:
    return time.monotonic()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(t: dt.datetime | None = None) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (the API server's metav1.Time format)."""
    return (t or _utcnow()).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc3339nano(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))


def _time_arg(value: str | dt.datetime | None) -> str:
    if value is None:
        return rfc3339()
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    return value


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery duration.HumanDuration (the AGE column)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    return human_duration((_utcnow() - _parse_time(ts)).total_seconds())


# --------------------------------------------------------------------------------------------
# TLS material


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate for 127.0.0.1/localhost (PEM files)."""

    ca_cert: Path
    cert: Path
    key: Path

    def ca_data(self) -> str:
        """The CA, base64, as kubeconfig's ``certificate-authority-data`` wants it."""
        return base64.b64encode(self.ca_cert.read_bytes()).decode("ascii")


_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_tls(directory: Path, *, openssl: str = "openssl") -> TlsFiles:
    """Make a CA and a server certificate (IP:127.0.0.1, DNS:localhost) with ``openssl``."""
    directory.mkdir(parents=True, exist_ok=True)
    cnf = directory / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        res = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")

    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "7",
        "-subj", "/CN=debvisor-k8s-emulator-ca", "-config", str(cnf), "-extensions", "v3_ca")
    run("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1",
        "-config", str(cnf))
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-set_serial", "0x" + secrets.token_hex(8), "-days", "7", "-out", str(crt),
        "-extfile", str(cnf), "-extensions", "v3_server")
    return TlsFiles(ca_cert=ca_crt, cert=crt, key=key)


# --------------------------------------------------------------------------------------------
# resources


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    generation: bool = False  # the server sets metadata.generation and bumps it on spec changes

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``pods``, ``deployments.apps``: how the server names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


_RBAC = "rbac.authorization.k8s.io"
_NETWORKING = "networking.k8s.io"
_APIREGISTRATION = "apiregistration.k8s.io"

RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "configmaps", "configmap", "ConfigMap", True, ("cm",)),
    Resource("", "v1", "namespaces", "namespace", "Namespace", False, ("ns",)),
    Resource("", "v1", "nodes", "node", "Node", False, ("no",)),
    Resource("", "v1", "pods", "pod", "Pod", True, ("po",), ("all",)),
    Resource("", "v1", "secrets", "secret", "Secret", True),
    Resource("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True, ("sa",)),
    Resource("", "v1", "services", "service", "Service", True, ("svc",), ("all",)),
    Resource(_APIREGISTRATION, "v1", "apiservices", "apiservice", "APIService", False, (),
             ("api-extensions",)),
    Resource("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, ("ds",), ("all",), True),
    Resource("apps", "v1", "deployments", "deployment", "Deployment", True, ("deploy",), ("all",), True),
    Resource("apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, ("rs",), ("all",), True),
    Resource("apps", "v1", "statefulsets", "statefulset", "StatefulSet", True, ("sts",), ("all",), True),
    Resource(_NETWORKING, "v1", "ingressclasses", "ingressclass", "IngressClass", False, generation=True),
    Resource(_NETWORKING, "v1", "ingresses", "ingress", "Ingress", True, ("ing",), generation=True),
    Resource("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget",
             True, ("pdb",), generation=True),
    Resource(_RBAC, "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", False),
    Resource(_RBAC, "v1", "clusterroles", "clusterrole", "ClusterRole", False),
    Resource(_RBAC, "v1", "rolebindings", "rolebinding", "RoleBinding", True),
    Resource(_RBAC, "v1", "roles", "role", "Role", True),
)
_BY_PLURAL = {r.plural: r for r in RESOURCES}
_BY_KIND = {r.kind: r for r in RESOURCES}
# in the order the real /apis lists them
_GROUPS = (_APIREGISTRATION, "apps", _NETWORKING, "policy", _RBAC)
_GROUP_VERSIONS = {(r.group, r.version) for r in RESOURCES}
_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]

_UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
_FIELDS_COMMON = ("metadata.name", "metadata.namespace")
_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": _FIELDS_COMMON + ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                              "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
                              "status.podIP", "status.nominatedNodeName"),
    "nodes": _FIELDS_COMMON + ("spec.unschedulable",),
    "namespaces": _FIELDS_COMMON + ("status.phase",),
    "secrets": _FIELDS_COMMON + ("type",),
}


def _lookup_resource(name: str) -> Resource:
    """A resource by plural, singular, short name or kind (case-insensitive)."""
    low = name.lower()
    for r in RESOURCES:
        if low in (r.plural, r.singular, r.kind.lower(), *r.short_names):
            return r
    raise KeyError(f"the emulator does not serve {name!r}")


# --------------------------------------------------------------------------------------------
# errors (metav1.Status)


class ApiError(Exception):
    """An error the API answers with a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        st: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": self.message, "reason": self.reason}
        if self.details is not None:
            st["details"] = self.details
        st["code"] = self.code
        return st


def _details(res: Resource, name: str) -> Obj:
    d: Obj = {"name": name}
    if res.group:
        d["group"] = res.group
    d["kind"] = res.plural
    return d


def _not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def _path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource", {})


def _conflict(res: Resource, name: str, message: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": {message}',
                    _details(res, name))


def _invalid(res: Resource, name: str, field: str, detail: str) -> ApiError:
    d = _details(res, name)
    d["kind"] = res.kind
    d["causes"] = [{"reason": "FieldValueRequired", "message": f"Required value: {detail}", "field": field}]
    return ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: {field}: Required value: {detail}', d)


def _patch_options_invalid(field: str, reason: str, detail: str) -> ApiError:
    return ApiError(422, "Invalid", f'PatchOptions.meta.k8s.io "" is invalid: {field}: {detail}',
                    {"group": "meta.k8s.io", "kind": "PatchOptions",
                     "causes": [{"reason": reason, "message": detail, "field": field}]})


# --------------------------------------------------------------------------------------------
# selectors


class _Requirement(NamedTuple):
    key: str
    op: str  # = != in notin exists !exists > <
    values: tuple[str, ...]


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VAL = r"[-A-Za-z0-9_.]*"
_RE_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^()]*)\)\s*$")
_RE_CMP = re.compile(rf"^\s*({_KEY})\s*(==|!=|=|>|<)\s*({_VAL})\s*$")
_RE_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str) -> list[_Requirement]:
    """``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``, ``a>1``."""
    reqs: list[_Requirement] = []
    for part in _split_top(text):
        if m := _RE_SET.match(part):
            vals = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(_Requirement(m.group(1), m.group(2), vals))
        elif m := _RE_CMP.match(part):
            op = "=" if m.group(2) == "==" else m.group(2)
            reqs.append(_Requirement(m.group(1), op, (m.group(3),)))
        elif m := _RE_EXISTS.match(part):
            reqs.append(_Requirement(m.group(2), "!exists" if m.group(1) else "exists", ()))
        else:
            raise _bad_request(f"unable to parse requirement: invalid label selector {part.strip()!r}")
    return reqs


def _labels_match(reqs: Iterable[_Requirement], labels: Mapping[str, str]) -> bool:
    for r in reqs:
        have = r.key in labels
        val = labels.get(r.key, "")
        if r.op == "=" and not (have and val == r.values[0]):
            return False
        if r.op == "!=" and have and val == r.values[0]:
            return False
        if r.op == "in" and not (have and val in r.values):
            return False
        if r.op == "notin" and have and val in r.values:
            return False
        if r.op == "exists" and not have:
            return False
        if r.op == "!exists" and have:
            return False
        if r.op in (">", "<"):
            try:
                a, b = int(val), int(r.values[0])
            except ValueError:
                return False
            if not have or (a <= b if r.op == ">" else a >= b):
                return False
    return True


def selector_matches(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels, matchExpressions) against labels; None matches nothing."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    reqs = [_Requirement(e["key"], ops[e["operator"]], tuple(e.get("values") or ()))
            for e in selector.get("matchExpressions") or ()]
    return _labels_match(reqs, labels)


def _format_selector(selector: Obj | None) -> str:
    if not selector:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or ():
        op = e["operator"]
        if op in ("In", "NotIn"):
            parts.append(f"{e['key']} {op.lower()} ({','.join(e.get('values') or ())})")
        else:
            parts.append(e["key"] if op == "Exists" else "!" + e["key"])
    return ",".join(parts) or "<none>"


def _field_value(obj: Obj, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def _parse_field_selector(res: Resource, text: str) -> list[tuple[str, str, str]]:
    out = []
    allowed = _FIELDS.get(res.plural, _FIELDS_COMMON)
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*)$", part)
        if not m:
            raise _bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        if m.group(1) not in allowed:
            raise _bad_request(f"field label not supported: {m.group(1)}")
        out.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return out


# --------------------------------------------------------------------------------------------
# patches


_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "env": "name", "volumeMounts": "mountPath", "ports": "containerPort", "conditions": "type",
    "ownerReferences": "uid", "imagePullSecrets": "name", "containerStatuses": "name",
    "addresses": "type",
}
_MERGE_PRIMITIVES = ("finalizers",)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Enough of Kubernetes' strategic merge patch for the built-in types we serve."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            out[field] = [x for x in out.get(field) or [] if x not in v]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            if v.get("$patch") == "delete":
                out.pop(k, None)
            else:
                out[k] = strategic_merge_patch(out.get(k), v)
        elif isinstance(v, list) and k in _MERGE_KEYS and isinstance(out.get(k), list):
            out[k] = _merge_list(out[k], v, _MERGE_KEYS[k])
        elif isinstance(v, list) and k in _MERGE_PRIMITIVES and isinstance(out.get(k), list):
            out[k] = out[k] + [x for x in v if x not in out[k]]
        else:
            out[k] = copy.deepcopy(v)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain or k not in (target or {})}
    return out


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    out = [copy.deepcopy(x) for x in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            out.append(copy.deepcopy(item))
            continue
        idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
        elif idx is None:
            out.append(strategic_merge_patch({}, item))
        else:
            out[idx] = strategic_merge_patch(out[idx], item)
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for p in parts:
        if isinstance(doc, list):
            doc = doc[int(p)]
        elif isinstance(doc, dict):
            doc = doc[p]
        else:
            raise KeyError(p)
    return doc


def json_patch(target: Obj, ops: Any) -> Obj:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise _bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc: Any = copy.deepcopy(target)
    for op in ops:
        try:
            kind = op["op"]
            parts = _pointer(op["path"])
            if kind == "test":
                if _walk(doc, parts) != op.get("value"):
                    raise ApiError(422, "Invalid", f"testing value {op['path']} failed: test failed")
                continue
            if kind in ("move", "copy"):
                src = _pointer(op["from"])
                value = copy.deepcopy(_walk(doc, src))
                if kind == "move":
                    _remove(doc, src)
            else:
                value = copy.deepcopy(op.get("value"))
            if kind == "remove":
                _remove(doc, parts)
            elif kind in ("add", "move", "copy"):
                parent = _walk(doc, parts[:-1])
                if isinstance(parent, list):
                    if parts[-1] == "-":
                        parent.append(value)
                    else:
                        parent.insert(int(parts[-1]), value)
                else:
                    parent[parts[-1]] = value
            elif kind == "replace":
                parent = _walk(doc, parts[:-1])
                if isinstance(parent, list):
                    parent[int(parts[-1])] = value
                else:
                    if parts[-1] not in parent:
                        raise KeyError(parts[-1])
                    parent[parts[-1]] = value
            else:
                raise _bad_request(f"Unexpected kind: {kind}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                                           f"request: {op!r}: {e}") from e
    if not isinstance(doc, dict):
        raise _bad_request("the patch replaced the whole object with a non-object")
    return doc


def _remove(doc: Any, parts: list[str]) -> None:
    parent = _walk(doc, parts[:-1])
    if isinstance(parent, list):
        del parent[int(parts[-1])]
    else:
        del parent[parts[-1]]


# --------------------------------------------------------------------------------------------
# server-side apply: field sets (the managedFields "FieldsV1" format) and the apply merge

_FieldPath = tuple[str, ...]  # ("f:spec", "f:containers", 'k:{"name":"app"}', "f:image"); "." = the item
# server-set metadata, never part of what a manager owns
_SERVER_META = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink")


def _list_key(field: str, items: Sequence[Any]) -> str | None:
    """The key of an associative list for apply (None: the list is atomic, replaced whole):
    the strategic merge keys, ``port`` for Service ports."""
    candidates = ("containerPort", "port") if field == "ports" else (
        (_MERGE_KEYS[field],) if field in _MERGE_KEYS else ())
    for key in candidates:
        if items and all(isinstance(i, dict) and key in i for i in items):
            return key
    return None


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def _apply_merge(current: Any, applied: Any, field: str = "") -> Any:
    """Merge an apply configuration into an object: maps field by field, associative lists
    (containers by name, Service ports by port, ...) item by item, anything else replaced;
    nulls in the configuration are ignored."""
    if isinstance(applied, dict):
        merged: Obj = copy.deepcopy(current) if isinstance(current, dict) else {}
        for k, v in applied.items():
            if v is not None:
                merged[k] = _apply_merge(merged.get(k), v, k)
        return merged
    if isinstance(applied, list) and isinstance(current, list):
        key = _list_key(field, applied)
        if key is not None:
            out = copy.deepcopy(current)
            for item in applied:
                idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item[key]),
                           None)
                if idx is None:
                    out.append(_apply_merge(None, item))
                else:
                    out[idx] = _apply_merge(out[idx], item)
            return out
    return _strip_nulls(copy.deepcopy(applied))


def _item_element(key: str, value: Any) -> str:
    return "k:" + json.dumps({key: value}, separators=(",", ":"))


def _field_paths(value: Any, prefix: _FieldPath = (), field: str = "") -> set[_FieldPath]:
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if v is not None]
        if not items:
            return {prefix} if prefix else set()
        out: set[_FieldPath] = set()
        for k, v in items:
            out |= _field_paths(v, (*prefix, f"f:{k}"), k)
        return out
    if isinstance(value, list):
        key = _list_key(field, value)
        if key is None:
            return {prefix}
        out = set()
        for item in value:
            at = (*prefix, _item_element(key, item[key]))
            out.add((*at, "."))
            out |= _field_paths(item, at)
        return out
    return {prefix}


def _applied_fields(config: Obj) -> set[_FieldPath]:
    """The fields an apply configuration sets (what its manager then owns)."""
    body = {k: v for k, v in config.items() if k not in ("apiVersion", "kind")}
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _SERVER_META}
    body.pop("metadata", None)
    if meta:
        body["metadata"] = meta
    return _field_paths(body)


def _fields_v1(paths: Iterable[_FieldPath]) -> Obj:
    """Field paths as the ``fieldsV1`` tree of a managedFields entry."""
    tree: Obj = {}
    for path in sorted(paths):
        node_ = tree
        for el in path:
            node_ = node_.setdefault(el, {})
    return tree


def _paths_of(tree: Any, prefix: _FieldPath = ()) -> set[_FieldPath]:
    out: set[_FieldPath] = set()
    for k, v in (tree or {}).items():
        if isinstance(v, dict) and v:
            out |= _paths_of(v, (*prefix, k))
        else:
            out.add((*prefix, k))
    return out


_ABSENT = object()
_APPLY_PATCH = "application/apply-patch+yaml"


def _managed_entry(manager: str, res: Resource, paths: Iterable[_FieldPath]) -> Obj:
    return {"manager": manager, "operation": "Apply", "apiVersion": res.api_version, "time": rfc3339(),
            "fieldsType": "FieldsV1", "fieldsV1": _fields_v1(paths)}


def _unmanaged(obj: Obj) -> Obj:
    """obj without metadata.managedFields (a shallow copy, for comparing)."""
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"}}


def _print_manager(entry: Obj) -> str:
    """How apply conflicts name a manager (apiserver fieldmanager printManager)."""
    out = json.dumps(entry.get("manager", ""))
    if entry.get("subresource"):
        out += f" with subresource {json.dumps(entry['subresource'])}"
    if entry.get("operation") == "Update":
        out += f" using {entry.get('apiVersion', '')}" + (f" at {entry['time']}" if entry.get("time") else "")
    return out


def _apply_conflict(conflicts: Sequence[tuple[str, _FieldPath]]) -> ApiError:
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {m}", "field": _path_string(p)}
              for m, p in conflicts]
    if len(conflicts) == 1:
        m, p = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {m}: {_path_string(p)}"
    else:
        lines = []
        for m in sorted({m for m, _ in conflicts}):
            lines.append(f"conflicts with {m}:")
            lines += [f"- {_path_string(p)}" for mm, p in conflicts if mm == m]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def _item_want(el: str) -> dict[str, Any] | None:
    try:
        want = json.loads(el[2:])
    except ValueError:
        return None
    return want if isinstance(want, dict) else None


def _item_matches(x: Any, want: Mapping[str, Any]) -> bool:
    return isinstance(x, dict) and all(x.get(k) == v for k, v in want.items())


def _at_path(obj: Any, path: _FieldPath) -> Any:
    """The value at a field path, or _ABSENT."""
    cur = obj
    for el in path:
        if el == ".":
            return cur
        if el.startswith("f:") and isinstance(cur, dict) and el[2:] in cur:
            cur = cur[el[2:]]
        elif el.startswith("k:") and isinstance(cur, list) and (want := _item_want(el)) is not None:
            cur = next((x for x in cur if _item_matches(x, want)), _ABSENT)
            if cur is _ABSENT:
                return _ABSENT
        else:
            return _ABSENT
    return cur


def _remove_field(obj: Obj, path: _FieldPath, keep: set[_FieldPath]) -> None:
    """Remove the field (or list item, for a path ending in ".") at path, then the maps
    that removal left empty unless keep names them."""
    if path[-1] == ".":
        path = path[:-1]
    parent = _at_path(obj, path[:-1])
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list) and (want := _item_want(last)) is not None:
        parent[:] = [x for x in parent if not _item_matches(x, want)]
    else:
        return
    up = path[:-1]
    while up and up[-1].startswith("f:") and up not in keep and _at_path(obj, up) in ({}, []):
        holder = _at_path(obj, up[:-1])
        if isinstance(holder, dict):
            holder.pop(up[-1][2:], None)
        up = up[:-1]


def _still_needed(path: _FieldPath, kept: set[_FieldPath]) -> bool:
    """Whether a field its manager gave up stays: something below it is kept, or it is the key
    of a list item (kept as long as the item is)."""
    base = path[:-1] if path[-1] == "." else path
    if len(base) >= 2 and base[-2].startswith("k:") and base[-1][2:] in (_item_want(base[-2]) or {}):
        return True
    return any(k[:len(base)] == base for k in kept)


def _path_string(path: _FieldPath) -> str:
    """A field path as the API server prints it in apply conflicts."""
    out = ""
    for el in path:
        if el.startswith("f:"):
            out += "." + el[2:]
        elif el.startswith("k:"):
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in (_item_want(el) or {}).items()) + "]"
    return out


# --------------------------------------------------------------------------------------------
# builders: real-shaped objects


def _uid(kind: str, namespace: str, name: str) -> str:
    """A stable uid, so a pod's ownerReference names the uid its owner gets when added."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"k8s-emulator:{kind}/{namespace}/{name}"))


def _hex(*parts: str, n: int = 64) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


def _node_ip(name: str) -> str:
    h = int(_hex(name, n=8), 16)
    return f"10.0.{h % 200 + 1}.{(h >> 8) % 250 + 2}"


def _pod_ip(namespace: str, name: str) -> str:
    h = int(_hex(namespace, name, n=8), 16)
    return f"10.244.{h % 250}.{(h >> 8) % 250 + 2}"


_OWNER_API = {"ReplicaSet": "apps/v1", "Deployment": "apps/v1", "StatefulSet": "apps/v1",
              "DaemonSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1", "Node": "v1",
              "ReplicationController": "v1"}


def _owner_ref(kind: str, name: str, namespace: str) -> Obj:
    return {"apiVersion": _OWNER_API.get(kind, "v1"), "kind": kind, "name": name,
            "uid": _uid(kind, namespace, name), "controller": True, "blockOwnerDeletion": True}


_COND_DEFAULTS = {
    "MemoryPressure": ("KubeletHasSufficientMemory", "kubelet has sufficient memory available",
                       "KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
    "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure",
                     "KubeletHasDiskPressure", "kubelet has disk pressure"),
    "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available",
                    "KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
}


def node(name: str, *, ready: bool | str = True, unschedulable: bool = False,
         taints: Iterable[Obj | str] = (), labels: Mapping[str, str] | None = None, cpu: str = "4",
         memory: str = "8Gi", pods: str = "110", kubelet: str = "v1.29.4",
         conditions: Iterable[Obj] | None = None, annotations: Mapping[str, str] | None = None,
         ready_since: str | dt.datetime | None = None) -> Obj:
    """A v1 Node as a kubelet-registered node looks. ``ready`` may be True, False or "Unknown";
    ``taints`` are dicts or ``key[=value]:Effect`` strings; ``conditions`` override/extend the
    default conditions by type (missing reason/message/times are filled in); ``ready_since``
    is the conditions' lastTransitionTime. Like the node lifecycle controller, it also puts
    ``node.kubernetes.io/not-ready`` (``unreachable`` when "Unknown") NoSchedule+NoExecute
    taints on a node that is not ready and ``node.kubernetes.io/unschedulable:NoSchedule`` on
    an unschedulable one, before the given taints."""
    now = rfc3339()
    since = _time_arg(ready_since)
    status = "True" if ready is True else "False" if ready is False else str(ready)
    if status == "True":
        ready_reason, ready_msg = "KubeletReady", "kubelet is posting ready status"
    elif status == "False":
        ready_reason = "KubeletNotReady"
        ready_msg = ("container runtime network not ready: NetworkReady=false "
                     "reason:NetworkPluginNotReady message:Network plugin returns error: "
                     "cni plugin not initialized")
    else:
        ready_reason, ready_msg = "NodeStatusUnknown", "Kubelet stopped posting node status."
    conds: list[Obj] = []
    for ctype, (ok_reason, ok_msg, _bad_reason, _bad_msg) in _COND_DEFAULTS.items():
        conds.append({"type": ctype, "status": "False" if status != "Unknown" else "Unknown",
                      "lastHeartbeatTime": now, "lastTransitionTime": since,
                      "reason": ok_reason if status != "Unknown" else "NodeStatusUnknown",
                      "message": ok_msg if status != "Unknown" else "Kubelet stopped posting node status."})
    conds.append({"type": "Ready", "status": status, "lastHeartbeatTime": now,
                  "lastTransitionTime": since, "reason": ready_reason, "message": ready_msg})
    for c in conditions or ():
        base = next((x for x in conds if x["type"] == c["type"]), None)
        if base is None:
            base = {"type": c["type"], "lastHeartbeatTime": now, "lastTransitionTime": since}
            conds.append(base)
        if c["type"] in _COND_DEFAULTS and "reason" not in c and "status" in c:
            d = _COND_DEFAULTS[c["type"]]
            base["reason"], base["message"] = (d[2], d[3]) if c["status"] == "True" else (d[0], d[1])
        base.update(copy.deepcopy(c))
    node_taints: list[Obj] = []
    if status != "True":
        key = "node.kubernetes.io/not-ready" if status == "False" else "node.kubernetes.io/unreachable"
        node_taints += [{"key": key, "effect": "NoSchedule", "timeAdded": since},
                        {"key": key, "effect": "NoExecute", "timeAdded": since}]
    if unschedulable:
        node_taints.append({"key": _UNSCHEDULABLE_TAINT, "effect": "NoSchedule", "timeAdded": now})
    for t in taints:
        node_taints.append(_parse_taint(t) if isinstance(t, str) else copy.deepcopy(t))
    spec: Obj = {"podCIDR": f"10.244.{int(_hex(name, n=4), 16) % 250}.0/24"}
    spec["podCIDRs"] = [spec["podCIDR"]]
    if unschedulable:
        spec["unschedulable"] = True
    if node_taints:
        spec["taints"] = node_taints
    capacity = {"cpu": cpu, "ephemeral-storage": "102626232Ki", "hugepages-1Gi": "0",
                "hugepages-2Mi": "0", "memory": memory, "pods": pods}
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": _uid("Node", "", name),
            "labels": {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
                       "kubernetes.io/os": "linux", **(labels or {})},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                            **(annotations or {})},
        },
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": conds,
            "addresses": [{"type": "InternalIP", "address": _node_ip(name)},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": _hex("machine", name, n=32),
                "systemUUID": str(uuid.UUID(_hex("sys", name, n=32))),
                "bootID": str(uuid.UUID(_hex("boot", name, n=32))), "kernelVersion": "6.1.0-21-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.6.20", "kubeletVersion": kubelet,
                "kubeProxyVersion": kubelet, "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    }


def _parse_taint(text: str) -> Obj:
    kv, _, effect = text.rpartition(":")
    if not kv or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(f"taint {text!r}: want key[=value]:Effect")
    key, _, value = kv.partition("=")
    t: Obj = {"key": key, "effect": effect}
    if value:
        t["value"] = value
    if effect == "NoExecute":
        t["timeAdded"] = rfc3339()
    return t


def _pull_policy(image: str) -> str:
    return "Always" if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1] else "IfNotPresent"


def _full_image(image: str) -> str:
    first = image.split("/", 1)[0]
    if "/" not in image:
        return f"docker.io/library/{image}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{image}"
    return image


_WAITING_MESSAGES = {
    "ImagePullBackOff": 'Back-off pulling image "{image}"',
    "ErrImagePull": 'failed to pull and unpack image "{full}": failed to resolve reference "{full}": '
                    '{full}: not found',
    "CrashLoopBackOff": "back-off 5m0s restarting failed container={container} pod={pod}_{ns}({uid})",
    "CreateContainerConfigError": 'secret "{pod}-config" not found',
}


def pod(name: str, namespace: str = "default", *, node: str | None = None, phase: str = "Running",
        ready: bool = True, labels: Mapping[str, str] | None = None, owner: tuple[str, str] | None = None,
        containers: Sequence[tuple[str, str]] = (("app", "nginx:1.25"),),
        requests: Mapping[str, str] | None = None, restarts: int = 0, waiting_reason: str | None = None,
        pending_message: str | None = None, annotations: Mapping[str, str] | None = None,
        volumes: Iterable[Obj] = ()) -> Obj:
    """A v1 Pod as the kubelet reports it. ``owner`` = (kind, name) makes a controller
    ownerReference; ``waiting_reason`` puts every container in ``state.waiting`` with the real
    message; ``pending_message`` makes an unschedulable pending pod (no node, no statuses);
    ``volumes`` are extra pod volumes (e.g. ``{"name": "cache", "emptyDir": {}}``)."""
    uid = _uid("Pod", namespace, name)
    if pending_message is not None:
        phase, node = "Pending", None
    created = rfc3339()
    token_vol = f"kube-api-access-{_hex(namespace, name, n=5)}"
    meta: Obj = {"name": name, "namespace": namespace, "uid": uid}
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner is not None:
        meta["ownerReferences"] = [_owner_ref(owner[0], owner[1], namespace)]
    spec_containers = []
    for cname, image in containers:
        c: Obj = {"name": cname, "image": image,
                  "resources": {"requests": dict(requests)} if requests else {},
                  "volumeMounts": [{"name": token_vol, "readOnly": True,
                                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                  "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                  "imagePullPolicy": _pull_policy(image)}
        spec_containers.append(c)
    tolerations = [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 300},
                   {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 300}]
    if owner is not None and owner[0] == "DaemonSet":
        tolerations = [{"key": k, "operator": "Exists", "effect": e} for k, e in (
            ("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
            ("node.kubernetes.io/disk-pressure", "NoSchedule"),
            ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ("node.kubernetes.io/pid-pressure", "NoSchedule"),
            ("node.kubernetes.io/unschedulable", "NoSchedule"))]
    spec: Obj = {
        "volumes": [*(copy.deepcopy(v) for v in volumes), {"name": token_vol, "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}], "defaultMode": 420}}],
        "containers": spec_containers,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": tolerations,
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    if node:
        spec["nodeName"] = node
    qos = "Burstable" if requests else "BestEffort"
    if pending_message is not None:
        status: Obj = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "lastProbeTime": None, "lastTransitionTime": created,
             "reason": "Unschedulable", "message": pending_message}], "qosClass": qos}
        return {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": status}

    statuses = []
    all_ready = True
    for cname, image in containers:
        cs: Obj = {"name": cname, "state": {}, "lastState": {}, "ready": False, "restartCount": restarts,
                   "image": _full_image(image),
                   "imageID": f"{_full_image(image).rsplit(':', 1)[0]}@sha256:{_hex('img', image)}",
                   "started": False}
        cid = f"containerd://{_hex(namespace, name, cname, str(restarts))}"
        prev_cid = f"containerd://{_hex(namespace, name, cname, str(restarts - 1))}"
        if restarts > 0 or waiting_reason == "CrashLoopBackOff":
            cs["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": created,
                                              "finishedAt": created, "containerID": prev_cid}}
        if waiting_reason is not None:
            msg = _WAITING_MESSAGES.get(waiting_reason, "").format(
                image=image, full=_full_image(image), container=cname, pod=name, ns=namespace, uid=uid)
            cs["state"] = {"waiting": {"reason": waiting_reason, **({"message": msg} if msg else {})}}
            if waiting_reason not in ("ImagePullBackOff", "ErrImagePull", "ContainerCreating",
                                      "CreateContainerConfigError", "InvalidImageName"):
                cs["containerID"] = prev_cid
        elif phase == "Pending":
            cs["state"] = {"waiting": {"reason": "ContainerCreating"}}
        elif phase in ("Succeeded", "Failed"):
            ok = phase == "Succeeded"
            cs["state"] = {"terminated": {"exitCode": 0 if ok else 1,
                                          "reason": "Completed" if ok else "Error", "startedAt": created,
                                          "finishedAt": created, "containerID": cid}}
            cs["containerID"] = cid
        else:
            cs["state"] = {"running": {"startedAt": created}}
            cs["containerID"] = cid
            cs["started"] = True
            cs["ready"] = bool(ready)
        all_ready = all_ready and cs["ready"]
        statuses.append(cs)
    pod_ready = all_ready and phase == "Running"
    not_ready = [c for c, _ in containers]
    terminal = phase in ("Succeeded", "Failed")

    def cond(ctype: str, ok: bool, reason: str | None = None, message: str | None = None) -> Obj:
        c: Obj = {"type": ctype, "status": "True" if ok else "False", "lastProbeTime": None,
                  "lastTransitionTime": created}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        return c

    unready_msg = f"containers with unready status: [{' '.join(not_ready)}]"
    ready_reason = "PodCompleted" if terminal else "ContainersNotReady"
    conditions = [
        cond("PodReadyToStartContainers", not terminal and phase != "Pending"),
        cond("Initialized", True, "PodCompleted" if terminal else None),
        cond("Ready", pod_ready, None if pod_ready else ready_reason,
             None if pod_ready or terminal else unready_msg),
        cond("ContainersReady", pod_ready, None if pod_ready else ready_reason,
             None if pod_ready or terminal else unready_msg),
        cond("PodScheduled", True),
    ]
    status = {"phase": phase, "conditions": conditions}
    if node:
        status["hostIP"] = _node_ip(node)
        status["hostIPs"] = [{"ip": _node_ip(node)}]
        if phase != "Pending":
            ip = _pod_ip(namespace, name)
            status["podIP"] = ip
            status["podIPs"] = [{"ip": ip}]
    status["startTime"] = created
    status["containerStatuses"] = statuses
    status["qosClass"] = qos
    return {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": status}


def _template(name: str, labels: Mapping[str, str], image: str) -> Obj:
    return {"metadata": {"labels": dict(labels)},
            "spec": {"containers": [{"name": name, "image": image, "resources": {},
                                     "terminationMessagePath": "/dev/termination-log",
                                     "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
                     "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                     "dnsPolicy": "ClusterFirst", "securityContext": {},
                     "schedulerName": "default-scheduler"}}


def _omit_zero(d: Obj, *keys: str) -> Obj:
    for k in keys:
        if not d.get(k):
            d.pop(k, None)
    return d


def deployment(name: str, namespace: str = "default", replicas: int = 1, ready: int | None = None,
               updated: int | None = None, available: int | None = None, *,
               labels: Mapping[str, str] | None = None, image: str = "nginx:1.25") -> Obj:
    """An apps/v1 Deployment with the given status counts (default: all = replicas)."""
    ready = replicas if ready is None else ready
    updated = replicas if updated is None else updated
    available = ready if available is None else available
    sel = dict(labels or {"app": name})
    now = rfc3339()
    rs_name = f"{name}-{_hex('rs', namespace, name, n=10)}"
    min_ok = available >= replicas - math.floor(replicas * 0.25)
    status = _omit_zero({
        "observedGeneration": 1, "replicas": max(replicas, updated), "updatedReplicas": updated,
        "readyReplicas": ready, "availableReplicas": available,
        "unavailableReplicas": max(0, replicas - available),
        "conditions": [
            {"type": "Available", "status": "True" if min_ok else "False", "lastUpdateTime": now,
             "lastTransitionTime": now,
             "reason": "MinimumReplicasAvailable" if min_ok else "MinimumReplicasUnavailable",
             "message": "Deployment has minimum availability." if min_ok
             else "Deployment does not have minimum availability."},
            {"type": "Progressing", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now,
             "reason": "NewReplicaSetAvailable",
             "message": f'ReplicaSet "{rs_name}" has successfully progressed.'},
        ]}, "replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas")
    return {
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": namespace, "uid": _uid("Deployment", namespace, name),
                     "generation": 1, "labels": dict(sel),
                     "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": sel},
                 "template": _template(name, sel, image),
                 "strategy": {"type": "RollingUpdate",
                              "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                 "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
        "status": status,
    }


def replicaset(name: str, namespace: str = "default", replicas: int = 1, ready: int | None = None, *,
               owner: tuple[str, str] | None = None, labels: Mapping[str, str] | None = None,
               image: str = "nginx:1.25") -> Obj:
    """An apps/v1 ReplicaSet (owner e.g. ("Deployment", "web"))."""
    ready = replicas if ready is None else ready
    sel = dict(labels or {"app": name})
    meta: Obj = {"name": name, "namespace": namespace, "uid": _uid("ReplicaSet", namespace, name),
                 "generation": 1, "labels": dict(sel)}
    if owner is not None:
        meta["ownerReferences"] = [_owner_ref(owner[0], owner[1], namespace)]
    return {"kind": "ReplicaSet", "apiVersion": "apps/v1", "metadata": meta,
            "spec": {"replicas": replicas, "selector": {"matchLabels": sel},
                     "template": _template(name, sel, image)},
            "status": _omit_zero({"replicas": replicas, "fullyLabeledReplicas": replicas,
                                  "readyReplicas": ready, "availableReplicas": ready,
                                  "observedGeneration": 1},
                                 "fullyLabeledReplicas", "readyReplicas", "availableReplicas")}


def statefulset(name: str, namespace: str = "default", replicas: int = 1, ready: int | None = None,
                updated: int | None = None, available: int | None = None, *,
                labels: Mapping[str, str] | None = None, image: str = "nginx:1.25") -> Obj:
    """An apps/v1 StatefulSet with the given status counts (default: all = replicas)."""
    ready = replicas if ready is None else ready
    updated = replicas if updated is None else updated
    available = ready if available is None else available
    sel = dict(labels or {"app": name})
    rev = f"{name}-{_hex('sts', namespace, name, n=10)}"
    status = _omit_zero({"observedGeneration": 1, "replicas": replicas, "readyReplicas": ready,
                         "currentReplicas": updated, "updatedReplicas": updated, "currentRevision": rev,
                         "updateRevision": rev, "collisionCount": 0, "availableReplicas": available},
                        "readyReplicas", "currentReplicas", "updatedReplicas")
    status["replicas"] = replicas
    status["availableReplicas"] = available
    return {
        "kind": "StatefulSet", "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": namespace, "uid": _uid("StatefulSet", namespace, name),
                     "generation": 1, "labels": dict(sel)},
        "spec": {"replicas": replicas, "selector": {"matchLabels": sel},
                 "template": _template(name, sel, image), "serviceName": name,
                 "podManagementPolicy": "OrderedReady",
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                 "revisionHistoryLimit": 10,
                 "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"}},
        "status": status,
    }


def daemonset(name: str, namespace: str = "default", desired: int = 1, ready: int | None = None,
              updated: int | None = None, *, labels: Mapping[str, str] | None = None,
              image: str = "fluent/fluent-bit:2.2") -> Obj:
    """An apps/v1 DaemonSet with the given status counts (default: all = desired)."""
    ready = desired if ready is None else ready
    updated = desired if updated is None else updated
    sel = dict(labels or {"app": name})
    status = _omit_zero({"currentNumberScheduled": desired, "numberMisscheduled": 0,
                         "desiredNumberScheduled": desired, "numberReady": ready, "observedGeneration": 1,
                         "updatedNumberScheduled": updated, "numberAvailable": ready,
                         "numberUnavailable": max(0, desired - ready)},
                        "updatedNumberScheduled", "numberAvailable", "numberUnavailable")
    return {
        "kind": "DaemonSet", "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": namespace, "uid": _uid("DaemonSet", namespace, name),
                     "generation": 1, "labels": dict(sel),
                     "annotations": {"deprecated.daemonset.template.generation": "1"}},
        "spec": {"selector": {"matchLabels": sel}, "template": _template(name, sel, image),
                 "updateStrategy": {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                 "revisionHistoryLimit": 10},
        "status": status,
    }


def pdb(name: str, namespace: str = "default", match_labels: Mapping[str, str] | None = None,
        min_available: int | str | None = None, max_unavailable: int | str | None = None) -> Obj:
    """A policy/v1 PodDisruptionBudget; the emulator computes its status from the pods."""
    spec: Obj = {"selector": {"matchLabels": dict(match_labels or {})}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return {"kind": "PodDisruptionBudget", "apiVersion": "policy/v1",
            "metadata": {"name": name, "namespace": namespace,
                         "uid": _uid("PodDisruptionBudget", namespace, name), "generation": 1},
            "spec": spec}


# --------------------------------------------------------------------------------------------
# pod helpers


def is_pod_ready(p: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (p.get("status") or {}).get("conditions") or ())


def _labels(o: Obj) -> dict[str, str]:
    return dict((o.get("metadata") or {}).get("labels") or {})


def _pod_summary(p: Obj) -> tuple[str, str, str]:
    """(READY, STATUS, RESTARTS) as kubectl's pod printer computes them (simplified)."""
    meta, spec, status = p.get("metadata") or {}, p.get("spec") or {}, p.get("status") or {}
    total = len(spec.get("containers") or ())
    ready_n = restarts = 0
    last_restart: str | None = None
    reason = status.get("reason") or status.get("phase") or ""

    def note_restart(cs: Obj) -> None:
        nonlocal restarts, last_restart
        restarts += int(cs.get("restartCount") or 0)
        fin = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        if fin and (last_restart is None or fin > last_restart):
            last_restart = fin

    initializing = False
    init_specs = spec.get("initContainers") or ()
    for i, cs in enumerate(status.get("initContainerStatuses") or ()):
        note_restart(cs)
        st = cs.get("state") or {}
        term, wait = st.get("terminated"), st.get("waiting")
        if term and term.get("exitCode") == 0:
            continue
        if term:
            reason = "Init:" + (term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal")
                                                       else f"ExitCode:{term.get('exitCode', 0)}"))
        elif wait and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break
    if not initializing:
        has_running = False
        for cs in reversed(status.get("containerStatuses") or ()):
            note_restart(cs)
            st = cs.get("state") or {}
            if (st.get("waiting") or {}).get("reason"):
                reason = st["waiting"]["reason"]
            elif st.get("terminated"):
                t = st["terminated"]
                reason = t.get("reason") or (f"Signal:{t['signal']}" if t.get("signal")
                                             else f"ExitCode:{t.get('exitCode', 0)}")
            elif cs.get("ready") and "running" in st:
                has_running = True
                ready_n += 1
        if reason == "Completed" and has_running:
            reason = "Running" if is_pod_ready(p) else "NotReady"
    if meta.get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    restarts_s = str(restarts)
    if restarts and last_restart:
        restarts_s = f"{restarts} ({_age(last_restart)} ago)"
    return f"{ready_n}/{total}", reason, restarts_s


def _node_status(n: Obj) -> str:
    conds = {c.get("type"): c.get("status") for c in (n.get("status") or {}).get("conditions") or ()}
    parts = []
    if "Ready" in conds:
        parts.append("Ready" if conds["Ready"] == "True" else "NotReady")
    else:
        parts.append("Unknown")
    if (n.get("spec") or {}).get("unschedulable"):
        parts.append("SchedulingDisabled")
    return ",".join(parts)


def _node_roles(n: Obj) -> str:
    roles = set()
    for k, v in _labels(n).items():
        if k.startswith("node-role.kubernetes.io/"):
            roles.add(k.split("/", 1)[1])
        elif k == "kubernetes.io/role" and v:
            roles.add(v)
    return ",".join(sorted(r for r in roles if r)) or "<none>"


def _node_address(n: Obj, kind: str) -> str:
    for a in (n.get("status") or {}).get("addresses") or ():
        if a.get("type") == kind:
            return str(a.get("address"))
    return "<none>"


def _node_info(n: Obj, key: str) -> str:
    return str(((n.get("status") or {}).get("nodeInfo") or {}).get(key) or "<unknown>")


def _containers(o: Obj) -> list[Obj]:
    return list(((o.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or ())


def _st(o: Obj, key: str) -> int:
    return int((o.get("status") or {}).get(key) or 0)


# --------------------------------------------------------------------------------------------
# tables (what the server's printers send for `kubectl get` without -o)

_NAME_DESC = ("Name must be unique within a namespace. Is required when creating resources, although "
              "some resources may allow a client to request the generation of an appropriate name "
              "automatically. Name is primarily intended for creation idempotence and configuration "
              "definition. Cannot be updated. More info: "
              "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")
_AGE_DESC = ("CreationTimestamp is a timestamp representing the server time when this object was "
             "created. It is not guaranteed to be set in happens-before order across separate "
             "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
             "UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
             "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")


@dataclass(frozen=True)
class _Col:
    name: str
    cell: Callable[[Obj], Any]
    description: str = ""
    type: str = "string"
    format: str = ""
    priority: int = 0


def _name(o: Obj) -> str:
    return str(o["metadata"]["name"])


def _created(o: Obj) -> str:
    return _age(o["metadata"].get("creationTimestamp"))


_NAME_COL = _Col("Name", _name, _NAME_DESC, format="name")
_AGE_COL = _Col("Age", _created, _AGE_DESC)
_WIDE_WORKLOAD = (
    _Col("Containers", lambda o: ",".join(c["name"] for c in _containers(o)),
         "Names of each container in the template.", priority=1),
    _Col("Images", lambda o: ",".join(c.get("image", "") for c in _containers(o)),
         "Images referenced by each container in the template.", priority=1),
)
_SELECTOR_COL = _Col("Selector", lambda o: _format_selector((o.get("spec") or {}).get("selector")),
                     "Label selector for pods.", priority=1)

def _service_ports(o: Obj) -> str:
    out = []
    for p in (o.get("spec") or {}).get("ports") or ():
        port = f"{p.get('port')}:{p['nodePort']}" if p.get("nodePort") else str(p.get("port"))
        out.append(f"{port}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _service_external_ip(o: Obj) -> str:
    spec = o.get("spec") or {}
    ips = list(spec.get("externalIPs") or ())
    if spec.get("type") == "ExternalName":
        return str(spec.get("externalName") or "<none>")
    if spec.get("type") == "LoadBalancer":
        ingress = ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
        ips += [i.get("ip") or i.get("hostname") or "" for i in ingress]
        return ",".join(ips) or "<pending>"
    return ",".join(ips) or "<none>"


def _binding_subjects(o: Obj, kind: str) -> str:
    out = []
    for sub in o.get("subjects") or ():
        if sub.get("kind") != kind:
            continue
        if kind == "ServiceAccount":
            out.append(f"{sub.get('namespace') or o['metadata'].get('namespace', '')}/{sub.get('name')}")
        else:
            out.append(str(sub.get("name")))
    return ", ".join(out)


_BINDING_COLS = (
    _Col("Role", lambda o: f"{(o.get('roleRef') or {}).get('kind')}/{(o.get('roleRef') or {}).get('name')}",
         "RoleRef references the role being bound."),
    _AGE_COL,
    _Col("Users", lambda o: _binding_subjects(o, "User"), "Users in the binding.", priority=1),
    _Col("Groups", lambda o: _binding_subjects(o, "Group"), "Groups in the binding.", priority=1),
    _Col("ServiceAccounts", lambda o: _binding_subjects(o, "ServiceAccount"),
         "ServiceAccounts in the binding.", priority=1),
)


def _ingress_class_parameters(o: Obj) -> str:
    ref = (o.get("spec") or {}).get("parameters")
    if not ref:
        return "<none>"
    kind = f"{ref.get('kind')}.{ref['apiGroup']}" if ref.get("apiGroup") else str(ref.get("kind"))
    return f"{kind}/{ref.get('name')}"


def _apiservice_service(o: Obj) -> str:
    svc = (o.get("spec") or {}).get("service")
    return f"{svc.get('namespace')}/{svc.get('name')}" if svc else "Local"


def _apiservice_available(o: Obj) -> str:
    cond = next((c for c in (o.get("status") or {}).get("conditions") or () if c.get("type") == "Available"),
                None)
    if cond is None:
        return "Unknown"
    if cond.get("status") == "True":
        return "True"
    return f"{cond.get('status')} ({cond.get('reason', '')})"


_TABLES: dict[str, tuple[_Col, ...]] = {
    "pods": (
        _NAME_COL,
        _Col("Ready", lambda o: _pod_summary(o)[0],
             "The aggregate readiness state of this pod for accepting traffic."),
        _Col("Status", lambda o: _pod_summary(o)[1], "The aggregate status of the containers in this pod."),
        _Col("Restarts", lambda o: _pod_summary(o)[2], "The number of times the containers in this pod have "
             "been restarted and when the last container in this pod has restarted."),
        _AGE_COL,
        _Col("IP", lambda o: (o.get("status") or {}).get("podIP") or "<none>",
             "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet "
             "allocated.",
             priority=1),
        _Col("Node", lambda o: (o.get("spec") or {}).get("nodeName") or "<none>",
             "NodeName indicates in which node this pod is scheduled.", priority=1),
        _Col("Nominated Node", lambda o: (o.get("status") or {}).get("nominatedNodeName") or "<none>",
             "nominatedNodeName is set only when this pod preempts other pods on the node.", priority=1),
        _Col("Readiness Gates", lambda o: "<none>",
             "If specified, all readiness gates will be evaluated for pod readiness.", priority=1),
    ),
    "nodes": (
        _NAME_COL,
        _Col("Status", _node_status, "The status of the node"),
        _Col("Roles", _node_roles, "The roles of the node"),
        _AGE_COL,
        _Col("Version", lambda o: _node_info(o, "kubeletVersion"), "Kubelet Version reported by the node."),
        _Col("Internal-IP", lambda o: _node_address(o, "InternalIP"),
             "List of addresses reachable to the node.", priority=1),
        _Col("External-IP", lambda o: _node_address(o, "ExternalIP"),
             "List of addresses reachable to the node.", priority=1),
        _Col("OS-Image", lambda o: _node_info(o, "osImage"),
             "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
             priority=1),
        _Col("Kernel-Version", lambda o: _node_info(o, "kernelVersion"),
             "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", priority=1),
        _Col("Container-Runtime", lambda o: _node_info(o, "containerRuntimeVersion"),
             "ContainerRuntime Version reported by the node through runtime remote API (e.g. "
             "containerd://1.4.2).", priority=1),
    ),
    "namespaces": (
        _NAME_COL,
        _Col("Status", lambda o: (o.get("status") or {}).get("phase", ""), "The status of the namespace"),
        _AGE_COL,
    ),
    "deployments": (
        _NAME_COL,
        _Col("Ready", lambda o: f"{_st(o, 'readyReplicas')}/{(o.get('spec') or {}).get('replicas', 1)}",
             "Number of the pod with ready state"),
        _Col("Up-to-date", lambda o: _st(o, "updatedReplicas"),
             "Total number of non-terminated pods targeted by this deployment that have the desired "
             "template spec.",
             type="integer"),
        _Col("Available", lambda o: _st(o, "availableReplicas"),
             "Total number of available pods (ready for at least minReadySeconds) targeted by this "
             "deployment.",
             type="integer"),
        _AGE_COL, *_WIDE_WORKLOAD, _SELECTOR_COL,
    ),
    "statefulsets": (
        _NAME_COL,
        _Col("Ready", lambda o: f"{_st(o, 'readyReplicas')}/{(o.get('spec') or {}).get('replicas', 1)}",
             "Number of the pod with ready state"),
        _AGE_COL, *_WIDE_WORKLOAD,
    ),
    "daemonsets": (
        _NAME_COL,
        _Col("Desired", lambda o: _st(o, "desiredNumberScheduled"),
             "The total number of nodes that should be running the daemon pod.", type="integer"),
        _Col("Current", lambda o: _st(o, "currentNumberScheduled"),
             "The number of nodes that are running at least 1 daemon pod.", type="integer"),
        _Col("Ready", lambda o: _st(o, "numberReady"),
             "The number of nodes that should be running the daemon pod and have one or more of the daemon "
             "pod running and ready.", type="integer"),
        _Col("Up-to-date", lambda o: _st(o, "updatedNumberScheduled"),
             "The total number of nodes that are running updated daemon pod", type="integer"),
        _Col("Available", lambda o: _st(o, "numberAvailable"),
             "The number of nodes that should be running the daemon pod and have one or more of the daemon "
             "pod running and available.", type="integer"),
        _Col("Node Selector", lambda o: ",".join(
            f"{k}={v}" for k, v in sorted((((o.get("spec") or {}).get("template") or {}).get("spec") or {})
                                          .get("nodeSelector", {}).items())) or "<none>",
             "NodeSelector is a selector which must be true for the pod to fit on a node."),
        _AGE_COL, *_WIDE_WORKLOAD, _SELECTOR_COL,
    ),
    "replicasets": (
        _NAME_COL,
        _Col("Desired", lambda o: (o.get("spec") or {}).get("replicas", 1),
             "Number of desired pods.", type="integer"),
        _Col("Current", lambda o: _st(o, "replicas"), "Number of the pod with current state", type="integer"),
        _Col("Ready", lambda o: _st(o, "readyReplicas"), "Number of the pod with ready state",
             type="integer"),
        _AGE_COL, *_WIDE_WORKLOAD, _SELECTOR_COL,
    ),
    "services": (
        _NAME_COL,
        _Col("Type", lambda o: (o.get("spec") or {}).get("type", "ClusterIP"), "The type of the service."),
        _Col("Cluster-IP", lambda o: (o.get("spec") or {}).get("clusterIP") or "<none>",
             "clusterIP is the IP address of the service."),
        _Col("External-IP", _service_external_ip, "externalIPs and load balancer ingress IPs."),
        _Col("Port(s)", _service_ports, "The list of ports that are exposed by this service."),
        _AGE_COL,
        _Col("Selector", lambda o: ",".join(f"{k}={v}" for k, v in sorted(
            ((o.get("spec") or {}).get("selector") or {}).items())) or "<none>",
             "Route service traffic to pods with label keys and values matching this selector.",
             priority=1),
    ),
    "configmaps": (
        _NAME_COL,
        _Col("Data", lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}),
             "Data contains the configuration data.", type="integer"),
        _AGE_COL,
    ),
    "secrets": (
        _NAME_COL,
        _Col("Type", lambda o: o.get("type", ""), "Used to facilitate programmatic handling of secret data."),
        _Col("Data", lambda o: len(o.get("data") or {}), "Data contains the secret data.", type="integer"),
        _AGE_COL,
    ),
    "serviceaccounts": (
        _NAME_COL,
        _Col("Secrets", lambda o: len(o.get("secrets") or ()),
             "Secrets is a list of the secrets in the same namespace that pods running using this "
             "ServiceAccount are allowed to use.", type="integer"),
        _AGE_COL,
    ),
    "roles": (_NAME_COL, _Col("Created At", lambda o: o["metadata"].get("creationTimestamp", ""),
                              _AGE_DESC, format="date")),
    "clusterroles": (_NAME_COL, _Col("Created At", lambda o: o["metadata"].get("creationTimestamp", ""),
                                     _AGE_DESC, format="date")),
    "rolebindings": (_NAME_COL, *_BINDING_COLS),
    "clusterrolebindings": (_NAME_COL, *_BINDING_COLS),
    "ingressclasses": (
        _NAME_COL,
        _Col("Controller", lambda o: (o.get("spec") or {}).get("controller", ""),
             "Controller that should handle this class."),
        _Col("Parameters", _ingress_class_parameters,
             "A link to a custom resource containing additional configuration for the controller."),
        _AGE_COL,
    ),
    "ingresses": (
        _NAME_COL,
        _Col("Class", lambda o: (o.get("spec") or {}).get("ingressClassName") or "<none>",
             "The name of the IngressClass resource."),
        _Col("Hosts", lambda o: ",".join(r.get("host") or "*"
                                         for r in (o.get("spec") or {}).get("rules") or ()) or "*",
             "Hosts that incoming requests are matched against."),
        _Col("Address", lambda o: ",".join(
            i.get("ip") or i.get("hostname") or ""
            for i in ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()),
             "Address is a list containing ingress points for the load-balancer."),
        _Col("Ports", lambda o: "80, 443" if (o.get("spec") or {}).get("tls") else "80",
             "Ports of TLS configurations that open."),
        _AGE_COL,
    ),
    "apiservices": (
        _NAME_COL,
        _Col("Service", _apiservice_service, "The reference to the service that hosts this API endpoint."),
        _Col("Available", _apiservice_available, "Whether this service is available."),
        _AGE_COL,
    ),
    "poddisruptionbudgets": (
        _NAME_COL,
        _Col("Min Available", lambda o: str((o.get("spec") or {}).get("minAvailable", "N/A")),
             "The minimum number of pods that must be available."),
        _Col("Max Unavailable", lambda o: str((o.get("spec") or {}).get("maxUnavailable", "N/A")),
             "The maximum number of pods that may be unavailable."),
        _Col("Allowed Disruptions", lambda o: _st(o, "disruptionsAllowed"),
             "Calculated number of pods that may be disrupted at this time.", type="integer"),
        _AGE_COL,
    ),
}


def _media_params(accept: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for item in accept.split(","):
        bits = [b.strip() for b in item.split(";")]
        params = {}
        for b in bits[1:]:
            k, _, v = b.partition("=")
            params[k.strip()] = v.strip()
        out.append((bits[0].lower(), params))
    return out


def _wanted_as(accept: str) -> tuple[str, str] | None:
    """(as-kind, apiVersion) for ``application/json;as=Table;v=v1;g=meta.k8s.io`` (first wins)."""
    for mtype, params in _media_params(accept):
        if (mtype == "application/json" and params.get("g") == "meta.k8s.io"
                and params.get("v") in ("v1", "v1beta1")
                and params.get("as") in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList")):
            return params["as"], f"meta.k8s.io/{params['v']}"
    return None


def _accepts_json(accept: str) -> bool:
    if not accept.strip():
        return True
    return any(m in ("application/json", "*/*", "application/*", "application/yaml")
               for m, _ in _media_params(accept))


# --------------------------------------------------------------------------------------------
# HTTP plumbing


class RequestRecord(NamedTuple):
    """One request the emulator saw."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def accept(self) -> str:
        return self.headers.get("accept", "")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as e:
            raise _bad_request(f"the body of the request was in an unknown format - accepted media types "
                               f"include: application/json, application/yaml ({e})") from e


@dataclass
class _Response:
    code: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class _Stream:
    """A chunked response: log follow (text/plain) or watch events (JSON lines)."""

    chunks: Iterator[bytes]
    content_type: str = "text/plain"


def _json(code: int, obj: Any) -> _Response:
    return _Response(code, json.dumps(obj, separators=(",", ":")).encode() + b"\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, emulator: Emulator, ctx: ssl.SSLContext) -> None:
        self.emulator = emulator
        self.ssl_ctx = ctx
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        tls.settimeout(None)
        with self.conn_lock:
            self.connections.add(tls)
        try:
            _Handler(tls, client_address, self)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            with self.conn_lock:
                self.connections.discard(tls)
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connection-level noise (resets, TLS alerts); request errors are recorded by the handler

    def close_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
        for c in conns:
            try:
                socket.socket.shutdown(c, socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-emulator"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _dispatch(self, method: str) -> None:
        emu = self.server.emulator
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        emu._record(RequestRecord(method, parts.path, query, headers.get("content-type")))
        req = _Request(method, parts.path, query, headers, body)
        resp: _Response | _Stream
        try:
            if headers.get("authorization", "") != f"Bearer {emu.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            resp = emu._handle(req)
        except ApiError as e:
            resp = _json(e.code, e.status())
        except Exception as e:  # noqa: BLE001 (a bug in the emulator: record it, answer 500)
            emu._record_error(f"{method} {self.path}: {traceback.format_exc()}")
            resp = _json(500, ApiError(500, "InternalError", f"emulator error: {e!r}").status())
        if isinstance(resp, _Stream):
            self._send_stream(resp)
        else:
            self._send(resp)

    def _headers(self, code: int, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", content_type)

    def _send(self, resp: _Response) -> None:
        self._headers(resp.code, resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        self.wfile.write(resp.body)

    def _send_stream(self, stream: _Stream) -> None:
        self._headers(200, stream.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in stream.chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                elif self._peer_closed():
                    self.close_connection = True
                    return
            self.wfile.write(b"0\r\n\r\n")
        except (OSError, ssl.SSLError):
            self.close_connection = True
        finally:
            close = getattr(stream.chunks, "close", None)
            if close is not None:
                close()

    def _peer_closed(self) -> bool:
        """While streaming the client sends nothing: readable means it closed the connection."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


# --------------------------------------------------------------------------------------------
# the emulator


_LogKey = tuple[str, str, str, bool]  # namespace, pod, container ("" = the first), previous
_LogEntries = list[tuple[str, str]]  # (RFC3339Nano timestamp, line)
_Records = list[RequestRecord]
_Frames = list[bytes]


class Emulator:
    """The emulated API server: seed state with :meth:`add`, point clients at :attr:`kubeconfig`."""

    # the builders, also reachable as emu.node(...), emu.pod(...)
    node = staticmethod(node)
    pod = staticmethod(pod)
    deployment = staticmethod(deployment)
    statefulset = staticmethod(statefulset)
    daemonset = staticmethod(daemonset)
    replicaset = staticmethod(replicaset)
    pdb = staticmethod(pdb)

    def __init__(self, tls: TlsFiles, workdir: Path, *, token: str | None = None,
                 server_version: str = "v1.29.4") -> None:
        self.tls = tls
        self.workdir = Path(workdir)
        self.token = token or secrets.token_urlsafe(24)
        self.server_version = server_version
        self.kubeconfig = self.workdir / "kubeconfig"
        self.url = ""
        self.requests: list[RequestRecord] = []
        self.evictions: list[Obj] = []
        self.errors: list[str] = []
        self.eviction_delay: float = 0.0
        self.namespace_delete_delay: float = 0.0
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._store: dict[str, dict[tuple[str, str], Obj]] = {r.plural: {} for r in RESOURCES}
        self._rv = 0
        self._logs: dict[_LogKey, _LogEntries] = {}
        self._logs_ended: set[tuple[str, str]] = set()
        self._events: list[tuple[int, str, str, Obj]] = []  # (resourceVersion, type, plural, object)
        self._timers: list[threading.Timer] = []
        self._stopping = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        with self._cond:
            for ns in ("default", "kube-system"):
                self._ensure_namespace(ns)

    # ---- lifecycle

    def start(self) -> Emulator:
        """Listen on 127.0.0.1 (a free port), write the kubeconfig; returns self."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        ctx.set_alpn_protocols(["http/1.1"])
        self._server = _Server(self, ctx)
        port = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "emu", "cluster": {"server": self.url,
                                                      "certificate-authority-data": self.tls.ca_data()}}],
            "users": [{"name": "emu", "user": {"token": self.token}}],
            "contexts": [{"name": "emu",
                          "context": {"cluster": "emu", "user": "emu", "namespace": "default"}}],
            "current-context": "emu",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2) + "\n")
        self.kubeconfig.chmod(0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"k8s-emulator:{port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: ends follow streams, closes connections, cancels pending deletions."""
        with self._cond:
            self._stopping = True
            for t in self._timers:
                t.cancel()
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the Python API for tests

    def add(self, obj: Obj) -> Obj:
        """Store any object of a served kind (replacing one of the same name) and return the
        stored copy: fills uid, resourceVersion, creationTimestamp and namespace "default"."""
        res = _BY_KIND.get(obj.get("kind", ""))
        if res is None:
            raise ValueError(f"the emulator does not serve kind {obj.get('kind')!r}")
        with self._cond:
            stored = self._put(res, copy.deepcopy(obj), create_namespace=True)
            return self._served(res, stored)

    def get(self, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        """The object as the API serves it (PDB status computed), or None."""
        res = _lookup_resource(plural)
        with self._lock:
            obj = self._store[res.plural].get(self._key(res, name, namespace))
            return self._served(res, obj) if obj is not None else None

    def list(self, plural: str, namespace: str | None = None) -> ObjList:
        """Every object of that resource (in one namespace, or all when None), as served."""
        res = _lookup_resource(plural)
        with self._lock:
            return [self._served(res, o) for (ns, _), o in sorted(self._store[res.plural].items())
                    if namespace is None or ns == namespace]

    def delete(self, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        """Remove an object at once (no grace, no eviction_delay, no namespace_delete_delay; a
        namespace goes with its objects); returns it, or None."""
        res = _lookup_resource(plural)
        with self._cond:
            if res.plural == "namespaces":
                return self._remove_namespace(name)
            return self._remove(res, self._key(res, name, namespace))

    def set_status(self, plural: str, name: str, namespace: str | None, status: Obj) -> Obj:
        """Replace an object's status (what a controller would write: e.g. make an applied
        Deployment ready); a new resourceVersion and a MODIFIED event, the rest untouched.
        Returns the object as served; KeyError when it does not exist."""
        res = _lookup_resource(plural)
        with self._cond:
            obj = self._store[res.plural].get(self._key(res, name, namespace))
            if obj is None:
                where = f"{namespace or 'default'}/" if res.namespaced else ""
                raise KeyError(f"{res.qualified} {where}{name} not found")
            obj["status"] = copy.deepcopy(status)
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._event("MODIFIED", res, obj)
            return self._served(res, obj)

    def set_log(self, namespace: str, pod: str, text: str, container: str | None = None,
                previous: bool = False) -> None:
        """Set a container's log (the first container when None; ``previous``: the last
        terminated instance's log, ``kubectl logs -p``)."""
        with self._cond:
            self._logs[(namespace, pod, self._container_key(namespace, pod, container), previous)] = \
                self._entries(text)
            self._cond.notify_all()

    def append_log(self, namespace: str, pod: str, text: str, container: str | None = None) -> None:
        """Append to a container's log; ``logs -f`` followers see it."""
        with self._cond:
            key = (namespace, pod, self._container_key(namespace, pod, container), False)
            self._logs.setdefault(key, []).extend(self._entries(text))
            self._cond.notify_all()

    def end_logs(self, namespace: str, pod: str) -> None:
        """End the pod's follow streams (as if its containers stopped)."""
        with self._cond:
            self._logs_ended.add((namespace, pod))
            self._cond.notify_all()

    def requests_to(self, method: str, path_prefix: str = "") -> _Records:
        """The recorded requests with that method whose path starts with path_prefix."""
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # ---- internals: store

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests.append(rec)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    @staticmethod
    def _key(res: Resource, name: str, namespace: str | None) -> tuple[str, str]:
        return ((namespace or "default") if res.namespaced else "", name)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _ensure_namespace(self, ns: str) -> None:
        if ("", ns) not in self._store["namespaces"]:
            self._put(_BY_PLURAL["namespaces"],
                      {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns}})

    def _put(self, res: Resource, obj: Obj, *, create_namespace: bool = False) -> Obj:
        """Store obj (caller holds the lock), filling the server-set metadata."""
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            raise ValueError("metadata.name is required")
        if res.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
            if create_namespace:
                self._ensure_namespace(meta["namespace"])
        else:
            meta.pop("namespace", None)
        key = self._key(res, meta["name"], meta.get("namespace"))
        old = self._store[res.plural].get(key)
        meta["uid"] = meta.get("uid") or (old or {}).get("metadata", {}).get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = (meta.get("creationTimestamp")
                                     or (old or {}).get("metadata", {}).get("creationTimestamp") or rfc3339())
        meta["resourceVersion"] = self._next_rv()
        if res.generation and "generation" not in meta:
            meta["generation"] = 1
        if res.plural == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
        self._store[res.plural][key] = obj
        self._event("MODIFIED" if old is not None else "ADDED", res, obj)
        return obj

    def _remove_namespace(self, name: str) -> Obj | None:
        """Remove a namespace and every object in it now (caller holds the lock)."""
        for r in RESOURCES:
            if r.namespaced:
                for key in [k for k in self._store[r.plural] if k[0] == name]:
                    self._remove(r, key)
        return self._remove(_BY_PLURAL["namespaces"], ("", name))

    def _finish_namespace(self, name: str, uid: str) -> None:
        """The namespace controller's job, namespace_delete_delay after the DELETE."""
        with self._cond:
            ns = self._store["namespaces"].get(("", name))
            if ns is not None and ns["metadata"]["uid"] == uid and ns["metadata"].get("deletionTimestamp"):
                self._remove_namespace(name)

    def _remove(self, res: Resource, key: tuple[str, str]) -> Obj | None:
        """Remove an object now (caller holds the lock); its DELETED event has a new resourceVersion."""
        obj = self._store[res.plural].pop(key, None)
        if obj is not None:
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._event("DELETED", res, obj)
        return obj

    def _event(self, kind: str, res: Resource, obj: Obj) -> None:
        self._events.append((int(obj["metadata"]["resourceVersion"]), kind, res.plural, copy.deepcopy(obj)))
        self._cond.notify_all()

    def _served(self, res: Resource, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        if res.plural == "poddisruptionbudgets":
            out["status"] = self._pdb_status(out)
        return out

    def _pods_matching(self, namespace: str, selector: Obj | None) -> ObjList:
        return [p for (ns, _), p in sorted(self._store["pods"].items())
                if ns == namespace and selector_matches(selector, _labels(p))]

    def _pdb_status(self, budget: Obj) -> Obj:
        meta, spec = budget["metadata"], budget.get("spec") or {}
        pods = self._pods_matching(meta.get("namespace", "default"), spec.get("selector"))
        expected = len(pods)
        healthy = sum(1 for p in pods if is_pod_ready(p) and not p["metadata"].get("deletionTimestamp"))

        def scaled(v: int | str) -> int:
            if isinstance(v, str) and v.endswith("%"):
                return math.ceil(expected * int(v[:-1]) / 100)
            return int(v)

        desired = 0
        if spec.get("maxUnavailable") is not None:
            desired = max(0, expected - scaled(spec["maxUnavailable"]))
        elif spec.get("minAvailable") is not None:
            desired = scaled(spec["minAvailable"])
        allowed = max(0, healthy - desired)
        gen = meta.get("generation", 1)
        return {
            "observedGeneration": gen, "disruptionsAllowed": allowed, "currentHealthy": healthy,
            "desiredHealthy": desired, "expectedPods": expected,
            "conditions": [{"type": "DisruptionAllowed", "status": "True" if allowed > 0 else "False",
                            "observedGeneration": gen,
                            "lastTransitionTime": meta.get("creationTimestamp") or rfc3339(),
                            "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
                            "message": ""}],
        }

    # ---- internals: logs

    @staticmethod
    def _entries(text: str) -> _LogEntries:
        ts = _rfc3339nano(_utcnow())
        return [(ts, line) for line in text.splitlines(keepends=True)]

    def _container_key(self, namespace: str, pod: str, container: str | None) -> str:
        if container:
            return container
        p = self._store["pods"].get((namespace, pod))
        cs = (p or {}).get("spec", {}).get("containers") or ()
        return str(cs[0]["name"]) if cs else ""

    def _log_entries(self, namespace: str, pod: str, container: str, previous: bool,
                     first: str) -> _LogEntries:
        entries = self._logs.get((namespace, pod, container, previous))
        if entries is None and container == first:
            entries = self._logs.get((namespace, pod, "", previous))
        return entries or []

    # ---- internals: HTTP

    def _handle(self, req: _Request) -> _Response | _Stream:
        path = req.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return _Response(200, b"ok", "text/plain; charset=utf-8")
        if not _accepts_json(req.accept) and not path.endswith("/log"):
            raise ApiError(406, "NotAcceptable",
                           "only the following media types are accepted: application/json")
        if path == "/version":
            return _json(200, self._version())
        if path == "/api":
            return _json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.removeprefix("https://")}]})
        if path == "/apis":
            return _json(200, {"kind": "APIGroupList", "apiVersion": "v1",
                               "groups": [self._api_group(g) for g in _GROUPS]})
        segs = [unquote(s) for s in path.strip("/").split("/")]
        if len(segs) >= 2 and segs[0] == "api" and segs[1] == "v1":
            group, version, rest = "", "v1", segs[2:]
        elif len(segs) >= 2 and segs[0] == "apis" and segs[1] in _GROUPS:
            group = segs[1]
            if len(segs) == 2:
                return _json(200, {"kind": "APIGroup", "apiVersion": "v1", **self._api_group(group)})
            version, rest = segs[2], segs[3:]
            if (group, version) not in _GROUP_VERSIONS:
                raise _path_not_found()
        else:
            raise _path_not_found()
        if not rest:
            if req.method != "GET":
                raise _method_not_allowed()
            return _json(200, self._resource_list(group, version))
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        res = _BY_PLURAL.get(rest[0])
        if res is None or (res.group, res.version) != (group, version) or len(rest) > 3:
            raise _path_not_found()
        if namespace is not None and not res.namespaced:
            raise _path_not_found()
        if res.namespaced and namespace is None and len(rest) > 1:
            raise _path_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        dry = self._dry_run(req.query)
        if name is not None and sub is not None:
            if res.plural == "pods" and sub == "log":
                if req.method != "GET":
                    raise _method_not_allowed()
                return self._pod_log(namespace or "default", name, req)
            if res.plural == "pods" and sub == "eviction":
                if req.method != "POST":
                    raise _method_not_allowed()
                return self._evict(namespace or "default", name, req, dry)
            raise _path_not_found()
        if name is None:
            if req.method == "GET":
                if req.query.get("watch") in ("true", "1"):
                    return self._watch(res, namespace, req)
                return self._list_response(res, namespace, req)
            if req.method == "POST" and (namespace is not None or not res.namespaced):
                return self._create(res, namespace, req, dry)
            raise _method_not_allowed()
        if req.method == "GET":
            return self._get_response(res, namespace, name, req)
        if req.method == "PUT":
            return self._update(res, namespace, name, req, dry)
        if req.method == "PATCH":
            return self._patch(res, namespace, name, req, dry)
        if req.method == "DELETE":
            return self._delete(res, namespace, name, req, dry)
        raise _method_not_allowed()

    def _version(self) -> Obj:
        major, minor = self.server_version.lstrip("v").split(".")[:2]
        return {"major": major, "minor": minor, "gitVersion": self.server_version,
                "gitCommit": _hex("commit", self.server_version, n=40), "gitTreeState": "clean",
                "buildDate": "2024-04-16T15:03:25Z", "goVersion": "go1.21.9", "compiler": "gc",
                "platform": "linux/amd64"}

    @staticmethod
    def _api_group(group: str) -> Obj:
        gv = {"groupVersion": f"{group}/v1", "version": "v1"}
        return {"name": group, "versions": [gv], "preferredVersion": gv}

    @staticmethod
    def _resource_list(group: str, version: str) -> Obj:
        resources: ObjList = []
        for r in RESOURCES:
            if (r.group, r.version) != (group, version):
                continue
            entry: Obj = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                          "kind": r.kind, "verbs": list(_VERBS)}
            if r.short_names:
                entry["shortNames"] = list(r.short_names)
            if r.categories:
                entry["categories"] = list(r.categories)
            resources.append(entry)
            if r.plural == "pods":
                resources.append({"name": "pods/eviction", "singularName": "", "namespaced": True,
                                  "group": "policy", "version": "v1", "kind": "Eviction",
                                  "verbs": ["create"]})
                resources.append({"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod",
                                  "verbs": ["get"]})
        resources.sort(key=lambda e: e["name"])
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}

    @staticmethod
    def _dry_run(query: Mapping[str, str]) -> bool:
        value = query.get("dryRun")
        if value is None or value == "":
            return False
        if value != "All":
            raise _bad_request(f'Invalid dry run value: dryRun: Unsupported value: "{value}": '
                               f'supported values: "All"')
        return True

    def _select(self, res: Resource, namespace: str | None, query: Mapping[str, str]) -> ObjList:
        reqs = parse_label_selector(query.get("labelSelector", ""))
        fields = _parse_field_selector(res, query.get("fieldSelector", ""))
        out = []
        for (ns, _), obj in sorted(self._store[res.plural].items()):
            if namespace is not None and ns != namespace:
                continue
            if not _labels_match(reqs, _labels(obj)):
                continue
            if not all((_field_value(obj, f) == v) == (op == "=") for f, op, v in fields):
                continue
            out.append(self._served(res, obj))
        return out

    def _as_table(self, res: Resource, objs: ObjList, api_version: str, include: str, rv: str) -> Obj:
        cols = _TABLES.get(res.plural, (_NAME_COL, _AGE_COL))
        rows = []
        for o in objs:
            row: Obj = {"cells": [c.cell(o) for c in cols]}
            if include == "Object":
                row["object"] = o
            elif include != "None":
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": api_version,
                                 "metadata": o["metadata"]}
            if res.plural == "pods" and (o.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                row["conditions"] = [{"type": "Completed", "status": "True",
                                      "reason": o["status"]["phase"],
                                      "message": "The pod has completed successfully."
                                      if o["status"]["phase"] == "Succeeded" else "The pod failed."}]
            rows.append(row)
        return {"kind": "Table", "apiVersion": api_version, "metadata": {"resourceVersion": rv},
                "columnDefinitions": [{"name": c.name, "type": c.type, "format": c.format,
                                       "description": c.description, "priority": c.priority} for c in cols],
                "rows": rows}

    def _list_response(self, res: Resource, namespace: str | None, req: _Request) -> _Response:
        with self._lock:
            objs = self._select(res, namespace, req.query)
            rv = str(self._rv)
        wanted = _wanted_as(req.accept)
        if wanted and wanted[0] == "Table":
            include = req.query.get("includeObject", "Metadata")
            return _json(200, self._as_table(res, objs, wanted[1], include, rv))
        if wanted and wanted[0] == "PartialObjectMetadataList":
            return _json(200, {"kind": "PartialObjectMetadataList", "apiVersion": wanted[1],
                               "metadata": {"resourceVersion": rv},
                               "items": [{"metadata": o["metadata"]} for o in objs]})
        items = []
        for o in objs:
            o.pop("kind", None)
            o.pop("apiVersion", None)
            items.append(o)
        return _json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                           "metadata": {"resourceVersion": rv}, "items": items})

    def _watch(self, res: Resource, namespace: str | None, req: _Request) -> _Stream:
        """``watch=true``: JSON lines ``{"type": ..., "object": ...}`` from the event log (from the
        given resourceVersion; with none or "0", synthetic ADDED events for what exists first)."""
        q = req.query
        reqs = parse_label_selector(q.get("labelSelector", ""))
        fields = _parse_field_selector(res, q.get("fieldSelector", ""))
        try:
            timeout = float(q.get("timeoutSeconds") or 1800)
            since = int(q.get("resourceVersion") or 0)
        except ValueError as e:
            raise _bad_request(f"invalid watch option: {e}") from e
        wanted = _wanted_as(req.accept)
        table = wanted[1] if wanted and wanted[0] == "Table" else None
        include = q.get("includeObject", "Metadata")

        def matches(obj: Obj) -> bool:
            meta = obj["metadata"]
            return ((namespace is None or meta.get("namespace") == namespace)
                    and _labels_match(reqs, _labels(obj))
                    and all((_field_value(obj, f) == v) == (op == "=") for f, op, v in fields))

        def frame(kind: str, obj: Obj) -> bytes:
            out = self._served(res, obj)
            if table is not None:
                out = self._as_table(res, [out], table, include, out["metadata"].get("resourceVersion", ""))
            return json.dumps({"type": kind, "object": out}, separators=(",", ":")).encode() + b"\n"

        with self._lock:
            initial: _Frames = []
            if since == 0:
                initial = [frame("ADDED", o) for _, o in sorted(self._store[res.plural].items())
                           if matches(o)]
                since = self._rv
            elif self._events and since < self._events[0][0] - 1:
                raise ApiError(410, "Expired",
                               f"too old resource version: {since} ({self._events[0][0] - 1})")
            pos = next((i for i, e in enumerate(self._events) if e[0] > since), len(self._events))
        deadline = _monotonic() + timeout
        return _Stream(self._watch_frames(res.plural, initial, pos, deadline, matches, frame),
                       "application/json")

    def _watch_frames(self, plural: str, initial: _Frames, pos: int, deadline: float,
                      matches: Callable[[Obj], bool], frame: Callable[[str, Obj], bytes]) -> Iterator[bytes]:
        if initial:
            yield b"".join(initial)
        while True:
            with self._cond:
                events = self._events[pos:]
                pos = len(self._events)
                out = b"".join(frame(kind, obj) for _, kind, p, obj in events if p == plural and matches(obj))
                done = self._stopping or _monotonic() >= deadline
                if not out and not done:
                    self._cond.wait(min(0.2, max(0.0, deadline - _monotonic())))
            if out:
                yield out
            elif done:
                return
            else:
                yield b""  # a heartbeat: lets the handler notice a client that went away

    def _existing(self, res: Resource, namespace: str | None, name: str) -> Obj:
        obj = self._store[res.plural].get(self._key(res, name, namespace))
        if obj is None:
            raise _not_found(res, name)
        return obj

    def _get_response(self, res: Resource, namespace: str | None, name: str, req: _Request) -> _Response:
        with self._lock:
            obj = self._served(res, self._existing(res, namespace, name))
        wanted = _wanted_as(req.accept)
        if wanted and wanted[0] == "Table":
            include = req.query.get("includeObject", "Metadata")
            return _json(200, self._as_table(res, [obj], wanted[1], include,
                                             obj["metadata"].get("resourceVersion", "")))
        if wanted and wanted[0] == "PartialObjectMetadata":
            return _json(200, {"kind": "PartialObjectMetadata", "apiVersion": wanted[1],
                               "metadata": obj["metadata"]})
        return _json(200, obj)

    def _body_object(self, res: Resource, req: _Request) -> Obj:
        if req.content_type not in ("", "application/json", "application/yaml"):
            # kubectl >= 1.33's typed commands (`kubectl create namespace X`) send protobuf
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types "
                           f"include: application/json, application/yaml (got {req.content_type!r})")
        body = req.json()
        if not isinstance(body, dict):
            raise _bad_request("the body of the request was in an unknown format - accepted media types "
                               "include: application/json, application/yaml")
        if body.get("kind") not in (None, "", res.kind):
            raise _bad_request(f"the kind of the object ({body.get('kind')}) does not match the resource "
                               f"({res.kind})")
        if body.get("apiVersion") not in (None, "", res.api_version):
            raise _bad_request(f"the API version in the data ({body.get('apiVersion')}) does not match the "
                               f"expected API version ({res.api_version})")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        return body

    def _create(self, res: Resource, namespace: str | None, req: _Request, dry: bool) -> _Response:
        body = self._body_object(res, req)
        meta = body["metadata"]
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise _bad_request("the namespace of the provided object does not match the namespace sent "
                                   "on the request")
            meta["namespace"] = namespace
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789")
                                                              for _ in range(5))
            else:
                raise _invalid(res, "", "metadata.name", "name or generateName is required")
        self._default(res, body, None)
        with self._cond:
            self._check_namespace(res, namespace, meta["name"])
            if self._key(res, meta["name"], namespace) in self._store[res.plural]:
                raise ApiError(409, "AlreadyExists", f'{res.qualified} "{meta["name"]}" already exists',
                               _details(res, meta["name"]))
            for k in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
                meta.pop(k, None)
            return self._store_new(res, body, dry)

    def _store_new(self, res: Resource, body: Obj, dry: bool) -> _Response:
        """Store a created object (or, dry, show it as it would be): 201 (caller holds the lock)."""
        if dry:
            meta = body["metadata"]
            body["kind"], body["apiVersion"] = res.kind, res.api_version
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = rfc3339()
            if res.generation:
                meta.setdefault("generation", 1)
            return _json(201, self._served(res, body))
        return _json(201, self._served(res, self._put(res, body)))

    def _check_namespace(self, res: Resource, namespace: str | None, name: str) -> None:
        """A namespaced object can be created in an existing namespace that is not terminating
        (the NamespaceLifecycle admission plugin); caller holds the lock."""
        if not res.namespaced:
            return
        ns = self._store["namespaces"].get(("", namespace or ""))
        if ns is None:
            raise _not_found(_BY_PLURAL["namespaces"], namespace or "")
        if ns["metadata"].get("deletionTimestamp"):
            d = _details(res, name)
            d["causes"] = [{"reason": "NamespaceTerminating", "message": f"namespace {namespace} is being "
                            f"terminated", "field": "metadata.namespace"}]
            raise ApiError(403, "Forbidden", f'{res.qualified} "{name}" is forbidden: unable to create new '
                                             f"content in namespace {namespace} because it is being "
                                             f"terminated", d)

    def _default(self, res: Resource, body: Obj, cur: Obj | None) -> None:
        """The defaulting (and IP/port allocation) the emulator does: pods when created,
        Services and Secrets on every write."""
        if res.plural == "pods" and cur is None:
            self._default_pod(body)
        elif res.plural == "services":
            _default_service(body, cur)
        elif res.plural == "secrets":
            _default_secret(body)

    def _default_pod(self, body: Obj) -> None:
        spec = body.setdefault("spec", {})
        containers = spec.get("containers")
        if not containers:
            raise _invalid(_BY_PLURAL["pods"], body["metadata"]["name"], "spec.containers", "")
        for c in [*containers, *(spec.get("initContainers") or ())]:
            c.setdefault("resources", {})
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            image = str(c.get("image", ""))
            c.setdefault("imagePullPolicy", _pull_policy(image))
        for k, v in (("restartPolicy", "Always"), ("terminationGracePeriodSeconds", 30),
                     ("dnsPolicy", "ClusterFirst"), ("serviceAccountName", "default"),
                     ("serviceAccount", "default"), ("securityContext", {}),
                     ("schedulerName", "default-scheduler"), ("priority", 0), ("enableServiceLinks", True),
                     ("preemptionPolicy", "PreemptLowerPriority")):
            spec.setdefault(k, v)
        spec.setdefault("tolerations", [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300}])
        has_requests = any((c.get("resources") or {}).get("requests") for c in containers)
        body["status"] = {"phase": "Pending", "qosClass": "Burstable" if has_requests else "BestEffort"}

    def _update(self, res: Resource, namespace: str | None, name: str, req: _Request, dry: bool) -> _Response:
        body = self._body_object(res, req)
        meta = body["metadata"]
        if meta.get("name") not in (None, "", name):
            raise _bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the "
                               f"URL ({name})")
        meta["name"] = name
        with self._cond:
            cur = self._existing(res, namespace, name)
            want_rv = meta.get("resourceVersion")
            if want_rv and want_rv != cur["metadata"].get("resourceVersion"):
                raise _conflict(res, name, "the object has been modified; please apply your changes to the "
                                           "latest version and try again")
            return self._write(res, cur, body, dry)

    def _write(self, res: Resource, cur: Obj, new: Obj, dry: bool) -> _Response:
        """Replace cur by new keeping the identity fields (caller holds the lock)."""
        cmeta, meta = cur["metadata"], new.setdefault("metadata", {})
        for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "generation"):
            if k in cmeta:
                meta[k] = cmeta[k]
            else:
                meta.pop(k, None)
        if "managedFields" not in meta and "managedFields" in cmeta:
            meta["managedFields"] = copy.deepcopy(cmeta["managedFields"])
        if res.plural == "namespaces" and "status" in cur:  # the status subresource's (the controller's)
            new["status"] = copy.deepcopy(cur["status"])
        self._default(res, new, cur)
        if res.generation and new.get("spec") != cur.get("spec"):
            meta["generation"] = int(cmeta.get("generation", 1)) + 1
        if res.plural == "nodes":
            _sync_unschedulable_taint(new, cur)
        if dry:
            new["kind"], new["apiVersion"] = res.kind, res.api_version
            meta["resourceVersion"] = cmeta.get("resourceVersion", "")
            return _json(200, self._served(res, new))
        return _json(200, self._served(res, self._put(res, new)))

    def _patch(self, res: Resource, namespace: str | None, name: str, req: _Request, dry: bool) -> _Response:
        ctype = req.content_type
        if ctype not in ("application/strategic-merge-patch+json", "application/merge-patch+json",
                         "application/json-patch+json", _APPLY_PATCH):
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types "
                           f"include: application/json-patch+json, application/merge-patch+json, "
                           f"application/apply-patch+yaml, application/strategic-merge-patch+json "
                           f"(got {ctype!r})")
        if ctype == _APPLY_PATCH:
            return self._apply(res, namespace, name, req, dry)
        if "force" in req.query:
            raise _patch_options_invalid("force", "FieldValueForbidden",
                                         "Forbidden: may not be specified for non-apply patch")
        patch = req.json()
        with self._cond:
            cur = self._existing(res, namespace, name)
            if ctype == "application/json-patch+json":
                new = json_patch(cur, patch)
            else:
                if not isinstance(patch, dict):
                    raise _bad_request("the patch is not a JSON object")
                merged = (strategic_merge_patch(cur, patch) if ctype.startswith("application/strategic")
                          else merge_patch(cur, patch))
                new = copy.deepcopy(merged)
            want_rv = ((patch.get("metadata") or {}).get("resourceVersion")
                       if isinstance(patch, dict) else None)
            if want_rv and want_rv != cur["metadata"].get("resourceVersion"):
                raise _conflict(res, name, "the object has been modified; please apply your changes to the "
                                           "latest version and try again")
            return self._write(res, cur, new, dry)

    def _apply(self, res: Resource, namespace: str | None, name: str, req: _Request, dry: bool) -> _Response:
        """Server-side apply: create the object (201) or merge the configuration into it (200);
        the manager's fields are recorded in metadata.managedFields (operation Apply), fields
        it applied before and no longer applies are removed unless another manager has them,
        a field another manager has with another value is a conflict (409) unless force."""
        manager = req.query.get("fieldManager", "")
        if not manager:
            raise _patch_options_invalid("fieldManager", "FieldValueRequired",
                                         "Required value: is required for apply patch")
        if len(manager) > 128:
            raise _patch_options_invalid("fieldManager", "FieldValueTooLong",
                                         "Too long: may not be more than 128 bytes")
        force = req.query.get("force", "") in ("1", "t", "T", "true", "TRUE", "True")
        config = self._apply_config(res, namespace, name, req)
        paths = _applied_fields(config)
        body = {k: v for k, v in config.items() if k not in ("apiVersion", "kind", "metadata")}
        body["metadata"] = {k: v for k, v in config["metadata"].items() if k not in _SERVER_META}
        want_rv = config["metadata"].get("resourceVersion")
        with self._cond:
            cur = self._store[res.plural].get(self._key(res, name, namespace))
            if cur is None:
                if want_rv:
                    raise _not_found(res, name)
                new = _apply_merge({}, body)
                new["metadata"]["name"] = name
                if res.namespaced:
                    new["metadata"]["namespace"] = namespace
                new["metadata"]["managedFields"] = [_managed_entry(manager, res, paths)]
                self._check_namespace(res, namespace, name)
                self._default(res, new, None)
                return self._store_new(res, new, dry)
            if want_rv and want_rv != cur["metadata"].get("resourceVersion"):
                raise _conflict(res, name, "the object has been modified; please apply your changes to the "
                                           "latest version and try again")
            entries: ObjList = list(cur["metadata"].get("managedFields") or ())
            mine = next((i for i, e in enumerate(entries) if e.get("manager") == manager
                         and e.get("operation") == "Apply" and not e.get("subresource")), None)
            before = _paths_of(entries[mine].get("fieldsV1")) if mine is not None else set()
            new = _apply_merge(cur, body)
            theirs: list[set[_FieldPath]] = []
            conflicts: list[tuple[str, _FieldPath]] = []
            for i, e in enumerate(entries):
                owned = set() if i == mine else _paths_of(e.get("fieldsV1"))
                clash = sorted(p for p in owned & paths
                               if p[-1] != "." and _at_path(cur, p) != _at_path(new, p))
                conflicts += [(_print_manager(e), p) for p in clash]
                theirs.append(owned - set(clash) if force else owned)
            if conflicts and not force:
                raise _apply_conflict(conflicts)
            kept = paths.union(*theirs)
            for p in sorted(before - kept, key=len):  # a list item before the fields in it
                if not _still_needed(p, kept):
                    _remove_field(new, p, kept)
            self._default(res, new, cur)
            managed: ObjList = []
            for i, e in enumerate(entries):
                if i == mine:
                    managed.append(_managed_entry(manager, res, paths))
                elif theirs[i]:
                    managed.append(e if theirs[i] == _paths_of(e.get("fieldsV1"))
                                   else {**e, "fieldsV1": _fields_v1(theirs[i])})
            if mine is None:
                managed.append(_managed_entry(manager, res, paths))
            if _unmanaged(new) == _unmanaged(cur) and paths == before and not (force and conflicts):
                return _json(200, self._served(res, cur))  # a no-op apply changes nothing, not even the rv
            new["metadata"]["managedFields"] = managed
            return self._write(res, cur, new, dry)

    @staticmethod
    def _apply_config(res: Resource, namespace: str | None, name: str, req: _Request) -> Obj:
        """The apply configuration: YAML or JSON, one object of this resource's kind and name."""
        text = req.body.decode("utf-8", "replace")
        try:
            config = json.loads(text)
        except ValueError:
            import yaml  # PyYAML, for apply bodies only

            try:
                config = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise _bad_request(f"error decoding YAML: {e}") from e
        if not isinstance(config, dict):
            raise _bad_request("error decoding YAML: the apply configuration is not a YAML or JSON object")
        if not config.get("apiVersion") or not config.get("kind"):
            raise _bad_request("invalid object type: an apply configuration needs apiVersion and kind")
        if config["kind"] != res.kind:
            raise _bad_request(f"the kind of the object ({config['kind']}) does not match the resource "
                               f"({res.kind})")
        if config["apiVersion"] != res.api_version:
            raise _bad_request(f"the API version in the data ({config['apiVersion']}) does not match the "
                               f"expected API version ({res.api_version})")
        meta = config.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        if meta.get("managedFields") is not None:
            raise _bad_request("metadata.managedFields must be nil")
        if meta.get("name") not in (None, "", name):
            raise _bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the "
                               f"URL ({name})")
        if res.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise _bad_request("the namespace of the provided object does not match the namespace sent on "
                               "the request")
        return config

    @staticmethod
    def _delete_options(req: _Request) -> Obj:
        opts: Obj = {}
        if req.body.strip():
            body = req.json()
            if isinstance(body, dict):
                opts = body
        if "gracePeriodSeconds" in req.query:
            try:
                opts["gracePeriodSeconds"] = int(req.query["gracePeriodSeconds"])
            except ValueError as e:
                raise _bad_request(f"invalid gracePeriodSeconds {req.query['gracePeriodSeconds']!r}") from e
        return opts

    def _delete(self, res: Resource, namespace: str | None, name: str, req: _Request, dry: bool) -> _Response:
        opts = self._delete_options(req)
        dry = dry or "All" in (opts.get("dryRun") or ())
        with self._cond:
            cur = self._existing(res, namespace, name)
            pre = opts.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
                raise _conflict(res, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                                           f"object meta: {cur['metadata']['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]:
                raise _conflict(res, name, f"Precondition failed: ResourceVersion in precondition: "
                                           f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                           f"{cur['metadata']['resourceVersion']}")
            if res.plural == "pods":
                return _json(200, self._delete_pod(cur, opts.get("gracePeriodSeconds"), dry))
            if res.plural == "namespaces":
                return _json(200, self._delete_namespace(cur, dry))
            if not dry:
                self._remove(res, self._key(res, name, namespace))
            d = _details(res, name)
            d["uid"] = cur["metadata"]["uid"]
            return _json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                               "details": d})

    def _delete_namespace(self, cur: Obj, dry: bool) -> Obj:
        """A namespace has the "kubernetes" finalizer: DELETE answers it Terminating; it goes with
        its objects namespace_delete_delay later (at once when 0). Caller holds the lock."""
        res, meta = _BY_PLURAL["namespaces"], cur["metadata"]
        if meta.get("deletionTimestamp"):
            raise _conflict(res, meta["name"], "The system is ensuring all content is removed from this "
                                               "namespace.  Upon completion, this namespace will "
                                               "automatically be purged by the system.")
        out = self._served(res, cur)
        out["metadata"]["deletionTimestamp"] = rfc3339()
        out.setdefault("status", {})["phase"] = "Terminating"
        if dry:
            return out
        if self.namespace_delete_delay <= 0:
            self._remove_namespace(meta["name"])
            return out
        meta["deletionTimestamp"] = out["metadata"]["deletionTimestamp"]
        cur.setdefault("status", {})["phase"] = "Terminating"
        meta["resourceVersion"] = self._next_rv()
        self._event("MODIFIED", res, cur)
        timer = threading.Timer(self.namespace_delete_delay, self._finish_namespace,
                                args=(meta["name"], meta["uid"]))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return self._served(res, cur)

    def _delete_pod(self, cur: Obj, grace: int | None, dry: bool) -> Obj:
        """Delete (or start deleting, with eviction_delay) a pod; caller holds the lock."""
        meta, spec = cur["metadata"], cur.get("spec") or {}
        if dry or meta.get("deletionTimestamp"):
            return self._served(_BY_PLURAL["pods"], cur)
        g = int(grace if grace is not None else spec.get("terminationGracePeriodSeconds", 30))
        phase = (cur.get("status") or {}).get("phase")
        key = (meta["namespace"], meta["name"])
        immediate = (g <= 0 or self.eviction_delay <= 0 or not spec.get("nodeName")
                     or phase in ("Succeeded", "Failed"))
        if immediate:
            meta["deletionTimestamp"] = rfc3339()
            meta["deletionGracePeriodSeconds"] = 0
            self._remove(_BY_PLURAL["pods"], key)
            return self._served(_BY_PLURAL["pods"], cur)
        meta["deletionTimestamp"] = rfc3339(_utcnow() + dt.timedelta(seconds=g))
        meta["deletionGracePeriodSeconds"] = g
        meta["resourceVersion"] = self._next_rv()
        self._event("MODIFIED", _BY_PLURAL["pods"], cur)
        timer = threading.Timer(self.eviction_delay, self._finish_delete, args=(key, meta["uid"]))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return self._served(_BY_PLURAL["pods"], cur)

    def _finish_delete(self, key: tuple[str, str], uid: str) -> None:
        with self._cond:
            p = self._store["pods"].get(key)
            if p is not None and p["metadata"]["uid"] == uid and p["metadata"].get("deletionTimestamp"):
                self._remove(_BY_PLURAL["pods"], key)

    def _evict(self, namespace: str, name: str, req: _Request, dry: bool) -> _Response:
        body = req.json()
        if not isinstance(body, dict) or body.get("kind") not in (None, "Eviction"):
            raise _bad_request("the body of the request was not an Eviction")
        bname = (body.get("metadata") or {}).get("name")
        if bname and bname != name:
            raise _bad_request("name in URL does not match name in Eviction object")
        opts = body.get("deleteOptions") or {}
        dry = dry or "All" in (opts.get("dryRun") or ())
        with self._cond:
            self.evictions.append(copy.deepcopy(body))
            p = self._existing(_BY_PLURAL["pods"], namespace, name)
            phase = (p.get("status") or {}).get("phase")
            can_ignore = (phase in ("Succeeded", "Failed", "Pending")
                          or bool(p["metadata"].get("deletionTimestamp")))
            if not can_ignore:
                budgets = [b for (ns, _), b in sorted(self._store["poddisruptionbudgets"].items())
                           if ns == namespace
                           and selector_matches((b.get("spec") or {}).get("selector"), _labels(p))]
                if len(budgets) > 1:
                    raise ApiError(500, "InternalError", "This pod has more than one PodDisruptionBudget, "
                                                         "which the eviction subresource does not support.")
                if budgets:
                    b = budgets[0]
                    st = self._pdb_status(b)
                    policy = (b.get("spec") or {}).get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
                    if is_pod_ready(p):
                        ok = st["disruptionsAllowed"] > 0
                    else:
                        ok = policy == "AlwaysAllow" or st["currentHealthy"] >= st["desiredHealthy"]
                    if not ok:
                        raise ApiError(429, "TooManyRequests",
                                       "Cannot evict pod as it would violate the pod's disruption budget.",
                                       {"causes": [{"reason": "DisruptionBudget", "message":
                                                    f"The disruption budget {b['metadata']['name']} needs "
                                                    f"{st['desiredHealthy']} healthy pods and has "
                                                    f"{st['currentHealthy']} currently"}]})
            self._delete_pod(p, opts.get("gracePeriodSeconds"), dry)
        return _json(201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                           "code": 201})

    def _pod_log(self, namespace: str, name: str, req: _Request) -> _Response | _Stream:
        q = req.query
        with self._lock:
            p = self._existing(_BY_PLURAL["pods"], namespace, name)
            spec, status = p.get("spec") or {}, p.get("status") or {}
            names = [c["name"] for c in spec.get("containers") or ()]
            init_names = [c["name"] for c in spec.get("initContainers") or ()]
            container = q.get("container", "")
            if not container:
                if len(names) == 1:
                    container = names[0]
                elif not names:
                    raise _bad_request(f"a container name must be specified for pod {name}")
                else:
                    raise _bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                       f"[{' '.join(init_names + names)}]")
            elif container not in names and container not in init_names:
                raise _bad_request(f"container {container} is not valid for pod {name}")
            if not spec.get("nodeName"):
                return _Response(200, b"", "text/plain")
            previous = q.get("previous") in ("true", "1")
            cstatus = next((c for c in [*(status.get("containerStatuses") or ()),
                                        *(status.get("initContainerStatuses") or ())]
                            if c.get("name") == container), None)
            if cstatus is not None:
                _check_log_state(cstatus, container, name, previous)
            entries = list(self._log_entries(namespace, name, container, previous, names[0] if names else ""))
            try:
                tail = int(q["tailLines"]) if "tailLines" in q else None
                limit = int(q["limitBytes"]) if "limitBytes" in q else None
                if "sinceSeconds" in q:
                    int(q["sinceSeconds"])
            except ValueError as e:
                raise _bad_request(f"invalid log option: {e}") from e
            timestamps = q.get("timestamps") in ("true", "1")
            shown = entries if tail is None or tail < 0 else (entries[-tail:] if tail else [])
            first = _render_log(shown, timestamps)
            if limit is not None and limit > 0:
                first = first[:limit]
            if q.get("follow") not in ("true", "1") or previous:
                return _Response(200, first, "text/plain")
            return _Stream(self._follow(namespace, name, container, names[0], p["metadata"]["uid"],
                                           len(entries), first, timestamps))

    def _follow(self, namespace: str, name: str, container: str, first_container: str, uid: str, start: int,
                first: bytes, timestamps: bool) -> Iterator[bytes]:
        if first:
            yield first
        pos = start
        while True:
            with self._cond:
                entries = self._log_entries(namespace, name, container, False, first_container)
                new = entries[pos:]
                pos = len(entries)
                p = self._store["pods"].get((namespace, name))
                done = (self._stopping or (namespace, name) in self._logs_ended or p is None
                        or p["metadata"]["uid"] != uid)
                if not new and not done:
                    self._cond.wait(0.2)
            if new:
                yield _render_log(new, timestamps)
            elif done:
                return
            else:
                yield b""  # a heartbeat: lets the handler notice a client that went away


def _render_log(entries: Iterable[tuple[str, str]], timestamps: bool) -> bytes:
    return "".join(f"{ts} {line}" if timestamps else line for ts, line in entries).encode()


def _check_log_state(cs: Obj, container: str, pod_name: str, previous: bool) -> None:
    """The kubelet's validateContainerLogStatus errors (the API server answers them with 400)."""
    state, last = cs.get("state") or {}, cs.get("lastState") or {}
    last_term = last.get("terminated")
    if previous:
        if not last_term or not last_term.get("containerID"):
            raise _bad_request(f'previous terminated container "{container}" in pod "{pod_name}" not found')
        return
    if state.get("running") is not None:
        return
    if state.get("terminated") is not None:
        if not state["terminated"].get("containerID") and not (last_term and last_term.get("containerID")):
            raise _bad_request(f'container "{container}" in pod "{pod_name}" is terminated')
        return
    if last_term is not None:
        if not last_term.get("containerID"):
            raise _bad_request(f'container "{container}" in pod "{pod_name}" is terminated')
        return
    waiting = state.get("waiting")
    if waiting is not None:
        reason = waiting.get("reason", "")
        if reason == "ErrImagePull":
            raise _bad_request(f'container "{container}" in pod "{pod_name}" is waiting to start: '
                               f"image can't be pulled")
        if reason == "ImagePullBackOff":
            raise _bad_request(f'container "{container}" in pod "{pod_name}" is waiting to start: trying and '
                               f"failing to pull image")
        raise _bad_request(f'container "{container}" in pod "{pod_name}" is waiting to start: {reason}')
    raise _bad_request(f'container "{container}" in pod "{pod_name}" is waiting to start - no logs yet')


def _sync_unschedulable_taint(new: Obj, cur: Obj) -> None:
    """The node lifecycle controller's job: spec.unschedulable <=> the unschedulable taint."""
    spec = new.setdefault("spec", {})
    taints = [t for t in spec.get("taints") or () if t.get("key") != _UNSCHEDULABLE_TAINT]
    if spec.get("unschedulable"):
        old = next((t for t in (cur.get("spec") or {}).get("taints") or ()
                    if t.get("key") == _UNSCHEDULABLE_TAINT), None)
        taints.append(old or {"key": _UNSCHEDULABLE_TAINT, "effect": "NoSchedule", "timeAdded": rfc3339()})
    if taints:
        spec["taints"] = taints
    else:
        spec.pop("taints", None)



def _service_ip(namespace: str, name: str) -> str:
    h = int(_hex("svc", namespace, name, n=8), 16)
    return f"10.96.{h % 250}.{(h >> 8) % 250 + 2}"


def _node_port(namespace: str, name: str, port: Any) -> int:
    return 30000 + int(_hex("nodeport", namespace, name, str(port), n=8), 16) % 2768


def _default_service(svc: Obj, cur: Obj | None) -> None:
    """The API server's Service defaulting and allocation (IPv4 only, no collision checks): type
    ClusterIP, a cluster IP (kept from cur), port protocol and targetPort, node ports."""
    spec = svc.setdefault("spec", {})
    old = (cur or {}).get("spec") or {}
    meta = svc.get("metadata") or {}
    ns, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
    kind = spec.setdefault("type", "ClusterIP")
    if kind != "ExternalName":
        if not spec.get("clusterIP"):
            spec["clusterIP"] = old.get("clusterIP") or _service_ip(ns, name)
        if not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    spec.setdefault("sessionAffinity", "None")
    old_ports = {p.get("port"): p for p in old.get("ports") or ()}
    for p in spec.get("ports") or ():
        p.setdefault("protocol", "TCP")
        if kind != "ExternalName":
            p.setdefault("targetPort", p.get("port"))
        if kind in ("NodePort", "LoadBalancer") and not p.get("nodePort"):
            p["nodePort"] = (old_ports.get(p.get("port"), {}).get("nodePort")
                             or _node_port(ns, name, p.get("port")))
    if kind in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if kind == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    svc.setdefault("status", {"loadBalancer": {}})


def _default_secret(secret: Obj) -> None:
    """stringData is written into data (base64), type defaults to Opaque."""
    string_data = secret.pop("stringData", None)
    if string_data:
        data = secret.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode("ascii")
    secret.setdefault("type", "Opaque")
