"""The operation engine, driven through the example plugin's two-step operation."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from debvisor_core.testing import Runner, StateDir

STEPS = ["WriteNote", "IndexNote"]


def notes(state: StateDir) -> dict[str, str]:
    d = state.path / "plugins" / "example" / "notes"
    return {p.name: p.read_text() for p in sorted(d.iterdir())} if d.exists() else {}


def add(dv: Runner, name: str, text: str, *extra: str, env: dict[str, str] | None = None):
    return dv("example", "note", "add", name, text, "--yes", *extra, env=env)


def ops(dv: Runner) -> list[dict]:
    return json.loads(dv("ops", "list", "--json").stdout)


@pytest.fixture
def prior(dv: Runner, dv_state: StateDir, site_plugins: Path) -> dict[str, str]:
    """A state with two notes, to be restored exactly after every failure."""
    assert add(dv, "keep", "old text").code == 0
    assert add(dv, "other", "x").code == 0
    return notes(dv_state)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("name", ["keep", "fresh"])
def test_fault_at_every_step_rolls_back(dv: Runner, dv_state: StateDir, prior: dict[str, str],
                                        dv_fault, step: str, when: str, name: str) -> None:
    """A fault before or after either step, replacing or adding a note: exit 4, and
    the notes directory is exactly as before."""
    dv_fault(f"{step}:{when}")
    res = add(dv, name, "new text")
    assert res.code == 4, res
    assert f"injected fault {when} step {step}" in res.stderr
    assert "every applied step was undone" in res.stderr
    assert notes(dv_state) == prior
    last = ops(dv)[0]
    assert last["status"] == "rolled-back"
    shown = json.loads(dv("ops", "show", last["id"], "--json").stdout)
    # the failing step was in flight (journalled intent) and is undone from its snapshot
    undone = [s["name"] for s in shown["steps"] if s["status"] == "undone"]
    assert undone == STEPS[: STEPS.index(step) + 1]


def test_undo_failure_exits_5_then_ops_rollback_restores(dv: Runner, dv_state: StateDir,
                                                         prior: dict[str, str], dv_fault) -> None:
    dv_fault("IndexNote:after", "WriteNote:undo")
    res = add(dv, "keep", "new text")
    assert res.code == 5, res
    op_id = ops(dv)[0]["id"]
    assert f"debvisor ops rollback {op_id}" in res.stderr
    assert notes(dv_state)["keep"] == "new text"  # the failed undo left it
    assert ops(dv)[0]["status"] == "rollback-incomplete"
    os.environ.pop("DEBVISOR_FAULTS", None)
    res = dv("ops", "rollback", op_id, "--yes", env={"DEBVISOR_FAULTS": ""})
    assert res.code == 0, res
    assert notes(dv_state) == prior
    assert ops(dv)[0]["status"] == "rolled-back"


def _start_hanging(dv: Runner, dv_state: StateDir, step: str, name: str = "keep"):
    ready = dv_state.path / "ready"
    proc = dv.popen("example", "note", "add", name, "new text", "--yes",
                    env={"DEBVISOR_FAULTS": f"{step}:hang", "DEBVISOR_FAULT_READY": str(ready)})
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the operation never reached the step"
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_mid_operation_then_ops_rollback(dv: Runner, dv_state: StateDir,
                                                 prior: dict[str, str], step: str) -> None:
    proc = _start_hanging(dv, dv_state, step)
    assert notes(dv_state) != prior  # the step applied
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    listed = ops(dv)[0]
    assert listed["status"] == "interrupted"
    # a new operation on the same lock is refused until the operator decides
    res = add(dv, "z", "z")
    assert res.code == 3 and f"debvisor ops rollback {listed['id']}" in res.stderr
    health = json.loads(dv("health", "--json").stdout)
    assert {c["name"]: c["status"] for c in health["checks"]}["core.operations"] == "warn"
    res = dv("ops", "rollback", listed["id"], "--yes")
    assert res.code == 0, res
    assert notes(dv_state) == prior
    assert ops(dv)[0]["status"] == "rolled-back"
    assert add(dv, "z", "z").code == 0


def test_sigkill_then_resume_completes(dv: Runner, dv_state: StateDir, prior: dict[str, str]) -> None:
    res = add(dv, "fresh", "resumed text", env={"DEBVISOR_FAULTS": "WriteNote:kill-after"})
    assert res.code == -signal.SIGKILL
    op_id = ops(dv)[0]["id"]
    assert ops(dv)[0]["status"] == "interrupted"
    res = dv("ops", "resume", op_id, "--yes")
    assert res.code == 0, res
    assert notes(dv_state) == {**prior, "fresh": "resumed text",
                               "INDEX": "fresh\nkeep\nother\n"}
    assert ops(dv)[0]["status"] == "succeeded"
    assert dv("ops", "resume", op_id, "--yes").code == 2  # only interrupted ones


def test_sigterm_rolls_back(dv: Runner, dv_state: StateDir, prior: dict[str, str]) -> None:
    proc = _start_hanging(dv, dv_state, "IndexNote")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 4, err
    assert notes(dv_state) == prior


def test_dry_run_and_check_change_nothing(dv: Runner, dv_state: StateDir, prior: dict[str, str]) -> None:
    before = ops(dv)
    res = add(dv, "fresh", "t", "--dry-run")
    assert res.code == 0 and "1. write note 'fresh'" in res.stdout and "2. add 'fresh'" in res.stdout
    res = add(dv, "fresh", "t", "--check")
    assert res.code == 0 and "preflight passed" in res.stderr
    assert notes(dv_state) == prior and ops(dv) == before


def test_non_interactive_destructive_needs_yes(dv: Runner, dv_state: StateDir,
                                                prior: dict[str, str]) -> None:
    res = dv("example", "note", "add", "fresh", "t")
    assert res.code == 3 and "without --yes" in res.stderr
    assert notes(dv_state) == prior
    assert dv("--yes", "example", "note", "add", "fresh", "t").code == 0


def test_rollback_flag_undoes_last_successful_runs(dv: Runner, dv_state: StateDir,
                                                   prior: dict[str, str]) -> None:
    assert add(dv, "keep", "v2").code == 0
    after_v2 = notes(dv_state)
    assert add(dv, "keep", "v3").code == 0
    res = dv("example", "note", "add", "--rollback", "--yes")
    assert res.code == 0, res
    assert notes(dv_state) == after_v2
    assert dv("example", "note", "add", "--rollback", "--yes").code == 0
    assert notes(dv_state) == prior


def test_lock_held_by_another_operation(dv: Runner, dv_state: StateDir, prior: dict[str, str]) -> None:
    proc = _start_hanging(dv, dv_state, "IndexNote")
    try:
        res = add(dv, "fresh", "t", env={"DEBVISOR_LOCK_WAIT": "0.3"})
        assert res.code == 3 and f"held by pid {proc.pid}" in res.stderr, res
        assert ops(dv)[0]["status"] == "running"
    finally:
        proc.kill()
        proc.wait()


def test_bad_input_exit_2_nothing_changed(dv: Runner, dv_state: StateDir, prior: dict[str, str]) -> None:
    before = ops(dv)
    res = add(dv, "bad name", "t")
    assert res.code == 2 and res.stderr.strip().startswith("[ERROR] note name 'bad name'")
    assert notes(dv_state) == prior and ops(dv) == before


def test_contributed_step_runs_after_owner_steps_and_is_undone(
        dv: Runner, dv_state: StateDir, prior: dict[str, str], tmp_path: Path, dv_fault) -> None:
    marker = tmp_path / "marker"
    res = add(dv, "fresh", "t", "--dry-run", env={"DV_CONTRIB": str(marker)})
    assert f"3. write marker {marker}" in res.stdout
    assert add(dv, "fresh", "t", env={"DV_CONTRIB": str(marker)}).code == 0
    assert marker.read_text() == "marked"
    dv_fault("Marker:after")
    res = add(dv, "fresh2", "t", env={"DV_CONTRIB": str(marker)})
    assert res.code == 4 and not marker.exists() and "fresh2" not in notes(dv_state)


def test_preflight_findings_from_other_plugins(dv: Runner, dv_state: StateDir, prior: dict[str, str]) -> None:
    res = add(dv, "fresh", "t", env={"DV_PREFLIGHT": "error"})
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("[ERROR]")]
    assert res.code == 3 and errors == [
        "[ERROR] preflight refused example.note-add: contrib says error [contrib]; nothing was changed"]
    assert notes(dv_state) == prior
    res = add(dv, "fresh", "t", env={"DV_PREFLIGHT": "warn"})
    assert res.code == 0 and "[WARN] preflight: contrib says warn" in res.stderr


def test_cluster_lock_is_held_around_the_steps(dv: Runner, dv_state: StateDir, prior: dict[str, str],
                                               tmp_path: Path) -> None:
    log = tmp_path / "cluster-lock.log"
    res = add(dv, "fresh", "t", "--verbose", env={"DV_CLUSTER_LOCK_FILE": str(log)})
    assert res.code == 0
    assert log.read_text() == "acquire example.note-add\nrelease example.note-add\n"
    assert "[DEBUG] cluster lock ['example.note-add']" in res.stderr
