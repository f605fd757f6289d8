"""`debvisor net apply` / `net rollback` end to end on bonds, VLANs and a bridge, inside
User-Mode Linux (the host kernel has no bonding or 8021q; see test_net_uml.py).

The guest script builds the lab in the guest's initial network namespace (the node) and a
namespace ``peer``: two veth pairs whose peer ends are ports of a bridge ``pbr`` in ``peer``
holding 10.77.0.2/24, with a VLAN ``pbr.100`` (10.77.100.2/24) on it. Before any apply the
node has 10.77.0.1/24 on veth0 (veth1 is down), so a probe of 10.77.0.2 passes in the prior
state too. It then runs the real CLI (``python -m debvisor_core``, DEBVISOR_STATE_DIR and
DEBVISOR_CONFIG in the work directory, ``[net] interfaces_file`` there) through:

1. an apply of BOND (bond0 active-backup over veth0 then veth1, primary veth0; br0 over bond0
   holding 10.77.0.1/24; bond0.100 holding 10.77.100.1/24) whose probe nobody answers: it
   must fail and leave the kernel exactly as it was, and no interfaces file;
2. the same apply probing 10.77.0.2 (untagged, through br0) and 10.77.100.2 (tagged, through
   bond0.100): kept and persisted;
3. an apply of FLAT (the address back on veth0, the virtual links dropped) whose probe
   nobody answers: the restore must recreate bond0 (slave order, primary, MAC), bond0.100 and
   br0 exactly, and leave the interfaces file as step 2 wrote it;
4. ``net rollback``: back to the state before step 2 (equal `net show --json`, minus
   ``pending``) and no interfaces file.

The script only records (the states, the exit codes, the files) and prints one
``RESULT {json}`` line; the test asserts on the host.
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

#: the guest kills the script at TIMEOUT minus a margin; the whole run is expected under 40 s
TIMEOUT = 120

_SCRIPT = r'''
import json, os, subprocess, sys, time
from pathlib import Path

T0 = time.monotonic()
W = Path.cwd()
STATE = W / "dvstate"
STATE.mkdir(exist_ok=True)
CONFIG = W / "debvisor.toml"
IFACES = W / "interfaces"
CONFIG.write_text(f'[net]\ninterfaces_file = "{IFACES}"\n')
ENV = {**os.environ, "DEBVISOR_STATE_DIR": str(STATE), "DEBVISOR_CONFIG": str(CONFIG)}
ENV.pop("SSH_CONNECTION", None)
result = {"runs": {}}


def ip(*lines, netns=None):
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    p = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True)
    assert p.returncode == 0, (argv, p.stderr)


def dv(label, *args):
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "debvisor_core", *args], capture_output=True,
                       text=True, env=ENV, stdin=subprocess.DEVNULL, timeout=60)
    result["runs"][label] = {"rc": p.returncode, "stdout": p.stdout[-4000:],
                             "stderr": p.stderr[-4000:], "s": round(time.monotonic() - t0, 2)}
    return p


def state(label):
    p = dv("show " + label, "--json", "net", "show")
    data = json.loads(p.stdout)
    data.pop("pending", None)
    return data


def interfaces():
    return IFACES.read_text() if IFACES.exists() else None


# the lab: the node is this namespace; the peer bridges both veths and tags VLAN 100 too
ip("netns add peer",
   "link add veth0 type veth peer name veth0p netns peer",
   "link add veth1 type veth peer name veth1p netns peer",
   "link set lo up", "link set veth0 up", "addr add 10.77.0.1/24 dev veth0")
ip("link set lo up",
   "link add pbr type bridge stp_state 0 forward_delay 0",
   "link set veth0p master pbr", "link set veth1p master pbr",
   "link set veth0p up", "link set veth1p up", "link set pbr up",
   "addr add 10.77.0.2/24 dev pbr",
   "link add link pbr name pbr.100 type vlan id 100", "link set pbr.100 up",
   "addr add 10.77.100.2/24 dev pbr.100", netns="peer")
result["setup_s"] = round(time.monotonic() - T0, 2)

BOND = W / "bond.yaml"
BOND.write_text("""\
network:
  version: 2
  ethernets:
    veth0: {}
    veth1: {}
  bonds:
    bond0:
      interfaces: [veth0, veth1]
      parameters: {mode: active-backup, mii-monitor-interval: 100, primary: veth0}
  bridges:
    br0:
      interfaces: [bond0]
      addresses: [10.77.0.1/24]
      parameters: {stp: false, forward-delay: 0}
  vlans:
    bond0.100: {id: 100, link: bond0, addresses: [10.77.100.1/24]}
""")
FLAT = W / "flat.yaml"
FLAT.write_text("""\
network:
  version: 2
  ethernets:
    veth0: {addresses: [10.77.0.1/24]}
    veth1: {}
""")
KEEP = ["--confirm-timeout", "0", "--yes"]
GOOD = ["--probe", "icmp:10.77.0.2"]
DEAD = ["--probe", "icmp:10.77.0.99", "--probe-timeout", "1"]

result["s0"] = state("s0")
dv("apply dead", "net", "apply", str(BOND), *KEEP, *DEAD)
result["after_apply_dead"] = state("after apply dead")
result["ifaces_after_apply_dead"] = interfaces()

dv("apply", "--json", "net", "apply", str(BOND), *KEEP, *GOOD, "--probe", "icmp:10.77.100.2")
result["s1"] = state("s1")
result["ifaces_s1"] = interfaces()
proc_bond0 = Path("/proc/net/bonding/bond0")
result["proc_bond0"] = proc_bond0.read_text() if proc_bond0.exists() else None

dv("flat dead", "net", "apply", str(FLAT), *KEEP, *DEAD)
result["after_flat_dead"] = state("after flat dead")
result["ifaces_after_flat_dead"] = interfaces()

dv("rollback", "--json", "net", "rollback", *KEEP, *GOOD)
result["after_rollback"] = state("after rollback")
result["ifaces_after_rollback"] = interfaces()
result["script_s"] = round(time.monotonic() - T0, 2)
print("RESULT " + json.dumps(result))
'''


def _result(res: UmlResult) -> dict[str, Any]:
    assert res.returncode == 0, str(res)
    lines = [ln for ln in res.output.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, str(res)
    return dict(json.loads(lines[0][len("RESULT "):]))


def _run(got: dict[str, Any], label: str) -> dict[str, Any]:
    run: dict[str, Any] = got["runs"][label]
    return run


def _addresses(state: dict[str, Any], dev: str) -> list[str]:
    return sorted(a["address"] for a in state["addresses"] if a["dev"] == dev)


@needs_uml
def test_apply_and_rollback_bond_vlan_bridge_in_uml(tmp_path: Path) -> None:
    res = run_in_uml(_SCRIPT, workdir=tmp_path, timeout=TIMEOUT)
    got = _result(res)
    runs = got["runs"]
    assert all(r["rc"] == 0 for k, r in runs.items() if k.startswith("show ")), runs
    s0 = got["s0"]
    assert _addresses(s0, "veth0") == ["10.77.0.1/24"]
    assert s0["links"]["veth0"]["up"] and not s0["links"]["veth1"]["up"]
    assert not {"bond0", "bond0.100", "br0"} & set(s0["links"])

    # 1. a dead probe: nothing kept, nothing persisted
    dead = _run(got, "apply dead")
    assert dead["rc"] == 4, dead
    assert "probe failed: icmp 10.77.0.99" in dead["stderr"], dead
    assert got["after_apply_dead"] == s0
    assert got["ifaces_after_apply_dead"] is None

    # 2. kept: bond0 (mode, slaves in order, primary), bond0.100, br0 with the address
    applied = _run(got, "apply")
    assert applied["rc"] == 0, applied
    probes = json.loads(applied["stdout"])["result"]["probes"]
    assert {p["probe"]: p["ok"] for p in probes} == {"icmp 10.77.0.2": True,
                                                     "icmp 10.77.100.2": True}, probes
    s1 = got["s1"]
    links = s1["links"]
    bond = links["bond0"]
    assert bond["kind"] == "bond" and bond["master"] == "br0" and bond["up"]
    assert bond["bond"]["mode"] == "active-backup"
    assert bond["bond"]["miimon"] == 100
    assert bond["bond"]["primary"] == "veth0"
    assert bond["bond"]["slaves"] == ["veth0", "veth1"]
    assert links["veth0"]["master"] == links["veth1"]["master"] == "bond0"
    assert links["veth1"]["up"]
    assert bond["mac"] == s0["links"]["veth0"]["mac"]  # the first slave's
    assert links["bond0.100"]["kind"] == "vlan"
    assert links["bond0.100"]["vlan"] == {"id": 100, "link": "bond0"}
    assert links["br0"]["kind"] == "bridge" and links["br0"]["up"]
    assert links["br0"]["bridge"]["stp"] is False
    assert _addresses(s1, "br0") == ["10.77.0.1/24"]
    assert _addresses(s1, "bond0.100") == ["10.77.100.1/24"]
    assert _addresses(s1, "veth0") == []
    assert "Bonding Mode: fault-tolerance (active-backup)" in got["proc_bond0"]
    assert "Primary Slave: veth0" in got["proc_bond0"]
    text = got["ifaces_s1"]
    assert text is not None
    stanzas = {ln.strip() for ln in text.splitlines()}
    assert {"iface bond0 inet manual", "bond-slaves veth0 veth1", "bond-mode active-backup",
            "bond-miimon 100", "bond-primary veth0",
            "iface br0 inet static", "address 10.77.0.1/24", "bridge_ports bond0",
            "iface bond0.100 inet static", "address 10.77.100.1/24",
            "vlan-raw-device bond0"} <= stanzas, text

    # 3. a failed apply from the bonded state recreates it exactly; the file stays
    flat = _run(got, "flat dead")
    assert flat["rc"] == 4, flat
    assert "probe failed: icmp 10.77.0.99" in flat["stderr"], flat
    assert got["after_flat_dead"] == s1
    assert got["ifaces_after_flat_dead"] == text

    # 4. rollback: the state before step 2, probed there, and the file gone again
    back = _run(got, "rollback")
    assert back["rc"] == 0, back
    assert got["after_rollback"] == s0
    assert got["ifaces_after_rollback"] is None

    timings = {k: r["s"] for k, r in runs.items()}
    print(f"uml: {res.seconds:.1f} s in all, script {got['script_s']} s, setup "
          f"{got['setup_s']} s, runs {timings}")
    assert res.seconds < 45, (res.seconds, timings)
