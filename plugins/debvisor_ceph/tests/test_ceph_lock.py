"""The Ceph cluster lock (`[ceph] cluster_lock = true`): RADOS locks with a lease, against the lab.

Two "nodes" are two state dirs (their node-local flocks are separate) with different
`[ceph] host` names, so only the RADOS lock can keep them apart.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debvisor_ceph.clusterlock import (
    LOCK_NAME,
    OBJ_PREFIX,
    LockSettings,
    RadosLock,
    decode_lockers,
    lockers,
)
from debvisor_ceph.fileosd import connect, mon_command, mon_json

from debvisor_core.context import Context
from debvisor_core.errors import BadInput, PreflightRefused
from debvisor_core.lab.manager import merge, to_toml
from debvisor_core.lab.process import wait_for

# `lock get_info` output recorded from the lab (Ceph 16): one exclusive locker.
RECORDED = (
    b"\x01\x01_\x00\x00\x00\x01\x00\x00\x00\x01\x01\x14\x00\x00\x00\x08\x1f\x10\x00\x00\x00\x00\x00"
    b"\x00\x07\x00\x00\x00cookie1\x01\x016\x00\x00\x00\xcbM\x07k\xdbl7\x10\x01\x01\x01\x1c\x00\x00"
    b"\x00\x01\x00\x00\x00\x1a\xa9d\xa9\x10\x00\x00\x00\x02\x00\x00\x00\x7f\x00\x00\x01\x00\x00\x00"
    b"\x00\x00\x00\x00\x00\x07\x00\x00\x00my desc\x01\x00\x00\x00\x00"
)
LOCK_CFG = {"cluster_lock": True, "lock_lease": 3}


def test_decode_recorded_lock_info() -> None:
    (h,) = decode_lockers(RECORDED)
    assert (h.entity, h.cookie, h.description) == ("client.4127", "cookie1", "my desc")
    assert h.addr == "127.0.0.1:0/2841946394"
    assert h.expires == pytest.approx(1795640779.272067, abs=1e-3)
    assert h.info() == {"description": "my desc"}
    assert "'my desc'" in h.summary() and "client.4127" in h.summary()
    assert decode_lockers(b"\x01\x01\t\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00") == []
    with pytest.raises(ValueError, match="truncated"):
        decode_lockers(RECORDED[:40])


def test_lock_settings(dv_state: Any) -> None:
    dv_state.config({"ceph": {"conf": "/nonexistent/ceph.conf"}})
    assert LockSettings.from_ctx(Context()).enabled is False  # off by default
    from debvisor_ceph.plugin import debvisor_cluster_lock

    from debvisor_core.engine import Operation

    dv_state.config({"ceph": {"conf": "/nonexistent/ceph.conf", "cluster_lock": True}})
    op = Operation(kind="test.lock", title="t", steps=[])
    assert debvisor_cluster_lock(Context(), op, ["x"]) is None  # no Ceph config on this node
    for bad, word in (({"cluster_lock": "yes"}, "true or false"), ({"lock_lease": 0}, "lock_lease"),
                      ({"lock_wait": "soon"}, "lock_wait"), ({"lock_pool": ""}, "lock_pool")):
        dv_state.config({"ceph": bad})
        with pytest.raises(BadInput, match=word):
            LockSettings.from_ctx(Context())


def _drop_pool(sec: dict[str, Any]) -> None:
    with connect(sec["conf"], sec["keyring"]) as c:
        if c.pool_exists("debvisor"):
            mon_command(c, "osd pool delete", pool="debvisor", pool2="debvisor",
                        yes_i_really_really_mean_it=True)


@pytest.fixture(scope="module")
def lab_config(dv_lab: Any) -> Iterator[Path]:
    """The lab without the lock pool (so its creation is tested); the pool is dropped again
    afterwards, leaving the lab's PG layout as the other tests expect it."""
    path: Path = dv_lab.require("ceph")
    sec = tomllib.loads(path.read_text())["ceph"]
    _drop_pool(sec)
    yield path
    _drop_pool(sec)


def _node_env(tmp_path: Path, lab_config: Path, node: str, **extra: Any) -> dict[str, str]:
    """Env of a separate "node": its own state dir and config (host NODE, cluster lock on)."""
    d = tmp_path / node
    d.mkdir(exist_ok=True)
    cfg = tomllib.loads(lab_config.read_text())
    merge(cfg, {"ceph": {**LOCK_CFG, "host": node, **extra}})
    (d / "debvisor.toml").write_text(to_toml(cfg))
    return {"DEBVISOR_STATE_DIR": str(d), "DEBVISOR_CONFIG": str(d / "debvisor.toml")}


def _noout(sec: dict[str, Any]) -> bool:
    with connect(sec["conf"], sec["keyring"]) as c:
        return "noout" in mon_json(c, "osd dump")["flags_set"]


def _clear_noout(sec: dict[str, Any]) -> None:
    with connect(sec["conf"], sec["keyring"]) as c:
        mon_command(c, "osd unset", key="noout")
        c.mon_command(json.dumps({"prefix": "config-key rm", "key": "debvisor/noout-reason"}), b"")


def _holders(sec: dict[str, Any], name: str) -> list[Any]:
    with connect(sec["conf"], sec["keyring"]) as c:
        io = c.open_ioctx("debvisor")
        try:
            return lockers(io, OBJ_PREFIX + name)
        finally:
            io.close()


@pytest.mark.lab
@pytest.mark.root
def test_cluster_lock_between_nodes(dv: Any, tmp_path: Path, lab_config: Path) -> None:
    """Node 1 holds `ceph.flags` (hung mid-operation): node 2 is refused naming it, then waits;
    node 1 is SIGKILLed, its lease runs out and node 2 gets the lock."""
    sec = tomllib.loads(lab_config.read_text())["ceph"]
    if _noout(sec):
        _clear_noout(sec)
    node1 = _node_env(tmp_path, lab_config, "lab-node1")
    node2 = _node_env(tmp_path, lab_config, "lab-node2")
    ready = tmp_path / "ready"
    holder = dv.popen("ceph", "noout", "set", "--reason", "lock holder", "--yes",
                      env={**node1, "DEBVISOR_FAULTS": "OsdFlag:hang", "DEBVISOR_FAULT_READY": str(ready)})
    waiter: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: ready.exists() and ready.read_text() != "" or holder.poll() is not None,
                 timeout=60, what="the holder to apply its step")
        assert holder.poll() is None, holder.communicate()
        with connect(sec["conf"], sec["keyring"]) as c:  # created on first use, tagged
            assert "debvisor" in mon_json(c, "osd pool application get", pool="debvisor")
        (h,) = _holders(sec, "ceph.flags")
        info = h.info()
        assert info["node"] == "lab-node1" and info["pid"] == holder.pid and info["op"] == "ceph.noout"
        assert h.expires - time.time() <= 3.5
        if shutil.which("rados"):  # the decoder agrees with Ceph's own tool
            out = subprocess.run(["rados", "-c", sec["conf"], "--keyring", sec["keyring"], "-p", "debvisor",
                                  "lock", "info", OBJ_PREFIX + "ceph.flags", LOCK_NAME, "--format", "json"],
                                 capture_output=True, text=True, check=True, timeout=30).stdout
            (theirs,) = json.loads(out)["lockers"]
            assert (theirs["name"], theirs["cookie"], theirs["description"]) == (h.entity, h.cookie,
                                                                                h.description)
        # node 2, 1 s wait: refused (exit 3), naming node 1's pid and operation; nothing changed
        refused = dv("ceph", "noout", "unset", "--yes", env={**node2, "DEBVISOR_LOCK_WAIT": "1"})
        assert refused.code == 3, refused
        assert f"cluster lock 'ceph.flags' is held by node lab-node1 (pid {holder.pid}" in refused.stderr
        assert "ceph.noout: set noout" in refused.stderr and "Traceback" not in refused.stderr
        assert _noout(sec)
        # node 2, 60 s wait: it waits for node 1 ...
        waiter = dv.popen("ceph", "noout", "unset", "--yes", env={**node2, "DEBVISOR_LOCK_WAIT": "60"})
        assert waiter.stderr is not None
        first = ""
        while first := waiter.stderr.readline():  # until it says it waits (or exits)
            if "waiting" in first:
                break
        assert first.startswith("[INFO] waiting up to 60s for cluster lock 'ceph.flags' held by node "
                                "lab-node1"), first
        # ... which dies without unlocking: the lease (3 s) ends and node 2 proceeds
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        t_kill = time.monotonic()
        out, err = waiter.communicate(timeout=60)
        took = time.monotonic() - t_kill
        assert waiter.returncode == 0, first + err
        assert "noout unset" in out and not _noout(sec)
        assert took < 3.5 + 5, took  # the lease, plus a process's run
        print(f"lock taken over {took:.2f}s after SIGKILL of the holder (lease 3 s)")
        # node 2 released its lock on exit
        assert _holders(sec, "ceph.flags") == []
    finally:
        for p in (holder, waiter):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
        if _noout(sec):
            _clear_noout(sec)


@pytest.mark.lab
@pytest.mark.root
def test_cluster_lock_in_process(dv_state: Any, lab_config: Path) -> None:
    """RadosLock directly: exclusive per name, renewed past its lease, released on exit."""
    from debvisor_core.engine import Operation

    sec = tomllib.loads(lab_config.read_text())["ceph"]
    dv_state.config({"ceph": {**LOCK_CFG, "lock_lease": 2, "lock_wait": 0}}, base=lab_config)
    ctx = Context()
    s = LockSettings.from_ctx(ctx)
    op = Operation(kind="test.lock", title="in-process lock test", steps=[])
    t = time.monotonic()
    with RadosLock(ctx, op, ["t.a", "t.b"], s) as lk:
        acquire = time.monotonic() - t
        assert sorted(h.info()["title"] for n in ("t.a", "t.b") for h in _holders(sec, n)) == \
            ["in-process lock test"] * 2
        other = RadosLock(ctx, op, ["t.b"], s)
        with pytest.raises(PreflightRefused, match="cluster lock 't.b' is held by node lab-node1"):
            other.__enter__()
        # held across 2.5 leases: the renewer keeps it
        wait_for(lambda: time.monotonic() - t > 5, timeout=10, what="2.5 leases")
        assert [h.cookie for h in _holders(sec, "t.a")] == [lk.cookie] and lk.lost() is None
    assert _holders(sec, "t.a") == [] and _holders(sec, "t.b") == []
    print(f"cluster lock of 2 names acquired in {acquire * 1000:.0f} ms (connect included)")


@pytest.mark.lab
@pytest.mark.root
def test_cluster_lock_status_and_break(dv: Any, dv_state: Any, lab_config: Path) -> None:
    """`cluster lock status` names the holder (node, pid, operation, lease); `break` needs
    --yes, is audited, and the holder is fenced: its next check finds the lock lost."""
    from debvisor_core.engine import Operation

    sec = tomllib.loads(lab_config.read_text())["ceph"]
    dv_state.config({"ceph": {**LOCK_CFG, "lock_lease": 30, "lock_wait": 0}}, base=lab_config)
    ctx = Context()
    op = Operation(kind="test.lock", title="a stuck operation", steps=[])
    with RadosLock(ctx, op, ["t.stuck"], LockSettings.from_ctx(ctx)) as lk:
        res = dv("--json", "cluster", "lock", "status")
        assert res.code == 0, res
        (mine,) = [x for x in res.json["cluster"] if x["name"] == "t.stuck"]
        (h,) = mine["holders"]
        assert (h["node"], h["pid"], h["kind"], h["title"]) == \
            ("lab-node1", os.getpid(), "test.lock", "a stuck operation")
        assert 0 < h["lease_left_s"] <= 30
        refused = dv("cluster", "lock", "break", "t.stuck")
        assert refused.code == 3 and "give --yes" in refused.stderr, refused
        assert [x.cookie for x in _holders(sec, "t.stuck")] == [lk.cookie]
        res = dv("--json", "--yes", "cluster", "lock", "break", "t.stuck")
        assert res.code == 0 and res.json["status"] == "broken", res
        assert res.json["broken"][0]["cookie"] == lk.cookie
        assert _holders(sec, "t.stuck") == []
        wait_for(lambda: lk.lost() is not None, timeout=30, what="the holder to notice")
        assert "t.stuck" in str(lk.lost()) and "broken" in str(lk.lost())
    events = [json.loads(x) for x in (dv_state.path / "log" / "audit.jsonl").read_text().splitlines()]
    (ev,) = [e for e in events if e["result"] == "lock-broken"]
    assert ev["details"]["lock"] == "t.stuck"
    assert dv("--yes", "cluster", "lock", "break", "t.stuck").stdout.strip() == \
        "cluster lock 't.stuck' is not held: nothing to break"


@pytest.mark.lab
@pytest.mark.root
def test_maintenance_set_from_one_node_holds_on_another(dv: Any, tmp_path: Path,
                                                        lab_config: Path) -> None:
    """`[ceph] cluster_state = true`: node A puts node B in maintenance (RADOS omap); B's
    own operations are refused until A lifts it; A's are not."""
    envs = {}
    for n in ("lab-a", "lab-b"):
        d = tmp_path / n
        d.mkdir()
        cfg = tomllib.loads(lab_config.read_text())
        merge(cfg, {"ceph": {"cluster_state": True, "host": n}, "cluster": {"node": n}})
        (d / "debvisor.toml").write_text(to_toml(cfg))
        envs[n] = {"DEBVISOR_STATE_DIR": str(d), "DEBVISOR_CONFIG": str(d / "debvisor.toml")}
    a, b = envs["lab-a"], envs["lab-b"]
    try:
        res = dv("maintenance", "enable", "--node", "lab-b", "--reason", "rack work", env=a)
        assert res.code == 0 and res.stdout.strip() == \
            "maintenance mode enabled on lab-b: rack work", res
        st = dv("--json", "maintenance", "status", env=b).json
        assert st["enabled"] and (st["reason"], st["set_from"]) == ("rack work", "lab-a"), st
        assert set(st["cluster"]) == {"lab-b"}
        refused = dv("ceph", "noout", "set", "--check", env=b)
        assert refused.code == 3 and "maintenance mode is on" in refused.stderr, refused
        assert "rack work" in refused.stderr
        assert dv("ceph", "noout", "set", "--check", env=a).code == 0  # A is not in maintenance
        res = dv("maintenance", "disable", "--node", "lab-b", env=a)
        assert res.code == 0 and "disabled on lab-b" in res.stdout, res
        assert dv("ceph", "noout", "set", "--check", env=b).code == 0
        assert dv("--json", "maintenance", "status", env=b).json["cluster"] == {}
    finally:
        dv("maintenance", "disable", "--node", "lab-b", env=a)
