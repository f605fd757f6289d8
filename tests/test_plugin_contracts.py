"""Plugin contracts: misspelled or mis-declared hooks are refused at load with the
plugin's name; an installed but disabled or broken plugin's word says why in one line;
every declared action has help and an example."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from debvisor_core.discovery import PluginEntry
from debvisor_core.plugins import PluginHost
from debvisor_core.testing import Runner


def _host_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> PluginHost:
    (tmp_path / f"{name}_mod.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    host = PluginHost()
    host._entries = {name: PluginEntry(name, f"{name}_mod", f"dist-{name}", "1", "")}
    return host


def test_misspelled_hook_is_refused_with_the_plugin_name(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    host = _host_with(tmp_path, monkeypatch, "typo", """
        from debvisor_core import hookimpl

        @hookimpl
        def debvisor_healthcheck(ctx):
            return []
    """)
    assert host.load("typo") is None
    assert "debvisor_healthcheck is not a DebVisor hook" in host.failed["typo"]


def test_hook_with_wrong_arguments_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = _host_with(tmp_path, monkeypatch, "wrongargs", """
        from debvisor_core import hookimpl

        @hookimpl
        def debvisor_health(ctx, verbose):
            return []
    """)
    assert host.load("wrongargs") is None
    assert "verbose" in host.failed["wrongargs"]
    del sys.modules["wrongargs_mod"]


def test_disabled_and_broken_plugin_words_say_why(dv: Runner, site_plugins: Path) -> None:
    res = dv("example", "note", "show", env={"DEBVISOR_DISABLE_PLUGINS": "example"})
    assert res.code == 2, res
    assert res.stderr.strip().splitlines()[-1] == (
        "[ERROR] 'example' is installed (from debvisor-example) but disabled by "
        "DEBVISOR_DISABLE_PLUGINS")
    res = dv("broken")
    assert res.code == 2
    assert "'broken' is installed (from debvisor-testplugins) but broken: ImportError" in res.stderr
    res = dv("nosuchword")
    assert res.code == 2 and "No such command 'nosuchword'" in res.stderr


def test_every_declared_action_has_help_and_an_example(dv: Runner, site_plugins: Path) -> None:
    listed = dv("actions", "list", "--json")
    assert listed.code == 0, listed
    assert listed.json, "no actions declared"
    for a in listed.json:
        assert a["summary"], a["path"]
        assert a["examples"], f"{a['path']} has no example"
        for name, p in a["params"]["properties"].items():
            assert p.get("description"), f"{a['path']} parameter {name} has no help"
