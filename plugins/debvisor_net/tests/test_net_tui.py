"""The `net interactive` terminal UI, driven headless with textual's own pilot: key presses in,
screen text and the written file out. No pytest-asyncio: each test runs its own event loop."""

from __future__ import annotations

import asyncio
import os
import stat
import unicodedata
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("textual")

from debvisor_net.tui import (
    ConfirmScreen,
    DiffScreen,
    NetEditor,
    apply_field,
    render_field,
)
from textual import events
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

SAMPLE = """\
network:
  version: 2
  ethernets:
    eth0:
      addresses: [10.50.0.10/24, "fd00:50::10/64"]
      mtu: 1500
      routes: [{to: default, via: 10.50.0.1}]
      nameservers: {addresses: [10.60.0.53], search: [lab]}
    eth1: {mtu: 9000}
  bonds:
    bond0:
      interfaces: [eth1, eth2]
      parameters: {mode: active-backup, mii-monitor-interval: 100, primary: eth1}
  bridges:
    br0:
      interfaces: [bond0]
      addresses: [10.50.0.11/24]
      parameters: {stp: true, forward-delay: 4}
  vlans:
    bond0.100: {id: 100, link: bond0, addresses: [10.100.0.1/24]}
"""

SIZE = (100, 40)

Scenario = Callable[[NetEditor, Pilot[str]], Awaitable[None]]


class Calls:
    """Stand-ins for the plugin's validate() and diff() that record what they were given."""

    def __init__(self, errors: list[str] | None = None) -> None:
        self.errors = errors or []
        self.validated: list[dict[str, Any]] = []
        self.diffed: list[dict[str, Any]] = []

    def validate(self, data: dict[str, Any]) -> list[str]:
        self.validated.append(data)
        return list(self.errors)

    def diff(self, data: dict[str, Any]) -> str:
        self.diffed.append(data)
        net = data["network"]
        return "DIFF-BEGIN\n" + "\n".join(
            f"~ {section}.{name}: {iface}"
            for section in ("ethernets", "bonds", "bridges", "vlans")
            for name, iface in (net.get(section) or {}).items()
        )


def drive(path: Path, scenario: Scenario, calls: Calls | None = None) -> NetEditor:
    """Run the app headless through `scenario`; the app (with its return_value) after."""
    calls = calls or Calls()
    app = NetEditor(path, diff=calls.diff, validate=calls.validate)

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await scenario(app, pilot)

    asyncio.run(main())
    return app


def screen_text(app: NetEditor) -> str:
    """The characters on the active screen, line by line."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def type_text(pilot: Pilot[str], text: str) -> None:
    """Type `text` into the focused widget: one key event a character, as pilot.press sends
    them, without pilot.press's wait for idle after every key (some 80 ms a key)."""
    app = pilot.app
    for char in text:
        key = char if char.isalnum() else unicodedata.name(char).lower().replace(" ", "_")
        app.post_message(events.Key(key, char))
    await pilot.pause()
    focused = app.focused
    if isinstance(focused, Input):
        assert text in focused.value
    elif isinstance(focused, TextArea):
        assert text in focused.text


async def replace(pilot: Pilot[str], text: str) -> None:
    """Clear the focused input and type `text`."""
    await pilot.press("end", "ctrl+u")
    await type_text(pilot, text)


def sample(tmp_path: Path) -> Path:
    path = tmp_path / "network.yaml"
    path.write_text(SAMPLE)
    path.chmod(0o600)  # the editor writes 0644 whatever was there
    return path


def focused_id(app: NetEditor) -> str | None:
    return app.focused.id if app.focused is not None else None


# --------------------------------------------------------------------------------------------


def test_edit_eth0_addresses_and_mtu_then_save_writes_the_expected_yaml(tmp_path: Path) -> None:
    path = sample(tmp_path)
    calls = Calls()

    async def scenario(app: NetEditor, pilot: Pilot[str]) -> None:
        assert app.current == ("ethernets", "eth0")
        assert focused_id(app) == "tree"
        await pilot.press("tab")
        assert focused_id(app) == "f-addresses"
        await replace(pilot, "10.50.0.20/24, fd00:50::20/64")
        await pilot.press("tab")
        assert focused_id(app) == "f-mtu"
        await replace(pilot, "9000")
        assert "[modified]" in app.sub_title
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "saved" in screen_text(app)
        assert app.status_text() == f"saved {path}"
        assert "[modified]" not in app.sub_title

    drive(path, scenario, calls)
    expected = yaml.safe_load(SAMPLE)
    expected["network"]["ethernets"]["eth0"]["addresses"] = ["10.50.0.20/24", "fd00:50::20/64"]
    expected["network"]["ethernets"]["eth0"]["mtu"] = 9000
    assert yaml.safe_load(path.read_text()) == expected
    assert calls.validated == [expected]  # validated first, with the edited data
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["network.yaml"]  # no temporary file left


def test_add_a_bond_with_two_members(tmp_path: Path) -> None:
    path = tmp_path / "network.yaml"
    path.write_text("network:\n  version: 2\n  ethernets:\n    eth1: {}\n    eth2: {}\n")

    async def scenario(app: NetEditor, pilot: Pilot[str]) -> None:
        await pilot.press("a")
        assert "Add an interface" in screen_text(app)
        assert focused_id(app) == "add-name"
        await pilot.press("shift+tab")  # the section (ethernets, the selected one's)
        assert focused_id(app) == "add-section"
        await pilot.press("enter", "down", "enter")  # open, ethernets -> bonds, pick
        await pilot.press("tab")
        await type_text(pilot, "bond0")
        await pilot.press("enter")
        await pilot.pause()
        assert app.current == ("bonds", "bond0")
        assert "bond bond0" in screen_text(app)
        assert focused_id(app) == "f-addresses"
        await pilot.press("tab", "tab", "tab")
        assert focused_id(app) == "f-members"
        await type_text(pilot, "eth1, eth2")
        await pilot.press("tab")
        assert focused_id(app) == "f-bond-mode"
        await pilot.press("enter", "down", "down", "enter")  # (unset) -> balance-rr -> a-b
        await pilot.press("d")  # on a form field, d deletes nothing
        assert "bond0" in app.network["bonds"] and focused_id(app) == "f-bond-mode"
        await pilot.press("tab")
        await type_text(pilot, "100")  # MII monitor
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "saved" in screen_text(app)

    drive(path, scenario)
    assert yaml.safe_load(path.read_text()) == {
        "network": {
            "version": 2,
            "ethernets": {"eth1": {}, "eth2": {}},
            "bonds": {
                "bond0": {
                    "interfaces": ["eth1", "eth2"],
                    "parameters": {"mode": "active-backup", "mii-monitor-interval": 100},
                }
            },
        }
    }


def test_invalid_mtu_is_shown_and_nothing_is_written(tmp_path: Path) -> None:
    path = sample(tmp_path)
    before = path.read_bytes()
    calls = Calls()

    async def scenario(app: NetEditor, pilot: Pilot[str]) -> None:
        await pilot.press("tab", "tab")
        assert focused_id(app) == "f-mtu"
        await replace(pilot, "abc")
        text = screen_text(app)
        assert "ethernets/eth0 MTU: 'abc' is not a whole number" in text
        assert app.query_one("#f-mtu").has_class("-invalid")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "not saved: fix the fields above first" in screen_text(app)
        await pilot.press("ctrl+a")  # apply saves first: refused too, the app stays
        await pilot.pause()
        assert app.is_running
        # fixing the field clears the error
        await replace(pilot, "1400")
        assert "is not a whole number" not in screen_text(app)
        assert not app.query_one("#f-mtu").has_class("-invalid")
        await pilot.press("escape", "q", "y")  # leave without saving

    app = drive(path, scenario, calls)
    assert app.return_value is None
    assert path.read_bytes() == before
    assert calls.validated == []  # field errors stop the save before validate()


def test_validate_errors_are_shown_and_nothing_is_written(tmp_path: Path) -> None:
    path = sample(tmp_path)
    before = path.read_bytes()
    calls = Calls(errors=["bonds.bond0: member eth2 is not defined"])

    async def scenario(app: NetEditor, pilot: Pilot[str]) -> None:
        await pilot.press("tab", "tab")
        await replace(pilot, "9000")
        await pilot.press("ctrl+s")
        await pilot.pause()
        text = screen_text(app)
        assert "not saved:" in text
        assert "bonds.bond0: member eth2 is not defined" in text
        await pilot.press("ctrl+a")
        await pilot.pause()
        assert app.is_running

    app = drive(path, scenario, calls)
    assert app.return_value is None
    assert path.read_bytes() == before
    assert len(calls.validated) == 2
    assert calls.validated[0]["network"]["ethernets"]["eth0"]["mtu"] == 9000


def test_v_shows_the_diff_of_the_edited_data(tmp_path: Path) -> None:
    path = sample(tmp_path)
    calls = Calls()

    async def scenario(app: NetEditor, pilot: Pilot[str]) -> None:
        await pilot.press("tab", "tab")
        await replace(pilot, "9000")
        await pilot.press("escape")  # back to the interface list, where v is a key
        assert focused_id(app) == "tree"
        await pilot.press("v")
        await pilot.pause()
        assert isinstance(app.screen, DiffScreen)
        text = screen_text(app)
        assert "DIFF-BEGIN" in text
        assert "~ ethernets.eth0: {" in text and "'mtu': 9000" in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, DiffScreen)
        assert "DIFF-BEGIN" not in screen_text(app)

    drive(path, scenario, calls)
    expected = yaml.safe_load(SAMPLE)
    expected["network"]["ethernets"]["eth0"]["mtu"] = 9000
    assert calls.diffed == [expected]


def test_ctrl_a_saves_and_returns_apply(tmp_path: Path) -> None:
    path = sample(tmp_path)

    async def scenario(app: NetEditor, pilot: Pilot[str]) -> None:
        await pilot.press("tab")
        await replace(pilot, "10.50.0.10/24")
        await pilot.press("ctrl+a")  # also Input's "home": the app's binding wins
        await pilot.pause()

    app = drive(path, scenario)
    assert app.return_value == "apply"
    expected = yaml.safe_load(SAMPLE)
    expected["network"]["ethernets"]["eth0"]["addresses"] = ["10.50.0.10/24"]
    assert yaml.safe_load(path.read_text()) == expected


def test_q_with_unsaved_changes_asks_and_n_keeps_the_app_open(tmp_path: Path) -> None:
    path = sample(tmp_path)
    before = path.read_bytes()

    async def scenario(app: NetEditor, pilot: Pilot[str]) -> None:
        await pilot.press("tab", "tab")
        await replace(pilot, "9000")
        await pilot.press("escape", "q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "Discard unsaved changes? (y/n)" in screen_text(app)
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running
        assert not isinstance(app.screen, ConfirmScreen)
        assert app.network["ethernets"]["eth0"]["mtu"] == 9000  # the edit is still there
        await pilot.press("q", "y")
        await pilot.pause()

    app = drive(path, scenario)
    assert app.return_value is None
    assert path.read_bytes() == before


def test_q_without_changes_quits_at_once(tmp_path: Path) -> None:
    path = sample(tmp_path)

    async def scenario(app: NetEditor, pilot: Pilot[str]) -> None:
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)

    app = drive(path, scenario)
    assert app.return_value is None


def test_q_in_a_field_is_typed_not_quit(tmp_path: Path) -> None:
    path = sample(tmp_path)

    async def scenario(app: NetEditor, pilot: Pilot[str]) -> None:
        await pilot.press("tab", "tab", "tab")
        assert focused_id(app) == "f-mac"
        await type_text(pilot, "qadv")
        assert app.is_running and not isinstance(app.screen, ConfirmScreen)
        assert "'qadv' is not a MAC address" in screen_text(app)
        await pilot.press("end", "ctrl+u", "escape", "q")
        await pilot.pause()

    app = drive(path, scenario)
    assert app.return_value is None


def test_starts_empty_without_a_file_and_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "new.yaml"

    async def scenario(app: NetEditor, pilot: Pilot[str]) -> None:
        assert app.current is None
        assert "press a to add one" in screen_text(app)
        await pilot.press("a")
        await type_text(pilot, "eth0")
        await pilot.press("enter")
        await pilot.pause()
        assert focused_id(app) == "f-addresses"
        await type_text(pilot, "192.0.2.10/24")
        await pilot.press("ctrl+s")
        await pilot.pause()

    drive(path, scenario)
    assert yaml.safe_load(path.read_text()) == {
        "network": {"version": 2, "ethernets": {"eth0": {"addresses": ["192.0.2.10/24"]}}}
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_delete_routes_and_dns(tmp_path: Path) -> None:
    path = sample(tmp_path)

    async def scenario(app: NetEditor, pilot: Pilot[str]) -> None:
        # routes and DNS of eth0
        app.query_one("#f-routes").focus()
        await pilot.press("end")
        await pilot.press("enter")
        await type_text(pilot, "10.99.0.0/16 10.50.0.254 50")
        app.query_one("#f-dns-search").focus()
        await replace(pilot, "lab, example.org")
        # the vlan: the last interface in the list
        await pilot.press("escape", "end")
        await pilot.pause()
        assert app.current == ("vlans", "bond0.100")
        await pilot.press("d")
        await pilot.pause()
        assert "deleted vlans/bond0.100" in screen_text(app)
        assert "bond0.100" not in screen_text(app).split("deleted")[0]  # gone from the list
        await pilot.press("ctrl+s")
        await pilot.pause()

    drive(path, scenario)
    expected = yaml.safe_load(SAMPLE)
    eth0 = expected["network"]["ethernets"]["eth0"]
    eth0["routes"].append({"to": "10.99.0.0/16", "via": "10.50.0.254", "metric": 50})
    eth0["nameservers"]["search"] = ["lab", "example.org"]
    del expected["network"]["vlans"]
    assert yaml.safe_load(path.read_text()) == expected


def test_add_refuses_a_taken_name(tmp_path: Path) -> None:
    path = sample(tmp_path)

    async def scenario(app: NetEditor, pilot: Pilot[str]) -> None:
        await pilot.press("a")
        await type_text(pilot, "bond0")
        await pilot.press("enter")
        await pilot.pause()
        assert "bond0 exists already" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert app.current == ("ethernets", "eth0")
        assert not app.dirty

    drive(path, scenario)


# -- the field parsers, without a screen --------------------------------------------------------


def test_fields_round_trip_and_keep_what_the_form_does_not_show() -> None:
    iface: dict[str, Any] = {
        "addresses": [{"10.0.0.2/24": {"lifetime": 0}}, "fd00::2/64"],
        "routes": [{"to": "default", "via": "10.0.0.1", "table": 100, "on-link": True}],
    }
    assert render_field(iface, "addresses") == "10.0.0.2/24, fd00::2/64"
    assert render_field(iface, "routes") == "default 10.0.0.1"
    apply_field(iface, "addresses", "fd00::2/64 10.0.0.2/24")
    assert iface["addresses"] == ["fd00::2/64", {"10.0.0.2/24": {"lifetime": 0}}]
    apply_field(iface, "routes", "default via 10.0.0.1 metric 5\n# note\n\n10.1.0.0/16 10.0.0.9")
    assert iface["routes"] == [
        {"to": "default", "via": "10.0.0.1", "table": 100, "on-link": True, "metric": 5},
        {"to": "10.1.0.0/16", "via": "10.0.0.9"},
    ]
    apply_field(iface, "bond-primary", "eth1")
    apply_field(iface, "bond-primary", "")
    assert "parameters" not in iface
    apply_field(iface, "dns-addresses", "")
    assert "nameservers" not in iface


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("mtu", "abc", "not a whole number"),
        ("mtu", "20", "out of range"),
        ("addresses", "10.0.0.1", "no /prefix"),
        ("addresses", "10.0.0.300/24", "not an address/prefix"),
        ("mac", "52:54:00", "not a MAC address"),
        ("members", "eth1, eth1", "listed twice"),
        ("vlan-id", "4095", "out of range"),
        ("routes", "default", ""),  # a destination alone is allowed (scope link, ...)
        ("routes", "default 10.0.0.1 x", "not a whole number"),
        ("routes", "10.1.0.0/16 fd00::1", "not of the family"),
        ("routes", "nowhere 10.0.0.1", "neither 'default' nor a network"),
        ("dns-addresses", "ns1", "not an IP address"),
        ("dns-search", "bad domain!", "not a domain name"),
    ],
)
def test_field_errors(key: str, raw: str, message: str) -> None:
    iface: dict[str, Any] = {"mtu": 1500}
    if not message:
        apply_field(iface, key, raw)
        return
    with pytest.raises(ValueError, match=message):
        apply_field(iface, key, raw)
    assert iface == {"mtu": 1500}
