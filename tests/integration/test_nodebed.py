"""The node test bed (debvisor_core.lab.nodebed): namespace nodes on an overlay of a
debootstrap base, with real sshd, real apt against the bed's repository, reboots that
restart the node's init, a redirected booted kernel, failure injection, and a stop that
leaves nothing behind. The base is built once (about a minute) and cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debvisor_core.lab import nodebed
from debvisor_core.lab.nodebed import Bed

pytestmark = [pytest.mark.lab, pytest.mark.root]

if (_why := nodebed.unavailable()) is not None:
    pytest.skip(_why, allow_module_level=True)

# the CLI of the venv running the tests (mounted in the nodes), else the checkout's
DEBVISOR = str(next((p for p in (Path(sys.prefix).resolve() / "bin" / "debvisor",
                                 nodebed.checkout_dirs()[0] / ".venv" / "bin" / "debvisor")
                     if p.exists()), "debvisor"))
OLD, NEW = "6.1.0-90-debvisor", "6.1.0-91-debvisor"
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q"


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    nodebed.ensure_base()
    b = Bed(tmp_path_factory.mktemp("nodebed") / "bed", nodes=3)
    for release in nodebed.RELEASES:
        b.repo.add_release(release)
    t0 = time.monotonic()
    with b:
        print(f"\n3 nodes up (ssh answering) in {time.monotonic() - t0:.2f}s")
        yield b


def upgrade_check(bed: Bed, node: str) -> dict[str, Any]:
    res = bed.run(node, [DEBVISOR, "--json", "upgrade", "check"], check=False)
    assert res.returncode in (0, 1), res
    report: dict[str, Any] = json.loads(res.stdout)
    return report


def kernel_check(report: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in report["checks"] if c["name"] == "core.kernel")
    return found


def test_nodes_are_separate_hosts_over_real_ssh(bed: Bed) -> None:
    out = bed.run_all("hostname; cat /etc/ssh/ssh_host_ed25519_key.pub; cat /proc/1/comm; "
                      "cat /run/testbed/boot-id")
    seen = {n: r.stdout.split("\n") for n, r in out.items()}
    assert {n: s[0] for n, s in seen.items()} == {n: n for n in bed.nodes}
    assert len({s[1] for s in seen.values()}) == 3  # each node made its own host keys
    assert all(s[2] == "testbed-init" for s in seen.values())
    assert all(s[3] == bed.boot_id(n) for n, s in seen.items())
    # the same nodes through the generated config file and through plain ssh options
    via_config = subprocess.run(["ssh", "-F", str(bed.ssh_config), "node2", "hostname"],
                                capture_output=True, text=True, timeout=30)
    assert via_config.stdout.strip() == "node2", via_config
    plain = subprocess.run(["ssh", *bed.ssh_options(), f"root@{bed.nodes['node3']}", "hostname"],
                           capture_output=True, text=True, timeout=30)
    assert plain.stdout.strip() == "node3", plain
    assert bed.run("node1", "ssh node2 hostname").stdout.strip() == "node2"  # node to node
    # the checkout is there, read-only
    res = bed.run("node1", f"test -x {DEBVISOR} && touch {nodebed.checkout_dirs()[0]}/x",
                  check=False)
    assert res.returncode != 0 and "Read-only" in res.stderr, res


def test_apt_installs_from_the_local_repository(bed: Bed) -> None:
    bed.run("node1", f"apt-get update -q && {APT} install debvisor-test-agent")
    version = bed.run("node1", "dpkg-query -W -f '${Version}' debvisor-test-agent").stdout
    assert version == "1.1"
    # it landed on node1's own disk only
    assert (bed.upper("node1") / "usr/share/debvisor-test-agent/version").read_text() == "1.1\n"
    assert not (bed.upper("node2") / "usr/share/debvisor-test-agent").exists()


def test_a_package_published_within_the_same_second_reaches_apt(bed: Bed) -> None:
    """The repository's HTTP server answers apt's If-Modified-Since by the files' mtime in
    whole seconds: an index rewritten within the second apt fetched must still be new to
    it (CI once missed a kernel package published right after a node's `apt-get update`)."""
    release = bed.repo.path / "Release"
    bed.repo.add("dv-same-second", "1.0")
    bed.repo.index()
    first = release.stat().st_mtime
    bed.run("node1", "apt-get -q update")
    bed.repo.add("dv-same-second", "2.0")
    bed.repo.index()  # well within a second of the first
    assert int(release.stat().st_mtime) > int(first)
    bed.run("node1", "apt-get -q update")
    policy = bed.run("node1", "apt-cache policy dv-same-second").stdout
    assert "Candidate: 2.0" in policy, policy


def test_upgrade_check_inside_a_node_reads_the_redirected_kernel(bed: Bed) -> None:
    bed.run("node2", f"apt-get update -q && {APT} install {nodebed.KERNEL_META}=1.0")
    bed.reboot("node2")  # boots the kernel just installed
    report = upgrade_check(bed, "node2")
    assert report["host"] == "node2"
    kernel = kernel_check(report)
    assert kernel["status"] == "pass", kernel
    assert kernel["details"]["running"] == OLD == bed.booted_kernel("node2")
    assert bed.run("node2", "uname -r").stdout.strip() == os.uname().release  # the limit


def test_reboot_over_ssh_boots_the_newest_kernel(bed: Bed) -> None:
    bed.run("node3", f"apt-get update -q && {APT} install {nodebed.KERNEL_META}=1.0 && "
                     f"{APT} dist-upgrade")
    boot = bed.run("node3", "ls /boot; cat /run/testbed/boot-id").stdout.split()
    assert {f"vmlinuz-{OLD}", f"vmlinuz-{NEW}"} <= set(boot)  # the new one beside the old
    before = boot[-1]
    bed.run("node3", "reboot", check=False)  # the node reboots itself
    took = bed.wait_boot("node3", before)
    print(f"\nreboot over ssh -> ssh answering again: {took:.2f}s")
    after = bed.run("node3", "cat /run/testbed/boot-id /proc/sys/kernel/random/boot_id "
                             "/proc/sys/kernel/osrelease").stdout.split()
    assert after[0] == after[1] != before
    assert after[2] == NEW == bed.booted_kernel("node3")
    assert kernel_check(upgrade_check(bed, "node3"))["status"] == "pass"


def test_boot_override_boots_the_old_kernel(bed: Bed) -> None:
    bed.run("node3", f"apt-get update -q && {APT} install linux-image-{OLD} linux-image-{NEW}")
    bed.boot_override("node3", OLD)
    try:
        took = bed.reboot("node3")
        print(f"\nreboot (SIGHUP to init) -> ssh answering again: {took:.2f}s")
        assert bed.run("node3", "cat /proc/sys/kernel/osrelease").stdout.strip() == OLD
        kernel = kernel_check(upgrade_check(bed, "node3"))
        assert kernel["status"] == "warn", kernel
        assert (kernel["details"]["running"], kernel["details"]["installed"][-1]) == (OLD, NEW)
    finally:
        bed.boot_override("node3", None)
    bed.reboot("node3")
    assert bed.booted_kernel("node3") == NEW


def test_an_isolated_node_is_unreachable_until_healed(bed: Bed) -> None:
    bed.isolate("node1")
    try:
        t0 = time.monotonic()
        res = bed.run("node1", "true", check=False, connect_timeout=1)
        assert res.returncode == 255, res
        assert time.monotonic() - t0 < 5
    finally:
        bed.heal("node1")
    bed.wait_ssh("node1", timeout=10)
    assert bed.run("node1", "hostname").stdout.strip() == "node1"


def _leftovers(b: Bed, ns_inodes: set[int]) -> list[str]:
    """What of bed ``b`` is still there: namespaces, its host interface, mounts, processes
    (by command line, or by being in one of the network namespaces ``ns_inodes``)."""
    found = [n for n in nodebed._netns_names() if n.startswith(b.prefix)]
    found += [ln for ln in Path("/proc/mounts").read_text().splitlines()
              if str(b.dir) in ln or b.prefix in ln]
    if Path("/sys/class/net", b.host_if).exists():
        found.append(b.host_if)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            net = os.stat(proc / "ns" / "net").st_ino
        except OSError:
            continue
        if str(b.dir) in cmdline or net in ns_inodes:
            found.append(f"pid {proc.name}: {cmdline}")
    return found


def test_a_stopped_bed_leaves_nothing_behind(tmp_path: Path) -> None:
    b, other = Bed(tmp_path / "bed", nodes=2), Bed(tmp_path / "other", nodes=1)
    t0 = time.monotonic()
    with other:
        with pytest.raises(RuntimeError, match="a test failed"), b:
            print(f"\n2 beds (1 + 2 nodes) up in {time.monotonic() - t0:.2f}s")
            assert (b.fabric, b.host_address) != (other.fabric, other.host_address)
            assert b.run("node2", "hostname").stdout.strip() == "node2"
            inits = [b.init_pid(n) for n in b.nodes]
            inodes = {os.stat(f"/run/netns/{n}").st_ino
                      for n in (b.fabric, *map(b.netns, b.nodes))}
            assert len(_leftovers(b, inodes)) > 4  # the check below does see a running bed
            raise RuntimeError("a test failed")
        assert _leftovers(b, inodes) == []
        assert not any(pid and Path(f"/proc/{pid}").exists() for pid in inits)
        assert other.run("node1", "hostname").stdout.strip() == "node1"  # left alone
    b.stop()  # idempotent
