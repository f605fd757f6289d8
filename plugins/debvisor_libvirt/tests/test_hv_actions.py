"""`hv` as declared actions: every command but `console` is one, with today's operation
kinds; `hv --help` imports only what describes `hv`; actions run from JSON (no lab:
libvirt's test:///default)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

KINDS = {"hv.snapshot": "hv.snapshot", "hv.migrate": "hv.migrate", "hv.start": "hv.start",
         "hv.stop": "hv.stop",
         "hv.register": "hv.register", "hv.unregister": "hv.unregister",
         "hv.vnc.target": "hv.vnc-target", "hv.vnc.ensure": "hv.vnc-ensure",
         "hv.hook.install": "hv.hook-install"}


def test_every_command_but_console_is_a_declared_action() -> None:
    import click
    from debvisor_libvirt.actions import ACTIONS
    from debvisor_libvirt.cli import hv

    def leaves(cmd: click.Command, path: list[str]) -> list[str]:
        if not isinstance(cmd, click.Group):
            return [".".join(path)]
        ctx = click.Context(cmd)
        out: list[str] = []
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None
            out += leaves(sub, [*path, name])
        return out

    declared = {a.path for a in ACTIONS}
    assert set(leaves(hv, ["hv"])) == declared | {"hv.console"}
    for a in ACTIONS:
        assert a.summary and a.examples, a.path
        assert all(p.help for p in a.params), a.path
        if a.path in KINDS:
            assert a.op_kind == KINDS[a.path], a.path
        else:
            assert a.plan is None, a.path


def test_operation_options_on_every_state_change_of_a_kind(dv: Any) -> None:
    for words, kind in ((["snapshot"], "hv.snapshot"), (["migrate"], "hv.migrate"),
                        (["start"], "hv.start"), (["stop"], "hv.stop"),
                        (["register"], "hv.register"), (["unregister"], "hv.unregister"),
                        (["vnc", "target"], "hv.vnc-target"),
                        (["vnc", "ensure"], "hv.vnc-ensure"),
                        (["hook", "install"], "hv.hook-install")):
        res = dv("hv", *words, "--help")
        assert res.code == 0, res
        for opt in ("--dry-run", "--check", "--yes", "--force-maintenance", "--rollback",
                    "--json"):
            assert opt in res.stdout, (words, opt)
        assert f"'{kind}'" in res.stdout, words


def test_hv_help_imports_no_engine_nodes_or_command_decorators() -> None:
    code = ("import sys\n"
            "from debvisor_core.cli import main_group\n"
            "try:\n"
            "    main_group.main(['hv', '--help'], prog_name='debvisor')\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('debvisor'))), "
            "file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    loaded = set(res.stderr.split())
    assert "debvisor_libvirt.cli" in loaded, res.stderr
    for heavy in ("debvisor_core.engine", "debvisor_core.commands", "debvisor_libvirt.nodes",
                  "debvisor_libvirt.migrate", "debvisor_libvirt.snapshots"):
        assert heavy not in loaded, heavy


def test_actions_run_from_json(dv: Any, tmp_path: Any) -> None:
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"filter": "running"}))
    res = dv("actions", "run", "hv.list", str(params))
    assert res.code == 0, res
    assert [v["name"] for v in res.json["vms"]] == ["test"]
    params.write_text(json.dumps({"vm": "test", "action": "list"}))
    listed = dv("actions", "run", "hv.snapshot", str(params))
    assert listed.code == 0, listed
    assert listed.json == {"vm": "test", "node": "local", "snapshots": []}


def test_snapshot_list_is_a_read_and_create_rolls_back_by_vm(dv: Any) -> None:
    listed = dv("hv", "snapshot", "test", "list")
    assert listed.code == 0 and listed.stdout.strip() == "test has no snapshots", listed
    ops = dv("--json", "ops", "list")
    assert [o for o in ops.json if o["kind"] == "hv.snapshot"] == []  # nothing journalled
    made = dv("hv", "snapshot", "test", "create", "s1", "--yes")
    assert made.code == 0 and "create snapshot s1 of test: done" in made.stdout, made
    other = dv("hv", "snapshot", "nosuchvm", "create", "--rollback", "--yes")
    assert other.code == 2, other  # another VM's: not ours to undo
    assert "no successful 'hv.snapshot' on vm=nosuchvm, action=create" in other.stderr
    back = dv("--json", "hv", "snapshot", "test", "create", "--rollback", "--yes")
    assert back.code == 0 and back.json["status"] == "rolled-back", back


def test_migrate_refuses_tls_and_no_tls_together(dv: Any) -> None:
    res = dv("hv", "migrate", "test", "local", "--tls", "--no-tls")
    assert res.code == 2
    assert res.stderr.strip() == "[ERROR] give --tls or --no-tls, not both"


def test_path_options_still_refuse_a_directory(dv: Any, tmp_path: Any) -> None:
    res = dv("hv", "iso", "build", "-o", str(tmp_path / "x.iso"), "--user-data", str(tmp_path),
             "--instance-id", "a")
    assert res.code == 2
    assert f"Invalid value for '--user-data': File '{tmp_path}' is a directory." in res.stderr
    assert not (tmp_path / "x.iso").exists()
