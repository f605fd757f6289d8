"""A Kubernetes API server emulator for the k8s plugin's tests (not shipped).

It serves real Kubernetes JSON over HTTPS (bearer token, its own CA) so the real ``kubectl``
binaries and the official Python client ``kubernetes`` can talk to it as to a cluster, for
the things the plugin uses: nodes, namespaces, pods (logs, eviction, delete, patch, ephemeral
containers, attach and exec over WebSocket to real busybox processes), deployments,
statefulsets, daemonsets, replicasets and pod disruption budgets; and, stored generically
(list per namespace and across all, get, create, update, delete, merge / strategic merge /
JSON patch, server-side apply, label and field selectors, watch), services, configmaps,
serviceaccounts, secrets, RBAC (clusterroles, clusterrolebindings, roles, rolebindings),
ingresses, ingressclasses and apiservices; besides the admin token, kubeadm's bootstrap tokens
and anonymous requests, with cluster-info signed as for ``kubeadm join``.
``test_kubectl_referee.py`` and ``test_emulator_debug_join.py`` referee it with kubectl 1.27
and 1.33 and the Python client.

Usage (conftest.py's ``k8s_api`` fixture does the first two lines)::

    tls = make_tls(tmp_dir)                      # once per session (openssl, ~30 ms)
    emu = Emulator(tls, workdir).start()         # kubeconfig at emu.kubeconfig
    emu.add(node("n1"))                          # or emu.add(emu.node("n1")); any served kind
    emu.add(pod("web-1", node="n1", owner=("ReplicaSet", "web-5d8f")))
    emu.set_log("default", "web-1", "hello\n")
    ...                                          # run kubectl / the plugin against emu.kubeconfig
    emu.set_status("deployments", "web", "shop", {"readyReplicas": 2, ...})  # a controller's part
    emu.get("pods", "web-1"); emu.list("services", "shop"); emu.requests; emu.evictions
    token = emu.add_bootstrap_token("abcdef", "0123456789abcdef")  # "abcdef.0123456789abcdef"
    emu.kubeconfig_for(path, token)              # that identity; token None: anonymous
    emu.ca_pem; emu.ca_hash()                    # the CA, its kubeadm pin "sha256:<hex>"
    emu.container_dir("default", "web-1", "dbg"); emu.processes(); emu.wait_for(predicate)
    emu.stop()                                   # also kills the container processes

Builders (``node``, ``pod``, ``deployment``, ``statefulset``, ``daemonset``, ``replicaset``,
``pdb``) return the objects as a real cluster shows them; their uids are derived from
kind/namespace/name, so a pod's ownerReference names the uid its owner gets when added. The
other kinds have no builders: ``emu.add()`` takes any dict with a served ``kind``.

Discovery (legacy APIResourceList per group version; /apis lists apiregistration.k8s.io,
apps, networking.k8s.io, policy, rbac.authorization.k8s.io, all v1) gives each kind its
real name, singularName, namespaced, kind, shortNames (cm, ns, no, po, sa, svc, ds, deploy,
rs, sts, ing, pdb) and categories (``all``; ``api-extensions`` for apiservices); verbs are
what is served: create, delete, get, list, patch, update, watch (no deletecollection). Of
the pod subresources the served ones are listed as the real server lists them: pods/attach
(PodAttachOptions; create, get), pods/ephemeralcontainers (Pod; get, patch, update),
pods/eviction, pods/exec (PodExecOptions; create, get), pods/log.

Who is asking: ``emu.token`` is the admin (everything allowed). A bootstrap token
(``add_bootstrap_token``, or any Secret ``kube-system/bootstrap-token-<id>`` of type
bootstrap.kubernetes.io/token) that is usable for authentication and not expired is user
``system:bootstrap:<id>`` (groups system:bootstrappers, its auth-extra-groups,
system:authenticated); no bearer token (no Authorization header, a blank ``Bearer``, another
scheme) is ``system:anonymous``; any other token, an expired one too, is 401 Unauthorized.
Authorization is fixed, modelled on a kubeadm cluster's RBAC (the stored RBAC objects play
no part): everyone may GET /healthz, /livez, /readyz, /version; authenticated users also
discovery (/api*, /apis*, /openapi*); anonymous may get ConfigMap kube-public/cluster-info;
bootstrap tokens may get it (list/watch it by name), get nodes (one by one: kubeadm:get-nodes)
and, with the default-node-token group, get ConfigMaps kube-system/kubeadm-config and
kubelet-config. Anything else is 403 Forbidden with the real message (``nodes "w1" is
forbidden: User "system:bootstrap:abcdef" cannot delete resource "nodes" in API group "" at
the cluster scope``; ``forbidden: User "system:anonymous" cannot get path "/api"``). As the
bootstrap signer, the emulator keeps ``kube-public/cluster-info`` (kubeadm's kubeconfig text:
one cluster named "", this server, the CA; no users or contexts) signed: a
``jws-kubeconfig-<id>`` detached JWS (:func:`jws_detached_signature`) per token usable for
signing and not expired, re-signed when a token Secret or cluster-info changes and when a
token expires.

The kubelet's part: a pod created (POST, or applied) with ``spec.nodeName`` naming an existing
node is run at once: the create answers it Pending, then a MODIFIED event brings its status
as the kubelet reports it (init containers Completed, containers running and ready, phase
Running, the node's IP as pod IP with hostNetwork). An image whose name contains ``invalid``
never starts: the container waits in ImagePullBackOff (``Back-off pulling image "..."``) and
the pod stays Pending. hostPID/hostNetwork/hostIPC, hostPath volumes and tolerations are
taken as they come. Ephemeral containers (``pods/ephemeralcontainers``: GET answers the pod;
PUT of a pod and PATCH, strategic merge by name, merge or JSON patch, count only for
spec.ephemeralContainers) can only be added: the real 422 Invalid errors for a removed or
changed one (with a simplified diff), a name used by any container (Duplicate value), a
targetContainerName that is no container or init container (Not found), ports, resources,
probes, lifecycle, resizePolicy or restartPolicy (Forbidden: cannot be set for an Ephemeral
Container), subPath mounts; a pod created with some is 422 too. They are defaulted (all of
them, as the patched pod is: what a patch drops that defaulting puts back is no change); new
ones on a pod with a node get their status in a second write (running, never ready, or
waiting in ImagePullBackOff). Each write is a new resourceVersion and a MODIFIED event;
a write that changes nothing is none.

Attach and exec (``GET``/``POST .../pods/NAME/attach|exec?container=&stdin=&stdout=&stderr=
&tty=``, exec with repeated ``command=``) are served over WebSocket (RFC 6455: masked client
frames, fragmentation, ping/pong, close), subprotocol v5.channel.k8s.io when offered (the
API server's own), else v4.channel.k8s.io, v4.base64.channel.k8s.io, channel.k8s.io or
base64.channel.k8s.io (the kubelet's; base64 ones in text frames), as answered in
Sec-WebSocket-Protocol. Each message is a channel byte and data: 0 stdin, 1 stdout, 2
stderr, 3 error (a v1 Status at the end, JSON; plain text of failures on channel.k8s.io),
4 resize (applied to a pty), and in v5 [255, 0] closes stdin. The server first sends one
empty message on the lowest channel it writes (stdout, else stderr, else error), as the
kubelet and the API server do. The container behind it is real: its first attach starts
its main process, the container's command/args (busybox applets) or ``/bin/busybox sh``,
with pipes, or a pty when the container or that attach asks for a TTY, in a fresh directory
under the workdir that is its HOME (PATH: busybox applets; the container's literal env
values); later attaches join it, its output also goes to the container's log (a log follow
ends when the container has terminated, as the kubelet's does). When it ends,
the container is terminated (exitCode, Completed/Error, finishedAt; a MODIFIED event; a
restartPolicy Never pod then Succeeded/Failed), then every attached session gets the Status
(Success, or NonZeroExitCode with the ExitCode cause: ``command terminated with non-zero exit
code: command terminated with exit code 3``) and the close frame. An exec runs its command
in that directory (its own process, killed if the client goes away). Before any upgrade the
API server's checks answer 400: an unknown container (``container X is not valid for pod
Y``), no container named when there are several, a pod without node; and, the emulator's
own wording, a container not running (``container X in pod Y is waiting to start:
ImagePullBackOff``, ``... is terminated``). A request that is no WebSocket upgrade, SPDY/3.1
included (the only protocol of kubectl < 1.30), is answered as a server that does not speak
that protocol answers: it ignores the Upgrade header and the API server's 400 ``Upgrade
request required`` follows, so such a kubectl fails at once (``Error from server
(BadRequest): Upgrade request required``; kubectl debug/run -i then fall back to the log).

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

Defaulting done: pods (common fields, status Pending) on create; ephemeral containers when
added (terminationMessagePath/Policy, imagePullPolicy, resources); Services on every write
(type ClusterIP, a cluster IP from 10.96.0.0/16 derived from the name and kept, port
protocol TCP and targetPort, node ports for NodePort/LoadBalancer, status.loadBalancer);
Secrets (``stringData`` written into ``data`` as base64, type Opaque).

What it does NOT do (a real cluster would):

- no controllers or scheduler (the bootstrap signer and the kubelet's status reports above
  aside): nothing recreates evicted pods, scales workloads, schedules pending pods, restarts
  ended containers (restartPolicy Always pods stay Running with a terminated container) or
  updates workload status (a Deployment created or applied keeps the status
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
  ``pods/log``, ``pods/eviction``, ``pods/ephemeralcontainers``, ``pods/attach`` and
  ``pods/exec`` (no ``/status``, ``/scale``: ``kubectl scale`` is 404; no ``/binding``,
  ``/portforward``, ``/proxy``);
- no admission beyond NamespaceLifecycle, little validation (a created pod needs
  containers and no ephemeral ones; ephemeral container updates as above; names must match
  the URL; kind and apiVersion must match the resource; plain pod updates may change
  anything, ephemeral containers included), no defaulting beyond the above, no RBAC but the
  fixed rules above (RBAC objects are just stored), no client certificates, service account
  tokens or impersonation, no CertificateSigningRequests (a joining node could not get its
  certificate), bootstrap tokens must be ``[a-z0-9]{6}.[a-z0-9]{16}``;
- attach/exec: WebSocket only (kubectl < 1.30 speaks SPDY only, see above), no
  port-forward; a container's "process" is a busybox one on this machine, started by the
  first attach (not when the container starts: nothing runs before it, so that attach misses
  no output), whatever the image and whatever ``stdin`` the container spec says; no
  namespaces, cgroups, ``/host`` or target process sharing; attach reports the shell's exit
  code like an exec only with ``emu.attach_reports_exit_code = True``; by default it ends
  with Success whatever the exit code, as the kubelet's attach does (clients read the exit
  code from the container's terminated state; with True, ``kubectl debug/run -i`` take a
  non-zero exit for a failed attach and print the log again);
- protobuf request bodies are decoded only for Pod, Namespace, ConfigMap and Secret and the
  fields in ``_PB_MESSAGES`` (kubectl >= 1.33's typed ``kubectl create namespace/configmap/
  secret`` and ``kubectl debug node/N`` send protobuf), anything else is a 415; answers are
  JSON to clients that also accept JSON; ``kubectl create -f``, ``apply`` and the Python
  client send JSON; no CBOR;
- no OpenAPI (``/openapi/v2`` and ``/openapi/v3`` are 404: ``kubectl
  get/drain/logs/delete/patch/label/cordon`` never ask, but ``kubectl create/replace/apply
  -f`` validate against it: pass ``--validate=false``), no aggregated discovery (legacy
  discovery JSON is served; kubectl >= 1.30 falls back to it);
- no events, endpoints, jobs, networkpolicies, CRDs or any other kind;
- Table output (``kubectl get`` without ``-o``) mimics the real printers' columns and the
  pod STATUS logic, simplified (no readiness gates, no sidecar restart rules);
- log ``sinceSeconds``/``sinceTime`` are accepted and ignored; ``limitBytes`` cuts bytes.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import select
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
    "jws_detached_signature",
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
# field errors (422 Invalid) and ephemeral containers

_FieldError = tuple[str, str, str]  # (cause reason, field, the error's body)
_ERROR_TYPES = {"Required": ("FieldValueRequired", "Required value"),
                "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
                "NotFound": ("FieldValueNotFound", "Not found"),
                "Forbidden": ("FieldValueForbidden", "Forbidden"),
                "Invalid": ("FieldValueInvalid", "Invalid value")}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                  "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
                  "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
# EphemeralContainerCommon fields the API server refuses (validateFieldAllowList), in field order
_EPHEMERAL_FORBIDDEN = ("ports", "resources", "resizePolicy", "restartPolicy", "livenessProbe",
                        "readinessProbe", "startupProbe", "lifecycle")
_NOT_FOR_EPHEMERAL = "cannot be set for an Ephemeral Container"


def _field_error(kind: str, field: str, value: Any = None, detail: str = "") -> _FieldError:
    """A field.Error as the API server words it (ErrorBody: the type, the value for most
    types, the detail)."""
    reason, body = _ERROR_TYPES[kind]
    if kind in ("Duplicate", "NotFound", "Invalid"):
        body += f": {json.dumps(value)}"
    if detail:
        body += f": {detail}"
    return reason, field, body


def _field_invalid(res: Resource, name: str, errors: Sequence[_FieldError]) -> ApiError:
    """422 Invalid with one cause per error (apierrors.NewInvalid)."""
    texts = [f"{f}: {body}" for _, f, body in errors]
    d = _details(res, name)
    d["kind"] = res.kind
    d["causes"] = [{"reason": r, "message": body, "field": f} for r, f, body in errors]
    agg = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: {agg}', d)


def _spec_diff(old: Obj, new: Obj) -> str:
    """What changed in a container (a simplified stand-in for the server's cmp.Diff)."""
    lines = []
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            if k in old:
                lines.append(f"- {k}: {json.dumps(old[k])}")
            if k in new:
                lines.append(f"+ {k}: {json.dumps(new[k])}")
    return "\n".join(lines) + "\n"


def _default_ephemeral(c: Obj) -> None:
    c.setdefault("resources", {})
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("imagePullPolicy", _pull_policy(str(c.get("image", ""))))


def _validate_ephemeral(cur: Obj, new: Obj) -> list[_FieldError]:
    """ValidatePodEphemeralContainersUpdate: each ephemeral container valid (name, image,
    unique name, an existing targetContainerName, none of the forbidden fields), the existing
    ones neither removed nor changed."""
    spec = new.get("spec") or {}
    others = [c.get("name") for c in [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]]
    names = set(others)
    errors: list[_FieldError] = []
    ecs = spec.get("ephemeralContainers") or []
    for i, ec in enumerate(ecs):
        at = f"spec.ephemeralContainers[{i}]"
        name = str(ec.get("name") or "")
        if not name:
            errors.append(_field_error("Required", f"{at}.name"))
        elif len(name) > 63 or not _DNS_LABEL.match(name):
            errors.append(_field_error("Invalid", f"{at}.name", name, _DNS_LABEL_MSG))
        if not ec.get("image"):
            errors.append(_field_error("Required", f"{at}.image"))
        if name in names:
            errors.append(_field_error("Duplicate", f"{at}.name", name))
        else:
            names.add(name)
        target = ec.get("targetContainerName")
        if target and target not in others:
            errors.append(_field_error("NotFound", f"{at}.targetContainerName", target))
        for f in _EPHEMERAL_FORBIDDEN:
            if ec.get(f) is not None and not (f == "resources" and ec[f] == {}):
                errors.append(_field_error("Forbidden", f"{at}.{f}", detail=_NOT_FOR_EPHEMERAL))
        for j, vm in enumerate(ec.get("volumeMounts") or ()):
            for f in ("subPath", "subPathExpr"):
                if isinstance(vm, dict) and vm.get(f):
                    errors.append(_field_error("Forbidden", f"{at}.volumeMounts[{j}].{f}",
                                               detail=_NOT_FOR_EPHEMERAL))
    by_name = {ec.get("name"): ec for ec in ecs}
    for old in (cur.get("spec") or {}).get("ephemeralContainers") or ():
        now, quoted = by_name.get(old.get("name")), json.dumps(old.get("name"))
        if now is None:
            errors.append(_field_error("Forbidden", "spec.ephemeralContainers",
                                       detail=f"existing ephemeral containers {quoted} may not be removed\n"))
        elif now != old:
            errors.append(_field_error("Forbidden", "spec.ephemeralContainers",
                                       detail=f"existing ephemeral containers {quoted} may not be changed\n"
                                              f"{_spec_diff(old, now)}"))
    return errors


def _image_ref(image: str) -> str:
    """The image as the runtime reports it: fully qualified, ``:latest`` when untagged."""
    full = _full_image(image)
    return full if "@" in full or ":" in full.rsplit("/", 1)[-1] else f"{full}:latest"


def _all_container_statuses(p: Obj) -> Iterator[tuple[str, Obj]]:
    status = p.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or ():
            yield key, cs


def _pod_condition(ctype: str, ok: bool, now: str, reason: str | None = None,
                   message: str | None = None) -> Obj:
    c: Obj = {"type": ctype, "status": "True" if ok else "False", "lastProbeTime": None,
              "lastTransitionTime": now}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


# --------------------------------------------------------------------------------------------
# who is asking: the admin token, bootstrap tokens, anonymous; what each may do

_BOOTSTRAP_TOKEN_TYPE = "bootstrap.kubernetes.io/token"
_DEFAULT_NODE_TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"
_BOOTSTRAP_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version", "/version/")


class _User(NamedTuple):
    name: str
    groups: tuple[str, ...]
    admin: bool = False

    @property
    def bootstrap_id(self) -> str | None:
        prefix = "system:bootstrap:"
        return self.name.removeprefix(prefix) if self.name.startswith(prefix) else None


_ADMIN = _User("kubernetes-admin", ("system:masters", "system:authenticated"), admin=True)
_ANONYMOUS = _User("system:anonymous", ("system:unauthenticated",))


class _Attributes(NamedTuple):
    """What the authorizer looks at (the API server's RequestInfo)."""

    resource_request: bool
    verb: str
    path: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


def _request_attributes(method: str, path: str, query: Mapping[str, str]) -> _Attributes:
    segs = [unquote(s) for s in path.strip("/").split("/") if s]
    if len(segs) >= 2 and segs[0] == "api":
        group, rest = "", segs[2:]
    elif len(segs) >= 3 and segs[0] == "apis":
        group, rest = segs[1], segs[3:]
    else:
        group, rest = "", []
    if not rest:  # /version, /healthz, discovery (/api, /apis/apps/v1): a non-resource request
        return _Attributes(False, method.lower(), path)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    name = rest[1] if len(rest) > 1 else ""
    watch = query.get("watch") in ("1", "t", "T", "TRUE", "true", "True")
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method)
    if verb is None and method in ("GET", "HEAD"):
        verb = "watch" if watch else "get" if name else "list"
    elif verb is None:
        verb = "delete" if name else "deletecollection" if method == "DELETE" else method.lower()
    if not name and verb in ("list", "watch"):  # a list of one object by name counts as that name
        if m := re.fullmatch(r"metadata\.name==?([^,]+)", query.get("fieldSelector", "").strip()):
            name = m.group(1)
    return _Attributes(True, verb, path, group, rest[0], rest[2] if len(rest) > 2 else "", namespace, name)


def _allowed(user: _User, a: _Attributes) -> bool:
    """The RBAC rules a kubeadm cluster has for the non-admin users the emulator knows:
    system:public-info-viewer (everyone: GET /healthz, /livez, /readyz, /version),
    system:discovery (authenticated users: GET /api*, /apis*, /openapi*),
    kubeadm:bootstrap-signer-clusterinfo (anonymous: get configmap kube-public/cluster-info),
    kubeadm:get-nodes (bootstrap tokens: get nodes), kubeadm:nodes-kubeadm-config and
    kubeadm:kubelet-config (tokens of the default-node-token group: get configmaps
    kube-system/kubeadm-config and kubelet-config); bootstrap tokens may also list/watch
    cluster-info (by name)."""
    if user.admin:
        return True
    if not a.resource_request:
        if a.verb != "get":
            return False
        if a.path in _PUBLIC_PATHS or a.path.startswith(("/healthz/", "/livez/", "/readyz/")):
            return True
        return ("system:authenticated" in user.groups
                and (a.path in ("/api", "/apis") or a.path.startswith(("/api/", "/apis/", "/openapi/"))))
    if a.subresource or a.group:
        return False
    if (a.resource, a.namespace, a.name) == ("configmaps", "kube-public", "cluster-info"):
        return a.verb == "get" or (user.bootstrap_id is not None and a.verb in ("list", "watch"))
    if user.bootstrap_id is None:
        return False
    if a.resource == "nodes" and a.verb == "get" and a.name:
        return True
    return (_DEFAULT_NODE_TOKEN_GROUP in user.groups and a.verb == "get" and a.resource == "configmaps"
            and a.namespace == "kube-system" and a.name in ("kubeadm-config", "kubelet-config"))


def _forbidden(user: _User, a: _Attributes) -> ApiError:
    """The API server's 403 (responsewriters.Forbidden, apierrors.NewForbidden)."""
    if not a.resource_request:
        return ApiError(403, "Forbidden", f'forbidden: User "{user.name}" cannot {a.verb} path "{a.path}"',
                        {})
    resource = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    where = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
    why = f'User "{user.name}" cannot {a.verb} resource "{resource}" in API group "{a.group}" {where}'
    qualified = f"{a.resource}.{a.group}" if a.group else a.resource
    details: Obj = {"name": a.name} if a.name else {}
    if a.group:
        details["group"] = a.group
    details["kind"] = a.resource
    return ApiError(403, "Forbidden", f'{qualified} "{a.name}" is forbidden: {why}' if a.name
                    else f"{qualified} is forbidden: {why}", details)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jws_detached_signature(content: str, token_id: str, secret: str) -> str:
    """The bootstrap signer's signature of cluster-info's kubeconfig for a token: a JWS (RFC
    7515) with the payload detached (Appendix F): ``base64url(header) + ".." +
    base64url(HMAC-SHA256)``, header ``{"alg":"HS256","kid":"<token id>"}``, signing input
    ``base64url(header) + "." + base64url(content)``, no padding anywhere.

    Checked against k8s.io/cluster-bootstrap/token/jws ComputeDetachedSignature (kubernetes
    staging source, read through the search tool): go-jose HS256 with the token id as an extra
    ``kid`` header, the compact serialization with its middle part cut; the key is the secret
    zero-padded to 32 bytes, which HMAC's own zero-padding to its 64-byte block makes no
    different from the bare secret."""
    header = _b64url(json.dumps({"alg": "HS256", "kid": token_id}, separators=(",", ":")).encode())
    signing_input = f"{header}.{_b64url(content.encode())}".encode("ascii")
    key = secret.encode().ljust(32, b"\0")
    return f"{header}..{_b64url(hmac.new(key, signing_input, hashlib.sha256).digest())}"


def _cluster_info_kubeconfig(server: str, ca_data: str) -> str:
    """cluster-info's ``kubeconfig``: what kubeadm writes there (clientcmd.Write of a Config
    with one cluster named "" and nothing else)."""
    return (f"apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca_data}\n"
            f'    server: {server}\n  name: ""\ncontexts: null\ncurrent-context: ""\nkind: Config\n'
            f"preferences: {{}}\nusers: null\n")


def _der_item(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the content, end) of the DER item at pos."""
    tag, n, pos = der[pos], der[pos + 1], pos + 2
    if n & 0x80:
        k = n & 0x7F
        n, pos = int.from_bytes(der[pos:pos + k], "big"), pos + k
    return tag, pos, pos + n


def _spki_der(cert_der: bytes) -> bytes:
    """A certificate's DER SubjectPublicKeyInfo (the 6th field of tbsCertificate, after the
    optional [0] version)."""
    _, start, _ = _der_item(cert_der, 0)  # Certificate
    _, pos, end = _der_item(cert_der, start)  # tbsCertificate
    fields = []
    while pos < end:
        tag, _, item_end = _der_item(cert_der, pos)
        fields.append((tag, pos, item_end))
        pos = item_end
    if fields and fields[0][0] == 0xA0:
        fields = fields[1:]
    _, spki_start, spki_end = fields[5]  # serial, signature, issuer, validity, subject, spki
    return cert_der[spki_start:spki_end]


def _token_data(secret: Obj) -> dict[str, str] | None:
    """A bootstrap token Secret's data, decoded (None when it is not one)."""
    if secret.get("type") != _BOOTSTRAP_TOKEN_TYPE:
        return None
    out = {}
    for k, v in (secret.get("data") or {}).items():
        try:
            out[k] = base64.b64decode(v).decode()
        except (ValueError, UnicodeDecodeError):
            return None
    return out


def _token_expired(data: Mapping[str, str], now: dt.datetime) -> bool:
    exp = data.get("expiration")
    if not exp:
        return False
    try:
        return _parse_time(exp) <= now
    except ValueError:
        return True


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
# protobuf request bodies (kubectl >= 1.33's typed clients: create pod/namespace/configmap/secret)

_PROTOBUF = "application/vnd.kubernetes.protobuf"
# The messages decoded, as "number jsonName type" entries; field numbers as in k8s.io/api's and
# k8s.io/apimachinery's generated.proto (they never change). Types: s string, b bool, i integer,
# y bytes (base64 in JSON), Time, Quantity, a message name, [t] repeated, {t} map from string,
# ^Msg a message inlined into this one (Go's embedded structs), "-" ignored (server-set). A "?"
# marks Go pointer fields: their zero value is kept (gogo-protobuf writes every non-pointer
# field, so a zero there means unset, as JSON's omitempty drops it). Anything else is a 415.
_PB_MESSAGES = {
    "Pod": "1 metadata ObjectMeta; 2 spec PodSpec; 3 status -",
    "Namespace": "1 metadata ObjectMeta; 2 spec NamespaceSpec; 3 status -",
    "ConfigMap": "1 metadata ObjectMeta; 2 data {s}; 3 binaryData {y}; 4 immutable b?",
    "Secret": "1 metadata ObjectMeta; 2 data {y}; 3 type s; 4 stringData {s}; 5 immutable b?",
    "ObjectMeta": "1 name s; 2 generateName s; 3 namespace s; 4 selfLink -; 5 uid s; 6 resourceVersion s; "
                  "7 generation i; 8 creationTimestamp Time; 9 deletionTimestamp Time; "
                  "10 deletionGracePeriodSeconds i?; 11 labels {s}; 12 annotations {s}; "
                  "13 ownerReferences [OwnerReference]; 14 finalizers [s]; 17 managedFields -",
    "OwnerReference": "1 kind s; 3 name s; 4 uid s; 5 apiVersion s; 6 controller b?; 7 blockOwnerDeletion b?",
    "NamespaceSpec": "1 finalizers [s]",
    "PodSpec": "1 volumes [Volume]; 2 containers [Container]; 3 restartPolicy s; "
               "4 terminationGracePeriodSeconds i?; 5 activeDeadlineSeconds i?; 6 dnsPolicy s; "
               "7 nodeSelector {s}; 8 serviceAccountName s; 9 serviceAccount s; 10 nodeName s; "
               "11 hostNetwork b; 12 hostPID b; 13 hostIPC b; 14 securityContext PodSecurityContext; "
               "15 imagePullSecrets [LocalObjectReference]; 16 hostname s; 17 subdomain s; "
               "19 schedulerName s; 20 initContainers [Container]; 21 automountServiceAccountToken b?; "
               "22 tolerations [Toleration]; 24 priorityClassName s; 25 priority i?; "
               "27 shareProcessNamespace b?; 29 runtimeClassName s?; 30 enableServiceLinks b?; "
               "31 preemptionPolicy s?; 34 ephemeralContainers [EphemeralContainer]; "
               "35 setHostnameAsFQDN b?; 37 hostUsers b?",
    "Container": "1 name s; 2 image s; 3 command [s]; 4 args [s]; 5 workingDir s; 6 ports [ContainerPort]; "
                 "7 env [EnvVar]; 8 resources ResourceRequirements; 9 volumeMounts [VolumeMount]; "
                 "13 terminationMessagePath s; 14 imagePullPolicy s; 15 securityContext SecurityContext; "
                 "16 stdin b; 17 stdinOnce b; 18 tty b; 20 terminationMessagePolicy s; 24 restartPolicy s?",
    "EphemeralContainer": "1 ephemeralContainerCommon ^Container; 2 targetContainerName s",
    "ContainerPort": "1 name s; 2 hostPort i; 3 containerPort i; 4 protocol s; 5 hostIP s",
    "EnvVar": "1 name s; 2 value s; 3 valueFrom EnvVarSource",
    "EnvVarSource": "1 fieldRef ObjectFieldSelector; 3 configMapKeyRef KeySelector; "
                    "4 secretKeyRef KeySelector",
    "ObjectFieldSelector": "1 apiVersion s; 2 fieldPath s",
    "KeySelector": "1 localObjectReference ^LocalObjectReference; 2 key s; 3 optional b?",
    "LocalObjectReference": "1 name s",
    "ResourceRequirements": "1 limits {Quantity}; 2 requests {Quantity}",
    "VolumeMount": "1 name s; 2 readOnly b; 3 mountPath s; 4 subPath s; 5 mountPropagation s?; "
                   "6 subPathExpr s",
    "Volume": "1 name s; 2 volumeSource ^VolumeSource",
    "VolumeSource": "1 hostPath HostPathVolumeSource; 2 emptyDir EmptyDirVolumeSource; "
                    "6 secret SecretVolumeSource; 19 configMap ConfigMapVolumeSource; "
                    "10 persistentVolumeClaim PersistentVolumeClaimVolumeSource",
    "HostPathVolumeSource": "1 path s; 2 type s?",
    "EmptyDirVolumeSource": "1 medium s; 2 sizeLimit Quantity",
    "SecretVolumeSource": "1 secretName s; 2 items [KeyToPath]; 3 defaultMode i?; 4 optional b?",
    "ConfigMapVolumeSource": "1 localObjectReference ^LocalObjectReference; 2 items [KeyToPath]; "
                             "3 defaultMode i?; 4 optional b?",
    "PersistentVolumeClaimVolumeSource": "1 claimName s; 2 readOnly b",
    "KeyToPath": "1 key s; 2 path s; 3 mode i?",
    "Toleration": "1 key s; 2 operator s; 3 value s; 4 effect s; 5 tolerationSeconds i?",
    "SecurityContext": "1 capabilities Capabilities; 2 privileged b?; 4 runAsUser i?; 5 runAsNonRoot b?; "
                       "6 readOnlyRootFilesystem b?; 7 allowPrivilegeEscalation b?; 8 runAsGroup i?; "
                       "9 procMount s?; 11 seccompProfile SeccompProfile",
    "PodSecurityContext": "2 runAsUser i?; 3 runAsNonRoot b?; 4 supplementalGroups [i]; 5 fsGroup i?; "
                          "6 runAsGroup i?; 9 fsGroupChangePolicy s?; 10 seccompProfile SeccompProfile",
    "SeccompProfile": "1 type s; 2 localhostProfile s?",
    "Capabilities": "1 add [s]; 2 drop [s]",
}
_PB_CACHE: dict[str, dict[int, tuple[str, str]]] = {}


class _ProtobufError(ValueError):
    pass


def _pb_fields(message: str) -> dict[int, tuple[str, str]]:
    if message not in _PB_CACHE:
        _PB_CACHE[message] = {int(n): (name, kind) for n, name, kind in
                              (f.split() for f in _PB_MESSAGES[message].split("; "))}
    return _PB_CACHE[message]


def _pb_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise _ProtobufError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _pb_scan(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value: int or bytes) of each field of a message."""
    pos = 0
    while pos < len(data):
        key, pos = _pb_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _pb_varint(data, pos)
        elif wire == 2:
            n, pos = _pb_varint(data, pos)
            value, pos = data[pos:pos + n], pos + n
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(data[pos:pos + size], "little"), pos + size
        else:
            raise _ProtobufError(f"wire type {wire}")
        yield number, wire, value


def _pb_scalar(kind: str, wire: int, value: Any) -> Any:
    if kind == "s":
        return bytes(value).decode("utf-8")
    if kind == "y":
        return base64.b64encode(bytes(value)).decode("ascii")
    if kind == "b":
        return bool(value)
    if kind == "i":
        return value - (1 << 64) if value >= 1 << 63 else value
    if kind == "Quantity":
        return next((bytes(v).decode() for n, _, v in _pb_scan(value) if n == 1), "")
    if kind == "Time":
        seconds = next((v for n, _, v in _pb_scan(value) if n == 1), 0)
        return rfc3339(dt.datetime.fromtimestamp(seconds, dt.UTC)) if seconds else None
    return _pb_decode(bytes(value), kind)


def _pb_zero(value: Any) -> bool:
    return value is None or value in ("", 0, False) and not isinstance(value, dict)


def _pb_decode(data: bytes, message: str) -> Obj:
    """A message as its JSON object (zero scalars left out unless ``?``-marked)."""
    if message not in _PB_MESSAGES:
        raise _ProtobufError(f"message {message}")
    fields = _pb_fields(message)
    out: Obj = {}
    for number, wire, value in _pb_scan(data):
        if number not in fields:
            raise _ProtobufError(f"{message} field {number}")
        name, kind = fields[number]
        pointer = kind.endswith("?")
        kind = kind.rstrip("?")
        if kind == "-":
            continue
        if kind.startswith("^"):
            out.update(_pb_decode(bytes(value), kind[1:]))
        elif kind.startswith("{"):
            entry = {n: v for n, _, v in _pb_scan(value)}
            vkind = kind[1:-1]
            key = bytes(entry.get(1, b"")).decode()
            out.setdefault(name, {})[key] = _pb_scalar(vkind, 2, entry.get(2, b"" if vkind != "i" else 0))
        elif kind.startswith("["):
            item = kind[1:-1]
            items = out.setdefault(name, [])
            if item == "i" and wire == 2:  # packed
                pos = 0
                while pos < len(value):
                    v, pos = _pb_varint(value, pos)
                    items.append(_pb_scalar("i", 0, v))
            else:
                items.append(_pb_scalar(item, wire, value))
        else:
            v = _pb_scalar(kind, wire, value)
            if pointer or not _pb_zero(v):
                out[name] = v
            else:
                out.pop(name, None)
    return out


def _protobuf_object(body: bytes) -> Obj:
    """A request body in Kubernetes' protobuf encoding ("k8s\\0" + runtime.Unknown{typeMeta,
    raw}) as the JSON object, for the kinds in _PB_MESSAGES."""
    if not body.startswith(b"k8s\x00"):
        raise _ProtobufError("no k8s protobuf envelope")
    unknown = {n: v for n, _, v in _pb_scan(body[4:])}
    type_meta = {n: bytes(v).decode() for n, _, v in _pb_scan(unknown.get(1, b""))}
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    if kind not in ("Pod", "Namespace", "ConfigMap", "Secret"):
        raise _ProtobufError(f"kind {kind!r}")
    return {"kind": kind, "apiVersion": api_version, **_pb_decode(bytes(unknown.get(2, b"")), kind)}


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
    params: list[tuple[str, str]] = field(default_factory=list)  # the query in order, repeats kept

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
        params = parse_qsl(parts.query, keep_blank_values=True)
        query = dict(params)
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        emu._record(RequestRecord(method, parts.path, query, headers.get("content-type")))
        req = _Request(method, parts.path, query, headers, body, params)
        resp: _Response | _Stream | _Upgrade
        try:
            emu._authorize(emu._authenticate(headers.get("authorization")), method, parts.path, query)
            resp = emu._handle(req)
        except ApiError as e:
            resp = _json(e.code, e.status())
        except Exception as e:  # noqa: BLE001 (a bug in the emulator: record it, answer 500)
            emu._record_error(f"{method} {self.path}: {traceback.format_exc()}")
            resp = _json(500, ApiError(500, "InternalError", f"emulator error: {e!r}").status())
        if isinstance(resp, _Stream):
            self._send_stream(resp)
        elif isinstance(resp, _Upgrade):
            self._send_upgrade(resp)
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

    def _send_upgrade(self, up: _Upgrade) -> None:
        """101 Switching Protocols, then the WebSocket session on this connection."""
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", up.accept)
        if up.protocol:
            self.send_header("Sec-WebSocket-Protocol", up.protocol)
        self.end_headers()
        self.close_connection = True
        up.run(self.connection)

    def _peer_closed(self) -> bool:
        """While streaming the client sends nothing: readable means it closed the connection."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


# --------------------------------------------------------------------------------------------
# exec/attach: container processes and the remotecommand WebSocket protocol (RFC 6455 server)

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_WS_CONT, _WS_TEXT, _WS_BINARY, _WS_CLOSE, _WS_PING, _WS_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_V5, _V4, _V4_B64 = "v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io"
_V1, _V1_B64 = "channel.k8s.io", "base64.channel.k8s.io"
# what the kubelet's WebSocket server speaks ("" = no Sec-WebSocket-Protocol: channel.k8s.io)
_KUBELET_PROTOCOLS = (_V4, _V4_B64, _V1, _V1_B64)
_STDIN, _STDOUT, _STDERR, _ERROR, _RESIZE, _CLOSE_SIGNAL = 0, 1, 2, 3, 4, 255
_BUSYBOX = "/bin/busybox"


def _parse_bool(value: str | None) -> bool:
    """Go's strconv.ParseBool, as the API server reads PodAttachOptions/PodExecOptions."""
    if value is None or value == "":
        return False
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise _bad_request(f'strconv.ParseBool: parsing "{value}": invalid syntax')


def _negotiate(offered: Sequence[str]) -> str | None:
    """The subprotocol: v5.channel.k8s.io when offered (the API server's own WebSocket server,
    1.30+, speaks only that one), else the first offered one the kubelet's server speaks, ""
    when the client offers none; None when nothing offered is spoken (a 403, as
    golang.org/x/net/websocket answers)."""
    if _V5 in offered:
        return _V5
    if not offered:
        return ""
    return next((p for p in offered if p in _KUBELET_PROTOCOLS), None)


def _ws_frame(opcode: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


def _unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


class _WsProtocolError(Exception):
    """The peer broke RFC 6455 (the connection is closed with this close code)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class _WsReader:
    """Reads a client's frames off the socket: unmasks them, joins fragmented messages and
    hands out control frames as they come (they may arrive between fragments)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.partial: tuple[int, bytearray] | None = None  # (opcode, data) of a fragmented message

    def fill(self) -> bool:
        """One read (the socket is readable); False at end of stream."""
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        pending = getattr(self.sock, "pending", None)
        while pending is not None and pending() > 0:
            self.buf += self.sock.recv(pending())
        return True

    def buffered(self) -> bool:
        pending = getattr(self.sock, "pending", None)
        return pending is not None and pending() > 0

    def messages(self) -> Iterator[tuple[int, bytes]]:
        """Complete messages and control frames in the buffer: (opcode, payload)."""
        while True:
            frame = self._frame()
            if frame is None:
                return
            fin, opcode, payload = frame
            if opcode >= 0x8:
                if not fin or len(payload) > 125:
                    raise _WsProtocolError(1002, "bad control frame")
                yield opcode, payload
            elif opcode == _WS_CONT:
                if self.partial is None:
                    raise _WsProtocolError(1002, "continuation frame without a message")
                self.partial[1].extend(payload)
                if fin:
                    op, data = self.partial
                    self.partial = None
                    yield op, bytes(data)
            elif opcode in (_WS_TEXT, _WS_BINARY):
                if self.partial is not None:
                    raise _WsProtocolError(1002, "new message inside a fragmented one")
                if fin:
                    yield opcode, payload
                else:
                    self.partial = (opcode, bytearray(payload))
            else:
                raise _WsProtocolError(1002, f"unknown opcode {opcode}")

    def _frame(self) -> tuple[bool, int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise _WsProtocolError(1002, "reserved bits set")
        if not b1 & 0x80:
            raise _WsProtocolError(1002, "client frames must be masked")
        n, pos = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, pos = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, pos = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < pos + 4 + n:
            return None
        key = bytes(buf[pos:pos + 4])
        payload = _unmask(bytes(buf[pos + 4:pos + 4 + n]), key) if n else b""
        del buf[:pos + 4 + n]
        return bool(b0 & 0x80), b0 & 0x0F, payload


class _Sink:
    """What one attached session receives from a process: (channel, data) chunks and, at the
    end, (None, exit code); a pipe wakes the session's select()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[int | None, Any]] = []
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self.closed = False

    def fileno(self) -> int:
        return self._r

    def push(self, channel: int | None, data: Any) -> None:
        with self._lock:
            if self.closed:
                return
            self._items.append((channel, data))
            try:
                os.write(self._w, b"x")
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already

    def drain(self) -> list[tuple[int | None, Any]]:
        with self._lock:
            items, self._items = self._items, []
            try:
                while os.read(self._r, 4096):
                    pass
            except BlockingIOError:
                pass
            return items

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                os.close(self._r)
                os.close(self._w)


class _Process:
    """A real process standing in for a container's: ``/bin/busybox sh`` (or the container's
    command) as its main process, started on the first attach, or an exec's command. Plain
    pipes, or a pty when ``tty``; its output goes to every subscribed session (and, for a main
    process, to the container's log); ``on_exit(code)`` runs before the sessions hear of the
    end."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], tty: bool, setsid: str,
                 on_output: Callable[[bytes], None] | None, on_exit: Callable[[int], None]) -> None:
        self.tty = tty
        self.on_output = on_output
        self.on_exit = on_exit
        self.exit_code: int | None = None
        self.pod_uid = ""  # whose container it runs in (its deletion kills it)
        self._lock = threading.Lock()
        self._sinks: set[_Sink] = set()
        self._stdin_open = True
        if tty:
            import pty

            master, slave = pty.openpty()
            # busybox setsid -c: a session of its own with the pty as controlling terminal
            self.proc = subprocess.Popen([setsid, "-c", *argv], stdin=slave,
                                         stdout=slave, stderr=slave, cwd=cwd, env=dict(env), close_fds=True)
            os.close(slave)
            self._stdin_fd = master
            self._outs = {master: _STDOUT}
        else:
            self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, cwd=cwd, env=dict(env), close_fds=True,
                                         start_new_session=True)
            stdin, stdout, stderr = self.proc.stdin, self.proc.stdout, self.proc.stderr
            assert stdin is not None and stdout is not None and stderr is not None
            self._stdin_fd = stdin.fileno()
            self._outs = {stdout.fileno(): _STDOUT, stderr.fileno(): _STDERR}
        self._started = False
        self._thread = threading.Thread(target=self._pump, name=f"container-process:{self.proc.pid}",
                                        daemon=True)

    def start(self) -> _Process:
        """Start passing its output on (once; the first session subscribes before)."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        self._thread.start()
        return self

    def subscribe(self, sink: _Sink) -> None:
        with self._lock:
            if self.exit_code is not None:
                sink.push(None, self.exit_code)
            else:
                self._sinks.add(sink)

    def unsubscribe(self, sink: _Sink) -> None:
        with self._lock:
            self._sinks.discard(sink)

    def write(self, data: bytes) -> None:
        with self._lock:
            if not self._stdin_open or self.exit_code is not None:
                return
        try:
            os.write(self._stdin_fd, data)
        except OSError:
            pass  # the process is gone or closed its stdin

    def close_stdin(self) -> None:
        """End of input: EOF on the pipe; on a pty, the terminal's EOF character (^D)."""
        if self.tty:
            self.write(b"\x04")
            return
        with self._lock:
            if not self._stdin_open:
                return
            self._stdin_open = False
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def resize(self, width: int, height: int) -> None:
        if self.tty and self.exit_code is None:
            import fcntl
            import struct
            import termios

            try:
                fcntl.ioctl(self._stdin_fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
            except OSError:
                pass

    def kill(self) -> None:
        """SIGKILL to its process group (what it started too)."""
        try:
            os.killpg(self.proc.pid, 9)
        except OSError:
            try:
                self.proc.kill()
            except OSError:
                pass

    def reap(self, timeout: float) -> None:
        """Wait for it to be gone (after kill())."""
        with self._lock:
            started = self._started
        if started:
            self._thread.join(timeout)
        else:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass

    def _pump(self) -> None:
        fds = dict(self._outs)
        while fds:
            readable, _, _ = select.select(list(fds), [], [], 0.5)
            if not readable:
                if self.proc.poll() is None:
                    continue
                # ended, but something it started may still hold the pipe: take what is there
                for fd in list(fds):
                    while select.select([fd], [], [], 0)[0] and self._read(fd, fds):
                        pass
                break
            for fd in readable:
                self._read(fd, fds)
        code = self.proc.wait()
        code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal, as the kubelet says
        with self._lock:
            self._stdin_open = False
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        if self.tty:
            os.close(self._stdin_fd)
        try:
            self.on_exit(code)
        finally:
            with self._lock:
                self.exit_code = code
                sinks, self._sinks = list(self._sinks), set()
            for sink in sinks:
                sink.push(None, code)

    def _read(self, fd: int, fds: dict[int, int]) -> bool:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the pty's other side is closed
            data = b""
        if not data:
            fds.pop(fd, None)
            return False
        if self.on_output is not None:
            self.on_output(data)
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            sink.push(fds[fd], data)
        return True


@dataclass
class _StreamOptions:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


@dataclass
class _Upgrade:
    """A WebSocket upgrade (101 Switching Protocols): ``run(sock)`` is the session."""

    protocol: str
    accept: str
    run: Callable[[socket.socket], None]


def _exit_status(code: int, protocol: str, exec_argv: Sequence[str] | None) -> Obj:
    """The v1 Status the error channel ends with: Success, or NonZeroExitCode with the exit
    code as the ExitCode cause (the message as the API server's v5 stream translator words it,
    resp. the kubelet with containerd's for an exec over v4)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    if exec_argv is not None and protocol != _V5:
        inner = f"error executing command [{' '.join(exec_argv)}], exit code {code}"
    else:
        inner = f"command terminated with exit code {code}"
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: {inner}", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


class _WsSession:
    """One exec/attach WebSocket: client frames to the process's stdin (channel 0; resize on 4;
    in v5 [255, 0] closes stdin), its output to channels 1 and 2; at its end the error channel
    (3) gets the Status and the server closes the connection (then waits, boundedly, for the
    client's close frame so that nothing still in flight is reset away). ``proc`` None: the
    process could not start, ``failure`` is the Status to end with."""

    def __init__(self, sock: socket.socket, protocol: str, opts: _StreamOptions, proc: _Process | None,
                 status: Callable[[int], Obj], *, failure: Obj | None = None,
                 on_detach: Callable[[], None] | None = None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.sock = sock
        self.protocol = protocol
        self.base64 = protocol in (_V4_B64, _V1_B64)
        self.opts = opts
        self.proc = proc
        self.status = status
        self.failure = failure
        self.on_detach = on_detach
        self.stopping = stopping
        self.reader = _WsReader(sock)
        self.closing = False

    def run(self) -> None:
        sink = _Sink()
        detached = True
        try:
            # "an empty message to the lowest writable channel" (kubelet and API server alike)
            first = _STDOUT if self.opts.stdout else _STDERR if self.opts.stderr else _ERROR
            self._send_channel(first, b"")
            if self.proc is None:
                detached = False
                self._end(self.failure or {"metadata": {}, "status": "Failure"})
                return
            self.proc.subscribe(sink)
            self.proc.start()
            waitables: list[Any] = [self.sock, sink]
            while not self.stopping():
                readable = [self.sock] if self.reader.buffered() else select.select(waitables, [], [], 1.0)[0]
                if self.sock in readable and (not self.reader.fill() or not self._handle_client()):
                    break  # the client went away or closed: it detaches
                if sink in readable and self._forward(sink.drain()):
                    detached = False
                    return
        except _WsProtocolError as e:
            self._close(e.code, str(e))
        except (OSError, ValueError):
            pass  # the connection broke
        finally:
            if self.proc is not None:
                self.proc.unsubscribe(sink)
            sink.close()
            if detached and self.on_detach is not None:
                self.on_detach()

    def _handle_client(self) -> bool:
        """Act on the client's messages; False once it has closed the connection."""
        for opcode, payload in self.reader.messages():
            if opcode == _WS_PING:
                self.sock.sendall(_ws_frame(_WS_PONG, payload))
            elif opcode == _WS_CLOSE:
                if not self.closing:
                    self.sock.sendall(_ws_frame(_WS_CLOSE, payload[:2]))
                return False
            elif opcode in (_WS_TEXT, _WS_BINARY):
                self._client_data(opcode, payload)
        return True

    def _client_data(self, opcode: int, payload: bytes) -> None:
        proc = self.proc
        if not payload or proc is None:
            return
        if self.base64:
            if opcode != _WS_TEXT:
                return
            channel = payload[0] - ord("0")
            try:
                data = base64.b64decode(payload[1:])
            except ValueError:
                return
        else:  # binary protocols take text frames too (the Python client sends str as text)
            channel, data = payload[0], payload[1:]
        if channel == _STDIN and self.opts.stdin:
            proc.write(data)
        elif channel == _RESIZE:
            try:
                size = json.loads(data)
                proc.resize(int(size.get("Width") or 0), int(size.get("Height") or 0))
            except (ValueError, TypeError, AttributeError):
                pass
        elif channel == _CLOSE_SIGNAL and self.protocol == _V5 and data[:1] == bytes([_STDIN]):
            proc.close_stdin()

    def _forward(self, items: list[tuple[int | None, Any]]) -> bool:
        """Send the process's output; True when it ended (the session is then over)."""
        for channel, data in items:
            if channel is None:
                self._end(self.status(int(data)))
                return True
            if (channel == _STDOUT and self.opts.stdout) or (channel == _STDERR and self.opts.stderr):
                self._send_channel(channel, data)
        return False

    def _send_channel(self, channel: int, data: bytes) -> None:
        if self.base64:
            self.sock.sendall(_ws_frame(_WS_TEXT, str(channel).encode() + base64.b64encode(data)))
        else:
            self.sock.sendall(_ws_frame(_WS_BINARY, bytes([channel]) + data))

    def _end(self, status: Obj) -> None:
        if self.protocol in (_V5, _V4, _V4_B64):
            self._send_channel(_ERROR, json.dumps(status, separators=(",", ":")).encode())
        elif status.get("status") != "Success":  # channel.k8s.io: the error text, nothing on success
            self._send_channel(_ERROR, str(status.get("message", "")).encode())
        self._close(1000, "")

    def _close(self, code: int, reason: str) -> None:
        """Send the close frame, then wait (at most 10 s) for the client's."""
        if self.closing:
            return
        self.closing = True
        try:
            self.sock.sendall(_ws_frame(_WS_CLOSE, code.to_bytes(2, "big") + reason.encode()[:120]))
            deadline = _monotonic() + 10
            while _monotonic() < deadline and not self.stopping():
                if not self.reader.buffered() and not select.select([self.sock], [], [], 0.5)[0]:
                    continue
                if not self.reader.fill():
                    return
                for opcode, _ in self.reader.messages():
                    if opcode == _WS_CLOSE:
                        return
        except (OSError, ValueError, _WsProtocolError):
            return


# --------------------------------------------------------------------------------------------
# the emulator


_LogKey = tuple[str, str, str, bool]  # namespace, pod, container ("" = the first), previous
_LogEntries = list[tuple[str, str]]  # (RFC3339Nano timestamp, line)
_Records = list[RequestRecord]
_Pids = list[int]
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
        self.attach_reports_exit_code = False  # True: the exit code, like an exec (the kubelet: Success)
        self.busybox = _BUSYBOX
        self._procs: dict[tuple[str, str], _Process] = {}  # (pod uid, container): its main process
        self._execs: set[_Process] = set()
        self._container_dirs: dict[tuple[str, str], Path] = {}
        self._sign_timer: threading.Timer | None = None
        self._signing = False
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
        """Stop serving: ends follow streams, kills container processes (attached shells,
        execs), closes connections, cancels pending deletions."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            for t in self._timers:
                t.cancel()
            procs = [*self._procs.values(), *self._execs]
            self._cond.notify_all()
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.reap(5)
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

    # ---- identities: bootstrap tokens, cluster-info, anonymous

    @property
    def ca_pem(self) -> str:
        """The emulator's CA certificate (PEM): what a client must trust."""
        return self.tls.ca_cert.read_text()

    def ca_hash(self) -> str:
        """``sha256:<hex>`` of the CA certificate's DER SubjectPublicKeyInfo: the pin kubeadm
        takes as --discovery-token-ca-cert-hash."""
        return "sha256:" + hashlib.sha256(_spki_der(ssl.PEM_cert_to_DER_cert(self.ca_pem))).hexdigest()

    def add_bootstrap_token(self, token_id: str, secret: str, *, expires: dt.datetime | None = None,
                            groups: Iterable[str] = (_DEFAULT_NODE_TOKEN_GROUP,)) -> str:
        """Store a bootstrap token as kubeadm does (Secret ``kube-system/bootstrap-token-<id>``,
        type bootstrap.kubernetes.io/token, usable for authentication and signing) and keep
        ConfigMap ``kube-public/cluster-info`` as the bootstrap signer does (created with this
        server's kubeconfig when missing; a ``jws-kubeconfig-<id>`` signature per token that
        has not expired). Returns the bearer token ``<id>.<secret>`` (user
        ``system:bootstrap:<id>``, groups system:bootstrappers and ``groups``)."""
        if not re.fullmatch(r"[a-z0-9]{6}", token_id) or not re.fullmatch(r"[a-z0-9]{16}", secret):
            raise ValueError("a bootstrap token is [a-z0-9]{6}.[a-z0-9]{16}")
        groups = list(groups)
        bad = [g for g in groups if not g.startswith("system:bootstrappers:")]
        if bad:
            raise ValueError(f"auth-extra-groups must start with system:bootstrappers: ({bad})")
        if not self.url:
            raise RuntimeError("start the emulator first: cluster-info names its URL")
        data = {"token-id": token_id, "token-secret": secret, "usage-bootstrap-authentication": "true",
                "usage-bootstrap-signing": "true"}
        if groups:
            data["auth-extra-groups"] = ",".join(groups)
        if expires is not None:
            data["expiration"] = rfc3339(expires)
        obj = {"apiVersion": "v1", "kind": "Secret", "type": _BOOTSTRAP_TOKEN_TYPE,
               "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
               "data": {k: base64.b64encode(v.encode()).decode("ascii") for k, v in sorted(data.items())}}
        with self._cond:
            self._put(_BY_PLURAL["secrets"], obj, create_namespace=True)
            self._sign_cluster_info(create=True)
        return f"{token_id}.{secret}"

    def kubeconfig_for(self, path: Path, token: str | None = None) -> Path:
        """Write a kubeconfig for this server with another identity: a bearer ``token`` (e.g.
        what :meth:`add_bootstrap_token` returned) or, None, anonymous. kubectl prompts for a
        username when a kubeconfig has no credentials at all, so the anonymous one has a blank
        token: client-go sends ``Authorization: Bearer`` and nothing, which the API server's
        bearer token authenticator does not count as a token (the Python client does the same)."""
        config = json.loads(self.kubeconfig.read_text())
        config["users"] = [{"name": "emu", "user": {"token": " " if token is None else token}}]
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path

    def container_dir(self, namespace: str, pod: str, container: str) -> Path | None:
        """The directory a container's processes run in (their HOME), once one was started."""
        with self._lock:
            p = self._store["pods"].get((namespace, pod))
            return self._container_dirs.get((p["metadata"]["uid"], container)) if p is not None else None

    def processes(self) -> _Pids:
        """The pids of the container processes running now (main processes and execs)."""
        with self._lock:
            return [p.proc.pid for p in [*self._procs.values(), *self._execs] if p.exit_code is None]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until predicate() holds (checked after every change to the state); whether it did."""
        deadline = _monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - _monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

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
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")  # kubectl sends "status": {}
        self._store[res.plural][key] = obj
        self._event("MODIFIED" if old is not None else "ADDED", res, obj)
        self._signer_watch(res, obj)
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
            if res.plural == "pods":
                self._kill_pod_processes(obj["metadata"]["uid"])
            elif res.plural == "secrets":
                self._signer_watch(res, obj)
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

    # ---- internals: who is asking

    def _authenticate(self, header: str | None) -> _User:
        """The admin token or a live bootstrap token; no bearer token at all is anonymous (as
        for the API server's bearer token authenticator, a blank ``Bearer`` is none, and other
        schemes count for nothing: no basic auth since 1.19); any other token is a 401."""
        parts = (header or "").strip().split(" ")
        if parts[0].lower() != "bearer" or len(parts) < 2 or not parts[1]:
            return _ANONYMOUS
        if header == f"Bearer {self.token}":
            return _ADMIN
        user = self._bootstrap_user(parts[1]) if len(parts) == 2 else None
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def _bootstrap_user(self, token: str) -> _User | None:
        """The bootstrap token authenticator: the Secret of the token's id in kube-system,
        the same secret, usable for authentication, not expired, not being deleted."""
        m = _BOOTSTRAP_TOKEN.match(token)
        if m is None:
            return None
        with self._lock:
            secret = self._store["secrets"].get(("kube-system", f"bootstrap-token-{m.group(1)}"))
            data = _token_data(secret) if secret is not None else None
            if (secret is None or data is None or secret["metadata"].get("deletionTimestamp")
                    or not hmac.compare_digest(data.get("token-secret", ""), m.group(2))
                    or data.get("usage-bootstrap-authentication") != "true"
                    or _token_expired(data, _utcnow())):
                return None
        extra = [g for g in data.get("auth-extra-groups", "").split(",") if g]
        return _User(f"system:bootstrap:{m.group(1)}",
                     ("system:bootstrappers", *extra, "system:authenticated"))

    def _authorize(self, user: _User, method: str, path: str, query: Mapping[str, str]) -> None:
        if user.admin:
            return
        attrs = _request_attributes(method, path, query)
        if not _allowed(user, attrs):
            raise _forbidden(user, attrs)

    def _sign_cluster_info(self, create: bool = False) -> None:
        """The bootstrap signer (caller holds the lock): cluster-info gets one
        ``jws-kubeconfig-<id>`` per token usable for signing and not expired, and loses the
        others; re-run when the next token expires."""
        res = _BY_PLURAL["configmaps"]
        cm = self._store["configmaps"].get(("kube-public", "cluster-info"))
        if cm is None and not create:
            return
        data = dict((cm or {}).get("data") or {})
        if cm is None:
            data["kubeconfig"] = _cluster_info_kubeconfig(self.url, self.tls.ca_data())
        now = _utcnow()
        signed = {k: v for k, v in data.items() if not k.startswith("jws-kubeconfig-")}
        next_expiry: dt.datetime | None = None
        for (ns, _), secret in sorted(self._store["secrets"].items()):
            token = _token_data(secret) if ns == "kube-system" else None
            if (token is None or token.get("usage-bootstrap-signing") != "true" or not token.get("token-id")
                    or not token.get("token-secret") or _token_expired(token, now)
                    or "kubeconfig" not in data):
                continue
            signed[f"jws-kubeconfig-{token['token-id']}"] = jws_detached_signature(
                data["kubeconfig"], token["token-id"], token["token-secret"])
            if token.get("expiration"):
                exp = _parse_time(token["expiration"])
                next_expiry = exp if next_expiry is None else min(next_expiry, exp)
        signed = dict(sorted(signed.items()))
        if cm is None or signed != (cm.get("data") or {}):
            new = copy.deepcopy(cm) if cm is not None else {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cluster-info", "namespace": "kube-public"}}
            new["data"] = signed
            self._signing = True
            try:
                self._put(res, new, create_namespace=True)
            finally:
                self._signing = False
        if self._sign_timer is not None:
            self._sign_timer.cancel()
            self._sign_timer = None
        if next_expiry is not None and not self._stopping:
            timer = threading.Timer(max(0.0, (next_expiry - now).total_seconds()) + 0.01, self._resign)
            timer.daemon = True
            self._sign_timer = timer
            self._timers.append(timer)
            timer.start()

    def _resign(self) -> None:
        with self._cond:
            if not self._stopping:
                self._sign_cluster_info()

    def _signer_watch(self, res: Resource, obj: Obj) -> None:
        """What the bootstrap signer reacts to: token Secrets, cluster-info written by others."""
        meta = obj.get("metadata") or {}
        if self._signing:
            return
        if res.plural == "secrets" and meta.get("namespace") == "kube-system" and \
                obj.get("type") == _BOOTSTRAP_TOKEN_TYPE:
            self._sign_cluster_info()
        elif res.plural == "configmaps" and (meta.get("namespace"), meta.get("name")) == ("kube-public",
                                                                                          "cluster-info"):
            self._sign_cluster_info()

    # ---- internals: the kubelet's part (pod and container status, container processes)

    def _container_status(self, p: Obj, c: Obj, *, ephemeral: bool) -> Obj:
        """A container's status as the kubelet reports it once it has tried to start it: running,
        or, for an image whose name contains "invalid", waiting in ImagePullBackOff."""
        image, name = str(c.get("image", "")), str(c.get("name", ""))
        cs: Obj = {"name": name, "state": {}, "lastState": {}, "ready": False, "restartCount": 0,
                   "image": image, "imageID": ""}
        if "invalid" in image:
            cs["state"] = {"waiting": {"reason": "ImagePullBackOff",
                                       "message": _WAITING_MESSAGES["ImagePullBackOff"].format(image=image)}}
            if not ephemeral:
                cs["started"] = False
            return cs
        ref, now = _image_ref(image), rfc3339()
        cs["state"] = {"running": {"startedAt": now}}
        cs["image"] = ref
        cs["imageID"] = f"{ref.rsplit(':', 1)[0]}@sha256:{_hex('img', ref)}"
        cs["containerID"] = f"containerd://{_hex(p['metadata']['uid'], name, _rfc3339nano(_utcnow()))}"
        if not ephemeral:  # ephemeral containers are never ready and have no "started"
            cs["ready"] = True
            cs["started"] = True
        return cs

    def _kubelet_start(self, p: Obj) -> None:
        """A created pod bound to an existing node: the kubelet runs it (caller holds the lock).
        Init containers complete, containers run (or wait in ImagePullBackOff: the pod stays
        Pending); a new resourceVersion and a MODIFIED event, as the kubelet's status update."""
        spec, meta = p.get("spec") or {}, p["metadata"]
        node_name = spec.get("nodeName")
        if (not node_name or ("", node_name) not in self._store["nodes"]
                or (p.get("status") or {}).get("containerStatuses")):
            return
        now = rfc3339()
        init = [self._container_status(p, c, ephemeral=False) for c in spec.get("initContainers") or ()]
        for cs in init:
            running = cs["state"].get("running")
            if running is not None:
                cs["state"] = {"terminated": {"exitCode": 0, "reason": "Completed",
                                              "startedAt": running["startedAt"], "finishedAt": now,
                                              "containerID": cs["containerID"]}}
                cs["started"] = False
        initializing = [cs["name"] for cs in init if "waiting" in cs["state"]]
        if initializing:
            regular = [{"name": c.get("name"), "state": {"waiting": {"reason": "PodInitializing"}},
                        "lastState": {}, "ready": False, "restartCount": 0, "image": c.get("image", ""),
                        "imageID": "", "started": False} for c in spec.get("containers") or ()]
        else:
            regular = [self._container_status(p, c, ephemeral=False) for c in spec.get("containers") or ()]
        not_ready = [cs["name"] for cs in regular if not cs["ready"]]
        host_ip = _node_ip(node_name)
        pod_ip = host_ip if spec.get("hostNetwork") else _pod_ip(meta["namespace"], meta["name"])
        unready = f"containers with unready status: [{' '.join(not_ready)}]" if not_ready else None
        ready_reason = "ContainersNotReady" if not_ready else None
        status: Obj = {
            "phase": "Pending" if any("waiting" in cs["state"] for cs in init + regular) else "Running",
            "conditions": [
                _pod_condition("PodReadyToStartContainers", True, now),
                _pod_condition("Initialized", not initializing, now,
                               "ContainersNotInitialized" if initializing else None,
                               f"containers with incomplete status: [{' '.join(initializing)}]"
                               if initializing else None),
                _pod_condition("Ready", not not_ready, now, ready_reason, unready),
                _pod_condition("ContainersReady", not not_ready, now, ready_reason, unready),
                _pod_condition("PodScheduled", True, now)],
            "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
            "startTime": now}
        if init:
            status["initContainerStatuses"] = init
        status["containerStatuses"] = regular
        status["qosClass"] = (p.get("status") or {}).get("qosClass", "BestEffort")
        p["status"] = status
        self._put(_BY_PLURAL["pods"], p)

    def _ephemeral_containers(self, namespace: str, name: str, req: _Request, dry: bool) -> _Response:
        """``pods/ephemeralcontainers``: GET the pod; PUT a pod / PATCH (strategic merge, merge
        or JSON patch) of which only spec.ephemeralContainers counts. Ephemeral containers can
        only be added; the kubelet then starts the new ones (a second write: their status)."""
        res = _BY_PLURAL["pods"]
        if req.method == "GET":
            with self._lock:
                return _json(200, self._served(res, self._existing(res, namespace, name)))
        if req.method == "PUT":
            body = self._body_object(res, req)
            if body["metadata"].get("name") not in (None, "", name):
                raise _bad_request(f"the name of the object ({body['metadata'].get('name')}) does not match "
                                   f"the name on the URL ({name})")
            patch: Any = None
        elif req.method == "PATCH":
            ctype = req.content_type
            if ctype not in ("application/strategic-merge-patch+json", "application/merge-patch+json",
                             "application/json-patch+json"):
                raise ApiError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - accepted media types "
                               f"include: application/json-patch+json, application/merge-patch+json, "
                               f"application/strategic-merge-patch+json (got {ctype!r})")
            patch, body = req.json(), None
        else:
            raise _method_not_allowed()
        with self._cond:
            cur = self._existing(res, namespace, name)
            if body is not None:
                after, want_rv = body, body["metadata"].get("resourceVersion")
            elif req.content_type == "application/json-patch+json":
                after, want_rv = json_patch(cur, patch), None
            else:
                if not isinstance(patch, dict):
                    raise _bad_request("the patch is not a JSON object")
                strategic = req.content_type.startswith("application/strategic")
                after = strategic_merge_patch(cur, patch) if strategic else merge_patch(cur, patch)
                want_rv = (patch.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != cur["metadata"].get("resourceVersion"):
                raise _conflict(res, name, "the object has been modified; please apply your changes to the "
                                           "latest version and try again")
            ecs = copy.deepcopy((after.get("spec") or {}).get("ephemeralContainers") or [])
            if not isinstance(ecs, list) or not all(isinstance(c, dict) for c in ecs):
                raise _bad_request("spec.ephemeralContainers must be a list of containers")
            before = {c.get("name") for c in (cur.get("spec") or {}).get("ephemeralContainers") or ()}
            added = [c for c in ecs if c.get("name") not in before]
            for c in ecs:  # the patched pod is defaulted as a whole
                _default_ephemeral(c)
            new = copy.deepcopy(cur)
            if ecs:
                new.setdefault("spec", {})["ephemeralContainers"] = ecs
            else:
                new.setdefault("spec", {}).pop("ephemeralContainers", None)
            errors = _validate_ephemeral(cur, new)
            if errors:
                raise _field_invalid(res, name, errors)
            if new == cur or dry:
                return _json(200, self._served(res, new))  # nothing changed (or a dry run): no write
            stored = self._put(res, new)
            out = _json(200, self._served(res, stored))
            self._kubelet_ephemeral(stored, added)
            return out

    def _kubelet_ephemeral(self, p: Obj, added: Sequence[Obj]) -> None:
        """The kubelet starts ephemeral containers added to a pod it runs (caller holds the lock)."""
        phase = (p.get("status") or {}).get("phase")
        if not added or not (p.get("spec") or {}).get("nodeName") or phase in ("Succeeded", "Failed"):
            return
        statuses = p.setdefault("status", {}).setdefault("ephemeralContainerStatuses", [])
        statuses += [self._container_status(p, c, ephemeral=True) for c in added]
        p["metadata"]["resourceVersion"] = self._next_rv()
        self._event("MODIFIED", _BY_PLURAL["pods"], p)

    def _stream(self, namespace: str, name: str, sub: str, req: _Request) -> _Response | _Upgrade:
        """``pods/attach`` and ``pods/exec``: the API server's checks (a container of the pod, a
        node), the container running (else 400), then a WebSocket upgrade; anything else (no
        upgrade, or SPDY) is answered as by a server that does not speak it: 400 "Upgrade
        request required"."""
        q = req.query
        opts = _StreamOptions(*(_parse_bool(q.get(k)) for k in ("stdin", "stdout", "stderr", "tty")))
        command = [v for k, v in req.params if k == "command"]
        with self._cond:
            p = self._existing(_BY_PLURAL["pods"], namespace, name)
            container, spec_c = self._stream_container(p, q.get("container", ""))
            if not (opts.stdin or opts.stdout or opts.stderr):
                raise _bad_request("you must specify at least 1 of stdin, stdout, stderr")
            if sub == "exec" and not command:
                raise _bad_request("you must specify at least 1 command")
            self._check_running(p, container)
            handshake = self._websocket_handshake(req)
            if isinstance(handshake, _Response):
                return handshake
            protocol, accept = handshake
            uid = p["metadata"]["uid"]
            if sub == "attach":
                proc, failure = self._main_process(p, spec_c, opts.tty)

                def attach_status(code: int) -> Obj:
                    if self.attach_reports_exit_code:
                        return _exit_status(code, protocol, None)
                    return {"metadata": {}, "status": "Success"}  # what the kubelet's attach always says

                def run_attach(sock: socket.socket) -> None:
                    _WsSession(sock, protocol, opts, proc, attach_status, failure=failure,
                               stopping=lambda: self._stopping).run()

                return _Upgrade(protocol, accept, run_attach)

        def run_exec(sock: socket.socket) -> None:
            with self._cond:
                proc, failure = self._exec_process(p, uid, spec_c, command, opts.tty)
            _WsSession(sock, protocol, opts, proc, lambda code: _exit_status(code, protocol, command),
                       failure=failure, on_detach=proc.kill if proc is not None else None,
                       stopping=lambda: self._stopping).run()

        return _Upgrade(protocol, accept, run_exec)

    @staticmethod
    def _stream_container(p: Obj, container: str) -> tuple[str, Obj]:
        """The container an attach/exec names (the only one when none is named), as the API
        server checks it (pod strategy streamLocation)."""
        spec, name = p.get("spec") or {}, p["metadata"]["name"]
        lists = {k: list(spec.get(k) or ()) for k in ("containers", "initContainers", "ephemeralContainers")}
        names = [c.get("name") for c in lists["containers"]]
        if not container:
            if len(names) == 1:
                container = str(names[0])
            elif not names:
                raise _bad_request(f"a container name must be specified for pod {name}")
            else:
                init = [c.get("name") for c in lists["initContainers"]]
                msg = f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
                if init:
                    msg += f" or one of the init containers: [{' '.join(init)}]"
                raise _bad_request(msg)
        found = next((c for cs in lists.values() for c in cs if c.get("name") == container), None)
        if found is None:
            raise _bad_request(f"container {container} is not valid for pod {name}")
        if not spec.get("nodeName"):
            raise _bad_request(f"pod {name} does not have a host assigned")
        return container, found

    @staticmethod
    def _check_running(p: Obj, container: str) -> None:
        name = p["metadata"]["name"]
        cs = next((c for _, c in _all_container_statuses(p) if c.get("name") == container), None)
        state = (cs or {}).get("state") or {}
        if "running" in state:
            return
        if "terminated" in state:
            raise _bad_request(f"container {container} in pod {name} is terminated")
        reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
        raise _bad_request(f"container {container} in pod {name} is waiting to start: {reason}")

    @staticmethod
    def _websocket_handshake(req: _Request) -> tuple[str, str] | _Response:
        """(subprotocol, Sec-WebSocket-Accept) of a WebSocket upgrade request (RFC 6455 4.2)."""
        h = req.headers
        if h.get("upgrade", "").strip().lower() != "websocket" or \
                "upgrade" not in [t.strip() for t in h.get("connection", "").lower().split(",")]:
            # not an upgrade, or to SPDY/3.1 (kubectl < 1.30): a server that does not speak the
            # protocol asked for ignores the Upgrade header, as the API server answers then
            raise _bad_request("Upgrade request required")
        key = h.get("sec-websocket-key", "").strip()
        if not key or h.get("sec-websocket-version", "").strip() != "13":
            return _Response(400, b"Bad Request\n", "text/plain; charset=utf-8")
        offered = [p.strip() for p in h.get("sec-websocket-protocol", "").split(",") if p.strip()]
        protocol = _negotiate(offered)
        if protocol is None:
            return _Response(403, b"", "text/plain; charset=utf-8")
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode("ascii")).digest()).decode("ascii")
        return protocol, accept

    def _busybox_bin(self) -> Path:
        """A directory of busybox applet links: the PATH of container processes (caller holds
        the lock)."""
        bindir = self.workdir / "busybox-bin"
        if not (bindir / "sh").exists():
            if not Path(self.busybox).is_file():
                raise ApiError(500, "InternalError", f"the emulator runs container processes with busybox: "
                                                     f"{self.busybox} is missing (package busybox-static)")
            bindir.mkdir(parents=True, exist_ok=True)
            applets = subprocess.run([self.busybox, "--list"], capture_output=True, text=True, timeout=30,
                                     check=True).stdout.split()
            for applet in applets:
                link = bindir / applet
                if not link.exists():
                    link.symlink_to(self.busybox)
        return bindir

    def _container_env(self, p: Obj, c: Obj, uid: str, tty: bool) -> tuple[Path, dict[str, str]]:
        """(working directory, environment) of a container's processes (caller holds the lock):
        a fresh directory under the workdir per container, HOME there, PATH the busybox applets,
        the container's literal env values."""
        meta = p["metadata"]
        key = (uid, str(c.get("name")))
        cwd = self._container_dirs.get(key)
        if cwd is None:
            root = self.workdir / "containers"
            root.mkdir(parents=True, exist_ok=True)
            prefix = f"{meta['namespace']}.{meta['name']}.{c.get('name')}."
            cwd = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
            self._container_dirs[key] = cwd
        env = {"PATH": str(self._busybox_bin()), "HOME": str(cwd), "HOSTNAME": str(meta["name"])}
        if tty:
            env["TERM"] = "xterm"
        for e in c.get("env") or ():
            if isinstance(e, dict) and e.get("name") and "value" in e:
                env[str(e["name"])] = str(e["value"])
        return cwd, env

    def _main_process(self, p: Obj, c: Obj, tty: bool) -> tuple[_Process | None, Obj | None]:
        """A container's main process, started by its first attach (caller holds the lock): the
        container's command and args if any (busybox applets), else ``sh``; with a pty when the
        container or this first attach asks for a TTY. (None, the Status) when it cannot start."""
        meta, cname = p["metadata"], str(c.get("name"))
        key = (meta["uid"], cname)
        proc = self._procs.get(key)
        if proc is not None and proc.exit_code is None:
            return proc, None
        argv = list(c.get("command") or ()) + list(c.get("args") or ()) or ["sh"]
        tty = bool(c.get("tty")) or tty
        cwd, env = self._container_env(p, c, meta["uid"], tty)
        prog = self._busybox_bin() / argv[0].rsplit("/", 1)[-1]
        if not prog.exists():
            msg = (f'error attaching to container: failed to start container "{cname}": exec: "{argv[0]}": '
                   f"executable file not found in $PATH")
            return None, {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {msg}",
                          "reason": "InternalError", "details": {"causes": [{"message": msg}]}, "code": 500}
        ns, pod = meta["namespace"], meta["name"]
        def to_log(data: bytes) -> None:  # what a container writes is in its log
            self.append_log(ns, pod, data.decode("utf-8", "replace"), cname)

        proc = _Process([str(prog), *argv[1:]], cwd, env, tty, str(self._busybox_bin() / "setsid"),
                        on_output=to_log,
                        on_exit=lambda code: self._container_exited(ns, pod, key[0], cname, code))
        proc.pod_uid = meta["uid"]
        self._procs[key] = proc
        return proc, None

    def _exec_process(self, p: Obj, uid: str, c: Obj, command: Sequence[str],
                      tty: bool) -> tuple[_Process | None, Obj | None]:
        """An exec's process in the container's directory (caller holds the lock); (None, the
        Status) when its program is no busybox applet, as containerd/runc answer."""
        cwd, env = self._container_env(p, c, uid, tty)
        prog = self._busybox_bin() / command[0].rsplit("/", 1)[-1]
        if self._stopping or not prog.exists():
            msg = (f'error executing command in container: failed to exec in container: failed to start exec '
                   f'"{_hex("exec", uid, *command)}": OCI runtime exec failed: exec failed: unable to start '
                   f'container process: exec: "{command[0]}": executable file not found in $PATH: unknown')
            return None, {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {msg}",
                          "reason": "InternalError", "details": {"causes": [{"message": msg}]}, "code": 500}

        def done(code: int) -> None:
            with self._lock:
                self._execs.discard(proc)

        proc = _Process([str(prog), *command[1:]], cwd, env, tty, str(self._busybox_bin() / "setsid"),
                        on_output=None, on_exit=done)
        proc.pod_uid = uid
        self._execs.add(proc)
        return proc, None

    def _container_exited(self, namespace: str, name: str, uid: str, container: str, code: int) -> None:
        """A container's main process ended: the container is terminated (Completed or Error);
        a pod whose containers all ended and are not restarted (restartPolicy Never, or
        OnFailure and all succeeded) ends Succeeded or Failed."""
        with self._cond:
            self._procs.pop((uid, container), None)
            p = self._store["pods"].get((namespace, name))
            if p is None or p["metadata"]["uid"] != uid:
                return
            found = next(((k, cs) for k, cs in _all_container_statuses(p) if cs.get("name") == container),
                         None)
            if found is None:
                return
            key, cs = found
            now = rfc3339()
            term: Obj = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                         "startedAt": ((cs.get("state") or {}).get("running") or {}).get("startedAt", now),
                         "finishedAt": now}
            if cs.get("containerID"):
                term["containerID"] = cs["containerID"]
            cs["state"] = {"terminated": term}
            cs["ready"] = False
            if "started" in cs:
                cs["started"] = False
            if key == "containerStatuses":
                self._containers_changed(p, now)
            p["metadata"]["resourceVersion"] = self._next_rv()
            self._event("MODIFIED", _BY_PLURAL["pods"], p)

    @staticmethod
    def _containers_changed(p: Obj, now: str) -> None:
        status, spec = p["status"], p.get("spec") or {}
        statuses = status.get("containerStatuses") or []
        not_ready = [cs.get("name") for cs in statuses if not cs.get("ready")]
        codes = [((cs.get("state") or {}).get("terminated") or {}).get("exitCode") for cs in statuses]
        policy = spec.get("restartPolicy", "Always")
        if statuses and None not in codes and (policy == "Never"
                                               or (policy == "OnFailure" and not any(codes))):
            status["phase"] = "Succeeded" if not any(codes) else "Failed"
        terminal = status.get("phase") in ("Succeeded", "Failed")
        for cond in status.get("conditions") or ():
            if cond.get("type") in ("Ready", "ContainersReady"):
                ok = not not_ready
                if (cond.get("status") == "True") != ok:
                    cond["lastTransitionTime"] = now
                cond["status"] = "True" if ok else "False"
                cond.pop("message", None)
                cond.pop("reason", None)
                if not ok:
                    cond["reason"] = "PodCompleted" if terminal else "ContainersNotReady"
                    if not terminal:
                        cond["message"] = f"containers with unready status: [{' '.join(map(str, not_ready))}]"
            elif cond.get("type") == "PodReadyToStartContainers" and terminal:
                cond["status"], cond["lastTransitionTime"] = "False", now

    def _kill_pod_processes(self, uid: str) -> None:
        """A deleted pod's containers are killed (caller holds the lock)."""
        for proc in [*self._procs.values(), *self._execs]:
            if proc.pod_uid == uid:
                proc.kill()

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

    def _handle(self, req: _Request) -> _Response | _Stream | _Upgrade:
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
            if res.plural == "pods" and sub == "ephemeralcontainers":
                return self._ephemeral_containers(namespace or "default", name, req, dry)
            if res.plural == "pods" and sub in ("attach", "exec"):
                if req.method not in ("GET", "POST"):
                    raise _method_not_allowed()
                return self._stream(namespace or "default", name, sub, req)
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
                resources.append({"name": "pods/attach", "singularName": "", "namespaced": True,
                                  "kind": "PodAttachOptions", "verbs": ["create", "get"]})
                resources.append({"name": "pods/ephemeralcontainers", "singularName": "", "namespaced": True,
                                  "kind": "Pod", "verbs": ["get", "patch", "update"]})
                resources.append({"name": "pods/eviction", "singularName": "", "namespaced": True,
                                  "group": "policy", "version": "v1", "kind": "Eviction",
                                  "verbs": ["create"]})
                resources.append({"name": "pods/exec", "singularName": "", "namespaced": True,
                                  "kind": "PodExecOptions", "verbs": ["create", "get"]})
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
        if req.content_type == _PROTOBUF:
            # kubectl >= 1.33's typed commands (`kubectl create namespace X`, `kubectl debug
            # node/N`) send protobuf: decoded for the kinds and fields in _PB_MESSAGES
            try:
                body: Any = _protobuf_object(req.body)
            except (_ProtobufError, IndexError, UnicodeDecodeError) as e:
                raise ApiError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - the emulator decodes "
                               f"protobuf only for some fields of Pod, Namespace, ConfigMap and Secret, not "
                               f"{e}; send application/json") from e
        elif req.content_type not in ("", "application/json", "application/yaml"):
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types "
                           f"include: application/json, application/yaml (got {req.content_type!r})")
        else:
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
        stored = self._put(res, body)
        out = _json(201, self._served(res, stored))
        if res.plural == "pods":
            self._kubelet_start(stored)  # what the kubelet reports next, when the pod is on a node
        return out

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
        if spec.get("ephemeralContainers"):
            raise _field_invalid(_BY_PLURAL["pods"], body["metadata"]["name"], [
                _field_error("Forbidden", "spec.ephemeralContainers", detail="cannot be set on create")])
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
            spec = p.get("spec") or {}
            names = [c["name"] for c in spec.get("containers") or ()]
            init_names = [c["name"] for c in spec.get("initContainers") or ()]
            ephemeral_names = [c["name"] for c in spec.get("ephemeralContainers") or ()]
            container = q.get("container", "")
            if not container:
                if len(names) == 1:
                    container = names[0]
                elif not names:
                    raise _bad_request(f"a container name must be specified for pod {name}")
                else:
                    raise _bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                       f"[{' '.join(init_names + names)}]")
            elif container not in names and container not in init_names and container not in ephemeral_names:
                raise _bad_request(f"container {container} is not valid for pod {name}")
            if not spec.get("nodeName"):
                return _Response(200, b"", "text/plain")
            previous = q.get("previous") in ("true", "1")
            cstatus = next((c for _, c in _all_container_statuses(p) if c.get("name") == container), None)
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
                        or p["metadata"]["uid"] != uid
                        or any(cs.get("name") == container and "terminated" in (cs.get("state") or {})
                               for _, cs in _all_container_statuses(p)))  # the container ended
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
