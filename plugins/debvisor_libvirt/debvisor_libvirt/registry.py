"""`hv register` / `hv unregister`: DebVisor's inventory, kept as domain metadata.

Verification before registering (each a preflight error, exit 3):

1. the VM exists on a configured node;
2. it is persistent (a transient VM disappears when it stops);
3. it has a console: a serial/console device or VNC/SPICE graphics;
4. the autostart policy (``[hv.register] autostart``): ``enable`` (default) turns
   autostart on as a step of the operation, ``require`` refuses a VM without it,
   ``ignore`` skips the check.

The record goes into the domain XML under ``<metadata>`` in the
``https://debvisor.org/xmlns/hv/1`` namespace, so it travels with the VM when it migrates.
The same element holds the VNC target (`hv vnc target`): each step writes, and its undo
restores, only its own keys (:data:`INVENTORY_KEYS` here, ``vnc`` there), read afresh,
so rolling back one never reverts the other.
Other plugins add steps through ``debvisor_vm_registered`` / ``debvisor_vm_unregistered``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from debvisor_core.context import Context
from debvisor_core.engine import Step
from debvisor_core.errors import BadInput, StepFailed
from debvisor_core.output import iso_utc

from .domains import devices, meta_xml, parse_meta, read_meta, write_meta
from .snapshots import domain

POLICIES = ("enable", "require", "ignore")
#: the metadata keys the inventory owns (``vnc`` belongs to `hv vnc target`)
INVENTORY_KEYS = ("registered", "owner", "role", "tags", "addresses", "registered_at")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")


def check_label(value: str, what: str) -> str:
    if not _LABEL.fullmatch(value):
        raise BadInput(f"bad {what} {value!r}: use 1-64 letters, digits, '.', '_', '@', '+' or '-'")
    return value


def autostart_policy(ctx: Context) -> str:
    from .hvconfig import config_error, table

    policy = table(ctx, "register").get("autostart", "enable")
    if policy not in POLICIES:
        raise config_error(ctx, "[hv.register] autostart",
                           f"must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy


@dataclass
class WriteInventory(Step):
    """Store VM's inventory record in its metadata (undo: restore the previous one)."""

    TYPE = "hv.inventory.write"

    node: str
    vm: str
    record: dict[str, Any] = field(default_factory=dict)
    policy: str = "enable"
    NAME = "WriteInventory"

    def describe(self, ctx: Context) -> str:
        r = self.record
        return (f"record {self.vm} on {self.node} in the inventory (owner {r.get('owner') or '-'}, "
                f"role {r.get('role') or '-'}, tags {','.join(r.get('tags') or []) or '-'})")

    def check(self, ctx: Context) -> None:
        dom = domain(ctx, self.node, self.vm)
        if not self.record.get("registered"):
            return  # unregistering needs no verification
        if not dom.isPersistent():
            raise StepFailed(f"{self.vm} is transient: define it persistently before registering")
        dev = devices(dom.XMLDesc(0))
        if not dev.serial and not dev.graphics:
            raise StepFailed(f"{self.vm} has no console: add a serial console or VNC graphics")
        if self.policy == "require" and not dom.autostart():
            raise StepFailed(f"{self.vm} does not start with its node and [hv.register] "
                             "autostart = \"require\"; run `virsh autostart` first")

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        old = read_meta(domain(ctx, self.node, self.vm), inactive=True)
        return {"old": None if old is None else meta_xml(old)}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        _patch_inventory(domain(ctx, self.node, self.vm), self.record)
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        got = read_meta(domain(ctx, self.node, self.vm), inactive=True)
        if got is None or got.get("registered") != bool(self.record.get("registered")):
            raise StepFailed(f"the inventory record of {self.vm} did not stick")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Put back the inventory keys as they were; the ``vnc`` key keeps its current
        value (a later `vnc target` is not reverted)."""
        old = record.get("old")
        _patch_inventory(domain(ctx, self.node, self.vm), None if old is None else parse_meta(old))


def _patch_inventory(dom: Any, inventory: dict[str, Any] | None) -> None:
    """Write the :data:`INVENTORY_KEYS` of ``inventory`` (None: drop them) into the VM's
    current metadata, keeping every other key; drop the element when nothing is left."""
    current = read_meta(dom, inactive=dom.isPersistent()) or {}
    merged = {k: v for k, v in current.items() if k not in INVENTORY_KEYS}
    if inventory is not None:
        merged.update({k: inventory.get(k) for k in INVENTORY_KEYS})
    if not merged.get("registered") and not any(merged.get(k) for k in merged if k != "registered"):
        write_meta(dom, None)
    else:
        write_meta(dom, merged)


@dataclass
class SetAutostart(Step):
    """Turn VM's autostart on or off (undo: restore the previous setting)."""

    TYPE = "hv.autostart"

    node: str
    vm: str
    enabled: bool = True

    def describe(self, ctx: Context) -> str:
        return f"set autostart of {self.vm} {'on' if self.enabled else 'off'}"

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        return {"old": bool(domain(ctx, self.node, self.vm).autostart())}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        domain(ctx, self.node, self.vm).setAutostart(1 if self.enabled else 0)
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        if bool(domain(ctx, self.node, self.vm).autostart()) != self.enabled:
            raise StepFailed(f"autostart of {self.vm} did not change")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        domain(ctx, self.node, self.vm).setAutostart(1 if record["old"] else 0)


def new_record(owner: str | None, role: str | None, tags: list[str],
               addresses: list[str]) -> dict[str, Any]:
    return {"registered": True, "owner": owner, "role": role, "tags": tags,
            "addresses": addresses,
            "registered_at": iso_utc()}


def contributed(ctx: Context, hook: str, vm: dict[str, Any]) -> list[Step]:
    """Steps other plugins add for this VM (DNS records…)."""
    out: list[Step] = []
    for batch in getattr(ctx.hook, hook)(ctx=ctx, vm=vm):
        out.extend(batch or [])
    return out
