"""`hv start VM` and `hv stop VM`: a VM's power state as undoable steps.

Start boots a defined VM that is off (undo: power it off again) or resumes a paused one
(undo: pause it again). Stop asks the guest to shut down (ACPI) and waits; with
``--force`` it powers the VM off when the guest has not shut down in time, or at once
with ``--timeout 0`` (undo: start it again).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from debvisor_core import log
from debvisor_core.engine import Step
from debvisor_core.errors import StepFailed

from .domains import state_name
from .nodes import lv
from .snapshots import domain

if TYPE_CHECKING:
    import libvirt

    from debvisor_core.context import Context

ACTIVE_STATES = ("running", "blocked", "paused", "pmsuspended")


def power_state(dom: libvirt.virDomain) -> str:
    """The domain's state name (running, paused, shutoff, ...)."""
    return state_name(dom.state()[0])


def _wait(dom: libvirt.virDomain, want: tuple[str, ...], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if power_state(dom) in want:
                return True
        except lv().libvirtError:  # a transient domain is gone once it stopped
            return "shutoff" in want
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


@dataclass
class StartVM(Step):
    """Boot VM (or resume it when paused) on NODE (undo: back to how it was)."""

    TYPE = "hv.power.start"

    node: str
    vm: str

    def describe(self, ctx: Context) -> str:
        return f"start {self.vm} on {self.node} (boot it, or resume it if paused)"

    def check(self, ctx: Context) -> None:
        dom = domain(ctx, self.node, self.vm)
        state = power_state(dom)
        if state in ("running", "blocked"):
            raise StepFailed(f"{self.vm} is already running on {self.node}")
        if state not in ("paused", "pmsuspended") and not dom.isPersistent():
            raise StepFailed(f"{self.vm} is a transient domain that is not running: there is "
                             "nothing to start")

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        return {"state": power_state(domain(ctx, self.node, self.vm))}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        dom = domain(ctx, self.node, self.vm)
        state = power_state(dom)
        if state in ("paused", "pmsuspended"):
            dom.resume()
            return {"resumed": True}
        if state in ("running", "blocked"):
            raise StepFailed(f"{self.vm} was started meanwhile by someone else; left alone")
        dom.create()
        return {"booted": True}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        dom = domain(ctx, self.node, self.vm)
        if not _wait(dom, ("running", "blocked"), 10):
            raise StepFailed(f"{self.vm} is {power_state(dom)} on {self.node}, not running, "
                             "after the start")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Power the VM off again (pause it again if it was resumed); idempotent."""
        dom = domain(ctx, self.node, self.vm)
        state = power_state(dom)
        if record.get("resumed") or record.get("state") in ("paused", "pmsuspended"):
            if state in ("running", "blocked"):
                dom.suspend()
            return
        if state in ACTIVE_STATES:
            log.warn(f"powering {self.vm} off again on {self.node}")
            dom.destroy()


@dataclass
class StopVM(Step):
    """Shut VM down on NODE (ACPI), or power it off with ``force`` (undo: start it)."""

    TYPE = "hv.power.stop"

    node: str
    vm: str
    force: bool = False
    timeout_s: int = 60

    def describe(self, ctx: Context) -> str:
        if self.force and self.timeout_s == 0:
            how = "power off at once"
        elif self.force:
            how = f"shut down (ACPI), power off if still running after {self.timeout_s}s"
        else:
            how = f"shut down (ACPI), wait at most {self.timeout_s}s"
        return f"stop {self.vm} on {self.node}: {how}"

    def check(self, ctx: Context) -> None:
        dom = domain(ctx, self.node, self.vm)
        if power_state(dom) not in ACTIVE_STATES:
            raise StepFailed(f"{self.vm} is not running on {self.node} "
                             f"({power_state(dom)}): there is nothing to stop")
        if not dom.isPersistent():
            raise StepFailed(f"{self.vm} is a transient domain: stopping it would remove it "
                             "(and it could not be started again)")

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        return {"state": power_state(domain(ctx, self.node, self.vm))}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        dom = domain(ctx, self.node, self.vm)
        if power_state(dom) not in ACTIVE_STATES:
            return {"already_off": True}
        if self.force and self.timeout_s == 0:
            dom.destroy()
            return {"powered_off": True}
        try:
            dom.shutdown()
        except lv().libvirtError as exc:
            if not self.force:
                raise StepFailed(f"{self.vm} refused the shutdown request: "
                                 f"{exc.get_error_message()}") from None
        if _wait(dom, ("shutoff", "shutdown", "crashed"), self.timeout_s):
            return {"shut_down": True}
        if not self.force:
            raise StepFailed(f"{self.vm} did not shut down within {self.timeout_s}s (its guest "
                             "may ignore ACPI); stop it with --force to power it off")
        log.warn(f"{self.vm} did not shut down within {self.timeout_s}s; powering it off")
        dom.destroy()
        return {"powered_off": True}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        dom = domain(ctx, self.node, self.vm)
        if not _wait(dom, ("shutoff", "shutdown", "crashed"), 10):
            raise StepFailed(f"{self.vm} is still {power_state(dom)} on {self.node} after the stop")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Start the VM again (paused again if it was paused); idempotent."""
        dom = domain(ctx, self.node, self.vm)
        if power_state(dom) in ACTIVE_STATES:
            return
        log.warn(f"starting {self.vm} again on {self.node}")
        if record.get("state") in ("paused", "pmsuspended"):
            dom.createWithFlags(lv().VIR_DOMAIN_START_PAUSED)
        else:
            dom.create()
