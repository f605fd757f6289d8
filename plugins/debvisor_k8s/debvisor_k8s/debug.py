"""`k8s debug POD` and `k8s debug node/NAME`: a debug shell inside a running pod (an
ephemeral container added through the ``pods/ephemeralcontainers`` subresource, sharing a
target container's process namespace) or on a node (a host-namespace pod with the node's
root filesystem at /host), attached over the API's WebSocket attach stream.

A click command, not an action: it is interactive. Each debug session is audited before
it changes anything. Node debug pods carry the label ``debvisor.io/debug=node`` and are
deleted when the session ends, however it ends (``--keep`` leaves one; ``--cleanup`` finds
and deletes every one left behind, e.g. by a killed session).
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from debvisor_core import log
from debvisor_core.errors import BadInput, DebvisorError

from .steps import pod_key, pod_path

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context

    from .client import Api

DEBUG_LABEL = "debvisor.io/debug"
NODE_LABEL = "debvisor.io/debug-node"
HOST_MOUNT = "/host"


def _suffix() -> str:
    return secrets.token_hex(3)[:5]


def _container_state(pod: dict[str, Any], name: str) -> dict[str, Any]:
    status = pod.get("status") or {}
    for key in ("ephemeralContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            if cs.get("name") == name:
                return dict(cs.get("state") or {})
    return {}


def wait_running(a: Api, ns: str, pod: str, container: str, timeout: float) -> None:
    """Until ``container`` runs; a container that cannot start (image pull, …) or ended
    fails at once with the kubelet's reason, a slow one when ``timeout`` is up."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        state = _container_state(a.get(pod_path(ns, pod)), container)
        if "running" in state:
            return
        waiting = state.get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                      "CreateContainerError", "CreateContainerConfigError"):
            raise DebvisorError(f"debug container {container} in pod {ns}/{pod} cannot start: "
                                f"{reason}: {waiting.get('message') or ''}".rstrip(": "))
        if "terminated" in state:
            t = state["terminated"]
            raise DebvisorError(f"debug container {container} in pod {ns}/{pod} ended before "
                                f"the attach (exit {t.get('exitCode')}, {t.get('reason')})")
        if reason and reason != last:
            log.info(f"debug container {container}: {reason}")
            last = reason
        if time.monotonic() > deadline:
            raise DebvisorError(f"debug container {container} in pod {ns}/{pod} did not start "
                                f"within {timeout:g}s ({reason or 'no status yet'})")
        time.sleep(0.3)


def attach(a: Api, ns: str, pod: str, container: str, tty: bool) -> int:
    """Join the container's stdin/stdout/stderr to ours until it ends; its exit code (from
    the container's terminated state: the kubelet ends every attach with Success)."""
    from kubernetes.client import CoreV1Api
    from kubernetes.stream import stream

    ws = stream(CoreV1Api(a.client).connect_get_namespaced_pod_attach, pod, ns,
                container=container, stdin=True, stdout=True, stderr=True, tty=tty,
                _preload_content=False, binary=True)
    fd = sys.stdin.fileno()
    saved = None
    if tty and os.isatty(fd):
        import termios
        import tty as ttymod

        saved = termios.tcgetattr(fd)
        ttymod.setraw(fd)
    stdin_open = True
    try:
        while ws.is_open():
            ws.update(timeout=0.05)
            for channel, out in ((1, sys.stdout), (2, sys.stderr)):
                if ws.peek_channel(channel):
                    out.buffer.write(ws.read_channel(channel))
                    out.flush()
            if stdin_open and select.select([fd], [], [], 0)[0]:
                data = os.read(fd, 65536)
                if data:
                    ws.write_stdin(data)
                else:  # our stdin ended: tell the container (v5), which may then end too
                    stdin_open = False
                    ws.close_channel(0)
        for channel, out in ((1, sys.stdout), (2, sys.stderr)):
            rest = ws.read_channel(channel)
            if rest:
                out.buffer.write(rest)
                out.flush()
        err = ws.read_channel(3)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        ws.close()
    stream_code = _stream_code(err)
    return stream_code if stream_code is not None else ended_with(a, ns, pod, container)


def _stream_code(err: bytes | str) -> int | None:
    """An exit code the attach stream's closing Status (channel 3) names, if any (an
    exec-like server); None for Success (the kubelet's answer to every attach)."""
    import json

    try:
        status = json.loads(err or b"{}")
    except ValueError:
        status = {}
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message"))
            except (TypeError, ValueError):
                break
    if status.get("status") == "Failure" and status.get("message"):
        log.error(f"attach: {status['message']}")
        return 1
    return None


def ended_with(a: Api, ns: str, pod: str, container: str, wait_s: float = 10) -> int:
    """The container's exit code once the kubelet reports it terminated; 0 when it still
    runs (the session detached: the shell's stdin closed, or the stream was cut)."""
    deadline = time.monotonic() + wait_s
    while True:
        state = _container_state(a.get(pod_path(ns, pod)), container)
        if "terminated" in state:
            return int(state["terminated"].get("exitCode") or 0)
        if time.monotonic() > deadline:
            log.info(f"the session ended; container {container} still runs")
            return 0
        time.sleep(0.2)


def _stop_on_signals() -> None:
    """SIGTERM/SIGHUP end the session through the normal path (the pod is removed)."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def debug_pod(ctx: Context, a: Api, ns: str, pod: str, image: str, target: str | None,
              name: str | None, tty: bool, timeout: float) -> int:
    """An ephemeral container in POD (sharing ``target``'s process namespace), attached.
    Kubernetes never removes an ephemeral container: it stays, ended, in the pod's spec."""
    from .client import ApiError

    try:
        spec = a.get(pod_path(ns, pod))
    except ApiError as exc:
        if exc.status == 404:
            raise BadInput(f"no pod {pod} in namespace {ns}") from None
        raise
    from .logs import containers

    names = containers(spec)
    taken = containers(spec, ("initContainers", "containers", "ephemeralContainers"))
    if target is not None and target not in names:
        raise BadInput(f"pod {pod} has no container {target!r} to target (it has "
                       f"{', '.join(names)})")
    name = name or f"debugger-{_suffix()}"
    if name in taken:
        raise BadInput(f"pod {pod} already has a container named {name}: choose another -c")
    if (spec.get("status") or {}).get("phase") not in ("Running", "Pending"):
        raise BadInput(f"pod {ns}/{pod} is {(spec.get('status') or {}).get('phase')}: "
                       f"there is nothing running to debug")
    container: dict[str, Any] = {"name": name, "image": image, "stdin": True, "tty": tty,
                                 "terminationMessagePolicy": "File"}
    if target:
        container["targetContainerName"] = target
    ctx.audit("debug-started", pod=f"{ns}/{pod}", container=name, image=image, target=target)
    a.call("PATCH", pod_path(ns, pod) + "/ephemeralcontainers",
           body={"spec": {"ephemeralContainers": [container]}},
           content_type="application/strategic-merge-patch+json")
    log.info(f"ephemeral container {name} ({image}) added to pod {ns}/{pod}"
             + (f", sharing {target}'s processes" if target else ""))
    wait_running(a, ns, pod, name, timeout)
    code = attach(a, ns, pod, name, tty)
    ctx.audit("debug-ended", pod=f"{ns}/{pod}", container=name, exit_code=code)
    log.info(f"debug session ended (exit {code}); container {name} stays in the pod's spec, "
             f"ended (Kubernetes cannot remove ephemeral containers)")
    return code


def node_pod(node: str, ns: str, image: str, tty: bool, by: str) -> dict[str, Any]:
    """The host-namespace pod of a node debug session."""
    name = f"debvisor-debug-{node}"[:56].rstrip("-.") + f"-{_suffix()}"
    labels = {DEBUG_LABEL: "node"}
    if len(node) <= 63:
        labels[NODE_LABEL] = node
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels,
                     "annotations": {"debvisor.io/debug-by": by}},
        "spec": {
            "nodeName": node, "hostPID": True, "hostNetwork": True, "hostIPC": True,
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "debugger", "image": image, "stdin": True, "tty": tty,
                            "volumeMounts": [{"name": "host-root", "mountPath": HOST_MOUNT}],
                            "terminationMessagePolicy": "File"}],
            "volumes": [{"name": "host-root", "hostPath": {"path": "/"}}],
        },
    }


def debug_node(ctx: Context, a: Api, ns: str, node: str, image: str, tty: bool,
               timeout: float, keep: bool) -> int:
    """A host-namespace pod on NODE, attached; deleted when the session ends unless
    ``keep``."""
    from debvisor_core.identity import operator

    from .steps import get_node

    get_node(ctx, node, planning=True)
    left = a.items("/api/v1/pods", labelSelector=f"{DEBUG_LABEL}=node,{NODE_LABEL}={node}") \
        if len(node) <= 63 else []
    if left:
        log.warn(f"{len(left)} earlier debug pod(s) of node {node} are still there: "
                 f"{', '.join(pod_key(p) for p in left)} (`k8sctl debug --cleanup` removes them)")
    body = node_pod(node, ns, image, tty, operator())
    name = body["metadata"]["name"]
    ctx.audit("debug-started", node=node, pod=f"{ns}/{name}", image=image)
    _stop_on_signals()
    a.call("POST", f"/api/v1/namespaces/{ns}/pods", body=body)
    log.info(f"debug pod {ns}/{name} created on node {node}; the node's root filesystem is "
             f"at {HOST_MOUNT}")
    code = 1
    try:
        wait_running(a, ns, name, "debugger", timeout)
        code = attach(a, ns, name, "debugger", tty)
    finally:
        if keep:
            log.info(f"debug pod {ns}/{name} kept (--keep): `k8sctl debug --cleanup` removes it")
        else:
            _delete(a, ns, name)
        ctx.audit("debug-ended", node=node, pod=f"{ns}/{name}", exit_code=code, kept=keep)
    return code


def _delete(a: Api, ns: str, name: str) -> None:
    from .client import ApiError

    try:
        a.call("DELETE", pod_path(ns, name), query={"gracePeriodSeconds": 0})
        log.info(f"debug pod {ns}/{name} deleted")
    except ApiError as exc:
        if exc.status != 404:
            log.error(f"could not delete debug pod {ns}/{name}: {exc}; `k8sctl debug "
                      f"--cleanup` retries")


def cleanup(ctx: Context, a: Api) -> list[str]:
    """Delete every node debug pod left behind (all namespaces); their names."""
    pods = a.items("/api/v1/pods", labelSelector=f"{DEBUG_LABEL}=node")
    if pods:
        ctx.audit("debug-cleanup", pods=[pod_key(p) for p in pods])
    for p in pods:
        meta = p.get("metadata") or {}
        _delete(a, str(meta.get("namespace")), str(meta.get("name")))
    return [pod_key(p) for p in pods]


def run(ctx: Context, target: str | None, namespace: str | None, image: str,
        container_target: str | None, name: str | None, keep: bool, timeout: float,
        do_cleanup: bool) -> int:
    """The command: POD, node/NAME or --cleanup."""
    from .client import LABEL, Settings, check_name, default_namespace
    from .steps import api

    if do_cleanup:
        if target:
            raise BadInput("--cleanup takes no POD or node/NAME")
        gone = cleanup(ctx, api(ctx))
        if ctx.json:
            import json

            print(json.dumps({"deleted": gone}))
        else:
            print(f"deleted {len(gone)} debug pod(s)" + (f": {', '.join(gone)}" if gone else ""))
        return 0
    if not target:
        raise BadInput("name a POD or node/NAME to debug (or give --cleanup)")
    for what, value in (("container", name), ("target container", container_target)):
        if value is not None:
            check_name(what, value, LABEL)
    if namespace is not None:
        check_name("namespace", namespace, LABEL)
    if not image or any(c.isspace() for c in image) or image.startswith("-"):
        raise BadInput(f"--image {image[:80]!r} is not an image reference")
    ns = namespace or default_namespace(Settings.of(ctx))
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    a = api(ctx)
    if target.startswith("node/"):
        if container_target or name:
            raise BadInput("--target and -c are for a pod; a node debug pod has one "
                           "container, debugger")
        return debug_node(ctx, a, ns, check_name("node", target[5:]), image, tty, timeout,
                          keep)
    if keep:
        raise BadInput("--keep is for node/NAME (an ephemeral container always stays)")
    return debug_pod(ctx, a, ns, check_name("pod", target.removeprefix("pod/")), image,
                     container_target, name, tty, timeout)
