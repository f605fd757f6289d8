"""The real kubectl and the official Python client referee the k8s API emulator.

Every test runs once with the oldest and once with the newest versioned kubectl found
(``kubectl.1.27`` and ``kubectl.1.33`` from google-cloud-cli; conftest.py picks them;
DEBVISOR_KUBECTL_ALL=1 runs every version found). Checked versions (``kubectl.1.NN version
--client``): v1.27.16, v1.28.15, v1.29.14, v1.30.13, v1.31.9, v1.32.5, v1.33.1 — the whole
file passes with each of them (DEBVISOR_KUBECTL_ALL=1); the Python client is kubernetes 37.0.2
(pydantic models: a missing required field or a wrong JSON type fails deserialization).

What kubectl does against the emulator, as seen here (and what the emulator had to serve):

- discovery: kubectl >= 1.30 asks /api and /apis for aggregated discovery
  (``as=APIGroupDiscoveryList``, v2 then v2beta1; 1.27 asks v2beta1) with ``application/json``
  last; the legacy APIVersions/APIGroupList JSON is accepted and kubectl then reads each group
  version's APIResourceList. OpenAPI is fetched only by ``apply -f`` (below).
- ``kubectl drain`` finds the eviction API through the ``pods/eviction`` entry of /api/v1
  (group policy, version v1, kind Eviction); it cordons with a strategic merge patch
  ``{"spec":{"unschedulable":true}}`` (``dryRun=All`` in the query with --dry-run=server),
  lists pods with ``fieldSelector=spec.nodeName=NODE``, GETs each DaemonSet that controls a pod,
  POSTs Evictions (dry run: ``deleteOptions.dryRun: ["All"]`` in the body, not the query),
  retries a 429 every 5 s until --timeout, then polls each evicted pod with GET until 404.
  With --timeout=12s a blocked drain ends after about 15 s (its check comes after a 5 s sleep).
- nothing above watches; ``kubectl delete`` does (it waits for the pod to go with a
  list+watch on ``fieldSelector=metadata.name=NAME``), so the emulator serves watch too.
- kubectl 1.33's typed client asks for ``application/vnd.kubernetes.protobuf,application/json``
  and takes JSON.
- ``kubectl logs POD`` on a two-container pod does NOT fail since kubectl 1.21 (KEP-2189): it
  picks the first container and says ``Defaulted container "a" out of: a, b`` on stderr. The
  server's own 400 (``a container name must be specified for pod NAME, choose one of: [a b]``)
  is what ``kubectl get --raw .../log`` and the Python client get.
- after a NotFound on a namespaced GET, kubectl GETs the namespace and reports
  ``namespaces "X" not found`` instead when that is missing too.
- ``kubectl apply --server-side -f FILE`` sends one PATCH per object, in file order, no GET
  first: ``Content-Type: application/apply-patch+yaml`` with a JSON body, query
  ``fieldManager`` (--field-manager), ``force=false`` (``true`` with --force-conflicts),
  ``fieldValidation`` and with --dry-run=server ``dryRun=All``; it prints ``KIND/NAME
  serverside-applied`` (`` (server dry run)``) per object. It first validates the file
  against OpenAPI (1.27: /openapi/v2 then /swagger-2.0.0.pb-v1; 1.33: /openapi/v3 then
  /openapi/v2), which the emulator does not serve: hence ``--validate=false`` (kubectl then
  sends ``fieldValidation=Ignore``; 1.27 and 1.28 still GET /openapi/v2 and
  /swagger-2.0.0.pb-v1 and ignore the 404s). A 409 apply conflict is printed as ``error:
  <the server's message>`` plus advice on --force-conflicts. A server dry run of a manifest
  with a new Namespace fails for the objects in it (``namespaces "X" not found``), as
  against a real server.
- ``kubectl delete -f FILE`` deletes in file order, then waits for all of them (watch): a
  Namespace first means its objects must outlive its DELETE (Terminating) for theirs to work.
- kubectl 1.33's typed ``create namespace/configmap/secret`` send protobuf bodies (the
  emulator decodes them for Pod, Namespace, ConfigMap and Secret; other kinds are a 415);
  ``create -f``, ``apply`` and 1.27 send JSON. (Debug, attach, exec and bootstrap tokens are
  refereed in test_emulator_debug_join.py.)
- Python client 37: ``patch_*(..., _content_type="application/apply-patch+yaml",
  field_manager=...)`` is server-side apply; ``delete_namespace`` answers a plain dict (its
  response type is "object"; the server sends the Terminating Namespace).
- Python client 37: the eviction call is ``CoreV1Api.create_namespaced_pod_eviction``
  (PolicyV1Api has none); the server's 201 ``Status`` body comes back as a V1Eviction whose
  kind is "Status"; ``patch_node`` sends strategic merge patch for a dict, JSON patch for a list.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from k8s_emulator import Emulator, daemonset, deployment, node, pdb, pod, statefulset

pytestmark = pytest.mark.kubectl_referee

CONTROL_PLANE = "node-role.kubernetes.io/control-plane"


def kubectl(kubectl_bin: Path, emu: Emulator, *args: str, timeout: float = 30,
            request_timeout: str = "10s", kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the emulator (own HOME and discovery cache, no user kubeconfig)."""
    return subprocess.run(
        [str(kubectl_bin), f"--kubeconfig={kubeconfig or emu.kubeconfig}",
         f"--request-timeout={request_timeout}", f"--cache-dir={emu.workdir / 'kube-cache'}", *args],
        capture_output=True, text=True, timeout=timeout, env=_env(emu), check=False)


def _env(emu: Emulator) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(emu.workdir), "LANG": "C.UTF-8"}


def parse_table(text: str) -> list[dict[str, str]]:
    """kubectl's human table: one dict per row, keyed by the header's column names."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    cols = list(re.finditer(r"\S+(?: \S+)*", lines[0]))
    bounds = [(m.start(), cols[i + 1].start() if i + 1 < len(cols) else None) for i, m in enumerate(cols)]
    return [{m.group(): ln[a:b].strip() for m, (a, b) in zip(cols, bounds, strict=True)} for ln in lines[1:]]


def _names(emu: Emulator) -> set[str]:
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in emu.list("pods")}


def seed_drain(emu: Emulator, *, min_available: int, empty_dir: bool = True) -> None:
    """n1 (to drain) and n2; web-1 on n1 and web-2 on n2 behind PDB "web"; api-1 on n1 (an
    emptyDir volume when empty_dir); a DaemonSet pod on each node; an unrelated pod on n2."""
    emu.add(node("n1"))
    emu.add(node("n2"))
    for name, where in (("web-1", "n1"), ("web-2", "n2")):
        emu.add(pod(name, node=where, labels={"app": "web"}, owner=("ReplicaSet", "web-5d8f7c9b6")))
    emu.add(pod("api-1", node="n1", labels={"app": "api"}, owner=("ReplicaSet", "api-6c7b9"),
                volumes=[{"name": "scratch", "emptyDir": {}}] if empty_dir else ()))
    emu.add(pod("cache-0", node="n2", labels={"app": "cache"}, owner=("StatefulSet", "cache")))
    emu.add(daemonset("fluent", "kube-system", desired=2))
    for where in ("n1", "n2"):
        emu.add(pod(f"fluent-{where}", "kube-system", node=where, labels={"app": "fluent"},
                    owner=("DaemonSet", "fluent")))
    emu.add(pdb("web", "default", {"app": "web"}, min_available=min_available))


def _pods_on(emu: Emulator, node_name: str) -> set[str]:
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in emu.list("pods")
            if p["spec"].get("nodeName") == node_name}


# --------------------------------------------------------------------------------------------
# get


def test_get_nodes_json(kubectl_bin: Path, k8s_api: Emulator) -> None:
    k8s_api.add(node("n1"))
    k8s_api.add(node("n2", ready=False, unschedulable=True, labels={CONTROL_PLANE: ""}))

    res = kubectl(kubectl_bin, k8s_api, "get", "nodes", "-o", "json")

    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["kind"] == "List" and doc["apiVersion"] == "v1"
    items = {n["metadata"]["name"]: n for n in doc["items"]}
    assert set(items) == {"n1", "n2"}
    for name, ready, unschedulable in (("n1", "True", None), ("n2", "False", True)):
        n = items[name]
        assert n["kind"] == "Node"
        assert n["metadata"]["uid"] == k8s_api.get("nodes", name)["metadata"]["uid"]  # type: ignore[index]
        assert {c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"] == ready
        assert n["spec"].get("unschedulable") is unschedulable
    assert ("GET", "/api/v1/nodes") in [(r.method, r.path) for r in k8s_api.requests]


def test_get_nodes_table(kubectl_bin: Path, k8s_api: Emulator) -> None:
    k8s_api.add(node("n1", kubelet="v1.29.4"))
    k8s_api.add(node("n2", ready=False, unschedulable=True, labels={CONTROL_PLANE: ""}))

    res = kubectl(kubectl_bin, k8s_api, "get", "nodes")

    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {r["NAME"]: r for r in parse_table(res.stdout)}
    assert rows["n1"]["STATUS"] == "Ready" and rows["n1"]["ROLES"] == "<none>"
    assert rows["n2"]["STATUS"] == "NotReady,SchedulingDisabled" and rows["n2"]["ROLES"] == "control-plane"
    assert rows["n1"]["VERSION"] == "v1.29.4"
    assert re.fullmatch(r"\d+s", rows["n1"]["AGE"])


def test_get_pods_all_namespaces(kubectl_bin: Path, k8s_api: Emulator) -> None:
    k8s_api.add(node("n1"))
    k8s_api.add(pod("web-1", node="n1", labels={"app": "web"}))
    k8s_api.add(pod("coredns-5d78c", "kube-system", node="n1", owner=("ReplicaSet", "coredns-5d78")))
    k8s_api.add(pod("crash", "shop", node="n1", restarts=4, waiting_reason="CrashLoopBackOff"))
    k8s_api.add(pod("pull", "shop", node="n1", phase="Pending", waiting_reason="ImagePullBackOff"))
    k8s_api.add(pod("pend", "shop", pending_message="0/1 nodes are available: 1 Insufficient cpu."))
    k8s_api.add(pod("two", node="n1", containers=(("a", "nginx:1.25"), ("b", "busybox:1.36")), ready=False))

    res = kubectl(kubectl_bin, k8s_api, "get", "pods", "-A")

    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].split() == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    rows = {(r["NAMESPACE"], r["NAME"]): r for r in parse_table(res.stdout)}
    assert set(rows) == {("default", "web-1"), ("kube-system", "coredns-5d78c"), ("shop", "crash"),
                         ("shop", "pull"), ("shop", "pend"), ("default", "two")}
    expect = {("default", "web-1"): ("1/1", "Running", "0"),
              ("kube-system", "coredns-5d78c"): ("1/1", "Running", "0"),
              ("shop", "pull"): ("0/1", "ImagePullBackOff", "0"), ("shop", "pend"): ("0/1", "Pending", "0"),
              ("default", "two"): ("0/2", "Running", "0")}
    for key, want in expect.items():
        assert (rows[key]["READY"], rows[key]["STATUS"], rows[key]["RESTARTS"]) == want, key
    crash = rows[("shop", "crash")]
    assert (crash["READY"], crash["STATUS"]) == ("0/1", "CrashLoopBackOff")
    assert re.fullmatch(r"4 \(\d+s ago\)", crash["RESTARTS"]), crash

    wide = kubectl(kubectl_bin, k8s_api, "get", "pods", "-n", "default", "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    row = {r["NAME"]: r for r in parse_table(wide.stdout)}["web-1"]
    assert row["NODE"] == "n1" and row["IP"] == k8s_api.get("pods", "web-1")["status"]["podIP"]  # type: ignore[index]


def test_get_pods_by_label_as_names(kubectl_bin: Path, k8s_api: Emulator) -> None:
    k8s_api.add(pod("web-1", "shop", labels={"app": "web"}))
    k8s_api.add(pod("web-2", "shop", labels={"app": "web", "tier": "front"}))
    k8s_api.add(pod("db-0", "shop", labels={"app": "db"}))
    k8s_api.add(pod("web-9", "default", labels={"app": "web"}))

    res = kubectl(kubectl_bin, k8s_api, "get", "pods", "-n", "shop", "-l", "app=web", "-o", "name")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["pod/web-1", "pod/web-2"]
    seen = [r for r in k8s_api.requests if r.path == "/api/v1/namespaces/shop/pods"]
    assert seen and seen[-1].query["labelSelector"] == "app=web"

    res = kubectl(kubectl_bin, k8s_api, "get", "pods", "-A", "-l", "app in (web,db),tier!=front",
                  "-o", "name")
    assert res.returncode == 0, res.stderr
    assert sorted(res.stdout.splitlines()) == ["pod/db-0", "pod/web-1", "pod/web-9"]

    res = kubectl(kubectl_bin, k8s_api, "get", "pods", "-A", "--field-selector", "metadata.namespace!=shop",
                  "-o", "name")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["pod/web-9"]


def test_typed_create(kubectl_bin: Path, k8s_api: Emulator) -> None:
    emu = k8s_api
    for args in (("namespace", "shop"), ("configmap", "web-config", "-n", "shop", "--from-literal=MODE=fast"),
                 ("secret", "generic", "creds", "-n", "shop", "--from-literal=user=admin")):
        res = kubectl(kubectl_bin, emu, "create", *args)
        assert res.returncode == 0, res
    posts = [r.content_type for r in emu.requests_to("POST")]
    assert len(posts) == 3 and len(set(posts)) == 1  # JSON (1.27), protobuf (1.33)
    assert emu.get("namespaces", "shop")["status"]["phase"] == "Active"  # type: ignore[index]
    assert emu.get("configmaps", "web-config", "shop")["data"] == {"MODE": "fast"}  # type: ignore[index]
    creds = emu.get("secrets", "creds", "shop")
    assert creds is not None and (creds["type"], creds["data"]) == ("Opaque", {"user": "YWRtaW4="})


def test_errors_are_status_objects(kubectl_bin: Path, k8s_api: Emulator, tmp_path: Path) -> None:
    res = kubectl(kubectl_bin, k8s_api, "get", "pod", "nope")
    assert res.returncode != 0
    assert 'Error from server (NotFound): pods "nope" not found' in res.stderr

    res = kubectl(kubectl_bin, k8s_api, "get", "deployment", "nope", "-n", "kube-system")
    assert res.returncode != 0
    assert 'Error from server (NotFound): deployments.apps "nope" not found' in res.stderr

    # after a NotFound kubectl GETs the namespace, and names it when that is missing too
    res = kubectl(kubectl_bin, k8s_api, "get", "deployment", "nope", "-n", "shop")
    assert res.returncode != 0
    assert 'Error from server (NotFound): namespaces "shop" not found' in res.stderr

    res = kubectl(kubectl_bin, k8s_api, "get", "--raw", "/apis/batch/v1")
    assert res.returncode != 0
    assert "Error from server (NotFound): the server could not find the requested resource" in res.stderr

    config = json.loads(k8s_api.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "wrong"
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text(json.dumps(config))
    res = kubectl(kubectl_bin, k8s_api, "get", "pods", kubeconfig=bad)
    assert res.returncode != 0
    assert "error: You must be logged in to the server (Unauthorized)" in res.stderr


# --------------------------------------------------------------------------------------------
# drain


def test_drain_blocked_by_pdb(kubectl_bin: Path, k8s_api: Emulator) -> None:
    seed_drain(k8s_api, min_available=2)

    res = kubectl(kubectl_bin, k8s_api, "drain", "n1", "--ignore-daemonsets", "--delete-emptydir-data",
                  "--timeout=12s", timeout=60)

    assert res.returncode != 0, res
    assert "node/n1 cordoned" in res.stdout
    assert ('error when evicting pods/"web-1" -n "default" (will retry after 5s): Cannot evict pod as it '
            "would violate the pod's disruption budget.") in res.stderr
    assert "global timeout reached: 12s" in res.stderr
    assert "Warning: ignoring DaemonSet-managed Pods: kube-system/fluent-n1" in res.stderr
    n1 = k8s_api.get("nodes", "n1")
    assert n1 is not None and n1["spec"]["unschedulable"] is True
    assert _pods_on(k8s_api, "n1") == {"default/web-1", "kube-system/fluent-n1"}  # api-1 evicted
    assert _pods_on(k8s_api, "n2") == {"default/web-2", "default/cache-0", "kube-system/fluent-n2"}
    tries = [e["metadata"]["name"] for e in k8s_api.evictions]
    assert tries.count("api-1") == 1 and tries.count("web-1") >= 2  # 429 is retried
    budget = k8s_api.get("poddisruptionbudgets", "web")
    assert budget is not None
    assert budget["status"]["disruptionsAllowed"] == 0 and budget["status"]["currentHealthy"] == 2


def test_drain_after_pdb_allows(kubectl_bin: Path, k8s_api: Emulator) -> None:
    seed_drain(k8s_api, min_available=2)
    assert k8s_api.get("poddisruptionbudgets", "web")["status"]["disruptionsAllowed"] == 0  # type: ignore[index]
    k8s_api.add(pdb("web", "default", {"app": "web"}, min_available=1))
    assert k8s_api.get("poddisruptionbudgets", "web")["status"]["disruptionsAllowed"] == 1  # type: ignore[index]

    res = kubectl(kubectl_bin, k8s_api, "drain", "n1", "--ignore-daemonsets", "--delete-emptydir-data",
                  "--timeout=12s", timeout=60)

    assert res.returncode == 0, res
    assert "node/n1 drained" in res.stdout
    assert "pod/web-1 evicted" in res.stdout and "pod/api-1 evicted" in res.stdout
    n1 = k8s_api.get("nodes", "n1")
    assert n1 is not None and n1["spec"]["unschedulable"] is True
    taint = n1["spec"]["taints"][0]  # the node lifecycle controller's part, emulated
    assert (taint["key"], taint["effect"]) == ("node.kubernetes.io/unschedulable", "NoSchedule")
    assert _pods_on(k8s_api, "n1") == {"kube-system/fluent-n1"}
    assert k8s_api.get("poddisruptionbudgets", "web")["status"]["disruptionsAllowed"] == 0  # type: ignore[index]


def test_drain_waits_for_eviction_delay(kubectl_bin: Path, k8s_api: Emulator) -> None:
    seed_drain(k8s_api, min_available=1, empty_dir=False)
    k8s_api.eviction_delay = 0.5
    started = time.monotonic()

    res = kubectl(kubectl_bin, k8s_api, "drain", "n1", "--ignore-daemonsets", "--timeout=20s", timeout=60)

    assert res.returncode == 0, res
    assert time.monotonic() - started >= 0.5  # kubectl waited until the pods were really gone
    assert "node/n1 drained" in res.stdout
    assert _pods_on(k8s_api, "n1") == {"kube-system/fluent-n1"}
    polls = [r for r in k8s_api.requests
             if r.method == "GET" and r.path == "/api/v1/namespaces/default/pods/web-1"]
    assert polls, "kubectl polls an evicted pod until it is gone"


def test_drain_server_dry_run(kubectl_bin: Path, k8s_api: Emulator) -> None:
    seed_drain(k8s_api, min_available=1, empty_dir=False)
    before = _names(k8s_api)

    res = kubectl(kubectl_bin, k8s_api, "drain", "n1", "--dry-run=server", "--ignore-daemonsets", timeout=60)

    assert res.returncode == 0, res
    assert "node/n1 cordoned (server dry run)" in res.stdout
    assert "node/n1 drained (server dry run)" in res.stdout
    n1 = k8s_api.get("nodes", "n1")
    assert n1 is not None and "unschedulable" not in n1["spec"] and "taints" not in n1["spec"]
    assert _names(k8s_api) == before
    assert not any(p["metadata"].get("deletionTimestamp") for p in k8s_api.list("pods"))
    patches = [r for r in k8s_api.requests if r.method == "PATCH" and r.path == "/api/v1/nodes/n1"]
    assert patches and all(r.query.get("dryRun") == "All" for r in patches)
    assert patches[0].content_type == "application/strategic-merge-patch+json"
    assert sorted(e["metadata"]["name"] for e in k8s_api.evictions) == ["api-1", "web-1"]
    assert all(e["deleteOptions"]["dryRun"] == ["All"] for e in k8s_api.evictions)
    assert not [r for r in k8s_api.requests if r.method == "DELETE"]


def test_delete_waits_for_the_pod_through_a_watch(kubectl_bin: Path, k8s_api: Emulator) -> None:
    k8s_api.add(node("n1"))
    k8s_api.add(pod("web-1", node="n1"))
    k8s_api.eviction_delay = 0.5
    started = time.monotonic()

    res = kubectl(kubectl_bin, k8s_api, "delete", "pod", "web-1", "--timeout=20s", timeout=60)

    assert res.returncode == 0, res
    assert res.stdout == 'pod "web-1" deleted\n' and res.stderr == ""
    assert time.monotonic() - started >= 0.5
    assert k8s_api.get("pods", "web-1") is None
    deletes = [r for r in k8s_api.requests if r.method == "DELETE"]
    assert [r.path for r in deletes] == ["/api/v1/namespaces/default/pods/web-1"]
    watches = [r for r in k8s_api.requests if r.query.get("watch") == "true"]
    assert watches and watches[0].query["fieldSelector"] == "metadata.name=web-1"


# --------------------------------------------------------------------------------------------
# logs


def test_logs_text_and_tail(kubectl_bin: Path, k8s_api: Emulator) -> None:
    k8s_api.add(node("n1"))
    k8s_api.add(pod("web-1", node="n1"))
    k8s_api.set_log("default", "web-1", "one\ntwo\nthree\n")

    res = kubectl(kubectl_bin, k8s_api, "logs", "web-1")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "one\ntwo\nthree\n"

    res = kubectl(kubectl_bin, k8s_api, "logs", "web-1", "--tail=2")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "two\nthree\n"
    last = [r for r in k8s_api.requests if r.path.endswith("/pods/web-1/log")][-1]
    assert last.query["tailLines"] == "2" and last.query["container"] == "app"

    res = kubectl(kubectl_bin, k8s_api, "logs", "web-1", "--timestamps", "--since=1h")
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (one|two|three)\n){3}", res.stdout)


def test_logs_previous_and_waiting(kubectl_bin: Path, k8s_api: Emulator) -> None:
    k8s_api.add(node("n1"))
    k8s_api.add(pod("crash", node="n1", restarts=3, waiting_reason="CrashLoopBackOff"))
    k8s_api.add(pod("pull", node="n1", phase="Pending", waiting_reason="ImagePullBackOff"))
    k8s_api.set_log("default", "crash", "panic: boom\n", previous=True)

    res = kubectl(kubectl_bin, k8s_api, "logs", "crash", "--previous")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "panic: boom\n"

    res = kubectl(kubectl_bin, k8s_api, "logs", "pull")
    assert res.returncode != 0
    assert ('Error from server (BadRequest): container "app" in pod "pull" is waiting to start: trying and '
            "failing to pull image") in res.stderr


def test_logs_two_containers(kubectl_bin: Path, k8s_api: Emulator) -> None:
    k8s_api.add(node("n1"))
    k8s_api.add(pod("two", node="n1", containers=(("a", "nginx:1.25"), ("b", "busybox:1.36"))))
    k8s_api.set_log("default", "two", "from a\n", container="a")
    k8s_api.set_log("default", "two", "from b\n", container="b")

    # kubectl itself picks the first container (KEP-2189, kubectl >= 1.21) and says so
    res = kubectl(kubectl_bin, k8s_api, "logs", "two")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "from a\n"
    assert 'Defaulted container "a" out of: a, b' in res.stderr

    res = kubectl(kubectl_bin, k8s_api, "logs", "two", "-c", "b")
    assert (res.returncode, res.stdout) == (0, "from b\n"), res.stderr

    # the server's own answer to a log request without a container
    res = kubectl(kubectl_bin, k8s_api, "get", "--raw", "/api/v1/namespaces/default/pods/two/log")
    assert res.returncode != 0
    assert ("Error from server (BadRequest): a container name must be specified for pod two, choose one of: "
            "[a b]") in res.stderr


def test_logs_follow(kubectl_bin: Path, k8s_api: Emulator) -> None:
    k8s_api.add(node("n1"))
    k8s_api.add(pod("web-1", node="n1"))
    k8s_api.set_log("default", "web-1", "booting\n")
    proc = subprocess.Popen(
        [str(kubectl_bin), f"--kubeconfig={k8s_api.kubeconfig}", "--request-timeout=30s",
         f"--cache-dir={k8s_api.workdir / 'kube-cache'}", "logs", "-f", "web-1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(k8s_api))
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert lines.get(timeout=15) == "booting\n"  # the stream is open
        k8s_api.append_log("default", "web-1", "listening on :8080\n")
        assert lines.get(timeout=15) == "listening on :8080\n"
        k8s_api.end_logs("default", "web-1")
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    assert lines.empty()
    follow = [r for r in k8s_api.requests if r.path.endswith("/pods/web-1/log")]
    assert follow[-1].query["follow"] == "true"


# --------------------------------------------------------------------------------------------
# the Python client


def test_python_client_models(kubectl_bin: Path, k8s_api: Emulator) -> None:
    from kubernetes import client, config, watch
    from kubernetes.client.exceptions import ApiException

    emu = k8s_api
    emu.add(node("n1", taints=["dedicated=db:NoSchedule"]))
    emu.add(node("n2", ready=False, unschedulable=True))
    emu.add(pod("web-1", node="n1", labels={"app": "web"}, owner=("ReplicaSet", "web-5d8f"),
                requests={"cpu": "500m", "memory": "256Mi"}))
    emu.add(pod("web-2", node="n1", labels={"app": "web"}, owner=("ReplicaSet", "web-5d8f")))
    emu.add(pod("crash", "shop", node="n1", restarts=2, waiting_reason="CrashLoopBackOff"))
    emu.add(pod("pend", "shop", pending_message="0/2 nodes are available: 2 Insufficient memory."))
    emu.add(pod("two", node="n1", containers=(("a", "nginx:1.25"), ("b", "busybox:1.36"))))
    emu.add(pod("job-x", node="n1", phase="Succeeded", owner=("Job", "job")))
    emu.add(deployment("web", replicas=3, ready=2))
    emu.add(statefulset("db", "shop", replicas=2, ready=1))
    emu.add(daemonset("fluent", "kube-system", desired=2, ready=1))
    emu.add(pdb("web", "default", {"app": "web"}, min_available=2))
    emu.set_log("default", "web-1", "hello\n")

    api = config.new_client_from_config(config_file=str(emu.kubeconfig))
    try:
        # Any: the assertions below reach through Optional fields the models type as "X | None"
        core: Any = client.CoreV1Api(api)
        apps: Any = client.AppsV1Api(api)
        policy: Any = client.PolicyV1Api(api)

        nodes = {n.metadata.name: n for n in core.list_node().items}
        assert set(nodes) == {"n1", "n2"}
        n1_conditions = nodes["n1"].status.conditions
        assert n1_conditions[0].type == "MemoryPressure" and n1_conditions[-1].type == "Ready"
        assert n1_conditions[-1].status == "True" and n1_conditions[-1].last_transition_time is not None
        taint = nodes["n1"].spec.taints[0]
        assert (taint.key, taint.value, taint.effect) == ("dedicated", "db", "NoSchedule")
        assert nodes["n2"].spec.unschedulable is True
        assert nodes["n1"].status.allocatable["cpu"] == "4"
        assert nodes["n1"].status.node_info.kubelet_version == "v1.29.4"

        pods = {f"{p.metadata.namespace}/{p.metadata.name}": p
                for p in core.list_pod_for_all_namespaces().items}
        crash = pods["shop/crash"].status.container_statuses[0]
        assert crash.state.waiting.reason == "CrashLoopBackOff" and crash.restart_count == 2
        assert crash.last_state.terminated.exit_code == 1
        web = pods["default/web-1"]
        assert web.metadata.owner_references[0].kind == "ReplicaSet"
        assert web.metadata.owner_references[0].controller is True
        assert web.spec.containers[0].resources.requests == {"cpu": "500m", "memory": "256Mi"}
        assert web.status.conditions[1].type == "Initialized"
        pending = pods["shop/pend"].status.conditions[0]
        assert (pending.type, pending.status, pending.reason) == ("PodScheduled", "False", "Unschedulable")
        assert pods["default/job-x"].status.container_statuses[0].state.terminated.reason == "Completed"

        # kubectl sees the same pods as the Python client
        res = kubectl(kubectl_bin, emu, "get", "pods", "-A", "-o", "json")
        assert res.returncode == 0, res.stderr
        seen = json.loads(res.stdout)["items"]
        assert {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in seen} == set(pods)

        w = watch.Watch()
        seen_events: list[tuple[str, str]] = []
        for ev in w.stream(core.list_namespaced_pod, "default", timeout_seconds=10):
            seen_events.append((ev["type"], ev["object"].metadata.name))
            if len(seen_events) == 4:
                w.stop()
        assert seen_events == [("ADDED", n) for n in ("job-x", "two", "web-1", "web-2")]

        assert core.read_namespaced_pod_log("web-1", "default") == "hello\n"
        with pytest.raises(ApiException) as exc:
            core.read_namespaced_pod_log("two", "default")
        assert exc.value.status == 400
        assert json.loads(exc.value.body or "")["message"] == (
            "a container name must be specified for pod two, choose one of: [a b]")

        deps = apps.list_deployment_for_all_namespaces().items
        assert [(d.metadata.name, d.spec.replicas, d.status.ready_replicas) for d in deps] == [("web", 3, 2)]
        assert deps[0].status.conditions[0].type == "Available"
        sts = apps.list_stateful_set_for_all_namespaces().items
        assert [(s.metadata.name, s.status.replicas, s.status.ready_replicas) for s in sts] == [("db", 2, 1)]
        dss = apps.list_daemon_set_for_all_namespaces().items
        assert [(d.metadata.name, d.status.desired_number_scheduled, d.status.number_ready) for d in dss] \
            == [("fluent", 2, 1)]

        assert {ns.metadata.name: ns.status.phase for ns in core.list_namespace().items} \
            == {"default": "Active", "kube-system": "Active", "shop": "Active"}
        assert core.read_namespaced_pod("web-1", "default").status.qos_class == "Burstable"
        assert apps.list_replica_set_for_all_namespaces().items == []

        # the client picks strategic merge patch for a dict body, JSON patch for a list
        cordoned = core.patch_node("n1", {"spec": {"unschedulable": True}})
        assert cordoned.spec.unschedulable is True
        assert [t.key for t in cordoned.spec.taints] == ["dedicated", "node.kubernetes.io/unschedulable"]
        back = core.patch_node("n1", [{"op": "remove", "path": "/spec/unschedulable"}])
        assert back.spec.unschedulable is None and [t.key for t in back.spec.taints] == ["dedicated"]
        assert [r.content_type for r in emu.requests if r.method == "PATCH"] == [
            "application/strategic-merge-patch+json", "application/json-patch+json"]

        budgets = policy.list_pod_disruption_budget_for_all_namespaces().items
        assert len(budgets) == 1
        st = budgets[0].status
        assert (st.current_healthy, st.desired_healthy, st.disruptions_allowed, st.expected_pods) \
            == (2, 2, 0, 2)
        assert st.conditions[0].type == "DisruptionAllowed" and st.conditions[0].status == "False"

        eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name="web-1", namespace="default"))
        with pytest.raises(ApiException) as exc:
            core.create_namespaced_pod_eviction("web-1", "default", eviction)
        assert exc.value.status == 429
        body: dict[str, Any] = json.loads(exc.value.body or "")
        assert (body["kind"], body["reason"], body["code"]) == ("Status", "TooManyRequests", 429)
        assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
        assert body["details"]["causes"] == [{
            "reason": "DisruptionBudget",
            "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}]
        assert emu.get("pods", "web-1") is not None

        emu.add(pdb("web", "default", {"app": "web"}, min_available=1))
        done = core.create_namespaced_pod_eviction("web-1", "default", eviction)
        assert done.kind == "Status"  # 201 with a Status body, as the real server answers
        assert emu.get("pods", "web-1") is None
    finally:
        api.close()


# --------------------------------------------------------------------------------------------
# server-side apply, the generically stored kinds

APPLY_MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: web
  namespace: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
data:
  @CONFIG@
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  replicas: @REPLICAS@
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      serviceAccountName: web
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: web-reader
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: web-reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: web-reader
subjects:
- kind: ServiceAccount
  name: web
  namespace: shop
"""
# what kubectl names the manifest's objects, in file order; and where the emulator keeps them
APPLIED = ["namespace/shop", "serviceaccount/web", "configmap/web-config", "deployment.apps/web",
           "service/web", "clusterrole.rbac.authorization.k8s.io/web-reader",
           "clusterrolebinding.rbac.authorization.k8s.io/web-reader"]
APPLIED_OBJECTS = [("namespaces", "shop", None), ("serviceaccounts", "web", "shop"),
                   ("configmaps", "web-config", "shop"), ("deployments", "web", "shop"),
                   ("services", "web", "shop"), ("clusterroles", "web-reader", None),
                   ("clusterrolebindings", "web-reader", None)]
CLUSTER_SCOPED_APPLIED = [APPLIED[0], APPLIED[5], APPLIED[6]]


def write_manifest(path: Path, *, replicas: int = 2, config: str = "LOG_LEVEL: info") -> Path:
    path.write_text(APPLY_MANIFEST.replace("@REPLICAS@", str(replicas)).replace("@CONFIG@", config))
    return path


def apply_server_side(kubectl_bin: Path, emu: Emulator, path: Path, *args: str,
                      manager: str = "debvisor") -> subprocess.CompletedProcess[str]:
    # --validate=false: kubectl validates -f input against the server's OpenAPI schema (1.27 GETs
    # /openapi/v2, 1.33 /openapi/v3 then /openapi/v2), which the emulator does not serve: without
    # it, apply fails before sending anything ("the server could not find the requested resource",
    # 1.33: "failed to download openapi"). It also makes kubectl send fieldValidation=Ignore.
    return kubectl(kubectl_bin, emu, "apply", "--server-side", f"--field-manager={manager}",
                   "--validate=false", "-f", str(path), *args)


def _resource_versions(emu: Emulator) -> dict[str, str]:
    out = {}
    for plural, name, ns in APPLIED_OBJECTS:
        obj = emu.get(plural, name, ns)
        assert obj is not None, (plural, name)
        out[plural] = obj["metadata"]["resourceVersion"]
    return out


def test_apply_server_side_creates_then_changes_nothing(kubectl_bin: Path, k8s_api: Emulator,
                                                        tmp_path: Path) -> None:
    emu = k8s_api
    manifest = write_manifest(tmp_path / "shop.yaml")

    res = apply_server_side(kubectl_bin, emu, manifest)

    assert res.returncode == 0, res
    assert res.stdout.splitlines() == [f"{n} serverside-applied" for n in APPLIED] and res.stderr == ""
    patches = emu.requests_to("PATCH")
    assert len(patches) == len(APPLIED)
    assert {(r.content_type, r.query["fieldManager"], r.query["force"]) for r in patches} \
        == {("application/apply-patch+yaml", "debvisor", "false")}
    for plural, name, ns in APPLIED_OBJECTS:
        obj = emu.get(plural, name, ns)
        assert obj is not None, (plural, name)
        (entry,) = obj["metadata"]["managedFields"]
        assert (entry["manager"], entry["operation"], entry["apiVersion"], entry["fieldsType"]) \
            == ("debvisor", "Apply", obj["apiVersion"], "FieldsV1")
    dep = emu.get("deployments", "web", "shop")
    assert dep is not None and dep["metadata"]["generation"] == 1 and dep["spec"]["replicas"] == 2
    assert not dep.get("status")  # no controller: nobody fills in the status
    assert dep["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"] \
        == {'k:{"name":"web"}': {".": {}, "f:image": {}, "f:name": {}, "f:ports": {
            'k:{"containerPort":80}': {".": {}, "f:containerPort": {}}}}}
    svc = emu.get("services", "web", "shop")
    assert svc is not None and re.fullmatch(r"10\.96\.\d+\.\d+", svc["spec"]["clusterIP"])
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"port": 80, "targetPort": 80, "protocol": "TCP"}]
    assert emu.get("configmaps", "web-config", "shop")["data"] == {"LOG_LEVEL": "info"}  # type: ignore[index]
    binding = emu.get("clusterrolebindings", "web-reader")
    assert binding is not None and binding["subjects"] == [{"kind": "ServiceAccount", "name": "web",
                                                            "namespace": "shop"}]
    before = _resource_versions(emu)

    # the same configuration again: every object answered unchanged, nothing written
    again = apply_server_side(kubectl_bin, emu, manifest)
    assert again.returncode == 0, again
    assert again.stdout.splitlines() == [f"{n} serverside-applied" for n in APPLIED]
    assert len(emu.requests_to("PATCH")) == 2 * len(APPLIED)
    assert _resource_versions(emu) == before

    res = kubectl(kubectl_bin, emu, "get", "deploy,svc,cm", "-n", "shop", "-o", "name")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["deployment.apps/web", "service/web", "configmap/web-config"]

    res = kubectl(kubectl_bin, emu, "get", "svc", "-n", "shop")
    assert res.returncode == 0, res.stderr
    (row,) = parse_table(res.stdout)
    assert (row["NAME"], row["TYPE"], row["CLUSTER-IP"], row["EXTERNAL-IP"], row["PORT(S)"]) \
        == ("web", "ClusterIP", svc["spec"]["clusterIP"], "<none>", "80/TCP")


def test_apply_server_side_updates_and_delete_f(kubectl_bin: Path, k8s_api: Emulator, tmp_path: Path) -> None:
    emu = k8s_api
    manifest = write_manifest(tmp_path / "shop.yaml")
    assert apply_server_side(kubectl_bin, emu, manifest).returncode == 0
    # what the deployment controller would report; applies never touch it (not in the manifest)
    emu.set_status("deployments", "web", "shop", {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                                                  "updatedReplicas": 2, "availableReplicas": 2})
    before = _resource_versions(emu)

    # 3 replicas; the ConfigMap's LOG_LEVEL replaced by MODE
    res = apply_server_side(kubectl_bin, emu, write_manifest(manifest, replicas=3, config="MODE: fast"))

    assert res.returncode == 0, res
    assert res.stdout.splitlines() == [f"{n} serverside-applied" for n in APPLIED]
    after = _resource_versions(emu)
    changed = {p for p in after if after[p] != before[p]}
    assert changed == {"deployments", "configmaps"}
    dep = emu.get("deployments", "web", "shop")
    assert dep is not None and dep["spec"]["replicas"] == 3 and dep["metadata"]["generation"] == 2
    assert dep["status"]["readyReplicas"] == 2
    # a field the manager applied before and no longer applies is removed
    assert emu.get("configmaps", "web-config", "shop")["data"] == {"MODE": "fast"}  # type: ignore[index]
    res = kubectl(kubectl_bin, emu, "get", "deploy", "web", "-n", "shop")
    assert res.returncode == 0, res.stderr
    assert parse_table(res.stdout)[0]["READY"] == "2/3"

    # kubectl deletes in file order: the namespace first, which stays Terminating (with its
    # objects) until the namespace controller is done, so the namespaced deletes still succeed
    emu.namespace_delete_delay = 0.5
    res = kubectl(kubectl_bin, emu, "delete", "-f", str(manifest), timeout=60)

    assert res.returncode == 0, res
    assert res.stdout.splitlines() == ['{} "{}" deleted'.format(*n.split("/", 1)) for n in APPLIED]
    for plural, name, ns in APPLIED_OBJECTS:
        assert emu.get(plural, name, ns) is None, (plural, name)
    assert {n["metadata"]["name"] for n in emu.list("namespaces")} == {"default", "kube-system"}
    assert [r.path for r in emu.requests_to("DELETE")][:2] == ["/api/v1/namespaces/shop",
                                                                "/api/v1/namespaces/shop/serviceaccounts/web"]


def test_apply_server_side_dry_run(kubectl_bin: Path, k8s_api: Emulator, tmp_path: Path) -> None:
    emu = k8s_api
    manifest = write_manifest(tmp_path / "shop.yaml")

    # as against a real server: the dry-run Namespace is not created, so the objects in it fail
    res = apply_server_side(kubectl_bin, emu, manifest, "--dry-run=server")

    assert res.returncode != 0, res
    assert res.stdout.splitlines() == [f"{n} serverside-applied (server dry run)"
                                       for n in CLUSTER_SCOPED_APPLIED]
    assert res.stderr.count('Error from server (NotFound): namespaces "shop" not found') == 4, res.stderr
    assert all(r.query.get("dryRun") == "All" for r in emu.requests_to("PATCH"))
    assert emu.get("namespaces", "shop") is None and emu.list("clusterroles") == []

    emu.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    ns_version = emu.get("namespaces", "shop")["metadata"]["resourceVersion"]  # type: ignore[index]
    res = apply_server_side(kubectl_bin, emu, manifest, "--dry-run=server")

    assert res.returncode == 0, res
    assert res.stdout.splitlines() == [f"{n} serverside-applied (server dry run)" for n in APPLIED]
    ns = emu.get("namespaces", "shop")
    assert ns is not None and ns["metadata"]["resourceVersion"] == ns_version
    assert "managedFields" not in ns["metadata"]
    for plural, name, namespace in APPLIED_OBJECTS[1:]:
        assert emu.get(plural, name, namespace) is None, (plural, name)


def test_apply_server_side_conflicts(kubectl_bin: Path, k8s_api: Emulator, tmp_path: Path) -> None:
    emu = k8s_api
    assert apply_server_side(kubectl_bin, emu, write_manifest(tmp_path / "shop.yaml")).returncode == 0
    ops = tmp_path / "ops.yaml"  # another manager: same template, other replicas
    ops.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n"
                   "spec:\n  replicas: 5\n  selector:\n    matchLabels:\n      app: web\n  template:\n"
                   "    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n"
                   "      - name: web\n        image: nginx:1.25\n")

    res = apply_server_side(kubectl_bin, emu, ops, manager="ops")

    assert res.returncode != 0, res
    assert 'error: Apply failed with 1 conflict: conflict with "debvisor": .spec.replicas' in res.stderr
    assert "command with the `--force-conflicts` flag" in res.stderr
    dep = emu.get("deployments", "web", "shop")
    assert dep is not None and dep["spec"]["replicas"] == 2 and dep["metadata"]["generation"] == 1

    res = apply_server_side(kubectl_bin, emu, ops, "--force-conflicts", manager="ops")

    assert res.returncode == 0, res
    assert res.stdout == "deployment.apps/web serverside-applied\n"
    assert emu.requests_to("PATCH")[-1].query["force"] == "true"
    dep = emu.get("deployments", "web", "shop")
    assert dep is not None and dep["spec"]["replicas"] == 5 and dep["metadata"]["generation"] == 2
    owners = {e["manager"]: e["fieldsV1"]["f:spec"] for e in dep["metadata"]["managedFields"]}
    assert set(owners) == {"debvisor", "ops"}
    assert "f:replicas" in owners["ops"] and "f:replicas" not in owners["debvisor"]  # ownership moved
    assert "f:template" in owners["ops"] and "f:template" in owners["debvisor"]  # same values: shared


def test_python_client_new_kinds(kubectl_bin: Path, k8s_api: Emulator) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    emu = k8s_api
    api = config.new_client_from_config(config_file=str(emu.kubeconfig))
    try:
        # Any: the assertions below reach through Optional fields the models type as "X | None"
        core: Any = client.CoreV1Api(api)
        rbac: Any = client.RbacAuthorizationV1Api(api)
        net: Any = client.NetworkingV1Api(api)
        reg: Any = client.ApiregistrationV1Api(api)

        ns = core.create_namespace({"metadata": {"name": "shop"}})
        assert ns.status.phase == "Active" and ns.metadata.labels == {"kubernetes.io/metadata.name": "shop"}
        core.create_namespaced_service("shop", {"metadata": {"name": "web"}, "spec": {
            "type": "NodePort", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}})
        core.create_namespaced_secret("shop", {"metadata": {"name": "creds"},
                                               "stringData": {"user": "admin"}})
        core.create_namespaced_service_account("shop", {"metadata": {"name": "web"}})
        rbac.create_cluster_role({"metadata": {"name": "reader", "labels": {"tier": "base"}}, "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})
        rbac.create_cluster_role({"metadata": {"name": "admin-extra"}, "rules": []})
        rbac.create_namespaced_role_binding("shop", {
            "metadata": {"name": "web-reads"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}]})
        net.create_ingress_class({"metadata": {"name": "nginx"},
                                  "spec": {"controller": "k8s.io/ingress-nginx"}})
        net.create_namespaced_ingress("shop", {"metadata": {"name": "web"}, "spec": {
            "ingressClassName": "nginx", "rules": [{"host": "shop.example", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
        emu.add({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                 "metadata": {"name": "v1beta1.metrics.k8s.io"},
                 "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                          "versionPriority": 100,
                          "service": {"name": "metrics-server", "namespace": "kube-system"}},
                 "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Passed",
                                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})

        (svc,) = core.list_namespaced_service("shop").items
        assert svc.spec.type == "NodePort" and svc.spec.cluster_ip.startswith("10.96.")
        port = svc.spec.ports[0]
        assert (port.port, port.target_port, port.protocol) == (80, 80, "TCP")
        assert 30000 <= port.node_port <= 32767
        (secret,) = core.list_namespaced_secret("shop").items
        assert (secret.type, secret.data, secret.string_data) == ("Opaque", {"user": "YWRtaW4="}, None)
        assert [r.metadata.name for r in rbac.list_cluster_role().items] == ["admin-extra", "reader"]
        (reader,) = rbac.list_cluster_role(label_selector="tier=base").items
        assert reader.rules[0].verbs == ["get", "list"]
        (binding,) = rbac.list_role_binding_for_all_namespaces().items
        assert (binding.role_ref.kind, binding.subjects[0].name) == ("ClusterRole", "web")
        (ingress_class,) = net.list_ingress_class().items
        assert ingress_class.spec.controller == "k8s.io/ingress-nginx"
        assert ingress_class.metadata.generation == 1
        (ingress,) = net.list_namespaced_ingress("shop").items
        assert ingress.spec.rules[0].http.paths[0].backend.service.port.number == 80
        (apiservice,) = reg.list_api_service().items
        assert apiservice.spec.service.name == "metrics-server"

        # server-side apply through the client: the content type picks it
        apply_body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config"},
                      "data": {"MODE": "fast"}}
        applied = core.patch_namespaced_config_map("web-config", "shop", apply_body,
                                                   field_manager="debvisor-py",
                                                   _content_type="application/apply-patch+yaml")
        assert applied.data == {"MODE": "fast"}
        assert [(m.manager, m.operation) for m in applied.metadata.managed_fields] \
            == [("debvisor-py", "Apply")]
        with pytest.raises(ApiException) as exc:
            core.patch_namespaced_config_map("web-config", "shop", apply_body,
                                             _content_type="application/apply-patch+yaml")
        assert exc.value.status == 422
        assert json.loads(exc.value.body or "")["message"] == ('PatchOptions.meta.k8s.io "" is invalid: '
                                                               "fieldManager: Required value: is required "
                                                               "for apply patch")

        # kubectl sees the same objects, in its tables
        res = kubectl(kubectl_bin, emu, "get", "ingress,rolebinding", "-n", "shop")
        assert res.returncode == 0, res.stderr
        ing_table, rb_table = res.stdout.split("\n\n")
        row = parse_table(ing_table)[0]
        assert (row["NAME"], row["CLASS"], row["HOSTS"], row["PORTS"]) \
            == ("ingress.networking.k8s.io/web", "nginx", "shop.example", "80")
        assert parse_table(rb_table)[0]["ROLE"] == "ClusterRole/reader"
        res = kubectl(kubectl_bin, emu, "get", "apiservices")
        assert res.returncode == 0, res.stderr
        row = parse_table(res.stdout)[0]
        assert (row["NAME"], row["SERVICE"], row["AVAILABLE"]) == ("v1beta1.metrics.k8s.io",
                                                                   "kube-system/metrics-server", "True")

        # a namespace goes with everything in it
        gone = core.delete_namespace("shop")
        # the namespace, Terminating, as the real server answers (its finalizer); the client's
        # response type for delete_namespace is "object": a plain dict
        assert (gone["kind"], gone["status"]["phase"]) == ("Namespace", "Terminating")
        assert gone["metadata"]["deletionTimestamp"]
        assert emu.get("namespaces", "shop") is None
        assert core.list_namespaced_service("shop").items == [] and emu.list("secrets") == []
        assert [i.metadata.name for i in net.list_ingress_class().items] == ["nginx"]  # cluster-scoped: stays
    finally:
        api.close()
