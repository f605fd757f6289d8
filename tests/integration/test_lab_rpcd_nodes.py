"""`debvisor lab up rpcd` starts an rpcd per libvirt lab node, as a real node has one:
`--remote NODE` reaches that node's daemon, which knows only its own libvirtd."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from debvisor_core.testing import Lab

pytest.importorskip("grpc", reason="debvisor-core[rpcd] is not installed")
pytest.importorskip("debvisor_libvirt.lab", reason="the hv plugin is not installed")


def test_each_lab_node_has_its_own_rpcd(dv_lab: Lab) -> None:
    config_path = dv_lab.require("libvirt", "rpcd")

    def dv(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "debvisor_core", *args], capture_output=True,
                              text=True, timeout=120, env={**dv_lab.env, "DEBVISOR_CONFIG": str(config_path)})

    config = dv_lab.config()
    nodes = config["rpcd"]["nodes"]
    assert sorted(nodes) == sorted(config["hv"]["nodes"]) == ["node1", "node2"]
    env = json.loads(dv("--json", "lab", "env").stdout)  # where each one listens
    assert env["DEBVISOR_RPCD"] == config["rpcd"]["client"]["address"]
    assert {n: env[f"DEBVISOR_RPCD_{n.upper()}"] for n in nodes} == \
        {n: c["address"] for n, c in nodes.items()}
    assert len({c["address"] for c in nodes.values()} | {env["DEBVISOR_RPCD"]}) == 3
    status = json.loads(dv("--json", "lab", "status").stdout)["services"]["rpcd"]
    assert status["running"] and {n: s["running"] for n, s in status["nodes"].items()} == \
        {"node1": True, "node2": True}
    rpcd_dir = config_path.parent / "rpcd"
    for node in nodes:
        res = dv("--json", "--remote", node, "hv", "list")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["nodes"] == [node]  # that node's daemon, its libvirtd only
        other = "node2" if node == "node1" else "node1"
        res = dv("--remote", node, "hv", "list", "--node", other)
        assert res.returncode == 2 and f"unknown node '{other}'" in res.stderr
        calls: list[dict[str, Any]] = [
            json.loads(x) for x in (rpcd_dir / f"calls-{node}.jsonl").read_text().splitlines()]
        mine = [(c["caller"], c["code"], c["exit"], c["params"]["node"]) for c in calls
                if c.get("action") == "hv.list"][-2:]  # its call log: the two calls, their exit
        assert mine == [("admin", "OK", 0, None), ("admin", "OK", 2, other)]
