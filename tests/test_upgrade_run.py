"""`debvisor upgrade run` on a node root with real apt and dpkg: real .deb packages at two
versions in a local repository, the upgrade installs a new kernel package beside the
running one and removes a package the new agent breaks; the result says a reboot is
needed; --rollback puts the old versions back from the repository."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from debvisor_core.testing import Runner, StateDir

AGENT = "debvisor-test-agent"


def make_deb(out: Path, name: str, version: str, files: dict[str, str] | None = None,
             **fields: str) -> Path:
    tree = out / f"build-{name}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    control = {"Package": name, "Version": version, "Architecture": "all",
               "Maintainer": "DebVisor tests <t@example.org>", "Description": "test package",
               **fields}
    (tree / "DEBIAN" / "control").write_text("".join(f"{k}: {v}\n" for k, v in control.items()))
    for path, text in (files or {}).items():
        f = tree / path.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    deb = out / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb


def index(repo: Path) -> None:
    """A flat repository's Packages file (what dpkg-scanpackages writes)."""
    out = ""
    for deb in sorted(repo.glob("*.deb")):
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True,
                                 text=True).stdout.strip()
        data = deb.read_bytes()
        out += (f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                f"SHA256: {hashlib.sha256(data).hexdigest()}\n\n")
    (repo / "Packages").write_text(out)


def apt(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["apt-get", "-q", "-o", f"Dir={root}", "-o",
                           f"Dir::State::status={root}/var/lib/dpkg/status", "-o",
                           f"DPkg::Options::=--root={root}", "-o",
                           f"DPkg::Options::=--admindir={root}/var/lib/dpkg", *args],
                          capture_output=True, text=True, timeout=120, check=True)


def versions(root: Path) -> dict[str, str]:
    out = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f",
                          "${Package} ${Version} ${db:Status-Status}\\n"],
                         capture_output=True, text=True, check=True).stdout
    return {n: v for n, v, st in (ln.split() for ln in out.splitlines()) if st == "installed"}


def build_node(base: Path) -> Path:
    """A node root with the 1.0 packages installed and the 1.1 release in its repository."""
    root, repo = base / "node", base / "repo"
    for d in ("etc/apt/sources.list.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial",
              "var/cache/apt/archives/partial", "var/lib/dpkg/info", "var/lib/dpkg/updates",
              "var/log/apt", "boot"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").write_text("")
    repo.mkdir()
    make_deb(repo, AGENT, "1.0", {"/usr/share/debvisor-test/agent": "1.0\n"})
    make_deb(repo, "debvisor-legacy", "1.0", {"/usr/share/debvisor-test/legacy": "x\n"})
    make_deb(repo, "linux-image-6.1.0-90-debvisor", "6.1.90-1",
             {"/boot/vmlinuz-6.1.0-90-debvisor": "kernel 90\n"})
    make_deb(repo, "linux-image-debvisor-amd64", "1.0",
             Depends="linux-image-6.1.0-90-debvisor")
    index(repo)
    (root / "etc/apt/sources.list").write_text(f"deb [trusted=yes] file:{repo} ./\n")
    apt(root, "update")
    apt(root, "-y", "install", AGENT, "debvisor-legacy", "linux-image-debvisor-amd64")
    # the new release: the agent 1.1 breaks the legacy package, the kernel metapackage 1.1
    # pulls a new kernel; the old versions stay in the repository
    make_deb(repo, AGENT, "1.1", {"/usr/share/debvisor-test/agent": "1.1\n"},
             Breaks="debvisor-legacy", Conflicts="debvisor-legacy")
    make_deb(repo, "linux-image-6.1.0-91-debvisor", "6.1.91-1",
             {"/boot/vmlinuz-6.1.0-91-debvisor": "kernel 91\n"})
    make_deb(repo, "linux-image-debvisor-amd64", "1.1",
             Depends="linux-image-6.1.0-91-debvisor")
    index(repo)
    apt(root, "update")
    (root / "osrelease").write_text("6.1.0-90-debvisor\n")
    (root / "boot_id").write_text("first-boot\n")
    return root


FAKEBOOT = Path(__file__).with_name("upgrade_fakeboot.py")


def upgrade_config(root: Path) -> dict[str, Any]:
    """The node root's config: its kernel and boot id files, and a reboot that only picks
    the kernel and a new boot id (never the machine's own `systemctl reboot`)."""
    return {"upgrade": {"root": str(root), "running_kernel_file": str(root / "osrelease"),
                        "boot_id_file": str(root / "boot_id"),
                        "reboot_command": [sys.executable, str(FAKEBOOT), str(root)]}}


@pytest.fixture
def node(tmp_path: Path, dv_state: StateDir) -> Path:
    root = build_node(tmp_path)
    dv_state.config(upgrade_config(root))
    return root


def test_upgrade_run_upgrades_reports_the_reboot_and_rolls_back(dv: Runner, node: Path) -> None:
    before = versions(node)
    assert before == {AGENT: "1.0", "debvisor-legacy": "1.0",
                      "linux-image-6.1.0-90-debvisor": "6.1.90-1",
                      "linux-image-debvisor-amd64": "1.0"}
    dry = dv("upgrade", "run", "--dry-run")
    assert dry.code == 0, dry
    assert "apt-get dist-upgrade on" in dry.stdout and "2 upgraded, 1 new, 1 removed" in dry.stdout
    assert versions(node) == before

    res = dv("--json", "upgrade", "run", "--yes")
    assert res.code == 0 and res.json["status"] == "succeeded", res
    after = versions(node)
    assert after[AGENT] == "1.1" and after["linux-image-debvisor-amd64"] == "1.1"
    assert "debvisor-legacy" not in after and "linux-image-6.1.0-91-debvisor" in after
    assert (node / "usr/share/debvisor-test/agent").read_text() == "1.1\n"
    r = res.json["result"]
    assert {p["name"] for p in r["packages"]["upgraded"]} == {AGENT, "linux-image-debvisor-amd64"}
    assert [p["name"] for p in r["packages"]["removed"]] == ["debvisor-legacy"]
    assert (r["reboot_required"], r["newest_kernel"]) == (True, "6.1.0-91-debvisor")
    human_again = dv("upgrade", "run", "--yes")
    assert human_again.code == 0 and human_again.stdout.strip() == "nothing to upgrade"

    back = dv("upgrade", "run", "--rollback", "--yes")
    assert back.code == 0, back
    assert versions(node) == before
    assert (node / "usr/share/debvisor-test/agent").read_text() == "1.0\n"


def test_a_failed_check_refuses_the_upgrade(dv: Runner, node: Path, dv_state: StateDir) -> None:
    """ZFS in use without its module built for the newest kernel: core.zfs-dkms fails, so
    the upgrade is refused before anything changes (exit 3)."""
    (node / "sbin").mkdir()
    (node / "sbin/zpool").write_text("#!/bin/sh\n")
    res = dv("upgrade", "run", "--yes")
    assert res.code == 3, res
    assert "core.zfs-dkms: ZFS is used but no zfs module is built" in res.stderr
    assert versions(node)[AGENT] == "1.0"
    forced = dv("--json", "upgrade", "check", "--only", "core.zfs")
    assert forced.code == 1 and forced.json["checks"][0]["status"] == "fail"


def test_status_parsing_agrees_with_dpkg_query(node: Path, dv_state: Any) -> None:
    from debvisor_core.upgrade import Node, installed

    n = Node(node, node / "osrelease", 5.0)
    assert installed(n) == versions(node)


def in_maintenance(dv: Runner, tmp_path: Path, node: str) -> bool:
    """Whether a local node (its own state and config under tmp_path/NODE) is in maintenance."""
    res = dv("--json", "maintenance", "status", env={
        "DEBVISOR_STATE_DIR": str(tmp_path / node / "state"),
        "DEBVISOR_CONFIG": str(tmp_path / node / "debvisor.toml")})
    assert res.code == 0, res
    return bool(res.json["enabled"])


def local_nodes(dv_state: StateDir, tmp_path: Path, nodes: dict[str, dict[str, Any]], *,
                config: dict[str, Any] | None = None, base: Path | None = None
                ) -> dict[str, Path]:
    """A node root, state dir and config file per node (local transport), each node's
    inventory entry with its extra keys, as this test's config (``config`` merged in, over
    ``base``); their roots by name."""
    from debvisor_core.lab.manager import to_toml

    roots, inventory = {}, {}
    for n, extra in nodes.items():
        home = tmp_path / n
        (home / "state").mkdir(parents=True)
        roots[n] = build_node(home)
        cfg = home / "debvisor.toml"
        cfg.write_text(to_toml(upgrade_config(roots[n])))
        inventory[n] = {"transport": "local", "state_dir": str(home / "state"),
                        "config": str(cfg), **extra}
    dv_state.config({"cluster": {"nodes": inventory}, **(config or {})}, base=base)
    return roots


def test_rolling_upgrade_pauses_at_a_failing_node_and_resumes(dv: Runner, dv_state: StateDir,
                                                              tmp_path: Path) -> None:
    """Three nodes (local transport, each its own state and root): node2's checklist fails,
    so the rolling upgrade upgrades node1, pauses at node2 (nothing changed there), and
    after the fix `ops resume` upgrades node2 and node3; `ops rollback` undoes all three."""
    import tomllib

    roots = local_nodes(dv_state, tmp_path, {"node1": {}, "node2": {}, "node3": {}})
    assert tomllib.loads(dv_state.config_path.read_text())["cluster"]["nodes"]["node2"]
    (roots["node2"] / "sbin").mkdir()
    (roots["node2"] / "sbin/zpool").write_text("")  # ZFS without its module: node2 refuses
    dry = dv("upgrade", "rolling", "--dry-run")
    assert dry.code == 0 and "[node2] on node2: upgrade.run()" in dry.stdout, dry
    assert "[node2: reboot] on node2: reboot if a newer kernel is installed" in dry.stdout
    res = dv("upgrade", "rolling", "--yes")
    assert res.code == 4 and "paused" in res.stderr, res
    assert "core.zfs-dkms" in res.stderr
    assert [versions(roots[n])[AGENT] for n in roots] == ["1.1", "1.0", "1.0"]
    # node1 went into maintenance (with its drain) for its upgrade and left it after its
    # reboot; node2's maintenance was undone with its failed phase
    assert [in_maintenance(dv, tmp_path, n) for n in roots] == [False, False, False]
    journal = (tmp_path / "node1" / "state" / "ops")
    kinds = sorted(json.loads(f.read_text().splitlines()[0])["kind"] for f in journal.iterdir())
    assert kinds == ["node.maintenance", "node.upgrade"], kinds
    (op,) = dv("--json", "ops", "list").json
    assert op["kind"] == "cluster.upgrade" and op["status"] == "paused"

    assert (roots["node1"] / "osrelease").read_text() == "6.1.0-91-debvisor\n"  # rebooted
    assert (roots["node2"] / "osrelease").read_text() == "6.1.0-90-debvisor\n"

    (roots["node2"] / "sbin/zpool").unlink()
    resumed = dv("ops", "resume", op["id"], "--yes")
    assert resumed.code == 0, resumed
    assert [versions(roots[n])[AGENT] for n in roots] == ["1.1", "1.1", "1.1"]
    assert {(r / "osrelease").read_text() for r in roots.values()} == {"6.1.0-91-debvisor\n"}

    back = dv("ops", "rollback", op["id"], "--yes")
    assert back.code == 0, back
    assert [versions(roots[n])[AGENT] for n in roots] == ["1.0", "1.0", "1.0"]
    assert all("debvisor-legacy" in versions(r) for r in roots.values())


def test_a_node_that_boots_the_old_kernel_pauses_the_upgrade(dv: Runner, dv_state: StateDir,
                                                             tmp_path: Path) -> None:
    """node1's boot loader keeps the old kernel: the upgrade pauses at its reboot, with the
    new packages kept and node2 untouched; once fixed, `ops resume` reboots it again,
    verifies the new kernel and goes on."""
    roots = local_nodes(dv_state, tmp_path, {"node1": {}, "node2": {}})
    (roots["node1"] / "etc/testbed").mkdir(parents=True)
    (roots["node1"] / "etc/testbed/boot-override").write_text("6.1.0-90-debvisor\n")
    res = dv("upgrade", "rolling", "--yes")
    assert res.code == 4 and "paused" in res.stderr, res
    assert "node node1 booted kernel 6.1.0-90-debvisor, not 6.1.0-91-debvisor" in res.stderr
    assert versions(roots["node1"])[AGENT] == "1.1" and versions(roots["node2"])[AGENT] == "1.0"
    assert (roots["node1"] / "boot_id").read_text() != "first-boot\n"  # it did reboot
    (op,) = dv("--json", "ops", "list").json
    assert op["status"] == "paused"

    (roots["node1"] / "etc/testbed/boot-override").unlink()
    booted = (roots["node1"] / "boot_id").read_text()
    resumed = dv("--json", "ops", "resume", op["id"], "--yes")
    assert resumed.code == 0 and resumed.json["status"] == "succeeded", resumed
    assert (roots["node1"] / "boot_id").read_text() != booted  # rebooted again
    assert {(r / "osrelease").read_text() for r in roots.values()} == {"6.1.0-91-debvisor\n"}
    assert versions(roots["node2"])[AGENT] == "1.1"


def test_no_reboot_leaves_the_kernel_and_a_node_without_a_new_kernel_is_not_rebooted(
        dv: Runner, dv_state: StateDir, tmp_path: Path) -> None:
    roots = local_nodes(dv_state, tmp_path, {"node1": {}})
    res = dv("upgrade", "rolling", "--no-reboot", "--yes")
    assert res.code == 0, res
    assert (roots["node1"] / "boot_id").read_text() == "first-boot\n"
    status = dv("--json", "upgrade", "status", env={
        "DEBVISOR_CONFIG": str(tmp_path / "node1" / "debvisor.toml")})
    assert status.code == 0, status
    got = status.json
    assert got.pop("last_reboot") is None  # debvisor never rebooted it
    assert isinstance(got.pop("services"), list)
    assert got == {"boot_id": "first-boot", "running_kernel": "6.1.0-90-debvisor",
                   "newest_kernel": "6.1.0-91-debvisor", "reboot_required": True,
                   "kernels": ["6.1.0-90-debvisor", "6.1.0-91-debvisor"]}
    (roots["node1"] / "osrelease").write_text("6.1.0-91-debvisor\n")
    again = dv("--json", "--yes", "upgrade", "reboot", "--if-needed", env={
        "DEBVISOR_CONFIG": str(tmp_path / "node1" / "debvisor.toml")})
    assert again.code == 0 and again.json["rebooting"] is False, again
    assert (roots["node1"] / "boot_id").read_text() == "first-boot\n"



def test_a_rolling_upgrade_over_the_grpc_transport_reboots_and_verifies(
        dv: Runner, dv_state: StateDir, tmp_path: Path) -> None:
    """A node served by its rpcd (mTLS, the orchestrator's certificate): each step runs
    there — maintenance, `upgrade run` and the reboot step's `upgrade status` (Call) and
    `upgrade reboot` (Invoke) — and the node is upgraded, rebooted and verified as over ssh.
    Its reboot takes the daemon down (SIGKILL, whether or not the Invoke has ended) and the
    node's supervisor starts it again on the same port, as systemd would after a boot."""
    import os
    import socket
    import threading

    from debvisor_core.lab.manager import to_toml
    from debvisor_core.rpcd import pki

    home = tmp_path / "node1"
    (home / "state").mkdir(parents=True)
    root = build_node(home)
    d = tmp_path / "pki"
    pki.init(d)
    pki.issue(d, "node1", server=True, ips=("127.0.0.1",))
    pki.issue(d, "orch", kind="user")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pidfile = home / "rpcd.pid"
    reboot = (f"import os, runpy, sys; sys.argv = ['fakeboot', {str(root)!r}]; "
              f"runpy.run_path({str(FAKEBOOT)!r}); "
              f"os.kill(int(open({str(pidfile)!r}).read()), 9)")
    config = upgrade_config(root)
    config["upgrade"]["reboot_command"] = [sys.executable, "-c", reboot]
    node_cfg = home / "debvisor.toml"
    node_cfg.write_text(to_toml({**config, "rpcd": {
        "listen": f"127.0.0.1:{port}", "ca": str(d / "ca.pem"), "cert": str(d / "node1.pem"),
        "key": str(d / "node1.key"), "identities": {"orch": ["admin"]}}}))
    calls = home / "calls.jsonl"
    env = {**os.environ, "DEBVISOR_STATE_DIR": str(home / "state"),
           "DEBVISOR_CONFIG": str(node_cfg)}
    starts: list[subprocess.Popen[str]] = []
    stopping, up = threading.Event(), threading.Event()

    def supervise() -> None:  # the node's init: the daemon again whenever it dies
        while not stopping.is_set():
            with (home / "rpcd.err").open("a") as err:
                proc = subprocess.Popen([sys.executable, "-m", "debvisor_core", "rpcd", "serve",
                                         "--call-log", str(calls)], env=env,
                                        stdout=subprocess.PIPE, stderr=err, text=True)
            starts.append(proc)
            pidfile.write_text(str(proc.pid))
            assert proc.stdout is not None
            if proc.stdout.readline().startswith("READY"):
                up.set()
            proc.wait()

    keeper = threading.Thread(target=supervise, daemon=True)
    keeper.start()
    try:
        assert up.wait(60), (home / "rpcd.err").read_text()
        dv_state.config({"cluster": {"nodes": {"node1": {"transport": "grpc",
                                                         "address": f"127.0.0.1:{port}"}}},
                         "rpcd": {"client": {"ca": str(d / "ca.pem"), "cert": str(d / "orch.pem"),
                                             "key": str(d / "orch.key")}}})
        res = dv("--json", "upgrade", "rolling", "--yes")
        assert res.code == 0, (res, (home / "rpcd.err").read_text())
        assert len(starts) == 2  # the reboot took the daemon down once
        assert versions(root)[AGENT] == "1.1"
        assert (root / "osrelease").read_text() == "6.1.0-91-debvisor\n"  # rebooted into it
        assert (root / "boot_id").read_text() != "first-boot\n"
        report = res.json["result"]["nodes"]["node1"]
        assert report["reboot"]["kernel_before"] == "6.1.0-90-debvisor", report
        assert report["reboot"]["kernel_after"] == "6.1.0-91-debvisor", report
        seen = {(json.loads(ln)["method"].rsplit("/", 1)[1], json.loads(ln).get("action"))
                for ln in calls.read_text().splitlines()}
        assert {("Call", "upgrade.status"), ("Invoke", "upgrade.reboot"),
                ("Invoke", "upgrade.run"), ("Invoke", "maintenance.enable")} <= seen, seen
    finally:
        stopping.set()
        for proc in starts:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        keeper.join(10)
