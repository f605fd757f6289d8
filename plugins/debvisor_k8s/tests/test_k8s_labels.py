"""`k8s label` and `k8s taint` against the API emulator: set, remove, roll back, refuse bad
input in one sentence."""

from __future__ import annotations

from typing import Any

import pytest

from debvisor_core.testing import one_error


@pytest.fixture
def k8s(k8s_api: Any, dv_state: Any) -> Any:
    dv_state.config({"k8s": {"kubeconfig": str(k8s_api.kubeconfig), "request_timeout": 10}})
    k8s_api.add(k8s_api.node("worker1", labels={"zone": "a", "old": "x"},
                             taints=({"key": "keep", "value": "1", "effect": "NoSchedule"},)))
    return k8s_api


def _labels(emu: Any) -> dict[str, str]:
    return dict(emu.get("nodes", "worker1")["metadata"]["labels"])


def _taints(emu: Any) -> list[tuple[str, str, str]]:
    return sorted((t["key"], t.get("value", ""), t["effect"])
                  for t in emu.get("nodes", "worker1")["spec"].get("taints") or [])


def test_label_sets_and_removes_and_rolls_back(dv: Any, k8s: Any) -> None:
    before = _labels(k8s)
    res = dv("--json", "k8s", "label", "worker1", "debvisor.io/rack=r12", "zone=b", "old-",
             "--yes")
    assert res.code == 0 and res.json["status"] == "succeeded", res
    after = _labels(k8s)
    assert after["debvisor.io/rack"] == "r12" and after["zone"] == "b" and "old" not in after
    assert dv("k8s", "label", "worker1", "zone=b", "--yes").stdout.strip() == \
        "the node's labels are already so"
    assert dv("k8s", "label", "--rollback", "--yes").code == 0
    assert _labels(k8s) == before


def test_taint_adds_replaces_removes_and_rolls_back(dv: Any, k8s: Any) -> None:
    res = dv("k8s", "taint", "worker1", "dedicated=db:NoSchedule", "keep=2:NoSchedule",
             "--yes")
    assert res.code == 0, res
    assert _taints(k8s) == [("dedicated", "db", "NoSchedule"), ("keep", "2", "NoSchedule")]
    assert dv("k8s", "taint", "worker1", "keep-", "--yes").code == 0
    assert _taints(k8s) == [("dedicated", "db", "NoSchedule")]
    assert dv("k8s", "taint", "--rollback", "--yes").code == 0
    assert _taints(k8s) == [("dedicated", "db", "NoSchedule"), ("keep", "2", "NoSchedule")]


@pytest.mark.parametrize("argv, words", [
    (("label", "worker1", "novalue"), "write key=value to set it or key- to remove it"),
    (("label", "worker1", "bad key=1"), "not a valid Kubernetes label key"),
    (("label", "worker1", "k=" + "v" * 64), "not a valid label value"),
    (("taint", "worker1", "k=v:Sometimes"), "the effect must be one of"),
    (("taint", "worker1", "k=v"), "write key[=value]:Effect"),
    (("label", "nosuchnode", "a=b"), "no node nosuchnode in the cluster"),
])
def test_bad_labels_and_taints_are_one_sentence(dv: Any, k8s: Any, argv: tuple[str, ...],
                                                 words: str) -> None:
    before = (_labels(k8s), _taints(k8s))
    res = dv("k8s", *argv, "--yes")
    assert res.code == 2 and words in one_error(res.stderr), res
    assert (_labels(k8s), _taints(k8s)) == before
