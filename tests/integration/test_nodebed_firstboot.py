"""`debvisor firstboot` and `debvisor maintenance` on namespace nodes (debvisor_core.lab.nodebed)
over real ssh: the first-boot report and marker, a failing module stopping the run without the
marker and the rerun continuing from it, a module declared in the config; maintenance mode
refusing a real `upgrade run` (apt against the bed's repository) until it is disabled, and
`--drain` on a node with nothing to drain."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from debvisor_core.lab import nodebed
from debvisor_core.lab.nodebed import Bed

pytestmark = [pytest.mark.lab, pytest.mark.root]

if (_why := nodebed.unavailable()) is not None:
    pytest.skip(_why, allow_module_level=True)

DEBVISOR = nodebed.debvisor_in_nodes()
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q"
REPORT = "/var/log/debvisor/firstboot-report.json"
MARKER = "/var/lib/debvisor/firstboot.done"
CORE = ["01-network", "01-ssh-host-keys", "02-disk"]
UNUSED = ["04-zfs", "05-docker"]  # the core's modules without their tables: skipped


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    """Three fresh nodes (one per test: they do not share state); release 1.0 published."""
    nodebed.ensure_base()
    b = Bed(tmp_path_factory.mktemp("nodebed-fb") / "bed", nodes=3)
    b.repo.add_release("1.0")
    with b:
        yield b


def dv(bed: Bed, node: str, *args: str, input: str | None = None
       ) -> subprocess.CompletedProcess[str]:
    """``debvisor --json ARGS`` on ``node`` over ssh (not checked)."""
    return bed.run(node, [DEBVISOR, "--json", *args], check=False, input=input)


def js(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def audit(bed: Bed, node: str) -> list[dict[str, Any]]:
    text = bed.run(node, "cat /var/log/debvisor/audit.jsonl").stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_node(bed: Bed, node: str, cmd: str, timeout: float = 10.0) -> None:
    """Poll ``cmd`` on ``node`` until it succeeds."""
    deadline = time.monotonic() + timeout
    while bed.run(node, cmd, check=False).returncode != 0:
        assert time.monotonic() < deadline, f"{cmd!r} on {node} did not succeed in {timeout}s"
        time.sleep(0.1)


def test_bed_nodes_have_network(bed: Bed) -> None:
    """The bed gives its nodes what 01-network checks: a default route via the host's end
    (off-net addresses go there) and a name server."""
    out = bed.run("node3", "ip -4 route get 192.0.2.1; cat /etc/resolv.conf").stdout
    assert f"192.0.2.1 via {bed.host_address} dev eth0" in out
    assert f"nameserver {bed.host_address}" in out


def test_firstboot_report_marker_failure_and_rerun(bed: Bed) -> None:
    node = "node1"
    status = js(dv(bed, node, "firstboot", "status"))
    assert (status["status"], status["done"], status["modules"]) == ("not run", False, [])

    # a node cloned from an image without host keys (but the one sshd serves us with), and
    # without a name server yet: 01-network fails and the run stops there, no marker
    wait_node(bed, node, "test -s /etc/ssh/ssh_host_rsa_key.pub")  # testbed-init's ssh-keygen -A
    bed.run(node, "rm /etc/ssh/ssh_host_rsa_key* /etc/ssh/ssh_host_ecdsa_key* && "
                  "cp /etc/resolv.conf /root/resolv.conf.good && : >/etc/resolv.conf")
    res = dv(bed, node, "firstboot", "run")
    assert res.returncode == 1, res
    rep = js(res)
    assert (rep["status"], rep["failed"]) == ("failed", "01-network")
    assert [(m["name"], m["status"]) for m in rep["modules"]] == [("01-network", "failed")]
    assert "no nameserver in /etc/resolv.conf" in rep["modules"][0]["result"]
    assert bed.run(node, f"test -e {MARKER}", check=False).returncode == 1
    assert bed.run(node, "ls /etc/ssh").stdout.split().count("ssh_host_rsa_key") == 0
    status = js(dv(bed, node, "firstboot", "status"))
    assert (status["status"], status["done"], status["failed"]) == ("failed", False, "01-network")

    # the name server back, and a module declared in the config with a typo in its action:
    # the core modules succeed (the host keys made), the declared one fails, still no marker
    bed.run(node, "cp /root/resolv.conf.good /etc/resolv.conf && "
                  "cp /etc/debvisor/debvisor.toml /root/debvisor.toml.orig && "
                  "cat >>/etc/debvisor/debvisor.toml", input=(
                      '\n[firstboot.modules."05-example"]\naction = "maintenance.enabel"\n'
                      'params = {reason = "set by first boot"}\n'
                      '\n[firstboot.modules."06-gpu"]\naction = "maintenance.status"\n'
                      'roles = ["gpu"]\n'))
    res = dv(bed, node, "firstboot", "run")
    assert res.returncode == 1, res
    rep = js(res)
    assert (rep["status"], rep["failed"]) == ("failed", "05-example")
    mods = {m["name"]: m for m in rep["modules"]}
    assert [(m["name"], m["status"]) for m in rep["modules"]] == [
        *((n, "ok") for n in CORE), *((n, "skipped") for n in UNUSED), ("05-example", "failed")]
    assert mods["01-network"]["result"].startswith("default route via eth0")
    assert f"name servers {bed.host_address}" in mods["01-network"]["result"]
    assert mods["01-ssh-host-keys"]["result"] == \
        "made host keys: ssh_host_ecdsa_key, ssh_host_rsa_key"
    assert "maintenance.enabel" in mods["05-example"]["result"]
    assert mods["05-example"]["plugin"] == "config"
    assert bed.run(node, f"test -e {MARKER}", check=False).returncode == 1
    first_keys = mods["01-ssh-host-keys"]

    # fixed: the rerun runs only what did not succeed (a host key removed meanwhile stays
    # missing: 01-ssh-host-keys is not run again), the declared action runs in the node with
    # its parameters, the gpu-only one is skipped; then the marker
    bed.run(node, "rm /etc/ssh/ssh_host_ecdsa_key* && "
                  "sed -i s/maintenance.enabel/maintenance.enable/ /etc/debvisor/debvisor.toml")
    res = dv(bed, node, "firstboot", "run")
    assert res.returncode == 0, res
    rep = js(res)
    assert rep["status"] == "ok" and "failed" not in rep
    assert [(m["name"], m["status"], m.get("earlier_run", False)) for m in rep["modules"]] == [
        *((n, "ok", True) for n in CORE), *((n, "skipped", False) for n in UNUSED),
        ("05-example", "ok", False),
        ("06-gpu", "skipped", False), ("99-completion", "ok", False)]
    mods = {m["name"]: m for m in rep["modules"]}
    assert {k: v for k, v in mods["01-ssh-host-keys"].items() if k != "earlier_run"} == first_keys
    assert "firstboot 01-network: done in an earlier run" in res.stderr
    assert "not for this node's roles" in mods["06-gpu"]["result"]
    assert "ssh_host_ecdsa_key" not in bed.run(node, "ls /etc/ssh").stdout.split()
    maint = js(dv(bed, node, "maintenance", "status"))
    assert (maint["enabled"], maint["reason"]) == (True, "set by first boot")
    done_at = bed.run(node, f"cat {MARKER}").stdout.strip()
    assert done_at == rep["finished"]

    # the report on the node's disk: every module with its status and duration
    saved = json.loads(bed.run(node, f"cat {REPORT}").stdout)
    assert saved["host"] == node and saved["status"] == "ok"
    assert [m["name"] for m in saved["modules"]] == [*CORE, *UNUSED, "05-example", "06-gpu",
                                                     "99-completion"]
    for m in saved["modules"]:
        assert m["status"] in ("ok", "skipped") and isinstance(m["duration_ms"], int), m
        assert m["duration_ms"] >= 0

    # the marker: a second run does nothing
    before = bed.run(node, f"stat -c %Y.%s {REPORT}").stdout
    res = dv(bed, node, "firstboot", "run")
    assert res.returncode == 0, res
    assert js(res)["already_done"] is True and js(res)["done_at"] == done_at
    assert "firstboot" not in res.stderr  # no module ran
    assert bed.run(node, f"stat -c %Y.%s {REPORT}").stdout == before
    text = bed.run(node, [DEBVISOR, "firstboot", "run"]).stdout
    assert "first boot already completed" in text and "nothing to do" in text
    status = js(dv(bed, node, "firstboot", "status"))
    assert (status["done"], status["done_at"], status["status"]) == (True, done_at, "ok")

    finished = [e["details"] for e in audit(bed, node) if e["result"] == "firstboot-finished"]
    assert finished == [{"status": "failed", "failed": "01-network"},
                        {"status": "failed", "failed": "05-example"},
                        {"status": "ok", "failed": None}]


def test_firstboot_network_fails_without_default_route(bed: Bed) -> None:
    """01-network on a node whose default route is gone must fail (then, with the route
    back, succeed)."""
    node = "node3"
    bed.run(node, "ip route del default")
    try:
        res = dv(bed, node, "firstboot", "run")
        rep = js(res)
        assert (res.returncode, rep["status"], rep.get("failed")) == (1, "failed", "01-network")
        assert "no default route" in rep["modules"][0]["result"]
    finally:
        bed.run(node, ["ip", "route", "replace", "default", "via", bed.host_address])


def test_maintenance_refuses_upgrade_until_disabled(bed: Bed) -> None:
    node = "node2"
    bed.run(node, f"apt-get -q update && {APT} install debvisor-test-agent", timeout=120)
    bed.repo.add("debvisor-test-agent", "1.1",
                 {"/usr/share/debvisor-test-agent/version": "1.1\n"})
    bed.repo.index()

    def agent() -> str:
        return bed.run(node, ["dpkg-query", "-W", "-f", "${Version}",
                              "debvisor-test-agent"]).stdout

    assert agent() == "1.0"
    assert js(dv(bed, node, "maintenance", "status")) == {"enabled": False}

    res = dv(bed, node, "maintenance", "enable", "--reason", "disk swap")
    assert res.returncode == 0, res
    assert (js(res)["enabled"], js(res)["reason"], js(res)["by"]) == (True, "disk swap", "root")
    st = js(dv(bed, node, "maintenance", "status"))
    assert (st["enabled"], st["reason"], st["since"]) == (True, "disk swap", js(res)["since"])
    text = bed.run(node, [DEBVISOR, "maintenance", "status"]).stdout
    assert text.startswith("maintenance mode ON since") and text.strip().endswith("disk swap")
    enabled = [e for e in audit(bed, node) if e["result"] == "enabled"]
    assert len(enabled) == 1 and enabled[0]["plugin"] == "maintenance"
    assert enabled[0]["details"] == {"reason": "disk swap"} and enabled[0]["host"] == node

    # a real upgrade is pending, and refused at preflight while maintenance is on
    res = dv(bed, node, "--yes", "upgrade", "run")
    assert res.returncode == 3, res
    assert "maintenance mode is on" in res.stdout + res.stderr
    assert "disk swap" in res.stdout + res.stderr
    assert agent() == "1.0"

    res = dv(bed, node, "--yes", "maintenance", "disable")
    assert res.returncode == 0, res
    assert js(res) == {"enabled": False, "was_enabled": True}
    assert js(dv(bed, node, "maintenance", "status")) == {"enabled": False}
    disabled = [e for e in audit(bed, node) if e["result"] == "disabled"]
    assert len(disabled) == 1 and disabled[0]["details"]["previous"]["reason"] == "disk swap"

    res = dv(bed, node, "--yes", "upgrade", "run")
    assert res.returncode == 0, res
    assert js(res)["status"] == "succeeded"
    assert agent() == "1.1"


def test_maintenance_drain_on_an_empty_node(bed: Bed) -> None:
    """No VMs, Kubernetes or Ceph configured on the node: the drain operation is maintenance
    mode alone, said so; `disable` rolls that operation back."""
    node = "node3"
    res = dv(bed, node, "--yes", "maintenance", "enable", "--drain", "--reason", "empty it")
    assert res.returncode == 0, res
    op = js(res)
    assert (op["kind"], op["status"]) == ("node.maintenance", "succeeded")
    assert [s["name"] for s in op["steps"]] == ["EnterMaintenance"]
    assert "no installed plugin drains anything on this node" in res.stderr
    st = js(dv(bed, node, "maintenance", "status"))
    assert (st["enabled"], st["reason"], st["operation"]) == (True, "empty it", op["id"])
    shown = js(dv(bed, node, "ops", "show", op["id"]))
    assert shown["status"] == "succeeded"

    res = dv(bed, node, "--yes", "maintenance", "disable")
    assert res.returncode == 0, res
    assert js(res) == {"enabled": False, "was_enabled": True, "rolled_back": op["id"]}
    assert js(dv(bed, node, "maintenance", "status")) == {"enabled": False}
    assert js(dv(bed, node, "ops", "show", op["id"]))["status"] == "rolled-back"
