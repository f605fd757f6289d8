"""Pure analysis over recorded lab dumps (tests/data) and a synthetic 1,000-OSD dump."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from debvisor_ceph import analysis
from debvisor_ceph.alerts import alerts
from debvisor_ceph.join import classify_disks, parse_size

from debvisor_core.errors import BadInput

DATA = Path(__file__).parent / "data"


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((DATA / f"{name}.json").read_text()))


def test_status_summary_counts() -> None:
    s = analysis.status_summary(load("lab-healthy")["status"])
    assert s["health"] == "HEALTH_OK"
    assert s["mons"] == {"total": 1, "in_quorum": 1, "quorum": ["a"]}
    assert s["osds"]["up"] == s["osds"]["in"] == 3
    assert s["pgs"]["by_state"] == {"active+clean": 33}
    down = analysis.status_summary(load("lab-osd-down")["status"])
    assert down["health"] == "HEALTH_WARN" and down["osds"]["up"] == 2
    assert [c["code"] for c in down["checks"]] == ["OSD_DOWN"]


def test_down_osd_suggestion() -> None:
    r = analysis.osd_report(load("lab-osd-down"))
    (s,) = r["suggestions"]
    assert (s["osd"], s["kind"], s["severity"]) == (2, "down", "crit")
    assert "ceph osd out 2" in s["commands"]
    assert next(o for o in r["osds"] if o["id"] == 2)["status"] == "down,in"


def test_nearfull_and_outlier_reweights() -> None:
    d = load("lab-healthy")
    nodes = d["osd_df"]["nodes"]
    nodes[0]["utilization"], nodes[0]["kb_used"] = 88.0, int(nodes[0]["kb"] * 0.88)
    nodes[1]["utilization"], nodes[1]["kb_used"] = 40.0, int(nodes[1]["kb"] * 0.40)
    r = analysis.osd_report(d)
    kinds = {(s["osd"], s["kind"]) for s in r["suggestions"]}
    assert (0, "nearfull") in kinds
    near = next(s for s in r["suggestions"] if s["kind"] == "nearfull")
    avg = 100 * sum(n["kb_used"] for n in nodes) / sum(n["kb"] for n in nodes)
    assert near["reweight"] == pytest.approx(avg / 88.0, abs=1e-3)
    assert near["commands"] == [f"ceph osd reweight 0 {near['reweight']}"]
    # an out OSD gets the "mark it in" advice
    d2 = load("lab-healthy")
    d2["osd_dump"]["osds"][1]["in"] = 0
    assert any(s["kind"] == "out" and s["osd"] == 1 for s in analysis.osd_report(d2)["suggestions"])


def test_capacity_projection_given_and_measured() -> None:
    d = load("lab-healthy")
    kind, per_day = analysis.parse_growth("1GiB/day")
    assert (kind, per_day) == ("abs", 1024**3)
    rows = {p["pool"]: p for p in analysis.capacity(d, growth=(kind, per_day))["pools"]}
    rbd = rows["rbd"]
    assert rbd["size"] == 1 and rbd["pg_num"] == 32
    assert rbd["days_to_full"] == pytest.approx(rbd["max_avail_bytes"] / 1024**3, abs=0.1)
    assert 0 < rbd["days_to_nearfull"] < rbd["days_to_full"]
    samples = [{"t": 0, "stored": {"rbd": 0}}, {"t": 86400, "stored": {"rbd": 2 * 1024**3}}]
    rates = analysis.growth_rates(samples)
    assert rates["rbd"] == pytest.approx(2 * 1024**3)
    m = {p["pool"]: p for p in analysis.capacity(d, rates=rates)["pools"]}["rbd"]
    assert m["growth_source"] == "measured" and m["days_to_full"] == pytest.approx(
        rbd["max_avail_bytes"] / (2 * 1024**3), abs=0.1)
    assert analysis.parse_growth("5%/month")[0] == "pct"
    for bad in ("fast", "10GiB/fortnight", "ib/day"):
        with pytest.raises(BadInput):
            analysis.parse_growth(bad)


def test_pg_balance_upmaps_improve_spread() -> None:
    d = load("lab-healthy")
    r = analysis.pg_balance(d)
    assert r["pgs_per_osd"]["min"] == 9 and r["pgs_per_osd"]["max"] == 12
    ups = [x for x in r["recommendations"] if x["kind"] == "upmap"]
    assert ups and all(x["to"] == 2 for x in ups)
    assert r["expected"]["pgs_per_osd"]["stddev"] < r["pgs_per_osd"]["stddev"]
    assert any(x["kind"] == "pg_num" and x["pool"] == "rbd" and x["to"] > 32 for x in r["recommendations"])
    d["osd_dump"]["require_min_compat_client"] = "jewel"  # no upmap: reweights instead
    r2 = analysis.pg_balance(d)
    assert not any(x["kind"] == "upmap" for x in r2["recommendations"])


def test_maintenance_plan_single_host_size1() -> None:
    p = analysis.maintenance_plan("lab-node1", load("lab-healthy"))
    assert p["osds"] == [0, 1, 2] and not p["can_stop_together"]
    assert p["pgs_inactive"] == 33 and p["flags"] == ["noout"]
    with pytest.raises(BadInput, match="no CRUSH host"):
        analysis.maintenance_plan("nope", load("lab-healthy"))


def test_maintenance_plan_pgs_already_inactive_on_a_down_osd() -> None:
    """Issue 18: the only copies of some PGs sit on the down osd.2 and osd.0/osd.1 hold none.
    Those PGs are reported once, as already inactive, and charged to no batch."""
    d = load("lab-osd-down")  # one-copy pools, osd.2 down
    d["pgs_brief"] = [pg for pg in d["pgs_brief"] if pg["acting"] == [2]]
    p = analysis.maintenance_plan("lab-node1", d)
    assert p["batches"] == [{"osds": [0, 1], "inactive_pgs": 0}] and p["can_stop_together"]
    assert (p["pgs_already_inactive"], p["already_inactive_on"], p["pgs_inactive"]) == (9, [2], 0)
    assert len(p["already_inactive_pgs"]) == 9 and p["pgs_degraded"] == 0
    (note,) = [n for n in p["notes"] if "already inactive" in n]
    assert note.startswith("9 PGs already inactive (on down OSDs osd.2)")
    # with PGs of their own on osd.0 and osd.1, each batch counts exactly those
    full = analysis.maintenance_plan("lab-node1", load("lab-osd-down"))
    assert full["batches"] == [{"osds": [0], "inactive_pgs": 12}, {"osds": [1], "inactive_pgs": 12}]
    assert (full["pgs_inactive"], full["pgs_already_inactive"]) == (24, 9)


def test_maintenance_plan_replicated_hosts() -> None:
    sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
    from synthetic import scaled_dump

    d = scaled_dump(hosts=6, per_host=4, pg_num=256)  # osd.5 (node001) is down
    assert analysis.maintenance_plan("node002", d)["pgs_inactive"] > 0  # PGs sharing osd.5 lose min_size
    d["osd_dump"]["osds"][5].update(up=1, state=["exists", "up"])
    p = analysis.maintenance_plan("node002", d)
    assert p["can_stop_together"] and p["pgs_inactive"] == 0 and p["pgs_degraded"] > 0
    assert p["batches"] == [{"osds": [8, 9, 10, 11], "inactive_pgs": 0}]


def test_alerts_hints_and_muted() -> None:
    h = copy.deepcopy(load("lab-osd-down")["health"])
    msg = "1 pool(s) do not have an application enabled"
    h["checks"]["POOL_APP_NOT_ENABLED"] = {"severity": "HEALTH_WARN", "muted": True,
                                           "summary": {"message": msg, "count": 1},
                                           "detail": [{"message": f"line {i}"} for i in range(8)]}
    r = alerts(h)
    assert [a["code"] for a in r["alerts"]] == ["OSD_DOWN", "POOL_APP_NOT_ENABLED"]
    assert r["alerts"][1]["muted"] and r["alerts"][1]["detail_more"] == 3
    assert "application enable" in r["alerts"][1]["hint"]
    assert len(alerts(h, all_details=True)["alerts"][1]["detail"]) == 8
    assert r["counts"]["warning"] == 1
    assert "noout_reason" not in r["alerts"][0] and r["noout"] == {"set": False, "reason": None}


def test_alerts_noout_reason() -> None:
    h = {"status": "HEALTH_WARN", "checks": {"OSDMAP_FLAGS": {
        "severity": "HEALTH_WARN", "summary": {"message": "noout flag(s) set", "count": 1}, "detail": []}}}
    r = alerts(h, noout={"set": True, "reason": "rack 2 power work"})
    assert r["alerts"][0]["noout_reason"] == "rack 2 power work"
    assert r["noout"] == {"set": True, "reason": "rack 2 power work"}
    # another flag (e.g. norebalance) raised OSDMAP_FLAGS while noout is unset: no reason row
    assert "noout_reason" not in alerts(h, noout={"set": False, "reason": None})["alerts"][0]


def test_disk_discovery() -> None:
    tree = {"blockdevices": [
        {"name": "sda", "type": "disk", "size": 100, "children": [
            {"name": "sda1", "type": "part", "mountpoint": "/"}]},
        {"name": "sdb", "type": "disk", "size": 4000, "model": "X"},
        {"name": "sdc", "type": "disk", "size": 4000, "fstype": "LVM2_member"},
        {"name": "sdd", "type": "disk", "size": 4000},
        {"name": "loop0", "type": "loop", "size": 1}]}
    disks = {d["name"]: d for d in classify_disks(tree, {"sdd": ["dm-0"]})}
    assert [n for n, d in disks.items() if d["unused"]] == ["sdb"]
    assert "boot disk" in disks["sda"]["reasons"] and "held by dm-0" in disks["sdd"]["reasons"]
    assert "loop0" not in disks
    assert parse_size("2G") == 2 * 1024**3
    with pytest.raises(BadInput):
        parse_size("lots")
