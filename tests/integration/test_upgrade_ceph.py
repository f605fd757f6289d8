"""A rolling upgrade on a Ceph node (the lab's real cluster): Ceph's contributions go into
the upgrade's phase slots — noout set once in a first phase and unset in a last one, and
before each batch the mgr's ok-to-stop for that batch's OSDs. A batch whose OSDs are
not ok to stop does not start: the upgrade pauses with the nodes before it upgraded."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debvisor_core.testing import Runner, StateDir

pytest.importorskip("debvisor_ceph.fileosd", reason="the ceph plugin is not installed")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from debvisor_ceph.fileosd import connect, mon_json
from debvisor_ceph.lab import HOST
from test_upgrade_run import AGENT, local_nodes, versions

pytestmark = [pytest.mark.lab, pytest.mark.root]


@pytest.fixture
def ceph(dv_lab: Any) -> Iterator[dict[str, Any]]:
    path = dv_lab.require("ceph")
    sec = tomllib.loads(path.read_text())["ceph"]
    yield {"path": path, **sec}
    with connect(sec["conf"], sec["keyring"]) as c:  # never leave noout to later tests
        if "noout" in (mon_json(c, "osd dump").get("flags_set") or []):
            mon_json(c, "osd unset", key="noout")


def _noout(ceph: dict[str, Any]) -> bool:
    with connect(ceph["conf"], ceph["keyring"]) as c:
        return "noout" in (mon_json(c, "osd dump").get("flags_set") or [])


def test_noout_once_and_a_batch_whose_osds_are_not_ok_to_stop_pauses(
        dv: Runner, dv_state: StateDir, ceph: dict[str, Any], tmp_path: Path) -> None:
    roots = local_nodes(dv_state, tmp_path, {"node1": {"ceph_host": "no-osds-here"},
                                             "node2": {"ceph_host": HOST}},
                        config={"ceph": {"upgrade": {"ok_to_stop_wait": 0}}}, base=ceph["path"])
    assert not _noout(ceph)
    dry = dv("upgrade", "rolling", "--dry-run")
    assert dry.code == 0, dry
    lines = [ln.strip() for ln in dry.stdout.splitlines()]
    assert lines[1].startswith("1. [before] set the Ceph noout flag"), dry.stdout
    assert "2. [node1] Ceph: the OSDs of no-osds-here are ok to stop" in lines[2]
    assert any(f"[node2] Ceph: the OSDs of {HOST} are ok to stop" in ln for ln in lines)
    assert "[after] unset the Ceph noout flag" in lines[-1]

    res = dv("upgrade", "rolling", "--yes")
    assert res.code == 4 and "paused" in res.stderr, res
    # the mgr's reason depends on the lab's PGs: inactive ones, or unknown ones after a start
    assert f"osd.0, osd.1, osd.2 on {HOST} are not ok to stop: " in res.stderr, res.stderr
    assert versions(roots["node1"])[AGENT] == "1.1"  # its batch ran (no OSDs there)
    assert versions(roots["node2"])[AGENT] == "1.0"  # its batch never started
    assert _noout(ceph)  # set once, kept while the upgrade is paused

    (op,) = dv("--json", "ops", "list").json
    back = dv("ops", "rollback", op["id"], "--yes")
    assert back.code == 0, back
    assert versions(roots["node1"])[AGENT] == "1.0" and not _noout(ceph)
