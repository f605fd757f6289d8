"""`net interactive` with its real callbacks: the editor's diff is the planner's against this
namespace's kernel, and its validation is `net apply`'s (schema, then the apply rules)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from debvisor_net.editor import callbacks
from debvisor_net.testbed import Bed
from debvisor_net.tui import NetEditor

pytestmark = [pytest.mark.root]


class _Ctx:
    """What the callbacks use of a Context: the plugin's state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def plugin_state(self, name: str) -> Path:
        p = self.path / name
        p.mkdir(parents=True, exist_ok=True)
        return p


def test_validate_is_the_apply_checks(tmp_path: Path) -> None:
    _, validate = callbacks(_Ctx(tmp_path), tmp_path / "net.yaml")
    assert validate({"network": {"version": 2, "ethernets": {"lo": {}}}}) == []
    bad = validate({"network": {"version": 2, "ethernets": {"lo": {"dhcp": True}}}})
    assert len(bad) == 1 and "unknown key 'dhcp'" in bad[0]
    dup = validate({"network": {"version": 2, "ethernets": {
        "a": {"addresses": ["10.1.1.1/24"]}, "b": {"addresses": ["10.1.1.1/24"]}}}})
    assert dup and "10.1.1.1 is also on a" in dup[0]


def test_the_editor_shows_the_kernels_diff(tmp_path: Path) -> None:
    """In the test bed's node namespace (a thread joined to it: what `ip netns exec` gives
    the command), pressing v shows the netlink changes the edited file would make."""
    from debvisor_net.kernel import run_in_netns

    path = tmp_path / "net.yaml"
    path.write_text("network:\n  version: 2\n  ethernets:\n    eth1: {mtu: 1500}\n")
    diff, validate = callbacks(_Ctx(tmp_path), path)
    with Bed(f"dve{__import__('os').getpid() % 10000}") as bed:
        text = run_in_netns(bed.node, lambda: diff({"network": {"version": 2, "ethernets": {
            "eth1": {"mtu": 1500}}}}))
        assert "set mtu of eth1 to 1500" in text, text
        app = NetEditor(path, diff=lambda d: run_in_netns(bed.node, lambda: diff(d)),
                        validate=validate)
        seen: dict[str, Any] = {}

        async def main() -> None:
            async with app.run_test(size=(100, 40)) as pilot:
                await pilot.pause()
                await pilot.press("v")
                await pilot.pause()
                seen["screen"] = "\n".join(
                    s.text for s in app.screen._compositor.render_strips())

        asyncio.run(main())
    assert "set mtu of eth1 to 1500" in seen["screen"], seen["screen"]
