"""Tests of the example site plugin, written from docs/contracts.md alone.

They need nothing a plain venv lacks: ``pip install debvisor-core[test]`` and
``pip install docs/example-plugin`` (both regular installs), then
``pytest docs/example-plugin/tests``. Only the ``dv_state``, ``dv`` and ``dv_fault``
fixtures that debvisor-core's pytest plugin brings are used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from debvisor_core.testing import Runner, StateDir

FaultFn = Any  # dv_fault: a callable taking "STEP[:WHEN]" strings


@pytest.fixture
def notes(dv_state: StateDir, tmp_path: Path) -> Path:
    """Keep the notes in a directory of the test (the plugin's `[example] dir`)."""
    d = tmp_path / "notes"
    dv_state.config({"example": {"dir": str(d)}})
    return d


def show(dv: Runner) -> dict[str, str]:
    res = dv("example", "note", "show", "--json")
    assert res.code == 0, res
    data: dict[str, str] = res.json
    return data


def audit_results(dv_state: StateDir) -> list[str]:
    log = dv_state.path / "log" / "audit.jsonl"
    if not log.exists():
        return []
    return [json.loads(line)["result"] for line in log.read_text().splitlines()]


def test_the_plugin_is_installed_with_its_actions(dv: Runner, dv_state: StateDir) -> None:
    res = dv("plugins", "list", "--json")
    assert res.code == 0, res
    assert "example" in res.stdout
    listed = {a["path"]: a for a in dv("actions", "list", "--json").json}
    assert listed["example.note.add"]["changes_state"] is True
    assert listed["example.note.add"]["destructive"] is True
    assert listed["example.note.show"]["changes_state"] is False
    assert listed["example.note.show"]["privilege"] == "none"


def test_add_then_show(dv: Runner, notes: Path) -> None:
    assert show(dv) == {}
    res = dv("example", "note", "add", "hello", "first note", "--yes")
    assert res.code == 0, res
    assert "note hello added" in res.stdout
    assert show(dv) == {"hello": "first note"}
    assert (notes / "hello").read_text() == "first note"
    assert (notes / "INDEX").read_text() == "hello\n"
    human = dv("example", "note", "show")
    assert human.code == 0 and human.stdout.strip() == "hello: first note"


def test_add_json_result_and_audit(dv: Runner, dv_state: StateDir, notes: Path) -> None:
    res = dv("example", "note", "add", "a", "text", "--yes", "--json")
    assert res.code == 0, res
    out = res.json
    assert out["status"] == "succeeded" and out["kind"] == "example.note-add"
    assert out["result"] == {"name": "a"}
    assert [s["name"] for s in out["steps"]] == ["WriteNote", "IndexNote"]
    assert audit_results(dv_state) == ["started", "succeeded"]


def test_destructive_add_needs_yes_when_nobody_can_be_asked(dv: Runner, dv_state: StateDir,
                                                            notes: Path) -> None:
    res = dv("example", "note", "add", "hello", "text")
    assert res.code == 3, res
    assert "without --yes" in res.stderr
    assert show(dv) == {}
    assert audit_results(dv_state) == []  # a refused run writes no audit event


def test_dry_run_and_check_change_nothing(dv: Runner, notes: Path) -> None:
    res = dv("example", "note", "add", "hello", "text", "--dry-run")
    assert res.code == 0, res
    assert "write note 'hello'" in res.stdout
    assert dv("example", "note", "add", "hello", "text", "--check").code == 0
    assert not notes.exists()


def test_bad_name_is_bad_input(dv: Runner, notes: Path) -> None:
    res = dv("example", "note", "add", "no-dashes", "text", "--yes")
    assert res.code == 2, res
    assert res.stderr.strip().splitlines()[-1].startswith("[ERROR] note name 'no-dashes'")


@pytest.mark.parametrize("fault", ["IndexNote", "IndexNote:after", "2"])
def test_a_fault_rolls_a_new_note_back(dv: Runner, dv_fault: FaultFn, dv_state: StateDir,
                                       notes: Path, fault: str) -> None:
    dv_fault(fault)
    res = dv("example", "note", "add", "hello", "text", "--yes")
    assert res.code == 4, res
    assert "every applied step was undone" in res.stderr
    assert not (notes / "hello").exists() and not (notes / "INDEX").exists()
    assert audit_results(dv_state) == ["started", "rolled-back"]
    dv_fault()  # no fault: the same add now succeeds
    assert dv("example", "note", "add", "hello", "text", "--yes").code == 0


def test_a_fault_restores_the_replaced_note(dv: Runner, dv_fault: FaultFn, notes: Path) -> None:
    assert dv("example", "note", "add", "hello", "old", "--yes").code == 0
    dv_fault("IndexNote:after")
    assert dv("example", "note", "add", "hello", "new", "--yes").code == 4
    assert show(dv) == {"hello": "old"}


def test_a_failing_undo_is_an_incomplete_rollback(dv: Runner, dv_fault: FaultFn,
                                                  notes: Path) -> None:
    dv_fault("IndexNote:after,WriteNote:undo")
    res = dv("example", "note", "add", "hello", "text", "--yes")
    assert res.code == 5, res
    assert "rollback is incomplete" in res.stderr
    assert (notes / "hello").exists()  # WriteNote could not be undone
    assert not (notes / "INDEX").exists()  # IndexNote was


def test_rollback_undoes_the_last_add_of_the_same_note(dv: Runner, dv_state: StateDir,
                                                       notes: Path) -> None:
    assert dv("example", "note", "add", "a", "one", "--yes").code == 0
    assert dv("example", "note", "add", "a", "two", "--yes").code == 0
    res = dv("example", "note", "add", "a", "--rollback", "--yes")
    assert res.code == 0, res
    assert show(dv) == {"a": "one"}
    assert audit_results(dv_state)[-2:] == ["started", "rolled-back"]


def test_rollback_of_an_older_add_keeps_later_notes(dv: Runner, notes: Path) -> None:
    assert dv("example", "note", "add", "a", "one", "--yes").code == 0
    assert dv("example", "note", "add", "b", "two", "--yes").code == 0
    assert dv("example", "note", "add", "a", "--rollback", "--yes").code == 0
    assert show(dv) == {"b": "two"}


def test_health_checks(dv: Runner, dv_state: StateDir, notes: Path) -> None:
    res = dv("health", "--json", "--only", "example.")
    assert res.code == 0, res
    checks = {c["name"]: c for c in res.json["checks"]}
    assert checks["example.index"]["status"] == "ok"
    assert checks["example.index"]["plugin"] == "example"
    assert checks["example.echo"]["summary"] == "no echo server configured"
    assert dv("example", "note", "add", "hello", "text", "--yes").code == 0
    (notes / "hello").unlink()
    res = dv("health", "--json", "--only", "example.")
    assert res.code == 1, res
    index = {c["name"]: c for c in res.json["checks"]}["example.index"]
    assert index["status"] == "crit"
    assert index["summary"] == "index lists missing notes: hello"


def test_step_check_refuses_in_preflight(dv: Runner, dv_state: StateDir, tmp_path: Path) -> None:
    """The example declares no `debvisor_preflight` hook; its WriteNote step's own
    `check` refuses a notes directory whose parent does not exist (exit 3)."""
    dv_state.config({"example": {"dir": str(tmp_path / "missing" / "notes")}})
    res = dv("example", "note", "add", "hello", "text", "--check")
    assert res.code == 3, res
    assert "does not exist" in res.stderr
    assert dv("example", "note", "add", "hello", "text", "--yes").code == 3


def test_default_notes_dir_is_the_plugin_state(dv: Runner, dv_state: StateDir) -> None:
    assert dv("example", "note", "add", "hello", "text", "--yes").code == 0
    state = dv_state.path / "plugins" / "example"
    assert (state / "notes" / "hello").read_text() == "text"
    assert state.stat().st_mode & 0o777 == 0o700


def test_preflight_hook_refuses_while_frozen(dv: Runner, dv_state: StateDir, notes: Path) -> None:
    dv_state.config({"example": {"frozen": True}})
    res = dv("example", "note", "add", "x", "y", "--yes")
    assert res.code == 3, res
    assert "notes are frozen" in res.stderr and show(dv) == {}
