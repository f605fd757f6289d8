"""Shared fixtures of the hv plugin tests: the libvirt lab and guests on its nodes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class HvLab:
    """The running libvirt lab: its config file and helpers to make guests."""

    config_path: Path
    config: dict[str, Any]
    dir: Path

    def uri(self, node: str) -> str:
        return str(self.config["hv"]["nodes"][node]["uri"])

    def conn(self, node: str) -> Any:
        from debvisor_libvirt.nodes import lv

        return lv().open(self.uri(node))

    def guest(self, name: str, node: str = "node1", *, memory_mib: int = 128,
              disk: bool = False, vnc_password: str | None = None) -> Path:
        """Define and boot guest ``name`` on ``node``; wait for it; return its console log."""
        from debvisor_libvirt import lab

        log = self.dir / f"{name}.console.log"
        log.unlink(missing_ok=True)
        image = None
        if disk:
            image = lab.make_disk(self.dir / f"{name}.qcow2", 32)
        g = self.config["hv"]["guest"]
        lab.define_guest(self.conn(node), name, memory_mib=memory_mib, kernel=g["kernel"],
                         initrd=g["initrd"], console_log=log, disk=image, vnc_password=vnc_password)
        lab.wait_console(log, timeout=120)
        return log

    def remove(self, name: str) -> None:
        """Destroy and undefine ``name`` wherever it is (with its snapshots' metadata)."""
        from debvisor_libvirt.nodes import lv

        libvirt = lv()
        for node in self.config["hv"]["nodes"]:
            try:
                dom = self.conn(node).lookupByName(name)
            except libvirt.libvirtError:
                continue
            persistent = dom.isPersistent()  # a transient domain is gone once destroyed
            if dom.isActive():
                dom.destroy()
            if persistent:
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)

    def where(self, name: str) -> list[str]:
        """Nodes on which ``name`` is running."""
        from debvisor_libvirt.nodes import lv

        out = []
        for node in self.config["hv"]["nodes"]:
            try:
                if self.conn(node).lookupByName(name).isActive():
                    out.append(node)
            except lv().libvirtError:
                pass
        return out


@pytest.fixture(scope="session")
def hv_lab(dv_lab: Any) -> HvLab:
    path = dv_lab.require("libvirt")
    import tomllib

    return HvLab(path, tomllib.loads(path.read_text()), path.parent)


@pytest.fixture
def hv_env(hv_lab: HvLab, dv_state: Any) -> HvLab:
    """The test's isolated DebVisor state, configured with the lab's nodes."""
    dv_state.config({}, base=hv_lab.config_path)
    return hv_lab


@pytest.fixture
def unique() -> str:
    return "t" + uuid.uuid4().hex[:6]


@pytest.fixture
def guest_factory(hv_lab: HvLab) -> Iterator[Any]:
    made: list[str] = []

    def make(name: str, node: str = "node1", **kw: Any) -> Path:
        made.append(name)
        return hv_lab.guest(name, node, **kw)

    yield make
    for name in made:
        hv_lab.remove(name)
