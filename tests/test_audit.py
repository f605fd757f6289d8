"""The audit log: one event per state change, a verifiable hash chain, sinks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from debvisor_core.testing import Runner, StateDir


def events(state: StateDir) -> list[dict]:
    path = state.path / "log" / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_each_state_change_writes_one_event(dv: Runner, dv_state: StateDir, site_plugins: Path) -> None:
    res = dv("--yes", "example", "note", "add", "n1", "t", env={"SUDO_USER": "alice"})
    assert res.code == 0
    ev = events(dv_state)
    assert [e["result"] for e in ev] == ["started", "succeeded"]  # started: before any step
    e = ev[1]
    assert e["user"]["uid"] == os.getuid() and e["user"]["name"]
    # a bare $SUDO_USER (no agreeing $SUDO_UID) is only a claim
    assert e["user"]["sudo_user"] is None and e["user"]["claimed_sudo_user"] == "alice"
    assert e["host"] == socket.gethostname()
    assert e["argv"][-4:] == ["note", "add", "n1", "t"]
    assert (e["plugin"], e["action"], e["result"]) == ("example", "note add", "succeeded")
    assert e["operation"] and isinstance(e["duration_ms"], int) and e["time"].endswith("Z")
    assert [x["seq"] for x in ev] == [1, 2]
    # read-only commands write nothing
    for argv in (["plugins", "list"], ["ops", "list"], ["audit", "show"], ["maintenance", "status"],
                 ["example", "note", "show"]):
        assert dv(*argv).code == 0
    assert len(events(dv_state)) == 2
    assert dv("maintenance", "enable", "--reason", "r").code == 0
    assert dv("maintenance", "disable").code == 0
    assert [x["result"] for x in events(dv_state)] == ["started", "succeeded", "enabled", "disabled"]
    shown = json.loads(dv("audit", "show", "--json", "--since", "1h").stdout)
    assert [x["result"] for x in shown] == ["started", "succeeded", "enabled", "disabled"]
    assert dv("audit", "show", "--since", "yesterday-ish").code == 2


@pytest.fixture
def chain(dv: Runner, dv_state: StateDir) -> Path:
    for i in range(5):
        assert dv("maintenance", "enable" if i % 2 == 0 else "disable").code == 0
    path = dv_state.path / "log" / "audit.jsonl"
    assert dv("audit", "verify").code == 0
    return path


def test_verify_detects_an_edit(dv: Runner, chain: Path) -> None:
    lines = chain.read_text().splitlines()
    assert '"disabled"' in lines[1]
    lines[1] = lines[1].replace('"disabled"', '"enabled"')
    chain.write_text("\n".join(lines) + "\n")
    res = dv("audit", "verify")
    assert res.code == 1 and "line 2: content does not match its hash" in res.stdout


def test_verify_detects_a_deletion(dv: Runner, chain: Path) -> None:
    lines = chain.read_text().splitlines()
    del lines[1]
    chain.write_text("\n".join(lines) + "\n")
    res = dv("audit", "verify", "--json")
    assert res.code == 1 and res.json["message"].startswith("line 2: does not follow line 1")


def test_verify_detects_reordering(dv: Runner, chain: Path) -> None:
    lines = chain.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    chain.write_text("\n".join(lines) + "\n")
    res = dv("audit", "verify")
    assert res.code == 1 and "line 2: does not follow line 1" in res.stdout


def test_verify_detects_truncation_at_the_end(dv: Runner, chain: Path) -> None:
    lines = chain.read_text().splitlines()
    chain.write_text("\n".join(lines[:-1]) + "\n")
    res = dv("audit", "verify")
    assert res.code == 1 and "line 5: missing" in res.stdout


WRITER = """
import sys
from pathlib import Path
from debvisor_core.audit import append
path, proc = Path(sys.argv[1]), sys.argv[2]
for i in range(500):
    append(path, {"proc": proc, "i": i, "result": "test"})
"""


def test_eight_concurrent_writers_lose_nothing(dv: Runner, dv_state: StateDir) -> None:
    path = dv_state.path / "log" / "audit.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(p)]) for p in range(8)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 8
    got = [(e["proc"], e["i"]) for e in events(dv_state)]
    assert len(got) == 4000 and set(got) == {(str(p), i) for p in range(8) for i in range(500)}
    res = dv("audit", "verify")
    assert res.code == 0 and "4000 lines, chain intact" in res.stdout


def test_unwritable_audit_log_refuses_state_changes(dv: Runner, dv_state: StateDir,
                                                    site_plugins: Path) -> None:
    (dv_state.path / "log").mkdir()
    (dv_state.path / "log" / "audit.jsonl").mkdir()  # not a file: cannot be opened for append
    res = dv("--yes", "example", "note", "add", "n", "t")
    assert res.code == 3 and "audit log" in res.stderr and "cannot be written" in res.stderr
    assert not (dv_state.path / "plugins" / "example" / "notes" / "n").exists()
    assert dv("maintenance", "enable").code == 3
    assert not (dv_state.path / "maintenance.json").exists()


def test_extra_sinks_get_events_and_a_failing_one_only_warns(dv: Runner, dv_state: StateDir,
                                                             site_plugins: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sink.jsonl"
    assert dv("maintenance", "enable", env={"DV_SINK_FILE": str(copy)}).code == 0
    got = [json.loads(x) for x in copy.read_text().splitlines()]
    assert len(got) == 1 and got[0]["result"] == "enabled"
    res = dv("maintenance", "disable", env={"DV_SINK_FAIL": "1"})
    assert res.code == 0 and "[WARN] audit sink sinks failed: remote sink unreachable" in res.stderr
    assert [e["result"] for e in events(dv_state)] == ["enabled", "disabled"]


def test_syslog_sink_writes_to_dev_log(dv: Runner, dv_state: StateDir) -> None:
    if os.path.exists("/dev/log"):
        pytest.skip("/dev/log belongs to a running syslog daemon here; not replacing it")
    if os.geteuid() != 0:
        pytest.skip("creating /dev/log needs root")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/dev/log")
    sock.settimeout(10)
    try:
        assert dv("maintenance", "enable", "--reason", "syslog test").code == 0
        msg = ""
        while "syslog test" not in msg:  # other processes on this machine may log too
            msg = sock.recv(65536).decode()
    finally:
        sock.close()
        os.unlink("/dev/log")
    assert "debvisor-audit" in msg and '"result": "enabled"' in msg
    rec = events(dv_state)[-1]  # the message names the record's place in the file chain
    assert rec["result"] == "enabled" and f"seq={rec['seq']} hash={rec['hash']} " in msg
