"""Bring a namespace's network to a target snapshot: plan the changes, execute them, verify.

The plan is diff-driven and idempotent (an empty plan when the kernel already matches), in the
order a restore needs: 1 delete virtual links the target lacks, 2 create missing virtual
links, 3 per link, a bond before its slaves, a bridge after its ports (its MTU and MAC stick
only when set once they are in) and a VLAN or macvlan after its lower link (down before
enslaving, master, mtu, mac, admin-down; bond slaves in their recorded order), then the MAC
of each bond (a new bond takes its first slave's), then admin-up with every lower link before
its uppers (a bond's or bridge's ports before it, a VLAN's link before the VLAN: the kernel
refuses to bring a VLAN up on a link that is down), then each bond's primary (once its slave
is in), 4 addresses, 5 routes (removals first, every route with its proto, metric, table,
scope and type), 6 rules.

A bridge's vlan_filtering and vlan_default_pvid are given at creation and changed in place; the
PVID counts only with filtering on. A new bridge is not sent filtering off: that is the
kernel's default, and a kernel built without VLAN filtering refuses the attribute even then.

Bond options go only to the modes that take them: lacp_rate to 802.3ad (the kernel refuses it
in any other mode, and ignores the value it keeps there, so it is not compared either), primary
to active-backup, balance-tlb and balance-alb; xmit_hash_policy is accepted in every mode.

Planning simulates the kernel's side effects it knows (admin-down drops the link's IPv6
addresses and its routes; removing a link's last IPv4 address drops its IPv4 routes; deleting
a link drops its ports, addresses and routes), so one pass usually suffices. `converge`
re-plans after executing and repairs what is left, twice at most.

Only links named in the target are managed: a link the target does not name is deleted when
it is a virtual kind debvisor can recreate, and otherwise (a NIC, a VM's tap) left alone with
its addresses and routes. In a target, mtu or mac None means "whatever the kernel chooses".
"""

from __future__ import annotations

import copy
import errno
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from .snapshot import (
    BOND_HASH_POLICIES,
    BOND_MODES,
    LACP_RATES,
    MACVLAN_MODES,
    diff,
    format_route,
    format_rule,
    kind_value,
    normalise,
    snapshot,
    sort_key,
)

#: kinds plan() deletes and recreates; a link of another kind (None) is never deleted
VIRTUAL = ("bridge", "bond", "vlan", "macvlan", "dummy", "veth")
#: the kind data plan() compares in place, per kind; anything else differing recreates the link
_IN_PLACE = {"bridge": ("stp", "forward_delay", "priority", "vlan_filtering",
                        "vlan_default_pvid"),
             "bond": ("miimon", "xmit_hash_policy", "lacp_rate", "primary", "slaves")}
PASSES = 2
#: bond modes that take a primary slave, and the one that takes a LACP rate
PRIMARY_MODES = ("active-backup", "balance-tlb", "balance-alb")
LACP_MODE = "802.3ad"


@dataclass(frozen=True)
class Change:
    """One kernel change: its operation, one line for the operator, and its JSON-able args."""

    op: str
    description: str
    args: dict[str, Any] = field(default_factory=dict)


class ChangeFailed(RuntimeError):
    """The kernel refused a change."""

    def __init__(self, change: Change, error: BaseException) -> None:
        reason = getattr(error, "args", (None, None))
        text = reason[1] if len(reason) > 1 and isinstance(reason[1], str) else str(error)
        super().__init__(f"{change.description}: {text}")
        self.change = change
        self.error = error


# -- checking a target ---------------------------------------------------------------------
def _lower(link: dict[str, Any]) -> str | None:
    kind = link.get("kind")
    if kind in ("vlan", "macvlan"):
        return (link.get(kind) or {}).get("link")
    return None


def _bond_mode(want: dict[str, Any], have: dict[str, Any] | None = None) -> str:
    """The mode bond WANT will be in: its own, else that of HAVE (the bond as it is), else the
    kernel's default; by name."""
    for link in (want, have):
        mode = ((link or {}).get("bond") or {}).get("mode")
        if mode is not None and (link or {}).get("kind") == "bond":
            return str(BOND_MODES.get(mode, mode) if isinstance(mode, int) else mode)
    return BOND_MODES[0]


def _bond_options(bond: dict[str, Any], mode: str) -> dict[str, Any]:
    """The options of BOND that creating it in MODE sends: not primary (set once its slave is
    enslaved) nor slaves, and lacp_rate only in 802.3ad mode."""
    return {k: v for k, v in bond.items() if v is not None and k not in ("primary", "slaves")
            and (k != "lacp_rate" or mode == LACP_MODE)}


def _check(cur: dict[str, Any], tgt: dict[str, Any]) -> None:
    """ValueError (one sentence) for a target plan() cannot reach; nothing is changed yet."""
    links = tgt["links"]
    for name, link in links.items():
        kind = link["kind"]
        if kind is not None and kind not in VIRTUAL:
            raise ValueError(f"link {name} has kind {kind!r}, which debvisor cannot manage")
        if link["master"] is not None and link["master"] not in links:
            raise ValueError(f"link {name} has master {link['master']}, which the target "
                             f"does not have")
        if kind in ("vlan", "macvlan") and _lower(link) not in links:
            raise ValueError(f"{kind} {name} sits on link {_lower(link)}, which the target "
                             f"does not have")
        have = cur["links"].get(name)
        primary = (link.get("bond") or {}).get("primary") if kind == "bond" else None
        if primary and _bond_mode(link, have) not in PRIMARY_MODES:
            raise ValueError(f"bond {name} has primary {primary}, but only the modes "
                             f"{', '.join(PRIMARY_MODES)} take one, not "
                             f"{_bond_mode(link, have)}")
        if have is None:
            if kind is None:
                raise ValueError(f"link {name} is not in the kernel and is not a virtual "
                                 f"link debvisor can create (physical or of unknown kind)")
            if kind == "veth" and not _veth_pair_ok(links, name):
                raise ValueError(f"veth {name} is not in the kernel and its peer is not "
                                 f"in this namespace, so it cannot be recreated")
        elif _recreate(have, link):
            if not _deletable(have):
                what = ("a veth whose peer is in another namespace" if have["kind"]
                        else "a physical link")
                raise ValueError(f"link {name} would have to be deleted and created again to "
                                 f"become the target's {kind}, but it is {what}")
            if kind == "veth" and not _veth_pair_ok(links, name):
                raise ValueError(f"veth {name} would have to be recreated, but its peer is "
                                 f"not in this namespace")
    for a in tgt["addresses"]:
        if a["dev"] not in links:
            raise ValueError(f"address {a['address']} is on link {a['dev']}, which the "
                             f"target does not have")
    for r in tgt["routes"]:
        for dev in _route_devs(r):
            if dev not in links:
                raise ValueError(f"route {format_route(r)} uses link {dev}, which the "
                                 f"target does not have")


def _deletable(link: dict[str, Any]) -> bool:
    """Whether plan() may delete LINK: a virtual kind it can create again. A veth whose peer
    sits in another namespace (a container's uplink) could not be recreated, so it stays."""
    if link["kind"] == "veth":
        return bool((link.get("veth") or {}).get("peer"))
    return link["kind"] in VIRTUAL


def _veth_pair_ok(links: dict[str, dict[str, Any]], name: str) -> bool:
    """Whether the target's veth NAME and its peer name each other (both in this namespace)."""
    peer = (links[name].get("veth") or {}).get("peer")
    if not peer:
        return False
    return bool((links.get(str(peer), {}).get("veth") or {}).get("peer") == name)


def _route_devs(route: dict[str, Any]) -> list[str]:
    devs = [route["dev"]] if route.get("dev") else []
    return devs + [h["dev"] for h in route.get("multipath") or [] if h.get("dev")]


def _recreate(have: dict[str, Any], want: dict[str, Any]) -> bool:
    """Whether link HAVE must be deleted and created again to become WANT (a target's kind
    None takes the link as it is; kind data the target leaves out is not compared)."""
    kind = want["kind"]
    if kind is None:
        return False
    if have["kind"] != kind:
        return True
    if kind in ("vlan", "macvlan", "veth") and want.get(kind) is not None:
        return bool(have.get(kind) != want[kind])
    if kind == "bond" and (want.get("bond") or {}).get("mode") is not None:
        return bool((have.get("bond") or {}).get("mode") != want["bond"]["mode"])
    return False


# -- the simulated kernel ------------------------------------------------------------------
class _State:
    """What the kernel will look like after the changes planned so far."""

    def __init__(self, snap: dict[str, Any]) -> None:
        self.links: dict[str, dict[str, Any]] = copy.deepcopy(snap["links"])
        self.addresses = [dict(a) for a in snap["addresses"]]
        self.routes = [dict(r) for r in snap["routes"]]
        self.rules = [dict(r) for r in snap["rules"]]
        #: (link, "mtu"|"mac") set explicitly by the plan: the kernel keeps them
        self.pinned: set[tuple[str, str]] = set()

    def drop_routes(self, dev: str, family: int | None = None) -> None:
        self.routes = [r for r in self.routes if not (
            dev in _route_devs(r) and (family is None or r["family"] == family))]

    def delete_link(self, name: str) -> None:
        gone = self.links.pop(name, None)
        for link in self.links.values():
            if link.get("master") == name:
                link["master"] = None
                if gone is not None and gone["kind"] == "bond":
                    link["mac"] = None  # a slave gets its own MAC back, which is not known
            bond = link.get("bond")
            if bond and name in (bond.get("slaves") or []):
                bond["slaves"].remove(name)
        self.addresses = [a for a in self.addresses if a["dev"] != name]
        self.drop_routes(name)

    def set_down(self, name: str) -> None:
        """Admin-down: the link loses its IPv6 addresses and all routes through it."""
        self.links[name]["up"] = False
        self.addresses = [a for a in self.addresses if not (
            a["dev"] == name and ipaddress.ip_interface(a["address"]).version == 6)]
        self.drop_routes(name)

    def del_address(self, dev: str, address: str) -> None:
        """The last IPv4 address of a link takes its IPv4 routes along; routes with the
        address as preferred source go too."""
        self.addresses.remove({"dev": dev, "address": address})
        ip = str(ipaddress.ip_interface(address).ip)
        self.routes = [r for r in self.routes if r.get("prefsrc") != ip]
        if ipaddress.ip_interface(address).version == 4 and not any(
                a["dev"] == dev and ipaddress.ip_interface(a["address"]).version == 4
                for a in self.addresses):
            self.drop_routes(dev, 4)


# -- descriptions ----------------------------------------------------------------------------
def _seconds(centiseconds: int) -> str:
    return f"{centiseconds / 100:g} s"


def _bridge_text(params: dict[str, Any], keys: list[str] | None = None) -> str:
    """PARAMS in words: KEYS of them, or (None) those a new bridge has that are not the
    kernel's defaults (STP and forward delay always)."""
    parts = []
    for key in keys or ["stp", "forward_delay", "priority", "vlan_filtering",
                        "vlan_default_pvid"]:
        if key not in params:
            continue
        if key == "stp":
            parts.append(f"stp {'on' if params['stp'] else 'off'}")
        elif key == "forward_delay":
            parts.append(f"forward delay {_seconds(int(params['forward_delay']))}")
        elif key == "priority" and (keys or params["priority"] != 32768):
            parts.append(f"priority {params['priority']}")
        elif key == "vlan_filtering" and (keys or params["vlan_filtering"]):
            parts.append(f"vlan filtering {'on' if params['vlan_filtering'] else 'off'}")
        elif key == "vlan_default_pvid" and (keys or params["vlan_default_pvid"] != 1):
            parts.append(f"default pvid {params['vlan_default_pvid']}")
    return ", ".join(parts)


def _add_text(name: str, link: dict[str, Any]) -> str:
    kind = link["kind"]
    if kind == "bridge":
        detail = _bridge_text(link.get("bridge") or {})
        return f"add bridge {name}" + (f" ({detail})" if detail else "")
    if kind == "bond":
        bond = link.get("bond") or {}
        return f"add bond {name} ({bond.get('mode')}, miimon {bond.get('miimon', 0)})"
    if kind == "vlan":
        vlan = link.get("vlan") or {}
        return f"add vlan {name} (id {vlan.get('id')} on {vlan.get('link')})"
    if kind == "macvlan":
        mv = link.get("macvlan") or {}
        return f"add macvlan {name} ({mv.get('mode')} mode on {mv.get('link')})"
    if kind == "veth":
        return f"add veth pair {name}/{link['veth']['peer']}"
    return f"add {kind} {name}"


# -- planning ------------------------------------------------------------------------------
def _ordered(links: dict[str, dict[str, Any]], up: bool = False) -> list[str]:
    """The names of LINKS, each after its lower link (a VLAN's or macvlan's); a bridge after
    its ports (its MTU and MAC set once they are in stick), a port of any other master (a
    bond's slave) after it; with UP, every port before its master (the order for admin-up).
    Bond slaves in their recorded order, names alphabetically otherwise."""
    after: dict[str, list[str]] = {n: [] for n in links}
    for name, link in links.items():
        lower, master = _lower(link), link["master"]
        if lower in links:
            after[name].append(str(lower))
        if master in links:
            if up or links[master]["kind"] == "bridge":
                after[master].append(name)
            else:
                after[name].append(master)
    level: dict[str, int] = {}

    def depth(name: str, path: tuple[str, ...]) -> int:
        if name in path:
            loop = path[path.index(name):]
            raise ValueError(f"links {', '.join(loop)} are in a loop of masters and lower "
                             f"links")
        if name not in level:
            level[name] = max((depth(n, (*path, name)) + 1 for n in after[name]), default=0)
        return level[name]

    def position(name: str) -> tuple[int, int, str]:
        master = links[name]["master"]
        index = 0
        if master is not None and links[master]["kind"] == "bond":
            index = _slave_order(links, master).index(name)
        return depth(name, ()), index, name

    return sorted(links, key=position)


def _slave_order(tgt: dict[str, dict[str, Any]], bond: str) -> list[str]:
    listed = (tgt[bond].get("bond") or {}).get("slaves") or []
    ports = sorted(n for n, lk in tgt.items() if lk["master"] == bond)
    return [n for n in listed if n in ports] + [n for n in ports if n not in listed]


def _plan_deletions(cur: dict[str, Any], tgt: dict[str, Any], st: _State,
                    out: list[Change]) -> None:
    tlinks = tgt["links"]
    doomed = {n for n, lk in cur["links"].items() if n != "lo" and _deletable(lk)
              and (n not in tlinks or _recreate(lk, tlinks[n]))}
    gone = set(doomed)
    grew = True
    while grew:  # what goes with them: uppers of a deleted lower, the other end of a veth
        grew = False
        for n, lk in cur["links"].items():
            if n in gone:
                continue
            if _lower(lk) in gone or (lk["kind"] == "veth"
                                      and (lk.get("veth") or {}).get("peer") in gone):
                gone.add(n)
                grew = True
    rank = {"vlan": 0, "macvlan": 0, "bridge": 1, "bond": 1}
    said: set[str] = set()
    for n in sorted(gone, key=lambda n: (rank.get(cur["links"][n]["kind"], 2), n)):
        lk = cur["links"][n]
        if n in said:
            continue
        kind = lk["kind"] or "link"
        peer = (lk.get("veth") or {}).get("peer") if kind == "veth" else None
        text = f"delete {kind} {n}" + (f" (and its peer {peer})" if peer else "")
        out.append(Change("link.del", text, {"name": n}))
        said.update([n, peer] if peer else [n])
    for n in gone:
        st.delete_link(n)


def _plan_creations(tgt: dict[str, Any], st: _State, out: list[Change]) -> None:
    tlinks = tgt["links"]
    missing = [n for n in sorted(tlinks) if n not in st.links]
    while missing:
        ready = [n for n in missing if _lower(tlinks[n]) is None
                 or _lower(tlinks[n]) in st.links]
        if not ready:
            raise ValueError(f"links {', '.join(missing)} sit on links that cannot be created")
        for n in ready:
            if n in st.links:  # the peer of a veth created just before
                missing.remove(n)
                continue
            want = tlinks[n]
            # a bridge's MTU given at creation does not stick: its first port's lower MTU
            # replaces it; a later explicit set does (so the link step sets it)
            args: dict[str, Any] = {"name": n, "kind": want["kind"],
                                    "mtu": None if want["kind"] == "bridge" else want["mtu"],
                                    "mac": None if want["kind"] == "bond" else want["mac"]}
            for key in ("bridge", "vlan", "macvlan"):
                if want["kind"] == key and want.get(key) is not None:
                    args[key] = dict(want[key])
            if "bridge" in args and not args["bridge"].get("vlan_filtering", 1):
                # off is the default, and a kernel without VLAN filtering refuses even that
                del args["bridge"]["vlan_filtering"]
            if want["kind"] == "bond":
                args["bond"] = _bond_options(want.get("bond") or {}, _bond_mode(want))
            created = [n]
            if want["kind"] == "veth":
                peer = want["veth"]["peer"]
                args["veth"] = {"peer": peer, "mtu": tlinks[peer]["mtu"],
                                "mac": tlinks[peer]["mac"]}
                created.append(peer)
            out.append(Change("link.add", _add_text(n, want), args))
            for c in created:
                w = tlinks[c]
                link = {"kind": w["kind"], "master": None,
                        "mtu": None if w["kind"] == "bridge" else w["mtu"],
                        "mac": None if w["kind"] == "bond" else w["mac"], "up": False}
                for key in ("bridge", "vlan", "macvlan", "veth"):
                    if w["kind"] == key:
                        link[key] = copy.deepcopy(w.get(key))
                if w["kind"] == "bond":
                    link["bond"] = dict(w.get("bond") or {}, primary=None, slaves=[])
                st.links[c] = link
                st.pinned.update((c, k) for k in ("mtu", "mac") if link[k] is not None)
            missing.remove(n)


def _plan_links(tgt: dict[str, Any], st: _State, out: list[Change]) -> None:
    tlinks = tgt["links"]
    # a bond whose kept slaves are out of order releases them, to enslave them in order
    for bond, want in tlinks.items():
        if want["kind"] != "bond" or bond not in st.links:
            continue
        order = _slave_order(tlinks, bond)
        kept = [s for s in (st.links[bond].get("bond") or {}).get("slaves") or []
                if s in order]
        if kept != order[:len(kept)]:
            for s in kept:
                out.append(Change("link.enslave", f"release {s} from {bond} (slave order)",
                                  {"name": s, "master": None}))
                st.links[s].update(master=None, mac=None)  # its own MAC back: not known
                st.links[bond]["bond"]["slaves"].remove(s)

    touched: set[str] = set()  # bridges whose ports joined, left or changed their MTU
    for name in _ordered(tlinks):
        want, have = tlinks[name], st.links[name]
        kind = want["kind"]
        if name in touched:
            # the kernel may have given the bridge its ports' lowest MTU and MAC (unless they
            # were set explicitly, which a snapshot cannot tell): unknown, unless both agree
            ports = [lk for lk in st.links.values() if lk["master"] == name]
            for key in ("mtu", "mac"):
                values = [lk[key] for lk in ports]
                if (name, key) not in st.pinned and values and (
                        None in values or min(values) != have[key]):
                    have[key] = None
        if kind in _IN_PLACE and want.get(kind) is not None:
            lacp = kind == "bond" and _bond_mode(want, have) == LACP_MODE
            keys = [k for k in _IN_PLACE[kind] if k not in ("primary", "slaves")
                    and (k != "lacp_rate" or lacp) and want[kind].get(k) is not None
                    and kind_value(kind, have.get(kind) or {}, k) != want[kind][k]]
            if "lacp_rate" in keys and have["up"]:  # the kernel changes it on a down bond only
                out.append(Change("link.set", f"set {name} down to change its lacp_rate",
                                  {"name": name, "up": False}))
                st.set_down(name)
            if keys:
                params = {k: want[kind][k] for k in keys}
                text = (_bridge_text(params, keys) if kind == "bridge"
                        else ", ".join(f"{k} {v}" for k, v in params.items()))
                out.append(Change("link.set", f"set {name} {text}",
                                  {"name": name, kind: params}))
                have.setdefault(kind, {}).update(params)
        master = want["master"]
        if have["master"] != master:
            if master is not None:
                if have["up"]:
                    out.append(Change("link.set", f"set {name} down before moving it into "
                                      f"{master}", {"name": name, "up": False}))
                    st.set_down(name)
                out.append(Change("link.enslave", f"move {name} into {master}",
                                  {"name": name, "master": master}))
                mlink = st.links[master]
                if mlink["kind"] == "bond":
                    if not mlink["bond"]["slaves"] and mlink["mac"] is None:
                        mlink["mac"] = have["mac"]  # a new bond takes its first slave's MAC
                    mlink["bond"]["slaves"].append(name)
                    have["mtu"] = mlink["mtu"]
                    have["up"] = True  # enslaving opens the slave
            else:
                out.append(Change("link.enslave", f"release {name} from {have['master']}",
                                  {"name": name, "master": None}))
                old = st.links.get(have["master"], {}).get("bond")
                if old and name in old["slaves"]:
                    old["slaves"].remove(name)
                    have["mac"] = None  # it gets its own MAC back, which is not known
            touched.update(m for m in (have["master"], master)
                           if m in st.links and st.links[m]["kind"] == "bridge")
            have["master"] = master
        if want["mtu"] is not None and have["mtu"] != want["mtu"]:
            out.append(Change("link.set", f"set mtu of {name} to {want['mtu']}",
                              {"name": name, "mtu": want["mtu"]}))
            have["mtu"] = want["mtu"]
            st.pinned.add((name, "mtu"))
            if kind == "bond":  # a bond sets its slaves' MTU
                for slave in (have.get("bond") or {}).get("slaves") or []:
                    st.links[slave]["mtu"] = want["mtu"]
            if master is not None and st.links[master]["kind"] == "bridge":
                touched.add(master)
        in_bond = master is not None and tlinks[master]["kind"] == "bond"
        if kind != "bond" and not in_bond:  # a bond's MAC: once its slaves are in
            _plan_mac(name, want, st, out)
        if have["up"] and not want["up"]:
            out.append(Change("link.set", f"set {name} down", {"name": name, "up": False}))
            st.set_down(name)
    for name in _ordered(tlinks):
        if tlinks[name]["kind"] == "bond":
            _plan_mac(name, tlinks[name], st, out)
    for name in _ordered(tlinks, up=True):  # lower links up before their uppers
        if tlinks[name]["up"] and not st.links[name]["up"]:
            out.append(Change("link.set", f"set {name} up", {"name": name, "up": True}))
            st.links[name]["up"] = True
    for bond, want in tlinks.items():  # a primary takes effect once its slave is enslaved
        if want["kind"] != "bond" or "primary" not in (want.get("bond") or {}):
            continue
        primary = want["bond"]["primary"]
        have_bond = st.links[bond].setdefault("bond", {})
        if have_bond.get("primary") != primary and (
                primary or _bond_mode(want, st.links[bond]) in PRIMARY_MODES):
            out.append(Change("link.set", f"set primary of {bond} to {primary or 'none'}",
                              {"name": bond, "bond": {"primary": primary}}))
            have_bond["primary"] = primary


def _plan_mac(name: str, want: dict[str, Any], st: _State, out: list[Change]) -> None:
    have = st.links[name]
    if want["mac"] and have["mac"] != want["mac"]:  # None: not known
        out.append(Change("link.set", f"set mac of {name} to {want['mac']}",
                          {"name": name, "mac": want["mac"]}))
        have["mac"] = want["mac"]
        st.pinned.add((name, "mac"))


def _plan_addresses(tgt: dict[str, Any], st: _State, out: list[Change]) -> None:
    managed = set(tgt["links"])
    want = tgt["addresses"]
    for a in sorted((a for a in st.addresses if a["dev"] in managed and a not in want),
                    key=sort_key):
        out.append(Change("addr.del", f"remove {a['address']} from {a['dev']}", dict(a)))
        st.del_address(a["dev"], a["address"])
    for a in want:
        if a not in st.addresses:
            out.append(Change("addr.add", f"add {a['address']} on {a['dev']}", dict(a)))
            st.addresses.append(dict(a))


def _route_key(r: dict[str, Any]) -> tuple[Any, ...]:
    return r["family"], r["table"], r["dst"], r["metric"]


def _plan_routes(tgt: dict[str, Any], st: _State, out: list[Change]) -> None:
    managed = set(tgt["links"])
    want = sorted(tgt["routes"], key=sort_key)
    extra = [r for r in st.routes if all(d in managed for d in _route_devs(r))
             and r not in want]
    missing = [r for r in want if r not in st.routes]
    replace: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for r in list(missing):
        same = [x for x in extra if _route_key(x) == _route_key(r)]
        if len(same) == 1 and sum(_route_key(m) == _route_key(r) for m in missing) == 1:
            replace.append((same[0], r))
            extra.remove(same[0])
            missing.remove(r)
    for r in sorted(extra, key=sort_key):
        out.append(Change("route.del", f"remove {format_route(r)}", dict(r)))
    for _old, r in replace:
        out.append(Change("route.replace", f"replace {format_route(r)}", dict(r)))
    for r in missing:
        out.append(Change("route.add", f"add {format_route(r)}", dict(r)))
    st.routes = [r for r in st.routes if r not in extra] + [r for _, r in replace] + missing


def _plan_rules(tgt: dict[str, Any], st: _State, out: list[Change]) -> None:
    want = sorted(tgt["rules"], key=sort_key)
    for r in sorted((r for r in st.rules if r not in want), key=sort_key):
        out.append(Change("rule.del", f"remove rule {format_rule(r)}", dict(r)))
    for r in want:
        if r not in st.rules:
            out.append(Change("rule.add", f"add rule {format_rule(r)}", dict(r)))
    st.rules = [dict(r) for r in want]


def plan(current: dict[str, Any], target: dict[str, Any]) -> list[Change]:
    """The changes that turn snapshot CURRENT into TARGET, in execution order; [] when equal.

    ValueError (one sentence) when the target cannot be reached, e.g. it has a physical link
    the kernel lacks; planning changes nothing.
    """
    cur, tgt = normalise(current), normalise(target)
    _check(cur, tgt)
    st = _State(cur)
    out: list[Change] = []
    _plan_deletions(cur, tgt, st, out)
    _plan_creations(tgt, st, out)
    _plan_links(tgt, st, out)
    _plan_addresses(tgt, st, out)
    _plan_routes(tgt, st, out)
    _plan_rules(tgt, st, out)
    return out


# -- executing -----------------------------------------------------------------------------
#: errors that mean "already so": the kernel did it as a side effect of an earlier change
_ALREADY = {("link.del", errno.ENODEV), ("addr.del", errno.EADDRNOTAVAIL),
            ("addr.add", errno.EEXIST), ("route.del", errno.ESRCH),
            ("route.add", errno.EEXIST), ("rule.del", errno.ENOENT),
            ("rule.add", errno.EEXIST)}


def _index(ipr: Any, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise LookupError(f"there is no link {name}")
    return int(found[0])


def _mode(value: Any, names: dict[int, str]) -> int:
    if isinstance(value, int):
        return value
    for number, text in names.items():
        if text == value:
            return number
    raise ValueError(f"unknown mode {value!r}")


def _kind_kwargs(ipr: Any, args: dict[str, Any]) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if args.get("bridge"):
        br = args["bridge"]
        kw["kind"] = "bridge"
        # forward delay first: with STP on the kernel checks its range (the kernel applies
        # VLAN filtering before the default PVID, whatever their order here)
        for key, attr in (("forward_delay", "br_forward_delay"), ("stp", "br_stp_state"),
                          ("priority", "br_priority"), ("vlan_filtering", "br_vlan_filtering"),
                          ("vlan_default_pvid", "br_vlan_default_pvid")):
            if key in br:
                kw[attr] = int(br[key])
    if args.get("bond"):
        bond = args["bond"]
        kw["kind"] = "bond"
        if "mode" in bond:
            kw["bond_mode"] = _mode(bond["mode"], BOND_MODES)
        if "miimon" in bond:
            kw["bond_miimon"] = int(bond["miimon"])
        if "xmit_hash_policy" in bond:
            kw["bond_xmit_hash_policy"] = _mode(bond["xmit_hash_policy"], BOND_HASH_POLICIES)
        if "lacp_rate" in bond:
            kw["bond_ad_lacp_rate"] = _mode(bond["lacp_rate"], LACP_RATES)
        if "primary" in bond:
            kw["bond_primary"] = _index(ipr, bond["primary"]) if bond["primary"] else 0
    if args.get("vlan"):
        kw.update(kind="vlan", link=_index(ipr, args["vlan"]["link"]),
                  vlan_id=int(args["vlan"]["id"]))
    if args.get("macvlan"):
        kw.update(kind="macvlan", link=_index(ipr, args["macvlan"]["link"]),
                  macvlan_mode=_mode(args["macvlan"].get("mode", "bridge"), MACVLAN_MODES))
    return kw


def _link_add(ipr: Any, args: dict[str, Any]) -> None:
    kw: dict[str, Any] = {"ifname": args["name"], "kind": args["kind"]}
    if args.get("mtu"):
        kw["mtu"] = int(args["mtu"])
    if args.get("mac"):
        kw["address"] = args["mac"]
    kw.update(_kind_kwargs(ipr, args))
    if args["kind"] == "veth":
        peer = {"ifname": args["veth"]["peer"]}
        if args["veth"].get("mtu"):
            peer["mtu"] = int(args["veth"]["mtu"])
        if args["veth"].get("mac"):
            peer["address"] = args["veth"]["mac"]
        kw["peer"] = peer
    ipr.link("add", **kw)


def _link_set(ipr: Any, args: dict[str, Any]) -> None:
    kw: dict[str, Any] = {"index": _index(ipr, args["name"])}
    if "up" in args:
        kw["state"] = "up" if args["up"] else "down"
    if args.get("mtu"):
        kw["mtu"] = int(args["mtu"])
    if args.get("mac"):
        kw["address"] = args["mac"]
    kw.update(_kind_kwargs(ipr, args))
    ipr.link("set", **kw)


def _link_enslave(ipr: Any, args: dict[str, Any]) -> None:
    master = _index(ipr, args["master"]) if args.get("master") else 0
    ipr.link("set", index=_index(ipr, args["name"]), master=master)


def _link_del(ipr: Any, args: dict[str, Any]) -> None:
    found = ipr.link_lookup(ifname=args["name"])
    if found:
        ipr.link("del", index=int(found[0]))


def _addr(ipr: Any, command: str, args: dict[str, Any]) -> None:
    iface = ipaddress.ip_interface(args["address"])
    ipr.addr(command, index=_index(ipr, args["dev"]), address=str(iface.ip),
             prefixlen=iface.network.prefixlen)


def _route(ipr: Any, command: str, r: dict[str, Any]) -> None:
    import socket

    family = socket.AF_INET6 if r["family"] == 6 else socket.AF_INET
    kw: dict[str, Any] = {"family": family, "table": r["table"], "proto": r["proto"],
                          "scope": r["scope"], "type": r["type"], "priority": r["metric"]}
    if r["dst"] == "default":
        kw["dst_len"] = 0
    else:
        net = ipaddress.ip_network(r["dst"])
        kw["dst"], kw["dst_len"] = str(net.network_address), net.prefixlen
    if r.get("gateway"):
        kw["gateway"] = r["gateway"]
    if r.get("dev"):
        kw["oif"] = _index(ipr, r["dev"])
    if r.get("prefsrc"):
        kw["prefsrc"] = r["prefsrc"]
    if r.get("multipath"):
        kw["multipath"] = [{k: v for k, v in (("gateway", hop.get("gateway")),
                                              ("oif", _index(ipr, hop["dev"])
                                               if hop.get("dev") else None)) if v}
                           for hop in r["multipath"]]
    ipr.route(command, **kw)


def _rule(ipr: Any, command: str, r: dict[str, Any]) -> None:
    import socket

    kw: dict[str, Any] = {"family": socket.AF_INET6 if r["family"] == 6 else socket.AF_INET,
                          "priority": r["priority"], "table": r["table"],
                          "action": r.get("action", 1)}
    for key in ("src", "dst"):
        if r.get(key):
            net = ipaddress.ip_network(r[key])
            kw[key], kw[f"{key}_len"] = str(net.network_address), net.prefixlen
    for key in ("iifname", "oifname", "fwmark"):
        if r.get(key) is not None:
            kw[key] = r[key]
    ipr.rule(command, **kw)


_HANDLERS: dict[str, Any] = {
    "link.del": _link_del,
    "link.add": _link_add,
    "link.set": _link_set,
    "link.enslave": _link_enslave,
    "addr.del": lambda ipr, a: _addr(ipr, "del", a),
    "addr.add": lambda ipr, a: _addr(ipr, "add", a),
    "route.del": lambda ipr, a: _route(ipr, "del", a),
    "route.add": lambda ipr, a: _route(ipr, "add", a),
    "route.replace": lambda ipr, a: _route(ipr, "replace", a),
    "rule.del": lambda ipr, a: _rule(ipr, "del", a),
    "rule.add": lambda ipr, a: _rule(ipr, "add", a),
}


def execute(ipr: Any, changes: list[Change]) -> None:
    """Apply CHANGES in order through IPR. What the kernel already did on its own (deleting
    what is gone, adding what exists) is not an error; anything else raises ChangeFailed and
    stops there."""
    from pyroute2.netlink.exceptions import NetlinkError

    for change in changes:
        handler = _HANDLERS.get(change.op)
        if handler is None:
            raise ValueError(f"unknown change {change.op!r}")
        try:
            handler(ipr, change.args)
        except NetlinkError as exc:
            if (change.op, exc.code) in _ALREADY:
                continue
            raise ChangeFailed(change, exc) from exc
        except (LookupError, ValueError) as exc:
            raise ChangeFailed(change, exc) from exc


def converge(ipr: Any, target: dict[str, Any]) -> list[str]:
    """Bring IPR's namespace to TARGET: the descriptions of the changes made ([] when it
    already matched). Up to two passes, so side-effect flushes get repaired; RuntimeError
    with what still differs when a third plan is not empty."""
    done: list[str] = []
    for attempt in range(PASSES + 1):
        current = snapshot(ipr)
        changes = plan(current, target)
        if not changes:
            return done
        if attempt == PASSES:
            left = diff(target, current) or [c.description for c in changes]
            raise RuntimeError(f"the network did not reach the target after {PASSES} "
                               f"passes; still different: {'; '.join(left)}")
        execute(ipr, changes)
        done += [c.description for c in changes]
    return done


__all__ = ["Change", "ChangeFailed", "converge", "execute", "plan"]
