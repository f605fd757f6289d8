"""Every unit in systemd/ passes `systemd-analyze verify`, and every service scores an
exposure of at most 2.0 in `systemd-analyze security --offline=yes` (both work without
systemd as PID 1). A service whose work needs more (first-boot provisioning runs kubeadm and
ceph-volume as root; rpcd's executor runs upgrades) says why in its comments and names its
own limit in an ``# exposure-limit: X`` line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "systemd").glob("*.service"))
SOCKETS = sorted((ROOT / "systemd").glob("*.socket"))
MAX_EXPOSURE = 2.0


def test_there_are_units() -> None:
    assert {"debvisor-rpcd.service", "debvisor-firstboot.service"} <= {u.name for u in UNITS}
    # a socket unit starts a service that is here, and the rpcd unit asks for its executor's
    for sock in SOCKETS:
        service = re.search(r"^Service=(\S+)$", sock.read_text(), re.M)
        assert service and (ROOT / "systemd" / service[1]).exists(), sock.name
    rpcd = (ROOT / "systemd" / "debvisor-rpcd.service").read_text()
    listen = re.search(r"^ListenStream=(\S+)$",
                       (ROOT / "systemd" / "debvisor-rpcd-exec.socket").read_text(), re.M)
    assert listen and f"--exec-socket {listen[1]}" in rpcd


@pytest.mark.parametrize("unit", SOCKETS, ids=lambda u: u.name)
def test_socket_unit_verifies(unit: Path, tmp_path: Path) -> None:
    exe = shutil.which("debvisor") or str(Path(sys.executable).with_name("debvisor"))
    for u in (*UNITS, *SOCKETS):
        (tmp_path / u.name).write_text(u.read_text().replace("/usr/bin/debvisor", exe))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / unit.name)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_and_is_sandboxed(unit: Path, tmp_path: Path) -> None:
    exe = shutil.which("debvisor") or str(Path(sys.executable).with_name("debvisor"))
    assert Path(exe).exists(), "debvisor is not installed next to this interpreter"
    # the unit as installed, pointing at this installation's executable
    for u in (*UNITS, *SOCKETS):  # the units it names are beside it, as when installed
        (tmp_path / u.name).write_text(u.read_text().replace("/usr/bin/debvisor", exe))
    copy = tmp_path / unit.name
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    res = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(copy)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
    assert m, res.stdout[-500:] + res.stderr
    own = re.search(r"^# exposure-limit: ([0-9.]+)$", unit.read_text(), re.M)
    assert float(m[1]) <= (float(own[1]) if own else MAX_EXPOSURE), res.stdout
