"""`net interactive`: a terminal editor for the desired-state file (netplan v2-like YAML).

The only module of the plugin that imports textual; the CLI imports it lazily. The editor
never touches the kernel: it edits, validates (through the caller's `validate`), shows the
caller's `diff`, saves atomically, and on ctrl+a saves and returns "apply" so that the caller
runs the real `net apply FILE` (probes, confirmation countdown, watchdog) in the terminal.

Keys (a, d and v act when the interface list has focus; escape goes back to it from a field):
  a add an interface, d delete the selected one, v show the diff, ctrl+s save,
  ctrl+a save and apply, q (or ctrl+q) quit, asking first when there are unsaved changes.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import yaml
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, Input, Label, Select, Static, TextArea, Tree
from textual.widgets.tree import TreeNode

__all__ = [
    "BOND_MODES",
    "SECTIONS",
    "NetEditor",
    "apply_field",
    "dump_yaml",
    "load_state",
    "render_field",
    "run",
    "write_atomic",
]

SECTIONS: Final = ("ethernets", "bonds", "bridges", "vlans")
BOND_MODES: Final = (
    "balance-rr",
    "active-backup",
    "balance-xor",
    "broadcast",
    "802.3ad",
    "balance-tlb",
    "balance-alb",
)
_ALL: Final = frozenset(SECTIONS)
# Linux interface names: at most 15 bytes, no "/", no whitespace (":" is kept for aliases out).
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}")
_MAC_RE: Final = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_DOMAIN_RE: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?"
)
_UINT_RE: Final = re.compile(r"[0-9]+")

Iface = dict[str, Any]
TreeKey = tuple[str, str]  # (section, name); name "" for a section heading


# --------------------------------------------------------------------------------------------
# Fields: how a form field reads from and writes to one interface's mapping (no textual here)


@dataclass(frozen=True)
class Field:
    key: str  # the widget id is f"f-{key}"
    label: str
    sections: frozenset[str]
    kind: str = "input"  # input | select | text
    placeholder: str = ""


FIELDS: Final = (
    Field("addresses", "Addresses", _ALL, placeholder="e.g. 10.0.0.2/24, fd00::2/64"),
    Field("mtu", "MTU", _ALL, placeholder="e.g. 1500"),
    Field("mac", "MAC", _ALL, placeholder="e.g. 52:54:00:12:34:56"),
    Field("members", "Members", frozenset({"bonds", "bridges"}), placeholder="e.g. eth1, eth2"),
    Field("vlan-id", "VLAN id", frozenset({"vlans"}), placeholder="e.g. 100"),
    Field("vlan-link", "VLAN link", frozenset({"vlans"}), placeholder="e.g. bond0"),
    Field("bond-mode", "Bond mode", frozenset({"bonds"}), kind="select"),
    Field("bond-miimon", "MII monitor ms", frozenset({"bonds"}), placeholder="e.g. 100"),
    Field("bond-primary", "Primary", frozenset({"bonds"}), placeholder="e.g. eth1"),
    Field("bridge-stp", "STP", frozenset({"bridges"}), kind="select"),
    Field("bridge-fd", "Forward delay s", frozenset({"bridges"}), placeholder="e.g. 4"),
    Field(
        "routes",
        "Routes",
        _ALL,
        kind="text",
        placeholder="to via [metric], e.g. default 10.0.0.1",
    ),
    Field("dns-addresses", "DNS servers", _ALL, placeholder="e.g. 10.0.0.53, fd00::53"),
    Field("dns-search", "DNS search", _ALL, placeholder="e.g. lab, example.org"),
)
FIELD_BY_KEY: Final = {f.key: f for f in FIELDS}

# field key -> (sub-mapping or None, key in it)
_PLACES: Final[dict[str, tuple[str | None, str]]] = {
    "mtu": (None, "mtu"),
    "mac": (None, "macaddress"),
    "members": (None, "interfaces"),
    "vlan-id": (None, "id"),
    "vlan-link": (None, "link"),
    "bond-mode": ("parameters", "mode"),
    "bond-miimon": ("parameters", "mii-monitor-interval"),
    "bond-primary": ("parameters", "primary"),
    "bridge-stp": ("parameters", "stp"),
    "bridge-fd": ("parameters", "forward-delay"),
    "dns-addresses": ("nameservers", "addresses"),
    "dns-search": ("nameservers", "search"),
}


def _get(iface: Mapping[str, Any], field_key: str) -> Any:
    sub, key = _PLACES[field_key]
    holder: Any = iface if sub is None else iface.get(sub)
    return holder.get(key) if isinstance(holder, Mapping) else None


def _put(iface: Iface, field_key: str, value: Any) -> None:
    """Set the value, or drop the key when the value is None or empty (and an emptied
    `parameters` / `nameservers` mapping with it)."""
    sub, key = _PLACES[field_key]
    if sub is None:
        holder = iface
    else:
        existing = iface.get(sub)
        holder = existing if isinstance(existing, dict) else {}
    if value is None or value == []:
        holder.pop(key, None)
    else:
        holder[key] = value
    if sub is not None:
        if holder:
            iface[sub] = holder
        else:
            iface.pop(sub, None)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _address_key(entry: Any) -> str:
    # netplan also allows `- 10.0.0.2/24: {lifetime: 0, label: x}`
    if isinstance(entry, Mapping) and len(entry) == 1:
        return str(next(iter(entry)))
    return str(entry)


def _route_line(route: Any) -> str:
    if not isinstance(route, Mapping):
        return str(route)
    parts = [str(route.get("to", ""))]
    if route.get("via") is not None:
        parts.append(str(route["via"]))
    if route.get("metric") is not None:
        if route.get("via") is None:
            parts.append("metric")
        parts.append(str(route["metric"]))
    return " ".join(parts)


def render_field(iface: Mapping[str, Any], field_key: str) -> str:
    """The text a form field shows for this interface."""
    if field_key == "addresses":
        return ", ".join(_address_key(a) for a in iface.get("addresses") or [])
    if field_key == "routes":
        return "\n".join(_route_line(r) for r in iface.get("routes") or [])
    return _text(_get(iface, field_key))


def select_value(iface: Mapping[str, Any], field_key: str) -> Any:
    """The value of a select field (bond mode, STP), None when unset."""
    return _get(iface, field_key)


def _split(raw: str) -> list[str]:
    return [p for p in re.split(r"[,\s]+", raw.strip()) if p]


def _uint(raw: str, lo: int, hi: int) -> int | None:
    s = raw.strip()
    if not s:
        return None
    if not _UINT_RE.fullmatch(s):
        raise ValueError(f"{s!r} is not a whole number")
    n = int(s)
    if not lo <= n <= hi:
        raise ValueError(f"{n} is out of range {lo}..{hi}")
    return n


def _name(raw: str) -> str:
    if not _NAME_RE.fullmatch(raw):
        raise ValueError(f"{raw!r} is not an interface name")
    return raw


def _names(raw: str) -> list[str]:
    names = [_name(n) for n in _split(raw)]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"listed twice: {', '.join(dups)}")
    return names


def _prefix(raw: str) -> str:
    try:
        ipaddress.ip_interface(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not an address/prefix") from None
    if "/" not in raw:
        raise ValueError(f"{raw!r} has no /prefix")
    return raw


def _ip(raw: str) -> str:
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not an IP address") from None
    return raw


def _parse_route(tokens: list[str]) -> dict[str, Any]:
    """`to via [metric]`, or the iproute2-like `[to] DEST [via GW] [metric N]`."""
    if tokens[0] == "to":
        tokens = tokens[1:]
    if not tokens:
        raise ValueError("no destination")
    dest, rest = tokens[0], tokens[1:]
    via: str | None = None
    metric: str | None = None
    if "via" in rest or "metric" in rest:
        if len(rest) % 2:
            raise ValueError("expected 'DEST [via GW] [metric N]'")
        pairs = dict(zip(rest[::2], rest[1::2], strict=True))
        unknown = set(pairs) - {"via", "metric"}
        if unknown:
            raise ValueError(f"unknown word {sorted(unknown)[0]!r}")
        via, metric = pairs.get("via"), pairs.get("metric")
    elif len(rest) > 2:
        raise ValueError("expected 'to via [metric]'")
    else:
        via = rest[0] if rest else None
        metric = rest[1] if len(rest) > 1 else None
    route: dict[str, Any] = {"to": dest}
    if dest != "default":
        try:
            net = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            raise ValueError(f"destination {dest!r} is neither 'default' nor a network") from None
    if via is not None:
        gw = ipaddress.ip_address(_ip(via))
        if dest != "default" and net.version != gw.version:
            raise ValueError(f"gateway {via} is not of the family of {dest}")
        route["via"] = via
    if metric is not None:
        route["metric"] = _uint(metric, 0, 2**32 - 1)
    return route


def _apply_routes(iface: Iface, raw: str) -> None:
    old = [r for r in iface.get("routes") or [] if isinstance(r, Mapping)]
    routes: list[dict[str, Any]] = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        try:
            route = _parse_route(tokens)
        except ValueError as exc:
            raise ValueError(f"line {lineno}: {exc}") from None
        # keep what the form does not show (table, on-link, scope, ...) of the same route
        match = next(
            (
                r
                for r in old
                if str(r.get("to")) == route["to"] and _text(r.get("via")) == route.get("via", "")
            ),
            None,
        )
        if match is not None:
            old.remove(match)
            merged = dict(match)
            merged.update(route)
            for key in ("via", "metric"):
                if key not in route:
                    merged.pop(key, None)
            route = merged
        routes.append(route)
    if routes:
        iface["routes"] = routes
    else:
        iface.pop("routes", None)


def _apply_addresses(iface: Iface, raw: str) -> None:
    existing = {_address_key(a): a for a in iface.get("addresses") or []}
    addrs = [_prefix(a) for a in _split(raw)]
    dups = sorted({a for a in addrs if addrs.count(a) > 1})
    if dups:
        raise ValueError(f"listed twice: {', '.join(dups)}")
    if addrs:
        iface["addresses"] = [existing.get(a, a) for a in addrs]
    else:
        iface.pop("addresses", None)


def apply_field(iface: Iface, field_key: str, raw: Any) -> None:
    """Parse a form field's text (or a select's value) into the interface mapping, in place.
    Raises ValueError, leaving the mapping unchanged, when the text is not valid."""
    value: Any
    if field_key == "addresses":
        _apply_addresses(iface, raw)
        return
    if field_key == "routes":
        _apply_routes(iface, raw)
        return
    if field_key in ("bond-mode", "bridge-stp"):
        value = raw
    elif field_key == "mtu":
        value = _uint(raw, 68, 65535)
    elif field_key == "mac":
        value = raw.strip() or None
        if value is not None and not _MAC_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    elif field_key == "members":
        value = _names(raw)
    elif field_key == "vlan-id":
        value = _uint(raw, 1, 4094)
    elif field_key in ("vlan-link", "bond-primary"):
        value = _name(raw.strip()) if raw.strip() else None
    elif field_key == "bond-miimon":
        value = _uint(raw, 0, 2**31 - 1)
    elif field_key == "bridge-fd":
        value = _uint(raw, 0, 255)
    elif field_key == "dns-addresses":
        value = [_ip(a) for a in _split(raw)]
    elif field_key == "dns-search":
        value = _split(raw)
        bad = [d for d in value if not _DOMAIN_RE.fullmatch(d)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a domain name")
    else:  # pragma: no cover - FIELDS and this function go together
        raise KeyError(field_key)
    _put(iface, field_key, value)


# --------------------------------------------------------------------------------------------
# The file


def empty_state() -> dict[str, Any]:
    return {"network": {"version": 2}}


def load_state(path: Path) -> dict[str, Any]:
    """The desired state in `path`, or an empty one when the file does not exist. Sections
    and interfaces written as null (`eth1:`) become empty mappings."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return empty_state()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not YAML: {exc}") from None
    if data is None:
        return empty_state()
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with a 'network' key")
    net = data.get("network")
    if net is None:
        net = data["network"] = {"version": 2}
    if not isinstance(net, dict):
        raise ValueError(f"{path}: 'network' is not a mapping")
    for section in SECTIONS:
        if section not in net:
            continue
        if net[section] is None:
            net[section] = {}
        if not isinstance(net[section], dict):
            raise ValueError(f"{path}: network.{section} is not a mapping")
        for name, iface in net[section].items():
            if iface is None:
                net[section][name] = {}
            elif not isinstance(iface, dict):
                raise ValueError(f"{path}: network.{section}.{name} is not a mapping")
    return data


def dump_yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False, allow_unicode=True)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `text` to `path` through a temporary file in the same directory and os.replace
    (a symlink is written through, not replaced)."""
    target = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --------------------------------------------------------------------------------------------
# Screens


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question: y answers True, n or escape False."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 60; height: auto; border: thick $warning; background: $surface; padding: 1 2;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No", show=False),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question", markup=False)
            yield Static("y: yes   n: no", markup=False)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class DiffScreen(ModalScreen[None]):
    """The text of the caller's diff; escape, q or v closes it."""

    DEFAULT_CSS = """
    DiffScreen { align: center middle; }
    DiffScreen > Vertical {
        width: 90%; height: 90%; border: thick $primary; background: $surface;
    }
    DiffScreen VerticalScroll { height: 1fr; padding: 0 1; }
    DiffScreen #diff-hint { height: 1; padding: 0 1; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
        Binding("v", "close", "Close", show=False),
    ]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical():
            with VerticalScroll():
                yield Static(Text(self.text or "(no changes)"), id="diff-text")
            yield Static("escape, q or v: close", id="diff-hint", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)


class AddScreen(ModalScreen[TreeKey | None]):
    """Asks for the section and the name of a new interface."""

    DEFAULT_CSS = """
    AddScreen { align: center middle; }
    AddScreen > Vertical {
        width: 60; height: auto; border: thick $primary; background: $surface; padding: 1 2;
    }
    AddScreen Select, AddScreen Input { margin-bottom: 1; }
    AddScreen #add-error { color: $error; height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, section: str, taken: set[str]) -> None:
        super().__init__()
        self.section = section
        self.taken = taken

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Add an interface (enter: add, escape: cancel)")
            yield Select(
                [(s, s) for s in SECTIONS], value=self.section, allow_blank=False, id="add-section"
            )
            yield Input(placeholder="name, e.g. bond0 or bond0.100", id="add-name")
            yield Static("", id="add-error", markup=False)

    def on_mount(self) -> None:
        self.query_one("#add-name", Input).focus()

    @on(Input.Submitted, "#add-name")
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        name = event.value.strip()
        error = ""
        if not name:
            error = "a name, please"
        elif not _NAME_RE.fullmatch(name):
            error = f"{name!r} is not an interface name (up to 15 of A-Z a-z 0-9 _ . @ -)"
        elif name in self.taken:
            error = f"{name} exists already"
        if error:
            self.query_one("#add-error", Static).update(error)
            return
        section = self.query_one("#add-section", Select).value
        assert isinstance(section, str)
        self.dismiss((section, name))

    def action_cancel(self) -> None:
        self.dismiss(None)


# --------------------------------------------------------------------------------------------
# The editor


class NetEditor(App[str]):
    """Edits the desired-state file at `path`. `validate(data)` returns error lines (empty when
    the data can be saved); `diff(data)` returns the text shown by `v`. Both get a copy of
    the edited data. `run()` returns "apply" after ctrl+a (the file is saved), else None."""

    TITLE = "DebVisor net"
    CSS = """
    #tree { width: 26; height: 1fr; border: round $primary; }
    #right { width: 1fr; height: 1fr; }
    #form { height: 1fr; border: round $primary; padding: 0 1; }
    #form-title { text-style: bold; margin-bottom: 1; }
    .row { height: auto; }
    .row > Label { width: 17; }
    .row > Input, .row > Select { width: 1fr; }
    #f-routes { width: 1fr; height: 4; }
    #status { height: auto; max-height: 8; padding: 0 1; }
    #status.error { color: $error; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "add", "Add"),
        Binding("d", "delete", "Delete"),
        Binding("v", "diff", "Diff"),
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("ctrl+a", "apply", "Apply", priority=True),
        Binding("q", "quit", "Quit"),
        Binding("escape", "focus_tree", "List"),
    ]

    def __init__(
        self,
        path: Path,
        *,
        diff: Callable[[dict[str, Any]], str],
        validate: Callable[[dict[str, Any]], list[str]],
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self._diff = diff
        self._validate = validate
        self.data: dict[str, Any] = load_state(self.path)
        self._saved: dict[str, Any] = copy.deepcopy(self.data)
        self.current: TreeKey | None = None
        # (section, name, field key) -> error / the text the user typed that did not parse
        self.field_errors: dict[tuple[str, str, str], str] = {}
        self._pending: dict[tuple[str, str, str], str] = {}
        self._message = ""
        self._message_is_error = False

    # -- state --------------------------------------------------------------------------------

    @property
    def network(self) -> dict[str, Any]:
        net = self.data["network"]
        assert isinstance(net, dict)
        return net

    def interfaces(self, section: str) -> dict[str, Iface]:
        ifaces = self.network.get(section)
        return ifaces if isinstance(ifaces, dict) else {}

    @property
    def dirty(self) -> bool:
        """Unsaved changes: the data differs from the file, or a field does not parse."""
        return self.data != self._saved or bool(self.field_errors)

    def _iface(self) -> Iface | None:
        if self.current is None:
            return None
        return self.interfaces(self.current[0]).get(self.current[1])

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            tree: Tree[TreeKey] = Tree("network", id="tree")
            tree.show_root = False
            yield tree
            with Vertical(id="right"):
                form = VerticalScroll(id="form")
                form.can_focus = False
                with form:
                    yield Static("", id="form-title", markup=False)
                    for f in FIELDS:
                        with Horizontal(classes="row", id=f"row-{f.key}"):
                            yield Label(f.label)
                            yield self._field_widget(f)
                yield Static("", id="status", markup=False)
        yield Footer()

    @staticmethod
    def _field_widget(f: Field) -> Input | Select[Any] | TextArea:
        wid = f"f-{f.key}"
        if f.kind == "text":
            return TextArea(
                id=wid, soft_wrap=False, compact=True, placeholder=Content(f.placeholder)
            )
        if f.kind == "select":
            options: list[tuple[str, Any]]
            if f.key == "bridge-stp":
                options = [("on", True), ("off", False)]
            else:
                options = [(m, m) for m in BOND_MODES]
            return Select(options, prompt="(unset)", id=wid, compact=True)
        return Input(placeholder=f.placeholder, id=wid, compact=True)

    def on_mount(self) -> None:
        self._rebuild_tree(None)
        self._update_title()

    def _rebuild_tree(self, select: TreeKey | None) -> None:
        tree: Tree[TreeKey] = self.query_one("#tree", Tree)
        tree.clear()
        goal: TreeNode[TreeKey] | None = None
        first: TreeNode[TreeKey] | None = None
        for section in SECTIONS:
            ifaces = self.interfaces(section)
            node = tree.root.add(
                Text(f"{section} ({len(ifaces)})"), data=(section, ""), expand=True
            )
            for name in ifaces:
                leaf = node.add_leaf(Text(str(name)), data=(section, str(name)))
                first = first or leaf
                if (section, name) == select:
                    goal = leaf
        goal = goal or first
        self._show_iface(goal.data if goal is not None else None)
        if goal is not None:
            self.call_after_refresh(tree.move_cursor, goal)

    @on(Tree.NodeHighlighted, "#tree")
    def _highlighted(self, event: Tree.NodeHighlighted[TreeKey]) -> None:
        key = event.node.data
        target = key if key is not None and key[1] else None
        if target != self.current:
            self._show_iface(target)

    def _show_iface(self, key: TreeKey | None) -> None:
        """Fill the form from the interface (or show the hint when none is selected)."""
        self.current = key
        iface = self._iface()
        title = self.query_one("#form-title", Static)
        if key is None or iface is None:
            self.current = None
            title.update("Select an interface on the left, or press a to add one.")
            for f in FIELDS:
                self.query_one(f"#row-{f.key}").display = False
            return
        section, name = key
        title.update(f"{section[:-1]} {name}")
        with self.prevent(Input.Changed, Select.Changed, TextArea.Changed):
            for f in FIELDS:
                row = self.query_one(f"#row-{f.key}")
                row.display = section in f.sections
                if not row.display:
                    continue
                pending = self._pending.get((section, name, f.key))
                if f.kind == "select":
                    select: Select[Any] = self.query_one(f"#f-{f.key}", Select)
                    value = select_value(iface, f.key)
                    if f.key == "bond-mode":
                        modes = list(BOND_MODES)
                        if value is not None and value not in modes:
                            modes.append(value)  # keep a mode the list does not know
                        select.set_options([(str(m), m) for m in modes])
                    elif value is not None and not isinstance(value, bool):
                        value = str(value).lower() in ("true", "on", "yes", "1")
                    select.value = Select.NULL if value is None else value
                elif f.kind == "text":
                    area = self.query_one(f"#f-{f.key}", TextArea)
                    area.text = pending if pending is not None else render_field(iface, f.key)
                    area.set_class(pending is not None, "-invalid")
                else:
                    inp = self.query_one(f"#f-{f.key}", Input)
                    inp.value = pending if pending is not None else render_field(iface, f.key)
                    inp.set_class(pending is not None, "-invalid")
        self.query_one("#form", VerticalScroll).scroll_home(animate=False)

    # -- editing ------------------------------------------------------------------------------

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        self._commit(event.input.id, event.value)

    @on(TextArea.Changed)
    def _text_changed(self, event: TextArea.Changed) -> None:
        self._commit(event.text_area.id, event.text_area.text)

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        value = event.value
        self._commit(event.select.id, None if value is Select.NULL else value)

    def _commit(self, widget_id: str | None, raw: Any) -> None:
        if not widget_id or not widget_id.startswith("f-"):
            return  # not a form field (the add dialog's input, ...)
        f = FIELD_BY_KEY.get(widget_id[2:])
        iface = self._iface()
        if f is None or iface is None or self.current is None:
            return
        section, name = self.current
        key = (section, name, f.key)
        try:
            apply_field(iface, f.key, raw)
        except ValueError as exc:
            self.field_errors[key] = f"{section}/{name} {f.label}: {exc}"
            self._pending[key] = raw
        else:
            self.field_errors.pop(key, None)
            self._pending.pop(key, None)
        self.query_one(f"#{widget_id}").set_class(key in self.field_errors, "-invalid")
        self._refresh_status()
        self._update_title()

    def _update_title(self) -> None:
        self.sub_title = f"{self.path}{'  [modified]' if self.dirty else ''}"

    def _set_message(self, message: str, *, error: bool = False) -> None:
        self._message = message
        self._message_is_error = error
        self._refresh_status()

    def _refresh_status(self) -> None:
        lines = list(self.field_errors.values())
        if self._message:
            lines.append(self._message)
        status = self.query_one("#status", Static)
        status.update("\n".join(lines))
        status.set_class(bool(self.field_errors) or self._message_is_error, "error")

    def status_text(self) -> str:
        """What the status line shows (errors, the outcome of the last save)."""
        return "\n".join([*self.field_errors.values(), *([self._message] if self._message else [])])

    # -- actions ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in ("add", "delete", "diff", "save", "apply", "focus_tree"):
            return True
        # nothing behind a dialog (ctrl+s and ctrl+a are priority keys, seen everywhere)
        if isinstance(self.screen, ModalScreen):
            return False
        on_list = self.focused is None or self.focused.id == "tree"
        if action == "focus_tree":
            return not on_list
        if action in ("add", "delete", "diff"):
            # letters: only on the list, so that a key on a form field (a closed Select
            # does not take letters) never deletes an interface
            return on_list
        return True

    def action_focus_tree(self) -> None:
        self.query_one("#tree", Tree).focus()

    def action_add(self) -> None:
        taken = {str(n) for s in SECTIONS for n in self.interfaces(s)}
        section = self.current[0] if self.current else "ethernets"
        self.push_screen(AddScreen(section, taken), self._added)

    def _added(self, result: TreeKey | None) -> None:
        if result is None:
            return
        section, name = result
        if not isinstance(self.network.get(section), dict):
            self.network[section] = {}
        iface: Iface = {}
        if section == "vlans":  # bond0.100: prefill id 100 and link bond0
            link, _, vid = name.rpartition(".")
            if link and vid.isdigit() and 1 <= int(vid) <= 4094:
                iface = {"id": int(vid), "link": link}
        self.network[section][name] = iface
        self._rebuild_tree((section, name))
        self._set_message(f"added {section}/{name} (not saved)")
        self._update_title()
        first = next(f for f in FIELDS if section in f.sections)
        self.query_one(f"#f-{first.key}").focus()

    def action_delete(self) -> None:
        if self.current is None:
            self._set_message("select an interface to delete", error=True)
            return
        section, name = self.current
        ifaces = self.interfaces(section)
        ifaces.pop(name, None)
        if not ifaces:
            self.network.pop(section, None)
        for key in [k for k in self.field_errors if k[:2] == (section, name)]:
            del self.field_errors[key]
        for key in [k for k in self._pending if k[:2] == (section, name)]:
            del self._pending[key]
        self._rebuild_tree(None)
        self._set_message(f"deleted {section}/{name} (not saved)")
        self._update_title()

    def action_diff(self) -> None:
        try:
            text = self._diff(copy.deepcopy(self.data))
        except Exception as exc:  # noqa: BLE001 - the caller's code: report, do not crash
            self._set_message(f"diff failed: {exc}", error=True)
            return
        self.push_screen(DiffScreen(text))

    def save(self) -> bool:
        """Validate and write the file; False (and the reasons on screen) when not written."""
        if self.field_errors:
            self._set_message("not saved: fix the fields above first", error=True)
            return False
        try:
            errors = [str(e) for e in self._validate(copy.deepcopy(self.data))]
        except Exception as exc:  # noqa: BLE001 - the caller's code: report, do not crash
            errors = [f"validation failed: {exc}"]
        if errors:
            self._set_message("not saved:\n" + "\n".join(f"  {e}" for e in errors), error=True)
            return False
        try:
            write_atomic(self.path, dump_yaml(self.data))
        except OSError as exc:
            self._set_message(f"not saved: {exc}", error=True)
            return False
        self._saved = copy.deepcopy(self.data)
        self._set_message(f"saved {self.path}")
        self._update_title()
        return True

    def action_save(self) -> None:
        self.save()

    def action_apply(self) -> None:
        if self.save():
            self.exit("apply")

    async def action_quit(self) -> None:
        if not self.dirty:
            self.exit(None)
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.exit(None)

        self.push_screen(ConfirmScreen("Discard unsaved changes? (y/n)"), answered)


def run(
    path: Path,
    *,
    diff: Callable[[dict[str, Any]], str],
    validate: Callable[[dict[str, Any]], list[str]],
) -> str | None:
    """Run the editor in the terminal; "apply" when the user saved and asked to apply."""
    return NetEditor(path, diff=diff, validate=validate).run()
