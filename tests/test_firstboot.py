"""`debvisor firstboot run|status`: modules in name order, skipped by role, a failure that
stops the run and a retry that continues from it, the report, the marker, once only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from debvisor_core.testing import Runner, StateDir


@pytest.fixture
def node(tmp_path: Path, dv_state: StateDir, site_plugins: Path,
         monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.53\n")
    (tmp_path / "fb").mkdir()
    monkeypatch.setenv("DV_FIRSTBOOT_DIR", str(tmp_path / "fb"))
    dv_state.config({"firstboot": {"root": str(root), "roles": ["storage"],
                                   "report": str(tmp_path / "log" / "firstboot-report.json")}})
    return tmp_path


def _has_default_route() -> bool:
    return any(r.split()[1] == "00000000" for r in
               Path("/proc/net/route").read_text().splitlines()[1:])


def test_firstboot_runs_once_and_resumes_after_a_failure(dv: Runner, node: Path,
                                                         dv_state: StateDir) -> None:
    if not _has_default_route():
        pytest.fail("this machine has no default route: 01-network cannot pass here")
    (node / "fb" / "fail").write_text("x")
    res = dv("--json", "firstboot", "run")
    assert res.code == 1 and "first boot stopped at 03-test" in res.stderr, res
    mods = {m["name"]: m for m in res.json["modules"]}
    assert list(mods) == ["01-network", "01-ssh-host-keys", "02-disk", "03-test"]
    assert mods["03-test"]["status"] == "failed"
    assert mods["03-test"]["result"] == "the disk is not there yet"
    assert "[INFO] test module working" in mods["03-test"]["output_tail"]
    keys = sorted(p.name for p in (node / "root/etc/ssh").glob("ssh_host_*_key"))
    assert "ssh_host_ed25519_key" in keys and mods["01-ssh-host-keys"]["status"] == "ok"
    assert not (dv_state.path / "firstboot.done").exists()
    report = json.loads((node / "log" / "firstboot-report.json").read_text())
    assert report["status"] == "failed" and report["failed"] == "03-test"

    (node / "fb" / "fail").unlink()  # the retry (systemd's Restart=on-failure) continues
    res = dv("--json", "firstboot", "run")
    assert res.code == 0 and res.json["status"] == "ok", res
    mods = {m["name"]: m for m in res.json["modules"]}
    assert mods["01-ssh-host-keys"].get("earlier_run") is True  # not made twice
    assert mods["03-test"]["status"] == "ok" and (node / "fb" / "runs").read_text() == "2"
    assert mods["05-hv-only"]["status"] == "skipped" and "roles" in mods["05-hv-only"]["result"]
    assert list(mods)[-1] == "99-completion"
    assert "systemd is not running" in res.json["disabled"]
    assert (dv_state.path / "firstboot.done").exists()

    again = dv("firstboot", "run")  # once only
    assert again.code == 0 and "first boot already completed" in again.stdout
    assert (node / "fb" / "runs").read_text() == "2"
    status = dv("--json", "firstboot", "status")
    assert status.json["done"] is True and status.json["status"] == "ok"
    events = [json.loads(x)["result"] for x in
              (dv_state.path / "log" / "audit.jsonl").read_text().splitlines()]
    assert events.count("firstboot-started") == 2 and events.count("firstboot-finished") == 2


def test_firstboot_unit_has_what_the_operator_readme_asks() -> None:
    """(`systemd-analyze verify` and the sandbox score: tests/test_systemd_units.py)"""
    unit = Path(__file__).resolve().parent.parent / "systemd" / "debvisor-firstboot.service"
    text = unit.read_text()
    for line in ("ConditionFirstBoot=yes", "TimeoutSec=3600", "Restart=on-failure",
                 "RestartSec=10", "RemainAfterExit=yes", "StandardOutput=journal",
                 "ConditionPathExists=!/var/lib/debvisor/firstboot.done"):
        assert f"\n{line}\n" in text, line
    assert "firstboot run\n" in text


def test_a_config_module_runs_a_declared_action(dv: Runner, node: Path, dv_state: StateDir) -> None:
    dv_state.config({"firstboot": {
        "root": str(node / "root"), "roles": ["storage"], "skip": ["01-network"],
        "report": str(node / "log" / "firstboot-report.json"),
        "modules": {"04-note": {"action": "example.note.add", "roles": ["storage"],
                                "params": {"name": "firstboot", "text": "hello"}},
                    "04-other": {"action": "example.note.add", "roles": ["k8s"],
                                 "params": {"name": "never", "text": "x"}}}}})
    res = dv("--json", "firstboot", "run")
    assert res.code == 0, res
    mods = {m["name"]: m for m in res.json["modules"]}
    assert mods["04-note"]["status"] == "ok" and mods["04-note"]["plugin"] == "config"
    assert mods["04-note"]["result"].startswith("example.note.add: succeeded (operation ")
    assert mods["04-other"]["status"] == "skipped" and mods["01-network"]["status"] == "skipped"
    notes = dv("--json", "example", "note", "show")
    assert "firstboot" in notes.stdout and "never" not in notes.stdout


def test_a_config_module_with_bad_parameters_fails_in_one_sentence(
        dv: Runner, node: Path, dv_state: StateDir) -> None:
    dv_state.config({"firstboot": {
        "root": str(node / "root"), "roles": ["storage"], "skip": ["01-network"],
        "report": str(node / "log" / "firstboot-report.json"),
        "modules": {"04-note": {"action": "example.note.add", "params": {"nme": "x"}}}}})
    res = dv("--json", "firstboot", "run")
    assert res.code == 1, res
    (bad,) = [m for m in res.json["modules"] if m["name"] == "04-note"]
    assert bad["status"] == "failed" and "unknown parameter 'nme'" in bad["result"]


def _modules(res: Any) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in res.json["modules"]}


@pytest.fixture
def bare(tmp_path: Path, dv_state: StateDir) -> Path:
    """A node root with no plugin modules; the checks of the host itself skipped."""
    root = tmp_path / "root"
    root.mkdir()
    return root


def _config(dv_state: StateDir, tmp_path: Path, root: Path, **tables: Any) -> None:
    dv_state.config({"firstboot": {"root": str(root), "roles": ["storage"],
                                   "skip": ["01-network", "01-ssh-host-keys"],
                                   "report": str(tmp_path / "report.json"), **tables}})


def test_zfs_and_docker_are_skipped_without_their_tables(dv: Runner, dv_state: StateDir,
                                                         bare: Path, tmp_path: Path) -> None:
    _config(dv_state, tmp_path, bare)
    res = dv("--json", "firstboot", "run")
    assert res.code == 0, res
    mods = _modules(res)
    assert mods["04-zfs"]["status"] == mods["05-docker"]["status"] == "skipped"
    assert "no [firstboot.zfs] table" in mods["04-zfs"]["result"]


def test_zfs_without_its_tools_or_module_fails_in_one_sentence(dv: Runner, dv_state: StateDir,
                                                               bare: Path, tmp_path: Path) -> None:
    _config(dv_state, tmp_path, bare, zfs={"pools": ["tank"]})
    res = dv("--json", "firstboot", "run", env={"PATH": str(tmp_path / "nothing")})
    assert res.code == 1 and res.json["failed"] == "04-zfs", res
    assert _modules(res)["04-zfs"]["result"].startswith("zpool is not installed")
    # with a zpool but no kernel module (this kernel has no ZFS): the module is named
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "zpool").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "zpool").chmod(0o755)
    if Path("/sys/module/zfs").exists():
        pytest.skip("this kernel has ZFS loaded: the missing-module case cannot be shown")
    res = dv("--json", "firstboot", "run", env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert res.code == 1 and "the zfs kernel module is not loaded" in \
        _modules(res)["04-zfs"]["result"], res
    _config(dv_state, tmp_path, bare, zfs={"pools": ["tank; rm -rf /"]})
    res = dv("--json", "firstboot", "run")  # a bad name fails the module before any zpool call
    assert res.code == 1 and "'tank; rm -rf /' is not a pool name" in \
        _modules(res)["04-zfs"]["result"], res


def test_docker_settings_are_merged_into_daemon_json(dv: Runner, dv_state: StateDir,
                                                     bare: Path, tmp_path: Path) -> None:
    daemon = bare / "etc/docker/daemon.json"
    daemon.parent.mkdir(parents=True)
    daemon.write_text("{broken")
    _config(dv_state, tmp_path, bare,
            docker={"daemon": {"log-driver": "journald", "live-restore": True}})
    res = dv("--json", "firstboot", "run")
    assert res.code == 1 and res.json["failed"] == "05-docker", res
    assert "cannot be read as JSON" in _modules(res)["05-docker"]["result"]
    assert daemon.read_text() == "{broken"  # left as it was

    daemon.write_text('{"storage-driver": "overlay2", "log-driver": "json-file"}')
    res = dv("--json", "firstboot", "run")
    assert res.code == 0, res
    assert _modules(res)["05-docker"]["result"].endswith("set live-restore, log-driver")
    assert json.loads(daemon.read_text()) == {"storage-driver": "overlay2",
                                              "log-driver": "journald", "live-restore": True}
    assert daemon.stat().st_mode & 0o777 == 0o644
    again = dv("--json", "firstboot", "run", "--force")
    assert again.code == 0 and "already has these settings" in \
        _modules(again)["05-docker"]["result"], again
