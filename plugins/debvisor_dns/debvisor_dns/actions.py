"""`debvisor dns …` declared once, as actions: update, delete (state changes) and show,
check (reads). The CLI (cli.py), `debvisor actions list|show|run` and the daemon all
read these declarations.

Light module: the plan, the wire and dnspython are imported only when an action runs.
Planning stays in plan.py; this module turns typed parameters into its calls, and the
results into text for humans.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from debvisor_core import log
from debvisor_core.actions import Action, Outcome, Param
from debvisor_core.errors import EXIT_FAILED, BadInput

from .config import TYPES
from .config import load as load_config

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context
    from debvisor_core.model import Operation, OpResult

MAX_TTL = 2**31 - 1
#: how many "old → new" lines a human result shows before "... and N more"
SHOWN_CHANGES = 20


# -- parameters shared by several actions ---------------------------------------------
def _type_param(help_text: str) -> Param:
    # A str, not a choice: record types are case-insensitive (`--type cname`), which a
    # choice Param cannot express yet; _rdtype() checks it with click's sentence.
    return Param("type", f"Record type: {', '.join(TYPES[:-1])} or {TYPES[-1]}, any case "
                         f"({help_text}).", default=None)


_ZONE = Param("zone", "Zone of NAME (default: from NAME, or [dns] vm_zone).", default=None)
_TIMEOUT = Param("timeout", "Propagation timeout in seconds.", type="float", default=None,
                 minimum=0.1)


def _rdtype(value: str | None) -> str | None:
    """The record type given (upper case), refused as click's case-insensitive choice did."""
    if value is None:
        return None
    if value.upper() not in TYPES:
        shown = ", ".join(repr(t.lower()) for t in TYPES)
        raise BadInput(f"Invalid value for '--type': {value!r} is not one of {shown}.")
    return value.upper()


def _with_timeout(op: Operation | None, timeout: float | None) -> Operation | None:
    """``--timeout`` overrides [dns] propagation_timeout in this operation's waits."""
    from .steps import AwaitPropagation

    if op is not None and timeout:
        for step in op.steps:
            if isinstance(step, AwaitPropagation):
                step.timeout = timeout
    return op


# -- dns.update ------------------------------------------------------------------------
def plan_update(ctx: Context, params: dict[str, Any]) -> Operation | None:
    """`dns update NAME VALUE` or `dns update --batch FILE`: None when nothing changes."""
    from . import plan

    rdtype = _rdtype(params["type"])
    name, value, batch = params["name"], params["value"], params["batch"]
    if batch is not None and Path(batch).is_dir():
        raise BadInput(f"Invalid value for '--batch': File {batch!r} is a directory.")
    cfg = load_config(ctx)
    if batch is not None:
        if name or value or rdtype or params["ttl"] or params["with_ptr"]:
            raise BadInput("--batch takes the changes from the file; give no NAME, VALUE, "
                           "--type, --ttl or --with-ptr")
        op = plan.plan_batch(cfg, Path(batch), params["zone"])
    else:
        if not name or value is None:
            raise BadInput("give NAME and VALUE (or --batch FILE)")
        op = plan.plan_update(cfg, name, value, rdtype, params["ttl"], params["zone"],
                              with_ptr=params["with_ptr"], wait_ttl=not params["no_wait_ttl"])
    return _with_timeout(op, params["timeout"])


# -- dns.delete ------------------------------------------------------------------------
def plan_delete(ctx: Context, params: dict[str, Any]) -> Operation | None:
    """`dns delete NAME [--type T]`."""
    from . import plan

    rdtype = _rdtype(params["type"])
    cfg = load_config(ctx)
    op = plan.plan_delete(cfg, params["name"], rdtype, params["zone"],
                          with_ptr=params["with_ptr"])
    return _with_timeout(op, params["timeout"])


def net_changes(reported: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The changes an operation made, one per RRset: a TTL lowered first and the value
    changed next (two UPDATEs of one RRset) is one change from the first old to the last new."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for ch in reported:
        k = (ch["name"], ch["type"])
        out[k] = {**ch, "old": out[k]["old"]} if k in out else dict(ch)
    return list(out.values())


def render_change(res: OpResult) -> None:
    """A successful update/delete for humans: old → new per RRset, the primaries that took
    it, and how long each server took to serve it (all from ``result.dns``)."""
    from debvisor_core.output import table

    from .records import describe_change

    rep = (res.result or {}).get("dns", {})
    lines = [describe_change(c) for c in net_changes(rep.get("changes", []))]
    for line in lines[:SHOWN_CHANGES]:
        print(line)
    if len(lines) > SHOWN_CHANGES:
        print(f"... and {len(lines) - SHOWN_CHANGES} more")
    for a in rep.get("attempts", []):
        if a["result"] != "NOERROR":
            print(f"primary {a['server']}: {a['result']} ({a['ms']:.0f} ms)")
    for zone, server in rep.get("primaries", {}).items():
        print(f"zone {zone.rstrip('.')}: primary {server} took the change")
    if rep.get("propagation"):
        print("propagation (time from the UPDATE's answer):")
        rows = [{**r, "ms": f"{r['ms']:.1f} ms"} for r in rep["propagation"]]
        print(table(rows, [("zone", "ZONE"), ("server", "SERVER"), ("ms", "TIME"),
                           ("serial", "SERIAL"), ("dnssec", "DNSSEC")]))


# -- dns.show --------------------------------------------------------------------------
def query_show(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """NAME's answer and the zone serial from every server."""
    from . import checks
    from .records import resolve

    rdtype = _rdtype(params["type"])
    cfg = load_config(ctx)
    zone, fqdn = resolve(cfg, params["name"], params["zone"], rdtype)
    data: dict[str, Any] = checks.show(cfg, zone, fqdn, rdtype)
    if not data["agree"]:
        log.warn(f"the servers of {zone.name} disagree about {fqdn}")
    return data


def render_show(data: dict[str, Any]) -> None:
    from .checks import show_text

    print(show_text(data))


# -- dns.check -------------------------------------------------------------------------
def query_check(ctx: Context, params: dict[str, Any]) -> dict[str, Any] | Outcome:
    """Every zone (or ZONE) checked; a critical zone makes the result an Outcome with exit
    status 1 (the report is still shown, and the error line says how many zones)."""
    from . import checks

    cfg = load_config(ctx)
    zones = [cfg.zone(params["zone"])] if params["zone"] else list(cfg.zones.values())
    results = [checks.check_zone(cfg, z) for z in zones]
    status = max((r["status"] for r in results), key=checks.LEVELS.__getitem__, default="ok")
    data = {"status": status, "zones": results}
    if status == "crit":
        log.error(f"DNS check: {sum(r['status'] == 'crit' for r in results)} zone(s) critical")
        return Outcome(data, EXIT_FAILED)
    return data


def render_check(data: dict[str, Any]) -> None:
    from .checks import check_text

    print(check_text(data["zones"]))


# -- the declarations ------------------------------------------------------------------
_CHANGE_RESULT = (
    "the operation result: id, kind, title, status, steps, findings, duration_ms, error; "
    "result.dns holds changes [{zone, name, type, old, new}] (old/new: {ttl, values}), "
    "attempts [{server, result, ms}], primaries {zone: server}, serials {zone: serial} "
    "(the primary's once it served the change; after `ops resume`, only for the UPDATEs "
    "verified in that run), "
    "propagation [{zone, server, ms, serial, dnssec}] and, after a TTL wait, waited_ttl_s; "
    'or {"status": "unchanged"}')

ACTIONS = [
    Action(
        path="dns.update", kind="dns.update", plan=plan_update, render=render_change,
        summary="Set NAME's TYPE record to VALUE (replacing the RRset), verified on every "
                "server",
        description=(
            "The plan shows old → new; the UPDATE carries the old records as prerequisites, "
            "so a concurrent change is never overwritten silently. When --ttl is lower than "
            "the record's TTL, the TTL is lowered first and the old TTL waited out."),
        params=(
            Param("name", "The record's owner name, relative to its zone or fully "
                          "qualified (for a PTR: the IP address).", positional=True,
                  default=None),
            Param("value", "The new value: an IP address (A/AAAA), a host name (CNAME, PTR) "
                           "or text (TXT).", positional=True, default=None),
            _type_param("default: A/AAAA from the value"),
            Param("ttl", "TTL in seconds (default: the record's current TTL, else [dns] "
                         "default_ttl).", type="int", default=None, minimum=1, maximum=MAX_TTL),
            _ZONE,
            Param("with_ptr", "Also set the PTR in the configured reverse zone.", type="bool",
                  default=False),
            Param("no_wait_ttl", "When lowering the TTL, do not wait the old TTL out before "
                                 "the value changes.", type="bool", default=False),
            Param("batch", "Apply every change in this file as one operation (see README for the "
                           "format).",
                  type="path", default=None),
            _TIMEOUT,
        ),
        unchanged="nothing to change: the records are already so",
        result=_CHANGE_RESULT,
        examples=(
            "debvisor dns update vm-name 192.168.1.100 --yes",
            "debvisor dns update web --type CNAME vm-name --zone lab.debvisor.test",
            "debvisor dns update vm-name 192.168.1.101 --ttl 60 --with-ptr --dry-run",
            "debvisor dns update --batch changes.txt --yes",
            "debvisor dns update --rollback --yes",
            "echo '{\"name\": \"vm1\", \"value\": \"10.77.0.10\"}' | "
            "debvisor actions run dns.update - --yes",
        ),
    ),
    Action(
        path="dns.delete", kind="dns.delete", plan=plan_delete, render=render_change,
        destructive=True,
        summary="Delete NAME's records (all of them, or one --type), verified on every server",
        params=(
            Param("name", "The record's owner name, relative to its zone or fully qualified.",
                  positional=True),
            _type_param("default: every RRset of NAME"),
            _ZONE,
            Param("with_ptr", "Also delete PTRs that name only NAME.", type="bool",
                  default=False),
            _TIMEOUT,
        ),
        result=_CHANGE_RESULT.rsplit("; or", 1)[0],
        examples=(
            "debvisor dns delete vm-name --type A --yes",
            "debvisor dns delete vm-name --with-ptr --dry-run",
            "debvisor dns delete --rollback --yes",
        ),
    ),
    Action(
        path="dns.show", query=query_show, render=render_show, privilege="root",
        summary="Show NAME's answer and the zone serial from every server, flagging "
                "disagreement",
        params=(
            Param("name", "The owner name (for --type PTR: the IP address).", positional=True),
            _type_param("default: every type"),
            Param("zone", "Zone of NAME.", default=None),
        ),
        result="an object: name, zone, type (null: every type), servers [{server, serial, "
               "records {TYPE: {ttl, values}}, dnssec, error, ms}], agree (bool)",
        examples=(
            "debvisor dns show vm-name",
            "debvisor dns show 10.77.0.53 --type PTR --json",
        ),
    ),
    Action(
        path="dns.check", query=query_check, render=render_check, privilege="root",
        summary="Check zones: servers answer, serials agree, TSIG works, DNSSEC valid and not "
                "expiring",
        description="Exit status 1 when a zone is critical.",
        params=(
            Param("zone", "Only this zone (default: every zone in [dns.zones]).",
                  positional=True, default=None),
        ),
        result="an object: status (ok, warn or crit: the worst zone's), zones [{zone, status, "
               "servers [{server, serial, dnssec, ms, error}], tsig {primary: ok or why}, "
               "dnssec {signed, ...}, problems [{level, message}]}]",
        examples=(
            "debvisor dns check",
            "debvisor dns check lab.debvisor.test --json",
        ),
    ),
]
