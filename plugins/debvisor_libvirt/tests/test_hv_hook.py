"""`hv hook install` and libvirt's QEMU hook (`hv hook-event`).

Against the lab's real libvirtd (node2, whose /etc/libvirt is the lab's private copy):
starts are audited, maintenance refuses a plain `virsh start` and a live migration into
the node, a foreign hook is kept, chained and restored byte for byte, and the undo of a
maintenance drain still migrates the VMs back through the hook. Without the lab: the
hook module's decisions (fail closed, the watchdog, allowances) and its latency.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debvisor_libvirt import lab

NODE = "node2"
LATENCY_BOUND_S = 1.0
"""Every hook call must answer within this (measured: ~40 ms median, see test_latency)."""
XML = b"""<domain type='qemu'><name>vm1</name><uuid>0b5e1c52-3c39-4a5e-9b43-1b8a0c1d2e3f</uuid>
<metadata><debvisor:vm xmlns:debvisor="https://debvisor.org/xmlns/hv/1" registered="yes">
<debvisor:owner>ops</debvisor:owner><debvisor:addresses><debvisor:address>10.0.0.5
</debvisor:address></debvisor:addresses></debvisor:vm></metadata></domain>"""
LIBVIRT_ENV = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root"}
"""The environment libvirt gives a hook (nothing else survives)."""


def _audit(state: Path) -> list[dict[str, Any]]:
    path = state / "log" / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines()]


def _hook_events(state: Path, vm: str) -> list[tuple[str, str]]:
    """(result, libvirt event) of the hook's audit records about ``vm``."""
    return [(e["result"], e["details"]["hook"]) for e in _audit(state)
            if e.get("action") == "hook-event" and e["details"].get("vm") == vm]


# -- the hook module alone (no lab) ----------------------------------------------------------
def _event(state: Path, *args: str, xml: bytes = XML,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**LIBVIRT_ENV, "DEBVISOR_STATE_DIR": str(state),
           "DEBVISOR_CONFIG": str(state / "debvisor.toml")}
    res = subprocess.run([sys.executable, "-I", "-m", "debvisor_libvirt.hookevent", "--", *args],
                         input=xml.decode(), capture_output=True, text=True, env=env,
                         timeout=timeout)
    assert res.stdout == ""  # libvirt reads a migrating domain's XML from the hook's stdout
    return res


def _maintenance(state: Path, reason: str = "disk swap") -> None:
    (state / "maintenance.json").write_text(json.dumps(
        {"enabled": True, "reason": reason, "since": "2026-01-01T00:00:00Z", "by": "root"}))


def test_events_audited_and_maintenance_refuses(dv_state: Any) -> None:
    state = dv_state.path
    dv_state.config({"hv": {"node": "hv7"}})
    assert _event(state, "vm1", "prepare", "begin", "-").returncode == 0
    assert _event(state, "vm1", "started", "begin", "-").returncode == 0
    _maintenance(state)
    res = _event(state, "vm1", "prepare", "begin", "-")
    assert res.returncode == 1
    assert ("DebVisor refuses to start VM vm1: node hv7 is in maintenance mode since "
            "2026-01-01T00:00:00Z (by root): disk swap") in res.stderr
    mig = _event(state, "vm1", "migrate", "begin", "-")
    assert mig.returncode == 1 and "accept the incoming migration of VM vm1" in mig.stderr
    # everything libvirt does not let a hook abort passes; the stop libvirt reports after
    # a refused start is no stop (not audited), a stop after a start is
    for args in (("stopped", "end", "-"), ("release", "end", "-"), ("reconnect", "begin", "-"),
                 ("started", "begin", "-"), ("stopped", "end", "-")):
        assert _event(state, "vm1", *args).returncode == 0, args
    assert _hook_events(state, "vm1") == [
        ("started", "started begin"), ("refused", "prepare begin"),
        ("refused", "migrate begin"), ("started", "started begin"), ("stopped", "stopped end")]
    first = _audit(state)[0]
    assert first["details"]["node"] == "hv7" and first["details"]["uuid"].startswith("0b5e1c52")
    assert first["details"]["inventory"]["owner"] == "ops"
    assert first["details"]["inventory"]["addresses"] == ["10.0.0.5"]
    assert first["user"]["uid"] == os.getuid() and first["duration_ms"] >= 0
    ok = subprocess.run([sys.executable, "-m", "debvisor_core", "audit", "verify"],
                        capture_output=True, text=True, env={**os.environ})
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("damage", ["not json", "a directory", "a list"])
def test_unreadable_maintenance_state_fails_closed(dv_state: Any, damage: str) -> None:
    path = dv_state.path / "maintenance.json"
    if damage == "not json":
        path.write_text('{"enabled": tr')
    elif damage == "a directory":
        path.mkdir()
    else:
        path.write_text("[]")
    for op in ("prepare", "migrate"):
        res = _event(dv_state.path, "vm1", op, "begin", "-")
        assert res.returncode == 1, res
        assert "maintenance state cannot be read" in res.stderr
        assert "fails closed" in res.stderr
    # not guarded: the state is not even read
    assert _event(dv_state.path, "vm1", "reconnect", "begin", "-").returncode == 0
    assert _event(dv_state.path, "vm1", "started", "begin", "-").returncode == 0


def test_a_stuck_read_is_cut_by_the_watchdog(dv_state: Any) -> None:
    """A maintenance state that never answers (a FIFO nobody writes: a hung file system)
    is refused after the watchdog's 5 s, not left hanging inside libvirtd's call."""
    os.mkfifo(dv_state.path / "maintenance.json")
    t0 = time.monotonic()
    res = _event(dv_state.path, "vm1", "prepare", "begin", "-", timeout=20)
    took = time.monotonic() - t0
    assert res.returncode == 1 and "could not decide" in res.stderr and "watchdog" in res.stderr
    assert 4.5 < took < 10, took


def test_audit_failure_decides_nothing(dv_state: Any) -> None:
    (dv_state.path / "log").write_text("not a directory")  # the audit log cannot be written
    res = _event(dv_state.path, "vm1", "started", "begin", "-")
    assert res.returncode == 0 and "DebVisor hook (started begin of vm1)" in res.stderr
    _maintenance(dv_state.path)
    res = _event(dv_state.path, "vm1", "prepare", "begin", "-")
    assert res.returncode == 1 and "in maintenance mode" in res.stderr


def test_allowance_lets_one_vm_in_until_it_expires(dv_state: Any) -> None:
    state = dv_state.path
    _maintenance(state)
    allow = state / "plugins" / "hv" / "hook-allow"
    allow.mkdir(parents=True)
    (allow / "vm1.json").write_text(json.dumps({"why": "drain undo", "until": time.time() + 60}))
    assert _event(state, "vm1", "migrate", "begin", "-").returncode == 0
    assert _event(state, "vm1", "prepare", "begin", "-").returncode == 0
    assert _event(state, "vm2", "prepare", "begin", "-").returncode == 1
    got = [e for e in _audit(state) if e["details"].get("vm") == "vm1"]
    assert [(e["result"], e["details"].get("allowed_by")) for e in got] == [
        ("incoming-migration", "drain undo"), ("allowed-in-maintenance", "drain undo")]
    (allow / "vm1.json").write_text(json.dumps({"why": "drain undo", "until": time.time() - 1}))
    assert _event(state, "vm1", "prepare", "begin", "-").returncode == 1


def test_cli_hook_event_is_the_same_decision(dv: Any, dv_state: Any) -> None:
    _maintenance(dv_state.path)
    res = dv("hv", "hook-event", "vm1", "prepare", "begin", "-", input=XML.decode())
    assert res.code == 3 and res.stdout == ""
    assert "refuses to start VM vm1" in res.stderr and "maintenance mode" in res.stderr
    ok = dv("hv", "hook-event", "vm1", "started", "begin", input=XML.decode())
    assert ok.code == 0 and ok.stdout == "", ok
    assert _hook_events(dv_state.path, "vm1") == [("refused", "prepare begin"),
                                                   ("started", "started begin")]


def _measure(argv: list[str], xml: bytes, env: dict[str, str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, input=xml, capture_output=True, env=env, check=False)
        out.append(time.perf_counter() - t0)
    return out


def test_latency(dv: Any, dv_state: Any, tmp_path: Path) -> None:
    """The installed script, called as libvirt calls it, answers within LATENCY_BOUND_S:
    a start that is let through, an audited start, a refusal and an event DebVisor does
    not handle (answered by sh alone); and how much the CLI would add."""
    hooks = tmp_path / "hooks"
    dv_state.config({"hv": {"hooks_dir": str(hooks), "node": "hv7"}})
    assert dv("hv", "hook", "install").code == 0
    script = str(hooks / "qemu")
    n = 15
    report = {
        "prepare (allowed)": _measure([script, "vm1", "prepare", "begin", "-"], XML,
                                      LIBVIRT_ENV, n),
        "started (audited)": _measure([script, "vm1", "started", "begin", "-"], XML,
                                      LIBVIRT_ENV, n),
        "start begin (sh only)": _measure([script, "vm1", "start", "begin", "-"], XML,
                                          LIBVIRT_ENV, n),
    }
    _maintenance(dv_state.path)
    report["prepare (refused, audited)"] = _measure(
        [script, "vm1", "prepare", "begin", "-"], XML, LIBVIRT_ENV, n)
    report["CLI hv hook-event (refused)"] = _measure(
        [sys.executable, "-m", "debvisor_core", "hv", "hook-event", "vm1", "prepare", "begin"],
        XML, {**os.environ}, 5)
    lines = [f"{k}: median {statistics.median(v) * 1000:.0f} ms, max {max(v) * 1000:.0f} ms"
             for k, v in report.items()]
    print("\nhook latency:\n  " + "\n  ".join(lines))
    for k, v in report.items():
        if not k.startswith("CLI"):
            assert max(v) < LATENCY_BOUND_S, lines


def test_install_dry_run_and_a_changed_script_is_not_clobbered(dv: Any, dv_state: Any,
                                                               tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    dv_state.config({"hv": {"hooks_dir": str(hooks)}})
    dry = dv("hv", "hook", "install", "--dry-run")
    assert dry.code == 0 and f"install DebVisor's libvirt QEMU hook {hooks}/qemu" in dry.stdout
    assert not hooks.exists()
    assert dv("hv", "hook", "install").code == 0
    again = dv("hv", "hook", "install")
    assert again.code == 0 and "is installed and up to date" in again.stdout
    (hooks / "qemu").write_text("#!/bin/sh\n# an operator's edit\n")
    rb = dv("hv", "hook", "install", "--rollback", "--yes")
    assert rb.code == 5, rb
    assert "changed since DebVisor installed its hook; not touching it" in rb.stderr
    assert (hooks / "qemu").read_text() == "#!/bin/sh\n# an operator's edit\n"


def test_join_installs_the_hook_once_and_rollback_removes_it(dv: Any, dv_state: Any,
                                                            tmp_path: Path) -> None:
    """`join --mode hv` with [hv.join]: the QEMU hook is this node's hypervisor part."""
    hooks = tmp_path / "hooks"
    dv_state.config({"hv": {"hooks_dir": str(hooks), "join": {}}})
    res = dv("--json", "join", "--mode", "hv", "--yes")
    assert res.code == 0 and res.json["status"] == "succeeded", res
    assert res.json["title"] == "join this node: hv"
    assert "hv hook-event" in (hooks / "qemu").read_text()
    again = dv("join", "--mode", "hv", "--yes")
    assert again.code == 0 and "nothing to join" in again.stdout + again.stderr, again
    back = dv("join", "--rollback", "--yes")
    assert back.code == 0 and not (hooks / "qemu").exists(), back
    dv_state.config({"hv": {"hooks_dir": str(hooks)}})  # no [hv.join]: nothing of hv's
    assert "nothing to join" in (r := dv("join", "--mode", "hv", "--yes")).stdout + r.stderr


# -- against the lab's libvirtd --------------------------------------------------------------
@pytest.fixture(scope="module")
def hooks_seen(hv_lab: Any) -> Path:
    """node2's libvirtd has seen a qemu hook: it looks for hooks only when it starts, so it
    is restarted once with a placeholder there (its guests keep running)."""
    d = lab.hooks_dir(hv_lab.dir, NODE)
    d.mkdir(parents=True, exist_ok=True)
    placeholder = d / "qemu"
    assert not placeholder.exists(), f"{placeholder} left behind"
    placeholder.write_text("#!/bin/sh\nexit 0\n")
    placeholder.chmod(0o755)
    try:
        took = lab.restart_libvirtd(hv_lab.dir, NODE)
    finally:
        placeholder.unlink()
    print(f"\nrestarted {NODE}'s libvirtd in {took:.2f}s")
    return d


@pytest.fixture
def hooked(hv_env: Any, dv_state: Any, hooks_seen: Path) -> Iterator[Path]:
    """Config: this host is node2, its hooks in node2's private /etc/libvirt/hooks; no hook
    is left behind for other tests."""
    dv_state.config({"hv": {"node": NODE, "hooks_dir": str(hooks_seen)}},
                    base=hv_env.config_path)
    yield hooks_seen
    (dv_state.path / "maintenance.json").unlink(missing_ok=True)
    for name in ("qemu", "qemu.debvisor-orig"):
        (hooks_seen / name).unlink(missing_ok=True)


def _virsh(hv_env: Any, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", hv_env.uri(node), *args], capture_output=True,
                          text=True, timeout=120)


def _migrate(hv_env: Any, vm: str, source: str, target: str) -> subprocess.CompletedProcess[str]:
    """A live migration with plain virsh (no DebVisor)."""
    addr = hv_env.config["hv"]["nodes"][target]["migration_address"]
    return _virsh(hv_env, source, "migrate", "--live", "--persistent", "--undefinesource", vm,
                  hv_env.uri(target), f"tcp://{addr}")


def _beating(log: Path, timeout: float = 20) -> None:
    n = max(lab.console_heartbeats(log), default=0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if max(lab.console_heartbeats(log), default=0) > n + 1:
            return
        time.sleep(0.2)
    raise AssertionError(f"the guest printed no new heartbeat after #{n}")


@pytest.mark.lab
@pytest.mark.root
def test_hook_audits_starts_and_holds_maintenance(dv: Any, dv_state: Any, hv_env: Any,
                                                  hooked: Path, guest_factory: Any,
                                                  unique: str) -> None:
    res = dv("hv", "hook", "install")
    assert res.code == 0, res
    script = hooked / "qemu"
    st = script.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o755, 0, 0)
    state = dv_state.path
    here, there = f"{unique}h", f"{unique}t"
    guest_factory(here, NODE)
    there_log = guest_factory(there, "node1")
    assert _hook_events(state, here) == [("started", "started begin")]
    assert _hook_events(state, there) == []  # node1 has no hook
    uuid = hv_env.conn(NODE).lookupByName(here).UUIDString()
    rec = next(e for e in _audit(state) if e["details"].get("vm") == here)
    assert rec["details"]["uuid"] == uuid and rec["details"]["node"] == NODE

    assert dv("maintenance", "enable", "--reason", "hook test").code == 0
    assert _virsh(hv_env, NODE, "destroy", here).returncode == 0
    start = _virsh(hv_env, NODE, "start", here)
    assert start.returncode != 0
    assert (f"DebVisor refuses to start VM {here}: node {NODE} is in maintenance mode"
            in start.stderr and "hook test" in start.stderr), start.stderr
    assert hv_env.where(here) == []
    mig = _migrate(hv_env, there, "node1", NODE)
    assert mig.returncode != 0
    assert f"accept the incoming migration of VM {there}" in mig.stderr, mig.stderr
    assert "maintenance mode" in mig.stderr
    assert hv_env.where(there) == ["node1"]  # still on the source, still running
    _beating(there_log)
    assert _hook_events(state, here)[1:] == [("stopped", "stopped end"),
                                             ("refused", "prepare begin")]
    assert _hook_events(state, there) == [("refused", "migrate begin")]

    assert dv("maintenance", "disable").code == 0
    t0 = time.monotonic()
    again = _virsh(hv_env, NODE, "start", here)
    with_hook = time.monotonic() - t0
    assert again.returncode == 0, again.stderr
    assert _migrate(hv_env, there, "node1", NODE).returncode == 0
    assert hv_env.where(there) == [NODE]
    _beating(there_log)
    assert _hook_events(state, there)[1:] == [("incoming-migration", "migrate begin"),
                                              ("started", "started begin")]
    arrived = [e for e in _audit(state) if e["details"].get("vm") == there][-1]
    assert arrived["details"]["incoming_migration"] is True

    # the undo removes the script, and libvirtd (which had seen it) carries on without it
    rb = dv("hv", "hook", "install", "--rollback", "--yes")
    assert rb.code == 0, rb
    assert not script.exists() and sorted(os.listdir(hooked)) == []
    before = len(_audit(state))
    assert _virsh(hv_env, NODE, "destroy", here).returncode == 0
    t0 = time.monotonic()
    assert _virsh(hv_env, NODE, "start", here).returncode == 0
    print(f"\nvirsh start: {with_hook:.2f}s with the hook, {time.monotonic() - t0:.2f}s "
          "without")
    assert [e for e in _audit(state)[before:] if e.get("action") == "hook-event"] == []
    audit = subprocess.run([sys.executable, "-m", "debvisor_core", "audit", "verify"],
                           capture_output=True, text=True)
    assert audit.returncode == 0, audit.stderr


@pytest.mark.lab
@pytest.mark.root
def test_foreign_hook_is_kept_chained_and_restored_byte_for_byte(
        dv: Any, dv_state: Any, hv_env: Any, hooked: Path, guest_factory: Any, unique: str,
        tmp_path: Path) -> None:
    calls = tmp_path / "foreign-calls"
    content = (b"#!/bin/sh\n# somebody else's hook\n"
               b"echo \"$1 $2 $3\" >> " + str(calls).encode() + b"\ncat >/dev/null\nexit 0\n")
    foreign = hooked / "qemu"
    foreign.write_bytes(content)
    foreign.chmod(0o750)
    os.utime(foreign, (1_600_000_000, 1_600_000_000))
    before = os.stat(foreign)
    res = dv("hv", "hook", "install")
    assert res.code == 0, res
    backup = hooked / "qemu.debvisor-orig"
    assert os.stat(backup).st_ino == before.st_ino  # kept: the very same file
    assert f"--chain {backup}" in foreign.read_text()
    vm = f"{unique}f"
    guest_factory(vm, NODE)
    assert _hook_events(dv_state.path, vm) == [("started", "started begin")]
    assert calls.read_text().splitlines() == [f"{vm} prepare begin", f"{vm} start begin",
                                              f"{vm} started begin"]
    # a refusal stops before the foreign hook runs
    assert dv("maintenance", "enable").code == 0
    assert _virsh(hv_env, NODE, "destroy", vm).returncode == 0
    assert _virsh(hv_env, NODE, "start", vm).returncode != 0
    # (libvirt cleans up after the refused start: stopped and release again, not audited)
    assert calls.read_text().splitlines()[3:] == [f"{vm} stopped end", f"{vm} release end"] * 2
    assert _hook_events(dv_state.path, vm)[1:] == [("stopped", "stopped end"),
                                                   ("refused", "prepare begin")]
    assert dv("maintenance", "disable").code == 0

    rb = dv("hv", "hook", "install", "--rollback", "--yes")
    assert rb.code == 0, rb
    after = os.stat(foreign)
    assert foreign.read_bytes() == content and not backup.exists()
    assert (after.st_ino, after.st_mode, after.st_uid, after.st_gid, after.st_mtime) == (
        before.st_ino, before.st_mode, before.st_uid, before.st_gid, before.st_mtime)


@pytest.mark.lab
@pytest.mark.root
def test_drain_undo_migrates_back_through_the_hook(dv: Any, dv_state: Any, hv_env: Any,
                                                   hooked: Path, guest_factory: Any,
                                                   unique: str) -> None:
    """`maintenance disable` after `enable --drain` migrates the VMs back while the node is
    still in maintenance: the hook lets exactly those in (the drain's allowance)."""
    assert dv("hv", "hook", "install").code == 0
    vm = f"{unique}d"
    log = guest_factory(vm, NODE)
    res = dv("--json", "maintenance", "enable", "--drain", "--reason", "hook drain", "--yes")
    try:
        assert res.code == 0, res
        assert hv_env.where(vm) == ["node1"]
        assert _migrate(hv_env, vm, "node1", NODE).returncode != 0  # not by hand meanwhile
    finally:
        off = dv("--json", "maintenance", "disable")
    assert off.code == 0, off
    assert hv_env.where(vm) == [NODE]
    _beating(log)
    back = [e for e in _audit(dv_state.path)
            if e.get("action") == "hook-event" and e["details"].get("vm") == vm
            and e["details"].get("allowed_by")]
    assert [e["result"] for e in back] == ["incoming-migration", "allowed-in-maintenance"]
    assert "undo of the maintenance drain of node2" in back[0]["details"]["allowed_by"]
    assert not list((dv_state.path / "plugins" / "hv" / "hook-allow").iterdir())
