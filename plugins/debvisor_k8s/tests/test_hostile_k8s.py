"""Hostile input to `debvisor k8s`: names that would walk the API's URL space are refused
in one sentence (exit 2) before any request is sent."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def k8s(k8s_api: Any, dv_state: Any) -> Any:
    dv_state.config({"k8s": {"kubeconfig": str(k8s_api.kubeconfig)}})
    k8s_api.add(k8s_api.node("worker1"))
    k8s_api.add(k8s_api.pod("web-1", node="worker1"))
    return k8s_api


@pytest.mark.parametrize("argv", [
    ("k8s", "logs", "../../../nodes/worker1"),
    ("k8s", "logs", "web-1", "-n", "default/pods/web-1/../../.."),
    ("k8s", "logs", "web-1", "-c", "app?follow=true"),
    ("k8s", "drain", "..", "--yes"),
    ("k8s", "cordon", "worker1/../x", "--yes"),
    ("k8s", "uncordon", "--yes", "--", "-worker1"),
])
def test_names_that_walk_the_url_space_are_refused(dv: Any, k8s: Any,
                                                   argv: tuple[str, ...]) -> None:
    before = len(k8s.requests)
    res = dv(*argv)
    assert res.code == 2, res
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "is not a valid Kubernetes name" in res.stderr or "does not match" in res.stderr
    assert len(k8s.requests) == before  # nothing was asked of the API server
