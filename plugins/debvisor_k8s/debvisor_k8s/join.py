"""`k8s join`: this host joins a Kubernetes cluster as a worker, the Kubernetes half of the
old `debvisor-join.sh --mode=k8s`.

Before the token leaves this host, the API server is identified the way kubeadm does it:
the public ``kube-public/cluster-info`` ConfigMap is fetched anonymously, the CA in it must
hash (SHA-256 of its SubjectPublicKeyInfo) to ``--ca-hash``, and the ConfigMap's detached
JWS for the token's id must verify with the token's secret (which proves the server knows
the token; the bootstrap signer removes the signature of an expired token). Only then is
the token sent, over TLS pinned to that CA, to see whether the node name is free.

The join itself goes through a driver (``kubeadm``, run as ``kubeadm join --config FILE``:
the token is in an owner-only file that is removed afterwards, never on a command line).
The token is never journalled: resuming a join asks for it again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import re
import shutil
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debvisor_core import log
from debvisor_core.errors import BadInput, PreflightRefused, StepFailed
from debvisor_core.model import Finding, Step

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context

TOKEN_RE = re.compile(r"([a-z0-9]{6})\.([a-z0-9]{16})")
CA_HASH_RE = r"sha256:[0-9a-f]{64}"
CLUSTER_INFO = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
#: label prefixes a joining kubelet may set on its own node (NodeRestriction)
KUBELET_PREFIXES = ("kubelet.kubernetes.io/", "node.kubernetes.io/")


def split_endpoint(api: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; port 6443 when absent) of ``--api``."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?|([A-Za-z0-9.-]+)(?::(\d{1,5}))?",
                     api.removeprefix("https://").rstrip("/"))
    if not m:
        raise BadInput(f"--api {api[:80]!r} is not HOST[:PORT] of the API server")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4) or 6443)
    if not 0 < port < 65536:
        raise BadInput(f"--api {api[:80]!r}: the port must be 1-65535")
    return host, port


def parse_token(text: str) -> tuple[str, str]:
    """(id, secret) of a bootstrap token ``[a-z0-9]{6}.[a-z0-9]{16}``; never echoed."""
    m = TOKEN_RE.fullmatch(text.strip())
    if not m:
        raise BadInput("the join token is not a bootstrap token (six and sixteen lower-case "
                       "letters or digits: abcdef.0123456789abcdef)")
    return m.group(1), m.group(2)


def spki_hash(ca_pem: bytes) -> str:
    """kubeadm's ``--discovery-token-ca-cert-hash`` of a CA certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws_valid(content: str, jws: str, token_id: str, secret: str) -> bool:
    """Whether ``jws`` (detached, ``header..signature``) signs ``content`` with HS256 under
    the token's secret and names the token id (k8s.io/cluster-bootstrap/token/jws)."""
    parts = jws.split(".")
    if len(parts) != 3 or parts[1]:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256" or \
            header.get("kid") != token_id:
        return False
    signing_input = f"{parts[0]}.{_b64url(content.encode())}".encode()
    mac = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return hmac.compare_digest(_b64url(mac), parts[2])


def _request(host: str, port: int, path: str, *, ca_pem: bytes | None,
             token: str | None = None, method: str = "GET",
             timeout: float = 15) -> tuple[int, dict[str, Any]]:
    """One request to the API server: unverified TLS when ``ca_pem`` is None (discovery),
    else verified against that CA only."""
    if ca_pem is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cadata=ca_pem.decode())
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    except ssl.SSLCertVerificationError as exc:
        raise PreflightRefused(f"the API server at {host}:{port} does not present a "
                               f"certificate of the pinned CA: {exc.verify_message}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise PreflightRefused(f"cannot reach the Kubernetes API at {host}:{port}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
    finally:
        conn.close()
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        data = {}
    return resp.status, data if isinstance(data, dict) else {}


@dataclass
class Discovery:
    """What the preflight established about the cluster."""

    host: str
    port: int
    ca_pem: bytes
    server: str


def discover(api: str, ca_hash: str, token: str) -> Discovery:
    """kubeadm's token discovery: the CA pinned by ``ca_hash``, the token proven known to
    the server by its JWS, before the token is sent anywhere."""
    import yaml

    host, port = split_endpoint(api)
    token_id, secret = parse_token(token)
    status, cm = _request(host, port, CLUSTER_INFO, ca_pem=None)
    if status != 200:
        raise PreflightRefused(f"the API server at {host}:{port} has no readable "
                               f"kube-public/cluster-info (HTTP {status}: "
                               f"{cm.get('message') or 'no message'}): is it a kubeadm cluster "
                               f"that allows token discovery?")
    data = cm.get("data") or {}
    try:
        kubeconfig = yaml.safe_load(str(data.get("kubeconfig") or "")) or {}
        cluster = kubeconfig["clusters"][0]["cluster"]
        ca_pem = base64.b64decode(cluster["certificate-authority-data"])
        got = spki_hash(ca_pem)
    except (KeyError, IndexError, TypeError, ValueError, yaml.YAMLError):
        raise PreflightRefused(f"kube-public/cluster-info at {host}:{port} holds no usable "
                               f"kubeconfig with a CA") from None
    if not hmac.compare_digest(got, ca_hash):
        raise PreflightRefused(f"the API server at {host}:{port} is not the cluster --ca-hash "
                               f"names: its CA hashes to {got}; the token was not sent")
    jws = data.get(f"jws-kubeconfig-{token_id}")
    if not jws:
        raise PreflightRefused(f"token {token_id} is not valid on this cluster: cluster-info "
                               f"has no signature for it (unknown or expired; create one with "
                               f"`kubeadm token create`)")
    if not jws_valid(str(data["kubeconfig"]), str(jws), token_id, secret):
        raise PreflightRefused(f"the secret of token {token_id} is wrong: its signature of "
                               f"cluster-info does not verify")
    return Discovery(host, port, ca_pem, str(cluster.get("server") or f"https://{api}"))


def node_seen(d: Discovery, token: str, node: str) -> dict[str, Any] | None:
    """The Node object named ``node`` as the token sees it (None: no such node)."""
    status, body = _request(d.host, d.port, f"/api/v1/nodes/{node}", ca_pem=d.ca_pem,
                            token=token)
    if status == 404:
        return None
    if status == 401:
        raise PreflightRefused("the API server rejected the join token (expired or deleted "
                               "since cluster-info was signed)")
    if status != 200:
        raise PreflightRefused(f"reading node {node} with the join token: HTTP {status} "
                               f"{body.get('message') or ''}".rstrip())
    return body


def restricted_labels(labels: dict[str, str | None]) -> list[str]:
    """Labels a kubelet may not set on its own node (NodeRestriction refuses them)."""
    out = []
    for key in labels:
        prefix = key.split("/", 1)[0] if "/" in key else ""
        if (prefix.endswith(("kubernetes.io", "k8s.io"))
                and not key.startswith(KUBELET_PREFIXES)):
            out.append(key)
    return out


# -- the driver ----------------------------------------------------------------------------
@dataclass
class Kubeadm:
    """The ``kubeadm`` driver: ``join --config FILE`` and ``reset --force``."""

    path: str
    kubelet_conf: Path

    @classmethod
    def of(cls, ctx: Context) -> Kubeadm:
        from debvisor_core.settings import Section

        s = Section.of(ctx, "k8s")
        return cls(s.string("kubeadm") or "kubeadm",
                   Path(s.string("kubelet_conf") or "/etc/kubernetes/kubelet.conf"))

    def binary(self) -> str:
        found = shutil.which(self.path)
        if found is None:
            raise PreflightRefused(f"kubeadm is not installed on this node ({self.path} not "
                                   f"found): install kubeadm and kubelet from pkgs.k8s.io to "
                                   f"join a Kubernetes cluster")
        return found

    def joined(self) -> bool:
        return self.kubelet_conf.exists()

    def version(self) -> tuple[int, int]:
        out = self._run(["version", "-o", "short"], timeout=30).stdout.strip()
        m = re.match(r"v?(\d+)\.(\d+)", out)
        if not m:
            raise StepFailed(f"kubeadm version said {out[:80]!r}, not a version")
        return int(m.group(1)), int(m.group(2))

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            res = subprocess.run([self.binary(), *args], capture_output=True, text=True,  # noqa: S603
                                 timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"kubeadm {args[0]} did not finish within {timeout:g}s") from None
        if res.returncode != 0:
            tail = " ".join((res.stderr or res.stdout).strip().splitlines()[-3:])[:400]
            raise StepFailed(f"kubeadm {args[0]} failed (exit {res.returncode}): {tail}")
        return res

    def join(self, config: dict[str, Any], timeout: float) -> None:
        import yaml

        from debvisor_core.secrets import write_secret

        tmp = tempfile.mkdtemp(prefix="debvisor-join-")  # 0700
        path = Path(tmp) / "join.yaml"
        try:
            write_secret(path, yaml.safe_dump(config).encode(), "kubeadm join configuration")
            self._run(["join", "--config", str(path)], timeout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def reset(self, timeout: float) -> None:
        self._run(["reset", "--force"], timeout)


def join_configuration(version: tuple[int, int], d: Discovery, token: str, ca_hash: str,
                       node: str, labels: dict[str, str | None],
                       taints: list[dict[str, str]], timeout: float) -> dict[str, Any]:
    """kubeadm's JoinConfiguration (v1beta4 from 1.31, else v1beta3)."""
    node_labels = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if v is not None)
    reg: dict[str, Any] = {"name": node, "taints": [dict(t) for t in taints]}
    v4 = version >= (1, 31)
    if node_labels:
        reg["kubeletExtraArgs"] = ([{"name": "node-labels", "value": node_labels}] if v4
                                   else {"node-labels": node_labels})
    discovery: dict[str, Any] = {"bootstrapToken": {"apiServerEndpoint": f"{d.host}:{d.port}",
                                                    "token": token,
                                                    "caCertHashes": [ca_hash]}}
    conf: dict[str, Any] = {"apiVersion": f"kubeadm.k8s.io/{'v1beta4' if v4 else 'v1beta3'}",
                            "kind": "JoinConfiguration", "discovery": discovery,
                            "nodeRegistration": reg}
    if v4:
        conf["timeouts"] = {"discovery": f"{int(timeout)}s"}
    else:
        discovery["timeout"] = f"{int(timeout)}s"
    return conf


def _matches(node: dict[str, Any], labels: dict[str, str | None],
             taints: list[dict[str, str]]) -> list[str]:
    """What differs between the node and the wanted labels and taints."""
    have = (node.get("metadata") or {}).get("labels") or {}
    wrong = [f"label {k}" for k, v in labels.items() if have.get(k) != v]
    current = {(t.get("key"), t.get("value") or "", t.get("effect"))
               for t in (node.get("spec") or {}).get("taints") or []}
    wrong += [f"taint {t['key']}:{t['effect']}" for t in taints
              if (t["key"], t.get("value") or "", t["effect"]) not in current]
    return wrong


def _ready(node: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


@dataclass
class KubeadmJoin(Step):
    """Join this host to the cluster with kubeadm, then wait until its Node is registered
    and Ready with the labels and taints asked for. Undo: delete the Node object (with the
    node's own credentials) and ``kubeadm reset``."""

    TYPE = "k8s.kubeadm-join"
    NAME = "KubeadmJoin"
    DESTRUCTIVE = True
    api: str
    ca_hash: str
    node: str
    labels: dict[str, str | None] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    timeout_s: float = 300.0
    #: the bootstrap token: a secret, never journalled (not an init field)
    token: str = field(default="", init=False, repr=False, compare=False)

    def describe(self, ctx: Context) -> str:
        extra = []
        if self.labels:
            extra.append("labels " + ",".join(f"{k}={v}" for k, v in sorted(self.labels.items())))
        if self.taints:
            from .labels import taint_text

            extra.append("taints " + ",".join(taint_text(t) for t in self.taints))
        more = f" ({'; '.join(extra)})" if extra else ""
        return f"kubeadm join {self.api} as node {self.node}{more}, wait until it is Ready"

    def check(self, ctx: Context) -> list[Finding] | None:
        Kubeadm.of(ctx).binary()
        return None

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        return {"joined_before": Kubeadm.of(ctx).joined()}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        if not self.token:
            raise StepFailed("the join token is not kept in the journal (it is a secret): run "
                             "`k8s join` again with --token-file")
        drv = Kubeadm.of(ctx)
        d = discover(self.api, self.ca_hash, self.token)  # again: what the plan saw may be old
        conf = join_configuration(drv.version(), d, self.token, self.ca_hash, self.node,
                                  self.labels, self.taints, self.timeout_s)
        log.info(f"kubeadm join {d.host}:{d.port} as {self.node}")
        drv.join(conf, self.timeout_s)
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        d = discover(self.api, self.ca_hash, self.token)
        deadline = time.monotonic() + self.timeout_s
        while True:
            node = node_seen(d, self.token, self.node)
            if node is not None and _ready(node) and not _matches(node, self.labels, self.taints):
                log.info(f"node {self.node} is registered and Ready")
                return
            if time.monotonic() > deadline:
                why = ("is not registered" if node is None else "is not Ready" if not _ready(node)
                       else "lacks " + ", ".join(_matches(node, self.labels, self.taints)))
                raise StepFailed(f"node {self.node} {why} {self.timeout_s:g}s after the join")
            time.sleep(1)

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        drv = Kubeadm.of(ctx)
        if record.get("joined_before"):
            log.warn("this host had joined before the step: leaving it joined")
            return
        problem = None
        if drv.joined():
            try:
                _delete_own_node(drv.kubelet_conf, self.node)
            except Exception as exc:  # noqa: BLE001 - reset anyway, then report it
                problem = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        drv.reset(self.timeout_s)
        if problem:
            raise StepFailed(f"kubeadm reset done, but node {self.node} could not be deleted "
                             f"from the cluster: {problem[:300]}; delete it with `kubectl "
                             f"delete node {self.node}`")


def _delete_own_node(kubelet_conf: Path, node: str) -> None:
    """Delete the Node object with the kubelet's own credentials (a node may delete
    itself); a node already gone is fine."""
    from .client import Api, ApiError, Settings
    from .steps import node_path

    try:
        Api(settings=Settings(str(kubelet_conf), None, 30.0)).call("DELETE", node_path(node))
    except ApiError as exc:
        if exc.status != 404:
            raise
    log.info(f"node {node} deleted from the cluster")


def plan(ctx: Context, params: dict[str, Any]) -> Any:
    """Preflight (CA pinned, token proven, name free or this host's), then the join."""
    from debvisor_core.actions import Unchanged
    from debvisor_core.model import Operation

    from .client import Settings, check_name
    from .labels import parse_labels, parse_taints

    token = str(params["token"]).strip()
    parse_token(token)
    labels = parse_labels(params["labels"]) if params["labels"] else {}
    if any(v is None for v in labels.values()):
        raise BadInput("a joining node can only set labels (key=value), not remove them")
    add, remove = parse_taints(params["taints"]) if params["taints"] else ([], [])
    if remove:
        raise BadInput("a joining node can only add taints (key[=value]:Effect)")
    bad = restricted_labels(labels)
    if bad:
        raise BadInput(f"a joining kubelet may not set {', '.join(bad)} on its own node "
                       f"(NodeRestriction): set it after the join with `k8s label`")
    node = check_name("node name", params["node_name"] or Settings.of(ctx).this_node())
    drv = Kubeadm.of(ctx)
    d = discover(params["api"], params["ca_hash"], token)
    seen = node_seen(d, token, node)
    if seen is not None:
        if not drv.joined():
            raise PreflightRefused(f"node name {node} is already used in the cluster (by "
                                   f"another machine?): choose another with --node-name")
        wrong = _matches(seen, labels, add)
        if wrong:
            raise PreflightRefused(f"this host has already joined as {node}, but the node "
                                   f"lacks {', '.join(wrong)}: set them with `k8s label` / "
                                   f"`k8s taint` (an admin kubeconfig)")
        raise Unchanged({"status": "unchanged", "node": node},
                        f"this host has already joined the cluster as node {node}")
    if drv.joined():
        raise PreflightRefused(f"this host has a kubelet configuration ({drv.kubelet_conf}) "
                               f"but the cluster has no node {node}: it belongs to another "
                               f"cluster or an old join; `kubeadm reset` first")
    step = KubeadmJoin(params["api"], params["ca_hash"], node, labels, add,
                       timeout_s=float(params["timeout"]))
    step.token = token
    return Operation(kind="k8s.join", title=f"join {d.host}:{d.port} as {node}",
                     steps=[step], target={"api": params["api"]},
                     params={"api": params["api"], "node": node})


def contributed(ctx: Context) -> list[Step] | None:
    """`debvisor join --mode k8s|all`: the join of ``[k8s.join]`` (api, token_file, ca_hash,
    node_name, labels, taints, timeout), planned with its preflight; None without that table
    or when this host has already joined."""
    from debvisor_core.actions import plan_from_config
    from debvisor_core.settings import Section

    table = Section.of(ctx, "k8s").table("join")
    if not table:
        return None
    from .actions import ACTIONS

    action = next(a for a in ACTIONS if a.path == "k8s.join")
    op = plan_from_config(ctx, action, table, "[k8s.join]")
    return list(op.steps) if op is not None else None
