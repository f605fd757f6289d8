"""The upgraded kernel booted for real: a test-bed node (debvisor_core.lab.nodebed) with real
boots upgrades over ssh to a package shipping a real Debian kernel; its reboot boots that
image under QEMU/TCG, and the rolling upgrade verifies the release the kernel itself
reported. A kernel image that does not boot leaves the previous kernel booted (GRUB's
fallback entry): the upgrade pauses there."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from debvisor_core.lab import nodebed
from debvisor_core.lab.nodebed import Bed
from debvisor_core.testing import Runner, StateDir

pytestmark = [pytest.mark.lab, pytest.mark.root]

if (_why := nodebed.unavailable()) is not None:
    pytest.skip(_why, allow_module_level=True)
if not (shutil.which("qemu-system-x86_64") and nodebed.BUSYBOX.exists()):
    pytest.skip("qemu-system-x86_64 and a static busybox are needed", allow_module_level=True)

DEBVISOR = nodebed.debvisor_in_nodes()
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q"
OLD = "0.1-debvisor"


@pytest.fixture
def real_kernel() -> Path:
    """A real Debian kernel (the hypervisor lab's guest kernel, fetched with apt once)."""
    lab = pytest.importorskip("debvisor_libvirt.lab")
    return Path(lab.ensure_kernel())


@pytest.fixture
def bed(tmp_path: Path, dv_state: StateDir) -> Iterator[Bed]:
    """One node with real boots, on a placeholder kernel (not a bootable image: named)."""
    nodebed.ensure_base()
    b = Bed(tmp_path / "bed", nodes=1, real_boot=True, real_boot_timeout=40)
    b.repo.add_kernel(OLD, "0.1-1")
    b.repo.add(nodebed.KERNEL_META, "1.0", depends=f"linux-image-{OLD}", section="kernel")
    with b:
        b.run("node1", f"apt-get -q update && {APT} install {nodebed.KERNEL_META}")
        b.reboot("node1")
        assert b.booted_kernel("node1") == OLD
        dv_state.config({"cluster": {"nodes": {"node1": {
            "transport": "ssh", "host": "node1", "user": "root",
            "ssh_config": str(b.ssh_config), "command": DEBVISOR, "connect_timeout": 2}}}})
        yield b


def publish(bed: Bed, meta_version: str, release: str, image: bytes) -> None:
    bed.repo.add_kernel(release, f"{meta_version}-1", image=image)
    bed.repo.add(nodebed.KERNEL_META, meta_version, depends=f"linux-image-{release}",
                 section="kernel")
    bed.repo.index()


def test_the_upgraded_kernel_is_booted_under_qemu_and_verified(
        dv: Runner, bed: Bed, real_kernel: Path) -> None:
    real = real_kernel.name.removeprefix("vmlinuz-")
    image = real_kernel.read_bytes()
    # a broken build first: a truncated image (its boot header intact) does not boot (the
    # machine resets at once; QEMU, told -no-reboot, stops)
    broken = "6.1.0-0-broken"
    publish(bed, "1.1", broken, image[: len(image) // 3])
    res = dv("upgrade", "rolling", "--yes")
    assert res.code == 4 and "paused" in res.stderr, res
    assert f"node node1 booted kernel {OLD}, not {broken}" in res.stderr, res.stderr
    assert bed.booted_kernel("node1") == OLD
    assert "DVBOOT" not in (bed.node_dir("node1") / "qemu-boot.log").read_text(errors="replace")
    back = dv("ops", "rollback", dv("--json", "ops", "list").json[0]["id"], "--yes")
    assert back.code == 0, back

    # the real kernel: booted under QEMU, its own `uname -r` is what the node runs
    publish(bed, "1.2", real, image)
    res = dv("--json", "upgrade", "rolling", "--yes")
    assert res.code == 0, res
    assert bed.booted_kernel("node1") == real
    report = res.json["result"]["nodes"]["node1"]  # the node's packages, kernels, services
    assert {p["name"] for p in report["upgrade.run"]["packages"]["installed"]} == {
        f"linux-image-{real}"}
    reboot = report["reboot"]
    assert (reboot["rebooted"], reboot["kernel_before"], reboot["kernel_after"]) == (
        True, OLD, real)
    assert reboot["services"] == {"stopped": [], "started": []}, reboot
    console = (bed.node_dir("node1") / "qemu-boot.log").read_text(errors="replace")
    assert f"DVBOOT release={real}" in console
    assert f"Linux version {real}" in console  # the kernel's own banner
