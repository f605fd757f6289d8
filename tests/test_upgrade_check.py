"""`debvisor upgrade check [--diff]` against a node root with a real apt and dpkg status: a
local repository (Packages index, `file:` source) at newer versions, a held package, an
upgrade that removes a package and installs a new kernel beside the running one."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from debvisor_core.testing import Runner, StateDir
from debvisor_core.upgrade import clock_state, parse_simulation

INSTALLED = [
    {"Package": "debvisor-test-agent", "Version": "1.0"},
    {"Package": "debvisor-legacy", "Version": "1.0"},
    {"Package": "pinned-tool", "Version": "1.0", "Status": "hold ok installed"},
    {"Package": "linux-image-6.1.0-90-debvisor", "Version": "6.1.90-1"},
    {"Package": "linux-image-debvisor-amd64", "Version": "1.0",
     "Depends": "linux-image-6.1.0-90-debvisor"},
]
AVAILABLE = [
    {"Package": "debvisor-test-agent", "Version": "1.2", "Breaks": "debvisor-legacy",
     "Conflicts": "debvisor-legacy"},
    {"Package": "debvisor-legacy", "Version": "1.0"},
    {"Package": "pinned-tool", "Version": "1.1"},
    {"Package": "linux-image-6.1.0-90-debvisor", "Version": "6.1.90-1"},
    {"Package": "linux-image-6.1.0-91-debvisor", "Version": "6.1.91-1"},
    {"Package": "linux-image-debvisor-amd64", "Version": "1.1",
     "Depends": "linux-image-6.1.0-91-debvisor"},
]


def _stanza(fields: dict[str, str]) -> str:
    return "".join(f"{k}: {v}\n" for k, v in fields.items()) + "\n"


def make_root(root: Path, *, sources: bool = True) -> Path:
    """A node's root as apt and dpkg see it, and a flat repository beside it."""
    for d in ("etc/apt/sources.list.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial",
              "var/cache/apt/archives/partial", "var/lib/dpkg", "boot", "repo"):
        (root / d).mkdir(parents=True, exist_ok=True)
    common = {"Architecture": "all", "Maintainer": "DebVisor tests <t@example.org>",
              "Description": "test package"}
    (root / "var/lib/dpkg/status").write_text("".join(
        _stanza({"Package": p["Package"], "Status": p.get("Status", "install ok installed"),
                 "Version": p["Version"], **common,
                 **({"Depends": p["Depends"]} if "Depends" in p else {})})
        for p in INSTALLED))
    index = ""
    for p in AVAILABLE:
        name = f"{p['Package']}_{p['Version']}_all.deb"
        blob = f"not a real package: {name}".encode()
        (root / "repo" / name).write_bytes(blob)
        index += _stanza({**p, **common, "Filename": f"./{name}", "Size": str(len(blob)),
                          "SHA256": hashlib.sha256(blob).hexdigest()})
    (root / "repo/Packages").write_text(index)
    if sources:
        (root / "etc/apt/sources.list").write_text(f"deb [trusted=yes] file:{root / 'repo'} ./\n")
        (root / "etc/apt/sources.list.d/debian.sources").write_text(
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
            "Components: main\nEnabled: no\n")
    (root / "boot/vmlinuz-6.1.0-90-debvisor").write_text("kernel")
    (root / "osrelease").write_text("6.1.0-90-debvisor\n")
    if sources:
        subprocess.run(["apt-get", "-qq", "-o", f"Dir={root}", "-o",
                        f"Dir::State::status={root}/var/lib/dpkg/status", "update"], check=True,
                       timeout=60)
    return root


@pytest.fixture
def node(tmp_path: Path, dv_state: StateDir) -> Path:
    root = make_root(tmp_path / "node")
    dv_state.config({"upgrade": {"root": str(root),
                                 "running_kernel_file": str(root / "osrelease")}})
    return root


def _checks(res: Any) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in res.json["checks"]}


def test_check_and_diff_report_what_the_upgrade_would_do(dv: Runner, node: Path) -> None:
    before = (node / "var/lib/dpkg/status").read_text()
    res = dv("--json", "upgrade", "check", "--diff")
    assert res.code == 0, res
    checks = _checks(res)
    assert checks["core.apt-sources"]["status"] == "pass"
    assert checks["core.held-packages"]["status"] == "warn"
    assert checks["core.held-packages"]["details"]["held"] == ["pinned-tool"]
    assert checks["core.apt-upgrade"]["status"] == "warn"  # it removes a package
    assert "removes debvisor-legacy" in checks["core.apt-upgrade"]["summary"]
    assert checks["core.kernel"]["status"] == "pass"
    assert checks["core.zfs-dkms"]["status"] == "skip"
    diff = res.json["diff"]
    assert [(p["name"], p["from"], p["to"]) for p in diff["upgrade"]] == [
        ("debvisor-test-agent", "1.0", "1.2"), ("linux-image-debvisor-amd64", "1.0", "1.1")]
    assert [p["name"] for p in diff["install"]] == ["linux-image-6.1.0-91-debvisor"]
    assert [p["name"] for p in diff["remove"]] == ["debvisor-legacy"]
    assert diff["kept_back"] == ["pinned-tool"] and diff["reboot_expected"] is True
    counts = res.json["counts"]
    assert counts["fail"] == 0 and sum(counts.values()) == len(res.json["checks"])
    assert (node / "var/lib/dpkg/status").read_text() == before  # nothing changed
    human = dv("upgrade", "check", "--diff")
    assert "upgrade  debvisor-test-agent 1.0 -> 1.2" in human.stdout
    assert "remove   debvisor-legacy 1.0" in human.stdout
    assert re.search(r"TOTAL \d+: \d+ passed, \d+ warnings, 0 failures, \d+ skipped", human.stdout)


def test_a_pending_reboot_is_a_warning(dv: Runner, node: Path) -> None:
    (node / "boot/vmlinuz-6.1.0-91-debvisor").write_text("kernel")
    res = dv("--json", "upgrade", "check", "--only", "core.kernel")
    assert res.code == 0
    check = _checks(res)["core.kernel"]
    assert check["status"] == "warn" and "6.1.0-91-debvisor is installed but 6.1.0-90" in \
        check["summary"]


def test_a_failed_check_exits_1_and_says_what_to_do(dv: Runner, tmp_path: Path,
                                                    dv_state: StateDir) -> None:
    root = make_root(tmp_path / "bare", sources=False)
    dv_state.config({"upgrade": {"root": str(root),
                                 "running_kernel_file": str(root / "osrelease")}})
    res = dv("upgrade", "check", "--only", "core.apt-sources")
    assert res.code == 1, res
    assert "FAIL    core.apt-sources  no apt source in" in res.stdout
    assert "1 check(s) failed" in res.stderr


def test_the_clock_state_matches_busybox_adjtimex() -> None:
    out = subprocess.run(["busybox", "adjtimex"], capture_output=True, text=True,
                         timeout=10).stdout
    status = int(re.search(r"status:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    ret = int(re.search(r"return value:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    st = clock_state()
    assert (st["status"], st["state"]) == (status, ret)
    assert st["synchronized"] == (ret != 5 and not status & 0x40)


def test_the_simulation_parser_reads_real_mirror_lines() -> None:
    text = """Reading package lists...
The following packages have been kept back:
  held-one held-two
The following packages will be upgraded:
  perl-base
Inst perl-base [5.36.0-7+deb12u3] (5.36.0-7+deb12u4 Debian-Security:12/oldstable-security [amd64])
Inst linux-image-6.1.0-91-debvisor (6.1.91-1 probe [all])
Remv debvisor-legacy [1.0]
Conf perl-base (5.36.0-7+deb12u4 Debian-Security:12/oldstable-security [amd64])
1 upgraded, 1 newly installed, 1 to remove and 2 not upgraded.
"""
    sim = parse_simulation(text)
    assert sim["upgrade"] == [{"name": "perl-base", "from": "5.36.0-7+deb12u3",
                               "to": "5.36.0-7+deb12u4",
                               "origin": "Debian-Security:12/oldstable-security"}]
    assert sim["install"][0]["name"] == "linux-image-6.1.0-91-debvisor"
    assert sim["remove"] == [{"name": "debvisor-legacy", "version": "1.0"}]
    assert sim["kept_back"] == ["held-one", "held-two"]
    assert sim["summary"] == {"upgraded": 1, "installed": 1, "removed": 1, "not_upgraded": 2}
