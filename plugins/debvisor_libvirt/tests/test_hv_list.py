"""`hv list` on the lab nodes: its per-node bulk calls (one getAllDomainStats, one
listAllDomains of the transient domains) give what asking each domain gives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.root]


@pytest.fixture
def domains(hv_env: Any, unique: str) -> Iterator[dict[str, tuple[Any, ...]]]:
    """On node1: shut-off domains registered, unregistered (metadata saying so) and
    without metadata, and a paused registered one; on node2: a running transient
    registered one. Name -> (node, state, persistent, registered)."""
    from debvisor_libvirt import lab
    from debvisor_libvirt.domains import write_meta

    g = hv_env.config["hv"]["guest"]

    def xml(name: str) -> str:
        return lab.guest_xml(name, memory_mib=96, kernel=g["kernel"], initrd=g["initrd"],
                             vnc=False)

    n1, n2 = hv_env.conn("node1"), hv_env.conn("node2")
    want = {f"{unique}-reg": ("node1", "shutoff", True, True),
            f"{unique}-unreg": ("node1", "shutoff", True, False),
            f"{unique}-plain": ("node1", "shutoff", True, False),
            f"{unique}-paused": ("node1", "paused", True, True),
            f"{unique}-tr": ("node2", "running", False, True)}
    try:
        write_meta(n1.defineXML(xml(f"{unique}-reg")), {"registered": True, "owner": "ops"})
        write_meta(n1.defineXML(xml(f"{unique}-unreg")), {"registered": False, "owner": "ops"})
        n1.defineXML(xml(f"{unique}-plain"))
        paused = n1.defineXML(xml(f"{unique}-paused"))
        paused.create()
        paused.suspend()
        write_meta(paused, {"registered": True})
        write_meta(n2.createXML(xml(f"{unique}-tr"), 0), {"registered": True})
        yield want
    finally:
        for name in want:
            hv_env.remove(name)


def _summary(row: dict[str, Any]) -> tuple[Any, ...]:
    return row["node"], row["state"], row["persistent"], row["registered"]


def test_list_rows_agree_with_each_domain(dv: Any, hv_env: Any,
                                          domains: dict[str, tuple[Any, ...]]) -> None:
    from debvisor_libvirt.domains import read_meta, state_name

    res = dv("--json", "hv", "list")
    assert res.code == 0, res
    rows = {r["name"]: r for r in res.json["vms"]}
    assert {n: _summary(rows[n]) for n in domains} == domains
    assert all((rows[n]["vcpus"], rows[n]["memory_mib"]) == (1, 96) for n in domains)
    assert rows[next(n for n in domains if n.endswith("-tr"))]["uptime_s"] is not None
    # every row (other tests' domains too) says what the domain itself says
    for r in res.json["vms"]:
        dom = hv_env.conn(r["node"]).lookupByUUIDString(r["uuid"])
        meta = read_meta(dom)
        assert _summary(r) == (r["node"], state_name(dom.state()[0]), bool(dom.isPersistent()),
                               bool(meta and meta["registered"])), r
        assert r["name"] == dom.name()


@pytest.mark.parametrize(("flt", "states"), [("running", {"running"}),
                                             ("stopped", {"shutoff"}),
                                             ("paused", {"paused"})])
def test_list_filter_reads_the_metadata_of_the_rows_kept(
        dv: Any, hv_env: Any, domains: dict[str, tuple[Any, ...]], flt: str,
        states: set[str]) -> None:
    res = dv("--json", "hv", "list", "--filter", flt)
    assert res.code == 0, res
    rows = {r["name"]: r for r in res.json["vms"]}
    assert {n: _summary(rows[n]) for n in rows if n in domains} == {
        n: s for n, s in domains.items() if s[1] in states}


def test_remote_nodes_threads_give_the_same_rows(hv_env: Any,
                                                 domains: dict[str, tuple[Any, ...]]) -> None:
    """The metadata of a remote node's domains is read by several threads: same rows."""
    from debvisor_libvirt.listing import REMOTE_META_THREADS, _node_rows

    conn = hv_env.conn("node1")
    one = sorted(_node_rows(conn, "node1"), key=lambda r: r["name"])
    many = sorted(_node_rows(conn, "node1", threads=REMOTE_META_THREADS), key=lambda r: r["name"])
    assert many == one
    assert {r["name"]: _summary(r) for r in many if r["name"] in domains} == {
        n: s for n, s in domains.items() if s[0] == "node1"}
