"""`debvisor ceph …` (alias `cephctl`) declared once, as actions: status, osd list,
osd ok-to-stop, pool capacity, alerts and maintenance-plan (reads), noout set/unset, pg
balance and join (state changes). The CLI (cli.py), `debvisor actions list|show|run` and
the man pages all read these declarations.

Light module: python-rados, the analysis and the steps are imported only when an action
runs (`debvisor ceph --help` imports none of them). Analysis stays in analysis.py and
alerts.py, the steps in steps.py and join.py; this module turns typed parameters into
their calls, and the results into text for humans.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from debvisor_core import log
from debvisor_core.actions import Action, Outcome, Param, Unchanged
from debvisor_core.errors import EXIT_FAILED, BadInput, DebvisorError, PreflightRefused

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from debvisor_core.context import Context
    from debvisor_core.model import Operation, OpResult, Step


def _human_bytes(n: float) -> str:
    from debvisor_core.output import human_bytes

    return human_bytes(n)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    from debvisor_core.output import table

    return table(rows, columns)


def _show_instead(ctx: Context, data: Any, human: str | Callable[[Any], None]) -> NoReturn:
    """A plan that finds nothing to run but has something to report (the balance report
    without --apply, "noout is already set", "node N already has its OSDs"): the run shows
    ``data`` as today's command did and ends with exit status 0."""
    raise Unchanged(data, human)


# -- ceph.status -----------------------------------------------------------------------
def query_status(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Health with its checks (and the stored noout reason), quorum, OSDs, PGs, usage, I/O."""
    from . import analysis
    from .client import session
    from .steps import noout_state

    with session(ctx) as c:
        st = c.mon("status")
        noout = noout_state(c, (st.get("health") or {}).get("checks") or {})
    data = analysis.status_summary(st)
    data["noout"] = noout
    for chk in data["checks"]:
        if chk["code"] == "OSDMAP_FLAGS" and noout["set"]:
            chk["noout_reason"] = noout["reason"]
    return data


def render_status(d: dict[str, Any]) -> None:
    from .steps import noout_line

    hb = _human_bytes
    print(f"health:   {d['health']}")
    for chk in d["checks"]:
        print(f"          {chk['code']}: {chk['message']}" + (" (muted)" if chk["muted"] else ""))
        if "noout_reason" in chk:
            print(f"            {noout_line(d['noout'])}")
    m, o, u = d["mons"], d["osds"], d["usage"]
    print(f"mons:     {m['in_quorum']}/{m['total']} in quorum ({', '.join(m['quorum'])})")
    print(f"mgr:      {'available' if d['mgr']['available'] else 'NOT available'}")
    print(f"osds:     {o['total']} total, {o['up']} up, {o['in']} in")
    states = ", ".join(f"{n} {s}" for s, n in sorted(d["pgs"]["by_state"].items()))
    print(f"pgs:      {d['pgs']['total']} ({states or 'none'})")
    print(f"usage:    {hb(u['used_bytes'])} used of {hb(u['total_bytes'])} "
          f"({u['percent_used']}%), {hb(u['stored_bytes'])} stored, {u['objects']} objects")
    io, rec = d["io"], d["recovery"]
    print(f"client:   {hb(io['read_bytes_sec'])}/s rd, "
          f"{hb(io['write_bytes_sec'])}/s wr, "
          f"{io['read_op_per_sec']} rd op/s, {io['write_op_per_sec']} wr op/s")
    print(f"recovery: {hb(rec['recovering_bytes_per_sec'])}/s, "
          f"{rec['recovering_objects_per_sec']} objects/s, {rec['degraded_objects']} degraded, "
          f"{rec['misplaced_objects']} misplaced")


# -- ceph.osd.list ---------------------------------------------------------------------
def query_osd_list(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from . import analysis
    from .client import session
    from .dumps import fetch

    with session(ctx) as c:
        d = fetch(c, "osd_df", "osd_tree", "osd_dump")
    data: dict[str, Any] = analysis.osd_report(d, overload=params["overload"])
    return data


def _print_suggestions(sugg: list[dict[str, Any]]) -> None:
    if not sugg:
        print("\nSuggestions: none — every OSD is up, in and balanced.")
        return
    print("\nSuggestions:")
    for s in sugg:
        print(f"  [{s['severity'].upper()}] {s['message']}")
        for c in s["commands"]:
            print(f"      $ {c}")


def render_osd_list(r: dict[str, Any]) -> None:
    rows = [{**x, "size": _human_bytes(x["size_bytes"]), "util": f"{x['utilization']:.1f}%",
             "state": x["status"] + (f",{x['fullness']}" if x["fullness"] else "")}
            for x in r["osds"]]
    print(_table(rows, [("id", "ID"), ("host", "HOST"), ("class", "CLASS"),
                        ("crush_weight", "WEIGHT"), ("reweight", "REWEIGHT"), ("size", "SIZE"),
                        ("util", "USE"), ("var", "VAR"), ("pgs", "PGS"), ("state", "STATUS")]))
    s = r["summary"]
    print(f"\n{s['total']} OSDs, {s['up']} up, {s['in']} in, average utilisation "
          f"{s['avg_utilization']}%")
    _print_suggestions(r["suggestions"])


# -- ceph.osd.ok-to-stop ---------------------------------------------------------------
def query_ok_to_stop(ctx: Context, params: dict[str, Any]) -> dict[str, Any] | Outcome:
    """The mgr's `osd ok-to-stop` for IDS or every OSD of --host; exit status 1 when not ok."""
    from . import analysis
    from .client import session

    ids: list[str] = params["ids"] or []
    host: str | None = params["host"]
    if bool(ids) == bool(host):
        raise BadInput("give either OSD ids or --host, not both or neither")
    with session(ctx) as c:
        if host:
            idx = analysis.tree_index(c.mon("osd tree"))
            if host not in idx["osds_of"]:
                raise BadInput(f"no CRUSH host {host!r}; hosts: "
                               f"{', '.join(idx['hosts']) or 'none'}")
            osd_ids = [str(i) for i in sorted(idx["osds_of"][host])]
            if not osd_ids:
                raise BadInput(f"host {host} has no OSDs")
        else:
            osd_ids = [i.removeprefix("osd.") for i in ids]
            if not all(i.isdigit() for i in osd_ids):
                raise BadInput(f"OSD ids must be numbers like 3 or osd.3, not {' '.join(ids)}")
        ret, out, err = c.mgr_raw("osd ok-to-stop", (-11, -16), ids=osd_ids)
    out = out or {}
    data = {"ok_to_stop": ret == 0 and bool(out.get("ok_to_stop", ret == 0)),
            "osds": [int(i) for i in osd_ids],
            "num_ok_pgs": out.get("num_ok_pgs"), "num_not_ok_pgs": out.get("num_not_ok_pgs"),
            "become_inactive": out.get("bad_become_inactive", []),
            "unknown_pgs": out.get("unknown_pgs", []),
            "message": err.strip()}
    return data if data["ok_to_stop"] else Outcome(data, EXIT_FAILED)


def render_ok_to_stop(d: dict[str, Any]) -> None:
    who = ", ".join(f"osd.{i}" for i in d["osds"])
    if d["ok_to_stop"]:
        print(f"{who}: ok to stop ({d['num_ok_pgs']} PGs stay active)")
    else:
        print(f"{who}: NOT ok to stop: {d['message'] or 'PGs would become inactive'}")


# -- ceph.pool.capacity ----------------------------------------------------------------
def _samples_file(ctx: Context) -> Path:
    return ctx.plugin_state("ceph") / "capacity-samples.jsonl"


def _record_sample(ctx: Context, df: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """Append this run's stored bytes per pool (replacing a sample younger than 5 min);
    keep 90 days."""
    from .analysis import DAY

    path = _samples_file(ctx)
    samples = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                samples.append(json.loads(line))
            except ValueError:
                continue
    sample = {"t": now, "stored": {p["name"]: int(p["stats"].get("stored", 0))
                                   for p in df.get("pools", [])}}
    if samples and now - samples[-1]["t"] < 300:
        samples[-1] = sample
    else:
        samples.append(sample)
    samples = [s for s in samples if s["t"] >= now - 90 * DAY]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(s) + "\n" for s in samples))
    tmp.replace(path)
    return samples


def query_capacity(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Per pool capacity and days to near-full/full; records a growth sample unless
    --no-record."""
    from . import analysis
    from .client import session
    from .dumps import fetch

    growth = params["growth"]
    g = analysis.parse_growth(growth) if growth else None
    with session(ctx) as c:
        d = fetch(c, "df", "pools", "osd_dump", "autoscale")
    samples = [] if params["no_record"] else _record_sample(ctx, d["df"], time.time())
    data: dict[str, Any] = analysis.capacity(d, rates=analysis.growth_rates(samples), growth=g)
    data["samples"] = len(samples)
    return data


def _days(v: float | None) -> str:
    return "-" if v is None else ("now" if v <= 0 else f"{v:.0f}")


def render_capacity(r: dict[str, Any]) -> None:
    hb = _human_bytes
    rows = []
    for p in r["pools"]:
        a = p["autoscale"] or {}
        auto = "-"
        if a:
            auto = str(a["mode"]) + (f" → pg_num {a['new_pg_num']}" if a["new_pg_num"] else "")
            auto += f" target {a['target_ratio']}" if a.get("target_ratio") else ""
        rate = p["growth_bytes_per_day"]
        rows.append({**p, "stored": hb(p["stored_bytes"]), "used": hb(p["used_bytes"]),
                     "avail": hb(p["max_avail_bytes"]), "rep": f"{p['size']}/{p['min_size']}",
                     "pct": f"{p['percent_used']:.2f}%",
                     "growth": "-" if rate is None else f"{hb(rate)}/d",
                     "near": _days(p["days_to_nearfull"]), "full": _days(p["days_to_full"]),
                     "auto": auto})
    print(_table(rows, [("pool", "POOL"), ("stored", "STORED"), ("used", "USED"),
                        ("avail", "MAX AVAIL"), ("rep", "SIZE/MIN"), ("pct", "%USED"),
                        ("growth", "GROWTH"), ("near", "DAYS→NEARFULL"), ("full", "DAYS→FULL"),
                        ("pg_num", "PGS"), ("auto", "AUTOSCALE")]))
    if all(p["growth_bytes_per_day"] is None for p in r["pools"]):
        print(f"\nno growth measured yet ({r['samples']} sample(s)); run again later or give "
              "--growth")


# -- ceph.pg.balance -------------------------------------------------------------------
def plan_pg_balance(ctx: Context, params: dict[str, Any]) -> Operation | None:
    """The balance report; with --apply, its upmap/reweight (and with --include-pg-num,
    pg_num) recommendations as one operation."""
    from debvisor_core.model import Operation

    from . import analysis
    from .client import session
    from .dumps import fetch
    from .steps import OsdReweight, PgUpmap, PoolPgNum

    with session(ctx) as c:
        d = fetch(c, "osd_df", "osd_tree", "osd_dump", "pgs_brief", "pools", "crush_rules",
                  "df", "balancer", "autoscale")
    data = analysis.pg_balance(d, max_moves=params["max_moves"])
    if not params["apply"]:
        _show_instead(ctx, data, render_balance)
    steps: list[Step] = []
    for r in data["recommendations"]:
        if r["kind"] == "upmap":
            steps.append(PgUpmap(r["pgid"], r["mappings"], r["from"], r["to"]))
        elif r["kind"] == "reweight":
            steps.append(OsdReweight(r["osd"], r["reweight"]))
        elif r["kind"] == "pg_num" and params["include_pg_num"]:
            steps.append(PoolPgNum(r["pool"], r["to"]))
    if not steps:
        _show_instead(ctx, {**data, "applied": 0}, "nothing to apply: PGs are balanced")
    return Operation(kind="ceph.pg-balance", title=f"apply {len(steps)} PG balance change(s)",
                     steps=steps,
                     params={"before": data["score"], "expected": data["expected"]["score"]},
                     locks=["ceph.pg-balance"],
                     result={"applied": len(steps), "score": data["score"],
                             "expected_score": data["expected"]["score"]})


def render_balance(r: dict[str, Any]) -> None:
    s = r["pgs_per_osd"]
    print(f"PGs per OSD: min {s['min']:.0f}, max {s['max']:.0f}, mean {s['mean']}, "
          f"stddev {s['stddev']}")
    print(f"score (RMS deviation from weight share, lower is better): {r['score']}")
    b = r["balancer"]
    if b:
        print(f"balancer: {'on' if b['active'] else 'off'}, mode {b['mode']}" +
              (f" — {b['result']}" if b.get("result") else ""))
    if not r["recommendations"]:
        print("\nRecommendations: none, PGs are balanced.")
        return
    print("\nRecommendations:")
    for x in r["recommendations"]:
        extra = f"  ({x.get('reason')}; {x.get('expected')})" if x["kind"] == "pg_num" else ""
        print(f"  {x['kind']:9} $ {x['command']}{extra}")
    e = r["expected"]["pgs_per_osd"]
    print(f"\nExpected after upmap/reweight: min {e['min']:.0f}, max {e['max']:.0f}, "
          f"stddev {e['stddev']}, score {r['expected']['score']}")


def render_balance_applied(res: OpResult) -> None:
    r = res.result or {}
    print(f"applied {r.get('applied')} change(s); expected score {r.get('score')} → "
          f"{r.get('expected_score')}")


# -- ceph.alerts -----------------------------------------------------------------------
def query_alerts(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from .alerts import alerts
    from .client import session
    from .steps import noout_state

    with session(ctx) as c:
        h = c.mon("health", detail="detail")
        noout = noout_state(c, h.get("checks") or {})
    data: dict[str, Any] = alerts(h, all_details=params["all"], noout=noout)
    return data


def render_alerts(r: dict[str, Any]) -> None:
    from .steps import noout_line

    if not r["alerts"]:
        print(f"{r['status']}: no alerts")
        return
    for a in r["alerts"]:
        mute = " (muted)" if a["muted"] else ""
        print(f"[{a['severity'].upper()}] {a['code']}{mute}: {a['summary']}")
        for line in a["detail"]:
            print(f"    {line}")
        if a["detail_more"]:
            print(f"    … {a['detail_more']} more (--all)")
        if "noout_reason" in a:
            print(f"    {noout_line(r['noout'])}")
        print(f"    hint: {a['hint']}")


# -- ceph.noout.set / ceph.noout.unset -------------------------------------------------
def _plan_noout(ctx: Context, value: bool, reason: str) -> Operation:
    from debvisor_core.model import Operation

    from .client import session
    from .steps import OsdFlag

    with session(ctx) as c:
        is_set = "noout" in set(c.mon("osd dump").get("flags_set") or [])
    word = "set" if value else "unset"
    if is_set == value:
        _show_instead(ctx, {"flag": "noout", "set": value, "changed": False},
                      f"noout is already {word}; nothing to do")
    return Operation(kind="ceph.noout", title=f"{word} noout",
                     steps=[OsdFlag("noout", value, reason)],
                     params={"set": value, "reason": reason}, locks=["ceph.flags"])


def plan_noout_set(ctx: Context, params: dict[str, Any]) -> Operation:
    return _plan_noout(ctx, True, params["reason"] or "")


def plan_noout_unset(ctx: Context, params: dict[str, Any]) -> Operation:
    return _plan_noout(ctx, False, params["reason"] or "")


# -- ceph.maintenance-plan -------------------------------------------------------------
def query_maintenance_plan(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from . import analysis
    from .client import session
    from .dumps import fetch

    with session(ctx) as c:
        d = fetch(c, "osd_df", "osd_tree", "osd_dump", "pgs_brief", "pools")
        data: dict[str, Any] = analysis.maintenance_plan(params["node"], d)
        up = [i for i in data["osds"] if i not in data["already_down"]]
        if up:  # a down OSD is stopped already: the mgr would only repeat its inactive PGs
            ret, _out, _err = c.mgr_raw("osd ok-to-stop", (-11, -16), ids=[str(i) for i in up])
            data["ceph_ok_to_stop"] = ret == 0
    return data


def render_maintenance_plan(p: dict[str, Any]) -> None:
    print(f"node {p['node']}: OSDs {', '.join(f'osd.{i}' for i in p['osds']) or 'none'}")
    if p["already_down"]:
        print(f"already down: {', '.join(f'osd.{i}' for i in p['already_down'])}")
    live = ""
    if "ceph_ok_to_stop" in p:
        which = " of the up OSDs" if p["already_down"] else ""
        live = f" (ceph ok-to-stop{which}: {'yes' if p['ceph_ok_to_stop'] else 'no'})"
    print(f"can all stop together: {'yes' if p['can_stop_together'] else 'no'}{live}")
    for i, b in enumerate(p["batches"], 1):
        print(f"  batch {i}: {', '.join(f'osd.{o}' for o in b['osds'])}"
              + (f" — {b['inactive_pgs']} PGs inactive even alone" if b["inactive_pgs"] else ""))
    print(f"PGs affected {p['pgs_affected']}: {p['pgs_degraded']} degraded, "
          f"{p['pgs_inactive']} inactive")
    print(f"flags to set: {', '.join(p['flags'])}")
    m = p["data_movement"]
    print(f"data movement: none with noout; {_human_bytes(m['without_noout_bytes'])} "
          "backfilled if the OSDs get marked out")
    for n in p["notes"]:
        print(f"- {n}")


# -- ceph.join -------------------------------------------------------------------------
def _join_devices(ctx: Context, items: list[str], provisioner: str, node: str,
                  have: list[int]) -> list[tuple[str, int]]:
    """(device, size) of each device to join; shows what `auto` found (humans only), and
    ends the run with "already-joined" when there is nothing to add."""
    from .join import classify_disks, holders, lsblk, parse_size

    wanted: list[tuple[str, int]] = []
    if items == ["auto"]:
        disks = classify_disks(lsblk(), holders())
        unused = [d for d in disks if d["unused"]]
        if not unused:
            if have:
                _show_instead(ctx, {"status": "already-joined", "host": node, "osds": have},
                              f"node {node} already has its OSDs "
                              f"({', '.join(f'osd.{i}' for i in have)}) and no unused disks: "
                              "nothing to do")
            why = "; ".join(f"{d['path']}: {', '.join(d['reasons'])}" for d in disks) or "no disks"
            raise BadInput(f"no unused disks on this node ({why}); name devices with --devices")
        ctx.ui.note("Unused disks found:\n" + "\n".join(
            f"  {d['path']}  {_human_bytes(d['size'])}  {d['model']}" for d in unused))
        return [(d["path"], d["size"]) for d in unused]
    disks_by_path: dict[str, dict[str, Any]] = {}
    for it in items:
        if it.startswith("file:"):
            if provisioner != "file":
                raise BadInput(f"{it}: file devices need `provisioner = \"file\"` in the [ceph] "
                               "config")
            wanted.append((it, parse_size(it[5:])))
            continue
        if it == "auto":
            raise BadInput("--devices auto cannot be combined with other devices")
        if provisioner == "file":
            raise BadInput(f"{it}: the file provisioner takes file:SIZE devices")
        if not disks_by_path:  # named explicitly, a loop device counts as a disk
            disks_by_path = {d["path"]: d for d in classify_disks(lsblk(), holders(), loops=True)}
        disk = disks_by_path.get(it)
        if disk is None:
            raise BadInput(f"{it} is not a whole disk on this node")
        if not disk["unused"]:
            if any("ceph" in r for r in disk["reasons"]):
                log.info(f"{it} is already a Ceph OSD; skipped")
                continue
            raise BadInput(f"{it} is in use ({', '.join(disk['reasons'])}); refusing to touch it")
        wanted.append((it, disk["size"]))
    if not wanted:
        _show_instead(ctx, {"status": "already-joined", "host": node, "osds": have},
                      f"node {node} already has its OSDs: nothing to do")
    return wanted


def plan_join(ctx: Context, params: dict[str, Any]) -> Operation:
    """Per device: create the OSD, place it in CRUSH, start it, wait until it is up."""
    from debvisor_core.model import Operation

    from . import analysis
    from .client import Settings, session
    from .join import CreateOsd, PlaceOsd, StartOsd, VerifyOsdUp, disk_identity

    weight, initial_weight = params["weight"], params["initial_weight"]
    if weight is not None and initial_weight is not None:
        raise BadInput("give --weight or --initial-weight, not both")
    s = Settings.from_ctx(ctx)
    node = params["host"] or s.host or socket.gethostname().split(".")[0]
    items = [x.strip() for d in params["devices"] for x in d.split(",") if x.strip()]
    try:
        with session(ctx) as c:
            tree = analysis.tree_index(c.mon("osd tree"))
    except DebvisorError as exc:
        raise PreflightRefused(f"pre-flight: {exc.message}") from None
    have = sorted(tree["osds_of"].get(node, []))
    wanted = _join_devices(ctx, items, s.provisioner, node, have)
    prov = s.provisioner
    device_class = params["class"] or ""
    steps: list[Step] = []
    uuids = []
    for dev, size in wanted:
        u = str(uuid.uuid4())
        uuids.append(u)
        w = initial_weight if initial_weight is not None else (
            weight if weight is not None else round(size / analysis.TIB, 5))
        ident: dict[str, Any] = {}
        if prov != "file":  # the disk's identity, journalled with the plan (see join.CreateOsd)
            try:
                ident = disk_identity(dev)
            except DebvisorError as exc:
                raise BadInput(f"{dev}: {exc.message}") from None
        steps += [CreateOsd(u, dev, prov, size, device_class, ident),
                  PlaceOsd(u, node, w, device_class), StartOsd(u, prov, dev), VerifyOsdUp(u)]
    # VerifyOsdUp appends each new OSD's id to result["osds"], in the order of the devices
    return Operation(kind="ceph.join", title=f"join {len(wanted)} OSD(s) on {node}", steps=steps,
                     params={"host": node, "devices": [d for d, _ in wanted], "uuids": uuids,
                             "provisioner": prov},
                     destructive=True, locks=["ceph.join"], result={"host": node, "osds": []})


def contributed_join(ctx: Context) -> list[Step] | None:
    """`debvisor join --mode ceph|all`: the steps of ``[ceph.join]`` (None without it, or when
    there is nothing to add)."""
    from debvisor_core.actions import plan_from_config
    from debvisor_core.settings import Section

    table = Section.of(ctx, "ceph").table("join")
    if not table:
        return None
    action = next(a for a in ACTIONS if a.path == "ceph.join")
    op = plan_from_config(ctx, action, table, "[ceph.join]")
    return list(op.steps) if op is not None else None


def render_join(res: OpResult) -> None:
    r = res.result or {}
    osds = ", ".join(f"osd.{i}" for i in r.get("osds", []))
    log.info(f"created {osds} on {r.get('host')} (operation {res.id})")
    print(f"joined {r.get('host')}: {osds}")


# -- the declarations ------------------------------------------------------------------
_OP_RESULT = "the operation result: id, kind, title, status, steps, findings, duration_ms, error"

ACTIONS = [
    Action(
        path="ceph.status", query=query_status, render=render_status,
        summary="Health and checks, mon quorum, OSDs up/in, PG states, usage, recovery and "
                "client I/O",
        description="Under the OSDMAP_FLAGS check, the reason stored with `ceph noout set` "
                    "(\"none recorded\" when noout was set outside DebVisor).",
        result="an object: health, checks [{code, severity, message, count, muted, "
               "noout_reason?}], mons {total, in_quorum, quorum}, mgr {available}, osds "
               "{total, up, in}, pgs {total, by_state}, usage {total_bytes, used_bytes, "
               "stored_bytes, percent_used, objects}, io, recovery, noout {set, reason}",
        examples=("debvisor ceph status", "cephctl status --json"),
    ),
    Action(
        path="ceph.osd.list", query=query_osd_list, render=render_osd_list,
        summary="Per OSD host, class, weight, reweight, utilisation, variance, PGs and status, "
                "with suggestions",
        description="Suggestions for down/out, near-full and backfill-full OSDs and "
                    "utilisation outliers, each with the ceph commands to run.",
        params=(
            Param("overload", "Utilisation above AVERAGE×OVERLOAD counts as an outlier.",
                  type="float", default=1.2, minimum=1.01, maximum=3.0),
        ),
        result="an object: osds [{id, host, class, crush_weight, reweight, size_bytes, "
               "utilization, var, pgs, status, fullness, ...}], summary {total, up, in, "
               "avg_utilization}, suggestions [{osd, kind, severity, message, commands}]",
        examples=("cephctl osd list", "debvisor ceph osd list --json --overload 1.1"),
    ),
    Action(
        path="ceph.osd.ok-to-stop", query=query_ok_to_stop, render=render_ok_to_stop,
        summary="Whether the OSDs IDS (or every OSD of --host) can stop without making PGs "
                "inactive",
        description="Exits 1 when they cannot.",
        params=(
            Param("ids", "OSD ids (3 or osd.3).", type="list", positional=True, default=None),
            Param("host", "Every OSD under this CRUSH host.", default=None),
        ),
        result="an object: ok_to_stop (bool), osds [id], num_ok_pgs, num_not_ok_pgs, "
               "become_inactive [pgid], unknown_pgs [pgid], message",
        examples=("cephctl osd ok-to-stop 0 1",
                  "debvisor ceph osd ok-to-stop --host node2 --json"),
    ),
    Action(
        path="ceph.pool.capacity", query=query_capacity, render=render_capacity,
        summary="Per pool capacity: usage, days until near-full and full, autoscale status",
        description="Per pool stored, used, max available, size/min_size and % used. Each run "
                    "records a sample in the plugin's state dir; growth is measured from the "
                    "samples of the last 30 days unless --growth is given.",
        params=(
            Param("growth", "Growth per pool instead of the measured one: 10GiB/day, "
                            "500M/week or 5%/month.", default=None, metavar="RATE"),
            Param("no_record", "Do not record this run as a growth sample.", type="bool",
                  default=False),
        ),
        result="an object: pools [{pool, stored_bytes, used_bytes, max_avail_bytes, size, "
               "min_size, percent_used, pg_num, growth_bytes_per_day, growth_source, "
               "days_to_nearfull, days_to_full, autoscale}], samples (count)",
        examples=("cephctl pool capacity",
                  "debvisor ceph pool capacity --growth 5%/month --json"),
    ),
    Action(
        path="ceph.pg.balance", kind="ceph.pg-balance", plan=plan_pg_balance,
        render=render_balance_applied,
        summary="PGs per OSD (min, max, stddev), balancer mode, a score and recommendations",
        description="The recommendations (upmap, reweight or pg_num) come with the expected "
                    "improvement. Without --apply it only reports; --apply runs them as one "
                    "operation with rollback (`--rollback` undoes the last one).",
        params=(
            Param("apply", "Apply the upmap/reweight recommendations.", type="bool",
                  default=False),
            Param("include_pg_num", "With --apply, also apply pg_num changes.", type="bool",
                  default=False),
            Param("max_moves", "At most this many upmap moves.", type="int", default=50,
                  minimum=1, maximum=10000),
        ),
        result="without --apply: an object: pgs_per_osd {min, max, mean, stddev}, score, "
               "balancer {active, mode, result}, recommendations [{kind, command, ...}], "
               "expected {pgs_per_osd, score}; with --apply: " + _OP_RESULT
               + "; result {applied, score, expected_score} (the report with applied: 0 "
               "when there is nothing to apply)",
        examples=("cephctl pg balance", "debvisor ceph pg balance --apply --yes",
                  "debvisor ceph pg balance --rollback --yes"),
    ),
    Action(
        path="ceph.alerts", query=query_alerts, render=render_alerts,
        summary="Critical and warning health checks: code, detail and a remediation hint",
        description="Muted checks are marked (muted); under OSDMAP_FLAGS, the reason stored "
                    "with `ceph noout set`.",
        params=(
            Param("all", "Show every detail line (default: the first 5).", type="bool",
                  default=False),
        ),
        result="an object: status, alerts [{code, severity, summary, detail [line], "
               "detail_more, muted, hint, noout_reason?}], noout {set, reason}",
        examples=("cephctl alerts", "debvisor ceph alerts --all --json"),
    ),
    Action(
        path="ceph.noout.set", kind="ceph.noout", plan=plan_noout_set,
        render=lambda res: print("noout set"),
        summary="Set noout: down OSDs are not marked out, so no data moves during maintenance",
        params=(
            Param("reason", "Why (kept in the cluster's config-key store and the audit log).",
                  default=None),
        ),
        result=_OP_RESULT + '; or {"flag": "noout", "set": true, "changed": false} when it '
                            "is already set",
        examples=('cephctl noout set --reason "node3 kernel upgrade" --yes',
                  "debvisor ceph noout set --rollback --yes"),
    ),
    Action(
        path="ceph.noout.unset", kind="ceph.noout", plan=plan_noout_unset,
        render=lambda res: print("noout unset"),
        summary="Unset noout",
        params=(Param("reason", "Why (audit log).", default=None),),
        result=_OP_RESULT + '; or {"flag": "noout", "set": false, "changed": false} when it '
                            "is not set",
        examples=("cephctl noout unset --yes",),
    ),
    Action(
        path="ceph.maintenance-plan", query=query_maintenance_plan,
        render=render_maintenance_plan,
        summary="Which OSDs on NODE can stop together, and what stopping them does",
        description="The PGs that would become degraded or inactive, the flags to set and the "
                    "data movement to expect, with Ceph's own ok-to-stop for those still up. "
                    "PGs already inactive (their copies on down OSDs) are reported once as "
                    "such and counted in no batch.",
        params=(Param("node", "The node's CRUSH host name.", positional=True),),
        result="an object: node, osds [id], already_down [id], can_stop_together, "
               "ceph_ok_to_stop, batches [{osds, inactive_pgs}], pgs_affected, pgs_degraded, "
               "pgs_inactive, pgs_already_inactive, already_inactive_pgs [pgid], "
               "already_inactive_on [id], flags [flag], data_movement {without_noout_bytes, "
               "...}, notes",
        examples=("cephctl maintenance-plan node2",
                  "debvisor ceph maintenance-plan node2 --json"),
    ),
    Action(
        path="ceph.join", kind="ceph.join", plan=plan_join, render=render_join,
        destructive=True,
        summary="Add this node's OSDs: unused disks discovered (or the given ones), one OSD each",
        description="Shows the disks for confirmation, then per device creates the OSD, places "
                    "it in CRUSH, starts it and waits until it is up — with rollback (OSD "
                    "purged, CRUSH entry and key removed) if a step fails.",
        params=(
            Param("devices", "auto (unused disks from lsblk), /dev/X (repeat or "
                             "comma-separate), or file:SIZE with the file provisioner (one OSD "
                             "per item).", type="list", metavar="TEXT"),
            Param("class", "CRUSH device class (hdd, ssd, nvme).", default=None),
            Param("weight", "CRUSH weight (default: size in TiB).", type="float", default=None,
                  minimum=0),
            Param("initial_weight", "Start at this CRUSH weight (e.g. 0) and ramp up later.",
                  type="float", default=None, minimum=0),
            Param("host", "CRUSH host bucket (default: [ceph] host or this node's short name).",
                  default=None),
        ),
        result=_OP_RESULT + '; result {host, osds [id]}; or {"status": "already-joined", '
                            "host, osds} when there is nothing to add",
        examples=("debvisor ceph join --devices auto --class ssd",
                  "debvisor ceph join --devices /dev/sdb,/dev/sdc --initial-weight 0 --yes",
                  "debvisor ceph join --devices file:2G --yes        # lab: file provisioner",
                  "debvisor ceph join --rollback --yes"),
    ),
]
