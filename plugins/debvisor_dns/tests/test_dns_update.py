"""`debvisor dns update/delete/show/check` against the lab's real BIND9 primary and secondary."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.root]


def _audit_last(dv_state: Any) -> dict[str, Any]:
    lines = (dv_state.path / "log" / "audit.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def test_add_replace_delete_propagate_to_the_secondary(dv: Any, dv_state: Any, lab_config: Any,
                                                      name: str) -> None:
    lab = lab_config
    res = dv("--json", "dns", "update", name, "10.77.0.21", "--yes")
    assert res.code == 0, res
    # the command returns only once every authoritative server serves the record
    assert lab.both(name) == [(300, ["10.77.0.21"])] * 2
    prop = res.json["result"]["dns"]["propagation"]
    assert {p["server"] for p in prop} == {lab.primary, lab.secondary}
    assert all(p["dnssec"] == "valid" and p["ms"] >= 0 for p in prop)
    assert res.json["result"]["dns"]["primaries"] == {f"{lab.zone}.": lab.primary}
    event = _audit_last(dv_state)
    assert event["result"] == "succeeded" and event["user"]
    change = event["details"]["params"]["changes"][0]
    assert change["old"] == {"ttl": None, "values": []}
    assert change["new"] == {"ttl": 300, "values": ["10.77.0.21"]}

    res = dv("dns", "update", f"{name}.{lab.zone}", "10.77.0.22", "--ttl", "600", "--yes")
    assert res.code == 0, res
    assert "10.77.0.21 ttl 300 → 10.77.0.22 ttl 600" in res.stdout
    assert lab.both(name) == [(600, ["10.77.0.22"])] * 2
    assert _audit_last(dv_state)["details"]["params"]["changes"][0]["old"] == {
        "ttl": 300, "values": ["10.77.0.21"]}

    res = dv("dns", "update", name, "hello world", "--type", "TXT", "--yes")
    assert res.code == 0, res
    assert lab.both(name, "TXT") == [(300, ['"hello world"'])] * 2

    res = dv("--json", "dns", "show", name)
    assert res.code == 0, res
    assert res.json["agree"] is True
    assert {r["server"] for r in res.json["servers"]} == {lab.primary, lab.secondary}
    assert all(r["records"]["A"] == {"ttl": 600, "values": ["10.77.0.22"]} and
               r["dnssec"] == "valid" for r in res.json["servers"])

    res = dv("dns", "delete", name, "--type", "A", "--yes")
    assert res.code == 0, res
    assert lab.both(name) == [(None, [])] * 2
    assert lab.both(name, "TXT") == [(300, ['"hello world"'])] * 2  # only A went
    res = dv("dns", "delete", name, "--yes")
    assert res.code == 0, res
    assert lab.both(name, "TXT") == [(None, [])] * 2
    res = dv("dns", "delete", name, "--yes")
    assert res.code == 2 and "nothing to delete" in res.stderr


def test_a_resumed_update_reports_every_run(dv: Any, lab_config: Any, name: str) -> None:
    """Killed after its UPDATE was verified and before propagation: `ops resume` waits
    for every server, and its result has the first run's change, attempts and primary."""
    lab = lab_config
    res = dv("--json", "dns", "update", name, "10.77.0.51", "--yes",
             env={"DEBVISOR_FAULTS": "DnsPropagation:kill-before"})
    assert res.code == -9, res  # SIGKILL: the journal says interrupted
    op = json.loads(dv("--json", "ops", "list").stdout)[0]
    assert op["kind"] == "dns.update" and op["status"] == "interrupted", op
    res = dv("--json", "ops", "resume", op["id"], "--yes")
    assert res.code == 0, res
    dns = res.json["result"]["dns"]
    assert dns["primaries"] == {f"{lab.zone}.": lab.primary}, dns
    assert [(c["old"], c["new"]) for c in dns["changes"]] == [
        ({"ttl": None, "values": []}, {"ttl": 300, "values": ["10.77.0.51"]})]
    assert [a["result"] for a in dns["attempts"]] == ["NOERROR"]
    assert {p["server"] for p in dns["propagation"]} == {lab.primary, lab.secondary}
    assert lab.both(name) == [(300, ["10.77.0.51"])] * 2


def test_dry_run_shows_old_to_new_and_changes_nothing(dv: Any, lab_config: Any, name: str) -> None:
    lab = lab_config
    lab.set_directly(name, "A", 300, ["10.77.0.30"])
    lab.settle(name, "A", 300, ["10.77.0.30"])
    res = dv("dns", "update", name, "10.77.0.31", "--dry-run")
    assert res.code == 0, res
    assert "10.77.0.30 ttl 300 → 10.77.0.31 ttl 300" in res.stdout
    assert lab.both(name) == [(300, ["10.77.0.30"])] * 2
    res = dv("dns", "update", name, "10.77.0.30")
    assert res.code == 0 and "nothing to change" in res.stdout


def test_rollback_restores_the_exact_prior_rrsets(dv: Any, lab_config: Any, name: str) -> None:
    lab = lab_config
    lab.set_directly(name, "A", 123, ["10.77.0.41", "10.77.0.42"])
    lab.settle(name, "A", 123, ["10.77.0.41", "10.77.0.42"])
    res = dv("--json", "dns", "update", name, "10.77.0.43", "--ttl", "600", "--with-ptr", "--yes")
    assert res.code == 0, res
    first_id = res.json["id"]
    assert lab.both(name) == [(600, ["10.77.0.43"])] * 2
    ptr = "43.0.77.10.in-addr.arpa."
    assert lab.both(ptr, "PTR") == [(600, [f"{name}.{lab.zone}."])] * 2

    other = name + "-b"
    res = dv("--json", "dns", "update", other, "10.77.0.44", "--yes")
    assert res.code == 0, res

    # `dns update --rollback` undoes the last change (the other name)…
    res = dv("dns", "update", "--rollback", "--yes")
    assert res.code == 0, res
    assert lab.both(other) == [(None, [])] * 2
    assert lab.both(name) == [(600, ["10.77.0.43"])] * 2
    # …and `ops rollback ID` any: both records and the TTL exactly as before
    res = dv("ops", "rollback", first_id, "--yes")
    assert res.code == 0, res
    assert lab.both(name) == [(123, ["10.77.0.41", "10.77.0.42"])] * 2
    assert lab.both(ptr, "PTR") == [(None, [])] * 2


def test_ttl_lowering_lowers_waits_the_old_ttl_then_changes(dv: Any, lab_config: Any,
                                                            name: str) -> None:
    lab = lab_config
    lab.set_directly(name, "A", 2, ["10.77.0.51"])
    lab.settle(name, "A", 2, ["10.77.0.51"])
    t0 = time.monotonic()
    res = dv("--json", "dns", "update", name, "10.77.0.52", "--ttl", "1", "--yes")
    took = time.monotonic() - t0
    assert res.code == 0, res
    steps = [s["description"] for s in res.json["steps"]]
    assert "lower the TTL 2 → 1 first" in steps[0] and "10.77.0.51 ttl 2 → 10.77.0.51 ttl 1" in steps[0]
    assert steps[2].startswith("wait 2 s (the old TTL")
    assert "then change the value" in steps[3] and "10.77.0.51 ttl 1 → 10.77.0.52 ttl 1" in steps[3]
    assert "waiting 2 s for the old TTL" in res.stderr
    assert took >= 2.0  # the old TTL was waited out (computed from the TTL, not a fixed sleep)
    assert res.json["result"]["dns"]["waited_ttl_s"] == 2
    assert lab.both(name) == [(1, ["10.77.0.52"])] * 2

    res = dv("--json", "dns", "update", name, "10.77.0.53", "--ttl", "1", "--yes")
    assert res.code == 0 and len(res.json["steps"]) == 2  # same TTL: one UPDATE, no wait
    res = dv("--json", "dns", "update", "--rollback", "--yes")
    assert res.code == 0, res
    assert lab.both(name) == [(1, ["10.77.0.52"])] * 2
    res = dv("--json", "dns", "update", "--rollback", "--yes")
    assert res.code == 0, res
    assert lab.both(name) == [(2, ["10.77.0.51"])] * 2  # undone through both UPDATEs


def test_no_wait_ttl_skips_the_wait(dv: Any, lab_config: Any, name: str) -> None:
    lab = lab_config
    lab.set_directly(name, "A", 3600, ["10.77.0.61"])
    lab.settle(name, "A", 3600, ["10.77.0.61"])
    res = dv("--json", "dns", "update", name, "10.77.0.62", "--ttl", "60", "--no-wait-ttl", "--yes")
    assert res.code == 0, res
    assert not any(s["description"].startswith("wait 3600") for s in res.json["steps"])
    assert "caches may keep the old value" in res.stderr
    assert lab.both(name) == [(60, ["10.77.0.62"])] * 2


def test_check_and_health(dv: Any, lab_config: Any) -> None:
    res = dv("--json", "dns", "check")
    assert res.code == 0, res
    zones = {z["zone"]: z for z in res.json["zones"]}
    assert set(zones) == {"lab.debvisor.test.", "0.77.10.in-addr.arpa."}
    for z in zones.values():
        assert z["status"] == "ok", z
        assert z["dnssec"]["signed"] and z["dnssec"]["rrsets_validated"] > 0
        assert z["dnssec"]["days_left"] > 1
        assert len({s["serial"] for s in z["servers"]}) == 1
        assert set(z["tsig"].values()) == {"ok"}
    res = dv("--json", "health")
    dns_checks = [c for c in res.json["checks"] if c["name"] == "dns.zones"]
    assert dns_checks and dns_checks[0]["status"] == "ok", res


def test_a_resumed_propagation_waits_for_one_past_the_snapshots_serial(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An UPDATE verified in an earlier run reports from its record, and the propagation
    step resumed after it waits for one past the serial the snapshot read (mod 2**32); a
    serial this run's verify saw the primary serve wins."""
    from debvisor_dns import config as dnsconfig
    from debvisor_dns import propagation, steps

    from debvisor_core.context import Context
    from debvisor_core.model import Operation

    zone = "lab.debvisor.test."
    ch = {"name": f"www.{zone}", "type": "A", "old": None,
          "new": {"ttl": 300, "values": ["10.77.0.9"]}}
    ctx = Context(json=True)
    ctx.operation = Operation(kind="dns.update", title="t")
    attempt = {"server": "127.0.0.1:5353", "result": "NOERROR", "ms": 1.0}
    record = {"before": {f"www.{zone}/A": {"ttl": None, "values": []}}, "serial": 2**32 - 1,
              "primary": "127.0.0.1:5353", "sent": [f"www.{zone}/A"], "attempts": [attempt]}
    steps.UpdateRRsets(zone=zone, changes=[ch]).add_result(ctx, record)
    rep = ctx.operation.result["dns"]
    assert rep["primaries"] == {zone: "127.0.0.1:5353"} and rep["attempts"] == [attempt]
    assert rep["changes"] == [{"zone": zone, "name": ch["name"], "type": "A",
                               "old": {"ttl": None, "values": []}, "new": ch["new"]}]
    seen: list[Any] = []
    monkeypatch.setattr(dnsconfig, "load", lambda ctx: object())
    monkeypatch.setattr(propagation, "await_all",
                        lambda cfg, changes, **kw: seen.append(kw["targets"]) or [])
    steps.AwaitPropagation(changes=[{**ch, "zone": zone}]).apply(ctx, {})
    assert seen == [{zone: 0}]
    steps.UpdateRRsets(zone=zone, changes=[ch]).add_result(ctx, record)
    rep["serials"] = {zone: 7}  # what a verify of this run saw the primary serve
    steps.AwaitPropagation(changes=[{**ch, "zone": zone}]).apply(ctx, {})
    assert seen[-1] == {zone: 7}
