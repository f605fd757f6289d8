"""Turn what the operator asked for into an Operation of DNS steps.

Planning reads the current RRsets from a primary, so the plan shows old → new and
the UPDATE carries them as prerequisites: if someone changes a record between the
plan and the apply, the server refuses the UPDATE and nothing is overwritten.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from debvisor_core import log
from debvisor_core.engine import Operation, Step
from debvisor_core.errors import BadInput

from . import batch as batchfile
from . import wire
from .config import DnsConfig, ZoneConfig
from .records import (
    ABSENT,
    DNSSEC_TYPES,
    address_type,
    canonical,
    describe_change,
    resolve,
    same,
    state,
)
from .steps import AwaitPropagation, UpdateRRsets, VmPropagation, VmRecord, WaitOutTtl

CHUNK = 500  # RRsets per UPDATE message (a TCP message must stay under 64 KiB)
APEX_ONLY = frozenset({"SOA", "NS"})


def infer_type(value: str) -> str:
    """A for an IPv4 address, AAAA for IPv6; otherwise the operator must say."""
    v = value.strip()
    if v and set(v) <= set("0123456789."):
        return "A"  # looks like IPv4: let the A check say what is wrong with it
    if ":" in v:
        return "AAAA"
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        raise BadInput(f"{value!r} is not an IP address: give --type (CNAME, TXT or PTR)") from None
    return "A" if ip.version == 4 else "AAAA"


def _change(zone: ZoneConfig, name: str, rdtype: str, old: dict[str, Any] | None,
            new: dict[str, Any]) -> dict[str, Any]:
    return {"zone": zone.name, "name": name, "type": rdtype, "old": old, "new": new}


def _coexistence(fqdn: str, rdtype: str, current: dict[str, dict[str, Any]],
                 zone: ZoneConfig) -> None:
    others = sorted(t for t in current if t != "CNAME" and t not in DNSSEC_TYPES)
    if rdtype == "CNAME" and (others or fqdn == zone.name):
        raise BadInput(f"{fqdn} already has {', '.join(others) or 'zone apex'} records; a CNAME "
                       "cannot coexist with other data (delete them first)")
    if rdtype != "CNAME" and "CNAME" in current:
        raise BadInput(f"{fqdn} is a CNAME; a {rdtype} record cannot coexist with it "
                       "(delete the CNAME first)")


def _ptr_changes(cfg: DnsConfig, fqdn: str, rdtype: str, old: dict[str, Any],
                 new_values: list[str], ttl: int) -> list[dict[str, Any]]:
    """PTRs for the new addresses; the old addresses' PTRs go if they named only FQDN."""
    if rdtype not in ("A", "AAAA"):
        raise BadInput("--with-ptr applies to A and AAAA records only")
    out = []
    for addr in sorted(set(new_values) | set(old["values"])):
        from dns.reversename import from_address

        rev = from_address(addr).to_text().lower()
        rzone = cfg.zone_of(rev)
        if rzone is None:
            if addr in new_values:
                raise BadInput(f"--with-ptr: no reverse zone for {addr} is configured in [dns.zones]")
            continue
        cur = wire.read(rzone, rev, "PTR", timeout=cfg.timeout)
        if addr in new_values:
            want = state(ttl, [fqdn])
        elif cur["values"] == [fqdn]:
            want = ABSENT
        else:
            continue
        if not same(cur, want):
            out.append(_change(rzone, rev, "PTR", cur, want))
    return out


def _steps_for(changes: list[dict[str, Any]], *, vm: bool = False,
               purpose: str = "") -> list[Step]:
    upd, wait = (VmRecord, VmPropagation) if vm else (UpdateRRsets, AwaitPropagation)
    steps: list[Step] = []
    by_zone: dict[str, list[dict[str, Any]]] = {}
    for ch in changes:
        by_zone.setdefault(ch["zone"], []).append(ch)
    for zname, zch in by_zone.items():
        plain = [{k: v for k, v in ch.items() if k != "zone"} for ch in zch]
        for i in range(0, len(plain), CHUNK):
            steps.append(upd(zname, plain[i:i + CHUNK], purpose))
    steps.append(wait(changes))
    return steps


def load_keys(cfg: DnsConfig, zones: list[ZoneConfig]) -> None:
    """Read each zone's TSIG key file before any query (a bad file is exit 2); whether
    the key works is proved by the steps' check() at preflight."""
    for zone in {z.name: z for z in zones}.values():
        cfg.key(zone)


def _operation(kind: str, title: str, steps: list[Step], changes: list[dict[str, Any]],
               **params: Any) -> Operation:
    zones = sorted({ch["zone"] for ch in changes})
    replaces = any(ch["old"] and ch["old"]["values"] for ch in changes)
    return Operation(kind=kind, title=title, steps=steps, destructive=replaces,
                     locks=[f"dns.{z.rstrip('.')}" for z in zones],
                     params={"changes": changes, **params})


def plan_update(cfg: DnsConfig, name: str, value: str, rdtype: str | None, ttl: int | None,
                zone_opt: str | None, *, with_ptr: bool, wait_ttl: bool) -> Operation | None:
    """`dns update NAME VALUE`: None when the record is already exactly so."""
    rdtype = (rdtype or infer_type(value)).upper()
    zone, fqdn = resolve(cfg, name, zone_opt, rdtype)
    value = canonical(rdtype, value, zone, cfg)
    load_keys(cfg, [zone])
    current = wire.read_all(zone, fqdn, timeout=cfg.timeout)
    _coexistence(fqdn, rdtype, current, zone)
    old = current.get(rdtype, ABSENT)
    new_ttl = ttl or old["ttl"] or cfg.default_ttl
    new = state(new_ttl, [value])
    ptrs = _ptr_changes(cfg, fqdn, rdtype, old, [value], new_ttl) if with_ptr else []
    if same(old, new) and not ptrs:
        return None
    title = f"set {fqdn} {rdtype} {value} ttl {new_ttl}"
    if old["values"] and old["ttl"] > new_ttl and sorted(old["values"]) != [value]:
        lowered = state(new_ttl, old["values"])
        first = _change(zone, fqdn, rdtype, old, lowered)
        final = _change(zone, fqdn, rdtype, lowered, new)
        steps = _steps_for([first], purpose=f"lower the TTL {old['ttl']} → {new_ttl} first")
        if wait_ttl:
            steps.append(WaitOutTtl(int(old["ttl"]), [fqdn]))
        else:
            log.warn(f"--no-wait-ttl: caches may keep the old value of {fqdn} for up to "
                     f"{old['ttl']} s after the change")
        steps += _steps_for([final, *ptrs], purpose="then change the value")
        changes = [_change(zone, fqdn, rdtype, old, new), *ptrs]
        return _operation("dns.update", title, steps, changes, ttl_lowered_from=old["ttl"],
                          waited_ttl=wait_ttl)
    changes = [_change(zone, fqdn, rdtype, old, new), *ptrs]
    return _operation("dns.update", title, _steps_for(changes), changes)


def plan_delete(cfg: DnsConfig, name: str, rdtype: str | None, zone_opt: str | None, *,
                with_ptr: bool) -> Operation:
    """`dns delete NAME [--type T]`: every RRset of NAME (not SOA/NS) or just TYPE."""
    zone, fqdn = resolve(cfg, name, zone_opt, rdtype.upper() if rdtype else None)
    load_keys(cfg, [zone])
    current = wire.read_all(zone, fqdn, timeout=cfg.timeout)
    kinds = [rdtype.upper()] if rdtype else sorted(
        t for t in current if t not in DNSSEC_TYPES and not (fqdn == zone.name and t in APEX_ONLY))
    if fqdn == zone.name and set(kinds) & APEX_ONLY:
        raise BadInput(f"refusing to delete the {'/'.join(sorted(set(kinds) & APEX_ONLY))} "
                       f"records of the zone apex {fqdn}")
    changes = [_change(zone, fqdn, t, current[t], ABSENT) for t in kinds if t in current]
    if not changes:
        what = f"no {rdtype.upper()} record" if rdtype else "no records"
        raise BadInput(f"{fqdn} has {what}; nothing to delete")
    if with_ptr:
        for ch in list(changes):
            if ch["type"] in ("A", "AAAA"):
                changes += _ptr_changes(cfg, fqdn, ch["type"], ch["old"], [], 0)
    title = f"delete {fqdn} " + ", ".join(ch["type"] for ch in changes if ch["name"] == fqdn)
    return _operation("dns.delete", title, _steps_for(changes), changes)


def plan_batch(cfg: DnsConfig, path: Path, zone_opt: str | None) -> Operation | None:
    """`dns update --batch FILE`: one UPDATE per zone (chunked), one propagation wait."""
    wanted: dict[tuple[str, str], dict[str, Any]] = {}
    for e in batchfile.parse(path):
        try:
            rdtype = (e.type or ("A" if e.action == "delete" else infer_type(e.value or ""))
                      ).upper()
            zone, fqdn = resolve(cfg, e.name, zone_opt, rdtype)
            value = canonical(rdtype, e.value or "", zone, cfg) if e.action == "update" else None
        except BadInput as exc:
            raise BadInput(f"{path}:{e.line}: {exc.message}") from None
        k = (fqdn, rdtype)
        w = wanted.setdefault(k, {"zone": zone, "action": e.action, "values": [], "ttl": e.ttl,
                                  "line": e.line})
        if w["action"] != e.action:
            raise BadInput(f"{path}:{e.line}: {fqdn} {rdtype} is both updated and deleted "
                           f"(line {w['line']})")
        if value is not None and value not in w["values"]:
            w["values"].append(value)
        if e.ttl and w["ttl"] and e.ttl != w["ttl"]:
            raise BadInput(f"{path}:{e.line}: {fqdn} {rdtype} has two TTLs ({w['ttl']}, {e.ttl})")
        w["ttl"] = w["ttl"] or e.ttl
    load_keys(cfg, [w["zone"] for w in wanted.values()])
    by_zone: dict[str, list[tuple[str, str]]] = {}
    for (fqdn, rdtype), w in wanted.items():
        by_zone.setdefault(w["zone"].name, []).append((fqdn, rdtype))
    current: dict[tuple[str, str], dict[str, Any]] = {}
    for zname, questions in by_zone.items():  # per zone, every read pipelined to a primary
        found = wire.read_many(cfg.zone(zname), questions, timeout=cfg.timeout)
        current.update(zip(questions, found, strict=True))
    changes = []
    for (fqdn, rdtype), w in wanted.items():
        old = current[(fqdn, rdtype)]
        new = ABSENT if w["action"] == "delete" else state(
            w["ttl"] or old["ttl"] or cfg.default_ttl, w["values"])
        if not same(old, new):
            changes.append(_change(w["zone"], fqdn, rdtype, old, new))
    if not changes:
        return None
    n = len(changes)
    title = f"batch of {n} DNS change{'s' if n != 1 else ''} from {path.name}"
    if n <= 3:
        title += ": " + "; ".join(describe_change(c) for c in changes)
    return _operation("dns.update", title, _steps_for(changes), changes, batch=str(path))


def vm_steps(cfg: DnsConfig, vm: dict[str, Any], *, delete: bool) -> list[Step]:
    """The record steps for a VM registered / unregistered in the inventory."""
    if not cfg.vm_zone:
        return []
    zone = cfg.zone(cfg.vm_zone)
    name = str(vm.get("name") or "")
    addresses = [str(a) for a in vm.get("addresses") or []]
    if not name or (not addresses and not delete):
        return []
    # A/AAAA owner-name rules for a new record; any existing name may be deleted.
    _, fqdn = resolve(cfg, name, zone.name, None if delete else address_type(addresses[0])[0])
    changes: list[dict[str, Any]] = []
    if delete:
        for rdtype in ("A", "AAAA"):
            changes.append(_change(zone, fqdn, rdtype, None, ABSENT))
        for addr in addresses:
            ch = _vm_ptr(cfg, addr, fqdn, delete=True)
            if ch:
                changes.append(ch)
    else:
        rdtype, addr = address_type(addresses[0])
        changes.append(_change(zone, fqdn, rdtype, None, state(cfg.default_ttl, [addr])))
        ch = _vm_ptr(cfg, addr, fqdn, delete=False)
        if ch:
            changes.append(ch)
    return _steps_for(changes, vm=True)


def _vm_ptr(cfg: DnsConfig, address: str, fqdn: str, *, delete: bool) -> dict[str, Any] | None:
    from .records import ptr_change

    if not cfg.vm_ptr:
        return None
    _, addr = address_type(address)
    return ptr_change(cfg, addr, fqdn, delete=delete, ttl=cfg.default_ttl)


def join_steps(cfg: DnsConfig, table: Any, hostname: str) -> list[Step]:
    """`debvisor join`'s DNS part, from ``[dns.join]``: this node's A/AAAA record
    (``name``, default the short host name; ``address``; ``zone``, default ``[dns]
    vm_zone``; ``ttl``; ``ptr``, default true) with its PTR, planned like `dns update`
    (prerequisites from the current RRsets; undo puts them back). Nothing when the record
    is already so (this node joined before)."""
    where = "[dns.join]"
    if not isinstance(table, dict):
        raise BadInput(f"{where} must be a table")
    unknown = sorted(set(table) - {"name", "address", "zone", "ttl", "ptr"})
    if unknown:
        raise BadInput(f"{where}: unknown key {unknown[0]!r} (known: address, name, ptr, ttl, "
                       f"zone)")
    address, name = table.get("address"), table.get("name", hostname.split(".")[0])
    if not isinstance(address, str) or not address:
        raise BadInput(f"{where} address must be this node's IP address, as a string")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise BadInput(f"{where} address {address[:60]!r} is not an IP address") from None
    if not isinstance(name, str) or not name:
        raise BadInput(f"{where} name must be a host name, as a string")
    ttl = table.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
        raise BadInput(f"{where} ttl must be a whole number of seconds")
    ptr = table.get("ptr", True)
    if not isinstance(ptr, bool):
        raise BadInput(f"{where} ptr must be true or false")
    zone = table.get("zone", cfg.vm_zone)
    if not isinstance(zone, str) or not zone:
        raise BadInput(f"{where} zone is not set and [dns] vm_zone neither")
    op = plan_update(cfg, name, address, None, ttl, zone, with_ptr=ptr, wait_ttl=True)
    return list(op.steps) if op is not None else []
