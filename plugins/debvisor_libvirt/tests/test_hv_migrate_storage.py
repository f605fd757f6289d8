"""`hv migrate --copy-storage`: a guest whose qcow2 disk is on node-local storage.

``/var/lib/libvirt`` is private to each lab node (a bind mount in the node's mount
namespace), so a disk under ``/var/lib/libvirt/images`` exists on its node only.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debvisor_libvirt import lab

VM = "hvcopy"
DISK = f"/var/lib/libvirt/images/{VM}.qcow2"
pytestmark = [pytest.mark.lab, pytest.mark.root]


def _qemu_io(image: Path, cmd: str) -> subprocess.CompletedProcess[str]:
    # -U: the running guest holds the image's write lock; reading is safe
    return subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c", cmd, str(image)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def local_disk_guest(hv_env: Any) -> Iterator[dict[str, Path]]:
    hv_env.remove(VM)
    paths = {n: lab.node_local_path(hv_env.dir, n, DISK) for n in ("node1", "node2")}
    for p in paths.values():
        p.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        paths["node2"].parent.rmdir()  # so that the migration has to create it
    paths["node1"].parent.mkdir(parents=True, exist_ok=True)
    lab.make_disk(paths["node1"], 48)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 2M", str(paths["node1"])],
                   check=True, capture_output=True, timeout=60)
    log = hv_env.dir / f"{VM}.console.log"
    log.unlink(missing_ok=True)
    g = hv_env.config["hv"]["guest"]
    lab.define_guest(hv_env.conn("node1"), VM, kernel=g["kernel"], initrd=g["initrd"],
                     console_log=log, disk=DISK)
    lab.wait_console(log, timeout=120)
    yield paths
    hv_env.remove(VM)
    for p in paths.values():
        p.unlink(missing_ok=True)


def test_copy_storage_needed_then_copies_and_rolls_back(dv: Any, hv_env: Any,
                                                         local_disk_guest: dict[str, Path]) -> None:
    on2 = local_disk_guest["node2"]
    refused = dv("hv", "migrate", VM, "node2", "--yes")
    assert refused.code == 3, refused
    assert (f"disk vda ({DISK}) is not visible from node2; use shared storage or "
            "--copy-storage") in refused.stderr
    assert hv_env.where(VM) == ["node1"] and not on2.exists()

    res = dv("--json", "hv", "migrate", VM, "node2", "--copy-storage", "--yes")
    assert res.code == 0, res
    assert [s["name"] for s in res.json["steps"]] == ["PrecreateDisks", "MigrateVM"]
    assert hv_env.where(VM) == ["node2"]
    # the copy: same format and virtual size, same data (written before the migration)
    info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(on2)],
                          capture_output=True, text=True, check=True)
    assert '"format": "qcow2"' in info.stdout and '"virtual-size": 50331648' in info.stdout
    assert _qemu_io(on2, "read -P 0xab 1M 2M").returncode == 0
    assert "read 2097152/2097152 bytes" in _qemu_io(on2, "read -P 0xab 1M 2M").stdout
    dom = hv_env.conn("node2").lookupByName(VM)
    assert DISK in dom.XMLDesc(0)

    back = dv("hv", "migrate", "--rollback", "--yes")  # migrate back, delete the copy
    assert back.code == 0, back
    assert hv_env.where(VM) == ["node1"]
    assert not on2.exists() and not on2.parent.exists()  # the directory it made, too
    assert local_disk_guest["node1"].exists()


def test_existing_file_on_target_is_never_overwritten(dv: Any, hv_env: Any,
                                                       local_disk_guest: dict[str, Path]) -> None:
    on2 = local_disk_guest["node2"]
    on2.parent.mkdir(parents=True, exist_ok=True)
    on2.write_bytes(b"someone else's data")
    res = dv("hv", "migrate", VM, "node2", "--copy-storage", "--yes")
    assert res.code == 4, res
    assert f"node2 already has {DISK}; remove it there first" in res.stderr
    assert on2.read_bytes() == b"someone else's data"
    assert hv_env.where(VM) == ["node1"]


def test_shared_storage_on_a_local_filesystem_is_refused_at_precheck(
        dv: Any, hv_env: Any, dv_state: Any) -> None:
    """A disk under a `shared_storage` prefix that is really a local filesystem: libvirt
    would refuse the migration at apply time; the pre-check says so first (exit 3)."""
    from debvisor_libvirt.migrate import fs_type

    vm = "hvshared"
    disk = hv_env.dir / f"{vm}.qcow2"
    assert fs_type(str(disk.parent)) not in (None, "nfs", "nfs4", "ceph", "gfs2", "ocfs2")
    hv_env.remove(vm)
    lab.make_disk(disk, 16)
    nodes = {n: {"shared_storage": [str(hv_env.dir)]} for n in ("node1", "node2")}
    dv_state.config({"hv": {"nodes": nodes}}, base=hv_env.config_path)
    log = hv_env.dir / f"{vm}.console.log"
    log.unlink(missing_ok=True)
    g = hv_env.config["hv"]["guest"]
    lab.define_guest(hv_env.conn("node1"), vm, kernel=g["kernel"], initrd=g["initrd"],
                     console_log=log, disk=str(disk))
    try:
        lab.wait_console(log, timeout=120)
        res = dv("hv", "migrate", vm, "node2", "--check")
        assert res.code == 3, res
        assert f"disk vda ({disk}) is under shared_storage of node1, but it sits on a local" in res.stderr
        assert hv_env.where(vm) == ["node1"]
    finally:
        hv_env.remove(vm)
        disk.unlink(missing_ok=True)
