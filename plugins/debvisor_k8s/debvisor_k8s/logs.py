"""`k8s logs POD`: a pod's log, streamed with ``-f`` as the kubelet writes it (a click
command, not an action: it streams until the pod ends or the operator stops it)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from debvisor_core.errors import BadInput, DebvisorError

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context


def containers(pod: dict[str, Any], kinds: tuple[str, ...] = ("containers",)) -> list[str]:
    spec = pod.get("spec") or {}
    return [c.get("name", "") for k in kinds for c in spec.get(k) or []]


def pod_logs(ctx: Context, pod: str, namespace: str | None, container: str | None,
             follow: bool, since: float | None, tail: int | None, previous: bool,
             timestamps: bool) -> None:
    """Print POD's log (one container's); with ``follow``, keep printing until it ends."""
    from .client import LABEL, ApiError, Settings, check_name, default_namespace
    from .steps import api, pod_path

    check_name("pod", pod)
    if namespace is not None:
        check_name("namespace", namespace, LABEL)
    if container is not None:
        check_name("container", container, LABEL)
    ns = namespace or default_namespace(Settings.of(ctx))
    a = api(ctx)
    try:
        spec = a.get(pod_path(ns, pod))
    except ApiError as exc:
        if exc.status == 404:
            raise BadInput(f"no pod {pod} in namespace {ns}") from None
        raise
    names = containers(spec)
    if container is None and len(names) > 1:
        raise BadInput(f"pod {pod} has {len(names)} containers: {', '.join(names)}; choose "
                       f"one with -c")
    every = containers(spec, ("initContainers", "containers", "ephemeralContainers"))
    if container is not None and container not in every:
        raise BadInput(f"pod {pod} has no container {container!r} (it has "
                       f"{', '.join(every)})")
    query = {"container": container or (names[0] if names else None),
             "follow": "true" if follow else None,
             "sinceSeconds": int(since) if since else None, "tailLines": tail,
             "previous": "true" if previous else None,
             "timestamps": "true" if timestamps else None}
    path = pod_path(ns, pod) + "/log"
    which = {"namespace": ns, "pod": pod, "container": query["container"]}
    if not follow:
        text = a.call("GET", path, query=query)
        text = text if isinstance(text, str) else json.dumps(text)
        if ctx.json:
            sys.stdout.write(json.dumps({**which, "lines": text.splitlines()}) + "\n")
        else:
            sys.stdout.write(text)
        return
    from urllib3.exceptions import HTTPError

    resp = a.call("GET", path, query=query, stream=True)
    pending = b""

    def out(line: bytes) -> None:
        sys.stdout.write(json.dumps({**which, "line": line.decode("utf-8", "replace")}) + "\n")

    try:
        for chunk in resp.stream(4096, decode_content=True):
            if not ctx.json:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                out(line)
            sys.stdout.flush()
        if pending:
            out(pending)
    except (HTTPError, OSError) as exc:
        raise DebvisorError(f"the log stream of pod {ns}/{pod} broke: "
                            f"{' '.join(str(exc).split())[:200]}") from None
    finally:
        resp.release_conn()
