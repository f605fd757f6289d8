"""The emulator's debug and join parts, refereed by real kubectl and the Python client.

- ephemeral containers (``kubectl debug POD``: a strategic merge patch of
  ``pods/ephemeralcontainers``), debug pods on nodes (``kubectl debug node/NAME``),
- attach and exec over WebSocket to real busybox processes (kubectl >= 1.30; older kubectl
  speaks SPDY only and must fail cleanly),
- bootstrap tokens, anonymous requests and the signed ``kube-public/cluster-info`` of a
  ``kubeadm join`` preflight.

What kubectl does, as seen here:

- ``kubectl debug POD --image I -c NAME`` GETs the pod and PATCHes ``.../ephemeralcontainers``
  (``application/strategic-merge-patch+json``) with the two-way merge patch of the pod and
  the pod plus the new container. With a name already used by an ephemeral container, the
  pod plus the new one has that name twice and the patch holds two items of that name
  (``$setElementOrder`` lists it twice too): the first turns the stored container into the
  new one, the second (the stored container's own fields) turns most of it back. Merged by
  name, as the API server merges, the same debug again changes nothing (200, nothing
  written) and neither does another image; what the second item does not restore (a
  command, ``-i``'s stdin, env) is a change the server refuses (422, ``existing ephemeral
  containers "dbg" may not be changed``).
- kubectl 1.33 warns that ``--profile=legacy`` (still its default) is deprecated; both print
  ``Targeting container "app". If you don't see processes ...`` for ``--target``.
- ``kubectl debug node/N`` creates ``node-debugger-N-xxxxx`` (legacy profile: hostNetwork,
  hostPID, hostIPC, the node's / at /host, a toleration of everything, restartPolicy Never);
  kubectl 1.33's typed client sends it as protobuf.
- ``kubectl attach``/``exec`` (>= 1.30) GET with a WebSocket upgrade offering only
  v5.channel.k8s.io, send stdin then, at its end, the v5 close signal; they exit with the
  code of a NonZeroExitCode Status (``command terminated with exit code N`` on stderr) and
  check the container name themselves (``container nope not found in pod web-1``). Before
  1.30 they POST an SPDY/3.1 upgrade: ``Upgrade request required`` and exit 1.
- ``kubectl debug -i`` waits for the container to run (a watch), attaches, and takes a
  non-zero exit for a failed attach: it then prints the container's log.
- with no credentials at all in the kubeconfig kubectl prompts for a username; a blank token
  (``emu.kubeconfig_for(path)``) makes it anonymous. Anonymous discovery is forbidden (as in
  kubeadm clusters), so ``kubectl get nodes`` fails on discovery (``Error from server
  (Forbidden)``) while ``kubectl get --raw`` of cluster-info works.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from k8s_emulator import Emulator, jws_detached_signature, node, pod
from test_kubectl_referee import kubectl, parse_table

pytestmark = pytest.mark.kubectl_referee

TOKEN_ID, TOKEN_SECRET = "abcdef", "0123456789abcdef"


def kubectl_in(kubectl_bin: Path, emu: Emulator, *args: str, stdin: str = "", timeout: float = 30,
               kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl with this text on its stdin (own HOME and discovery cache, as kubectl())."""
    return subprocess.run(
        [str(kubectl_bin), f"--kubeconfig={kubeconfig or emu.kubeconfig}", "--request-timeout=10s",
         f"--cache-dir={emu.workdir / 'kube-cache'}", *args],
        input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(emu.workdir), "LANG": "C.UTF-8"})


def websockets(kubectl_bin: Path) -> bool:
    """kubectl >= 1.30 attaches and execs over WebSocket (before: SPDY only)."""
    m = re.search(r"kubectl\.1\.(\d+)$", kubectl_bin.name)
    return m is None or int(m.group(1)) >= 30


def seed(emu: Emulator) -> None:
    emu.add(node("worker1"))
    emu.add(pod("web-1", node="worker1", labels={"app": "web"}))


def ephemeral(emu: Emulator, name: str, pod_name: str = "web-1") -> tuple[dict[str, Any], dict[str, Any]]:
    p = emu.get("pods", pod_name)
    assert p is not None
    spec = next(c for c in p["spec"].get("ephemeralContainers") or () if c["name"] == name)
    status = next(c for c in p["status"].get("ephemeralContainerStatuses") or () if c["name"] == name)
    return spec, status


# --------------------------------------------------------------------------------------------
# ephemeral containers


def test_debug_adds_an_ephemeral_container(kubectl_bin: Path, k8s_api: Emulator) -> None:
    emu = k8s_api
    seed(emu)
    rv = int(emu.get("pods", "web-1")["metadata"]["resourceVersion"])  # type: ignore[index]

    res = kubectl(kubectl_bin, emu, "debug", "web-1", "-n", "default", "--image", "busybox",
                  "--target", "app", "-c", "dbg")

    assert res.returncode == 0, res
    assert 'Targeting container "app"' in res.stdout
    (patch,) = [r for r in emu.requests_to("PATCH") if r.path.endswith("/ephemeralcontainers")]
    assert patch.path == "/api/v1/namespaces/default/pods/web-1/ephemeralcontainers"
    assert patch.content_type == "application/strategic-merge-patch+json"
    got = kubectl(kubectl_bin, emu, "get", "pod", "web-1", "-o", "json")
    assert got.returncode == 0, got.stderr
    served = json.loads(got.stdout)
    (spec,) = served["spec"]["ephemeralContainers"]
    assert spec == {"name": "dbg", "image": "busybox", "targetContainerName": "app", "resources": {},
                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                    "imagePullPolicy": "Always"}
    (status,) = served["status"]["ephemeralContainerStatuses"]
    assert status["name"] == "dbg" and set(status["state"]) == {"running"}
    assert (status["ready"], status["restartCount"], status["image"]) \
        == (False, 0, "docker.io/library/busybox:latest")
    assert status["imageID"].startswith("docker.io/library/busybox@sha256:")
    assert status["containerID"].startswith("containerd://") and "started" not in status
    # two writes, as in a cluster: the API server's (the new container), the kubelet's (its status)
    assert int(served["metadata"]["resourceVersion"]) == rv + 2
    assert served["status"]["phase"] == "Running"

    # the same again: the patch merges into the stored container by name and changes nothing
    again = kubectl(kubectl_bin, emu, "debug", "web-1", "--image", "busybox", "--target", "app", "-c", "dbg")
    assert again.returncode == 0, again
    assert emu.get("pods", "web-1")["metadata"]["resourceVersion"] == served["metadata"]["resourceVersion"]  # type: ignore[index]

    # a command the stored container does not have: changing an ephemeral container is refused
    res = kubectl(kubectl_bin, emu, "debug", "web-1", "--image", "busybox", "--target", "app", "-c", "dbg",
                  "--", "sh")
    assert res.returncode != 0, res
    assert ('The Pod "web-1" is invalid: spec.ephemeralContainers: Forbidden: existing ephemeral containers '
            '"dbg" may not be changed\n+ command: ["sh"]') in res.stderr
    # a name of a container, a target that is none
    res = kubectl(kubectl_bin, emu, "debug", "web-1", "--image", "busybox", "-c", "app")
    assert res.returncode != 0, res
    assert 'The Pod "web-1" is invalid: spec.ephemeralContainers[1].name: Duplicate value: "app"' \
        in res.stderr
    res = kubectl(kubectl_bin, emu, "debug", "web-1", "--image", "busybox", "--target", "nope", "-c", "dbg2")
    assert res.returncode != 0, res
    assert 'spec.ephemeralContainers[1].targetContainerName: Not found: "nope"' in res.stderr
    assert [c["name"] for c in emu.get("pods", "web-1")["spec"]["ephemeralContainers"]] == ["dbg"]  # type: ignore[index]

    # an image that cannot be pulled: the container waits
    res = kubectl(kubectl_bin, emu, "debug", "web-1", "--image", "busybox:invalid", "-c", "bad")
    assert res.returncode == 0, res
    _, status = ephemeral(emu, "bad")
    assert status["state"] == {"waiting": {"reason": "ImagePullBackOff",
                                           "message": 'Back-off pulling image "busybox:invalid"'}}
    assert status["image"] == "busybox:invalid" and status["imageID"] == ""


def test_discovery_lists_the_pod_subresources(kubectl_bin: Path, k8s_api: Emulator) -> None:
    res = kubectl(kubectl_bin, k8s_api, "get", "--raw", "/api/v1")
    assert res.returncode == 0, res.stderr
    by_name = {r["name"]: r for r in json.loads(res.stdout)["resources"]}
    assert by_name["pods/attach"] == {"name": "pods/attach", "singularName": "", "namespaced": True,
                                      "kind": "PodAttachOptions", "verbs": ["create", "get"]}
    assert (by_name["pods/exec"]["kind"], by_name["pods/exec"]["verbs"]) \
        == ("PodExecOptions", ["create", "get"])
    assert (by_name["pods/ephemeralcontainers"]["kind"], by_name["pods/ephemeralcontainers"]["verbs"]) \
        == ("Pod", ["get", "patch", "update"])


# --------------------------------------------------------------------------------------------
# debug pods on nodes


def test_debug_node(kubectl_bin: Path, k8s_api: Emulator) -> None:
    emu = k8s_api
    emu.add(node("worker1"))

    res = kubectl(kubectl_bin, emu, "debug", "node/worker1", "--image", "busybox")

    assert res.returncode == 0, res
    m = re.fullmatch(r"Creating debugging pod (node-debugger-worker1-[a-z0-9]{5}) with container debugger on "
                     r"node worker1\.\n", res.stdout)
    assert m, res.stdout
    name = m.group(1)
    (create,) = emu.requests_to("POST", "/api/v1/namespaces/default/pods")
    # kubectl 1.33's typed client sends protobuf
    assert create.content_type in ("application/json", "application/vnd.kubernetes.protobuf")
    p = emu.get("pods", name)
    assert p is not None
    spec, status = p["spec"], p["status"]
    assert (spec["nodeName"], spec["hostPID"], spec["hostNetwork"], spec["hostIPC"]) \
        == ("worker1", True, True, True)
    assert spec["restartPolicy"] == "Never" and spec["tolerations"] == [{"operator": "Exists"}]
    (container,) = spec["containers"]
    assert (container["name"], container["image"]) == ("debugger", "busybox")
    (mount,) = container["volumeMounts"]
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert mount["mountPath"] == "/host" and volume["hostPath"]["path"] == "/"
    assert status["phase"] == "Running"
    assert status["podIP"] == status["hostIP"]  # hostNetwork: the node's address
    (cs,) = status["containerStatuses"]
    assert set(cs["state"]) == {"running"} and cs["ready"] is True and cs["started"] is True
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "PodReadyToStartContainers": "True", "Initialized": "True", "Ready": "True",
        "ContainersReady": "True", "PodScheduled": "True"}
    table = kubectl(kubectl_bin, emu, "get", "pod", name)
    assert table.returncode == 0, table.stderr
    (row,) = parse_table(table.stdout)
    assert (row["READY"], row["STATUS"]) == ("1/1", "Running")

    # an image that cannot be pulled: the pod stays Pending
    res = kubectl(kubectl_bin, emu, "debug", "node/worker1", "--image", "busybox:invalid")
    assert res.returncode == 0, res
    bad = next(p for p in emu.list("pods") if p["metadata"]["name"] not in (name,))
    assert bad["status"]["phase"] == "Pending"
    assert bad["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    table = kubectl(kubectl_bin, emu, "get", "pod", bad["metadata"]["name"])
    (row,) = parse_table(table.stdout)
    assert (row["READY"], row["STATUS"]) == ("0/1", "ImagePullBackOff")


# --------------------------------------------------------------------------------------------
# attach and exec


def test_attach_to_a_debug_container(kubectl_bin: Path, k8s_api: Emulator) -> None:
    emu = k8s_api
    seed(emu)
    assert kubectl(kubectl_bin, emu, "debug", "web-1", "--image", "busybox", "--target", "app",
                   "-c", "dbg").returncode == 0
    script = "echo hello; echo oops >&2; exit 3\n"
    emu.attach_reports_exit_code = True  # exec-like: kubectl attach then exits with the code

    res = kubectl_in(kubectl_bin, emu, "attach", "-i", "web-1", "-c", "dbg", stdin=script)

    attaches = [r for r in emu.requests if r.path == "/api/v1/namespaces/default/pods/web-1/attach"]
    if not websockets(kubectl_bin):  # SPDY only: refused, at once
        assert res.returncode == 1, res
        assert "Error from server (BadRequest): Upgrade request required" in res.stderr
        assert [r.method for r in attaches] == ["POST"]
        _, status = ephemeral(emu, "dbg")
        assert set(status["state"]) == {"running"}
        assert emu.processes() == []
        return
    assert res.returncode == 3, res
    assert res.stdout == "hello\n"
    assert "oops\n" in res.stderr and "command terminated with exit code 3" in res.stderr
    (ws,) = attaches
    assert ws.method == "GET"
    assert (ws.query["container"], ws.query["stdin"], ws.query["stdout"], ws.query["stderr"]) \
        == ("dbg", "true", "true", "true")
    _, status = ephemeral(emu, "dbg")  # the container ended with its shell
    term = status["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error") and term["finishedAt"]
    assert emu.processes() == []
    logs = kubectl(kubectl_bin, emu, "logs", "web-1", "-c", "dbg")
    assert logs.returncode == 0, logs.stderr
    assert sorted(logs.stdout.splitlines()) == ["hello", "oops"]  # what it wrote is in its log

    res = kubectl_in(kubectl_bin, emu, "attach", "-i", "web-1", "-c", "dbg", stdin="echo again\n")
    assert res.returncode == 1, res
    assert "Error from server (BadRequest): container dbg in pod web-1 is terminated" in res.stderr


def test_attach_errors(kubectl_bin: Path, k8s_api: Emulator) -> None:
    emu = k8s_api
    seed(emu)
    res = kubectl(kubectl_bin, emu, "debug", "web-1", "--image", "busybox:invalid", "-c", "bad")
    assert res.returncode == 0, res

    res = kubectl_in(kubectl_bin, emu, "attach", "-i", "web-1", "-c", "bad", stdin="true\n")
    assert res.returncode == 1, res
    assert ("Error from server (BadRequest): container bad in pod web-1 is waiting to start: ImagePullBackOff"
            in res.stderr)
    res = kubectl_in(kubectl_bin, emu, "attach", "web-1", "-c", "nope")
    assert res.returncode == 1, res
    assert "container nope not found in pod web-1" in res.stderr  # kubectl's own check
    # the server's answers, to requests without an upgrade
    attach = "/api/v1/namespaces/default/pods/web-1/attach?stdout=true&container="
    res = kubectl(kubectl_bin, emu, "get", "--raw", attach + "nope")
    assert "Error from server (BadRequest): container nope is not valid for pod web-1" in res.stderr
    res = kubectl(kubectl_bin, emu, "get", "--raw", attach + "app")
    assert "Error from server (BadRequest): Upgrade request required" in res.stderr


def test_exec_and_debug_interactive(kubectl_bin: Path, k8s_api: Emulator) -> None:
    emu = k8s_api
    seed(emu)

    res = kubectl_in(kubectl_bin, emu, "exec", "-i", "web-1", "-c", "app", "--", "sh", "-c",
                     'read line; echo "got $line"; echo "$HOME" >&2; exit 7', stdin="piped\n")

    if not websockets(kubectl_bin):
        assert res.returncode == 1, res
        assert "Error from server (BadRequest): Upgrade request required" in res.stderr
        return
    assert res.returncode == 7, res
    assert res.stdout == "got piped\n"
    assert res.stderr.splitlines() == [str(emu.container_dir("default", "web-1", "app")),
                                       "command terminated with exit code 7"]
    (ex,) = [r for r in emu.requests if r.path.endswith("/pods/web-1/exec")]
    assert ex.query["container"] == "app"
    assert emu.get("pods", "web-1")["status"]["containerStatuses"][0]["state"].get("running")  # type: ignore[index]

    # kubectl debug -i: waits until the container runs, attaches, ends with it
    res = kubectl_in(kubectl_bin, emu, "debug", "-i", "web-1", "--image", "busybox", "-c", "dbg", "--",
                     "sh", "-c", "echo from debug")
    assert res.returncode == 0, res
    assert res.stdout == "from debug\n"
    _, status = ephemeral(emu, "dbg")
    assert status["state"]["terminated"]["reason"] == "Completed"
    # a non-zero exit: the kubelet's attach ends with Success whatever the exit code (kubectl
    # debug takes anything else for a failed attach and prints the container's log again)
    res = kubectl_in(kubectl_bin, emu, "debug", "-i", "web-1", "--image", "busybox", "-c", "dbg2", "--",
                     "sh", "-c", "echo bye; exit 4")
    assert res.returncode == 0, res
    assert res.stdout == "bye\n"
    _, status = ephemeral(emu, "dbg2")
    assert status["state"]["terminated"]["exitCode"] == 4


def _frames(ws: Any) -> list[tuple[int, bytes]]:
    """(opcode, data) of the messages and control frames a websocket-client socket gets until
    the server's close frame (included)."""
    from websocket import ABNF

    out = []
    while True:
        opcode, frame = ws.recv_data_frame(True)
        out.append((opcode, bytes(frame.data)))
        if opcode == ABNF.OPCODE_CLOSE:
            return out


def test_websocket_protocols(k8s_api: Emulator) -> None:
    """The kubelet's subprotocols too (v4 binary, base64 ones in text frames, channel.k8s.io's
    plain-text errors), fragmented client messages, ping/pong, a refused subprotocol, a
    client frame without a mask."""
    import socket
    import ssl

    import websocket
    from websocket import ABNF

    emu = k8s_api
    seed(emu)
    base = emu.url.replace("https://", "wss://") + "/api/v1/namespaces/default/pods/web-1"
    script = "read line; echo \"got $line\"; echo oops >&2; exit 2"
    query = urlencode([("container", "app"), ("stdin", "true"), ("stdout", "true"), ("stderr", "true"),
                       ("command", "sh"), ("command", "-c"), ("command", script)])

    def connect(path: str, protocols: list[str] | None) -> Any:
        return websocket.create_connection(
            f"{base}/{path}", timeout=15, subprotocols=protocols,
            header=[f"Authorization: Bearer {emu.token}"],
            sslopt={"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(emu.tls.ca_cert)})

    # v4 (binary): stdin in two fragments with a ping between them
    ws = connect(f"exec?{query}", ["v4.channel.k8s.io", "channel.k8s.io"])
    assert ws.subprotocol == "v4.channel.k8s.io"
    ws.send_frame(ABNF.create_frame(b"\x00pip", ABNF.OPCODE_BINARY, fin=0))
    ws.ping(b"are you there")
    ws.send_frame(ABNF.create_frame(b"ed\n", ABNF.OPCODE_CONT, fin=1))
    frames = _frames(ws)
    assert frames[0] == (ABNF.OPCODE_BINARY, b"\x01")  # the empty first message on stdout
    assert (ABNF.OPCODE_PONG, b"are you there") in frames
    data = [f for op, f in frames if op == ABNF.OPCODE_BINARY]
    assert b"".join(f[1:] for f in data if f[0] == 1) == b"got piped\n"
    assert b"".join(f[1:] for f in data if f[0] == 2) == b"oops\n"
    (status,) = [json.loads(f[1:]) for f in data if f[0] == 3]
    failed = (f"command terminated with non-zero exit code: error executing command [sh -c {script}], "
              f"exit code 2")
    assert status == {"metadata": {}, "status": "Failure", "message": failed, "reason": "NonZeroExitCode",
                      "details": {"causes": [{"reason": "ExitCode", "message": "2"}]}}
    assert frames[-1] == (ABNF.OPCODE_CLOSE, b"\x03\xe8")  # 1000, normal closure
    ws.close()

    # base64.channel.k8s.io: text frames, "<channel digit><base64>"; failures as plain text
    ws = connect(f"exec?{query}", ["base64.channel.k8s.io"])
    assert ws.subprotocol == "base64.channel.k8s.io"
    ws.send("0" + base64.b64encode(b"b64\n").decode())
    frames = _frames(ws)
    texts = [f.decode() for op, f in frames if op == ABNF.OPCODE_TEXT]
    assert texts[0] == "1"
    assert b"".join(base64.b64decode(t[1:]) for t in texts if t[0] == "1") == b"got b64\n"
    (error,) = [base64.b64decode(t[1:]).decode() for t in texts if t[0] == "3"]
    assert error == failed
    ws.close()

    # a POST upgrade without a subprotocol (channel.k8s.io), RFC 6455's sample key
    raw = ssl.create_default_context(cafile=str(emu.tls.ca_cert)).wrap_socket(
        socket.create_connection(("127.0.0.1", int(emu.url.rsplit(":", 1)[1]))), server_hostname="127.0.0.1")
    raw.sendall(f"POST /api/v1/namespaces/default/pods/web-1/attach?container=app&stdout=true HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {emu.token}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in lines
    assert not [ln for ln in lines if ln.lower().startswith("sec-websocket-protocol")]
    assert raw.recv(3) == b"\x82\x01\x01"  # the first message: binary, one byte, stdout
    raw.close()

    # nothing offered that the server speaks: 403, as golang.org/x/net/websocket answers
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        connect("attach?container=app&stdout=true", ["v9.channel.k8s.io"])
    assert exc.value.status_code == 403
    # an unmasked client frame: closed with 1002 (protocol error)
    ws = connect("attach?container=app&stdin=true&stdout=true", ["v5.channel.k8s.io"])
    assert ws.recv_data_frame(True)[1].data == b"\x01"
    ws.sock.sendall(ABNF(1, 0, 0, 0, ABNF.OPCODE_BINARY, 0, b"\x00echo\n").format())
    opcode, frame = ws.recv_data_frame(True)
    assert (opcode, frame.data[:2]) == (ABNF.OPCODE_CLOSE, (1002).to_bytes(2, "big"))
    ws.close()


# --------------------------------------------------------------------------------------------
# bootstrap tokens, anonymous, cluster-info


def test_bootstrap_token_and_anonymous(kubectl_bin: Path, k8s_api: Emulator, tmp_path: Path) -> None:
    emu = k8s_api
    emu.add(node("worker1"))
    token = emu.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET)
    assert token == f"{TOKEN_ID}.{TOKEN_SECRET}"
    anonymous = emu.kubeconfig_for(tmp_path / "anonymous")
    bootstrap = emu.kubeconfig_for(tmp_path / "bootstrap", token)

    res = kubectl(kubectl_bin, emu, "get", "--raw", "/api/v1/namespaces/kube-public/configmaps/cluster-info",
                  kubeconfig=anonymous)
    assert res.returncode == 0, res
    cm = json.loads(res.stdout)
    assert (cm["kind"], cm["metadata"]["namespace"]) == ("ConfigMap", "kube-public")
    assert set(cm["data"]) == {"kubeconfig", f"jws-kubeconfig-{TOKEN_ID}"}
    res = kubectl(kubectl_bin, emu, "get", "nodes", kubeconfig=anonymous)
    assert res.returncode != 0, res
    assert "Error from server (Forbidden)" in res.stderr  # discovery is for authenticated users

    res = kubectl(kubectl_bin, emu, "get", "node", "worker1", kubeconfig=bootstrap)
    assert res.returncode == 0, res
    assert parse_table(res.stdout)[0]["NAME"] == "worker1"
    res = kubectl(kubectl_bin, emu, "delete", "node", "worker1", kubeconfig=bootstrap)
    assert res.returncode != 0, res
    assert ('Error from server (Forbidden): nodes "worker1" is forbidden: User "system:bootstrap:abcdef" '
            'cannot delete resource "nodes" in API group "" at the cluster scope') in res.stderr
    res = kubectl(kubectl_bin, emu, "get", "nodes", kubeconfig=bootstrap)
    assert ('Error from server (Forbidden): nodes is forbidden: User "system:bootstrap:abcdef" cannot list '
            'resource "nodes" in API group "" at the cluster scope') in res.stderr
    assert emu.get("nodes", "worker1") is not None

    wrong = emu.kubeconfig_for(tmp_path / "wrong", f"{TOKEN_ID}.ffffffffffffffff")
    res = kubectl(kubectl_bin, emu, "get", "node", "worker1", kubeconfig=wrong)
    assert res.returncode != 0
    assert "error: You must be logged in to the server (Unauthorized)" in res.stderr
    expired = emu.add_bootstrap_token("zyxwvu", "fedcba9876543210",
                                      expires=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    res = kubectl(kubectl_bin, emu, "get", "node", "worker1",
                  kubeconfig=emu.kubeconfig_for(tmp_path / "old", expired))
    assert "error: You must be logged in to the server (Unauthorized)" in res.stderr
    cluster_info = emu.get("configmaps", "cluster-info", "kube-public")
    assert cluster_info is not None
    assert set(cluster_info["data"]) == {"kubeconfig", f"jws-kubeconfig-{TOKEN_ID}"}


# --------------------------------------------------------------------------------------------
# the Python client


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_python_client_ephemeral_containers_and_streams(k8s_api: Emulator) -> None:
    from kubernetes import client, config, watch
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import stream

    emu = k8s_api
    seed(emu)
    api = config.new_client_from_config(config_file=str(emu.kubeconfig))
    try:
        core: Any = client.CoreV1Api(api)
        w = watch.Watch()
        since = emu.get("pods", "web-1")["metadata"]["resourceVersion"]  # type: ignore[index]
        added = core.patch_namespaced_pod_ephemeralcontainers("web-1", "default", {"spec": {
            "ephemeralContainers": [{"name": "dbg", "image": "busybox:1.36", "stdin": True,
                                     "targetContainerName": "app"}]}})
        (ec,) = added.spec.ephemeral_containers
        assert (ec.name, ec.image, ec.target_container_name, ec.image_pull_policy, ec.stdin) \
            == ("dbg", "busybox:1.36", "app", "IfNotPresent", True)
        events = []
        for ev in w.stream(core.list_namespaced_pod, "default", field_selector="metadata.name=web-1",
                           resource_version=since, timeout_seconds=5):
            events.append(ev)
            if ev["object"].status.ephemeral_container_statuses:
                w.stop()
        assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED"]
        (ecs,) = events[-1]["object"].status.ephemeral_container_statuses
        assert ecs.state.running.started_at is not None and ecs.ready is False
        assert core.read_namespaced_pod_ephemeralcontainers("web-1", "default").metadata.name == "web-1"

        def invalid(patch: Any, **kw: Any) -> dict[str, Any]:
            with pytest.raises(ApiException) as exc:
                core.patch_namespaced_pod_ephemeralcontainers("web-1", "default", patch, **kw)
            assert exc.value.status == 422
            return dict(json.loads(exc.value.body or ""))

        body = invalid({"spec": {"ephemeralContainers": [{"name": "dbg2", "image": "busybox", "ports": [
            {"containerPort": 80}], "resources": {"limits": {"cpu": "1"}}, "livenessProbe": {"exec": {
                "command": ["true"]}}}]}})
        assert body["message"] == (
            'Pod "web-1" is invalid: [spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an '
            "Ephemeral Container, spec.ephemeralContainers[1].resources: Forbidden: cannot be set for an "
            "Ephemeral Container, spec.ephemeralContainers[1].livenessProbe: Forbidden: cannot be set for an "
            "Ephemeral Container]")
        assert body["details"]["causes"][0] == {
            "reason": "FieldValueForbidden", "field": "spec.ephemeralContainers[1].ports",
            "message": "Forbidden: cannot be set for an Ephemeral Container"}
        body = invalid([{"op": "remove", "path": "/spec/ephemeralContainers/0"}])
        assert body["message"] == ('Pod "web-1" is invalid: spec.ephemeralContainers: Forbidden: existing '
                                   'ephemeral containers "dbg" may not be removed\n')
        # a JSON patch adds one too, and a merge patch (the whole list), and a PUT of the pod (of
        # which only the ephemeral containers count; its resourceVersion must be the current one)
        core.patch_namespaced_pod_ephemeralcontainers("web-1", "default", [
            {"op": "add", "path": "/spec/ephemeralContainers/-",
             "value": {"name": "dbg3", "image": "busybox"}}])
        current = [api.sanitize_for_serialization(c) for c in core.read_namespaced_pod_ephemeralcontainers(
            "web-1", "default").spec.ephemeral_containers]
        body = invalid({"spec": {"ephemeralContainers": [{"name": "dbg4", "image": "busybox"}]}},
                       _content_type="application/merge-patch+json")  # a list replaced: the others go
        assert [c["field"] for c in body["details"]["causes"]] == ["spec.ephemeralContainers"] * 2
        core.patch_namespaced_pod_ephemeralcontainers("web-1", "default", {"spec": {"ephemeralContainers": [
            *current, {"name": "dbg4", "image": "busybox"}]}}, _content_type="application/merge-patch+json")
        whole = core.read_namespaced_pod("web-1", "default")
        whole.spec.ephemeral_containers.append(client.V1EphemeralContainer(name="dbg5", image="busybox"))
        whole.metadata.labels["ignored"] = "yes"  # not an ephemeral container: not taken
        replaced = core.replace_namespaced_pod_ephemeralcontainers("web-1", "default", whole)
        assert [c.name for c in replaced.spec.ephemeral_containers] == ["dbg", "dbg3", "dbg4", "dbg5"]
        assert "ignored" not in replaced.metadata.labels
        with pytest.raises(ApiException) as exc:  # whole has an old resourceVersion now
            core.replace_namespaced_pod_ephemeralcontainers("web-1", "default", whole)
        assert exc.value.status == 409
        with pytest.raises(ApiException) as exc:
            core.create_namespaced_pod("default", {"metadata": {"name": "x"}, "spec": {
                "containers": [{"name": "a", "image": "busybox"}],
                "ephemeralContainers": [{"name": "b", "image": "busybox"}]}})
        assert json.loads(exc.value.body or "")["message"] \
            == 'Pod "x" is invalid: spec.ephemeralContainers: Forbidden: cannot be set on create'

        # attach: stdin in, stdout and stderr out, the shell's exit code at the end (exec-like)
        emu.attach_reports_exit_code = True
        ws = stream(core.connect_get_namespaced_pod_attach, "web-1", "default", container="dbg", stdin=True,
                    stdout=True, stderr=True, tty=False, _preload_content=False)
        assert ws.subprotocol == "v5.channel.k8s.io"
        ws.write_stdin("echo hello; echo oops >&2; exit 3\n")
        ws.run_forever(timeout=15)
        out, err = ws.read_stdout(), ws.read_stderr()
        assert (out, err, ws.returncode) == ("hello\n", "oops\n", 3)
        ws.close()
        assert ephemeral(emu, "dbg")[1]["state"]["terminated"]["exitCode"] == 3

        # with a TTY: a pty, one output stream; closing stdin (v5) is the terminal's ^D
        ws = stream(core.connect_get_namespaced_pod_attach, "web-1", "default", container="dbg3", stdin=True,
                    stdout=True, stderr=False, tty=True, _preload_content=False, binary=True)
        ws.write_stdin(b"tty && echo on-a-tty\n")
        ws.close_channel(0)
        ws.run_forever(timeout=15)
        assert b"on-a-tty\r\n" in ws.read_stdout() and ws.returncode == 0
        ws.close()

        # exec: the command in the container's directory (its HOME), Status with its exit code
        ws = stream(core.connect_get_namespaced_pod_exec, "web-1", "default", container="app",
                    command=["sh", "-c", 'pwd; echo "$HOME" >&2; exit 5'], stdin=False, stdout=True,
                    stderr=True, tty=False, _preload_content=False)
        ws.run_forever(timeout=15)
        home = str(emu.container_dir("default", "web-1", "app"))
        assert (ws.read_stdout(), ws.read_stderr(), ws.returncode) == (f"{home}\n", f"{home}\n", 5)
        ws.close()
        ws = stream(core.connect_get_namespaced_pod_exec, "web-1", "default", container="app",
                    command=["/no/such-program"], stdout=True, stderr=True, _preload_content=False)
        ws.run_forever(timeout=15)
        status = yaml.safe_load(ws.read_channel(3))
        assert (status["status"], status["reason"], status["code"]) == ("Failure", "InternalError", 500)
        assert 'exec: "/no/such-program": executable file not found in $PATH' in status["message"]
        ws.close()

        # a shell still attached to when the emulator stops is killed
        emu.add(pod("sleepy", node="worker1"))
        ws = stream(core.connect_get_namespaced_pod_attach, "sleepy", "default", container="app", stdin=True,
                    stdout=True, stderr=True, _preload_content=False)
        ws.write_stdin("echo ready\n")
        assert ws.readline_stdout(timeout=10) == "ready"
        (pid,) = emu.processes()
        ws.close()  # a detach: the container goes on
        os.kill(pid, 0)
    finally:
        api.close()
    emu.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert emu.processes() == []


def test_python_client_cluster_info_and_bootstrap_tokens(k8s_api: Emulator, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    emu = k8s_api
    emu.add(node("worker1"))
    token = emu.add_bootstrap_token(TOKEN_ID, TOKEN_SECRET, expires=dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    secret = emu.get("secrets", f"bootstrap-token-{TOKEN_ID}", "kube-system")
    assert secret is not None and secret["type"] == "bootstrap.kubernetes.io/token"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
        "expiration": "2099-01-01T00:00:00Z", "token-id": TOKEN_ID, "token-secret": TOKEN_SECRET,
        "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true"}

    anonymous = config.new_client_from_config(config_file=str(emu.kubeconfig_for(tmp_path / "anon")))
    bootstrap = config.new_client_from_config(config_file=str(emu.kubeconfig_for(tmp_path / "boot", token)))
    try:
        core: Any = client.CoreV1Api(anonymous)
        cm = core.read_namespaced_config_map("cluster-info", "kube-public")
        kubeconfig = cm.data["kubeconfig"]
        doc = yaml.safe_load(kubeconfig)
        (cluster,) = doc["clusters"]
        assert cluster["name"] == "" and cluster["cluster"]["server"] == emu.url
        assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]).decode() == emu.ca_pem
        assert (doc["users"], doc["contexts"], doc["current-context"], doc["kind"]) \
            == (None, None, "", "Config")

        # the detached JWS, checked without the emulator's code: header..signature, HS256 over
        # base64url(header) "." base64url(kubeconfig), keyed with the token secret
        sig = cm.data[f"jws-kubeconfig-{TOKEN_ID}"]
        header_b64, payload, mac_b64 = sig.split(".")
        assert payload == "" and "=" not in sig
        assert json.loads(_b64url_decode(header_b64)) == {"alg": "HS256", "kid": TOKEN_ID}
        signing_input = header_b64 + "." + base64.urlsafe_b64encode(kubeconfig.encode()).decode().rstrip("=")
        expected = hmac.new(TOKEN_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
        assert hmac.compare_digest(_b64url_decode(mac_b64), expected)
        assert jws_detached_signature(kubeconfig, TOKEN_ID, TOKEN_SECRET) == sig

        with pytest.raises(ApiException) as exc:
            core.list_node()
        assert exc.value.status == 403
        assert json.loads(exc.value.body or "") == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'nodes is forbidden: User "system:anonymous" cannot list resource "nodes" in API '
                       'group "" at the cluster scope', "reason": "Forbidden", "details": {"kind": "nodes"},
            "code": 403}
        with pytest.raises(ApiException) as exc:
            client.CoreApi(anonymous).get_api_versions()
        assert json.loads(exc.value.body or "")["message"] \
            == 'forbidden: User "system:anonymous" cannot get path "/api/"'
        assert client.VersionApi(anonymous).get_code().git_version == emu.server_version

        boot: Any = client.CoreV1Api(bootstrap)
        assert boot.read_node("worker1").metadata.name == "worker1"
        with pytest.raises(ApiException) as exc:
            boot.read_namespaced_secret(f"bootstrap-token-{TOKEN_ID}", "kube-system")
        assert json.loads(exc.value.body or "")["message"] == (
            f'secrets "bootstrap-token-{TOKEN_ID}" is forbidden: User "system:bootstrap:{TOKEN_ID}" cannot '
            f'get resource "secrets" in API group "" in the namespace "kube-system"')
        listed = boot.list_namespaced_config_map("kube-public", field_selector="metadata.name=cluster-info")
        assert [c.metadata.name for c in listed.items] == ["cluster-info"]

        # a token that expires: its signature goes (the signer's timer), its bearer is refused
        soon = emu.add_bootstrap_token("shortt", "0000000000000000",  # whole seconds: 1 to 2 s from now
                                       expires=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2))
        assert "jws-kubeconfig-shortt" in emu.get("configmaps", "cluster-info", "kube-public")["data"]  # type: ignore[index]
        assert emu.wait_for(lambda: "jws-kubeconfig-shortt" not in emu.get(  # type: ignore[index]
            "configmaps", "cluster-info", "kube-public")["data"], timeout=10)
        short = config.new_client_from_config(config_file=str(emu.kubeconfig_for(tmp_path / "short", soon)))
        with pytest.raises(ApiException) as exc:
            client.CoreV1Api(short).read_node("worker1")
        assert exc.value.status == 401
        short.close()
    finally:
        anonymous.close()
        bootstrap.close()

    # the CA pin: sha256 of the CA certificate's DER SubjectPublicKeyInfo
    cert = x509.load_pem_x509_certificate(emu.ca_pem.encode())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    assert emu.ca_hash() == "sha256:" + hashlib.sha256(spki).hexdigest()
