"""`hv.vm-states` reads libvirt's pause reasons: real pauses on the lab's libvirtd nodes."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debvisor_libvirt import lab

from debvisor_core.lab.process import read_pid

VM = "hvpause"
pytestmark = [pytest.mark.lab, pytest.mark.root]


@pytest.fixture(scope="module")
def guest(hv_lab: Any) -> Iterator[Path]:
    hv_lab.remove(VM)
    yield hv_lab.guest(VM, "node1")
    hv_lab.remove(VM)


def _vm_states(dv: Any) -> dict[str, Any]:
    res = dv("--json", "health", env={"DEBVISOR_PLUGINS": "hv"})
    return next(c for c in res.json["checks"] if c["name"] == "hv.vm-states")


def _wait_state(dom: Any, state: int, reason: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while dom.state() != [state, reason]:
        assert time.monotonic() < deadline, f"state {dom.state()}, wanted {[state, reason]}"
        time.sleep(0.2)


def test_a_user_pause_warns(dv: Any, hv_env: Any, guest: Path) -> None:
    assert _vm_states(dv)["status"] == "ok"
    dom = hv_env.conn("node1").lookupByName(VM)
    dom.suspend()
    try:
        check = _vm_states(dv)
        assert check["status"] == "warn", check
        assert f"{VM}@node1 paused (user)" in check["summary"], check
    finally:
        dom.resume()


def test_the_incoming_copy_of_a_migration_warns(dv: Any, hv_env: Any, guest: Path) -> None:
    """During a live migration the target's copy is paused (reason: migration): not an error."""
    import libvirt

    dom = hv_env.conn("node1").lookupByName(VM)
    params = {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{lab.NODES['node2']}",
              libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 1}
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            dom.migrate3(hv_env.conn("node2"), params, libvirt.VIR_MIGRATE_LIVE)
        except libvirt.libvirtError as exc:
            box["error"] = exc.get_error_message()

    th = threading.Thread(target=run)
    th.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                incoming = hv_env.conn("node2").lookupByName(VM)
                if incoming.state() == [libvirt.VIR_DOMAIN_PAUSED,
                                        libvirt.VIR_DOMAIN_PAUSED_MIGRATION]:
                    break
            except libvirt.libvirtError:
                pass
            assert time.monotonic() < deadline and th.is_alive(), f"no incoming copy: {box}"
            time.sleep(0.1)
        check = _vm_states(dv)
        assert check["status"] == "warn", check
        assert f"{VM}@node2 paused (migrating)" in check["summary"], check
        assert "I/O error" not in check["summary"]
    finally:
        while th.is_alive():
            try:
                dom.abortJob()
            except libvirt.libvirtError:
                pass
            th.join(2)
    assert hv_env.where(VM) == ["node1"], box


def test_an_io_error_pause_is_critical(dv: Any, hv_env: Any) -> None:
    """A guest whose disk sits on a tiny filesystem writes it full: QEMU stops it with
    reason I/O error (error_policy='stop'), which health reports as critical."""
    import libvirt

    name = "hvfull"
    tiny = hv_env.dir / "tinyfs"
    tiny.mkdir(exist_ok=True)
    pid = read_pid(hv_env.dir / "libvirt" / "node1" / "daemon.pid")
    assert pid is not None
    inside = ["nsenter", "-t", str(pid), "-m", "--"]  # the node's mount namespace
    subprocess.run([*inside, "mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs",
                    str(tiny)], check=True)
    try:
        disk = tiny / "disk.qcow2"
        subprocess.run([*inside, "qemu-img", "create", "-q", "-f", "qcow2", str(disk), "32M"],
                       check=True)
        g = hv_env.config["hv"]["guest"]
        dom = lab.define_guest(hv_env.conn("node1"), name, kernel=g["kernel"],
                               initrd=g["initrd"], console_log=hv_env.dir / f"{name}.log",
                               disk=disk, cmdline="console=ttyS0 quiet dv.fill",
                               error_policy="stop")
        _wait_state(dom, libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR)
        check = _vm_states(dv)
        assert check["status"] == "crit", check
        assert f"{name}@node1 paused (I/O error)" in check["summary"], check
    finally:
        hv_env.remove(name)
        subprocess.run([*inside, "umount", str(tiny)], check=True)
