"""`debvisor join --mode dns`: this node's A and PTR record from [dns.join], planned like
`dns update` (what it replaces), nothing when already joined, undone by `join --rollback`;
checked on both lab servers with dnspython."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.root]


def _join_config(dv_state: Any, lab: Any, table: dict[str, Any]) -> None:
    dv_state.config({"dns": {"timeout": 1.5, "update_timeout": 2.0, "propagation_timeout": 10,
                             "join": table}}, base=lab.config_path)


def test_join_adds_the_node_record_once_and_rollback_removes_it(dv: Any, dv_state: Any,
                                                               lab_config: Any, name: str) -> None:
    lab = lab_config
    last = 100 + int(name[-2:], 16) % 100
    address = f"10.77.0.{last}"
    _join_config(dv_state, lab, {"name": name, "address": address, "zone": lab.zone})
    dry = dv("join", "--mode", "dns", "--dry-run")
    assert dry.code == 0, dry
    assert f"{name}.{lab.zone}." in dry.stdout and address in dry.stdout
    assert lab.both(name) == [(None, [])] * 2  # the dry run changed nothing

    res = dv("--json", "join", "--mode", "dns", "--yes")
    assert res.code == 0 and res.json["status"] == "succeeded", res
    assert lab.both(name) == [(300, [address])] * 2
    ptr = [lab.served(a, f"{last}.{lab.rzone}.", "PTR") for a in (lab.primary, lab.secondary)]
    assert ptr == [(300, [f"{name}.{lab.zone}."])] * 2

    again = dv("join", "--mode", "dns", "--yes")
    assert again.code == 0 and "nothing to join" in again.stdout + again.stderr, again

    back = dv("join", "--rollback", "--yes")
    assert back.code == 0, back
    assert lab.both(name) == [(None, [])] * 2
    assert [lab.served(a, f"{last}.{lab.rzone}.", "PTR")[1]
            for a in (lab.primary, lab.secondary)] == [[], []]


@pytest.mark.parametrize(("table", "said"), [
    ({"name": "n1"}, "[dns.join] address must be this node's IP address"),
    ({"address": "10.77.0.1; drop"}, "is not an IP address"),
    ({"address": "10.77.0.1", "ttl": "5m"}, "ttl must be a whole number"),
    ({"address": "10.77.0.1", "zonee": "x"}, "unknown key 'zonee'"),
    ({"address": "10.77.0.1"}, "zone is not set and [dns] vm_zone neither"),
])
def test_a_bad_join_table_is_one_sentence(dv: Any, dv_state: Any, lab_config: Any,
                                          table: dict[str, Any], said: str) -> None:
    _join_config(dv_state, lab_config, table)
    res = dv("join", "--mode", "dns", "--dry-run")
    assert res.code == 2 and said in res.stderr and "Traceback" not in res.stderr, res
