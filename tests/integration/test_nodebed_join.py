"""`debvisor join` on a node of the test bed over real ssh: the hypervisor's part
([hv.join]: the libvirt QEMU hook that holds maintenance against plain virsh) planned,
applied, found already joined, and rolled back, journalled and audited on the node; the
DNS part ([dns.join]) registers the node in the lab's BIND9 pair (reached from the node
through the bed's relays) with its PTR, proven on both servers, and rolled back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from debvisor_core.lab import nodebed
from debvisor_core.lab.manager import to_toml
from debvisor_core.lab.nodebed import Bed
from debvisor_core.testing import Lab

pytestmark = [pytest.mark.lab, pytest.mark.root]

if (_why := nodebed.unavailable()) is not None:
    pytest.skip(_why, allow_module_level=True)

DEBVISOR = nodebed.debvisor_in_nodes()
HOOK = "/etc/libvirt/hooks/qemu"


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    nodebed.ensure_base()
    with Bed(tmp_path_factory.mktemp("nodebed-join") / "bed", nodes=1) as b:
        b.run("node1", "printf '\\n[hv.join]\\n' >> /etc/debvisor/debvisor.toml")
        yield b


def test_join_installs_the_hypervisor_hook_and_rollback_removes_it(bed: Bed) -> None:
    run = [DEBVISOR, "--json", "join", "--mode", "all"]
    # a node without libvirt: refused in the preflight, one sentence, nothing changed
    refused = bed.run("node1", [DEBVISOR, "join", "--mode", "hv", "--yes"], check=False)
    assert refused.returncode == 3, refused
    assert "/etc/libvirt does not exist: is libvirt installed here?" in refused.stderr
    assert bed.run("node1", ["test", "-e", "/etc/libvirt"], check=False).returncode == 1
    # the directory libvirt's package makes is all the hook needs
    bed.run("node1", ["mkdir", "-m", "0755", "/etc/libvirt"])
    dry = bed.run("node1", [*run, "--dry-run"])
    assert json.loads(dry.stdout)["status"] == "dry-run"
    assert bed.run("node1", ["test", "-e", HOOK], check=False).returncode == 1
    res = json.loads(bed.run("node1", [*run, "--yes"]).stdout)
    assert (res["status"], res["title"]) == ("succeeded", "join this node: hv"), res
    mode = bed.run("node1", ["stat", "-c", "%a %U", HOOK]).stdout.split()
    assert mode == ["755", "root"]
    assert "hv hook-event" in bed.run("node1", ["cat", HOOK]).stdout
    again = bed.run("node1", [DEBVISOR, "join", "--mode", "all", "--yes"])
    assert "nothing to join" in again.stdout + again.stderr
    back = bed.run("node1", [DEBVISOR, "--json", "join", "--rollback", "--yes"])
    assert json.loads(back.stdout)["status"] == "rolled-back", back
    assert bed.run("node1", ["test", "-e", HOOK], check=False).returncode == 1
    events = [json.loads(line) for line in
              bed.run("node1", ["cat", "/var/log/debvisor/audit.jsonl"]).stdout.splitlines()]
    assert [e["result"] for e in events if e["details"].get("kind") == "node.join"] == [
        "started", "succeeded", "started", "rolled-back"]


def test_join_registers_the_node_in_dns_and_rollback_removes_it(bed: Bed, dv_lab: Lab) -> None:
    answers = pytest.importorskip("debvisor_dns.lab").answers
    dv_lab.require("dns")
    cfg = dv_lab.config()["dns"]
    primary, secondary = cfg["lab"]["primary"], cfg["lab"]["secondary"]
    # the lab's servers listen on the host's loopback: relayed to the node as labhost:PORT
    seen = {s: bed.expose(int(s.rsplit(":", 1)[1])) for s in (primary, secondary)}
    bed.run("node1", "install -m 0600 /dev/stdin /etc/debvisor/dns.key",
            input=Path(cfg["tsig_key_file"]).read_text())
    conf = "/etc/debvisor/debvisor.toml"
    saved = bed.run("node1", ["cat", conf]).stdout
    zones = {z: {"primaries": [seen[primary]], "servers": [seen[primary], seen[secondary]]}
             for z in cfg["zones"]}
    node_cfg = {"dns": {"tsig_key_file": "/etc/debvisor/dns.key", "zones": zones,
                        "join": {"address": "10.77.0.21", "zone": "lab.debvisor.test"}}}
    bed.run("node1", f"cat > {conf}", input=saved + "\n" + to_toml(node_cfg))
    fqdn, ptr = "node1.lab.debvisor.test.", "21.0.77.10.in-addr.arpa."
    try:
        assert answers(primary, fqdn, "A") == []
        res = json.loads(bed.run("node1", [DEBVISOR, "--json", "join", "--mode", "dns",
                                           "--yes"]).stdout)
        assert (res["status"], res["title"]) == ("succeeded", "join this node: dns"), res
        for server in (primary, secondary):  # the operation proved it on both already
            assert answers(server, fqdn, "A") == ["10.77.0.21"]
            assert answers(server, ptr, "PTR") == [fqdn]
        again = bed.run("node1", [DEBVISOR, "join", "--mode", "dns", "--yes"])
        assert "nothing to join" in again.stdout + again.stderr
        back = json.loads(bed.run("node1", [DEBVISOR, "--json", "join", "--rollback",
                                            "--yes"]).stdout)
        assert back["status"] == "rolled-back", back
        for server in (primary, secondary):
            assert answers(server, fqdn, "A") == [] and answers(server, ptr, "PTR") == []
    finally:
        bed.run("node1", f"cat > {conf}", input=saved)
