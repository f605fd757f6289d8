"""`debvisor ceph …` as declared actions: the declarations, the generated commands (today's
spellings, under both `debvisor ceph` and `cephctl`), what `ceph --help` imports, and the
checks the Param model cannot say (refused before any connection)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from debvisor_core.testing import imports_of, one_error

OPS = ["--json", "--dry-run", "--check", "--yes", "--force-maintenance", "--rollback"]


@pytest.fixture
def offline(dv_state: Any, tmp_path: Path) -> Path:
    """A [ceph] config whose mon is a closed port: exit 2 with the input's sentence proves the
    input was refused before any connection was tried."""
    conf, keyring = tmp_path / "ceph.conf", tmp_path / "keyring"
    conf.write_text("[global]\nmon host = 127.0.0.1:1\n")
    keyring.write_text("[client.admin]\nkey = AQ==\n")
    keyring.chmod(0o600)
    path: Path = dv_state.config({"ceph": {"conf": str(conf), "keyring": str(keyring),
                                           "timeout": 1, "provisioner": "file"}})
    return path


def test_every_ceph_command_is_a_declared_action(dv: Any) -> None:
    res = dv("actions", "list", "--plugin", "ceph", "--json")
    assert res.code == 0, res
    got = {a["path"]: a for a in res.json}
    reads = {"ceph.status", "ceph.osd.list", "ceph.osd.ok-to-stop", "ceph.pool.capacity",
             "ceph.alerts", "ceph.maintenance-plan"}
    kinds = {"ceph.noout.set": "ceph.noout", "ceph.noout.unset": "ceph.noout",
             "ceph.pg.balance": "ceph.pg-balance", "ceph.join": "ceph.join"}
    assert set(got) == reads | set(kinds)
    for path in reads:
        assert not got[path]["changes_state"] and got[path]["kind"] is None, path
    for path, kind in kinds.items():
        assert got[path]["changes_state"] and got[path]["kind"] == kind, path
    assert [p for p, a in got.items() if a["destructive"]] == ["ceph.join"]
    for a in got.values():
        assert a["summary"] and a["examples"] and a["result"], a["path"]
        assert a["privilege"] == "root", a["path"]  # the admin keyring is owner-only
        assert all(p["description"] for p in a["params"]["properties"].values()), a["path"]
    props = got["ceph.pg.balance"]["params"]["properties"]
    assert (props["max_moves"]["minimum"], props["max_moves"]["maximum"]) == (1, 10000)
    assert props["max_moves"]["default"] == 50 and props["apply"]["type"] == "boolean"
    props = got["ceph.osd.list"]["params"]["properties"]
    assert (props["overload"]["minimum"], props["overload"]["maximum"]) == (1.01, 3.0)
    assert got["ceph.join"]["params"]["required"] == ["devices"]
    assert got["ceph.maintenance-plan"]["params"]["required"] == ["node"]


def _spellings(cmd: click.Command) -> tuple[list[str], list[str]]:
    args = [f"{p.name}{'' if p.required else '?'}{'...' if p.nargs == -1 else ''}"
            for p in cmd.params if isinstance(p, click.Argument)]
    opts = [o for p in cmd.params if isinstance(p, click.Option) for o in p.opts
            if o.startswith("--")]
    return args, opts


def test_generated_commands_keep_todays_arguments_and_options() -> None:
    from debvisor_ceph.cli import ceph

    want = {
        ("status",): ([], ["--json"]),
        ("osd", "list"): ([], ["--overload", "--json"]),
        ("osd", "ok-to-stop"): (["ids?..."], ["--host", "--json"]),
        ("pool", "capacity"): ([], ["--growth", "--no-record", "--json"]),
        ("pg", "balance"): ([], ["--apply", "--include-pg-num", "--max-moves", *OPS]),
        ("alerts",): ([], ["--all", "--json"]),
        ("noout", "set"): ([], ["--reason", *OPS]),
        ("noout", "unset"): ([], ["--reason", *OPS]),
        ("maintenance-plan",): (["node"], ["--json"]),
        ("join",): ([], ["--devices", "--class", "--weight", "--initial-weight", "--host", *OPS]),
    }
    found: dict[tuple[str, ...], click.Command] = {}

    def walk(group: click.Group, prefix: tuple[str, ...]) -> None:
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                walk(cmd, (*prefix, name))
            else:
                found[(*prefix, name)] = cmd

    walk(ceph, ())
    assert set(found) == set(want)
    for path, spelling in want.items():
        assert _spellings(found[path]) == spelling, path
    # the sub-groups kept their own help (attach() reused them)
    assert ceph.commands["noout"].help is not None
    assert ceph.commands["noout"].help.startswith("Set or unset the cluster-wide noout flag")
    assert (ceph.commands["osd"].help or "").startswith("OSDs: list with suggestions")


@pytest.mark.parametrize("argv", [["ceph", "--help"], ["ceph", "pg", "balance", "--help"]])
def test_help_imports_neither_rados_nor_the_analysis(argv: list[str]) -> None:
    out, modules = imports_of(*argv)
    assert "Usage:" in out and "Example" in out
    heavy = {"rados", "debvisor_ceph.client", "debvisor_ceph.analysis", "debvisor_ceph.steps",
             "debvisor_ceph.join", "debvisor_core.engine"}
    assert not heavy & modules, heavy & modules


def test_cephctl_is_the_same_tree(dv: Any) -> None:
    cephctl = str(Path(sys.executable).parent / "cephctl")
    res = dv("noout", "set", "--help", prog=[cephctl])
    assert res.code == 0, res
    assert res.stdout.startswith("Usage: cephctl noout set [OPTIONS]")
    assert "--reason" in res.stdout and "--rollback" in res.stdout


@pytest.mark.parametrize("argv, words", [
    (["osd", "ok-to-stop"], "give either OSD ids or --host, not both or neither"),
    (["osd", "ok-to-stop", "1", "--host", "n1"], "give either OSD ids or --host"),
    (["join", "--devices", "file:1G", "--weight", "1", "--initial-weight", "0", "--yes"],
     "give --weight or --initial-weight, not both"),
    (["pool", "capacity", "--growth", "soon"], "growth rate"),
])
def test_input_is_refused_before_connecting(dv: Any, offline: Path, argv: list[str],
                                            words: str) -> None:
    res = dv("ceph", *argv)
    assert res.code == 2, res
    assert words in one_error(res.stderr)


@pytest.mark.parametrize("argv, words", [
    (["pg", "balance", "--max-moves", "0"], "0 is not in the range 1<=x<=10000"),
    (["osd", "list", "--overload", "5"], "5.0 is not in the range 1.01<=x<=3.0"),
    (["join", "--weight", "-1", "--devices", "file:1G"], "-1.0 is not in the range x>=0"),
    (["join", "--yes"], "Missing option '--devices'"),
])
def test_click_still_checks_ranges_and_required_options(dv: Any, offline: Path, argv: list[str],
                                                        words: str) -> None:
    res = dv("ceph", *argv)
    assert res.code == 2, res
    assert words in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("params, words", [
    ({"weight": 1, "initial_weight": 0, "devices": ["file:1G"]}, "not both"),
    ({"weight": -1, "devices": ["file:1G"]}, "parameter weight: -1 is below 0"),
    ({"class": "ssd"}, "parameter devices is required"),
    ({"devices": "file:1G"}, "parameter devices: 'file:1G' is not a list of strings"),
    ({"devices": ["file:1G"], "clas": "ssd"}, "unknown parameter 'clas'"),
])
def test_actions_run_refuses_what_the_command_line_refuses(dv: Any, offline: Path,
                                                           params: dict[str, Any],
                                                           words: str) -> None:
    res = dv("actions", "run", "ceph.join", "-", "--yes", input=json.dumps(params))
    assert res.code == 2, res
    assert words in one_error(res.stderr)


def test_rollback_with_nothing_to_roll_back(dv: Any, offline: Path) -> None:
    """--rollback needs no --devices (the operation's arguments only narrow the choice)."""
    res = dv("ceph", "join", "--rollback", "--yes")
    assert res.code == 2, res
    assert "no successful 'ceph.join' operation to roll back" in one_error(res.stderr)
    res = dv("ceph", "noout", "unset", "--rollback", "--yes")
    assert "no successful 'ceph.noout' operation to roll back" in one_error(res.stderr)


# --- against the lab cluster -----------------------------------------------------------


@pytest.fixture
def lab_dv(dv: Any, dv_state: Any, dv_lab: Any) -> Any:
    """`dv` pointed at the lab cluster (`debvisor lab up ceph`)."""
    dv_state.config({}, base=dv_lab.require("ceph"))
    return dv


def _noout_is_set(dv: Any) -> bool:
    return bool(dv("ceph", "status", "--json").json["noout"]["set"])


@pytest.mark.lab
@pytest.mark.root
def test_noout_from_either_front_end_and_todays_outputs(lab_dv: Any) -> None:
    dv = lab_dv
    res = dv("actions", "run", "ceph.noout.set", "-", "--yes",
             input=json.dumps({"reason": "via actions run"}))
    assert res.code == 0, res
    assert (res.json["kind"], res.json["status"]) == ("ceph.noout", "succeeded")
    try:
        assert _noout_is_set(dv)
        again = dv("ceph", "noout", "set", "--json", "--yes")
        assert again.code == 0 and again.json == {"flag": "noout", "set": True, "changed": False}
        again = dv("actions", "run", "ceph.noout.set", "-", "--yes", input="{}")
        assert again.code == 0 and again.json == {"flag": "noout", "set": True, "changed": False}
        assert dv("ceph", "noout", "set", "--yes").stdout == "noout is already set; nothing to do\n"
        dry = dv("ceph", "noout", "unset", "--dry-run")
        assert dry.code == 0, dry
        assert dry.stdout == "Plan: unset noout\n  1. unset the Ceph noout flag\n"
        assert _noout_is_set(dv)
    finally:
        back = dv("ceph", "noout", "set", "--rollback", "--yes")  # the run of `actions run`
    assert back.code == 0, back
    assert not _noout_is_set(dv)
    res = dv("ceph", "noout", "set", "--reason", "human", "--yes")
    try:
        assert res.code == 0 and res.stdout.splitlines()[-1] == "noout set", res
    finally:
        res = dv("ceph", "noout", "unset", "--yes")
    assert res.code == 0 and res.stdout.splitlines()[-1] == "noout unset", res
    assert not _noout_is_set(dv)


@pytest.mark.lab
@pytest.mark.root
def test_balance_report_from_either_front_end(lab_dv: Any) -> None:
    cli = lab_dv("ceph", "pg", "balance", "--json", "--max-moves", "5")
    assert cli.code == 0, cli
    run = lab_dv("actions", "run", "ceph.pg.balance", "-", input=json.dumps({"max_moves": 5}))
    assert run.code == 0, run
    for doc in (cli.json, run.json):
        assert set(doc) >= {"pgs_per_osd", "score", "balancer", "recommendations", "expected"}
        assert len([r for r in doc["recommendations"] if r["kind"] == "upmap"]) <= 5
    human = lab_dv("ceph", "pg", "balance", "--dry-run")  # without --apply: only the report
    assert human.code == 0 and human.stdout.startswith("PGs per OSD: min "), human
