"""The Kubernetes API client: kubeconfig from ``[k8s] kubeconfig``, ``KUBECONFIG``,
``~/.kube/config`` or the in-cluster service account, in that order.

The official ``kubernetes`` client is imported here, when a command talks to the API (not
by ``k8s --help``). Reads ask for raw JSON (``_preload_content=False``): the results are
JSON anyway, and the client's model classes would cost more than the request.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debvisor_core.errors import BadInput, DebvisorError
from debvisor_core.settings import Section

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
#: DNS-1123 label (namespaces, containers) and subdomain (nodes, pods): what Kubernetes
#: itself accepts as names, and nothing that could walk the API's URL space ("..", "/", "?")
LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
SUBDOMAIN = rf"(?=.{{1,253}}$){LABEL}(\.{LABEL})*"


def check_name(what: str, value: str, pattern: str = SUBDOMAIN) -> str:
    """``value`` if it is a valid Kubernetes name, else one sentence (exit 2)."""
    import re

    if not re.fullmatch(pattern, value):
        raise BadInput(f"{what} {value[:80]!r} is not a valid Kubernetes name (lower-case "
                       f"letters, digits, '-'{', ' + repr('.') if pattern == SUBDOMAIN else ''})")
    return value


class ApiError(DebvisorError):
    """The API server answered with an error (one sentence: HTTP status and its message)."""

    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"Kubernetes API: {message or reason} (HTTP {status})")
        self.status = status
        self.reason = reason
        self.body = body


@dataclass
class Settings:
    """``[k8s]``: kubeconfig, context, request_timeout (seconds)."""

    kubeconfig: str | None
    context: str | None
    request_timeout: float
    node_name: str | None = None

    @classmethod
    def of(cls, ctx: Context) -> Settings:
        s = Section.of(ctx, "k8s")
        return cls(kubeconfig=s.string("kubeconfig"), context=s.string("context"),
                   request_timeout=s.number("request_timeout", 30, minimum=0.1,
                                            unit="seconds"),
                   node_name=s.string("node_name"))

    def this_node(self) -> str:
        """This host's Kubernetes node name: [k8s] node_name, else the short host name."""
        import socket

        return check_name("[k8s] node_name", self.node_name or
                          socket.gethostname().split(".")[0].lower())


#: metadata fields the API server owns: never applied, never part of a diff
SERVER_OWNED = frozenset({"uid", "resourceVersion", "generation", "creationTimestamp",
                          "managedFields", "selfLink"})


def group_path(group_version: str) -> str:
    """``/api/v1`` for the core group, ``/apis/GROUP/VERSION`` for the others."""
    return f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"


def default_namespace(settings: Settings) -> str:
    """The kubeconfig context's namespace, else ``default``."""
    from kubernetes.config import list_kube_config_contexts

    files = existing(kubeconfig_paths(settings))
    if not files:
        return "default"
    try:
        contexts, current = list_kube_config_contexts(os.pathsep.join(map(str, files)))
    except Exception:  # noqa: BLE001 - the client already read it; a namespace is a nicety
        return "default"
    wanted = settings.context or first_current_context(files)
    chosen = next((c for c in contexts if c.get("name") == wanted), current) \
        if wanted else current
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def kubeconfig_paths(settings: Settings) -> list[Path] | None:
    """The kubeconfig file(s) in effect, or None for in-cluster: ``[k8s] kubeconfig``, else
    every file of ``KUBECONFIG`` (``:``-separated, merged as kubectl does), else
    ``~/.kube/config``."""
    if settings.kubeconfig:
        return [Path(settings.kubeconfig).expanduser()]
    env = os.environ.get("KUBECONFIG")
    if env and any(env.split(os.pathsep)):
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    home = Path("~/.kube/config").expanduser()
    if home.exists() or not IN_CLUSTER_TOKEN.exists():
        return [home]
    return None


def existing(paths: list[Path] | None) -> list[Path]:
    """The files of a kubeconfig list that exist (kubectl skips the others)."""
    return [p for p in paths or [] if p.is_file()]


def first_current_context(files: list[Path]) -> str | None:
    """kubectl's rule for a list of kubeconfigs: the first file that sets current-context
    wins (the Python client's merger lets the last one win)."""
    import yaml

    for f in files:
        try:
            doc = yaml.safe_load(f.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict) and doc.get("current-context"):
            return str(doc["current-context"])
    return None


class Api:
    """One API server: ``get``/``post``/``patch``/``delete`` of paths, JSON in and out."""

    def __init__(self, ctx: Context | None = None, settings: Settings | None = None) -> None:
        """The API server of ``ctx``'s ``[k8s]`` settings, or of explicit ``settings`` (a
        kubelet's own kubeconfig, for instance)."""
        if settings is None:
            assert ctx is not None
            settings = Settings.of(ctx)
        self.settings = settings
        self.timeout = self.settings.request_timeout
        self.client = _client(self.settings)
        #: group/version -> kind -> {name, namespaced} (:meth:`resources`)
        self.discovery: dict[str, dict[str, dict[str, Any]]] = {}

    def call(self, method: str, path: str, *, query: dict[str, Any] | None = None,
             body: Any = None, content_type: str = "application/json",
             timeout: float | None = None, stream: bool = False) -> Any:
        """One request; JSON (or text, or the raw response with ``stream``) back."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": "application/json, */*", "Content-Type": content_type}
        # a stream (logs -f) may be quiet for long: no read timeout, only the connect one
        limit = (self.timeout, None) if stream else (timeout or self.timeout)
        try:
            req = self.client.param_serialize(method, path, query_params=params,
                                              header_params=headers, body=body,
                                              auth_settings=["BearerToken"])
            resp = self.client.call_api(*req, _request_timeout=limit)
            if not 200 <= resp.status <= 299:
                raise _api_error(resp.status, resp.reason or "", resp.read())
            if stream:
                return resp.response
            data = resp.read()
        except ApiException as exc:  # the client's own: TLS errors come as status 0
            raise DebvisorError(f"cannot reach the Kubernetes API at {self.host}: "
                                f"{str(exc.reason or exc).splitlines()[-1][:200]}") from None
        except (HTTPError, OSError) as exc:
            raise DebvisorError(f"cannot reach the Kubernetes API at {self.host}: "
                                f"{_reason(exc)}") from None
        if (resp.headers.get("Content-Type") or "").startswith("application/json"):
            try:
                return json.loads(data)
            except ValueError:
                raise DebvisorError(f"the Kubernetes API at {self.host} sent malformed JSON "
                                    f"for {path}") from None
        return data.decode("utf-8", "replace")

    @property
    def host(self) -> str:
        return str(self.client.configuration.host)

    def resources(self, group_version: str) -> dict[str, dict[str, Any]]:
        """kind -> {name, namespaced} of a group/version's top-level resources (discovery,
        asked once per client)."""
        if group_version not in self.discovery:
            try:
                listing = self.get(group_path(group_version))
            except ApiError as exc:
                if exc.status != 404:
                    raise
                listing = {}
            self.discovery[group_version] = {
                r["kind"]: {"name": r["name"], "namespaced": r["namespaced"]}
                for r in listing.get("resources") or [] if "/" not in r["name"]}
        return self.discovery[group_version]

    def object_path(self, obj: dict[str, Any]) -> str:
        """The REST path of a manifest's object, found through discovery."""
        group_version = str(obj["apiVersion"])
        resource = self.resources(group_version).get(str(obj["kind"]))
        if resource is None:
            raise BadInput(f"the API server has no kind {obj['kind']} in {group_version}")
        meta = obj.get("metadata") or {}
        base = group_path(group_version)
        if resource["namespaced"]:
            base += f"/namespaces/{meta.get('namespace') or 'default'}"
        return f"{base}/{resource['name']}/{meta['name']}"

    def get(self, path: str, **query: Any) -> Any:
        return self.call("GET", path, query=query)

    def items(self, path: str, **query: Any) -> list[dict[str, Any]]:
        """The items of a list (every page)."""
        out: list[dict[str, Any]] = []
        token = None
        while True:
            page = self.get(path, **query, **({"continue": token} if token else {}))
            out += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return out


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "reason", None)
    return str(inner or exc).split(": ", 1)[-1][:200]


def _api_error(status: int, reason: str, body: Any) -> ApiError:
    try:
        data = json.loads(body) if body else {}
    except (ValueError, TypeError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    return ApiError(status, reason, str(data.get("message") or ""), data)


def _client(settings: Settings) -> Any:
    """A configured ``kubernetes.client.ApiClient``, or one sentence (exit 2) why not."""
    import yaml
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    paths = kubeconfig_paths(settings)
    files = existing(paths)
    conf = client.Configuration()
    try:
        if paths is None:
            config.load_incluster_config(client_configuration=conf)
        else:
            if not files:
                raise BadInput(f"no kubeconfig at {os.pathsep.join(map(str, paths))}: set "
                               f"[k8s] kubeconfig or KUBECONFIG")
            config.load_kube_config(config_file=os.pathsep.join(map(str, files)),
                                    context=settings.context or first_current_context(files),
                                    client_configuration=conf, persist_config=False)
    except (ConfigException, ValueError, OSError, yaml.YAMLError) as exc:
        where = ("the in-cluster service account" if paths is None else
                 f"kubeconfig {os.pathsep.join(map(str, files))}")
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise BadInput(f"{where}: {detail}") from None
    return client.ApiClient(conf)
