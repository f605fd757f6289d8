"""The CLI: help everywhere, global options, exit codes, log prefixes, laziness."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from debvisor_core.testing import Runner, imports_of

WALK = """
import json, click
from debvisor_core.cli import main_group
def walk(cmd, path):
    out = [path]
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None:
                out += walk(sub, [*path, name])
    return out
print(json.dumps(walk(main_group, [])))
"""


def test_help_on_every_command_of_every_plugin(dv: Runner, site_plugins: object) -> None:
    """Every command of every installed plugin answers --help with an example."""
    listing = dv(
        "--json", "plugins", "list",
        env={"DEBVISOR_DISABLE_PLUGINS": "broken"},
    )
    assert listing.code == 0, listing
    words = [p["name"] for p in listing.json if "debvisor_commands" in p["hooks"]]
    assert {"ops", "audit", "health", "lab", "maintenance", "plugins", "example", "slow"} <= set(words)
    paths = json.loads(subprocess.run(
        [sys.executable, "-c", WALK], capture_output=True, text=True, check=True,
        env={**os.environ, "DEBVISOR_DISABLE_PLUGINS": "broken"},
    ).stdout)
    assert len(paths) > 20
    for path in paths:
        res = dv(*path, "--help", env={"DEBVISOR_DISABLE_PLUGINS": "broken"})
        assert res.code == 0, res
        assert "Usage:" in res.stdout
        assert "Example" in res.stdout, f"`debvisor {' '.join(path)} --help` has no example"


def test_help_imports_no_plugin_and_no_pluggy(dv: Runner, site_plugins: object) -> None:
    dv("--help")  # warm the plugin cache
    out, modules = imports_of("--help")
    for heavy in ("pluggy", "debvisor_example", "debvisor_example.plugin", "dv_testplugins",
                  "importlib.metadata", "rich", "debvisor_core.engine", "tomllib"):
        assert heavy not in modules, f"--help imported {heavy}"
    assert "example" in out and "Plugin commands" in out


def test_typing_a_word_imports_only_that_plugin(dv: Runner, site_plugins: object) -> None:
    out, modules = imports_of("slow", "ping")
    assert out.strip() == "pong"
    assert "dv_testplugins.slow" in modules
    assert "debvisor_example.plugin" not in modules
    assert "dv_testplugins.broken" not in modules


def test_broken_plugin_warns_and_rest_works(dv: Runner, site_plugins: object) -> None:
    res = dv("--json", "plugins", "list")
    assert res.code == 0
    assert "[WARN] plugin broken failed to load: ImportError: this plugin is broken on purpose" in res.stderr
    rows = {r["name"]: r for r in res.json}
    assert rows["broken"]["status"].startswith("failed: ImportError")
    assert rows["example"]["status"] == "loaded"
    assert rows["example"]["distribution"] == "debvisor-example"
    assert rows["example"]["version"] == "1.0.0"
    assert {"debvisor_commands", "debvisor_health", "debvisor_lab_services"} <= set(rows["example"]["hooks"])
    res = dv("example", "note", "show")
    assert res.code == 0 and "no notes" in res.stdout
    assert "broken" not in res.stderr  # typing another word does not import it


def test_allowlist_and_blocklist(dv: Runner, site_plugins: object) -> None:
    res = dv("--json", "plugins", "list", env={"DEBVISOR_PLUGINS": "example"})
    rows = {r["name"]: r for r in res.json}
    assert rows["example"]["status"] == "loaded"
    assert rows["slow"]["status"] == "not in DEBVISOR_PLUGINS"
    assert "broken" not in res.stderr
    res = dv("--json", "plugins", "list", env={"DEBVISOR_DISABLE_PLUGINS": "broken,slow"})
    rows = {r["name"]: r for r in res.json}
    assert rows["slow"]["status"] == "disabled by DEBVISOR_DISABLE_PLUGINS"
    assert res.code == 0 and "plugin broken" not in res.stderr and "plugin slow" not in res.stderr
    res = dv("slow", "ping", env={"DEBVISOR_DISABLE_PLUGINS": "slow"})
    assert res.code == 2 and "'slow' is installed (from debvisor-testplugins) but disabled" in res.stderr
    assert "slow" not in dv("--help", env={"DEBVISOR_DISABLE_PLUGINS": "slow"}).stdout.split(
        "Plugin commands")[-1]


def test_unknown_command_and_bad_option_exit_2(dv: Runner) -> None:
    res = dv("nosuchword")
    assert res.code == 2 and res.stderr == "[ERROR] No such command 'nosuchword'. (see `debvisor --help`)\n"
    res = dv("ops", "show")
    assert res.code == 2
    assert res.stderr == "[ERROR] Missing argument 'ID'. (see `debvisor ops show --help`)\n"
    assert dv("ops", "list", "--limit", "0").code == 2
    res = dv("ops", "show", "2026*")  # an id is not a glob pattern
    assert res.code == 2 and "'2026*' is not an operation id" in res.stderr
    res = dv("ops", "show", "20991231-000000")
    assert res.code == 2
    assert res.stderr.strip() == "[ERROR] no operation '20991231-000000'; see `debvisor ops list`"


def test_bad_config_is_one_clear_error(dv: Runner, dv_state: object, tmp_path: object) -> None:
    res = dv("--config", "/nonexistent/debvisor.toml", "health")
    assert res.code == 2
    assert "[ERROR] config file /nonexistent/debvisor.toml does not exist" in res.stderr
    bad = dv_state.config_path  # type: ignore[attr-defined]
    bad.write_text("[dns\nzones = 1\n")
    res = dv("health")
    assert res.code == 2 and "is not valid TOML" in res.stderr and "Traceback" not in res.stderr


def test_log_prefixes_verbose_and_log_file(dv: Runner, site_plugins: object, tmp_path: object) -> None:
    import pathlib

    logf = pathlib.Path(str(tmp_path)) / "run.log"
    res = dv("--verbose", "--log-file", str(logf), "--yes", "example", "note", "add", "a", "b")
    assert res.code == 0, res
    lines = [ln for ln in res.stderr.splitlines() if ln]
    assert lines and all(ln.startswith(("[INFO] ", "[WARN] ", "[DEBUG] ")) for ln in lines), lines
    assert any(ln.startswith("[DEBUG] ") for ln in lines)
    logged = logf.read_text()
    assert "[INFO] step 1/2: write note 'a'" in logged
    assert dv("example", "note", "add", "a", "b", "--yes").stderr.count("[DEBUG]") == 0


def test_json_is_one_document(dv: Runner, site_plugins: object) -> None:
    res = dv("--json", "--yes", "example", "note", "add", "x", "y")
    doc = json.loads(res.stdout)
    assert doc["status"] == "succeeded" and doc["kind"] == "example.note-add"
    res = dv("example", "note", "show", "--json")
    assert json.loads(res.stdout) == {"x": "y"}


def test_completion_script_is_generated() -> None:
    res = subprocess.run([sys.executable, "-m", "debvisor_core"], capture_output=True, text=True,
                         env={**os.environ, "_DEBVISOR_COMPLETE": "bash_source"})
    assert "complete" in res.stdout and "_DEBVISOR_COMPLETE" in res.stdout


@pytest.mark.parametrize("argv", [["--version"], ["-h"]])
def test_version_and_short_help(dv: Runner, argv: list[str]) -> None:
    res = dv(*argv)
    assert res.code == 0 and res.stdout


ALIAS = "from debvisor_core.cli import alias_main; alias_main('example', 'exctl')"


def test_alias_script_runs_the_plugin_word(dv: Runner, dv_state: object, site_plugins: object) -> None:
    """`exctl note add …` is `debvisor example note add …`: usage, options, audit."""
    prog = [sys.executable, "-c", ALIAS]
    res = dv("note", "add", "--help", prog=prog)
    assert res.code == 0 and res.stdout.startswith("Usage: exctl note add [OPTIONS] NAME TEXT")
    res = dv("--json", "note", "add", "a", "b", "--yes", "--verbose", prog=prog)
    assert res.code == 0 and res.json["status"] == "succeeded" and "[DEBUG]" in res.stderr
    ev = json.loads(dv("audit", "show", "--json").stdout)[-1]
    assert (ev["plugin"], ev["action"]) == ("example", "note add")

