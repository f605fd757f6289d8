"""`debvisor maintenance enable --drain`: maintenance on, then the k8s plugin's cordon and
PDB-aware drain as one journalled operation; `maintenance disable` rolls it back; a drain
that a PodDisruptionBudget blocks leaves nothing behind."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def k8s(k8s_api: Any, dv_state: Any) -> Any:
    dv_state.config({"k8s": {"kubeconfig": str(k8s_api.kubeconfig), "node_name": "worker1",
                             "request_timeout": 10}})
    k8s_api.add(k8s_api.node("worker1"))
    k8s_api.add(k8s_api.node("worker2"))
    k8s_api.add(k8s_api.pod("web-1", node="worker1", labels={"app": "web"},
                            owner=("ReplicaSet", "web-1a2")))
    k8s_api.add(k8s_api.pod("agent", node="worker1", owner=("DaemonSet", "agent")))
    return k8s_api


def _cordoned(emu: Any) -> bool:
    return bool(emu.get("nodes", "worker1")["spec"].get("unschedulable"))


def _pods(emu: Any) -> list[str]:
    return sorted(p["metadata"]["name"] for p in emu.list("pods"))


def test_enable_drain_cordons_and_evicts_and_disable_uncordons(dv: Any, k8s: Any) -> None:
    dry = dv("maintenance", "enable", "--drain", "--reason", "disk swap", "--dry-run")
    assert dry.code == 0, dry
    plan = dry.stdout + dry.stderr
    assert "turn maintenance mode on (disk swap)" in plan
    assert "cordon worker1 (debvisor maintenance: disk swap)" in plan
    assert "evict 1 pod(s): default/web-1 from worker1" in plan
    assert not _cordoned(k8s) and _pods(k8s) == ["agent", "web-1"]
    assert dv("--json", "maintenance", "status").json["enabled"] is False

    res = dv("--json", "maintenance", "enable", "--drain", "--reason", "disk swap", "--yes")
    assert res.code == 0 and res.json["status"] == "succeeded", res
    assert [s["name"] for s in res.json["steps"]] == ["EnterMaintenance", "K8sUpgradeCordon",
                                                      "K8sUpgradeEvict"]
    assert _cordoned(k8s) and _pods(k8s) == ["agent"]  # the DaemonSet's pod stays
    status = dv("--json", "maintenance", "status").json
    assert status["enabled"] and status["reason"] == "disk swap"
    assert status["operation"] == res.json["id"]
    refused = dv("k8s", "cordon", "worker2", "--yes")  # maintenance refuses other operations
    assert refused.code == 3 and "maintenance mode is on" in refused.stderr

    off = dv("--json", "maintenance", "disable")
    assert off.code == 0 and off.json["rolled_back"] == res.json["id"], off
    assert not _cordoned(k8s)
    assert dv("--json", "maintenance", "status").json["enabled"] is False


def test_a_blocked_drain_rolls_everything_back(dv: Any, k8s: Any) -> None:
    k8s.add(k8s.pdb("web-pdb", "default", {"app": "web"}, min_available=1))
    res = dv("maintenance", "enable", "--drain", "--drain-timeout", "2s", "--yes")
    assert res.code == 4, res  # failed and rolled back
    assert "PodDisruptionBudget default/web-pdb" in res.stderr
    assert not _cordoned(k8s) and "web-1" in _pods(k8s)
    assert dv("--json", "maintenance", "status").json["enabled"] is False


def test_enable_without_drain_is_unchanged(dv: Any, k8s: Any) -> None:
    res = dv("maintenance", "enable", "--reason", "r")
    assert res.code == 0 and res.stdout.strip() == "maintenance mode enabled: r"
    assert not _cordoned(k8s)
    assert dv("maintenance", "disable").stdout.strip() == "maintenance mode disabled"


def test_upgrade_check_fails_on_a_node_not_ready(dv: Any, k8s: Any) -> None:
    res = dv("--json", "upgrade", "check", "--only", "k8s.")
    assert res.code == 0 and res.json["checks"][0]["status"] == "pass", res
    k8s.add(k8s.node("worker3", ready=False))
    res = dv("--json", "upgrade", "check", "--only", "k8s.")
    (check,) = res.json["checks"]
    assert res.code == 1 and check["status"] == "fail" and "worker3" in check["summary"], res
