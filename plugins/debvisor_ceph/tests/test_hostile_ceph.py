"""Hostile cases for the Ceph plugin (security review 1, H3 and H4), against the lab cluster.

H3: the rollback of a `ceph-volume-raw` join purges and wipes only the disk and the OSD it
prepared: the disk's identity and the OSD fsid are journalled, a disk that changed under the
device path is refused (rollback incomplete, exit 5) and nothing is wiped where prepare
never ran.

H4: a lost cluster-lock lease is fenced (``RadosLock.lost()``, checked by the engine before
each step and before "finished"), the renewer runs from the first name held, and a busy lock
whose holder list is empty is not polled in a tight loop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_ceph_lab
from debvisor_ceph import clusterlock
from debvisor_ceph.clusterlock import OBJ_PREFIX, LockSettings, RadosLock, lockers
from debvisor_ceph.fileosd import connect, mon_command, mon_json

from debvisor_core import journal
from debvisor_core.context import Context
from debvisor_core.errors import PreflightRefused
from debvisor_core.lab.manager import merge, to_toml
from debvisor_core.lab.process import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.root]
ceph_lab = test_ceph_lab.ceph_lab  # fixtures: the lab cluster with its test pool,
volume_node = test_ceph_lab.volume_node  # and what ceph-volume expects of a node

PATTERN = (b"DebVisor hostile test: data that must survive a rollback. " * 200_000)[:10 * 1024**2]


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(dv_lab: Any) -> Iterator[dict[str, Any]]:
    """The lab's [ceph] section and config path; the lock pool is dropped afterwards, leaving
    the lab's PG layout as the other tests expect it."""
    path: Path = dv_lab.require("ceph")
    sec = tomllib.loads(path.read_text())["ceph"]
    yield {"config": path, **sec}
    with connect(sec["conf"], sec["keyring"]) as c:
        if c.pool_exists("debvisor"):
            mon_command(c, "osd pool delete", pool="debvisor", pool2="debvisor",
                        yes_i_really_really_mean_it=True)


def _osds(lab: dict[str, Any]) -> dict[int, str]:
    with connect(lab["conf"], lab["keyring"]) as c:
        return {int(o["osd"]): str(o["uuid"]) for o in mon_json(c, "osd dump")["osds"]}


def _image(path: Path, data: bytes = PATTERN, size: int = 3 * 1024**3) -> Path:
    with open(path, "wb") as f:
        f.write(data)
        f.truncate(size)
    return path


def _head(path: Path | str, n: int = len(PATTERN)) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A loop device on a 3 GiB sparse image whose first 10 MiB hold test data (no signature, so
    `ceph join` takes it as an unused disk), and a second image of the same size."""
    a = _image(tmp_path / "disk-a.img")
    b = _image(tmp_path / "disk-b.img", b"another OSD's data " * 500_000)
    dev = subprocess.run(["losetup", "-f", "--show", str(a)], check=True, capture_output=True,
                         text=True).stdout.strip()
    info = {"dev": dev, "a": a, "b": b}
    yield info
    subprocess.run(["losetup", "-d", dev], check=False)


@pytest.fixture
def raw(dv_state: Any, lab: dict[str, Any]) -> Any:
    dv_state.config({"ceph": {"provisioner": "ceph-volume-raw"}}, base=lab["config"])
    return dv_state


def _interrupted_join(dv: Any, dv_state: Any, dev: str) -> str:
    """`ceph join --devices DEV` SIGKILLed after CreateOsd's intent (before prepare runs)."""
    res = dv("ceph", "join", "--devices", dev, "--initial-weight", "0", "--yes",
             env={"DEBVISOR_FAULTS": "CreateOsd:kill-before"})
    assert res.code == -signal.SIGKILL, res
    (op,) = dv("ops", "list", "--json").json
    assert op["kind"] == "ceph.join" and op["status"] == "interrupted", op
    return str(op["id"])


# --- H3: raw join rollback ---------------------------------------------------------------


def test_join_journals_the_disk_identity_and_refuses_a_changed_disk(
        dv: Any, raw: Any, lab: dict[str, Any], loop: dict[str, Any]) -> None:
    """Killed after CreateOsd's intent, then the loop device is re-pointed at another image
    (as a reboot renames /dev/sdX): `ops rollback` refuses (exit 5) and the other image's
    bytes are untouched."""
    before = _osds(lab)
    op_id = _interrupted_join(dv, raw, loop["dev"])
    # re-point the loop device at the other image
    subprocess.run(["losetup", "-d", loop["dev"]], check=True)
    subprocess.run(["losetup", loop["dev"], str(loop["b"])], check=True)
    other = _head(loop["b"])
    res = dv("ops", "rollback", op_id, "--yes")
    assert res.code == 5, res
    assert f"the disk at {loop['dev']} is no longer the one this join prepared" in res.stderr
    assert str(loop["a"]) in res.stderr and "nothing was purged or wiped" in res.stderr
    assert "Traceback" not in res.stderr
    assert _head(loop["b"]) == other and _head(loop["dev"]) == other
    assert _osds(lab) == before
    st = dv("ops", "show", op_id, "--json").json
    assert st["status"] == "rollback-incomplete"
    prior = journal.load(journal.find(raw.path, op_id)).steps[0].prior  # what the refusal rests on
    assert prior is not None
    disk = prior["disk"]
    assert disk["backing_file"] == str(loop["a"]) and disk["size"] == 3 * 1024**3
    assert disk["dev"].startswith("7:") and prior["label_before"] is None
    assert set(prior["osds_before"]) == set(before.values())


def test_partial_join_undo_wipes_nothing(dv: Any, raw: Any, lab: dict[str, Any],
                                         loop: dict[str, Any]) -> None:
    """Killed before ceph-volume raw prepare ran: the rollback succeeds and the disk's
    bytes are exactly what they were."""
    before = _osds(lab)
    op_id = _interrupted_join(dv, raw, loop["dev"])
    res = dv("ops", "rollback", op_id, "--yes")
    assert res.code == 0, res
    assert _head(loop["dev"]) == PATTERN and _head(loop["a"]) == PATTERN
    assert "carries no BlueStore label" in res.stderr
    assert _osds(lab) == before


def test_join_undo_refuses_a_label_it_did_not_create(dv: Any, raw: Any, lab: dict[str, Any],
                                                     loop: dict[str, Any]) -> None:
    """The same disk, but it now carries the BlueStore label of an OSD that existed before
    the join (osd.0): the rollback neither purges that OSD nor wipes the disk (exit 5)."""
    before = _osds(lab)
    op_id = _interrupted_join(dv, raw, loop["dev"])
    label = b"bluestore block device\n" + before[0].encode() + b"\n"
    with open(loop["dev"], "r+b") as f:
        f.write(label)
        f.flush()
        os.fsync(f.fileno())
    res = dv("ops", "rollback", op_id, "--yes")
    assert res.code == 5, res
    assert f"carries the BlueStore label of OSD {before[0]}, which this join did not create" in res.stderr
    assert "Traceback" not in res.stderr
    assert _head(loop["dev"]) == label + PATTERN[len(label):]
    assert _osds(lab) == before


def label_fsid(dev: str) -> str | None:
    """The OSD fsid in a BlueStore label ("bluestore block device\\n<uuid>\\n"), or None."""
    head = _head(dev, 60)
    return head[23:59].decode() if head.startswith(b"bluestore block device\n") else None


def _repoint(dev: str, image: Path) -> None:
    subprocess.run(["losetup", "-d", dev], check=True)
    subprocess.run(["losetup", dev, str(image)], check=True)


def test_prepared_join_is_undone_only_on_its_own_disk(dv: Any, dv_state: Any, lab: dict[str, Any],
                                                      loop: dict[str, Any],
                                                      request: pytest.FixtureRequest) -> None:
    """`ceph-volume raw prepare` ran (killed right after CreateOsd applied) and the fsid
    alias was lost: with another image behind the device path the rollback refuses (exit 5)
    and purges nothing; back on its own disk, a second rollback purges the OSD the label
    names (created by this join) and wipes the label."""
    volume_node = request.getfixturevalue("volume_node")
    dv_state.config({"ceph": {"conf": str(volume_node["conf"]), "provisioner": "ceph-volume-raw"}},
                    base=lab["config"])
    prog = volume_node["prog"]
    before = _osds(lab)
    res = dv("ceph", "join", "--devices", loop["dev"], "--initial-weight", "0", "--yes", prog=prog,
             timeout=600, env={"DEBVISOR_FAULTS": "CreateOsd:kill-after"})
    assert res.code == -signal.SIGKILL, res
    (op,) = dv("ops", "list", "--json").json
    ((osd_id, fsid),) = [(i, u) for i, u in _osds(lab).items() if i not in before]
    assert label_fsid(loop["dev"]) == fsid
    aliases = dv_state.path / "plugins" / "ceph" / "osd-fsids.json"
    assert fsid in json.loads(aliases.read_text()).values()
    aliases.unlink()  # as if it had never reached the disk
    _repoint(loop["dev"], loop["b"])
    other = _head(loop["b"])
    res = dv("ops", "rollback", op["id"], "--yes", prog=prog, timeout=600)
    assert res.code == 5, res
    assert "nothing was purged or wiped" in res.stderr and "Traceback" not in res.stderr
    assert _head(loop["b"]) == other and _osds(lab)[osd_id] == fsid
    _repoint(loop["dev"], loop["a"])
    res = dv("ops", "rollback", op["id"], "--yes", prog=prog, timeout=600)
    assert res.code == 0, res
    assert _osds(lab) == before
    assert not (volume_node["vlc"] / "osd" / f"ceph-{osd_id}").exists()
    assert _head(loop["dev"], 10 * 1024**2) == bytes(10 * 1024**2) and label_fsid(loop["dev"]) is None
    assert _head(loop["b"]) == other


def test_identity_mismatch_rules() -> None:
    from debvisor_ceph.join import describe_disk, identity_mismatch

    disk = {"path": "/dev/sdb", "dev": "8:16", "size": 4 * 1024**4, "wwn": "0x5000c500a1b2c3d4",
            "serial": "ZA1B2C3D", "by_id": ["/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"]}
    assert identity_mismatch(disk, {**disk, "dev": "8:32", "path": "/dev/sdc"}) is None  # renamed
    assert "size" in (identity_mismatch(disk, {**disk, "size": 1}) or "")
    assert "WWN" in (identity_mismatch(disk, {**disk, "wwn": "0x5000c500ffffffff"}) or "")
    assert "serial" in (identity_mismatch(disk, {k: v for k, v in disk.items() if k != "serial"}) or "")
    assert "by-id" in (identity_mismatch(disk, {**disk, "by_id": ["/dev/disk/by-id/ata-X"]}) or "")
    loopd = {"path": "/dev/loop3", "dev": "7:3", "size": 1024**3, "backing_file": "/a.img",
             "backing_inode": "64768:12", "backing_offset": "0"}
    assert identity_mismatch(loopd, dict(loopd)) is None
    assert "backed by /a.img (inode 64768:13)" in (
        identity_mismatch(loopd, {**loopd, "backing_inode": "64768:13"}) or "")
    weak = {"path": "/dev/vdb", "dev": "253:16", "size": 1024**3}  # nothing stable: major:minor
    assert "253:32" in (identity_mismatch(weak, {**weak, "dev": "253:32"}) or "")
    assert describe_disk(disk).startswith("/dev/sdb (8:16, 4096.0 GiB, WWN 0x5000c500a1b2c3d4")


# --- H4: the cluster lock ----------------------------------------------------------------


def _lock_ctx(dv_state: Any, lab: dict[str, Any], **extra: Any) -> tuple[Context, LockSettings]:
    dv_state.config({"ceph": {"cluster_lock": True, "lock_lease": 3, "lock_wait": 0, **extra}},
                    base=lab["config"])
    ctx = Context()
    return ctx, LockSettings.from_ctx(ctx)


def _op(title: str) -> Any:
    from debvisor_core.engine import Operation

    return Operation(kind="test.lock", title=title, steps=[])


def _cookies(lab: dict[str, Any], name: str) -> list[str]:
    with connect(lab["conf"], lab["keyring"]) as c:
        io = c.open_ioctx("debvisor")
        try:
            return [h.cookie for h in lockers(io, OBJ_PREFIX + name)]
        finally:
            io.close()


def test_lost_lease_is_reported(dv_state: Any, lab: dict[str, Any]) -> None:
    """The holder stalls past its lease (its renewer stopped) and another holder takes the
    lock: lost() says so; a lease that ran out with nobody taking it is lost too (and is
    not silently taken again)."""
    ctx, s = _lock_ctx(dv_state, lab, lock_lease=2)
    lk = RadosLock(ctx, _op("stalled holder"), ["t.fence"], s)
    with lk:
        assert lk.lost() is None
        lk._stop.set()  # the node stalls: no more renewals
        assert lk._renewer is not None
        lk._renewer.join()
        wait_for(lambda: _cookies(lab, "t.fence") == [], timeout=15, what="the lease to run out")
        reason = lk.lost()
        assert reason is not None and reason.startswith("cluster lock 't.fence' was lost: its 2s lease "
                                                        "ran out at ")
        assert _cookies(lab, "t.fence") == []  # asking did not re-take it
    lk2 = RadosLock(ctx, _op("stalled holder 2"), ["t.fence"], s)
    with lk2:
        lk2._stop.set()
        assert lk2._renewer is not None
        lk2._renewer.join()
        wait_for(lambda: _cookies(lab, "t.fence") == [], timeout=15, what="the lease to run out")
        dv_state.config({"ceph": {"cluster_lock": True, "host": "lab-node2"}}, base=lab["config"])
        ctx2 = Context()
        with RadosLock(ctx2, _op("the other node"), ["t.fence"], LockSettings.from_ctx(ctx2)) as other:
            reason = lk2.lost()
            assert reason is not None and "cluster lock 't.fence' was lost" in reason
            assert "node lab-node2" in reason and "operation" in reason and "the other node" in reason
            assert _cookies(lab, "t.fence") == [other.cookie]


def test_lost_asks_the_cluster_at_most_once_per_third_of_a_lease(dv_state: Any,
                                                               lab: dict[str, Any]) -> None:
    """Per-step cost: many lost() calls within a third of the lease ask the cluster at most
    once; a lock broken behind the holder's back is seen at the next check."""
    ctx, s = _lock_ctx(dv_state, lab, lock_lease=30)
    with RadosLock(ctx, _op("cheap fence"), ["t.cheap"], s) as lk:
        t = time.monotonic()
        for _ in range(500):
            assert lk.lost() is None
        assert time.monotonic() - t < 10 and lk.checks <= 1
        res = subprocess.run(["rados", "-c", lab["conf"], "--keyring", lab["keyring"], "-p", "debvisor",
                              "lock", "break", OBJ_PREFIX + "t.cheap", "debvisor",
                              _entity(lab, "t.cheap"), "--lock-cookie", lk.cookie],
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        lk._verified -= 10  # as if a third of the lease (10 s) had passed
        reason = lk.lost()
        assert reason is not None and "no longer lists this process" in reason, reason


def _entity(lab: dict[str, Any], name: str) -> str:
    with connect(lab["conf"], lab["keyring"]) as c:
        io = c.open_ioctx("debvisor")
        try:
            (h,) = lockers(io, OBJ_PREFIX + name)
            return h.entity
        finally:
            io.close()


def test_renewer_starts_with_the_first_name(dv_state: Any, lab: dict[str, Any]) -> None:
    """lock_wait (20 s) > lock_lease (3 s), two names, the second busy: the first stays ours
    while the holder waits, and nothing is lost once both are held. (A 3 s lease, renewed
    every second, holds on a loaded 2-core CI machine; a 1 s one did not always.)"""
    ctx, s = _lock_ctx(dv_state, lab, lock_lease=3, lock_wait=20)
    busy = RadosLock(ctx, _op("holds t.r2"), ["t.r2"], s)
    busy.__enter__()
    waiter = RadosLock(ctx, _op("wants t.r1 and t.r2"), ["t.r1", "t.r2"], s)
    errors: list[BaseException] = []

    def enter() -> None:
        try:
            waiter.__enter__()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    th = threading.Thread(target=enter)
    try:
        try:
            th.start()
            wait_for(lambda: waiter.held == ["t.r1"], timeout=10, what="the first name")
            t = time.monotonic()
            wait_for(lambda: time.monotonic() - t > 7.5, timeout=15, what="2.5 leases")
            assert waiter.held == ["t.r1"] and th.is_alive()  # still waiting for t.r2
            assert _cookies(lab, "t.r1") == [waiter.cookie]  # renewed meanwhile: nobody could take it
        finally:
            busy.__exit__(None, None, None)
            th.join(timeout=10)
        assert not errors and waiter.held == ["t.r1", "t.r2"]
        assert waiter.lost() is None
    finally:
        waiter.__exit__(None, None, None)
    assert _cookies(lab, "t.r1") == [] and _cookies(lab, "t.r2") == []


def test_busy_lock_with_no_lockers_is_not_a_busy_loop(dv_state: Any, lab: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Busy, but `lock get_info` lists nobody (the holder left between the two calls): the
    waiter retries at a bounded rate until lock_wait ends."""
    ctx, s = _lock_ctx(dv_state, lab, lock_wait=1.5)
    calls = []
    real = clusterlock.lockers

    def empty(ioctx: Any, obj: str) -> list[Any]:
        calls.append(obj)
        real(ioctx, obj)
        return []

    with RadosLock(ctx, _op("holder"), ["t.spin"], s):
        monkeypatch.setattr(clusterlock, "lockers", empty)
        cpu, t = time.process_time(), time.monotonic()
        with pytest.raises(PreflightRefused, match="held by a holder that just left"):
            RadosLock(ctx, _op("waiter"), ["t.spin"], s).__enter__()
        cpu, wall = time.process_time() - cpu, time.monotonic() - t
        monkeypatch.undo()
    print(f"{len(calls)} lock checks, {cpu:.2f}s CPU in {wall:.2f}s")
    assert 1.5 <= wall < 5
    assert len(calls) <= 1.5 / (clusterlock.POLL / 4) + 3, len(calls)
    assert cpu < 0.5, cpu


FENCED = '''
import os, sys, time
from dataclasses import dataclass
from pathlib import Path
from debvisor_core.context import Context
from debvisor_core.engine import Operation, Step, run
from debvisor_core.errors import DebvisorError

D = Path(sys.argv[1])


@dataclass
class Hold(Step):
    def apply(self, ctx, prior):
        (D / "ready").write_text(str(os.getpid()))
        end = time.monotonic() + 120
        while not (D / "go").exists() and time.monotonic() < end:
            time.sleep(0.05)
        return {}

    def undo(self, ctx, record):
        (D / "undone").write_text("1")


@dataclass
class After(Step):
    def apply(self, ctx, prior):
        (D / "after").write_text("1")
        return {}


op = Operation(kind="test.fence", title="fenced operation", steps=[Hold(), After()],
               locks=["t.e2e"])
try:
    print(run(Context(yes=True), op).status)
except DebvisorError as exc:
    print(exc.message, file=sys.stderr)
    sys.exit(exc.exit_code)
'''


def test_lost_lease_fences_the_operation(dv_state: Any, lab: dict[str, Any], tmp_path: Path) -> None:
    """The review's reproduction: the holder is SIGSTOPped past its lease, another node takes
    the lock, SIGCONT: the holder must not run its next step; it fails and rolls back (exit 4)."""
    node = tmp_path / "node1"
    node.mkdir()
    cfg = tomllib.loads(Path(lab["config"]).read_text())
    merge(cfg, {"ceph": {"cluster_lock": True, "lock_lease": 3, "host": "lab-node1"}})
    (node / "debvisor.toml").write_text(to_toml(cfg))
    (node / "state").mkdir()
    script = tmp_path / "fenced.py"
    script.write_text(FENCED)
    env = {**os.environ, "DEBVISOR_STATE_DIR": str(node / "state"),
           "DEBVISOR_CONFIG": str(node / "debvisor.toml")}
    env.pop("DEBVISOR_FAULTS", None)
    proc = subprocess.Popen([sys.executable, str(script), str(node)], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    other: RadosLock | None = None
    try:
        wait_for(lambda: (node / "ready").exists() or proc.poll() is not None, timeout=60,
                 what="the holder's first step")
        assert proc.poll() is None, proc.communicate()
        assert len(_cookies(lab, "t.e2e")) == 1
        proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: _cookies(lab, "t.e2e") == [], timeout=20, what="the stopped holder's lease to end")
        dv_state.config({"ceph": {"cluster_lock": True, "host": "lab-node2", "lock_wait": 0}},
                        base=lab["config"])
        ctx2 = Context()
        other = RadosLock(ctx2, _op("node 2 in the critical section"), ["t.e2e"], LockSettings.from_ctx(ctx2))
        other.__enter__()
        (node / "go").write_text("")
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 4, out + err
        assert "cluster lock 't.e2e' was lost" in err and "node lab-node2" in err, err
        assert "every applied step was undone" in err
        assert not (node / "after").exists() and (node / "undone").exists()
        assert _cookies(lab, "t.e2e") == [other.cookie]  # node 2 still holds it
        (st,) = journal.all_ops(node / "state")
        assert st.status == "rolled-back"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.communicate()
        if other is not None:
            other.__exit__(None, None, None)


def test_lost_without_locks_costs_nothing(dv_state: Any) -> None:
    """lost() of a lock that holds nothing (never entered) is None and asks no cluster."""
    dv_state.config({"ceph": {"conf": "/nonexistent/ceph.conf", "cluster_lock": True}})
    lk = RadosLock(Context(), _op("t"), ["x"], LockSettings.from_ctx(Context()))
    assert lk.lost() is None and lk.checks == 0
    assert json.loads(lk.desc)["title"] == "t"


# --- optional: the audit chain's anchor in RADOS omap -----------------------------------


def test_audit_anchor_only_moves_forward(dv_state: Any, lab: dict[str, Any], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from debvisor_ceph import auditanchor
    from debvisor_ceph.auditanchor import anchor, anchored, check

    dv_state.config({"ceph": {"audit_anchor": False}}, base=lab["config"])
    assert anchor(Context(), {"seq": 1, "hash": "0" * 64}) is False  # off by default
    dv_state.config({"ceph": {"audit_anchor": True, "host": "anchor-test"}}, base=lab["config"])
    ctx = Context()
    h = [f"{i:064x}" for i in range(12)]
    assert anchor(ctx, {"seq": 3, "hash": h[3], "time": "t3"}) is True
    assert anchored(ctx) == {"seq": 3, "hash": h[3], "time": "t3"}
    assert anchor(ctx, {"seq": 2, "hash": h[2]}) is False  # a truncated log cannot lower it
    assert anchor(ctx, {"seq": 3, "hash": h[3], "time": "t3"}) is False
    assert anchor(ctx, {"seq": 10, "hash": h[10]}) is True
    assert anchored(ctx)["seq"] == 10  # type: ignore[index]
    # a writer that read an old anchor (a race) cannot lower a newer one: the omap guard holds
    monkeypatch.setattr(auditanchor, "_read", lambda ioctx, node: auditanchor.encode(1, h[1]))
    assert anchor(ctx, {"seq": 4, "hash": h[4]}) is False
    monkeypatch.undo()
    assert anchored(ctx)["seq"] == 10  # type: ignore[index]
    assert anchored(ctx, "no-such-node") is None
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps({"seq": i, "hash": h[i]}) + "\n" for i in range(1, 11)))
    assert check(log, anchored(ctx)) is None
    log.write_text("".join(json.dumps({"seq": i, "hash": h[i]}) + "\n" for i in range(1, 9)))
    assert "has 8 audit records but the cluster anchored record 10" in (check(log, anchored(ctx)) or "")
    log.write_text("".join(json.dumps({"seq": i, "hash": h[i] if i < 10 else h[0]}) + "\n"
                           for i in range(1, 11)))
    assert "was rewritten" in (check(log, anchored(ctx)) or "")
