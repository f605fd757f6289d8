"""`debvisor k8s …` against the API emulator (k8s_emulator.py), run as an operator would:
the CLI in a subprocess, the state checked through the emulator's own Python API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from debvisor_core.testing import imports_of, one_error


@pytest.fixture
def k8s(k8s_api: Any, dv_state: Any) -> Any:
    """The emulator, with this test's DebVisor config pointing at its kubeconfig."""
    dv_state.config({"k8s": {"kubeconfig": str(k8s_api.kubeconfig), "request_timeout": 10}})
    return k8s_api


def _seed_node(emu: Any, name: str = "worker1", **kw: Any) -> None:
    emu.add(emu.node(name, **kw))


def test_help_does_not_import_the_client() -> None:
    for argv in (("--help",), ("k8s", "--help"), ("k8s", "drain", "--help")):
        _, mods = imports_of(*argv)
        assert not any(m == "kubernetes" or m.startswith("kubernetes.") for m in mods), argv


def test_nodes_reports_capacity_and_what_needs_attention(dv: Any, k8s: Any) -> None:
    k8s.add(k8s.node("cp1", labels={"node-role.kubernetes.io/control-plane": ""}, cpu="4",
                     memory="8Gi"))
    k8s.add(k8s.node("worker1", ready=False, ready_since="2026-01-01T00:00:00Z"))
    k8s.add(k8s.node("worker2", unschedulable=True,
                     taints=({"key": "dedicated", "value": "db", "effect": "NoSchedule"},)))
    k8s.add(k8s.pod("web-1", node="cp1", requests={"cpu": "500m", "memory": "256Mi"}))
    k8s.add(k8s.pod("web-2", node="cp1", requests={"cpu": "1", "memory": "1Gi"}))
    k8s.add(k8s.pod("done", node="cp1", phase="Succeeded", requests={"cpu": "2"}))
    res = dv("--json", "k8s", "nodes")
    assert res.code == 0, res
    nodes = {n["name"]: n for n in res.json["nodes"]}
    cp = nodes["cp1"]
    assert cp["ready"] is True and cp["roles"] == ["control-plane"]
    assert cp["requested"] == {"cpu": 1.5, "memory_bytes": 256 * 2**20 + 2**30}
    assert cp["allocatable"]["cpu"] == 4 and cp["allocatable"]["memory_bytes"] == 8 * 2**30
    assert cp["pods"] == 2 and cp["attention"] == []
    assert nodes["worker1"]["ready"] is False
    assert nodes["worker1"]["attention"][0].startswith("NotReady for ")
    assert re.match(r"NotReady for \d+d\b", nodes["worker1"]["attention"][0])  # days
    w2 = nodes["worker2"]
    assert w2["cordoned"]
    assert {"key": "dedicated", "value": "db", "effect": "NoSchedule"} in w2["taints"]
    assert any("cordoned without a reason" in a for a in w2["attention"])
    human = dv("k8s", "nodes")
    assert human.code == 0, human
    assert "Ready,SchedulingDisabled" in human.stdout and "1.5/4 (38%)" in human.stdout
    assert "worker1: NotReady for" in human.stdout


def test_workloads_name_every_unhealthy_pod_and_its_reason(dv: Any, k8s: Any) -> None:
    k8s.add(k8s.deployment("web", "shop", replicas=3, ready=2, updated=3, available=2))
    k8s.add(k8s.statefulset("db", "shop", replicas=1, ready=1, updated=1))
    k8s.add(k8s.daemonset("agent", "kube-system", desired=2, ready=2, updated=2))
    k8s.add(k8s.pod("web-a", "shop", node="n1", waiting_reason="CrashLoopBackOff", restarts=7))
    k8s.add(k8s.pod("web-b", "shop", node="n1", waiting_reason="ImagePullBackOff"))
    k8s.add(k8s.pod("web-c", "shop", phase="Pending", ready=False,
                    pending_message="0/3 nodes are available: 3 Insufficient cpu."))
    k8s.add(k8s.pod("db-0", "shop", node="n1"))
    res = dv("--json", "k8s", "workloads", "-A")
    assert res.code == 0, res
    wl = {(w["kind"], w["name"]): w for w in res.json["workloads"]}
    assert wl[("Deployment", "web")]["ok"] is False and wl[("StatefulSet", "db")]["ok"]
    assert wl[("DaemonSet", "agent")]["desired"] == 2
    pods = {p["name"]: p for p in res.json["pods"]}
    assert set(pods) == {"web-a", "web-b", "web-c"}
    assert pods["web-a"]["reason"] == "CrashLoopBackOff" and pods["web-a"]["restarts"] == 7
    assert pods["web-b"]["reason"] == "ImagePullBackOff"
    assert pods["web-c"]["reason"] == "Unschedulable" and "Insufficient cpu" in pods["web-c"]["message"]
    one = dv("--json", "k8s", "workloads", "-n", "kube-system")
    assert one.code == 0, one
    assert [w["name"] for w in one.json["workloads"]] == ["agent"] and one.json["pods"] == []


def _drain_bed(emu: Any, *, allowed: bool) -> None:
    emu.add(emu.node("worker1"))
    emu.add(emu.node("worker2"))
    emu.add(emu.pod("web-1", "shop", node="worker1", labels={"app": "web"},
                    owner=("ReplicaSet", "web-7d9")))
    emu.add(emu.pod("web-2", "shop", node="worker2", labels={"app": "web"},
                    owner=("ReplicaSet", "web-7d9")))
    emu.add(emu.pod("db-0", "shop", node="worker1", labels={"app": "db"},
                    owner=("StatefulSet", "db")))
    emu.add(emu.pod("agent-x", "kube-system", node="worker1", owner=("DaemonSet", "agent")))
    # web: 2 healthy; minAvailable 1 lets one go. db: 1 healthy, minAvailable 1 blocks.
    emu.add(emu.pdb("web-pdb", "shop", {"app": "web"}, min_available=1))
    emu.add(emu.pdb("db-pdb", "shop", {"app": "db"}, min_available=0 if allowed else 1))


def _names(emu: Any) -> set[str]:
    return {p["metadata"]["name"] for p in emu.list("pods")}


def test_drain_evicts_through_the_eviction_api_and_leaves_daemonset_pods(dv: Any, k8s: Any) -> None:
    _drain_bed(k8s, allowed=True)
    res = dv("--json", "k8s", "drain", "worker1", "--reason", "kernel update", "--yes")
    assert res.code == 0, res
    assert res.json["result"]["evicted"] == ["shop/db-0", "shop/web-1"]
    assert _names(k8s) == {"web-2", "agent-x"}
    node = k8s.get("nodes", "worker1")
    assert node["spec"]["unschedulable"] is True
    assert node["metadata"]["annotations"]["debvisor.io/cordon-reason"] == "kernel update"
    evictions = [r for r in k8s.requests if r[0] == "POST" and r[1].endswith("/eviction")]
    assert sorted(r[1].split("/")[-2] for r in evictions) == ["db-0", "web-1"]
    assert not [r for r in k8s.requests if r[0] == "DELETE"]  # evicted, never deleted
    back = dv("k8s", "uncordon", "worker1", "--yes")
    assert back.code == 0, back
    node = k8s.get("nodes", "worker1")
    assert not node["spec"].get("unschedulable")
    assert "debvisor.io/cordon-reason" not in (node["metadata"].get("annotations") or {})


def test_drain_blocked_by_a_pdb_names_it_and_uncordons(dv: Any, k8s: Any) -> None:
    _drain_bed(k8s, allowed=False)
    t0 = time.monotonic()
    res = dv("k8s", "drain", "worker1", "--timeout", "3s", "--yes")
    assert res.code == 4, res
    assert time.monotonic() - t0 < 30
    assert "pod shop/db-0: eviction blocked by PodDisruptionBudget shop/db-pdb" in res.stderr
    err = [line for line in res.stderr.splitlines() if line.startswith("[ERROR]")][-1]
    assert "did not finish within 3s" in err and "pod shop/db-0 by PodDisruptionBudget " \
        "shop/db-pdb" in err, err
    assert "every applied step was undone" in err
    assert not k8s.get("nodes", "worker1")["spec"].get("unschedulable")  # cordon undone
    assert "db-0" in _names(k8s) and "web-1" not in _names(k8s)


def test_drain_keep_cordoned_pauses_and_resume_finishes(dv: Any, k8s: Any) -> None:
    _drain_bed(k8s, allowed=False)
    res = dv("k8s", "drain", "worker1", "--timeout", "2s", "--keep-cordoned", "--yes")
    assert res.code == 4, res
    assert "nothing was undone and the operation is paused" in res.stderr
    assert k8s.get("nodes", "worker1")["spec"]["unschedulable"] is True
    op = json.loads(dv("--json", "ops", "list").stdout)
    paused = [o for o in (op["operations"] if isinstance(op, dict) else op)
              if o["status"] == "paused"]
    assert len(paused) == 1, op
    k8s.delete("poddisruptionbudgets", "db-pdb", "shop")  # the operator fixes the cause
    again = dv("ops", "resume", paused[0]["id"], "--yes")
    assert again.code == 0, again
    assert _names(k8s) == {"web-2", "agent-x"}


def test_drain_refuses_unmanaged_pods_without_force(dv: Any, k8s: Any) -> None:
    k8s.add(k8s.node("worker1"))
    k8s.add(k8s.pod("lonely", "default", node="worker1"))
    res = dv("k8s", "drain", "worker1", "--yes")
    assert res.code == 3, res
    assert "not managed by a controller" in res.stderr and "default/lonely" in res.stderr
    assert not k8s.get("nodes", "worker1")["spec"].get("unschedulable")
    dry = dv("k8s", "drain", "worker1", "--force", "--dry-run")
    assert dry.code == 0, dry
    assert "evict 1 pod(s): default/lonely from worker1" in dry.stdout + dry.stderr
    assert "lonely" in _names(k8s) and not k8s.get("nodes", "worker1")["spec"].get("unschedulable")


def test_unknown_node_is_one_sentence(dv: Any, k8s: Any) -> None:
    res = dv("k8s", "drain", "nosuch", "--yes")
    assert res.code == 2 and "Traceback" not in res.stderr
    assert "no node nosuch in the cluster" in res.stderr


def test_bad_kubeconfig_is_bad_input(dv: Any, dv_state: Any, tmp_path: Path) -> None:
    dv_state.config({"k8s": {"kubeconfig": str(tmp_path / "missing")}})
    res = dv("k8s", "nodes")
    assert res.code == 2, res
    assert one_error(res.stderr) == f"[ERROR] no kubeconfig at {tmp_path / 'missing'}: set [k8s] " \
                                    f"kubeconfig or KUBECONFIG"


def test_logs_plain_tail_and_container_choice(dv: Any, k8s: Any) -> None:
    k8s.add(k8s.pod("web-1", node="n1"))
    k8s.set_log("default", "web-1", "one\ntwo\nthree\n")
    k8s.add(k8s.pod("two", node="n1", containers=(("app", "nginx"), ("side", "busybox"))))
    res = dv("k8s", "logs", "web-1")
    assert res.code == 0, res
    assert res.stdout == "one\ntwo\nthree\n"
    tail = dv("--json", "k8s", "logs", "web-1", "--tail", "2")
    assert tail.json["lines"] == ["two", "three"]
    many = dv("k8s", "logs", "two")
    assert many.code == 2
    assert one_error(many.stderr) == "[ERROR] pod two has 2 containers: app, side; choose one with -c"


def test_logs_follow_streams_until_the_log_ends(k8s: Any) -> None:
    k8s.add(k8s.pod("web-1", node="n1"))
    k8s.set_log("default", "web-1", "first\n")
    proc = subprocess.Popen([sys.executable, "-m", "debvisor_core", "k8s", "logs", "web-1",
                             "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "first\n"
        k8s.append_log("default", "web-1", "second\n")
        assert proc.stdout.readline() == "second\n"
        k8s.end_logs("default", "web-1")
        assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()


def test_requests_count_native_sidecars_as_the_scheduler_does() -> None:
    from debvisor_k8s.inventory import pod_requests

    def c(name: str, cpu: str, **kw: str) -> dict[str, Any]:
        return {"name": name, "resources": {"requests": {"cpu": cpu}}, **kw}

    pod = {"spec": {"containers": [c("app", "200m")],
                    "initContainers": [c("migrate", "500m"),
                                       c("proxy", "100m", restartPolicy="Always"),
                                       c("late", "250m")]}}
    # sidecar 100m runs beside the app: 300m; the init peak is max(500m, 250m + 100m)
    assert pod_requests(pod)[0] == Decimal("0.5")
    pod["spec"]["initContainers"][0]["resources"]["requests"]["cpu"] = "150m"
    assert pod_requests(pod)[0] == Decimal("0.35")  # late init 250m + the sidecar
    pod["spec"]["initContainers"][2]["resources"]["requests"]["cpu"] = "50m"
    assert pod_requests(pod)[0] == Decimal("0.3")  # app + sidecar
    pod["spec"]["resources"] = {"requests": {"cpu": "2"}}  # pod-level requests win
    assert pod_requests(pod)[0] == Decimal(2)
