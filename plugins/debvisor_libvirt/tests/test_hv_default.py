"""`hv` against libvirt's built-in test:///default (no config): works on a bare machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def test_list_shows_the_test_domain(dv: Any) -> None:
    res = dv("--json", "hv", "list")
    assert res.code == 0, res
    vms = res.json["vms"]
    assert [(v["name"], v["node"], v["state"]) for v in vms] == [("test", "local", "running")]
    assert vms[0]["vcpus"] == 2 and vms[0]["memory_mib"] == 2048
    assert vms[0]["registered"] is False
    human = dv("hv", "list")
    assert human.stdout.splitlines()[0].split() == [
        "NAME", "NODE", "STATE", "VCPUS", "MEMORY", "UPTIME", "REGISTERED"]


@pytest.mark.parametrize(("flt", "expected"), [("running", ["test"]), ("stopped", []),
                                                ("paused", []), ("all", ["test"])])
def test_list_filter(dv: Any, flt: str, expected: list[str]) -> None:
    res = dv("hv", "list", "--filter", flt, "--json")
    assert res.code == 0, res
    assert [v["name"] for v in res.json["vms"]] == expected


def test_list_unknown_node_is_one_clear_error(dv: Any) -> None:
    res = dv("hv", "list", "--node", "nodeX")
    assert res.code == 2
    assert res.stderr.strip() == "[ERROR] unknown node 'nodeX'; configured nodes: local"


def test_resources_rates(dv: Any) -> None:
    res = dv("hv", "resources", "test", "--interval", "0.3", "--json")
    assert res.code == 0, res
    d = res.json
    assert d["vcpus"] == 2 and d["memory"]["max_mib"] == 8192
    assert d["memory"]["balloon_actual_mib"] == 2048
    assert 0.25 <= d["interval_s"] < 2
    assert d["disks"][0]["device"] == "vda" and d["disks"][0]["read_bps"] > 0
    assert d["nics"][0]["device"] == "testnet0" and d["nics"][0]["rx_bps"] > 0
    human = dv("hv", "resources", "test", "--interval", "0.1")
    assert "vCPUs        2" in human.stdout and "disk vda" in human.stdout


def test_snapshot_create_runs_as_an_operation(dv: Any) -> None:
    res = dv("hv", "snapshot", "test", "create", "s1", "--json", "--yes")
    assert res.code == 0, res
    assert res.json["status"] == "succeeded"
    assert res.json["steps"][0]["name"] == "CreateSnapshot"
    plan = dv("hv", "snapshot", "test", "create", "--dry-run")
    assert plan.code == 0 and "create snapshot 'dv-" in plan.stdout
    listing = dv("hv", "snapshot", "test", "list", "--json")
    assert listing.code == 0 and listing.json["snapshots"] == []  # test:/// forgets per process


@pytest.mark.parametrize("action", ["revert", "delete"])
def test_snapshot_revert_or_delete_unknown_is_bad_input(dv: Any, action: str) -> None:
    res = dv("hv", "snapshot", "test", action, "nope", "--yes")
    assert res.code == 2, res  # a user mistake, found while planning (not a preflight refusal)
    assert res.stderr.strip().splitlines() == [
        "[ERROR] VM test has no snapshot named 'nope' (see `hvctl snapshot test list`)"]
    if action == "revert":
        res = dv("hv", "snapshot", "test", "revert")
        assert res.code == 2 and "needs the snapshot NAME" in res.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["resources", "no such"], "[ERROR] bad VM name 'no such': use 1-64 letters"),
    (["resources", "ghost"], "[ERROR] no VM named 'ghost' on any node (local)"),
    (["migrate", "test", "node9"], "[ERROR] unknown node 'node9'; configured nodes: local"),
    (["migrate", "test", "local", "--bandwidth", "10 furlongs"],
     "[ERROR] bad bandwidth '10 furlongs': use a number with a unit, e.g. 100Mbps"),
    (["migrate", "test", "local", "--bandwidth", "0Mbps"],
     "[ERROR] bad bandwidth '0Mbps': it must be more than zero"),
    (["migrate", "test", "local", "--max-downtime", "soon"], "[ERROR] bad max downtime 'soon'"),
    (["snapshot", "test", "create", "a/b"], "[ERROR] bad snapshot name 'a/b'"),
])
def test_bad_input_is_one_clear_error(dv: Any, args: list[str], message: str) -> None:
    res = dv("hv", *args)
    assert res.code == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), res
    assert "Traceback" not in res.stderr


def test_hvctl_alias(dv_state: Any) -> None:
    exe = shutil.which("hvctl", path=str(Path(sys.executable).parent))
    assert exe, "hvctl is not installed next to python"
    res = subprocess.run([exe, "list", "--filter", "running"], capture_output=True, text=True,
                         env=dict(os.environ), timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[1].split()[:3] == ["test", "local", "running"]
    helped = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert "Usage: hvctl" in helped.stdout


def test_every_hv_command_has_an_example(dv: Any) -> None:
    import click
    from debvisor_libvirt.cli import hv

    def walk(cmd: click.Command, path: list[str]) -> list[list[str]]:
        out = [path]
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                out += walk(sub, [*path, name])
        return out

    for path in walk(hv, []):
        res = dv("hv", *path, "--help")
        assert res.code == 0 and "Example" in res.stdout, path  # "Example:" or "Examples:"


def test_list_reports_an_unreachable_node_and_lists_the_rest(dv: Any, dv_state: Any) -> None:
    dv_state.config({"hv": {"nodes": {
        "local": {"uri": "test:///default"},
        "ghost": {"uri": "qemu+unix:///system?socket=/tmp/dv-no-such-node.sock"}}}})
    res = dv("--json", "hv", "list")
    assert res.code == 1
    assert [v["name"] for v in res.json["vms"]] == ["test"]
    assert "ghost" in res.json["unreachable"]
    assert "[ERROR] node ghost (qemu+unix:///system?socket=/tmp/dv-no-such-node.sock) is unreachable" \
        in res.stderr
