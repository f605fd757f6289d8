"""Config mistakes and unsafe keyrings: one clear sentence, exit 2, before any connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from debvisor_core.testing import Runner, StateDir

pytest.importorskip("rados", reason="python3-rados is not linked into this venv")


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    conf, keyring = tmp_path / "ceph.conf", tmp_path / "keyring"
    conf.write_text("[global]\nmon host = 127.0.0.1:1\n")
    keyring.write_text("[client.admin]\nkey = AQ==\n")
    return conf, keyring


def test_keyring_readable_by_others_is_refused(dv: Runner, dv_state: StateDir,
                                                files: tuple[Path, Path]) -> None:
    conf, keyring = files
    keyring.chmod(0o644)
    dv_state.config({"ceph": {"conf": str(conf), "keyring": str(keyring)}})
    res = dv("ceph", "status")
    assert res.code == 2
    assert res.stderr.splitlines() == [
        f"[ERROR] Ceph keyring {keyring} is readable by others (mode 0644); run: chmod 600 {keyring}"]


@pytest.mark.parametrize("value", ["abc", 0, -1, True])
def test_bad_timeout_is_one_sentence(dv: Runner, dv_state: StateDir, files: tuple[Path, Path],
                                     value: object) -> None:
    conf, keyring = files
    keyring.chmod(0o600)
    dv_state.config({"ceph": {"conf": str(conf), "keyring": str(keyring), "timeout": value}})
    res = dv("ceph", "status")
    assert res.code == 2 and len(res.stderr.splitlines()) == 1
    assert "[ceph] timeout must be a whole number of seconds" in res.stderr
