"""The panel's Ceph page against a real debvisor-rpcd and the Ceph lab (1 mon, 1 mgr, 3
file-backed OSDs on 127.0.0.1, the session's shared lab cluster: the ceph plugin's own tests
use the same one, so this leaves noout as it found it). What the cluster says is asked of
it directly (`ceph osd dump`), never through the plugin or the panel."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from labworld import RpcdWorld, clients, start, task_of

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = [pytest.mark.lab, pytest.mark.root]
USERS = {"alice": ("operator", "alice has a long password"),
         "bob": ("viewer", "bob has another long one")}
REASON = "panel test: node3 kernel upgrade"


class Cluster:
    """The lab cluster, asked with the ceph CLI and its admin keyring."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.conf, self.keyring = config["ceph"]["conf"], config["ceph"]["keyring"]

    def ceph(self, *args: str) -> Any:
        res = subprocess.run(["ceph", "-c", self.conf, "-k", self.keyring, *args,
                              "--format", "json"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def noout(self) -> bool:
        return "noout" in str(self.ceph("osd", "dump")["flags"]).split(",")


@pytest.fixture(scope="module")
def lab_config(dv_lab: Any) -> Path:
    return Path(dv_lab.require("ceph"))


@pytest.fixture(scope="module")
def cluster(lab_config: Path) -> Iterator[Cluster]:
    c = Cluster(tomllib.loads(lab_config.read_text()))
    was = c.noout()
    yield c
    if c.noout() != was:  # the cluster is shared with later tests: as it was
        subprocess.run(["ceph", "-c", c.conf, "-k", c.keyring, "osd",
                        "set" if was else "unset", "noout"], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, lab_config: Path) -> Iterator[RpcdWorld]:
    w = start(tmp_path_factory.mktemp("panelceph"), USERS, base=lab_config)
    yield w
    w.stop()


@pytest.fixture
def make_client(world: RpcdWorld) -> Iterator[Callable[..., TestClient]]:
    yield from clients(world, USERS)


def test_the_page_shows_the_cluster_as_ceph_says(make_client: Callable[..., TestClient],
                                                 cluster: Cluster) -> None:
    c = make_client("bob")  # a viewer reads it all but the PG balance
    page = c.get("/ceph")
    assert page.status_code == 200, page.text
    assert 'href="/ceph"' in page.text.split("<nav>")[1].split("</nav>")[0]
    status = cluster.ceph("status")
    health = status["health"]["status"]
    assert re.search(rf'id="ceph-health"><strong>{health}</strong>', page.text), page.text
    osds = cluster.ceph("osd", "dump")["osds"]
    up = sum(o["up"] for o in osds)
    assert f'id="ceph-osds-summary">{up} up, {sum(o["in"] for o in osds)} in, of {len(osds)}' \
        in page.text
    hosts = {c: n["name"] for n in cluster.ceph("osd", "tree")["nodes"] if n["type"] == "host"
             for c in n.get("children", [])}
    assert set(hosts) >= {0, 1, 2}
    for o in osds:  # every OSD, under its CRUSH host, as up/in as the cluster says
        host = re.escape(hosts.get(o["osd"], ""))
        row = re.search(rf'<tr data-osd="{o["osd"]}"><td>osd\.{o["osd"]}</td><td>{host}</td>'
                        r"(.*?)</tr>", page.text)
        assert row, page.text
        assert ("up,in" in row.group(1)) == (o["up"] == 1 and o["in"] == 1)
    assert 'id="ceph-raw">Raw: ' in page.text and 'id="ceph-capacity"' in page.text
    assert "noout is not set." in page.text and not cluster.noout()
    # no write for a viewer: no noout form; PG balance (an action that can change state)
    # is refused by name, before rpcd would
    assert 'action="/ceph/noout/set"' not in page.text
    assert "Your role cannot set noout." in page.text
    frag = c.get("/fragments/ceph-balance")
    assert frag.status_code == 200
    assert "Your role cannot run ceph.pg.balance (rpcd would refuse it)." in frag.text
    # an operator gets the PG balance report (PGs per OSD as the cluster counts them)
    a = make_client()
    report = a.get("/fragments/ceph-balance").text
    per = re.search(r'id="pgs-per-osd">min ([\d.]+), max ([\d.]+),', report)
    assert per, report
    counts = [n["pgs"] for n in cluster.ceph("osd", "df")["nodes"]  # the up, in, weighted ones
              if n.get("status") == "up" and n["reweight"] > 0 and n["crush_weight"] > 0]
    assert (float(per.group(1)), float(per.group(2))) == (min(counts), max(counts))


def test_noout_plan_apply_then_rollback_from_the_journal(
        make_client: Callable[..., TestClient], cluster: Cluster, world: RpcdWorld) -> None:
    c = make_client()
    assert not cluster.noout()
    page = c.get("/ceph")
    assert 'action="/ceph/noout/set"' in page.text
    plan = c.get("/ceph/noout/set", params={"reason": REASON})
    assert plan.status_code == 200, plan.text
    assert f"1. set the Ceph noout flag ({REASON})" in plan.text
    assert 'data-role="apply"' in plan.text and not cluster.noout()  # the plan changed nothing
    bad = c.get("/ceph/noout/set", params={"reason": "x" * 201})
    assert bad.status_code == 400 and "The reason is longer than 200 characters." in bad.text
    task = task_of(c, c.post("/ceph/noout/set",
                             data={"csrf": c.csrf, "reason": REASON}))  # type: ignore[attr-defined]
    assert task.status == "succeeded", task.view()
    assert cluster.noout()
    page = c.get("/ceph")
    assert f"<strong class=\"warning\">noout is set</strong>: {REASON}" in page.text
    assert 'data-code="OSDMAP_FLAGS"' in page.text  # the alert, with its reason
    assert 'action="/ceph/noout/unset"' in page.text
    again = c.get("/ceph/noout/set")
    assert 'id="noop">noout is already set: nothing to do.' in again.text
    assert 'data-role="apply"' not in again.text
    audit = [r for r in world.audit() if r.get("operation") == task.op_id]
    assert audit[-1]["result"] == "succeeded" and audit[-1]["caller"] == "alice via=panel"
    # the journal undoes it (re-authentication first)
    op = c.get(f"/ops/{task.op_id}")
    assert "undo 1. set the Ceph noout flag" in op.text
    r = c.post(f"/ops/{task.op_id}/rollback",
               data={"csrf": c.csrf, "password": USERS["alice"][1]})  # type: ignore[attr-defined]
    assert r.status_code == 200 and 'id="op-status">rolled-back<' in r.text, r.text
    assert not cluster.noout()
