"""The journal is data, rollback does exactly what it says once, and no change goes
unaudited: each test here failed on the tree the security review read (74cfc49)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from debvisor_core.testing import Runner, StateDir

ROOT = Path(__file__).resolve().parents[2]


def notes(state: StateDir) -> dict[str, str]:
    d = state.path / "plugins" / "example" / "notes"
    return {p.name: p.read_text() for p in sorted(d.iterdir())} if d.exists() else {}


def add(dv: Runner, name: str, text: str, *extra: str, env: dict[str, str] | None = None):
    return dv("example", "note", "add", name, text, "--yes", *extra, env=env)


def ops(dv: Runner) -> list[dict]:
    return json.loads(dv("ops", "list", "--json").stdout)


def evil_journal(path: Path, pwned: Path) -> None:
    """A journal whose step names os.system, with the payload as its params."""
    lines = [
        {"event": "created", "t": 1, "kind": "x.y", "title": "t", "params": {}, "locks": ["x"],
         "steps": [{"name": "s", "type": "os:system", "params": {"command": f"id > {pwned}"}}]},
        {"event": "intent", "t": 1, "step": 0, "prior": {}},
    ]
    path.write_text("".join(json.dumps(ln) + "\n" for ln in lines))


@pytest.fixture
def prior(dv: Runner, dv_state: StateDir, site_plugins: Path) -> dict[str, str]:
    assert add(dv, "keep", "old text").code == 0
    return notes(dv_state)


@pytest.mark.parametrize("how", ["traversal", "absolute", "inside"])
@pytest.mark.parametrize("dry", [True, False])
def test_journal_never_runs_code(dv: Runner, dv_state: StateDir, tmp_path: Path,
                                 how: str, dry: bool) -> None:
    """H1: a journal naming os:system — outside STATE/ops by traversal or absolute path,
    or planted inside it — never runs its payload; ops rollback refuses in one line."""
    pwned = tmp_path / "PWNED"
    if how == "inside":
        ops_dir = dv_state.path / "ops"
        ops_dir.mkdir(mode=0o700, exist_ok=True)
        evil_journal(ops_dir / "20260101-000000-abcdef.jsonl", pwned)
        op_id = "20260101-000000-abcdef"
    else:
        evil_journal(tmp_path / "evil.jsonl", pwned)
        rel = os.path.relpath(tmp_path / "evil", dv_state.path / "ops")
        op_id = rel if how == "traversal" else str(tmp_path / "evil")
    res = dv("ops", "rollback", op_id, "--yes", *(["--dry-run"] if dry else []))
    assert not pwned.exists(), res
    if how == "inside" and dry:
        assert res.code == 0 and "undo 1." in res.stdout  # shown from the journal, not rebuilt
    else:
        assert res.code in (2, 3), res
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 2
    if how == "inside" and not dry:
        assert "os:system" in res.stderr and "not declared by any installed plugin" in res.stderr
    res = dv("ops", "show", op_id)
    assert not pwned.exists()
    assert res.code == (0 if how == "inside" else 2), res


def test_op_id_length_and_shape(dv: Runner, dv_state: StateDir) -> None:
    """A 5000-character id, a glob and a path are one clear sentence (exit 2)."""
    for bad in ["a" * 5000, "2026*", "../x", "/etc/passwd", ""]:
        res = dv("ops", "show", bad)
        assert res.code == 2, res
        assert res.stderr.count("\n") == 1 and "is not an operation id" in res.stderr, res
        assert "internal error" not in res.stderr


def test_corrupt_journals_are_skipped_not_fatal(dv: Runner, dv_state: StateDir, prior: dict[str, str],
                                                tmp_path: Path) -> None:
    """L7: bad JSON, non-UTF-8, a missing header, a FIFO and a symlink in STATE/ops are
    named once each and skipped by ops list, preflight and health."""
    d = dv_state.path / "ops"
    (d / "20260101-000000-000001.jsonl").write_text('{"event": "created"\n{"x"\n')
    (d / "20260101-000000-000002.jsonl").write_bytes(b'\xff\xfe{"event":"created"}\n')
    (d / "20260101-000000-000003.jsonl").write_text('{"event": "intent", "t": 1, "step": 0}\n')
    os.mkfifo(d / "20260101-000000-000004.jsonl")
    target = tmp_path / "elsewhere.jsonl"
    target.write_text(json.dumps({"event": "created", "t": 1, "kind": "x.y", "steps": []}) + "\n")
    (d / "20260101-000000-000005.jsonl").symlink_to(target)
    res = dv("ops", "list", "--json")
    assert res.code == 0, res
    assert [o["kind"] for o in res.json] == ["example.note-add"]
    assert sum("skipping journal" in ln for ln in res.stderr.splitlines()) == 5, res.stderr
    assert add(dv, "fresh", "t").code == 0  # preflight reads every journal
    health = dv("health", "--json")
    assert health.code in (0, 1) and "Traceback" not in health.stderr
    assert dv("ops", "show", "20260101-000000-000004").code == 2  # the FIFO: no hang


def test_concurrent_rollbacks_exactly_one_acts(dv: Runner, dv_state: StateDir,
                                                prior: dict[str, str]) -> None:
    """H6: two `ops rollback ID` waiting on the operation's lock: one undoes, the other
    re-reads the journal under the lock and says it is already rolled back."""
    assert add(dv, "keep", "new text").code == 0
    op_id = ops(dv)[0]["id"]
    lock = dv_state.path / "locks" / "example.note-add.lock"
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        procs = [dv.popen("ops", "rollback", op_id, "--yes") for _ in range(2)]
        time.sleep(0.5)  # both are now past their first look at the journal, waiting
    finally:
        os.close(fd)
    results = [(p.wait(timeout=60), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    assert any("already rolled-back" in err for _, (_, err) in results)
    journal = (dv_state.path / "ops" / f"{op_id}.jsonl").read_text().splitlines()
    assert sum(json.loads(ln)["event"] == "rollback" for ln in journal) == 1
    assert notes(dv_state) == prior


def test_preflight_runs_again_under_the_lock(dv: Runner, dv_state: StateDir,
                                              prior: dict[str, str]) -> None:
    """M1: an operation interrupted while we waited for the lock refuses ours (exit 3)."""
    lock = dv_state.path / "locks" / "example.note-add.lock"
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        waiting = dv.popen("example", "note", "add", "w", "t", "--yes")
        time.sleep(0.5)  # past its first look at the journals, waiting for the lock
        # meanwhile another operation on the same lock was interrupted (its process died)
        (dv_state.path / "ops" / "20260101-000000-aaaaaa.jsonl").write_text(json.dumps(
            {"event": "created", "t": time.time(), "kind": "example.note-add", "title": "other",
             "locks": ["example.note-add"], "steps": []}) + "\n")
    finally:
        os.close(fd)
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 3, err
    assert "debvisor ops rollback 20260101-000000-aaaaaa" in err
    assert "w" not in notes(dv_state)


def test_rollback_flag_honours_dry_run_check_and_target(dv: Runner, dv_state: StateDir,
                                                        prior: dict[str, str]) -> None:
    """H7: --rollback --dry-run/--check change nothing; `add a --rollback` undoes a's
    operation, not the newest one (b's), and names the operation it picked."""
    assert add(dv, "a", "1").code == 0
    assert add(dv, "b", "2").code == 0
    before = notes(dv_state)
    for flags in (["--dry-run", "--rollback"], ["--rollback", "--check"]):
        res = dv("example", "note", "add", *flags, "--yes")
        assert res.code == 0, res
        assert notes(dv_state) == before
    res = dv("example", "note", "add", "a", "--rollback", "--yes")
    assert res.code == 0, res
    assert "a" not in notes(dv_state) and notes(dv_state)["b"] == "2"
    assert "--rollback picks operation" in res.stderr and "add note a" in res.stderr
    res = dv("example", "note", "add", "zz", "--rollback", "--yes")
    assert res.code == 2 and "no successful" in res.stderr and "name=zz" in res.stderr


def test_resume_runs_preflight(dv: Runner, dv_state: StateDir, prior: dict[str, str]) -> None:
    """M10: `ops resume` during maintenance mode is refused (exit 3) without the override."""
    res = add(dv, "fresh", "t", env={"DEBVISOR_FAULTS": "WriteNote:kill-after"})
    assert res.code == -signal.SIGKILL
    op_id = ops(dv)[0]["id"]
    assert dv("maintenance", "enable", "--reason", "test").code == 0
    res = dv("ops", "resume", op_id, "--yes")
    assert res.code == 3 and "maintenance" in res.stderr, res
    res = dv("ops", "resume", op_id, "--yes", "--force-maintenance")
    assert res.code == 0, res
    assert notes(dv_state)["fresh"] == "t"


def test_sighup_rolls_back(dv: Runner, dv_state: StateDir, prior: dict[str, str]) -> None:
    """L5: an ssh session that goes away (SIGHUP) rolls back like SIGTERM."""
    ready = dv_state.path / "ready"
    proc = dv.popen("example", "note", "add", "keep", "new", "--yes",
                    env={"DEBVISOR_FAULTS": "IndexNote:hang", "DEBVISOR_FAULT_READY": str(ready)})
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 4, err
    assert notes(dv_state) == prior


def test_started_is_audited_before_the_first_step(dv: Runner, dv_state: StateDir,
                                                  prior: dict[str, str]) -> None:
    """H5 (engine side): an operation killed in its first step has its audit record."""
    res = add(dv, "fresh", "t", env={"DEBVISOR_FAULTS": "WriteNote:kill-after"})
    assert res.code == -signal.SIGKILL
    op_id = ops(dv)[0]["id"]
    log = dv_state.path / "log" / "audit.jsonl"
    events = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert [e["result"] for e in events if e.get("operation") == op_id] == ["started"]


def test_rollback_incomplete_keeps_its_resources_locked(dv: Runner, dv_state: StateDir,
                                                        prior: dict[str, str], dv_fault) -> None:
    """A failed rollback blocks new operations on its locks until it is resolved."""
    dv_fault("IndexNote:after", "WriteNote:undo")
    assert add(dv, "keep", "new").code == 5
    op_id = ops(dv)[0]["id"]
    res = add(dv, "other", "x", env={"DEBVISOR_FAULTS": ""})
    assert res.code == 3 and f"ops rollback {op_id}" in res.stderr, res
    assert dv("ops", "rollback", op_id, "--yes", env={"DEBVISOR_FAULTS": ""}).code == 0
    assert add(dv, "other", "x", env={"DEBVISOR_FAULTS": ""}).code == 0


def test_a_moved_step_class_still_rolls_back(dv: Runner, dv_state: StateDir,
                                            site_plugins_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal written before a step class moved (renamed, other module) rolls back
    after the move: the journal names TYPE@VERSION, not module:qualname."""
    moved = tmp_path / "moved"
    shutil.copytree(site_plugins_dir, moved)
    plugin = moved / "debvisor_example" / "plugin.py"
    text = plugin.read_text()
    start = text.index("@dataclass\nclass WriteNote(Step):")
    end = text.index("@dataclass\nclass IndexNote(Step):")
    (moved / "debvisor_example" / "moved_steps.py").write_text(
        "from __future__ import annotations\n\nfrom dataclasses import dataclass\n"
        "from pathlib import Path\nfrom typing import Any\n\n"
        "from debvisor_core.context import Context\nfrom debvisor_core.engine import Step\n"
        "from debvisor_core.errors import StepFailed\n\n\n"
        + text[start:end].replace("class WriteNote(", "class RenamedWriteNote("))
    rest = re.sub(r"\bWriteNote\b", "RenamedWriteNote", text[:start] + text[end:])
    plugin.write_text(rest.replace("\n@dataclass\nclass IndexNote(Step):",
                                   "\nfrom .moved_steps import RenamedWriteNote  # noqa: E402\n\n\n"
                                   "@dataclass\nclass IndexNote(Step):", 1))
    for d in (site_plugins_dir, moved):
        shutil.rmtree(d / "__pycache__", ignore_errors=True)
    monkeypatch.setenv("PYTHONPATH", str(site_plugins_dir))
    assert add(dv, "keep", "old").code == 0
    before = notes(dv_state)
    assert add(dv, "keep", "new").code == 0
    op_id = ops(dv)[0]["id"]
    monkeypatch.setenv("PYTHONPATH", str(moved))
    res = dv("ops", "rollback", op_id, "--yes")
    assert res.code == 0, res
    assert notes(dv_state) == before


def test_unknown_step_type_names_its_plugin(dv: Runner, dv_state: StateDir, prior: dict[str, str]) -> None:
    """A journal naming a retired TYPE is refused in one sentence naming the plugin."""
    assert add(dv, "keep", "v2").code == 0
    op_id = ops(dv)[0]["id"]
    path = dv_state.path / "ops" / f"{op_id}.jsonl"
    path.write_text(path.read_text().replace("example.note.write@1", "example.note.retired@1"))
    res = dv("ops", "rollback", op_id, "--yes")
    assert res.code == 3, res
    assert "example.note.retired" in res.stderr and "plugin 'example'" in res.stderr
    assert "Traceback" not in res.stderr


def test_two_operations_in_one_process_do_not_mix(dv_state: StateDir, site_plugins: Path) -> None:
    """The engine has no terminal in it: two operations run at once in one process (as the
    daemon will), each with its own recording UI, see only their own events."""
    code = r"""
import json, sys, threading
from pathlib import Path
from debvisor_core.context import Context
from debvisor_core.engine import run
from debvisor_core.ui import RecordingUI
from debvisor_example.plugin import IndexNote, WriteNote
from debvisor_core.model import Operation

out = {}
def go(name):
    ctx = Context(yes=True)
    ctx.ui = RecordingUI()
    d = str(ctx.plugin_state("example") / "notes")
    op = Operation(kind="example.note-add", title=f"add note {name}", locks=[f"note.{name}"],
                   steps=[WriteNote(d, name, "t" + name), IndexNote(d, name)])
    with ctx.ui.bound():
        res = run(ctx, op)
    out[name] = {"status": res.status, "id": res.id,
                 "logs": [e["message"] for e in ctx.ui.of("log")],
                 "steps": [e["description"] for e in ctx.ui.of("step")]}
threads = [threading.Thread(target=go, args=(n,)) for n in ("n1", "n2")]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(out))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert {v["status"] for v in out.values()} == {"succeeded"}
    assert out["n1"]["id"] != out["n2"]["id"]
    for me, other in (("n1", "n2"), ("n2", "n1")):
        assert any(me in s for s in out[me]["steps"])
        assert not any(other in s for s in out[me]["steps"] + out[me]["logs"])
        assert any(out[me]["id"] in ln for ln in out[me]["logs"])
    assert res.stderr == ""  # nothing went to the terminal


def test_refused_operation_prints_the_refusal_not_the_plan(dv: Runner, dv_state: StateDir,
                                                          prior: dict[str, str]) -> None:
    """Issue 18: a refused operation (exit 3) says why, without its plan on stdout; the
    plan is still shown with --dry-run."""
    assert dv("maintenance", "enable", "--reason", "r").code == 0
    res = add(dv, "fresh", "t")
    assert res.code == 3 and "maintenance mode is on" in res.stderr
    assert "Plan:" not in res.stdout and res.stdout == ""
    res = add(dv, "fresh", "t", "--dry-run")
    assert res.code == 3 and "Plan: add note fresh" in res.stdout


def test_lab_pidfile_of_a_dead_daemon_never_names_a_stranger(tmp_path: Path) -> None:
    """L13: a pidfile written before its process started belongs to a dead daemon whose pid
    was reused: read_pid gives None, so `lab down` never signals the stranger."""
    from debvisor_core.lab.process import read_pid

    stranger = subprocess.Popen(["sleep", "30"])
    try:
        pidfile = tmp_path / "daemon.pid"
        pidfile.write_text(f"{stranger.pid}\n")
        assert read_pid(pidfile) == stranger.pid  # written after it started: its own
        old = time.time() - 3600
        os.utime(pidfile, (old, old))  # written an hour before this process started
        assert read_pid(pidfile) is None
    finally:
        stranger.kill()
        stranger.wait()


def test_diagnostics_bundle_never_writes_through_a_planted_file(dv: Runner, dv_state: StateDir,
                                                                tmp_path: Path) -> None:
    """L6: a pre-placed `.NAME.partial` (a symlink to a victim) is never written through."""
    victim = tmp_path / "victim"
    victim.write_text("keep")
    out = tmp_path / "diag.tar.gz"
    (tmp_path / ".diag.tar.gz.partial").symlink_to(victim)
    res = dv("health", "--collect-diagnostics", str(out))
    assert res.code in (0, 1), res
    assert victim.read_text() == "keep" and out.exists()
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def test_sighup_with_the_terminal_gone_still_rolls_back(dv: Runner, dv_state: StateDir,
                                                        prior: dict[str, str]) -> None:
    """Review 2, #1: an ssh session that drops takes the terminal with it; writing the
    failure there must not stop the rollback (stderr is a pipe nobody reads any more)."""
    ready = dv_state.path / "ready"
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "debvisor_core", "example", "note", "add", "keep", "new", "--yes"],
        stdin=subprocess.DEVNULL, stdout=w, stderr=w,
        env={**os.environ, "DEBVISOR_FAULTS": "IndexNote:hang", "DEBVISOR_FAULT_READY": str(ready)})
    os.close(w)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.close(r)  # the terminal is gone
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=30) == 4
    assert notes(dv_state) == prior
    assert ops(dv)[0]["status"] == "rolled-back"


@pytest.mark.parametrize("line", [
    '{"event": "created", "t": 1' + "0" * 400 + ', "kind": "x.y", "steps": []}',
    '{"event": "created", "t": NaN, "kind": "x.y", "steps": []}',
    '{"event": "created", "t": Infinity, "kind": "x.y", "steps": []}',
    "[" * 100000,
    '{"event": "created", "t": 1, "kind": "x.y", "steps": [{"name": "a", "type": "b.c@1", '
    '"params": {}, "phase": 1}], "phases": [{"name": "p", "first": 1, "count": 1}]}',
])
def test_hostile_journal_numbers_nesting_and_phases_are_skipped(dv: Runner, dv_state: StateDir,
                                                                 prior: dict[str, str],
                                                                 line: str) -> None:
    """Review 2, #5/#6: huge or non-finite times, deep nesting and phases that do not
    cover the steps are one [WARN] line each, never an internal error."""
    (dv_state.path / "ops" / "20260101-000000-bbbbbb.jsonl").write_text(line + "\n")
    res = dv("ops", "list", "--json")
    assert res.code == 0, res
    assert "skipping journal 20260101-000000-bbbbbb.jsonl" in res.stderr
    assert add(dv, "fresh", "t").code == 0
    assert dv("ops", "show", "20260101-000000-bbbbbb").code == 2


def test_actions_run_refuses_a_dry_run_it_cannot_honour(dv: Runner, dv_state: StateDir) -> None:
    """`actions run X --dry-run` on an action with no dry run (not journalled) used to run it
    for real: maintenance.disable turned maintenance off. Now: one sentence, exit 2."""
    assert dv("maintenance", "enable", "--reason", "r").code == 0
    res = dv("actions", "run", "maintenance.disable", "--dry-run")
    assert res.code == 2 and "has no --dry-run" in res.stderr, res
    assert json.loads(dv("maintenance", "status", "--json").stdout)["enabled"] is True
    res = dv("actions", "run", "ops.list", "--check")
    assert res.code == 2 and "ops.list only reads: it has no --check" in res.stderr


@pytest.mark.parametrize("extra", [["--rollback"], ["--force-maintenance"], []])
def test_remote_never_runs_the_command_here(dv: Runner, dv_state: StateDir,
                                            prior: dict[str, str], extra: list[str]) -> None:
    """`--remote NODE` must run a command on NODE or not at all: `--rollback` used to be
    handled before the remote dispatch and undid the last local run; a node that cannot be
    reached changes nothing here either. Nothing new in the journal, the notes unchanged."""
    before = ops(dv)
    args = ["example", "note", "add", "keep", "old text", "--yes"]  # the prior run's target
    res = dv("--remote", "127.0.0.1:9", *args, *extra)  # discard port: nothing answers
    assert res.code != 0 and "Traceback" not in res.stderr, res
    if extra:
        assert res.code == 2 and f"{extra[0]} does not go through --remote" in res.stderr, res
    assert notes(dv_state) == prior
    assert ops(dv) == before
    for bad in ("-x", "node;id", "../etc", "a b"):  # a node name is never an option or path
        res = dv("--remote", bad, *args)
        assert res.code == 2 and "not a node name or host:port" in res.stderr, (bad, res)
    assert notes(dv_state) == prior and ops(dv) == before


def test_a_hostile_nodes_report_neither_breaks_the_journal_nor_shows_its_secrets(
        dv: Runner, dv_state: StateDir) -> None:
    """A node whose answer carries a NaN (json accepts it, the journal refuses it) and a
    secret-looking field: the step's journal record keeps neither; `ops show` reads the
    operation and the secret is in none of its output."""
    dv_state.config({"cluster": {"nodes": {"evil": {"transport": "evil"}}}})
    code = r"""
import json, sys
from debvisor_core import remote
from debvisor_core.context import Context
from debvisor_core.engine import run
from debvisor_core.model import Operation
from debvisor_core.ui import RecordingUI

class Evil:
    def __init__(self, node, conf): pass
    def run(self, args, stdin, timeout):
        return 0, '{"id": "x", "status": "succeeded", "result": {"api_token": "SEKRIT-42", ' \
                  '"load": NaN}}', ""

def ctx():
    c = Context(yes=True)
    c.ui = RecordingUI()
    return c

remote.DRIVERS["evil"] = Evil
nan_op = Operation(kind="x.evil", title="ask the evil node", locks=["x.evil"],
                   steps=[remote.RemoteAction("evil", "example.note.list", {})])
print(json.dumps(run(ctx(), nan_op).status))
remote.DRIVERS["evil"] = type("Evil2", (Evil,), {"run": lambda self, a, s, t: (
    0, json.dumps({"id": "y", "status": "succeeded",
                   "result": {"api_token": "SEKRIT-42", "ok": True}}), "")})
secret_op = Operation(kind="x.evil", title="ask it again", locks=["x.evil"],
                      steps=[remote.RemoteAction("evil", "example.note.list", {})])
print(json.dumps(run(ctx(), secret_op).result))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ})
    assert res.returncode == 0, res.stderr
    status, result = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert status == "succeeded"
    assert "SEKRIT-42" not in json.dumps(result)
    assert result["nodes"]["evil"]["example.note.list"]["ok"] is True
    listed = ops(dv)
    assert len(listed) == 2 and {o["status"] for o in listed} == {"succeeded"}, listed
    for o in listed:
        shown = dv("--json", "ops", "show", o["id"])
        assert shown.code == 0, shown
        assert "SEKRIT-42" not in shown.stdout + shown.stderr
    assert "SEKRIT-42" not in "".join(p.read_text() for p in (dv_state.path / "ops").iterdir())
