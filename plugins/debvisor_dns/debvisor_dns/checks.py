"""Read-only views: `dns show NAME` and `dns check [ZONE]` (also a health check)."""

from __future__ import annotations

import time
from typing import Any

import dns.exception
import dns.name
import dns.query
import dns.rdatatype
import dns.rrset

from debvisor_core.errors import DebvisorError
from debvisor_core.output import iso_utc

from . import dnssec, wire
from .config import DnsConfig, Server, ZoneConfig
from .records import DNSSEC_TYPES, show_state, state

LEVELS = {"ok": 0, "warn": 1, "crit": 2}


def _servers(zone: ZoneConfig) -> list[Server]:
    return list(dict.fromkeys([*zone.all_servers, *zone.primaries]))


def _err(exc: BaseException) -> str:
    if isinstance(exc, DebvisorError):
        return exc.message
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def show(cfg: DnsConfig, zone: ZoneConfig, fqdn: str, rdtype: str | None) -> dict[str, Any]:
    """The answer and serial of every server for NAME (all types, or one), validated."""
    tkey = cfg.key(zone).dns_key()
    try:
        keys = dnssec.zone_keys(zone, tkey, timeout=cfg.timeout, mode=cfg.dnssec)
    except DebvisorError:
        keys = dnssec.ZoneKeys(dns.name.from_text(zone.name), None)
    rows = []
    for server in _servers(zone):
        row: dict[str, Any] = {"server": str(server), "serial": None, "records": {},
                               "dnssec": None, "error": None}
        t = time.monotonic()
        try:
            r = wire.query(server, zone.name, "SOA", timeout=cfg.timeout)
            row["serial"] = wire.soa_serial(r, zone.name)
            r = wire.query(server, fqdn, rdtype or "ANY", timeout=cfg.timeout,
                           dnssec=keys.signed, tcp=rdtype is None)
            n = dns.name.from_text(fqdn)
            verdicts = []
            for rrset in r.answer:
                t_text = dns.rdatatype.to_text(rrset.rdtype)
                if rrset.name != n or t_text in DNSSEC_TYPES:
                    continue
                row["records"][t_text] = state(rrset.ttl, [rd.to_text() for rd in rrset])
                if keys.signed:
                    verdicts.append(dnssec.validate_answer(keys, r, fqdn, t_text, str(server)))
            if keys.signed and rdtype and not row["records"]:
                verdicts.append(dnssec.validate_answer(keys, r, fqdn, rdtype, str(server)))
            row["dnssec"] = ("valid" if verdicts else "no records") if keys.signed else "unsigned"
        except dnssec.Bogus as exc:
            row["dnssec"], row["error"] = "BOGUS", exc.message
        except (OSError, dns.exception.DNSException, DebvisorError) as exc:
            row["error"] = _err(exc)
        row["ms"] = round((time.monotonic() - t) * 1000, 1)
        rows.append(row)
    answering = [r for r in rows if r["error"] is None]
    agree = (len({repr(sorted(r["records"].items())) for r in answering}) <= 1
             and len({r["serial"] for r in answering}) <= 1 and len(answering) == len(rows))
    return {"name": fqdn, "zone": zone.name, "type": rdtype, "servers": rows, "agree": agree}


def show_text(data: dict[str, Any]) -> str:
    from debvisor_core.output import table

    rows = []
    for r in data["servers"]:
        recs = "; ".join(f"{t} {show_state(s)}" for t, s in sorted(r["records"].items()))
        rows.append({"server": r["server"], "serial": r["serial"], "dnssec": r["dnssec"],
                     "answer": r["error"] and f"ERROR {r['error']}" or recs or "(no records)"})
    out = table(rows, [("server", "SERVER"), ("serial", "SERIAL"), ("dnssec", "DNSSEC"),
                       ("answer", "ANSWER")])
    verdict = "all servers agree" if data["agree"] else "SERVERS DISAGREE"
    return f"{data['name']} (zone {data['zone']}): {verdict}\n{out}"


def _axfr_rrsets(zone: ZoneConfig, server: Server, key: Any, timeout: float
                 ) -> list[dns.rrset.RRset]:
    merged: dict[tuple[Any, ...], dns.rrset.RRset] = {}
    for msg in dns.query.xfr(server.host, zone.name, port=server.port, keyring=key,
                             timeout=timeout, lifetime=timeout * 5, relativize=False):
        for rr in msg.answer:
            k = (rr.name, rr.rdtype, rr.covers)
            if k in merged:
                merged[k].union_update(rr)
            else:
                merged[k] = rr
    return list(merged.values())


def check_zone(cfg: DnsConfig, zone: ZoneConfig, *, settle: float = 2.0) -> dict[str, Any]:
    """Servers answer, serials agree, TSIG works, DNSSEC signatures valid and not expiring."""
    problems: list[tuple[str, str]] = []
    tkey = cfg.key(zone).dns_key()
    keys: dnssec.ZoneKeys | None = None
    try:
        keys = dnssec.zone_keys(zone, tkey, timeout=cfg.timeout, mode=cfg.dnssec, refresh=True)
    except DebvisorError as exc:
        problems.append(("crit", exc.message))
    servers: list[dict[str, Any]] = []
    deadline = time.monotonic() + settle
    while True:
        servers = [_probe(s, zone, keys, cfg.timeout) for s in _servers(zone)]
        serials = {s["serial"] for s in servers if s["serial"] is not None}
        if len(serials) <= 1 or time.monotonic() > deadline:
            break  # a zone mid-propagation gets `settle` seconds to agree
        time.sleep(0.05)
    for s in servers:
        if s["error"]:
            problems.append(("crit", f"{s['server']}: {s['error']}"))
    if len(serials) > 1:
        problems.append(("warn", "serials disagree: " + ", ".join(
            f"{s['server']} {s['serial']}" for s in servers if s["serial"] is not None)))
    tsig = {}
    for p in zone.primaries:
        try:
            wire.prove_key(ZoneConfig(zone.name, [p], [], zone.key_file), tkey, timeout=cfg.timeout)
            tsig[str(p)] = "ok"
        except DebvisorError as exc:
            tsig[str(p)] = exc.message
    if not any(v == "ok" for v in tsig.values()):
        problems.append(("crit", "TSIG: no primary accepts the key: " + "; ".join(tsig.values())))
    elif len([v for v in tsig.values() if v != "ok"]):
        problems.append(("warn", "TSIG: " + "; ".join(v for v in tsig.values() if v != "ok")))
    sec: dict[str, Any] = {"signed": bool(keys and keys.signed)}
    if keys and keys.signed:
        sec.update(_signatures(cfg, zone, keys, tkey, problems))
    status = max((lvl for lvl, _ in problems), key=LEVELS.__getitem__, default="ok")
    return {"zone": zone.name, "status": status, "servers": servers, "tsig": tsig,
            "dnssec": sec, "problems": [{"level": lvl, "message": m} for lvl, m in problems]}


def _probe(server: Server, zone: ZoneConfig, keys: dnssec.ZoneKeys | None,
           timeout: float) -> dict[str, Any]:
    row: dict[str, Any] = {"server": str(server), "serial": None, "error": None, "dnssec": None}
    t = time.monotonic()
    try:
        signed = bool(keys and keys.signed)
        r = wire.query(server, zone.name, "SOA", timeout=timeout, dnssec=signed)
        row["serial"] = wire.soa_serial(r, zone.name)
        if row["serial"] is None:
            row["error"] = "does not serve the zone"
        elif keys and keys.signed:
            dnssec.validate_answer(keys, r, zone.name, "SOA", str(server))
            r = wire.query(server, zone.name, "DNSKEY", timeout=timeout, dnssec=True, tcp=True)
            dnssec.validate_answer(keys, r, zone.name, "DNSKEY", str(server))
            row["dnssec"] = "valid"
        else:
            row["dnssec"] = "unsigned"
    except dnssec.Bogus as exc:
        row["error"], row["dnssec"] = exc.message, "BOGUS"
    except (OSError, dns.exception.DNSException, DebvisorError) as exc:
        row["error"] = f"does not answer: {_err(exc)}"
    row["ms"] = round((time.monotonic() - t) * 1000, 1)
    return row


def _signatures(cfg: DnsConfig, zone: ZoneConfig, keys: dnssec.ZoneKeys, tkey: Any,
                problems: list[tuple[str, str]]) -> dict[str, Any]:
    """Validate every signed RRset of a zone transfer and find the earliest expiry."""
    rrsets: list[dns.rrset.RRset] = []
    source = "axfr"
    for p in wire.ordered(zone.primaries):
        try:
            rrsets = _axfr_rrsets(zone, p, tkey, cfg.timeout)
            break
        except (OSError, dns.exception.DNSException) as exc:
            source = f"soa/dnskey only (AXFR from {p}: {_err(exc)})"
    if not rrsets:
        return {"source": source}
    sigs = {(rr.name, rr.covers): rr for rr in rrsets if rr.rdtype == dns.rdatatype.RRSIG}
    checked = bogus = 0
    for rr in rrsets:
        sig = sigs.get((rr.name, rr.rdtype))
        if rr.rdtype == dns.rdatatype.RRSIG or sig is None:
            continue
        checked += 1
        try:
            dnssec.validate_rrset(keys, rr, sig, f"{rr.name} {dns.rdatatype.to_text(rr.rdtype)}")
        except dnssec.Bogus as exc:
            bogus += 1
            if bogus <= 3:
                problems.append(("crit", exc.message))
    expiry = dnssec.signature_expiry(list(sigs.values()))
    out: dict[str, Any] = {"source": source, "rrsets_validated": checked, "bogus": bogus}
    if expiry is not None:
        left = dnssec.days_left(expiry)
        out["earliest_expiry"] = iso_utc(expiry)
        out["days_left"] = round(left, 2)
        if left <= 0:
            problems.append(("crit", f"RRSIGs expired on {out['earliest_expiry']}"))
        elif left < cfg.sig_expiry_warn_days:
            problems.append(("warn", f"RRSIGs expire in {left:.1f} days ({out['earliest_expiry']})"))
    return out


def check_text(results: list[dict[str, Any]]) -> str:
    from debvisor_core.output import table

    lines = []
    for z in results:
        sec = z["dnssec"]
        signed = (f"signed, {sec.get('rrsets_validated', 0)} RRsets validated, earliest RRSIG "
                  f"expiry in {sec.get('days_left', '?')} days") if sec.get("signed") else "unsigned"
        lines.append(f"[{z['status'].upper()}] {z['zone']}  DNSSEC: {signed}")
        lines.append(table(z["servers"], [("server", "SERVER"), ("serial", "SERIAL"),
                                          ("dnssec", "DNSSEC"), ("ms", "MS"), ("error", "ERROR")]))
        for srv, v in z["tsig"].items():
            lines.append(f"  TSIG {srv}: {v}")
        for p in z["problems"]:
            lines.append(f"  {p['level'].upper()}: {p['message']}")
    return "\n".join(lines)
