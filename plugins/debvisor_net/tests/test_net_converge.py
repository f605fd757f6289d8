"""snapshot / plan / execute / converge against the namespace test bed (root, this kernel).

Every test that touches the kernel builds its own bed (about 0.1 s) and reads the result
back with a fresh snapshot or `ip`, and reachability with a socket in the node's namespace.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from debvisor_net import converge as converge_mod
from debvisor_net.converge import Change, converge, execute, plan
from debvisor_net.kernel import open_netlink, read_proc_net
from debvisor_net.snapshot import bond_slave_order, diff, snapshot
from debvisor_net.testbed import Bed

from debvisor_core.errors import BadInput

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                       reason="needs root and iproute2 (network namespaces)"),
]

BR0_MAC = "02:00:00:00:50:01"


@pytest.fixture
def bed() -> Iterator[Bed]:
    with Bed(f"dvt{uuid.uuid4().hex[:8]}") as b:
        yield b


def bridged(original: dict[str, Any]) -> dict[str, Any]:
    """ORIGINAL changed: br0 (STP on, forward delay 4 s) over eth1+eth2 holds both addresses
    and every route, eth0 is down."""
    target = copy.deepcopy(original)
    links = target["links"]
    links["br0"] = {"kind": "bridge", "master": None, "mtu": 1500, "mac": BR0_MAC, "up": True,
                    "bridge": {"stp": True, "forward_delay": 400, "priority": 32768}}
    for name in ("eth1", "eth2"):
        links[name].update(master="br0", up=True)
    links["eth0"]["up"] = False
    for a in target["addresses"]:
        a["dev"] = "br0"
    for r in target["routes"]:
        r["dev"] = "br0"
    return target


def ops(changes: list[Change]) -> list[str]:
    return [c.op for c in changes]


# -- snapshot --------------------------------------------------------------------------------
def test_snapshot_holds_the_configured_state(bed: Bed) -> None:
    snap = snapshot(bed.ipr("node"))
    assert json.loads(json.dumps(snap)) == snap
    links = snap["links"]
    assert set(links) == {"lo", "eth0", "eth1", "eth2", "eth3"}
    assert links["eth1"]["mtu"] == 9000 and links["eth0"]["mtu"] == 1500
    assert links["eth2"]["up"] is False
    assert links["eth0"]["up"] and links["eth3"]["up"] and links["lo"]["up"]
    assert links["eth0"]["kind"] == "veth" and links["lo"]["kind"] is None
    assert links["eth0"]["veth"] == {"peer": None}  # the peer sits in the sw namespace
    # no link-locals, no loopback addresses: only what a restore has to add
    assert snap["addresses"] == [{"dev": "eth0", "address": "10.50.0.10/24"},
                                 {"dev": "eth0", "address": "fd00:50::10/64"}]
    routes = {(r["family"], r["dst"]): r for r in snap["routes"]}
    assert set(routes) == {(4, "default"), (6, "default"), (4, "10.70.0.0/16")}  # no kernel ones
    assert routes[(4, "10.70.0.0/16")] == {
        "family": 4, "dst": "10.70.0.0/16", "gateway": "10.50.0.1", "dev": "eth0",
        "metric": 100, "table": 254, "proto": 4, "scope": 0, "type": 1, "prefsrc": None}
    assert routes[(4, "default")]["proto"] == 3 and routes[(4, "default")]["metric"] == 0
    assert routes[(6, "default")]["gateway"] == "fd00:50::1"
    assert routes[(6, "default")]["metric"] == 1024
    assert snap["rules"] == []  # the kernel's default rules are left out
    assert diff(snap, snapshot(bed.ipr("node"))) == []


def test_snapshot_names_bridges_and_ports(bed: Bed) -> None:
    bed.exec("node", "ip", "link", "add", "name", "vmbr1", "type", "bridge", "stp_state", "1",
             "forward_delay", "400", "priority", "4096", check=True)
    bed.exec("node", "ip", "link", "set", "dev", "eth3", "master", "vmbr1", check=True)
    bed.exec("node", "ip", "rule", "add", "from", "10.50.0.0/24", "lookup", "100", "pref",
             "100", check=True)
    snap = snapshot(bed.ipr("node"))
    # this kernel has no VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING): it reads as off, and
    # the default PVID is recorded only with filtering on (test_net_uml has a kernel with it)
    assert snap["links"]["vmbr1"]["bridge"] == {"stp": True, "forward_delay": 400,
                                                "priority": 4096, "vlan_filtering": 0}
    assert snap["links"]["eth3"]["master"] == "vmbr1"
    assert snap["rules"] == [{"family": 4, "priority": 100, "src": "10.50.0.0/24", "dst": None,
                              "table": 100, "iifname": None, "oifname": None, "fwmark": None,
                              "action": 1}]


# -- converge --------------------------------------------------------------------------------
def test_converge_to_a_bridge_and_back(bed: Bed) -> None:
    ipr = bed.ipr("node")
    original = snapshot(ipr)
    target = bridged(original)

    made = converge(ipr, target)
    assert "add bridge br0 (stp on, forward delay 4 s)" in made
    assert "move eth1 into br0" in made and "add 10.50.0.10/24 on br0" in made
    now = snapshot(ipr)
    assert diff(target, now) == []
    assert now["links"]["br0"]["bridge"]["forward_delay"] == 400
    # read back with iproute2 too, not only through our own snapshot code
    shown = json.loads(bed.exec("node", "ip", "-j", "route", "show", "default",
                                check=True).stdout)
    assert [(r["gateway"], r["dev"]) for r in shown] == [("10.50.0.1", "br0")]
    assert converge(ipr, target) == []  # idempotent

    made = converge(ipr, original)
    assert made[0] == "delete bridge br0"
    assert diff(original, snapshot(ipr)) == []
    assert converge(ipr, original) == []
    assert bed.tcp("node", bed.PEER4)  # same segment
    assert bed.tcp("node", bed.FAR4)  # through gw: the default route is back


def test_missing_physical_link_is_refused_before_any_change(bed: Bed) -> None:
    ipr = bed.ipr("node")
    original = snapshot(ipr)
    target = bridged(original)
    target["links"]["eth9"] = {"kind": None, "master": None, "mtu": 1500,
                               "mac": "02:00:00:00:00:09", "up": True}
    with pytest.raises(ValueError, match="eth9") as info:
        converge(ipr, target)
    assert "\n" not in str(info.value)
    assert diff(original, snapshot(ipr)) == []  # br0 was not created, nothing moved


def test_unreachable_targets_are_refused(bed: Bed) -> None:
    current = snapshot(bed.ipr("node"))
    bad = copy.deepcopy(current)
    bad["links"]["eth0"]["kind"] = "bridge"  # a veth whose peer is elsewhere cannot become one
    bad["links"]["eth0"]["veth"] = None
    with pytest.raises(ValueError, match="eth0"):
        plan(current, bad)
    bad = copy.deepcopy(current)
    bad["links"]["eth1"]["master"] = "br9"
    with pytest.raises(ValueError, match="br9"):
        plan(current, bad)
    bad = copy.deepcopy(current)
    bad["addresses"].append({"dev": "eth7", "address": "10.9.9.9/24"})
    with pytest.raises(ValueError, match="eth7"):
        plan(current, bad)


def test_virtual_links_rules_and_tables_round_trip(bed: Bed) -> None:
    ipr = bed.ipr("node")
    original = snapshot(ipr)
    rich = copy.deepcopy(original)
    links = rich["links"]
    links["vmbr1"] = {"kind": "bridge", "master": None, "mtu": 1400, "mac": None, "up": True,
                      "bridge": {"stp": True, "forward_delay": 400, "priority": 4096}}
    links["eth3"]["master"] = "vmbr1"
    links["v0"] = {"kind": "veth", "master": None, "mtu": 1500, "mac": "02:00:00:00:00:a0",
                   "up": True, "veth": {"peer": "v1"}}
    links["v1"] = {"kind": "veth", "master": "vmbr1", "mtu": 1500, "mac": "02:00:00:00:00:a1",
                   "up": True, "veth": {"peer": "v0"}}
    links["mv0"] = {"kind": "macvlan", "master": None, "mtu": 1500, "mac": "02:00:00:00:00:b0",
                    "up": True, "macvlan": {"mode": "bridge", "link": "v0"}}
    rich["addresses"].append({"dev": "mv0", "address": "192.168.7.1/24"})
    rich["routes"] += [
        {"family": 4, "dst": "192.168.8.0/24", "gateway": "10.50.0.1", "dev": "eth0",
         "table": 100, "proto": 4},
        {"family": 4, "dst": "192.168.9.0/24", "type": 6, "proto": 4},  # blackhole
        {"dst": "10.80.0.0/16", "multipath": [{"gateway": "10.50.0.20", "dev": "eth0"},
                                              {"gateway": "10.50.0.1", "dev": "eth0"}]},
        {"dst": "fd00:81::/64", "gateway": "fd00:50::20", "dev": "eth0",
         "prefsrc": "fd00:50::10", "metric": 5},
    ]
    rich["rules"] += [{"family": 4, "priority": 100, "src": "10.50.0.0/24", "table": 100},
                      {"family": 6, "priority": 200, "dst": "fd00:70::/32", "table": 100,
                       "iifname": "eth0", "fwmark": 7}]
    converge(ipr, rich)
    full = snapshot(ipr)
    assert diff(rich, full) == []
    assert full["links"]["vmbr1"]["mtu"] == 1400  # kept although its ports have 1500
    assert full["links"]["v0"]["veth"] == {"peer": "v1"}

    made = converge(ipr, original)
    assert made[:3] == ["delete macvlan mv0", "delete bridge vmbr1",
                        "delete veth v0 (and its peer v1)"]
    assert diff(original, snapshot(ipr)) == []

    # the recorded snapshot (the bridge's MAC included) comes back exactly
    converge(ipr, full)
    assert diff(full, snapshot(ipr)) == []
    assert converge(ipr, full) == []


def test_replacing_a_gateway_is_one_replace(bed: Bed) -> None:
    ipr = bed.ipr("node")
    target = snapshot(ipr)
    for r in target["routes"]:
        if r["family"] == 4 and r["dst"] == "default":
            r["gateway"] = bed.PEER4
    changes = plan(snapshot(ipr), target)
    assert [(c.op, c.description) for c in changes] == [
        ("route.replace", "replace default via 10.50.0.20 dev eth0 metric 0 (proto boot)")]
    execute(ipr, changes)
    assert diff(target, snapshot(ipr)) == []
    shown = json.loads(bed.exec("node", "ip", "-j", "route", "show", "default",
                                check=True).stdout)
    assert [r["gateway"] for r in shown] == [bed.PEER4]


def test_a_second_pass_repairs_what_the_plan_did_not_foresee(
        bed: Bed, monkeypatch: pytest.MonkeyPatch) -> None:
    ipr = bed.ipr("node")
    bed.exec("node", "ip", "addr", "add", "fd00:53::1/64", "dev", "eth3", "nodad", check=True)
    original = snapshot(ipr)
    target = copy.deepcopy(original)
    target["links"]["br3"] = {"kind": "bridge", "master": None, "mtu": 1500, "mac": None,
                              "up": True, "bridge": {"stp": False, "forward_delay": 0}}
    target["links"]["eth3"]["master"] = "br3"  # eth3 goes down first: its v6 address goes
    # the plan knows that admin-down drops IPv6 addresses, so it adds it back right away
    descriptions = [c.description for c in plan(original, target)]
    assert descriptions.index("add fd00:53::1/64 on eth3") > descriptions.index(
        "set eth3 down before moving it into br3")

    def blind_set_down(self: Any, name: str) -> None:  # a plan unaware of that flush
        self.links[name]["up"] = False

    monkeypatch.setattr(converge_mod._State, "set_down", blind_set_down)
    made = converge(ipr, target)
    assert made.count("add fd00:53::1/64 on eth3") == 1  # by the second pass
    assert made.index("add fd00:53::1/64 on eth3") > made.index("move eth3 into br3")
    assert diff(target, snapshot(ipr)) == []


def test_converge_gives_up_after_two_passes(bed: Bed, monkeypatch: pytest.MonkeyPatch) -> None:
    ipr = bed.ipr("node")
    target = bridged(snapshot(ipr))
    calls: list[int] = []
    monkeypatch.setattr(converge_mod, "execute", lambda ipr, changes: calls.append(len(changes)))
    with pytest.raises(RuntimeError, match=r"after 2 passes.*link br0"):
        converge(ipr, target)
    assert len(calls) == 2


# -- plan (no kernel changes) -------------------------------------------------------------
def test_plan_order(bed: Bed) -> None:
    current = snapshot(bed.ipr("node"))
    current["links"]["old0"] = {"kind": "bridge", "master": None, "mtu": 1500,
                                "mac": "02:00:00:00:00:99", "up": True,
                                "bridge": {"stp": False, "forward_delay": 0, "priority": 1}}
    current["rules"].append({"family": 4, "priority": 90, "src": "10.1.0.0/16", "dst": None,
                             "table": 90, "iifname": None, "oifname": None, "fwmark": None,
                             "action": 1})
    target = bridged(snapshot(bed.ipr("node")))
    target["rules"].append({"family": 4, "priority": 100, "src": "10.50.0.0/24",
                            "table": 100})
    changes = plan(current, target)
    seq = ops(changes)

    def first(op: str) -> int:
        return seq.index(op)

    def last(op: str) -> int:
        return len(seq) - 1 - seq[::-1].index(op)

    assert seq[0] == "link.del" and changes[0].args == {"name": "old0"}
    assert last("link.del") < first("link.add") < first("link.enslave")
    enslave = [c for c in changes if c.op == "link.enslave"]
    assert [c.args for c in enslave] == [{"name": "eth1", "master": "br0"},
                                         {"name": "eth2", "master": "br0"}]
    # eth1 is up: it goes down before it is enslaved, and up again after
    i = seq.index("link.enslave")
    assert changes[i - 1].args == {"name": "eth1", "up": False}
    assert last("link.enslave") < first("addr.del") < first("addr.add")
    assert last("link.set") < first("addr.del")
    assert last("addr.add") < first("route.add")
    assert last("route.add") < first("rule.del") < first("rule.add")
    assert seq[-1] == "rule.add"
    for c in changes:
        if c.op.startswith("route."):
            assert {"proto", "metric", "table", "scope", "type"} <= set(c.args)
    assert json.loads(json.dumps([c.args for c in changes])) == [c.args for c in changes]
    assert plan(target, target) == []


def test_plan_bond_slave_order_and_primary() -> None:
    def link(kind: str | None = None, master: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"kind": kind, "master": master, "mtu": 1500, "mac": None, "up": True, **extra}

    current: dict[str, Any] = {"links": {"eth1": link(), "eth2": link()}, "addresses": [],
                               "routes": [], "rules": []}
    bond = {"mode": "active-backup", "miimon": 100, "primary": "eth2",
            "slaves": ["eth2", "eth1"]}
    target: dict[str, Any] = {
        "links": {"bond0": link("bond", bond=bond), "eth1": link(master="bond0"),
                  "eth2": link(master="bond0")},
        "addresses": [], "routes": [], "rules": []}
    changes = plan(current, target)
    assert changes[0].op == "link.add" and changes[0].args["bond"] == {
        "mode": "active-backup", "miimon": 100}
    enslaved = [c.args["name"] for c in changes if c.op == "link.enslave"]
    assert enslaved == ["eth2", "eth1"]  # the recorded order, not the alphabetical one
    assert changes[-1].args == {"name": "bond0", "bond": {"primary": "eth2"}}

    # enslaved the other way round: released and enslaved again in the recorded order
    current = copy.deepcopy(target)
    current["links"]["bond0"]["bond"]["slaves"] = ["eth1", "eth2"]
    changes = plan(current, target)
    assert [(c.op, c.args.get("master")) for c in changes if c.op == "link.enslave"] == [
        ("link.enslave", None), ("link.enslave", None),
        ("link.enslave", "bond0"), ("link.enslave", "bond0")]
    assert [c.args["name"] for c in changes if c.args.get("master")] == ["eth2", "eth1"]
    # only miimon differs: set in place, the bond is not recreated
    current = copy.deepcopy(target)
    current["links"]["bond0"]["bond"]["miimon"] = 200
    assert [(c.op, c.args) for c in plan(current, target)] == [
        ("link.set", {"name": "bond0", "bond": {"miimon": 100}})]


def test_plan_bridge_vlan_filtering() -> None:
    def bridge(**params: Any) -> dict[str, Any]:
        return {"kind": "bridge", "master": None, "mtu": None, "mac": None, "up": True,
                "bridge": {"stp": False, "forward_delay": 0, "priority": 32768, **params}}

    def snap(**links: Any) -> dict[str, Any]:
        return {"links": links, "addresses": [], "routes": [], "rules": []}

    target = snap(br0=bridge(vlan_filtering=1, vlan_default_pvid=10))
    changes = plan(snap(), target)
    assert [(c.op, c.description) for c in changes] == [
        ("link.add", "add bridge br0 (stp off, forward delay 0 s, vlan filtering on, "
                     "default pvid 10)"),
        ("link.set", "set br0 up")]
    assert changes[0].args["bridge"]["vlan_filtering"] == 1
    kwargs = converge_mod._kind_kwargs(None, changes[0].args)
    assert (kwargs["br_vlan_filtering"], kwargs["br_vlan_default_pvid"]) == (1, 10)
    # off is the kernel's default and not sent: this kernel refuses the attribute even then
    created = plan(snap(), snap(br0=bridge(vlan_filtering=0)))[0]
    assert created.op == "link.add" and "vlan_filtering" not in created.args["bridge"]

    # changed in place, filtering and PVID in one change; the PVID alone too
    off = snap(br0=bridge(vlan_filtering=0))
    assert [(c.op, c.description, c.args) for c in plan(off, target)] == [
        ("link.set", "set br0 vlan filtering on, default pvid 10",
         {"name": "br0", "bridge": {"vlan_filtering": 1, "vlan_default_pvid": 10}})]
    pvid1 = snap(br0=bridge(vlan_filtering=1, vlan_default_pvid=1))
    assert [c.args for c in plan(pvid1, target)] == [
        {"name": "br0", "bridge": {"vlan_default_pvid": 10}}]
    assert [c.args for c in plan(target, off)] == [
        {"name": "br0", "bridge": {"vlan_filtering": 0}}]
    assert plan(target, target) == []

    # diff: the PVID only counts with filtering on both sides; no vlan_filtering reads as off
    assert diff(target, off) == ["~ link br0: bridge vlan_filtering 1 -> 0"]
    assert diff(target, pvid1) == ["~ link br0: bridge vlan_default_pvid 10 -> 1"]
    assert diff(snap(br0=bridge(vlan_filtering=0, vlan_default_pvid=10)), off) == []
    assert diff(off, snap(br0=bridge())) == diff(snap(br0=bridge()), off) == []
    assert plan(off, snap(br0=bridge())) == []  # left out: not managed


def test_bond_slave_order_from_proc() -> None:
    text = ("Ethernet Channel Bonding Driver: v6.1\n\nBonding Mode: fault-tolerance\n"
            "Primary Slave: eth1 (primary_reselect always)\n\n"
            "Slave Interface: eth2\nMII Status: up\n\nSlave Interface: eth1\nMII Status: up\n")
    assert bond_slave_order(text) == ["eth2", "eth1"]


# -- kernel helpers --------------------------------------------------------------------------
def test_open_netlink_never_creates_a_namespace() -> None:
    name = f"dvt-missing-{uuid.uuid4().hex[:6]}"
    with pytest.raises(BadInput, match=f"network namespace {name} does not exist"):
        open_netlink(name)
    assert not os.path.exists(f"/run/netns/{name}")
    with pytest.raises(BadInput):
        open_netlink("../../proc/1/ns/net")


def test_proc_net_is_read_in_the_namespace(bed: Bed) -> None:
    node, sw = read_proc_net(bed.node, "dev"), read_proc_net(bed.sw, "dev")
    assert node is not None and sw is not None
    assert "eth3:" in node and "n3:" not in node
    assert "n3:" in sw and "eth3:" not in sw
    assert read_proc_net(bed.node, "bonding/bond0") is None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=True).stdout
    assert bed.node in listed
