"""The query fast path (debvisor_core/quickquery.py): a query action run again without
click prints the same, exits the same, and hands everything it does not know to the
full CLI; a stale entry (an edited source, another plugin selection) is never used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from debvisor_core.testing import StateDir

ECHO = ["queries", "echo"]
FAST = [
    [*ECHO, "x"],
    ["--json", *ECHO, "x"],
    [*ECHO, "x", "--json", "--level", "HIGH", "-c", "3", "--ratio=0.5", "--where", "/tmp"],
    [*ECHO, "--count", "4", "x", "--fail"],  # an error: one line, its hint, exit 1
    [*ECHO, "x", "--code", "3"],  # an Outcome: data, then the message, exit 3
]
FULL = [  # what only the full CLI says (or does)
    [*ECHO, "x", "--level", "medium"],  # bad choice
    [*ECHO, "x", "--count", "12"],  # out of range
    [*ECHO, "x", "--count"],  # a missing value
    [*ECHO],  # a missing argument
    [*ECHO, "x", "y"],  # one argument too many
    [*ECHO, "x", "--nope"],  # unknown option
    [*ECHO, "x", "--fail", "--fail"],  # repeated
    [*ECHO, "x", "--help"],
    ["--verbose", *ECHO, "x"],  # another global option
    [*ECHO, "x", "--", "--fail"],
]
CASES = [(a, True) for a in FAST] + [(a, False) for a in FULL]


def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str, str, set[str]]:
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "debvisor_core", *argv],
                         capture_output=True, text=True, env=env, timeout=60,
                         stdin=subprocess.DEVNULL)
    mods = {line.split("|")[-1].strip() for line in res.stderr.splitlines()
            if line.startswith("import time:")}
    err = "\n".join(line for line in res.stderr.splitlines()
                    if not line.startswith("import time:"))
    return res.returncode, res.stdout, err, mods


@pytest.fixture
def env(tmp_path: Path, site_plugins: Path, dv_state: StateDir) -> dict[str, str]:
    e = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
         "DEBVISOR_DISABLE_PLUGINS": "broken"}
    e.pop("DEBVISOR_NO_FAST_QUERY", None)
    return e


def _warm(env: dict[str, str]) -> None:
    code, _, _, mods = _run([*ECHO, "warm"], env)
    assert code == 0 and "click" in mods  # the first run is the full CLI's: it stores
    assert list((Path(env["XDG_CACHE_HOME"]) / "debvisor").glob("query-*.json"))


@pytest.mark.parametrize(("argv", "fast"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_same_output_and_exit_code_as_the_full_cli(env: dict[str, str], argv: list[str],
                                                   fast: bool) -> None:
    _warm(env)
    code, out, err, mods = _run(argv, env)
    full = _run(argv, {**env, "DEBVISOR_NO_FAST_QUERY": "1"})
    assert (code, out, err) == full[:3]
    assert "click" in full[3]
    assert ("click" not in mods) == fast, (argv, code, err)


def test_fast_runs_show_the_values_the_cli_would(env: dict[str, str]) -> None:
    _warm(env)
    code, out, _, mods = _run(FAST[2], env)
    assert code == 0 and "click" not in mods
    assert '"level": "high"' in out and '"count": 3' in out and '"ratio": 0.5' in out
    assert '"where": "/tmp"' in out and '"json": true' in out


def test_an_edited_source_or_another_selection_takes_the_full_cli(env: dict[str, str],
                                                                  site_plugins: Path) -> None:
    _warm(env)
    assert "click" not in _run([*ECHO, "x"], env)[3]
    assert "click" in _run([*ECHO, "x"], {**env, "DEBVISOR_DISABLE_PLUGINS": "broken,slow"})[3]
    src = site_plugins / "dv_testplugins" / "queries.py"
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert "click" in _run([*ECHO, "x"], env)[3]  # the entry named the old mtime
    assert "click" not in _run([*ECHO, "x"], env)[3]  # stored again by that run


def test_a_disabled_plugin_is_not_run_from_the_cache(env: dict[str, str]) -> None:
    _warm(env)
    code, _, err, _ = _run([*ECHO, "x"], {**env, "DEBVISOR_DISABLE_PLUGINS": "broken,queries"})
    assert code == 2 and "disabled by DEBVISOR_DISABLE_PLUGINS" in err
