"""The `ceph` commands against the real lab cluster (1 mon, 1 mgr, 3 file-backed OSDs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from debvisor_ceph.fileosd import connect, mon_command, mon_json

from debvisor_core.engine import Step
from debvisor_core.errors import RolledBack, StepFailed
from debvisor_core.lab.process import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.root]
POOL = "dvtest"


@pytest.fixture(scope="session")
def ceph_lab(dv_lab: Any) -> dict[str, Any]:
    """The lab cluster with a pool `dvtest` (application rbd) holding 20 MiB."""
    path = dv_lab.require("ceph")
    sec = tomllib.loads(path.read_text())["ceph"]
    with connect(sec["conf"], sec["keyring"]) as c:
        pools = [p["poolname"] for p in mon_json(c, "osd lspools")]
        if POOL not in pools:
            mon_command(c, "osd pool create", pool=POOL, pg_num=32, pgp_num=32)
            mon_command(c, "osd pool application enable", pool=POOL, app="rbd")
        io = c.open_ioctx(POOL)
        for i in range(20):
            io.write_full(f"obj{i}", b"x" * (1 << 20))
        io.close()

        def reported() -> bool:  # the mgr's PG stats lag the writes by a few seconds
            df = mon_json(c, "df")
            st = next((p["stats"] for p in df["pools"] if p["name"] == POOL), {"stored": 0})
            pgs = mon_json(c, "status")["pgmap"]["pgs_by_state"]
            return st["stored"] >= 20 * 1024**2 and all(s["state_name"] == "active+clean" for s in pgs)

        wait_for(reported, timeout=60, what=f"stats of pool {POOL}")
    return {"config": path, **sec}


@pytest.fixture
def cdv(dv: Any, dv_state: Any, ceph_lab: dict[str, Any]) -> Any:
    """`dv` pointed at the lab cluster."""
    dv_state.config({}, base=ceph_lab["config"])
    return dv


def _lctx(ceph_lab: dict[str, Any]) -> Any:
    from debvisor_core.lab import LabContext

    d = Path(ceph_lab["lab"]["dir"])
    return LabContext(dir=d, lab_dir=d.parent)


def _osd_dump(ceph_lab: dict[str, Any]) -> dict[str, Any]:
    with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
        return dict(mon_json(c, "osd dump"))


def test_status_json(cdv: Any) -> None:
    res = cdv("ceph", "status", "--json")
    assert res.code == 0, res
    s = res.json
    assert s["mons"]["in_quorum"] == 1 and s["osds"]["total"] >= 3
    assert s["pgs"]["total"] >= 33 and s["usage"]["stored_bytes"] >= 20 * 1024**2
    assert s["health"] in ("HEALTH_OK", "HEALTH_WARN")
    human = cdv("ceph", "status")
    assert "in quorum" in human.stdout and "pgs:" in human.stdout


def test_alias_and_osd_list(cdv: Any) -> None:
    res = cdv("osd", "list", "--json", prog=[str(Path(__import__("sys").executable).parent / "cephctl")])
    assert res.code == 0, res
    rows = {o["id"]: o for o in res.json["osds"]}
    assert {0, 1, 2} <= set(rows) and all(rows[i]["host"] == "lab-node1" for i in (0, 1, 2))
    assert rows[0]["class"] == "hdd" and rows[0]["size_bytes"] == 2 * 1024**3
    assert sum(r["pgs"] for r in rows.values()) >= 33  # device_health_metrics + dvtest


def test_pool_capacity_records_samples(cdv: Any, dv_state: Any) -> None:
    res = cdv("ceph", "pool", "capacity", "--json", "--growth", "100MiB/day")
    assert res.code == 0, res
    pool = next(p for p in res.json["pools"] if p["pool"] == POOL)
    assert pool["size"] == 1 and pool["stored_bytes"] >= 20 * 1024**2 and pool["max_avail_bytes"] > 0
    assert pool["days_to_full"] == pytest.approx(pool["max_avail_bytes"] / (100 * 1024**2), abs=0.1)
    assert pool["autoscale"] is not None and pool["autoscale"]["mode"] == "off"
    samples = dv_state.path / "plugins" / "ceph" / "capacity-samples.jsonl"
    first = json.loads(samples.read_text().splitlines()[0])
    # an older sample with less data → a measured growth rate
    older = {"t": first["t"] - 86400, "stored": {POOL: first["stored"][POOL] - 10 * 1024**2}}
    samples.write_text(json.dumps(older) + "\n" + samples.read_text())
    res = cdv("ceph", "pool", "capacity", "--json")
    pool = next(p for p in res.json["pools"] if p["pool"] == POOL)
    assert pool["growth_source"] == "measured"
    assert pool["growth_bytes_per_day"] == pytest.approx(10 * 1024**2, rel=0.05)
    bad = cdv("ceph", "pool", "capacity", "--growth", "soon")
    assert bad.code == 2 and "growth rate" in bad.stderr and "Traceback" not in bad.stderr


def test_pg_balance_apply_and_rollback(cdv: Any, ceph_lab: dict[str, Any]) -> None:
    res = cdv("ceph", "pg", "balance", "--json")
    assert res.code == 0, res
    r = res.json
    assert r["pgs_per_osd"]["max"] >= r["pgs_per_osd"]["min"] > 0
    assert r["balancer"]["mode"] == "upmap"
    ups = [x for x in r["recommendations"] if x["kind"] == "upmap"]
    if not ups:
        pytest.skip("the lab's PGs happen to be perfectly balanced")
    applied = cdv("ceph", "pg", "balance", "--apply", "--yes", "--json")
    assert applied.code == 0, applied
    items = {u["pgid"] for u in _osd_dump(ceph_lab)["pg_upmap_items"]}
    assert {x["pgid"] for x in ups} <= items
    back = cdv("ceph", "pg", "balance", "--rollback", "--yes")
    assert back.code == 0, back
    assert not {x["pgid"] for x in ups} & {u["pgid"] for u in _osd_dump(ceph_lab)["pg_upmap_items"]}


def test_noout_round_trip(cdv: Any, ceph_lab: dict[str, Any]) -> None:
    res = cdv("ceph", "noout", "set", "--reason", "test window", "--yes")
    assert res.code == 0, res
    try:
        assert "noout" in _osd_dump(ceph_lab)["flags_set"]
        al = cdv("ceph", "alerts", "--json").json
        flags = next(a for a in al["alerts"] if a["code"] == "OSDMAP_FLAGS")
        assert "noout" in flags["hint"] and flags["noout_reason"] == "test window"
        assert al["noout"] == {"set": True, "reason": "test window"}
        assert "    noout reason: test window\n" in cdv("ceph", "alerts").stdout
        st = cdv("ceph", "status", "--json").json
        assert st["noout"] == {"set": True, "reason": "test window"}
        assert next(c for c in st["checks"] if c["code"] == "OSDMAP_FLAGS")["noout_reason"] == "test window"
        human = cdv("ceph", "status").stdout
        assert "OSDMAP_FLAGS: noout flag(s) set\n            noout reason: test window\n" in human
        again = cdv("ceph", "noout", "set", "--yes")
        assert again.code == 0 and "already set" in again.stdout
    finally:
        undo = cdv("ceph", "noout", "set", "--rollback", "--yes")
    assert undo.code == 0, undo
    assert "noout" not in _osd_dump(ceph_lab)["flags_set"]
    st = cdv("ceph", "status", "--json").json
    assert st["noout"] == {"set": False, "reason": None}
    assert "noout reason" not in cdv("ceph", "alerts").stdout
    # noout set outside DebVisor: no reason stored, and status says so
    with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
        mon_command(c, "osd set", key="noout")
        try:
            assert "noout reason: none recorded" in cdv("ceph", "status").stdout
            assert cdv("ceph", "alerts", "--json").json["noout"] == {"set": True, "reason": None}
        finally:
            mon_command(c, "osd unset", key="noout")


def test_killed_osd_alerts_and_recovery(cdv: Any, ceph_lab: dict[str, Any]) -> None:
    from debvisor_ceph import lab

    lctx = _lctx(ceph_lab)
    lab.stop_osd(lctx, 2, kill=True, wait_down=True)
    try:
        al = cdv("ceph", "alerts", "--json")
        assert al.code == 0, al
        down = next(a for a in al.json["alerts"] if a["code"] == "OSD_DOWN")
        assert any("osd.2" in line for line in down["detail"]) and "start" in down["hint"]
        sug = cdv("ceph", "osd", "list", "--json").json["suggestions"]
        assert any(s["osd"] == 2 and s["kind"] == "down" and "ceph osd out 2" in s["commands"] for s in sug)
        health = cdv("health", "--json").json
        chk = next(c for c in health["checks"] if c["name"] == "ceph.osds_down")
        assert chk["status"] == "warn" and "OSD_DOWN" in chk["summary"]
        stop = cdv("ceph", "osd", "ok-to-stop", "0", "--json")
        assert stop.code == 1 and stop.json["ok_to_stop"] is False
    finally:
        lab.start_osd(lctx, 2)
    assert not any(s["osd"] == 2 for s in cdv("ceph", "osd", "list", "--json").json["suggestions"])
    st = cdv("ceph", "status", "--json").json
    assert st["osds"]["up"] == st["osds"]["total"]


def test_maintenance_plan_and_ok_to_stop(cdv: Any) -> None:
    res = cdv("ceph", "maintenance-plan", "lab-node1", "--json")
    assert res.code == 0, res
    p = res.json
    assert p["osds"][:3] == [0, 1, 2] and p["flags"] == ["noout"]
    assert p["can_stop_together"] is False and p["pgs_inactive"] > 0  # size-1 pools
    assert p["ceph_ok_to_stop"] is False
    bad = cdv("ceph", "maintenance-plan", "nosuchnode")
    assert bad.code == 2 and "no CRUSH host" in bad.stderr
    host = cdv("ceph", "osd", "ok-to-stop", "--host", "lab-node1", "--json")
    assert host.code == 1 and host.json["osds"][:3] == [0, 1, 2]


ONE_COPY = "dvonecopy"


def _pgs(c: Any) -> list[dict[str, Any]]:
    from debvisor_ceph.client import Cluster
    from debvisor_ceph.dumps import pg_stats

    return pg_stats(Cluster(c).mgr("pg dump", dumpcontents=["pgs_brief"]))


def _all_active_clean(c: Any) -> bool:
    return all(s["state_name"] == "active+clean" for s in mon_json(c, "status")["pgmap"]["pgs_by_state"])


def test_maintenance_plan_pgs_on_a_killed_osd(cdv: Any, ceph_lab: dict[str, Any]) -> None:
    """Issue 18: a one-copy pool whose only PG sits on a killed OSD. Its PGs (and every other
    PG on that OSD) are already inactive: the plan says so once and charges them to no batch,
    so each batch's count is what the mgr's ok-to-stop says for exactly those OSDs."""
    from debvisor_ceph import lab

    lctx = _lctx(ceph_lab)
    conf, keyring = ceph_lab["conf"], ceph_lab["keyring"]
    with connect(conf, keyring) as c:
        mon_command(c, "osd pool create", pool=ONE_COPY, pg_num=1, pgp_num=1)
        victim = -1
        try:
            mon_command(c, "osd pool set", pool=ONE_COPY, var="size", val="1", yes_i_really_mean_it=True)
            mon_command(c, "osd pool application enable", pool=ONE_COPY, app="rbd")
            pool_id = next(p["pool_id"] for p in mon_json(c, "osd pool ls", detail="detail")
                           if p["pool_name"] == ONE_COPY)
            wait_for(lambda: _all_active_clean(c) and any(
                pg["pgid"] == f"{pool_id}.0" for pg in _pgs(c)), timeout=60, what=f"pool {ONE_COPY} active")
            (pg,) = [pg for pg in _pgs(c) if pg["pgid"] == f"{pool_id}.0"]
            (victim,) = pg["acting"]
            mon_command(c, "osd set", key="noout")  # the killed OSD stays in: its PGs stay on it
            lab.stop_osd(lctx, victim, kill=True, wait_down=True)
            on_victim = {p["pgid"] for p in _pgs(c) if victim in p["acting"]}
            assert f"{pool_id}.0" in on_victim

            res = cdv("ceph", "maintenance-plan", "lab-node1", "--json")
            assert res.code == 0, res
            p = res.json
            assert p["already_down"] == [victim]
            for b in p["batches"]:  # the plan agrees with the mgr on every batch
                ok = cdv("ceph", "osd", "ok-to-stop", *map(str, b["osds"]), "--json")
                assert ok.json["ok_to_stop"] == (b["inactive_pgs"] == 0), (b, ok.json)
                assert len(ok.json["become_inactive"]) == b["inactive_pgs"], (b, ok.json)
            assert p["pgs_already_inactive"] == len(on_victim)
            assert set(p["already_inactive_pgs"]) == on_victim
            assert not set(p["inactive_pgs"]) & on_victim
            assert [o for b in p["batches"] for o in b["osds"]] == [o for o in p["osds"] if o != victim]
            said = f"{len(on_victim)} PGs already inactive (on down OSDs osd.{victim})"
            notes = [n for n in p["notes"] if "already inactive" in n]  # said once, in the notes
            assert len(notes) == 1 and notes[0].startswith(said), p["notes"]
            human = cdv("ceph", "maintenance-plan", "lab-node1")
            assert human.code == 0, human
            assert human.stdout.count("already inactive") == 1 and said in human.stdout, human.stdout
        finally:
            mon_command(c, "osd unset", key="noout")
            if victim >= 0:
                lab.start_osd(lctx, victim)
            mon_command(c, "osd pool delete", pool=ONE_COPY, pool2=ONE_COPY, yes_i_really_really_mean_it=True)
            wait_for(lambda: _all_active_clean(c), timeout=90, what="every PG active+clean again")


def test_join_auto_says_already_joined(cdv: Any) -> None:
    res = cdv("ceph", "join", "--devices", "auto", "--json")
    assert res.code == 0, res
    assert res.json["status"] == "already-joined" and res.json["osds"][:3] == [0, 1, 2]


@pytest.fixture
def no_new_osds(ceph_lab: dict[str, Any]) -> Iterator[None]:
    before = {o["osd"] for o in _osd_dump(ceph_lab)["osds"]}
    yield
    after = {o["osd"] for o in _osd_dump(ceph_lab)["osds"]}
    assert after == before, "a joined OSD was left behind"


def test_join_file_osd_and_rollback(cdv: Any, ceph_lab: dict[str, Any], no_new_osds: None) -> None:
    res = cdv("ceph", "join", "--devices", "file:1G", "--class", "ssd", "--initial-weight", "0", "--yes",
              "--json")
    assert res.code == 0, res
    (osd_id,) = res.json["result"]["osds"]
    with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
        tree = mon_json(c, "osd tree")
        node = next(n for n in tree["nodes"] if n["id"] == osd_id)
        host = next(n for n in tree["nodes"] if n["type"] == "host" and osd_id in n.get("children", []))
        assert host["name"] == "lab-node1" and node["device_class"] == "ssd"
        assert node["crush_weight"] == 0 and node["status"] == "up"
    back = cdv("ceph", "join", "--rollback", "--yes")
    assert back.code == 0, back
    with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
        assert osd_id not in mon_json(c, "osd ls")
        assert f"osd.{osd_id}" not in {e["entity"] for e in mon_json(c, "auth ls")["auth_dump"]}
    assert not any(Path(ceph_lab["file_dir"], "osd").iterdir())


def test_join_fault_rolls_back(cdv: Any, dv_fault: Any, ceph_lab: dict[str, Any], no_new_osds: None) -> None:
    dv_fault("StartOsd:after")
    res = cdv("ceph", "join", "--devices", "file:1G", "--initial-weight", "0", "--yes")
    assert res.code == 4, res
    assert "every applied step was undone" in res.stderr
    assert not any(Path(ceph_lab["file_dir"], "osd").iterdir())
    assert not list(Path(ceph_lab["file_dir"], "blocks").iterdir())


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    """A real block device: a 3 GiB sparse file on a loop device."""
    if not Path("/dev/loop-control").exists():
        pytest.skip("this machine has no loop devices (/dev/loop-control)")
    missing = [t for t in ("losetup", "unshare", "udevadm", "ceph-volume") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(3 * 1024**3)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True, capture_output=True,
                         text=True).stdout.strip()
    yield dev
    subprocess.run(["losetup", "-d", dev], check=False)


@pytest.fixture
def volume_node(ceph_lab: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """What ceph-volume expects of a node, private to the test: a /var/lib/ceph (bind-mounted
    by `unshare --mount` around each command, so the host's stays untouched) holding the
    bootstrap-osd keyring, and a copy of the lab's ceph.conf whose run and log dirs the ceph
    user can write and whose OSD data dirs are ceph-volume's."""
    base = Path(tempfile.mkdtemp(prefix="dvcv-"))
    base.chmod(0o755)
    vlc = base / "var-lib-ceph"
    for d in (vlc / "bootstrap-osd", vlc / "osd", vlc / "tmp", base / "run", base / "log", base / "crash"):
        d.mkdir(parents=True)
    with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
        key = mon_command(c, "auth get-or-create", entity="client.bootstrap-osd",
                          caps=["mon", "allow profile bootstrap-osd"])
    (vlc / "bootstrap-osd" / "ceph.keyring").write_text(key)
    conf = Path(ceph_lab["conf"]).read_text()
    for key_, value in (("run dir", base / "run"), ("crash dir", base / "crash"),
                        ("log file", f"{base}/log/$cluster-$name.log"),
                        ("pid file", f"{base}/run/$cluster-$name.pid"),
                        ("osd data", "/var/lib/ceph/osd/$cluster-$id")):
        conf = re.sub(rf"^{key_} = .*$", f"{key_} = {value}", conf, flags=re.M)
    (base / "ceph.conf").write_text(conf)
    for d in (vlc, base / "run", base / "log", base / "crash"):
        for root, dirs, files in os.walk(d):
            for n in [root, *(os.path.join(root, x) for x in dirs + files)]:
                shutil.chown(n, "ceph", "ceph")
    script = 'mount --bind "$0" /var/lib/ceph && exec "$@"'
    yield {"vlc": vlc, "conf": base / "ceph.conf",
           "prog": ["unshare", "--mount", "--", "/bin/sh", "-c", script, str(vlc), sys.executable, "-m",
                    "debvisor_core"]}
    with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
        mon_command(c, "auth del", entity="client.bootstrap-osd")
    shutil.rmtree(base, ignore_errors=True)


def test_join_ceph_volume_raw_on_a_loop_device(dv: Any, dv_state: Any, ceph_lab: dict[str, Any],
                                               loop_device: str, volume_node: dict[str, Any],
                                               no_new_osds: None) -> None:
    """The real-disk path: `ceph-volume raw prepare/activate` on a block device, the OSD placed
    under the host with its class, started as the ceph user, up; rollback purges it, removes
    its data dir and wipes the device's label."""
    dv_state.config({"ceph": {"conf": str(volume_node["conf"]), "provisioner": "ceph-volume-raw"}},
                    base=ceph_lab["config"])
    prog = volume_node["prog"]
    res = dv("--json", "ceph", "join", "--devices", loop_device, "--class", "ssd", "--initial-weight", "0",
             "--yes", prog=prog, timeout=600)
    assert res.code == 0, res
    (osd_id,) = res.json["result"]["osds"]
    label = json.loads(subprocess.run(["ceph-volume", "raw", "list", loop_device, "--format", "json"],
                                      capture_output=True, text=True, check=True,
                                      env={**os.environ, "CEPH_CONF": str(volume_node["conf"])}).stdout)
    assert [v["osd_id"] for v in label.values()] == [osd_id]
    assert (volume_node["vlc"] / "osd" / f"ceph-{osd_id}" / "whoami").read_text().strip() == str(osd_id)
    with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
        tree = mon_json(c, "osd tree")
        node = next(n for n in tree["nodes"] if n["id"] == osd_id)
        host = next(n for n in tree["nodes"] if n["type"] == "host" and osd_id in n.get("children", []))
        assert host["name"] == "lab-node1" and node["device_class"] == "ssd"
        assert node["status"] == "up"
        osd = next(o for o in mon_json(c, "osd dump")["osds"] if o["osd"] == osd_id)
        assert osd["uuid"] == next(iter(label))  # the fsid ceph-volume chose
    back = dv("ceph", "join", "--rollback", "--yes", prog=prog, timeout=600)
    assert back.code == 0, back
    with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
        assert osd_id not in mon_json(c, "osd ls")
        assert f"osd.{osd_id}" not in {e["entity"] for e in mon_json(c, "auth ls")["auth_dump"]}
    assert not (volume_node["vlc"] / "osd" / f"ceph-{osd_id}").exists()
    with open(loop_device, "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)  # the BlueStore label is gone


def test_join_bad_input(cdv: Any) -> None:
    res = cdv("ceph", "join", "--devices", "/dev/sda", "--yes")
    assert res.code == 2 and "file:SIZE" in res.stderr
    res = cdv("ceph", "join", "--devices", "file:1G", "--weight", "1", "--initial-weight", "0", "--yes")
    assert res.code == 2 and "not both" in res.stderr


def test_join_unknown_provisioner(dv: Any, dv_state: Any, ceph_lab: dict[str, Any]) -> None:
    dv_state.config({"ceph": {"provisioner": "ceph-disk"}}, base=ceph_lab["config"])
    res = dv("ceph", "join", "--devices", "auto", "--yes")
    assert res.code == 2, res
    assert "unknown provisioner 'ceph-disk'" in res.stderr and "ceph-volume-raw" in res.stderr


def test_health_and_rados_missing(cdv: Any, tmp_path: Path) -> None:
    h = cdv("health", "--json").json
    names = {c["name"]: c for c in h["checks"] if c["plugin"] == "ceph"}
    assert set(names) == {"ceph.cluster", "ceph.nearfull", "ceph.osds_down", "ceph.clock_skew"}
    assert names["ceph.clock_skew"]["status"] == "ok"
    # python-rados absent: one clear line, exit 2, no traceback
    (tmp_path / "rados.py").write_text("raise ImportError('no rados here')\n")
    res = cdv("ceph", "status", env={"PYTHONPATH": str(tmp_path)})
    assert res.code == 2 and "python3-rados" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@dataclass
class UpgradeWork(Step):
    """Stands in for an upgrade plugin's own step: records whether noout was set while it ran."""

    conf: str
    keyring: str
    fail: bool = False

    def apply(self, ctx: Any, prior: dict[str, Any]) -> dict[str, Any]:
        with connect(self.conf, self.keyring) as c:
            flags = mon_json(c, "osd dump")["flags_set"]
        if "noout" not in flags:
            raise StepFailed("noout was not set before the upgrade step")
        if self.fail:
            raise StepFailed("upgrade failed on purpose")
        return {}


def test_noout_contributed_to_cluster_upgrade(dv_state: Any, ceph_lab: dict[str, Any]) -> None:
    from debvisor_core.context import Context
    from debvisor_core.engine import Operation, run

    dv_state.config({}, base=ceph_lab["config"])
    work = UpgradeWork(ceph_lab["conf"], ceph_lab["keyring"])
    op = Operation(kind="cluster.upgrade", title="upgrade test", steps=[work])
    res = run(Context(yes=True), op)
    assert res.status == "succeeded"
    assert [s["name"] for s in res.steps] == ["CephNooutSet", "UpgradeWork", "CephNooutUnset"]
    assert "noout" not in _osd_dump(ceph_lab)["flags_set"]
    failing = Operation(kind="cluster.upgrade", title="failing upgrade",
                        steps=[UpgradeWork(ceph_lab["conf"], ceph_lab["keyring"], fail=True)])
    with pytest.raises(RolledBack):
        run(Context(yes=True), failing)
    assert "noout" not in _osd_dump(ceph_lab)["flags_set"]


def test_upgrade_check_reads_the_lab_cluster(cdv: Any, ceph_lab: dict[str, Any]) -> None:
    """`upgrade check`: HEALTH_OK passes, so does a warning that is only noout (set for an
    upgrade); the running versions come from `ceph versions`."""
    with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
        versions = mon_json(c, "versions")
    release = re.search(r"ceph version (\d+\.\d+\.\d+)", next(iter(versions["overall"])))
    assert release
    res = cdv("--json", "upgrade", "check", "--only", "ceph.")
    assert res.code == 0, res
    checks = {c["name"]: c for c in res.json["checks"]}
    assert checks["ceph.health"]["status"] == "pass", checks
    assert checks["ceph.versions"]["status"] == "pass"
    assert f"every daemon runs {release.group(1)}" in checks["ceph.versions"]["summary"]
    with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
        mon_command(c, "osd set", key="noout")
        try:
            wait_for(lambda: "OSDMAP_FLAGS" in mon_json(c, "health")["checks"], timeout=30,
                     what="the noout warning")
            res = cdv("--json", "upgrade", "check", "--only", "ceph.health")
        finally:
            mon_command(c, "osd unset", key="noout")
    (check,) = res.json["checks"]
    assert check["status"] == "pass" and check["summary"] == "HEALTH_WARN (noout set)", check


def test_maintenance_drain_sets_noout_on_a_node_with_osds(cdv: Any, ceph_lab: dict[str, Any]) -> None:
    """`maintenance enable --drain` on lab-node1 (it has OSDs): noout is set for the time of
    the maintenance, with its reason; `maintenance disable` unsets it."""
    with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
        assert "noout" not in mon_json(c, "osd dump")["flags_set"]
    try:
        res = cdv("--json", "maintenance", "enable", "--drain", "--reason", "disk swap", "--yes")
        assert res.code == 0, res
        assert [s["name"] for s in res.json["steps"]] == ["EnterMaintenance", "CephNooutSet"]
        with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
            assert "noout" in mon_json(c, "osd dump")["flags_set"]
        status = cdv("ceph", "status")
        assert "debvisor maintenance of lab-node1: disk swap" in status.stdout, status
        off = cdv("--json", "maintenance", "disable")
        assert off.code == 0 and off.json["rolled_back"] == res.json["id"], off
    finally:
        with connect(ceph_lab["conf"], ceph_lab["keyring"]) as c:
            flags = mon_json(c, "osd dump")["flags_set"]
            if "noout" in flags:
                mon_command(c, "osd unset", key="noout")
    assert "noout" not in flags
