"""`debvisor dns …` as declared actions: the declarations, the generated commands (today's
spellings), `debvisor actions run dns.update` and the checks the Param model cannot say."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
import pytest

from debvisor_core.errors import BadInput
from debvisor_core.testing import one_error

ZONE = "lab.debvisor.test"


@pytest.fixture
def offline(dv_state: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A config whose primary is a closed port: exit 2 proves the input was refused first."""
    monkeypatch.setenv("DEBVISOR_PLUGINS", "dns")
    key = tmp_path / "ok.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'key "k" { algorithm hmac-sha256; secret "c2VjcmV0"; };\n')
    os.close(fd)
    path: Path = dv_state.config({"dns": {"tsig_key_file": str(key), "timeout": 0.2,
                                          "zones": {ZONE: {"primaries": ["127.0.0.1:9"]}}}})
    return path


def test_every_dns_command_is_a_declared_action(dv: Any, offline: Path) -> None:
    res = dv("actions", "list", "--plugin", "dns", "--json")
    assert res.code == 0, res
    got = {a["path"]: a for a in res.json}
    assert set(got) == {"dns.update", "dns.delete", "dns.show", "dns.check"}
    assert (got["dns.update"]["kind"], got["dns.delete"]["kind"]) == ("dns.update", "dns.delete")
    assert got["dns.delete"]["destructive"] and not got["dns.update"]["destructive"]
    assert not got["dns.show"]["changes_state"] and not got["dns.check"]["changes_state"]
    for a in got.values():
        assert a["summary"] and a["examples"] and a["result"], a["path"]
        assert all(p["description"] for p in a["params"]["properties"].values()), a["path"]
    props = got["dns.update"]["params"]["properties"]
    assert props["ttl"]["minimum"] == 1 and props["ttl"]["maximum"] == 2**31 - 1
    assert props["timeout"]["minimum"] == 0.1 and props["with_ptr"]["type"] == "boolean"


def _spellings(cmd: click.Command) -> tuple[list[str], list[str]]:
    args = [f"{p.name}{'' if p.required else '?'}" for p in cmd.params
            if isinstance(p, click.Argument)]
    opts = [o for p in cmd.params if isinstance(p, click.Option) for o in p.opts
            if o.startswith("--")]
    return args, opts


def test_generated_commands_keep_todays_arguments_and_options() -> None:
    from debvisor_dns.cli import dns_group

    ops = ["--json", "--dry-run", "--check", "--yes", "--force-maintenance", "--rollback"]
    want = {
        "update": (["name?", "value?"], ["--type", "--ttl", "--zone", "--with-ptr",
                                         "--no-wait-ttl", "--batch", "--timeout", *ops]),
        "delete": (["name"], ["--type", "--zone", "--with-ptr", "--timeout", *ops]),
        "show": (["name"], ["--type", "--zone", "--json"]),
        "check": (["zone?"], ["--json"]),
    }
    assert set(dns_group.commands) == set(want)
    for name, (args, opts) in want.items():
        assert _spellings(dns_group.commands[name]) == (args, opts), name


def test_record_types_are_case_insensitive_and_a_bad_one_is_todays_sentence() -> None:
    from debvisor_dns.actions import _rdtype

    assert [_rdtype(t) for t in ("a", "Aaaa", "CNAME", "txt", None)] == [
        "A", "AAAA", "CNAME", "TXT", None]
    with pytest.raises(BadInput) as exc:
        _rdtype("MX")
    assert exc.value.message == ("Invalid value for '--type': 'MX' is not one of 'a', 'aaaa', "
                                 "'cname', 'txt', 'ptr'.")


def test_net_changes_show_a_lowered_ttl_as_one_change() -> None:
    from debvisor_dns.actions import net_changes

    old, low, new = ({"ttl": 600, "values": ["10.0.0.1"]}, {"ttl": 60, "values": ["10.0.0.1"]},
                     {"ttl": 60, "values": ["10.0.0.2"]})
    ptr = {"zone": "r.", "name": "2.r.", "type": "PTR", "old": {"ttl": None, "values": []},
           "new": {"ttl": 60, "values": ["x.z."]}}
    reported = [{"zone": "z.", "name": "x.z.", "type": "A", "old": old, "new": low},
                {"zone": "z.", "name": "x.z.", "type": "A", "old": low, "new": new}, ptr]
    assert net_changes(reported) == [
        {"zone": "z.", "name": "x.z.", "type": "A", "old": old, "new": new}, ptr]


@pytest.mark.parametrize("params, words", [
    ({"batch": "B", "name": "x"}, "--batch takes the changes from the file; give no NAME"),
    ({"batch": "B", "type": "a"}, "--batch takes the changes from the file"),
    ({"batch": "B", "with_ptr": True}, "--batch takes the changes from the file"),
    ({"batch": "DIR"}, "Invalid value for '--batch': File "),
    ({"name": "x"}, "give NAME and VALUE (or --batch FILE)"),
    ({"name": "x", "value": "10.77.0.5", "type": "MX"}, "Invalid value for '--type': 'MX'"),
    ({"name": "x", "value": "10.77.0.5", "ttl": 0}, "parameter ttl: 0 is below 1"),
    ({"name": "x", "value": "10.77.0.5", "vaule": 1}, "unknown parameter 'vaule'"),
])
def test_actions_run_refuses_what_the_command_line_refuses(
        dv: Any, offline: Path, tmp_path: Path, params: dict[str, Any], words: str) -> None:
    batch = tmp_path / "b.txt"
    batch.write_text("update x 10.77.0.5\n")
    raw = {k: {"B": str(batch), "DIR": str(tmp_path)}.get(v, v) if isinstance(v, str) else v
           for k, v in params.items()}
    res = dv("actions", "run", "dns.update", "-", "--yes", input=json.dumps(raw))
    assert res.code == 2, res
    assert words in one_error(res.stderr)


@pytest.mark.lab
@pytest.mark.root
def test_actions_run_dns_update_then_the_command_rolls_it_back(dv: Any, lab_config: Any,
                                                                name: str) -> None:
    lab = lab_config
    res = dv("actions", "run", "dns.update", "-", "--yes",
             input=json.dumps({"name": name, "value": "10.77.0.81", "ttl": 120}))
    assert res.code == 0, res
    assert res.json["kind"] == "dns.update" and res.json["status"] == "succeeded"
    assert {p["server"] for p in res.json["result"]["dns"]["propagation"]} == {
        lab.primary, lab.secondary}
    assert lab.both(name) == [(120, ["10.77.0.81"])] * 2
    # the same JSON again: nothing to change
    res = dv("actions", "run", "dns.update", "-", "--yes",
             input=json.dumps({"name": name, "value": "10.77.0.81", "ttl": 120}))
    assert res.code == 0 and res.json == {"status": "unchanged"}, res
    # a lower-case --type on the command line, and the human result lines
    res = dv("dns", "update", name, "hello", "--type", "txt", "--yes")
    assert res.code == 0, res
    assert f"{name}.{lab.zone}. TXT: (none) → \"hello\" ttl 300" in res.stdout.splitlines()
    assert lab.both(name, "TXT") == [(300, ['"hello"'])] * 2
    # --rollback finds the runs of either front end (same kind, same target)
    for _ in range(2):
        res = dv("dns", "update", name, "--rollback", "--yes")
        assert res.code == 0, res
    assert lab.both(name) == [(None, [])] * 2 and lab.both(name, "TXT") == [(None, [])] * 2


@pytest.mark.lab
@pytest.mark.root
def test_a_critical_zone_is_exit_1_after_the_report_from_either_front_end(
        dv: Any, dv_state: Any, lab_config: Any) -> None:
    lab = lab_config
    dv_state.config({"dns": {"tsig_key_file": lab.dns["lab"]["wrong_key_file"]}},
                    base=lab.config_path)
    for res in (dv("--json", "dns", "check", lab.zone),
                dv("actions", "run", "dns.check", "-", input=json.dumps({"zone": lab.zone}))):
        assert res.code == 1, res
        assert res.json["status"] == "crit" and res.json["zones"][0]["zone"] == f"{lab.zone}."
        assert one_error(res.stderr) == "[ERROR] DNS check: 1 zone(s) critical"
