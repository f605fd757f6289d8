"""The query fast path's cache (querycache.py) is data: a damaged entry, an entry of the
wrong shape, or one that another user could have written never breaks a command, and
never names the function that runs — the command takes the full CLI instead."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from debvisor_core.testing import StateDir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_quickquery import _run as run_with_imports

ECHO = ["queries", "echo", "x", "--level", "high"]


def _run(env: dict[str, str]) -> tuple[int, str, str, bool]:
    """(exit code, stdout, stderr, whether click was imported) of `debvisor ECHO…`."""
    code, out, err, mods = run_with_imports(ECHO, env)
    return code, out, err, "click" in mods


@pytest.fixture
def env(tmp_path: Path, site_plugins: Path, dv_state: StateDir) -> dict[str, str]:
    e = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
         "DEBVISOR_DISABLE_PLUGINS": "broken"}
    e.pop("DEBVISOR_NO_FAST_QUERY", None)
    return e


def _entry(env: dict[str, str]) -> Path:
    code, _, _, click = _run(env)  # the full CLI stores the entry
    assert code == 0 and click
    (path,) = (Path(env["XDG_CACHE_HOME"]) / "debvisor").glob("query-*.json")
    assert not _run(env)[3]  # and the next run takes the fast path
    return path


DAMAGE = {
    "params not a list": lambda e: {**e, "params": 7},
    "a param without its keys": lambda e: {**e, "params": [{"name": "name"}]},
    "a param of another type": lambda e: {**e, "params": [{**p, "type": 3} for p in e["params"]]},
    "choices not a list": lambda e: {**e, "params": [{**p, "choices": 5} for p in e["params"]]},
    "query not a string": lambda e: {**e, "query": ["os", "system"]},
    "query elsewhere": lambda e: {**e, "query": "os:getcwd"},
    "render elsewhere": lambda e: {**e, "render": "builtins:print"},
    "entry not a mapping": lambda e: [e],
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_entry_takes_the_full_cli(env: dict[str, str], damage: str) -> None:
    path = _entry(env)
    good = _run({**env, "DEBVISOR_NO_FAST_QUERY": "1"})
    data = json.loads(path.read_text())
    data["entry"] = DAMAGE[damage](data["entry"])
    path.write_text(json.dumps(data))
    code, out, err, click = _run(env)
    assert (code, out, err) == good[:3] and click, (damage, code, err)


def test_an_entry_others_could_write_is_not_used(env: dict[str, str]) -> None:
    path = _entry(env)
    path.chmod(0o666)
    assert _run(env)[3]  # click: the full CLI
    path.chmod(0o600)
    path.parent.chmod(0o777)
    try:
        assert _run(env)[3]
    finally:
        path.parent.chmod(0o700)
