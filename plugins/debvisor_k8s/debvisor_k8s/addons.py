"""Addons: sets of manifests applied with server-side apply, each with its own readiness
checks. Shipped ones live in ``addons/NAME/`` beside this module; a site adds its own in
a directory named by ``[k8s] addon_dirs`` (those are searched first, so a site can
replace a shipped addon). An addon directory holds ``addon.toml``::

    description = "Resource metrics for kubectl top and autoscalers"
    manifests = ["metrics-server.yaml"]          # applied in this order
    [[ready]]                                    # what "ready" means for this addon
    kind = "Deployment"                          # Deployment, DaemonSet, StatefulSet, APIService
    namespace = "kube-system"
    name = "metrics-server"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debvisor_core.errors import BadInput
from debvisor_core.settings import Section

from .client import SERVER_OWNED, group_path

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context

    from .client import Api

SHIPPED = Path(__file__).with_name("addons")
FIELD_MANAGER = "debvisor"
#: set on the objects an addon's enable created (and kept by later applies): disable deletes
#: only those, never an object that was there before
CREATED_BY = "debvisor.io/created-by-addon"
READY_KINDS = ("Deployment", "DaemonSet", "StatefulSet", "APIService")


@dataclass(frozen=True)
class Addon:
    name: str
    source: str  # "shipped" or the directory it came from
    description: str
    manifests: tuple[Path, ...]
    ready: tuple[dict[str, str], ...]

    def objects(self) -> list[dict[str, Any]]:
        """Every object of the addon's manifests, in order."""
        import yaml

        out: list[dict[str, Any]] = []
        for path in self.manifests:
            try:
                docs = list(yaml.safe_load_all(path.read_text()))
            except (OSError, yaml.YAMLError) as exc:
                raise BadInput(f"addon {self.name}: cannot read {path}: {exc}") from None
            for doc in docs:
                if doc is None:
                    continue
                meta = doc.get("metadata") if isinstance(doc, dict) else None
                if not (isinstance(meta, dict) and doc.get("apiVersion") and doc.get("kind")
                        and meta.get("name")):
                    raise BadInput(f"addon {self.name}: {path} holds a document without "
                                   f"apiVersion, kind and metadata.name")
                _check_names(self.name, path, str(doc["apiVersion"]), str(doc["kind"]),
                             str(meta["name"]), meta.get("namespace"))
                out.append(doc)
        return out


def _check_names(addon: str, where: Path, api_version: str, kind: str, name: str,
                 namespace: Any) -> None:
    """Names that go into API paths: never a path of their own (RBAC names have ':')."""
    from .client import LABEL

    bad = None
    if not re.fullmatch(r"([a-z0-9.-]+/)?v[0-9a-z]+", api_version):
        bad = f"apiVersion {api_version!r}"
    elif not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", kind):
        bad = f"kind {kind!r}"
    elif not re.fullmatch(r"[A-Za-z0-9:._@-]{1,253}", name) or name in (".", ".."):
        bad = f"name {name!r}"
    elif namespace is not None and not re.fullmatch(LABEL, str(namespace)):
        bad = f"namespace {namespace!r}"
    if bad:
        raise BadInput(f"addon {addon}: {where}: {bad} is not a valid Kubernetes {bad.split()[0]}")


def created_by(obj: dict[str, Any] | None, addon: str) -> bool:
    """``obj`` (as the server has it) was created by enabling ``addon``."""
    return bool(obj) and ((obj or {}).get("metadata") or {}).get("annotations", {}) \
        .get(CREATED_BY) == addon


def with_mark(obj: dict[str, Any], addon: str) -> dict[str, Any]:
    """``obj`` carrying the created-by-``addon`` annotation."""
    meta = dict(obj.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), CREATED_BY: addon}
    return {**obj, "metadata": meta}


#: kinds whose objects in a namespace mean it holds more than the addon put there
FOREIGN_KINDS = (("apps/v1", "deployments"), ("apps/v1", "statefulsets"), ("apps/v1", "daemonsets"),
                 ("v1", "services"), ("v1", "persistentvolumeclaims"), ("v1", "configmaps"))


def foreign_objects(api: Api, namespace: str, objs: list[dict[str, Any]]) -> list[str]:
    """Objects in ``namespace`` that are not among the addon's ``objs`` (first few)."""
    from .client import ApiError

    mine = {(o["kind"], (o.get("metadata") or {}).get("name")) for o in objs
            if (o.get("metadata") or {}).get("namespace") == namespace}
    found = []
    for gv, plural in FOREIGN_KINDS:
        try:
            items = api.items(f"{group_path(gv)}/namespaces/{namespace}/{plural}")
        except ApiError as exc:
            if exc.status == 404:
                continue
            raise
        for it in items:
            name = (it.get("metadata") or {}).get("name")
            if plural == "configmaps" and name == "kube-root-ca.crt":
                continue
            if not any(n == name for _, n in mine):
                found.append(f"{plural}/{name}")
    return found[:5]


def owned(obj: dict[str, Any] | None) -> bool:
    """``obj`` (as the server has it) was applied by DebVisor (its managedFields say so)."""
    if obj is None:
        return False
    return any(m.get("manager") == FIELD_MANAGER and m.get("operation") == "Apply"
               for m in (obj.get("metadata") or {}).get("managedFields") or [])


def _load(directory: Path, source: str) -> Addon:
    meta_path = directory / "addon.toml"
    try:
        meta = tomllib.loads(meta_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"addon {directory.name}: cannot read {meta_path}: {exc}") from None
    manifests = meta.get("manifests")
    if not isinstance(manifests, list) or not manifests or \
            not all(isinstance(m, str) and "/" not in m for m in manifests):
        raise BadInput(f"addon {directory.name}: {meta_path}: manifests must be a list of file "
                       f"names in its directory")
    ready = meta.get("ready") or []
    for r in ready:
        if not isinstance(r, dict) or r.get("kind") not in READY_KINDS or not r.get("name"):
            raise BadInput(f"addon {directory.name}: {meta_path}: each [[ready]] needs kind "
                           f"({', '.join(READY_KINDS)}) and name")
        _check_names(directory.name, meta_path, "v1", r["kind"], str(r["name"]),
                     r.get("namespace"))
    return Addon(directory.name, source, str(meta.get("description") or ""),
                 tuple(directory / m for m in manifests), tuple(ready))


def dirs(ctx: Context) -> list[tuple[Path, str]]:
    """(directory, source) to search for addons: the configured ones, then the shipped."""
    configured = Section.of(ctx, "k8s").strings("addon_dirs")
    return [(Path(d), d) for d in configured] + [(SHIPPED, "shipped")]


def all_addons(ctx: Context) -> dict[str, Addon]:
    found: dict[str, Addon] = {}
    for base, source in dirs(ctx):
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            if d.name not in found and (d / "addon.toml").is_file():
                found[d.name] = _load(d, source)
    return found


def get(ctx: Context, name: str) -> Addon:
    addons = all_addons(ctx)
    if name not in addons:
        raise BadInput(f"no addon {name!r}; there are: {', '.join(sorted(addons)) or 'none'}")
    return addons[name]


# -- objects on the server ------------------------------------------------------------
def key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {ns}{meta.get('name')}"


def changed_paths(desired: Any, current: Any, prefix: str = "") -> list[str]:
    """Paths of ``desired`` (a manifest's fields) whose value differs in ``current``."""
    if isinstance(desired, dict) and isinstance(current, dict):
        out = []
        for k, v in desired.items():
            if k == "status" or k in SERVER_OWNED:
                continue
            out += changed_paths(v, current.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(desired, list) and isinstance(current, list) and len(desired) == len(current):
        return [p for i, (d, c) in enumerate(zip(desired, current, strict=True))
                for p in changed_paths(d, c, f"{prefix}[{i}]")]
    return [] if desired == current else [prefix or "."]


def readiness(api: Api, addon: Addon) -> list[dict[str, Any]]:
    """Each of the addon's readiness checks: {kind, namespace, name, ready, detail}."""
    from .client import ApiError

    out = []
    for r in addon.ready:
        ns = r.get("namespace")
        obj = {"apiVersion": "apiregistration.k8s.io/v1" if r["kind"] == "APIService"
               else "apps/v1", "kind": r["kind"],
               "metadata": {"name": r["name"], **({"namespace": ns} if ns else {})}}
        row: dict[str, Any] = {"kind": r["kind"], "namespace": ns, "name": r["name"]}
        try:
            live = api.get(api.object_path(obj))
        except ApiError as exc:
            if exc.status != 404:
                raise
            out.append({**row, "ready": False, "detail": "not found"})
            continue
        st = live.get("status") or {}
        if r["kind"] == "APIService":
            conds = st.get("conditions") or []
            cond: dict[str, Any] = next((c for c in conds if c.get("type") == "Available"), {})
            ok = cond.get("status") == "True"
            detail = "Available" if ok else (cond.get("message") or "not Available yet")
        else:  # ready and updated to this generation: an old pod must not hide a broken rollout
            if r["kind"] == "DaemonSet":
                want = int(st.get("desiredNumberScheduled") or 0)
                have, updated = int(st.get("numberReady") or 0), \
                    int(st.get("updatedNumberScheduled") or 0)
            else:
                want = int((live.get("spec") or {}).get("replicas", 1))
                have, updated = int(st.get("readyReplicas") or 0), int(st.get("updatedReplicas") or 0)
            current_gen = int(st.get("observedGeneration") or 0) >= \
                int((live.get("metadata") or {}).get("generation") or 0)
            ok = have >= want and updated >= want and current_gen and \
                (want > 0 or r["kind"] != "DaemonSet")
            detail = f"{have}/{want} ready, {updated} updated" + \
                ("" if current_gen else ", the controller has not seen the latest spec")
        out.append({**row, "ready": ok, "detail": detail})
    return out
