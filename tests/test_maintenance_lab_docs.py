"""Maintenance mode, the lab, the docs and the README."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

from debvisor_core.lab import process
from debvisor_core.lab.manager import to_toml
from debvisor_core.testing import Runner, StateDir

ROOT = Path(__file__).resolve().parent.parent


def test_maintenance_blocks_operations(dv: Runner, dv_state: StateDir, site_plugins: Path) -> None:
    assert dv("maintenance", "enable", "--reason", "kernel upgrade").code == 0
    st = json.loads(dv("maintenance", "status", "--json").stdout)
    assert st["enabled"] and st["reason"] == "kernel upgrade"
    res = dv("--yes", "example", "note", "add", "n", "t")
    assert res.code == 3 and "maintenance mode is on" in res.stderr and "kernel upgrade" in res.stderr
    assert dv("--yes", "example", "note", "add", "n", "t", "--check").code == 3
    res = dv("--yes", "example", "note", "add", "n", "t", "--force-maintenance")
    assert res.code == 0 and "overridden by --force-maintenance" in res.stderr
    health = json.loads(dv("health", "--json", env={"DV_SLOW_MODE": "warn"}).stdout)
    assert {c["name"]: c["status"] for c in health["checks"]}["core.maintenance"] == "warn"
    assert dv("maintenance", "disable").code == 0
    assert dv("--yes", "example", "note", "add", "m", "t").code == 0
    assert not json.loads(dv("maintenance", "status", "--json").stdout)["enabled"]


def test_lab_up_is_idempotent_and_down_leaves_nothing(dv: Runner, dv_state: StateDir,
                                                     site_plugins: Path, tmp_path: Path) -> None:
    env = {"DEBVISOR_LAB_DIR": str(tmp_path / "lab")}
    res = dv("--json", "lab", "up", "example-echo", env=env)
    assert res.code == 0, res
    cfg = Path(res.json["config"])
    assert 'echo = "127.0.0.1:' in cfg.read_text()
    pid = process.read_pid(tmp_path / "lab" / "example-echo" / "echo.pid")
    assert pid is not None
    status = json.loads(dv("--json", "lab", "status", env=env).stdout)
    assert status["services"]["example-echo"] == {"running": True, "pid": pid}
    # the CLI pointed at the lab sees the service
    out = dv("--config", str(cfg), "health", "--json", "--only", "example.").json
    assert {c["name"]: c["summary"] for c in out["checks"]}["example.echo"].endswith("answers")
    # idempotent: the same process keeps running
    assert dv("lab", "up", "example-echo", env=env).code == 0
    assert process.read_pid(tmp_path / "lab" / "example-echo" / "echo.pid") == pid
    assert dv("lab", "env", env=env).stdout.strip() == f"export DEBVISOR_CONFIG={cfg}"
    assert json.loads(dv("--json", "lab", "env", env=env).stdout) == {"DEBVISOR_CONFIG": str(cfg)}
    assert dv("lab", "up", "nosuch", env=env).code == 2
    assert dv("lab", "down", "example-echo", env=env).code == 0
    assert not process.alive(pid) and not cfg.exists()


def test_toml_writer_round_trips() -> None:
    import tomllib

    data = {"hv": {"nodes": {"node1": {"uri": "qemu:///x?socket=/a b", "migration_address": "10.0.0.1"}},
                   "timeout": 3, "flags": [True, 1.5]},
            "dns": {"zones": {"lab.test": {"primaries": ["127.0.0.1:53"]}}}}
    assert tomllib.loads(to_toml(data)) == data


def test_every_hook_is_documented_and_the_example_matches() -> None:
    from debvisor_core import hookspecs

    doc = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [n for n in dir(hookspecs) if n.startswith("debvisor_")]
    assert len(hooks) >= 11
    missing = [h for h in hooks if f"### {h}\n" not in doc]
    assert not missing, f"hooks without an entry in docs/plugins.md: {missing}"
    tree = ast.parse((ROOT / "debvisor_core" / "hookspecs.py").read_text())
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        assert ast.get_docstring(fn), f"hook {fn.name} has no docstring"
    block = doc.split("<!-- file: docs/example-plugin/debvisor_example/plugin.py -->\n```python\n")[1]
    assert block.split("```")[0] == (ROOT / "docs/example-plugin/debvisor_example/plugin.py").read_text()


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    cmds = re.findall(r"^    (sudo \S.*)$", readme, re.M)
    assert cmds[:2] == ["sudo scripts/dev demo", "sudo scripts/dev test"]
    assert "scripts/dev test" in (ROOT / ".ci" / "run").read_text()
    assert os.access(ROOT / ".ci" / "run", os.X_OK) and os.access(ROOT / "scripts" / "dev", os.X_OK)


def test_plugin_distributions_declare_entry_points() -> None:
    import tomllib

    for pp in sorted((ROOT / "plugins").glob("*/pyproject.toml")):
        meta = tomllib.loads(pp.read_text())["project"]
        eps = meta["entry-points"]["debvisor.plugins"]
        assert eps and any(d.startswith("debvisor-core") for d in meta["dependencies"]), pp
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert core["name"] == "debvisor-core" and core["scripts"]["debvisor"] == "debvisor_core.entry:main"
    assert core["requires-python"] == ">=3.11"


def test_secret_files_must_be_owner_only_regular_files(tmp_path: Path) -> None:
    import pytest

    from debvisor_core.errors import BadInput
    from debvisor_core.secrets import read_secret, write_secret

    key = tmp_path / "key"
    write_secret(key, b"s3cret")
    assert key.stat().st_mode & 0o777 == 0o600 and read_secret(key) == b"s3cret"
    key.chmod(0o640)
    with pytest.raises(BadInput, match="readable by others .mode 0640.; run: chmod 600"):
        read_secret(key)
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(BadInput, match="is not a regular file"):
        read_secret(tmp_path / "dir")
    with pytest.raises(BadInput, match="does not exist"):
        read_secret(tmp_path / "missing")


def test_another_nodes_maintenance_needs_a_cluster_store(dv: Runner, dv_state: StateDir) -> None:
    res = dv("maintenance", "enable", "--node", "node9", "--reason", "r")
    assert res.code == 2 and "needs a cluster store" in res.stderr, res
    assert dv("--json", "maintenance", "status").json == {"enabled": False}
