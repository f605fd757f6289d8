"""docs/operators.md's command table is what the action declarations say (privilege, state
change, undo) for every command of the core and the first-party plugins."""

from __future__ import annotations

from pathlib import Path

from debvisor_core import opsdoc

ROOT = Path(__file__).resolve().parent.parent


def test_the_command_table_is_current() -> None:
    text = (ROOT / opsdoc.DOC).read_text()
    rows = opsdoc.rows(ROOT)
    assert opsdoc.render(text, rows) == text, \
        "docs/operators.md is out of date: run `python -m debvisor_core.opsdoc` and commit it"
    words = {r["command"] for r in rows}
    for cmd in ("debvisor join", "debvisor k8s join", "debvisor maintenance enable",
                "debvisor cluster lock break", "debvisor hv migrate", "debvisor upgrade check"):
        assert cmd in words, cmd
    reads = [r for r in rows if not r["changes"]]
    assert reads and all(r["privilege"] in ("none", "root") for r in reads)
    assert all(r["privilege"] != "none" for r in rows if r["changes"]), \
        "a state change that any user may run"
