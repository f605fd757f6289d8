"""The upgrade contract: around a `node.upgrade` operation the plugin cordons and drains the
node first and uncordons it after, and a failed upgrade's rollback uncordons it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from debvisor_core.context import Context
from debvisor_core.engine import Operation, run
from debvisor_core.errors import RolledBack, StepFailed
from debvisor_core.model import Step

SEEN: dict[str, Any] = {}


@dataclass
class UpgradeWork(Step):
    """Stands in for the upgrade's own step: records what the node looked like meanwhile."""

    fail: bool = False

    def apply(self, ctx: Any, prior: dict[str, Any]) -> dict[str, Any]:
        emu = SEEN["emu"]
        SEEN["cordoned"] = bool(emu.get("nodes", "worker1")["spec"].get("unschedulable"))
        SEEN["pods"] = sorted(p["metadata"]["name"] for p in emu.list("pods"))
        if self.fail:
            raise StepFailed("upgrade failed on purpose")
        return {}


@pytest.fixture
def k8s(k8s_api: Any, dv_state: Any) -> Any:
    dv_state.config({"k8s": {"kubeconfig": str(k8s_api.kubeconfig), "node_name": "worker1"}})
    k8s_api.add(k8s_api.node("worker1"))
    k8s_api.add(k8s_api.node("worker2"))
    k8s_api.add(k8s_api.pod("web-1", node="worker1", owner=("ReplicaSet", "web-1a2")))
    k8s_api.add(k8s_api.pod("agent", node="worker1", owner=("DaemonSet", "agent")))
    SEEN.clear()
    SEEN["emu"] = k8s_api
    return k8s_api


def _upgrade(fail: bool = False) -> Any:
    return run(Context(yes=True), Operation(kind="node.upgrade", title="upgrade worker1",
                                            steps=[UpgradeWork(fail=fail)],
                                            params={"checks": False}))  # the steps, not the checklist


def test_upgrade_drains_before_and_uncordons_after(k8s: Any) -> None:
    res = _upgrade()
    assert res.status == "succeeded"
    assert [s["name"] for s in res.steps] == ["K8sUpgradeCordon", "K8sUpgradeEvict",
                                              "UpgradeWork", "K8sUpgradeUncordon"]
    assert SEEN["cordoned"] is True and SEEN["pods"] == ["agent"]  # drained, DaemonSet stays
    node = k8s.get("nodes", "worker1")
    assert not node["spec"].get("unschedulable")


def test_failed_upgrade_rolls_back_the_cordon(k8s: Any) -> None:
    with pytest.raises(RolledBack):
        _upgrade(fail=True)
    assert SEEN["cordoned"] is True
    assert not k8s.get("nodes", "worker1")["spec"].get("unschedulable")


def test_a_node_cordoned_by_the_operator_stays_cordoned(k8s: Any) -> None:
    node = k8s.get("nodes", "worker1")
    node["spec"]["unschedulable"] = True
    node["metadata"].setdefault("annotations", {})["debvisor.io/cordon-reason"] = "bad disk"
    k8s.add(node)
    assert _upgrade().status == "succeeded"
    node = k8s.get("nodes", "worker1")
    assert node["spec"]["unschedulable"] is True
    assert node["metadata"]["annotations"]["debvisor.io/cordon-reason"] == "bad disk"


def test_opt_out_and_other_kinds_get_no_k8s_steps(k8s: Any) -> None:
    res = run(Context(yes=True), Operation(kind="node.upgrade", title="no drain",
                                           steps=[UpgradeWork()],
                                           params={"k8s_drain": False, "checks": False}))
    assert [s["name"] for s in res.steps] == ["UpgradeWork"]
    res = run(Context(yes=True), Operation(kind="hv.other", title="x", steps=[UpgradeWork()]))
    assert [s["name"] for s in res.steps] == ["UpgradeWork"]
