"""`debvisor upgrade rolling` across three namespace nodes (debvisor_core.lab.nodebed) over
real ssh, with real apt and dpkg against the bed's repository: each node upgraded, rebooted
into its new kernel and verified; a node whose boot loader keeps the old kernel pauses the
upgrade (packages kept) until `ops resume`; an unreachable node pauses it with nothing
changed there, and a node on a debvisor older than `--for-operation` is rebooted all the
same; the orchestrator SIGKILLed mid-run is finished by `ops resume`; a second
rolling upgrade while one runs is refused by the lock."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debvisor_core.lab import nodebed
from debvisor_core.lab.nodebed import Bed
from debvisor_core.testing import Runner, StateDir

pytestmark = [pytest.mark.lab, pytest.mark.root]

if (_why := nodebed.unavailable()) is not None:
    pytest.skip(_why, allow_module_level=True)

DEBVISOR = nodebed.debvisor_in_nodes()
OLD, NEW = "6.1.0-90-debvisor", "6.1.0-91-debvisor"
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q"


@pytest.fixture
def bed(tmp_path: Path, dv_state: StateDir) -> Iterator[Bed]:
    """Three nodes at release 1.0, booted into its kernel; the 1.1 release in the repository;
    this test's config names them as ssh nodes."""
    nodebed.ensure_base()
    b = Bed(tmp_path / "bed", nodes=3)
    b.repo.add_release("1.0")
    with b:
        b.run_all(f"apt-get -q update && {APT} install {nodebed.KERNEL_META} "
                  f"debvisor-test-agent")
        for n in b.nodes:
            b.reboot(n)
        assert {b.booted_kernel(n) for n in b.nodes} == {OLD}
        b.repo.add_release("1.1")
        b.repo.index()
        dv_state.config({"cluster": {"nodes": {
            n: {"transport": "ssh", "host": n, "user": "root", "ssh_config": str(b.ssh_config),
                "command": DEBVISOR, "connect_timeout": 2} for n in b.nodes}}})
        yield b


def maintenance(bed: Bed, node: str) -> bool:
    out = bed.run(node, [DEBVISOR, "--json", "maintenance", "status"]).stdout
    return bool(json.loads(out)["enabled"])


def services(bed: Bed, node: str) -> list[str]:
    out = bed.run(node, [DEBVISOR, "--json", "upgrade", "status"]).stdout
    return list(json.loads(out)["services"])


def agent(bed: Bed, node: str) -> str:
    return bed.run(node, ["dpkg-query", "-W", "-f", "${Version}", "debvisor-test-agent"]).stdout


def test_rolling_upgrade_reboots_verifies_and_pauses_on_the_old_kernel(dv: Runner,
                                                                       bed: Bed) -> None:
    bed.boot_override("node2", OLD)  # node2's boot loader keeps the old kernel
    # node3's agent config has an option the new agent refuses: its service won't start
    bed.run("node3", "echo legacy=yes >/etc/default/dv-agentd")
    assert all(nodebed.AGENT_SERVICE in services(bed, n) for n in bed.nodes)
    t0 = time.monotonic()
    res = dv("upgrade", "rolling", "--services-wait", "3s", "--yes")
    assert res.code == 4 and "paused" in res.stderr, res
    assert f"node node2 booted kernel {OLD}, not {NEW}" in res.stderr
    assert [agent(bed, n) for n in bed.nodes] == ["1.1", "1.1", "1.0"]
    assert [bed.booted_kernel(n) for n in bed.nodes] == [NEW, OLD, OLD]
    # node2 stays in maintenance while its boot is wrong; node1 is back in service
    assert [maintenance(bed, n) for n in bed.nodes] == [False, True, False]

    bed.boot_override("node2", None)
    (op,) = dv("--json", "ops", "list").json
    resumed = dv("ops", "resume", op["id"], "--yes")
    # node3 came back on its new kernel without the agent's service: paused again there
    assert resumed.code == 4 and "paused" in resumed.stderr, resumed
    assert (f"node node3 does not run {nodebed.AGENT_SERVICE} since its reboot (it did "
            "before)") in resumed.stderr, resumed.stderr
    assert [bed.booted_kernel(n) for n in bed.nodes] == [NEW] * 3
    assert [maintenance(bed, n) for n in bed.nodes] == [False, False, True]
    assert nodebed.AGENT_SERVICE not in services(bed, "node3")

    # a reboot of node3 by hand (`upgrade reboot`, not for this operation) fixes nothing:
    # the resume still compares with what node3 ran before the upgrade's reboot
    previous = bed.boot_id("node3")
    bed.run("node3", [DEBVISOR, "--yes", "upgrade", "reboot"], check=False)
    bed.wait_boot("node3", previous)
    resumed = dv("ops", "resume", op["id"], "--yes")
    assert resumed.code == 4, resumed
    assert f"node node3 does not run {nodebed.AGENT_SERVICE} since its reboot" in resumed.stderr

    bed.run("node3", "rm /etc/default/dv-agentd")  # the operator fixes the config...
    bed.reboot("node3")  # ...and restarts the service (here: the node)
    resumed = dv("--json", "ops", "resume", op["id"], "--yes")
    assert resumed.code == 0, resumed
    # the result reports every node: node1's steps ran in the first run, node2's in the
    # first resume, node3's in this one
    nodes = resumed.json["result"]["nodes"]
    assert sorted(nodes) == ["node1", "node2", "node3"], nodes
    for n in bed.nodes:
        assert nodes[n]["reboot"]["kernel_after"] == NEW, nodes[n]
        assert "packages" in nodes[n]["upgrade.run"], nodes[n]
    assert nodes["node1"]["reboot"]["kernel_before"] == OLD, nodes["node1"]
    assert [agent(bed, n) for n in bed.nodes] == ["1.1"] * 3
    assert [bed.booted_kernel(n) for n in bed.nodes] == [NEW] * 3
    assert not any(maintenance(bed, n) for n in bed.nodes)
    print(f"\n3 nodes upgraded over ssh (one paused and resumed) in {time.monotonic() - t0:.1f}s")
    # each node audited its own upgrade and its reboot
    events = [json.loads(ln) for ln in
              bed.run("node3", "cat /var/log/debvisor/audit.jsonl").stdout.splitlines()]
    assert any(e["result"] == "succeeded" and e["details"].get("kind") == "node.upgrade"
               and e["details"].get("origin", "").startswith(op["id"]) or
               e["result"] == "succeeded" and e["details"].get("kind") == "node.upgrade"
               for e in events), events
    assert any(e["plugin"] == "upgrade" and e["action"] == "reboot" and e["result"] == "started"
               for e in events)


#: a debvisor from before `--for-operation` (what its click parser says to it), else this one
OLD_DEBVISOR = f"""#!/bin/sh
for a in "$@"; do
  if [ "$a" = --for-operation ]; then
    echo "[ERROR] No such option '--for-operation'. (see \\`debvisor --help\\`)" >&2
    exit 2
  fi
done
exec {DEBVISOR} "$@"
"""


def test_an_unreachable_node_pauses_with_nothing_changed_there(dv: Runner, bed: Bed,
                                                               dv_state: StateDir) -> None:
    # node3 runs a debvisor older than `--for-operation` (a cluster halfway through
    # upgrading debvisor itself): it is rebooted and verified all the same, untagged
    bed.run("node3", "cat >/usr/local/bin/old-debvisor && chmod 755 /usr/local/bin/old-debvisor",
            input=OLD_DEBVISOR)
    assert bed.run("node3", ["old-debvisor", "upgrade", "status", "--for-operation", "x"],
                   check=False).returncode == 2
    dv_state.config({"cluster": {"nodes": {"node3": {"command": "/usr/local/bin/old-debvisor"}}}},
                    base=dv_state.config_path)
    bed.isolate("node2")
    res = dv("upgrade", "rolling", "--yes", "--nodes", "node2,node3")
    assert res.code == 4 and "paused" in res.stderr, res
    # the first thing done there is its maintenance: refused by the unreachable node, in
    # ssh's words
    assert "node node2: maintenance.enable failed with exit 255: ssh: connect to host" in res.stderr
    assert "timed out" in res.stderr
    bed.heal("node2")
    assert [agent(bed, n) for n in ("node2", "node3")] == ["1.0", "1.0"]
    (op,) = dv("--json", "ops", "list").json
    resumed = dv("ops", "resume", op["id"], "--yes")
    assert resumed.code == 0, resumed
    assert [agent(bed, n) for n in ("node2", "node3")] == ["1.1", "1.1"]
    assert [bed.booted_kernel(n) for n in ("node2", "node3")] == [NEW, NEW]
    assert "node3: its debvisor is older than `upgrade reboot --for-operation`" in resumed.stderr


def test_a_killed_orchestrator_is_resumed_and_a_second_upgrade_is_refused(
        dv: Runner, dv_fault: Any, bed: Bed, tmp_path: Path) -> None:
    ready = tmp_path / "hung.pid"
    # per node: maintenance on, upgrade, reboot, maintenance off; after node2's upgrade
    # (step 6) applied, the orchestrator hangs
    dv_fault("6:hang")
    proc = dv.popen("upgrade", "rolling", "--yes", env={"DEBVISOR_FAULT_READY": str(ready)})
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the first upgrade never reached step 6"
            time.sleep(0.1)
        dv_fault()
        second = dv("upgrade", "rolling", "--yes")
        assert second.code == 3 and "lock" in second.stderr, second
        os.kill(proc.pid, signal.SIGKILL)  # the orchestrator dies mid-upgrade
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert [agent(bed, n) for n in bed.nodes] == ["1.1", "1.1", "1.0"]
    assert maintenance(bed, "node2") and not maintenance(bed, "node1")  # node2 mid-upgrade
    (op,) = dv("--json", "ops", "list").json
    assert op["status"] in ("interrupted", "running"), op
    resumed = dv("ops", "resume", op["id"], "--yes")
    assert resumed.code == 0, resumed
    assert [agent(bed, n) for n in bed.nodes] == ["1.1"] * 3
    assert [bed.booted_kernel(n) for n in bed.nodes] == [NEW] * 3
    assert not any(maintenance(bed, n) for n in bed.nodes)
