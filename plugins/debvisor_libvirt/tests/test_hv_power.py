"""`hv start` and `hv stop` (journalled power operations) on libvirt's test:///default:
the plan, the power-off, refusals by the preflight, and each step's undo (in one process:
test:///default starts over in every new connection). On real QEMU guests they run in
tests/panel/test_panel_vms.py, through rpcd and the panel."""

from __future__ import annotations

from typing import Any

from debvisor_core.context import Context


def test_stop_plans_then_powers_off(dv: Any) -> None:
    plan = dv("hv", "stop", "test", "--force", "--timeout", "0", "--dry-run")
    assert plan.code == 0, plan
    assert plan.stdout.splitlines() == ["Plan: power off test on local",
                                        "  1. stop test on local: power off at once"]
    res = dv("--json", "hv", "stop", "test", "--force", "--timeout", "0", "--yes")
    assert res.code == 0, res
    assert res.json["kind"] == "hv.stop" and res.json["status"] == "succeeded"
    shutdown = dv("--json", "hv", "stop", "test", "--timeout", "5", "--yes")  # ACPI
    assert shutdown.code == 0, shutdown
    assert shutdown.json["steps"][0]["description"] == \
        "stop test on local: shut down (ACPI), wait at most 5s"


def test_the_preflight_refuses_what_makes_no_sense(dv: Any) -> None:
    res = dv("hv", "start", "test", "--yes")  # test:///default's VM runs
    assert res.code == 3, res
    assert "test is already running on local" in res.stderr
    assert dv("hv", "stop", "nosuchvm", "--yes").code != 0


def test_undo_restores_the_power_state(dv_state: Any) -> None:
    from debvisor_libvirt.power import StartVM, StopVM, power_state
    from debvisor_libvirt.snapshots import domain

    ctx = Context()
    dom = domain(ctx, "local", "test")
    stop = StopVM("local", "test", force=True, timeout_s=0)
    stop.check(ctx)
    record = {**stop.snapshot(ctx), **stop.apply(ctx, {"state": "running"})}
    stop.verify(ctx, record)
    assert power_state(dom) == "shutoff"
    stop.undo(ctx, record)
    assert power_state(dom) == "running"
    stop.undo(ctx, record)  # idempotent
    dom.suspend()
    start = StartVM("local", "test")
    record = {**start.snapshot(ctx), **start.apply(ctx, {})}
    assert record == {"state": "paused", "resumed": True} and power_state(dom) == "running"
    start.undo(ctx, record)
    assert power_state(dom) == "paused"
    dom.resume()
    dom.destroy()
    record = {**start.snapshot(ctx), **start.apply(ctx, {})}
    assert record == {"state": "shutoff", "booted": True}
    start.verify(ctx, record)
    start.undo(ctx, record)
    assert power_state(dom) == "shutoff"
    dom.create()
