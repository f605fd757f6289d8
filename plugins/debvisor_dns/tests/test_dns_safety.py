"""Refusals with one clear error and nothing changed; primary failover; prerequisites."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.root]


def _one_error(stderr: str) -> str:
    errors = [ln for ln in stderr.splitlines() if ln.startswith("[ERROR]")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    return errors[0]


@pytest.mark.parametrize("which, words", [("wrong_key_file", "bad signature"),
                                          ("unknown_key_file", "does not know this key")])
def test_rejected_tsig_key_is_one_clear_error_and_changes_nothing(
        dv: Any, dv_state: Any, lab_config: Any, name: str, which: str, words: str) -> None:
    lab = lab_config
    dv_state.config({"dns": {"tsig_key_file": lab.dns["lab"][which], "timeout": 3}},
                    base=lab.config_path)
    res = dv("dns", "update", name, "10.77.0.70", "--yes")
    assert res.code == 3, res
    err = _one_error(res.stderr)
    assert words in err and lab.primary in err and "nothing was changed" in err
    assert lab.both(name) == [(None, [])] * 2
    res = dv("--json", "dns", "check", lab.zone)
    assert res.code == 1 and res.json["zones"][0]["status"] == "crit"
    assert words in res.json["zones"][0]["tsig"][lab.primary]


def test_name_outside_the_zone_is_bad_input(dv: Any, lab_config: Any) -> None:
    res = dv("dns", "update", "host.example.com", "10.77.0.71", "--zone", "lab.debvisor.test",
             "--yes")
    assert res.code == 2, res
    assert "host.example.com. is outside zone lab.debvisor.test" in _one_error(res.stderr)
    res = dv("dns", "update", "host.example.com.", "10.77.0.71", "--yes")
    assert res.code == 2 and "outside any configured zone" in res.stderr


@pytest.mark.parametrize("args, words", [
    (["x", "10.77.0.300"], "is not an IPv4 address"),
    (["x", "10.77.0.1", "--type", "AAAA"], "is not an IPv6 address"),
    (["x", "no_such host!", "--type", "CNAME"], "is not a valid host name"),
    (["x", "vm-name"], "give --type"),
])
def test_invalid_values_are_bad_input(dv: Any, lab_config: Any, args: list[str],
                                      words: str) -> None:
    res = dv("dns", "update", *args, "--yes")
    assert res.code == 2, res
    assert words in _one_error(res.stderr)


def test_key_file_readable_by_others_is_refused(dv: Any, dv_state: Any, lab_config: Any,
                                                tmp_path: Path) -> None:
    lab = lab_config
    loose = tmp_path / "loose.key"
    shutil.copy(lab.dns["tsig_key_file"], loose)
    os.chmod(loose, 0o644)
    dv_state.config({"dns": {"tsig_key_file": str(loose)}}, base=lab.config_path)
    res = dv("dns", "update", "x", "10.77.0.72", "--yes")
    assert res.code == 2, res
    assert f"run: chmod 600 {loose}" in _one_error(res.stderr)


def test_first_primaries_down_the_next_takes_the_change(
        dv: Any, dv_state: Any, lab_config: Any, name: str, dead_ports: tuple[int, int]) -> None:
    lab = lab_config
    closed, silent = dead_ports
    primaries = [f"127.0.0.1:{closed}", f"127.0.0.1:{silent}", lab.secondary, lab.primary]
    dv_state.config({"dns": {"zones": {lab.zone: {"primaries": primaries}}}},
                    base=dv_state.config_path)
    res = dv("--json", "dns", "update", name, "10.77.0.73", "--yes")
    assert res.code == 0, res
    rep = res.json["result"]["dns"]
    assert rep["primaries"] == {f"{lab.zone}.": lab.primary}
    tried = {a["server"]: a["result"] for a in rep["attempts"]}
    assert tried[lab.secondary] == "REFUSED" and tried[lab.primary] == "NOERROR"
    assert lab.both(name) == [(300, ["10.77.0.73"])] * 2


def test_no_primary_takes_the_change_and_the_result_says_what_each_said(
        dv: Any, dv_state: Any, lab_config: Any, name: str, dead_ports: tuple[int, int]) -> None:
    lab = lab_config
    closed, _ = dead_ports
    primaries = [f"127.0.0.1:{closed}", lab.secondary]  # nothing there, then REFUSED
    dv_state.config({"dns": {"zones": {lab.zone: {"primaries": primaries}}}},
                    base=dv_state.config_path)
    res = dv("--json", "dns", "update", name, "10.77.0.74", "--yes")
    assert res.code != 0 and "no primary" in res.json["error"], res
    rep = res.json["result"]["dns"]
    tried = {a["server"]: a["result"] for a in rep["attempts"]}
    assert set(tried) == set(primaries) and tried[lab.secondary] == "REFUSED", rep
    assert [c["new"]["values"] for c in rep["changes"]] == [["10.77.0.74"]]
    assert "primaries" not in rep and lab.both(name) == [(None, [])] * 2


def test_send_update_fails_over_with_a_freshly_signed_message(
        lab_config: Any, name: str, dead_ports: tuple[int, int]) -> None:
    from debvisor_dns import wire
    from debvisor_dns.config import ZoneConfig, parse_server

    lab = lab_config
    closed, silent = dead_ports
    addrs = [f"127.0.0.1:{closed}", f"127.0.0.1:{silent}", lab.secondary, lab.primary]
    zone = ZoneConfig(f"{lab.zone}.", [parse_server(a, "p") for a in addrs], [], None)
    built: list[Any] = []
    key = lab.key()
    fqdn = f"{name}.{lab.zone}."
    change = {"name": fqdn, "type": "A", "new": {"ttl": 300, "values": ["10.77.0.74"]}}

    def build() -> Any:
        msg = wire.make_update(zone.name, key, [change], {f"{fqdn}/A": {"ttl": None,
                                                                         "values": []}})
        built.append(msg)
        return msg

    wire._failed.clear()
    out = wire.send_update(zone, build, timeout=0.5, key_name="debvisor-lab")
    assert [(a["server"], a["result"]) for a in out.attempts] == [
        (addrs[0], "connection refused"), (addrs[1], "timed out"),
        (lab.secondary, "REFUSED"), (lab.primary, "NOERROR")]
    assert str(out.server) == lab.primary
    assert len({m.id for m in built}) == 4  # a new message (id, TSIG time, MAC) per primary
    assert all(m is not built[0] for m in built[1:])


def test_concurrent_change_fails_the_prerequisite_and_is_not_overwritten(
        lab_config: Any, name: str) -> None:
    from debvisor_dns.config import load
    from debvisor_dns.plan import plan_update

    from debvisor_core.context import Context
    from debvisor_core.engine import run
    from debvisor_core.errors import RolledBack

    lab = lab_config
    lab.set_directly(name, "A", 300, ["10.77.0.80"])
    lab.settle(name, "A", 300, ["10.77.0.80"])
    ctx = Context(yes=True)
    op = plan_update(load(ctx), name, "10.77.0.81", None, None, None, with_ptr=False,
                     wait_ttl=True)
    assert op is not None
    lab.set_directly(name, "A", 300, ["10.77.0.99"])  # someone else, after our plan
    lab.settle(name, "A", 300, ["10.77.0.99"])
    with pytest.raises(RolledBack) as exc:
        run(ctx, op)
    assert "the records changed since they were read (NXRRSET" in exc.value.message
    assert "10.77.0.99" in exc.value.message
    assert lab.both(name) == [(300, ["10.77.0.99"])] * 2
