"""`hv snapshot VM create|list|revert|delete [NAME]` as undoable steps.

Rolling back a create deletes the snapshot, and only one this operation created: the
step records whether the name existed before (then its apply refuses and its undo leaves
it alone) and marks what it creates with a nonce in the description, so an interrupted
create deletes a snapshot only if it carries that nonce. A revert first takes a safety
snapshot (``safety-…``) and its undo reverts to that. A delete cannot be undone: its
undo reports rollback-incomplete when the snapshot is gone.
"""

from __future__ import annotations

import re
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from debvisor_core.context import Context
from debvisor_core.engine import Step
from debvisor_core.errors import BadInput, StepFailed
from debvisor_core.output import iso_utc

from .nodes import connect, lv, node

if TYPE_CHECKING:
    import libvirt


def domain(ctx: Context, node_name: str, vm: str) -> libvirt.virDomain:
    """Look up ``vm`` on ``node_name`` (StepFailed if it is gone)."""
    libvirt = lv()
    conn = connect(node(ctx, node_name))
    try:
        return conn.lookupByName(vm)
    except libvirt.libvirtError as exc:
        raise StepFailed(f"VM {vm} is not on node {node_name}: {exc.get_error_message()}") from None


def default_name(prefix: str = "dv") -> str:
    """``PREFIX-YYYYmmdd-HHMMSS-XXXXXXXX``: the random suffix (32 bits) keeps runs in the
    same second from picking the same name (16 bits did not: 50 names in one second
    collided about once in 50 tries)."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


#: marks a snapshot as created by one operation (in its description)
_NONCE = re.compile(r" \[dv-op ([0-9a-f]{16})\]$")


def _names(dom: libvirt.virDomain) -> list[str]:
    return [s.getName() for s in dom.listAllSnapshots(0)]


def internal_snapshot_problem(dom: libvirt.virDomain) -> str | None:
    """Why QEMU cannot take an internal snapshot of ``dom`` (None if it can): it needs at
    least one writable disk, and every writable disk in qcow2 format."""
    if not dom.connect().getURI().startswith("qemu"):
        return None  # e.g. the test:/// driver keeps snapshots as metadata
    root = ET.fromstring(dom.XMLDesc(0))
    disks = [d for d in root.iterfind("devices/disk")
             if d.get("device", "disk") == "disk" and d.find("readonly") is None]
    if not disks:
        return (f"VM {dom.name()} has no writable disk: internal snapshots are stored in "
                "qcow2 disks")
    for d in disks:
        drv, tgt = d.find("driver"), d.find("target")
        fmt = (None if drv is None else drv.get("type")) or "raw"
        if fmt != "qcow2":
            dev = "?" if tgt is None else tgt.get("dev")
            return f"disk {dev} of {dom.name()} is {fmt}: internal snapshots need qcow2 disks"
    return None


def _description(dom: libvirt.virDomain, name: str) -> str | None:
    """The description of snapshot ``name`` (None when there is no such snapshot)."""
    libvirt = lv()
    try:
        xml = dom.snapshotLookupByName(name, 0).getXMLDesc(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return None
        raise
    return ET.fromstring(xml).findtext("description") or ""


def _create(dom: libvirt.virDomain, name: str, description: str) -> None:
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "description").text = description
    dom.snapshotCreateXML(ET.tostring(root, encoding="unicode"), 0)


def _delete(dom: libvirt.virDomain, name: str) -> None:
    libvirt = lv()
    try:
        dom.snapshotLookupByName(name, 0).delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise


def list_snapshots(dom: libvirt.virDomain) -> list[dict[str, Any]]:
    libvirt = lv()
    try:
        current = dom.snapshotCurrent(0).getName() if dom.hasCurrentSnapshot(0) else None
    except libvirt.libvirtError:
        current = None
    out = []
    for s in dom.listAllSnapshots(0):
        root = ET.fromstring(s.getXMLDesc(0))
        created = root.findtext("creationTime")
        description = root.findtext("description")
        out.append({
            "name": s.getName(),
            "created": iso_utc(int(created))
            if created else None,
            "state": root.findtext("state"),
            "description": None if description is None else _NONCE.sub("", description),
            "current": s.getName() == current,
        })
    out.sort(key=lambda r: r["created"] or "")
    return out


@dataclass
class CreateSnapshot(Step):
    """Take snapshot NAME of VM (undo: delete it, if this step created it)."""

    TYPE = "hv.snapshot.create"

    node: str
    vm: str
    name: str
    description: str = "taken by debvisor hv snapshot"

    def describe(self, ctx: Context) -> str:
        return f"create snapshot {self.name!r} of {self.vm} on {self.node}"

    def check(self, ctx: Context) -> None:
        dom = domain(ctx, self.node, self.vm)
        if self.name in _names(dom):
            raise StepFailed(f"VM {self.vm} already has a snapshot named {self.name!r}")
        problem = internal_snapshot_problem(dom)
        if problem:
            raise StepFailed(problem)

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        """Whether the name is taken now (under the operation's lock), and the nonce that
        will mark the snapshot this step creates."""
        dom = domain(ctx, self.node, self.vm)
        return {"existed": self.name in _names(dom), "nonce": secrets.token_hex(8)}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        if prior.get("existed"):
            raise StepFailed(f"VM {self.vm} already has a snapshot named {self.name!r} "
                             "(taken meanwhile by someone else); it was left alone")
        description = self.description
        if prior.get("nonce"):
            description += f" [dv-op {prior['nonce']}]"
        _create(domain(ctx, self.node, self.vm), self.name, description)
        return {"created": True}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        if self.name not in _names(domain(ctx, self.node, self.vm)):
            raise StepFailed(f"snapshot {self.name!r} of {self.vm} is not listed after creation")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Delete the snapshot only if this step created it: never one that existed before,
        and after an interrupted apply only one carrying this step's nonce."""
        from debvisor_core import log

        if record.get("existed"):
            log.info(f"snapshot {self.name!r} of {self.vm} existed before this operation; "
                     "left alone")
            return
        dom = domain(ctx, self.node, self.vm)
        description = _description(dom, self.name)
        if description is None:
            return  # never created, or already deleted
        m = _NONCE.search(description)
        ours = (m is not None and m.group(1) == record.get("nonce")) if "nonce" in record \
            else not record.get("_partial")  # a record of an older version: apply finished
        if not ours:
            log.warn(f"snapshot {self.name!r} of {self.vm} was not created by this operation; "
                     "left alone")
            return
        _delete(dom, self.name)


@dataclass
class RevertSnapshot(Step):
    """Revert VM to snapshot NAME (undo: revert to the safety snapshot taken before)."""

    TYPE = "hv.snapshot.revert"

    node: str
    vm: str
    name: str
    safety: str

    def describe(self, ctx: Context) -> str:
        return f"revert {self.vm} to snapshot {self.name!r}"

    def check(self, ctx: Context) -> None:
        if self.name not in _names(domain(ctx, self.node, self.vm)):
            raise StepFailed(f"VM {self.vm} has no snapshot named {self.name!r}")

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        dom = domain(ctx, self.node, self.vm)
        dom.revertToSnapshot(dom.snapshotLookupByName(self.name, 0), 0)
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        dom = domain(ctx, self.node, self.vm)
        if not dom.hasCurrentSnapshot(0) or dom.snapshotCurrent(0).getName() != self.name:
            raise StepFailed(f"{self.vm}'s current snapshot is not {self.name!r} after the revert")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        dom = domain(ctx, self.node, self.vm)
        dom.revertToSnapshot(dom.snapshotLookupByName(self.safety, 0), 0)


@dataclass
class DeleteSnapshot(Step):
    """Delete snapshot NAME (cannot be undone once applied: it is destructive)."""

    TYPE = "hv.snapshot.delete"

    node: str
    vm: str
    name: str
    DESTRUCTIVE = True

    def describe(self, ctx: Context) -> str:
        return f"delete snapshot {self.name!r} of {self.vm} (irreversible)"

    def check(self, ctx: Context) -> None:
        if self.name not in _names(domain(ctx, self.node, self.vm)):
            raise StepFailed(f"VM {self.vm} has no snapshot named {self.name!r}")

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        _delete(domain(ctx, self.node, self.vm), self.name)
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        if self.name in _names(domain(ctx, self.node, self.vm)):
            raise StepFailed(f"snapshot {self.name!r} of {self.vm} still exists")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Nothing to do if the snapshot is still there (the delete never ran); otherwise
        fail, so the rollback reports it as incomplete instead of restored."""
        if self.name not in _names(domain(ctx, self.node, self.vm)):
            raise StepFailed(f"snapshot {self.name!r} of {self.vm} was deleted and cannot be "
                             "restored (a deleted snapshot is gone for good)")


def check_snapshot_name(name: str) -> str:
    from .nodes import VM_NAME_RE

    if not VM_NAME_RE.fullmatch(name):
        raise BadInput(f"bad snapshot name {name!r}: use letters, digits, '.', '_', '+' or '-'")
    return name
