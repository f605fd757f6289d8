"""Bonds, VLANs and a VLAN-filtering bridge, built with pyroute2 inside User-Mode Linux.

The host kernel here has no bonding, 8021q or dummy (and no modules at all), so these tests boot
Debian's ``linux.uml`` through :mod:`debvisor_net.uml` and run a script in it. The scripts work
in the guest's initial network namespace: the whole kernel is thrown away afterwards, so a
namespace of their own would isolate nothing more, and ``IPRoute()`` then sees exactly what the
tool sees on a node (``lo`` plus what the script made). Each script checks its own results and
prints one ``RESULT {json}`` line that the test checks again on the host.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from debvisor_net.uml import UmlResult, available, run_in_uml

pytestmark = [pytest.mark.root]

_WHY_NOT = available()
needs_uml = pytest.mark.skipif(_WHY_NOT is not None, reason=str(_WHY_NOT))

#: per test: boot ~1.2 s + script; the guest kills the script well before this
TIMEOUT = 60

# Shared by the scripts: two veth pairs, bond0 (active-backup, miimon 100, primary veth0) over
# veth0 then veth1, bond0.100 on bond0, br0 (vlan_filtering) over bond0 holding the addresses.
_SETUP = r'''
import json, time
from pyroute2 import IPRoute

def idx(ipr, name):
    found = ipr.link_lookup(ifname=name)
    assert found, name
    return found[0]

def info_data(ipr, name):
    msg = ipr.get_links(idx(ipr, name))[0]
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND"), info.get_attr("IFLA_INFO_DATA"), msg

def build(ipr):
    for veth in ("veth0", "veth1"):
        ipr.link("add", ifname=veth, kind="veth", peer=veth + "p")
        ipr.link("set", index=idx(ipr, veth + "p"), state="up")
    ipr.link("add", ifname="bond0", kind="bond", bond_mode=1, bond_miimon=100)
    bond = idx(ipr, "bond0")
    for veth in ("veth0", "veth1"):  # enslaved in this order; a slave must be down to join
        ipr.link("set", index=idx(ipr, veth), state="down")
        ipr.link("set", index=idx(ipr, veth), master=bond)
    ipr.link("set", index=bond, kind="bond", bond_primary=idx(ipr, "veth0"))
    ipr.link("add", ifname="bond0.100", kind="vlan", link=bond, vlan_id=100)
    ipr.link("add", ifname="br0", kind="bridge", br_vlan_filtering=1)
    br = idx(ipr, "br0")
    ipr.link("set", index=bond, master=br)
    for name in ("veth0", "veth1", "bond0", "bond0.100", "br0"):
        ipr.link("set", index=idx(ipr, name), state="up")
    ipr.addr("add", index=br, address="10.50.0.10", prefixlen=24)
    ipr.addr("add", index=br, address="fd00:50::10", prefixlen=64)
    ipr.route("add", dst="0.0.0.0/0", gateway="10.50.0.1", proto=3)

def slave_order():
    with open("/proc/net/bonding/bond0") as f:
        text = f.read()
    return [ln.split(":", 1)[1].strip() for ln in text.splitlines()
            if ln.startswith("Slave Interface:")], text
'''

_BUILD_AND_READ = _SETUP + r'''
t0 = time.monotonic()
with IPRoute() as ipr:
    build(ipr)
    built_s = time.monotonic() - t0
    kind, bond, _ = info_data(ipr, "bond0")
    assert kind == "bond", kind
    vkind, vlan, vmsg = info_data(ipr, "bond0.100")
    bkind, br, _ = info_data(ipr, "br0")
    order, text = slave_order()
    deadline = time.monotonic() + 5  # miimon settles the active slave
    while "Currently Active Slave: veth0" not in text and time.monotonic() < deadline:
        time.sleep(0.1)
        order, text = slave_order()
    masters = {name: ipr.get_links(idx(ipr, name))[0].get_attr("IFLA_MASTER")
               for name in ("veth0", "veth1", "bond0")}
    addrs = sorted(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                   for a in ipr.get_addr(index=idx(ipr, "br0")) if a["scope"] == 0)
    result = {
        "bond_mode": bond.get_attr("IFLA_BOND_MODE"),
        "bond_miimon": bond.get_attr("IFLA_BOND_MIIMON"),
        "bond_primary": bond.get_attr("IFLA_BOND_PRIMARY") == idx(ipr, "veth0"),
        "slaves": order,
        "active": "Currently Active Slave: veth0" in text,
        "proc_mode": [ln for ln in text.splitlines() if ln.startswith("Bonding Mode:")],
        "vlan_kind": vkind,
        "vlan_id": vlan.get_attr("IFLA_VLAN_ID"),
        "vlan_on_bond": vmsg.get_attr("IFLA_LINK") == idx(ipr, "bond0"),
        "bridge_kind": bkind,
        "vlan_filtering": br.get_attr("IFLA_BR_VLAN_FILTERING"),
        "masters": {k: (v == idx(ipr, "bond0") and "bond0") or (v == idx(ipr, "br0") and "br0")
                    for k, v in masters.items()},
        "br0_addrs": addrs,
        "built_s": round(built_s, 3),
    }
print("RESULT " + json.dumps(result))
assert result["bond_mode"] == 1, result
assert result["bond_miimon"] == 100, result
assert result["bond_primary"], result
assert result["slaves"] == ["veth0", "veth1"], result
assert result["vlan_id"] == 100 and result["vlan_on_bond"], result
assert result["vlan_filtering"] == 1, result
assert result["masters"] == {"veth0": "bond0", "veth1": "bond0", "bond0": "br0"}, result
assert result["br0_addrs"] == ["10.50.0.10/24", "fd00:50::10/64"], result
'''


_CONVERGE = _SETUP + r'''
from debvisor_net.converge import converge
from debvisor_net.snapshot import diff, snapshot

with IPRoute() as ipr:
    build(ipr)
    s0 = snapshot(ipr)
    assert s0["links"]["bond0"]["bond"]["slaves"] == ["veth0", "veth1"], s0["links"]
    ipr.link("del", index=idx(ipr, "br0"))
    ipr.link("del", index=idx(ipr, "bond0"))  # takes bond0.100 along
    ipr.link("set", index=idx(ipr, "veth0"), state="up")
    ipr.addr("add", index=idx(ipr, "veth0"), address="10.50.0.10", prefixlen=24)
    broken = diff(s0, snapshot(ipr))
    t0 = time.monotonic()
    applied = converge(ipr, s0)
    converge_s = time.monotonic() - t0
    restored = snapshot(ipr)
    left = diff(s0, restored)
    again = converge(ipr, s0)
    # VLAN filtering and the default PVID changed behind its back: set back in place
    ipr.link("set", index=idx(ipr, "br0"), kind="bridge", br_vlan_default_pvid=5)
    pvid = converge(ipr, s0)
    ipr.link("set", index=idx(ipr, "br0"), kind="bridge", br_vlan_filtering=0)
    filtering = converge(ipr, s0)
    _, br, _ = info_data(ipr, "br0")
    result = {"broken": broken, "applied": applied, "left": left, "again": again,
              "converge_s": round(converge_s, 3),
              "links": sorted(s0["links"]), "slaves": s0["links"]["bond0"]["bond"]["slaves"],
              "recorded_br0": s0["links"]["br0"]["bridge"],
              "restored_br0": restored["links"]["br0"]["bridge"],
              "pvid": pvid, "filtering": filtering,
              "kernel_br0": [br.get_attr("IFLA_BR_VLAN_FILTERING"),
                             br.get_attr("IFLA_BR_VLAN_DEFAULT_PVID")]}
print("RESULT " + json.dumps(result))
assert broken and applied, result
assert left == [], result
assert again == [], result
assert result["restored_br0"]["vlan_filtering"] == 1, result
'''


def _result(res: UmlResult) -> dict[str, Any]:
    assert res.returncode == 0, str(res)
    lines = [ln for ln in res.output.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, str(res)
    return dict(json.loads(lines[0][len("RESULT "):]))


@needs_uml
def test_bond_vlan_bridge_in_uml(tmp_path: Path) -> None:
    res = run_in_uml(_BUILD_AND_READ, workdir=tmp_path, timeout=TIMEOUT)
    got = _result(res)
    assert got["bond_mode"] == 1  # active-backup
    assert got["bond_miimon"] == 100
    assert got["bond_primary"] is True
    assert got["slaves"] == ["veth0", "veth1"]
    assert got["active"] is True
    assert got["proc_mode"] == ["Bonding Mode: fault-tolerance (active-backup)"]
    assert (got["vlan_kind"], got["vlan_id"], got["vlan_on_bond"]) == ("vlan", 100, True)
    assert (got["bridge_kind"], got["vlan_filtering"]) == ("bridge", 1)
    assert got["masters"] == {"veth0": "bond0", "veth1": "bond0", "bond0": "br0"}
    assert got["br0_addrs"] == ["10.50.0.10/24", "fd00:50::10/64"]
    loaded = [m.split()[0] for m in res.status["loaded"]]
    assert {"bonding", "8021q", "bridge", "veth"} <= set(loaded)
    assert res.seconds < 30, str(res)


@needs_uml
def test_converge_restores_bond_vlan_bridge(tmp_path: Path) -> None:
    """Snapshot S0, delete br0 and bond0 (bond0.100 goes with it), put the address on veth0;
    converge(ipr, S0) must leave no diff (br0 back with VLAN filtering), and a second converge
    must change nothing; a default PVID or VLAN filtering changed afterwards is set back in
    place."""
    pytest.importorskip("debvisor_net.converge")
    res = run_in_uml(_CONVERGE, workdir=tmp_path, timeout=TIMEOUT)
    got = _result(res)
    assert any("bond0" in line for line in got["broken"]), got
    assert got["applied"], got
    assert got["left"] == [], got
    assert got["again"] == [], got
    assert got["slaves"] == ["veth0", "veth1"]
    assert {"bond0", "bond0.100", "br0", "veth0", "veth1"} <= set(got["links"])
    # br0 was built with VLAN filtering (default PVID 1): recorded and restored with it
    assert got["recorded_br0"]["vlan_filtering"] == 1
    assert got["recorded_br0"]["vlan_default_pvid"] == 1
    assert got["restored_br0"]["vlan_filtering"] == 1
    assert got["restored_br0"] == got["recorded_br0"]
    assert any("vlan filtering on" in line for line in got["applied"]), got["applied"]
    assert got["pvid"] == ["set br0 default pvid 1"]
    assert got["filtering"] == ["set br0 vlan filtering on, default pvid 1"]
    assert got["kernel_br0"] == [1, 1]
    assert res.seconds < 30, str(res)


@needs_uml
def test_hanging_script_is_killed_in_the_guest(tmp_path: Path) -> None:
    """The init kills a script that outlives its share of the timeout and still reports what
    it printed; the guest powers off normally."""
    res = run_in_uml("import time\nprint('started', flush=True)\ntime.sleep(600)\n",
                     workdir=tmp_path, timeout=8)
    assert res.timed_out and res.returncode == -1, str(res)
    assert res.output.startswith("started\n"), str(res)
    assert "script killed after 3 s" in res.output, str(res)
    assert "reboot: System halted" in res.console, str(res)
    assert res.seconds < 8, str(res)


@needs_uml
def test_hanging_guest_is_killed_on_the_host(tmp_path: Path) -> None:
    """A guest still running at the timeout is killed with all its host processes; the result
    carries the console instead of the missing output."""
    res = run_in_uml("import time\ntime.sleep(600)\n", workdir=tmp_path, timeout=1.0)
    assert res.timed_out and res.returncode == -1, str(res)
    assert "killed the guest after 1 s" in res.output, str(res)
    assert res.seconds < 3, str(res)
    assert not (tmp_path / "guest").exists()
