"""`k8s debug` against the API emulator, whose attached containers are real `busybox sh`
processes: an ephemeral container in a pod (the exit code is the shell's), a node debug pod
that is always removed (or kept with --keep, then found by --cleanup), image pull errors and
bad input in one sentence."""

from __future__ import annotations

import json
from typing import Any

import pytest

from debvisor_core.testing import one_error


@pytest.fixture
def k8s(k8s_api: Any, dv_state: Any) -> Any:
    dv_state.config({"k8s": {"kubeconfig": str(k8s_api.kubeconfig), "request_timeout": 10}})
    k8s_api.add(k8s_api.node("worker1"))
    k8s_api.add(k8s_api.pod("web-0", node="worker1", owner=("StatefulSet", "web")))
    return k8s_api


def _audit(dv_state: Any) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (dv_state.path / "log" / "audit.jsonl").read_text().splitlines()]


def _debug_pods(emu: Any) -> list[str]:
    return sorted(p["metadata"]["name"] for p in emu.list("pods")
                  if (p["metadata"].get("labels") or {}).get("debvisor.io/debug") == "node")


def test_debug_pod_attaches_an_ephemeral_container(dv: Any, k8s: Any, dv_state: Any) -> None:
    container = k8s.pod("web-0")["spec"]["containers"][0]["name"]
    res = dv("k8s", "debug", "web-0", "--target", container, "-c", "dbg",
             input="echo hello; echo oops >&2; exit 3\n")
    assert res.code == 3, res
    assert "hello" in res.stdout and "oops" in res.stderr
    pod = k8s.get("pods", "web-0", "default")
    (eph,) = pod["spec"]["ephemeralContainers"]
    assert (eph["name"], eph["image"], eph["targetContainerName"]) == ("dbg", "busybox", container)
    events = [e for e in _audit(dv_state) if e["result"].startswith("debug-")]
    assert [e["result"] for e in events] == ["debug-started", "debug-ended"]
    assert events[1]["details"]["exit_code"] == 3
    again = dv("k8s", "debug", "web-0", "-c", "dbg", input="exit 0\n")
    assert again.code == 2 and "already has a container named dbg" in one_error(again.stderr)


def test_debug_node_removes_its_pod_whatever_happens(dv: Any, k8s: Any) -> None:
    res = dv("k8s", "debug", "node/worker1", input="echo on-node; exit 0\n")
    assert res.code == 0 and "on-node" in res.stdout, res
    assert "the node's root filesystem is at /host" in res.stderr
    assert _debug_pods(k8s) == []
    created = [r for r in k8s.requests if r.method == "POST" and r.path.endswith("/pods")]
    assert len(created) == 1
    bad = dv("k8s", "debug", "node/worker1", "--image", "registry.invalid/none:1",
             "--timeout", "20s", input="exit 0\n")
    assert bad.code == 1 and "cannot start: ImagePullBackOff" in one_error(bad.stderr), bad
    assert _debug_pods(k8s) == []


def test_debug_node_keep_then_cleanup(dv: Any, k8s: Any) -> None:
    res = dv("k8s", "debug", "node/worker1", "--keep", input="exit 0\n")
    assert res.code == 0, res
    (kept,) = _debug_pods(k8s)
    pod = k8s.get("pods", kept, "default")
    spec = pod["spec"]
    assert spec["nodeName"] == "worker1" and spec["hostPID"] and spec["hostNetwork"]
    assert {"name": "host-root", "mountPath": "/host"} in spec["containers"][0]["volumeMounts"]
    nxt = dv("k8s", "debug", "node/worker1", input="exit 0\n")
    assert f"default/{kept}" in nxt.stderr and "earlier debug pod" in nxt.stderr
    gone = dv("--json", "k8s", "debug", "--cleanup")
    assert gone.code == 0 and gone.json["deleted"] == [f"default/{kept}"]
    assert _debug_pods(k8s) == []


@pytest.mark.parametrize("argv, words", [
    ((), "name a POD or node/NAME"),
    (("nosuch",), "no pod nosuch in namespace default"),
    (("web-0", "--target", "nope"), "has no container 'nope' to target"),
    (("web-0", "--keep"), "--keep is for node/NAME"),
    (("node/nosuch",), "no node nosuch in the cluster"),
    (("node/worker1", "-c", "x"), "a node debug pod has one container"),
    (("Web_0",), "not a valid Kubernetes name"),
    (("web-0", "--image", "-oops"), "is not an image reference"),
])
def test_bad_debug_input_is_one_sentence(dv: Any, k8s: Any, argv: tuple[str, ...],
                                         words: str) -> None:
    res = dv("k8s", "debug", *argv, input="")
    assert res.code == 2 and words in one_error(res.stderr), res
    assert _debug_pods(k8s) == [] and "ephemeralContainers" not in \
        k8s.get("pods", "web-0", "default")["spec"]
