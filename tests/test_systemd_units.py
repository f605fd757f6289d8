"""Every unit in systemd/ passes `systemd-analyze verify` and scores an exposure of at most
2.0 in `systemd-analyze security --offline=yes` (both work without systemd as PID 1). A unit
whose work needs more (first-boot provisioning runs kubeadm and ceph-volume as root) says
why in its comments and names its own limit in an ``# exposure-limit: X`` line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "systemd").glob("*.service"))
MAX_EXPOSURE = 2.0


def test_there_are_units() -> None:
    assert {"debvisor-rpcd.service", "debvisor-firstboot.service"} <= {u.name for u in UNITS}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_and_is_sandboxed(unit: Path, tmp_path: Path) -> None:
    exe = shutil.which("debvisor") or str(Path(sys.executable).with_name("debvisor"))
    assert Path(exe).exists(), "debvisor is not installed next to this interpreter"
    # the unit as installed, pointing at this installation's executable
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/usr/bin/debvisor", exe))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    res = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(copy)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
    assert m, res.stdout[-500:] + res.stderr
    own = re.search(r"^# exposure-limit: ([0-9.]+)$", unit.read_text(), re.M)
    assert float(m[1]) <= (float(own[1]) if own else MAX_EXPOSURE), res.stdout
