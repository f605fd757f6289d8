"""`dns update --batch` and the records `hv register` / `hv unregister` contribute."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from debvisor_core.engine import Operation, Step
from debvisor_core.errors import StepFailed

pytestmark = [pytest.mark.lab, pytest.mark.root]


def test_batch_is_one_operation_one_update_per_zone(dv: Any, lab_config: Any, name: str,
                                                    tmp_path: Path) -> None:
    lab = lab_config
    lines = ["# name type value ttl"]
    for i in range(40):
        lines.append(f"update {name}-{i} A 10.77.1.{i} 120")
    lines.append(f'update {name}-txt TXT "batch note"')
    lines.append(f"update {name}-rr 10.77.2.1")
    lines.append(f"update {name}-rr 10.77.2.2")  # two lines, one RRset
    lines.append(f"update 10.77.0.{200 + int(name[-2:], 16) % 50} PTR {name}-0.{lab.zone}.")
    batch = tmp_path / "changes.txt"
    batch.write_text("\n".join(lines) + "\n")
    res = dv("--json", "dns", "update", "--batch", str(batch), "--yes")
    assert res.code == 0, res
    steps = [s["description"] for s in res.json["steps"]]
    assert len(steps) == 3  # one UPDATE per zone, then one propagation wait
    assert steps[0].startswith("UPDATE lab.debvisor.test:") and "and 39 more" in steps[0]  # 42 RRsets
    assert steps[1].startswith("UPDATE 0.77.10.in-addr.arpa:")
    rep = res.json["result"]["dns"]
    assert len([a for a in rep["attempts"] if a["result"] == "NOERROR"]) == 2
    assert {(p["zone"], p["server"]) for p in rep["propagation"]} == {
        (z, s) for z in (f"{lab.zone}.", f"{lab.rzone}.") for s in (lab.primary, lab.secondary)}
    assert lab.both(f"{name}-39") == [(120, ["10.77.1.39"])] * 2
    assert lab.both(f"{name}-rr") == [(300, ["10.77.2.1", "10.77.2.2"])] * 2

    res = dv("dns", "update", "--rollback", "--yes")
    assert res.code == 0, res
    assert lab.both(f"{name}-0") == [(None, [])] * 2
    assert lab.both(f"{name}-rr") == [(None, [])] * 2


def test_batch_errors_name_the_line(dv: Any, lab_config: Any, tmp_path: Path) -> None:
    batch = tmp_path / "bad.txt"
    batch.write_text("update ok1 10.77.3.1\nupdate bad A 10.77.3.999\n")
    res = dv("dns", "update", "--batch", str(batch), "--yes")
    assert res.code == 2, res
    assert f"{batch}:2: A value '10.77.3.999' is not an IPv4 address" in res.stderr


@dataclass
class InventoryWrite(Step):
    """Stands for the hv plugin's own step; ``fail`` makes the operation roll back."""

    vm: str
    fail: bool

    def apply(self, ctx: Any, prior: dict[str, Any]) -> None:
        if self.fail:
            raise StepFailed("inventory write failed")


def _registration(ctx: Any, vm: dict[str, Any], *, fail: bool, delete: bool = False) -> Any:
    from debvisor_dns import plugin

    hook = plugin.debvisor_vm_unregistered if delete else plugin.debvisor_vm_registered
    steps = [InventoryWrite(vm["name"], fail), *hook(ctx, vm)]
    return Operation(kind="hv.register", title=f"register {vm['name']}",
                     steps=sorted(steps, key=lambda s: s.ORDER), params={"vm": vm["name"]})


def test_vm_register_adds_the_record_and_is_undone_with_the_operation(
        dv_state: Any, lab_config: Any, name: str) -> None:
    from debvisor_core.context import Context
    from debvisor_core.engine import run
    from debvisor_core.errors import RolledBack

    lab = lab_config
    dv_state.config({"dns": {"vm_zone": lab.zone}}, base=dv_state.config_path)
    addr = f"10.77.0.{100 + int(name[-2:], 16) % 50}"
    vm = {"name": name, "node": "node1", "owner": "ops", "role": "web", "tags": [],
          "addresses": [f"{addr}/24", "fd00::5"]}
    ptr = f"{addr.split('.')[-1]}.0.77.10.in-addr.arpa."
    fqdn = f"{name}.{lab.zone}."

    ctx = Context(yes=True)
    with pytest.raises(RolledBack):  # a later hv step fails: the DNS record goes too
        run(ctx, _registration(ctx, vm, fail=True))
    assert lab.both(name) == [(None, [])] * 2

    res = run(Context(yes=True), _registration(ctx, vm, fail=False))
    assert res.status == "succeeded"
    assert lab.both(name) == [(300, [addr])] * 2
    assert lab.both(ptr, "PTR") == [(300, [fqdn])] * 2
    assert {c["name"] for c in res.result["dns"]["changes"]} == {fqdn, ptr}

    res = run(Context(yes=True), _registration(ctx, vm, fail=False, delete=True))
    assert res.status == "succeeded"
    assert lab.both(name) == [(None, [])] * 2
    assert lab.both(ptr, "PTR") == [(None, [])] * 2


def test_vm_hooks_contribute_nothing_without_vm_zone(lab_config: Any) -> None:
    from debvisor_dns import plugin

    from debvisor_core.context import Context

    vm = {"name": "x", "addresses": ["10.77.0.9"]}
    assert plugin.debvisor_vm_registered(Context(), vm) == []
