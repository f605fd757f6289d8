"""`debvisor net` end to end in the namespace test bed, run as an operator of a lab node
runs it: `ip netns exec NODE debvisor net …`. Each test gets a fresh bed (node, switch,
gateway, a peer, and a host past the gateway)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debvisor_net.testbed import Bed, kernel_state, net_cli

pytestmark = [pytest.mark.root]

FAR = ["--probe", "icmp:10.60.0.53", "--probe", "tcp:10.60.0.53:7"]
FAST = ["--probe-timeout", "3"]

#: br0 over eth3 takes eth0's addresses and routes; eth0 stays up without them
MOVE_TO_BRIDGE = """\
network:
  version: 2
  ethernets:
    eth0: {}
    eth3: {}
  bridges:
    br0:
      interfaces: [eth3]
      addresses: [10.50.0.10/24, "fd00:50::10/64"]
      routes:
        - {to: default, via: %(gw)s}
        - {to: "::/0", via: "fd00:50::1"}
        - {to: 10.70.0.0/16, via: 10.50.0.1, metric: 100}
      parameters: {stp: false, forward-delay: 0}
"""


@pytest.fixture
def bed() -> Iterator[Bed]:
    with Bed(f"dvn{os.getpid() % 10000}") as b:
        yield b


@pytest.fixture
def net(dv: Any, dv_state: Any, bed: Bed, tmp_path: Path) -> Any:
    """``net(*args)`` runs `debvisor net ARGS` inside the node's namespace."""
    dv_state.config({"net": {"interfaces_file": str(tmp_path / "interfaces"),
                             "peers": [Bed.PEER4]}})

    run = net_cli(dv, bed)
    run.interfaces = tmp_path / "interfaces"  # type: ignore[attr-defined]
    return run


def _state(net: Any) -> dict[str, Any]:
    return kernel_state(net)


def _desired(tmp_path: Path, text: str, gw: str = Bed.GW4) -> Path:
    p = tmp_path / "net.yaml"
    p.write_text(text % {"gw": gw})
    return p


def test_show_reads_the_namespace_by_name(net: Any) -> None:
    s = _state(net)
    assert s["links"]["eth1"]["mtu"] == 9000 and s["links"]["eth2"]["up"] is False
    assert {"dev": "eth0", "address": "10.50.0.10/24"} in s["addresses"]
    static = [r for r in s["routes"] if r["dst"] == Bed.ROUTE]
    assert static and static[0]["proto"] == 4 and static[0]["metric"] == 100
    human = net("show")
    assert human.code == 0 and "10.70.0.0/16 via 10.50.0.1 dev eth0 proto static metric 100" \
        in human.stdout, human


def test_dry_run_prints_the_netlink_changes_and_changes_nothing(net: Any, tmp_path: Path) -> None:
    before = _state(net)
    res = net("apply", str(_desired(tmp_path, MOVE_TO_BRIDGE)), "--dry-run", *FAR)
    assert res.code == 0, res
    out = res.stdout
    assert "br0" in out and "10.50.0.10/24" in out
    assert out.index("add bridge br0") < out.index("add 10.50.0.10/24 on br0"), out
    assert _state(net) == before
    assert not net.interfaces.exists()


def test_a_good_change_is_kept_persisted_and_rolled_back(net: Any, bed: Bed,
                                                         tmp_path: Path) -> None:
    before = _state(net)
    net.interfaces.write_text("# the file before\n")
    file = _desired(tmp_path, MOVE_TO_BRIDGE)
    res = net("--json", "apply", str(file), "--confirm-timeout", "0", "--yes", *FAR, *FAST)
    assert res.code == 0, res
    probes = res.json["result"]["probes"]
    assert {p["probe"] for p in probes} == {"icmp 10.60.0.53", "tcp 10.60.0.53:7"}
    assert all(p["ok"] for p in probes)
    after = _state(net)
    assert after["links"]["br0"]["kind"] == "bridge"
    assert after["links"]["eth3"]["master"] == "br0"
    assert {"dev": "br0", "address": "10.50.0.10/24"} in after["addresses"]
    assert not [a for a in after["addresses"] if a["dev"] == "eth0"]
    assert bed.tcp("peer", Bed.NODE4) or bed.tcp("node", Bed.PEER4)
    text = net.interfaces.read_text()
    assert "iface br0 inet static" in text and "bridge_ports eth3" in text
    assert "address 10.50.0.10/24" in text and "gateway 10.50.0.1" in text
    diff = net("diff", str(file))
    assert diff.code == 0 and "already holds" in diff.stdout and "up to date" in diff.stdout, diff
    # health: the applied state against the kernel
    healthy = net("--json", "health", "--only", "net.state")
    assert healthy.json["checks"][0]["status"] == "ok", healthy
    bed.exec("node", "ip", "link", "set", "dev", "br0", "down", check=True)
    sick = net("--json", "health", "--only", "net.state")
    check = sick.json["checks"][0]
    assert check["status"] == "crit" and "br0 is down" in check["summary"], sick
    bed.exec("node", "ip", "link", "set", "dev", "br0", "up", check=True)
    # rollback: the running state and the file as they were
    back = net("rollback", "--confirm-timeout", "0", "--yes", *FAR, *FAST)
    assert back.code == 0, back
    assert _state(net) == before
    assert net.interfaces.read_text() == "# the file before\n"


@pytest.mark.parametrize(("case", "why"), [
    ("bad gateway", "probe failed: icmp 10.60.0.53"),
    ("dead peer", "probe failed: icmp 10.50.0.77"),
    ("wrong address", "Network is unreachable"),
])
def test_a_failed_change_restores_exactly(net: Any, tmp_path: Path, case: str, why: str) -> None:
    before = _state(net)
    if case == "bad gateway":  # gateway and peer still answer on the segment: only past it fails
        file, probes = _desired(tmp_path, MOVE_TO_BRIDGE, gw="10.50.0.99"), FAR
    elif case == "dead peer":
        file, probes = _desired(tmp_path, MOVE_TO_BRIDGE), ["--probe", "icmp:10.50.0.77"]
    else:  # an address outside the gateway's subnet: its routes cannot be added
        file = _desired(tmp_path, MOVE_TO_BRIDGE.replace("10.50.0.10/24", "10.99.0.10/24"))
        probes = ["--probe", "peers"]
    res = net("apply", str(file), "--confirm-timeout", "0", "--yes", *probes, *FAST)
    assert res.code == 4, res
    assert why in res.stderr, res.stderr
    assert _state(net) == before
    assert not net.interfaces.exists()


def test_not_confirmed_in_time_restores(net: Any, tmp_path: Path) -> None:
    before = _state(net)
    res = net("apply", str(_desired(tmp_path, MOVE_TO_BRIDGE)), "--confirm-timeout", "2",
              "--yes", *FAR, *FAST)
    assert res.code == 4, res
    assert "not confirmed within 2 s" in res.stderr
    assert "net confirm" in res.stderr  # the countdown said how to keep it
    assert _state(net) == before
    assert not net.interfaces.exists()


def _popen_apply(bed: Bed, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", bed.node, sys.executable, "-m", "debvisor_core", "net", "apply",
         *args], text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_net_confirm_from_another_shell_keeps_it(net: Any, bed: Bed, tmp_path: Path) -> None:
    proc = _popen_apply(bed, str(_desired(tmp_path, MOVE_TO_BRIDGE)), "--confirm-timeout", "60",
                        "--yes", *FAR, *FAST)
    try:
        _wait(lambda: "br0" in _state(net)["links"], 30, "the change never reached the kernel")
        pending = json.loads(net("--json", "show").stdout)["pending"]
        assert pending and pending["watchdog_alive"] and not pending["confirmed"]
        res = net("confirm")
        assert res.code == 0 and "kept" in res.stdout, res
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "br0" in _state(net)["links"]
    assert "iface br0" in net.interfaces.read_text()
    assert json.loads(net("--json", "show").stdout)["pending"] is None


def test_sigkilled_apply_is_restored_by_the_watchdog(net: Any, bed: Bed, tmp_path: Path,
                                                     dv_state: Any) -> None:
    before = _state(net)
    proc = _popen_apply(bed, str(_desired(tmp_path, MOVE_TO_BRIDGE)), "--confirm-timeout", "3",
                        "--yes", *FAR, "--probe-timeout", "2")
    try:
        _wait(lambda: "br0" in _state(net)["links"], 30, "the change never reached the kernel")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    # the watchdog, in its own session, restores at its deadline: 2 + 3 + the margin
    _wait(lambda: _state(net) == before, 40, "the watchdog did not restore the prior state")
    assert not net.interfaces.exists()
    audit = (dv_state.path / "audit.log").read_text() if (dv_state.path / "audit.log").exists() \
        else "".join(p.read_text() for p in dv_state.path.rglob("audit*.jsonl"))
    assert "net watchdog" in audit


def test_a_change_that_cuts_the_ssh_session_is_refused(net: Any, tmp_path: Path) -> None:
    before = _state(net)
    moved = _desired(tmp_path, MOVE_TO_BRIDGE.replace("10.50.0.10/24", "10.50.0.11/24"))
    ssh = {"SSH_CONNECTION": f"{Bed.PEER4} 50000 {Bed.NODE4} 22"}
    res = net("apply", str(moved), "--confirm-timeout", "0", "--yes", *FAR, env=ssh)
    assert res.code == 3, res
    assert "10.50.0.10, the address this SSH session arrives on" in res.stderr
    assert "--i-have-console" in res.stderr
    assert _state(net) == before
    ok = net("apply", str(moved), "--confirm-timeout", "0", "--yes", "--i-have-console",
             "--probe", "peers", *FAST, env=ssh)
    assert ok.code == 0, ok


@pytest.mark.parametrize(("text", "message"), [
    ("network: {version: 2, ethernets: {eth0: {dhcp: yes}}}", "unknown key 'dhcp'"),
    ("network: {version: 2, ethernets: {eth0: {addresses: [10.1.1.1/24]}, "
     "eth1: {addresses: [10.1.1.1/24]}}}", "10.1.1.1 is also on eth0"),
    ("network: {version: 2, ethernets: {eth0: {mtu: 1200, addresses: ['fd00::1/64']}}}",
     "MTU 1200 is below 1280"),
    ("network: {version: 2, ethernets: {eth9: {}}}", "there is no interface eth9"),
])
def test_bad_desired_state_is_one_sentence_and_exit_2(net: Any, tmp_path: Path, text: str,
                                                      message: str) -> None:
    before = _state(net)
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    res = net("apply", str(p), "--yes")
    assert res.code == 2, res
    assert message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert _state(net) == before


def test_alias_takes_the_old_spellings(bed: Bed, net: Any, tmp_path: Path) -> None:
    alias = Path(sys.executable).with_name("debvisor-netcfg")
    res = subprocess.run(
        ["ip", "netns", "exec", bed.node, str(alias), "--apply",
         str(_desired(tmp_path, MOVE_TO_BRIDGE)), "--dry-run", *FAR],
        capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert "add bridge br0" in res.stdout
