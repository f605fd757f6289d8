"""list, resources, snapshots, register, console, VNC, tickets and health on the lab nodes.

One guest (qcow2 disk for internal snapshots, password-protected VNC for tickets) is
shared by the module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debvisor_libvirt import lab

VM = "hvops"
pytestmark = [pytest.mark.lab, pytest.mark.root]


@pytest.fixture(scope="module")
def guest(hv_lab: Any) -> Iterator[Path]:
    hv_lab.remove(VM)
    yield hv_lab.guest(VM, "node1", disk=True, vnc_password="initial")
    hv_lab.remove(VM)


def test_list_and_resources(dv: Any, hv_env: Any, guest: Path) -> None:
    res = dv("--json", "hv", "list")
    assert res.code == 0, res
    row = next(v for v in res.json["vms"] if v["name"] == VM)
    assert (row["node"], row["state"], row["vcpus"], row["memory_mib"]) == ("node1", "running", 1, 128)
    assert row["uptime_s"] is not None and row["uptime_s"] >= 0
    assert res.json["unreachable"] == {}
    only2 = dv("--json", "hv", "list", "--node", "node2")
    assert VM not in [v["name"] for v in only2.json["vms"]]
    r = dv("--json", "hv", "resources", VM, "--interval", "2")
    assert r.code == 0, r
    d = r.json
    assert d["node"] == "node1" and d["memory"]["max_mib"] == 128
    assert 0 < d["cpu_percent"] <= 200  # even an idle TCG guest uses some CPU in 2 s
    assert d["disks"][0]["device"] == "vda" and d["disks"][0]["available"]


def _next_beat(log: Path, timeout: float = 20) -> int:
    """The first heartbeat the guest prints from now on."""
    n = len(lab.console_heartbeats(log))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beats = lab.console_heartbeats(log)
        if len(beats) > n:
            return beats[n]
        time.sleep(0.1)
    raise AssertionError("the guest printed no heartbeat")


def test_snapshots(dv: Any, hv_env: Any, guest: Path) -> None:
    assert dv("hv", "snapshot", VM, "create", "base", "--yes").code == 0
    at_base = _next_beat(guest)
    names = [s["name"] for s in dv("--json", "hv", "snapshot", VM, "list").json["snapshots"]]
    assert names == ["base"]
    while _next_beat(guest) < at_base + 3:  # let the guest move on
        pass
    later = _next_beat(guest)
    rev = dv("--json", "hv", "snapshot", VM, "revert", "base", "--yes")
    assert rev.code == 0, rev
    assert _next_beat(guest) <= at_base + 1  # the guest's memory went back in time
    snaps = dv("--json", "hv", "snapshot", VM, "list").json["snapshots"]
    safety = [s["name"] for s in snaps if s["name"].startswith("safety-")]
    assert len(safety) == 1 and any(s["current"] and s["name"] == "base" for s in snaps)
    # rolling back the revert returns to the safety snapshot's state (and drops it)
    rb = dv("hv", "snapshot", "--rollback", "--yes")
    assert rb.code == 0, rb
    assert _next_beat(guest) > later
    names = [s["name"] for s in dv("--json", "hv", "snapshot", VM, "list").json["snapshots"]]
    assert names == ["base"]
    # a create then its rollback deletes it
    assert dv("hv", "snapshot", VM, "create", "temp", "--yes").code == 0
    assert dv("hv", "snapshot", "--rollback", "--yes").code == 0
    left = {s["name"] for s in dv("--json", "hv", "snapshot", VM, "list").json["snapshots"]}
    assert "temp" not in left
    for name in left:
        assert dv("hv", "snapshot", VM, "delete", name, "--yes").code == 0
    assert dv("--json", "hv", "snapshot", VM, "list").json["snapshots"] == []
    clash = dv("hv", "snapshot", VM, "delete", "nope", "--yes")
    assert clash.code == 2 and "has no snapshot named 'nope'" in clash.stderr


def test_register_and_unregister(dv: Any, hv_env: Any, guest: Path) -> None:
    res = dv("--json", "hv", "register", VM, "--owner", "ops", "--role", "web",
             "--tags", "prod,eu", "--address", "10.9.8.7", "--yes")
    assert res.code == 0, res
    assert [s["name"] for s in res.json["steps"]][:2] == ["WriteInventory", "SetAutostart"]
    dom = hv_env.conn("node1").lookupByName(VM)
    from debvisor_libvirt.domains import read_meta

    meta = read_meta(dom, inactive=True)
    assert meta is not None
    assert (meta["owner"], meta["role"], meta["tags"], meta["addresses"]) == (
        "ops", "web", ["prod", "eu"], ["10.9.8.7"])
    assert dom.autostart() == 1
    row = next(v for v in dv("--json", "hv", "list").json["vms"] if v["name"] == VM)
    assert row["registered"] is True
    un = dv("hv", "unregister", VM, "--yes")
    assert un.code == 0, un
    assert read_meta(dom, inactive=True)["registered"] is False
    again = dv("hv", "unregister", VM, "--yes")
    assert again.code == 2 and f"{VM} is not registered" in again.stderr
    # undo the unregistration, then the registration: autostart goes back off
    assert dv("hv", "unregister", "--rollback", "--yes").code == 0
    assert read_meta(dom, inactive=True)["registered"] is True
    assert dv("hv", "register", "--rollback", "--yes").code == 0
    assert read_meta(dom, inactive=True) is None and dom.autostart() == 0


def test_register_refuses_transient_vm(dv: Any, hv_env: Any) -> None:
    g = hv_env.config["hv"]["guest"]
    name = "hvtransient"
    conn = hv_env.conn("node2")
    conn.createXML(lab.guest_xml(name, kernel=g["kernel"], initrd=g["initrd"], vnc=False), 0)
    try:
        res = dv("hv", "register", name, "--yes")
        assert res.code == 3, res
        assert f"{name} is transient" in res.stderr
        bad = dv("hv", "register", name, "--owner", "a b")
        assert bad.code == 2 and "bad owner 'a b'" in bad.stderr
    finally:
        conn.lookupByName(name).destroy()


def test_console_attaches_and_escape_detaches(hv_env: Any, guest: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "debvisor_core", "hv", "console", VM],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ))
    assert proc.stdout is not None and proc.stdin is not None
    seen = b""
    deadline = time.monotonic() + 30
    os.set_blocking(proc.stdout.fileno(), False)
    while lab.HEARTBEAT.encode() not in seen and time.monotonic() < deadline:
        chunk = proc.stdout.read(4096)
        if chunk:
            seen += chunk
        else:
            time.sleep(0.1)
    assert lab.HEARTBEAT.encode() in seen, proc.stderr.read() if proc.stderr else ""
    proc.stdin.write(b"\x1d")
    proc.stdin.flush()
    assert proc.wait(timeout=15) == 0


def test_console_graphical(dv: Any, hv_env: Any, guest: Path) -> None:
    res = dv("--json", "hv", "console", VM, "--graphical")
    assert res.code == 0, res
    assert res.json["endpoint"].startswith("127.0.0.1:59")
    assert res.json["password_protected"] is True


def _token(key: bytes, payload: dict[str, Any]) -> str:
    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    body = b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"dvt1.{body}.{b64(hmac.new(key, f'dvt1.{body}'.encode(), hashlib.sha256).digest())}"


def test_tickets(dv: Any, dv_state: Any, hv_env: Any, guest: Path) -> None:
    created = dv("--json", "hv", "ticket", "create", VM, "--ttl", "300", "--mode", "admin")
    assert created.code == 0, created
    tok = created.json["token"]
    assert dv("hv", "ticket", "verify", tok).stdout.startswith("valid")
    assert dv("hv", "ticket", "verify", tok, "--mode", "admin").stdout.startswith("valid")
    other = dv("hv", "ticket", "verify", tok, "--vm", "another")
    assert other.stdout.startswith("wrong-scope")
    forged = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    assert dv("hv", "ticket", "verify", forged).stdout.startswith("forged")
    key_file = dv_state.path / "plugins" / "hv" / "ticket.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    now = int(time.time())
    expired = _token(key_file.read_bytes().strip(), {
        "vm": VM, "node": "node1", "mode": "view", "iat": now - 100, "exp": now - 10,
        "jti": "0123456789abcdef", "by": "test"})
    assert dv("hv", "ticket", "verify", expired).stdout.startswith("expired")
    view = _token(key_file.read_bytes().strip(), {  # view tickets (of older versions)
        "vm": VM, "node": "node1", "mode": "view", "iat": now, "exp": now + 300,
        "jti": "fedcba9876543210", "by": "test"})
    scope = dv("hv", "ticket", "verify", view, "--mode", "admin")
    assert scope.code == 1 and scope.stdout.startswith("wrong-scope")
    before = _vnc_password(hv_env)
    used = dv("--json", "hv", "ticket", "use", tok)
    assert used.code == 0, used
    assert _vnc_password(hv_env) == used.json["password"] != before
    assert dv("hv", "ticket", "verify", tok).stdout.startswith("used")
    again = dv("hv", "ticket", "use", tok)
    assert again.code == 2 and "ticket used" in again.stderr
    events = [json.loads(ln) for ln in (dv_state.path / "log" / "audit.jsonl").read_text().splitlines()]
    issued = [e for e in events if e["result"] == "issued"]
    use = [e for e in events if e["result"] == "used"]
    assert issued and issued[0]["details"]["vm"] == VM and issued[0]["details"]["ttl"] == 300
    assert issued[0]["details"]["mode"] == "admin" and issued[0]["details"]["requester"]
    assert use and use[0]["details"]["vm"] == VM and use[0]["details"]["mode"] == "admin"
    assert any(e["result"] == "refused" for e in events)


def _vnc_password(hv_env: Any) -> str | None:
    import xml.etree.ElementTree as ET

    from debvisor_libvirt.nodes import lv

    xml = hv_env.conn("node1").lookupByName(VM).XMLDesc(lv().VIR_DOMAIN_XML_SECURE)
    g = ET.fromstring(xml).find("devices/graphics")
    return None if g is None else g.get("passwd")


def test_vnc_ensure_and_target(dv: Any, dv_state: Any, hv_env: Any, guest: Path) -> None:
    ok = dv("--json", "hv", "vnc", "ensure", VM)
    assert ok.code == 0, ok
    row = ok.json["vms"][0]
    assert row["probe"]["banner"].startswith("RFB 003.")
    assert "vnc-password" in row["probe"]["security"]
    dv_state.config({"hv": {"vnc": {"port_range": [5950, 5960], "firewall": True}}},
                    base=hv_env.config_path)
    tgt = dv("--json", "hv", "vnc", "target", VM, "--listen", "127.0.0.1", "--port", "auto",
             "--yes")
    assert tgt.code == 0, tgt
    assert [s["name"] for s in tgt.json["steps"]] == ["SetVncTarget", "OpenVncPort"]
    nft = subprocess.run(["ip", "netns", "exec", hv_env.config["hv"]["nodes"]["node1"]["netns"],
                          "nft", "list", "chain", "inet", "debvisor", "vnc"],
                         capture_output=True, text=True)
    assert "tcp dport 5950 accept" in nft.stdout and f"hv-vnc-{VM}" in nft.stdout
    drift = dv("--json", "hv", "vnc", "ensure", VM)
    assert drift.code == 1
    assert any("live endpoint differs" in d for d in drift.json["vms"][0]["drift"])
    bad = dv("hv", "vnc", "target", VM, "--listen", "nowhere", "--port", "auto")
    assert bad.code == 2 and "bad listen address 'nowhere'" in bad.stderr
    bad = dv("hv", "vnc", "target", VM, "--listen", "0.0.0.0", "--port", "80")
    assert bad.code == 2 and "bad port '80'" in bad.stderr
    rb = dv("hv", "vnc", "target", "--rollback", "--yes")
    assert rb.code == 0, rb
    nft = subprocess.run(["ip", "netns", "exec", hv_env.config["hv"]["nodes"]["node1"]["netns"],
                          "nft", "list", "chain", "inet", "debvisor", "vnc"],
                         capture_output=True, text=True)
    assert f"hv-vnc-{VM}" not in nft.stdout
    assert dv("hv", "vnc", "ensure", VM).code == 0


def test_health(dv: Any, dv_state: Any, hv_env: Any, guest: Path) -> None:
    res = dv("--json", "health", env={"DEBVISOR_PLUGINS": "hv"})
    checks = {c["name"]: c for c in res.json["checks"]}
    for name in ("hv.libvirtd.node1", "hv.libvirtd.node2", "hv.vm-states", "hv.vnc"):
        assert checks[name]["status"] == "ok", checks[name]
    dv_state.config({"hv": {"nodes": {"ghost": {"uri": "qemu+unix:///system?socket=/tmp/nonexistent.sock"}}}},
                    base=hv_env.config_path)
    res = dv("--json", "health", env={"DEBVISOR_PLUGINS": "hv"})
    checks = {c["name"]: c for c in res.json["checks"]}
    assert checks["hv.libvirtd.ghost"]["status"] == "crit"
    assert "unreachable" in checks["hv.libvirtd.ghost"]["summary"]


def test_snapshot_of_a_diskless_vm_is_refused_at_preflight(dv: Any, hv_env: Any,
                                                           guest_factory: Any) -> None:
    guest_factory("hvnodisk")
    res = dv("hv", "snapshot", "hvnodisk", "create", "s1", "--yes")
    assert res.code == 3, res
    assert "VM hvnodisk has no writable disk: internal snapshots are stored in qcow2 disks" in res.stderr
    assert dv("--json", "hv", "snapshot", "hvnodisk", "list").json["snapshots"] == []
