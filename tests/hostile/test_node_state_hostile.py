"""Hostile state and input for this round's node commands: planted files where locks live,
secrets written into the config, a node root whose dpkg status and /boot are garbage, a
user store others can read. Each answers in one sentence (or reports), never hangs, never
follows a planted link, never echoes a secret."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from debvisor_core.testing import Runner, StateDir, one_error

SECRET = "correct horse battery staple 42"


def test_lock_status_neither_hangs_on_a_fifo_nor_follows_a_link(dv: Runner,
                                                               dv_state: StateDir) -> None:
    locks = dv_state.path / "locks"
    locks.mkdir(mode=0o700)
    os.mkfifo(locks / "planted.lock")  # opening it for reading would wait for a writer
    (locks / "link.lock").symlink_to("/etc/passwd")
    (locks / "real.lock").write_text("")
    res = dv("--json", "cluster", "lock", "status", timeout=20)
    assert res.code == 0, res
    assert [x["name"] for x in res.json["local"]] == ["real"]


def test_a_secret_written_into_the_config_is_refused_unread(dv: Runner, dv_state: StateDir,
                                                            tmp_path: Path) -> None:
    """`[firstboot.modules]` with the secret inline, or in a file others may read: the
    module fails in one sentence naming the cause, the secret is in no output and nothing
    was created."""
    loose = tmp_path / "pw"
    loose.write_text(SECRET)
    loose.chmod(0o644)
    for params, words in (({"password": SECRET}, "password is a secret: give password_file"),
                          ({"password_file": str(loose)}, "readable by others")):
        dv_state.config({"firstboot": {"root": str(tmp_path), "skip": ["01-network"],
                                       "report": str(tmp_path / "report.json"),
                                       "modules": {"05-user": {"action": "rpcd.user.add",
                                                               "params": {"name": "eve",
                                                                          "role": ["viewer"],
                                                                          **params}}}}})
        res = dv("--json", "firstboot", "run")
        assert res.code == 1, res
        (mod,) = [m for m in res.json["modules"] if m["name"] == "05-user"]
        assert mod["status"] == "failed" and words in mod["result"].lower(), mod
        assert SECRET not in res.stdout + res.stderr + (tmp_path / "report.json").read_text()
        assert not (dv_state.path / "rpcd" / "users.json").exists()


def test_upgrade_check_reads_a_garbage_node_root_without_a_traceback(
        dv: Runner, dv_state: StateDir, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_bytes(
        b"Package: ok-pkg\nStatus: hold ok installed\nVersion: 1\n\n"
        b"Package: \xff\xfe\nStatus: install\n\nStatus: hold ok installed\n\n\x00\x00garbage")
    (root / "boot").mkdir()
    (root / "boot/vmlinuz-loop").symlink_to(root / "boot/vmlinuz-loop")
    (root / "boot/vmlinuz-6.1.0-9").mkdir()
    (root / "etc/apt").mkdir(parents=True)
    (root / "etc/apt/sources.list").write_bytes(b"deb [trusted=yes \xff\n# broken\n")
    dv_state.config({"upgrade": {"root": str(root),
                                 "running_kernel_file": str(tmp_path / "absent")}})
    res = dv("--json", "upgrade", "check", "--only", "core.")
    assert res.code in (0, 1) and "Traceback" not in res.stderr, res
    checks = {c["name"]: c for c in res.json["checks"]}
    assert checks["core.held-packages"]["details"]["held"] == ["ok-pkg"]
    assert not any(c["summary"].startswith("check failed:") for c in checks.values()
                   if c["name"] != "core.apt-upgrade"), checks


def test_a_user_store_others_can_read_is_refused(dv: Runner, dv_state: StateDir) -> None:
    res = dv("rpcd", "user", "add", "eve", "--role", "viewer", "--password-file", "-",
             input=SECRET + "\n")
    assert res.code == 0, res
    store = dv_state.path / "rpcd" / "users.json"
    assert SECRET not in store.read_text()
    store.chmod(0o644)
    res = dv("rpcd", "user", "list")
    assert res.code == 2 and "users.json" in one_error(res.stderr), res
    subprocess.run(["chmod", "600", str(store)], check=True)
    assert dv("rpcd", "user", "list").code == 0


def test_a_garbage_reboot_record_is_neither_trusted_nor_a_traceback(
        dv: Runner, dv_state: StateDir, tmp_path: Path) -> None:
    """`STATE/upgrade/last-reboot.json` (what `upgrade reboot` keeps for the rolling
    upgrade's services check) holding the wrong shapes: `upgrade status` says no reboot
    record, and the next `upgrade reboot` replaces it."""
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("b1\n")
    dv_state.config({"upgrade": {"root": str(tmp_path), "boot_id_file": str(boot_id),
                                 "running_kernel_file": str(tmp_path / "absent"),
                                 "reboot_command": ["true"]}})
    record = dv_state.path / "upgrade" / "last-reboot.json"
    record.parent.mkdir(mode=0o700)
    for planted in ('{"last": "x", "operations": [["op:node1", {"services": []}]]}',
                    '{"operations": {"a:n": {"at": "soon"}, "op:node1": [1]}}'):
        record.write_text(planted)
        for args in ((), ("--for-operation", "op:node1")):
            res = dv("--json", "upgrade", "status", *args)
            assert res.code == 0 and "Traceback" not in res.stderr, res
            assert res.json["last_reboot"] is None
        res = dv("--json", "--yes", "upgrade", "reboot", "--for-operation", "a:n")
        assert res.code == 0 and "Traceback" not in res.stderr, res
    res = dv("--json", "--yes", "upgrade", "reboot", "--for-operation", "op:node1")
    assert res.code == 0 and "Traceback" not in res.stderr, res
    again = dv("--json", "upgrade", "status", "--for-operation", "op:node1")
    assert again.json["last_reboot"]["boot_id"] == "b1"
