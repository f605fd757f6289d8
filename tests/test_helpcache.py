"""`debvisor --help` from the help cache: the same text as click renders, click not imported
on a hit, and a stale entry (a source file edited, another width) never served."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import debvisor_core.cli as cli_module


def _run(*argv: str, env: dict[str, str]) -> tuple[str, set[str]]:
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "debvisor_core", *argv],
                         capture_output=True, text=True, env=env, timeout=60, check=True)
    mods = {line.split("|")[-1].strip() for line in res.stderr.splitlines()
            if line.startswith("import time:")}
    return res.stdout, mods


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "80"}
    e.pop("DEBVISOR_NO_HELP_CACHE", None)
    return e


@pytest.mark.parametrize("argv", [["--help"], ["ops", "--help"], ["-h"]])
def test_cached_help_is_clicks_help_without_click(env: dict[str, str], argv: list[str]) -> None:
    first, mods1 = _run(*argv, env=env)
    second, mods2 = _run(*argv, env=env)
    fresh, _ = _run(*argv, env={**env, "DEBVISOR_NO_HELP_CACHE": "1"})
    assert first == second == fresh and "Usage:" in first
    assert "click" in mods1 and "click" not in mods2


def test_an_edited_source_or_another_width_is_rendered_again(env: dict[str, str]) -> None:
    _run("--help", env=env)
    narrow, mods = _run("--help", env={**env, "COLUMNS": "60"})
    assert "click" in mods
    assert narrow == _run("--help", env={**env, "COLUMNS": "60",
                                         "DEBVISOR_NO_HELP_CACHE": "1"})[0]
    src = Path(cli_module.__file__)
    st = src.stat()
    try:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        _, mods = _run("--help", env=env)
        assert "click" in mods  # the cached entry named cli.py's old mtime
    finally:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_errors_are_not_cached(env: dict[str, str]) -> None:
    for _ in range(2):
        res = subprocess.run([sys.executable, "-m", "debvisor_core", "nosuchword", "--help"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 2 and "No such command" in res.stderr
    assert not list((Path(env["XDG_CACHE_HOME"]) / "debvisor").glob("help-*"))
