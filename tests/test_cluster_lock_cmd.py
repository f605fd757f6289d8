"""`debvisor cluster lock status|break` on a node without a cluster lock: the node locks,
who holds them, and why one cannot be broken."""

from __future__ import annotations

import os

from debvisor_core.locks import node_lock
from debvisor_core.testing import Runner, StateDir, one_error


def test_status_names_the_holder_of_a_node_lock(dv: Runner, dv_state: StateDir) -> None:
    with node_lock(dv_state.path, ["hv.migrate"], wait=0):
        res = dv("--json", "cluster", "lock", "status")
        assert res.code == 0, res
        (lk,) = res.json["local"]
        assert (lk["name"], lk["held"], lk["pid"]) == ("hv.migrate", True, os.getpid())
        assert "pytest" in lk["command"] or "python" in lk["command"]
        assert res.json["cluster"] is None
        human = dv("cluster", "lock", "status")
        assert f"pid {os.getpid()}" in human.stdout and "no cluster lock is configured" in human.stdout
        refused = dv("--yes", "cluster", "lock", "break", "hv.migrate")
        assert refused.code == 2
        assert f"a node lock ends with its process (`kill {os.getpid()}`)" in one_error(refused.stderr)
    res = dv("--json", "cluster", "lock", "status")
    assert res.json["local"] == [{"name": "hv.migrate", "held": False}]


def test_a_bad_lock_name_is_one_sentence(dv: Runner, dv_state: StateDir) -> None:
    res = dv("--yes", "cluster", "lock", "break", "../../etc")
    assert res.code == 2 and "does not match" in one_error(res.stderr)
