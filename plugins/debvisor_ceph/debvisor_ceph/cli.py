"""`debvisor ceph …` (alias `cephctl`): the click commands; analysis lives in analysis.py."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import click

from debvisor_core import log
from debvisor_core.commands import json_option, operation_options, pass_ctx
from debvisor_core.context import Context
from debvisor_core.engine import Operation, execute, run
from debvisor_core.errors import BadInput, DebvisorError, PreflightRefused
from debvisor_core.output import human_bytes, table

from . import analysis
from .client import Settings, session
from .dumps import fetch


def _print_suggestions(sugg: list[dict[str, Any]]) -> None:
    if not sugg:
        print("\nSuggestions: none — every OSD is up, in and balanced.")
        return
    print("\nSuggestions:")
    for s in sugg:
        print(f"  [{s['severity'].upper()}] {s['message']}")
        for c in s["commands"]:
            print(f"      $ {c}")


def _days(v: float | None) -> str:
    return "-" if v is None else ("now" if v <= 0 else f"{v:.0f}")


@click.group("ceph")
def ceph() -> None:
    """Ceph cluster operations over python-rados (alias `cephctl`).

    \b
    Example:
      debvisor ceph status
      cephctl osd list --json
      cephctl pool capacity --growth 20GiB/day
      cephctl noout set --reason "kernel upgrade" --yes
    """


# --- status ---------------------------------------------------------------------------


@ceph.command("status")
@json_option
@pass_ctx
def status_cmd(ctx: Context) -> None:
    """Health and checks, mon quorum, OSDs up/in, PG states, usage, recovery and client I/O.

    \b
    Example:
      debvisor ceph status
      cephctl status --json
    """
    from .steps import noout_line, noout_state

    with session(ctx) as c:
        st = c.mon("status")
        noout = noout_state(c, (st.get("health") or {}).get("checks") or {})
    data = analysis.status_summary(st)
    data["noout"] = noout
    for chk in data["checks"]:
        if chk["code"] == "OSDMAP_FLAGS" and noout["set"]:
            chk["noout_reason"] = noout["reason"]

    def human(d: dict[str, Any]) -> None:
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
        print(f"usage:    {human_bytes(u['used_bytes'])} used of {human_bytes(u['total_bytes'])} "
              f"({u['percent_used']}%), {human_bytes(u['stored_bytes'])} stored, {u['objects']} objects")
        io, rec = d["io"], d["recovery"]
        print(f"client:   {human_bytes(io['read_bytes_sec'])}/s rd, "
              f"{human_bytes(io['write_bytes_sec'])}/s wr, "
              f"{io['read_op_per_sec']} rd op/s, {io['write_op_per_sec']} wr op/s")
        print(f"recovery: {human_bytes(rec['recovering_bytes_per_sec'])}/s, "
              f"{rec['recovering_objects_per_sec']} objects/s, {rec['degraded_objects']} degraded, "
              f"{rec['misplaced_objects']} misplaced")

    ctx.emit(data, human)


# --- OSDs --------------------------------------------------------------------------------


@ceph.group("osd")
def osd() -> None:
    """OSDs: list with suggestions, ok-to-stop.

    \b
    Example:
      cephctl osd list
      cephctl osd ok-to-stop 3 4
    """


@osd.command("list")
@click.option("--overload", default=1.2, show_default=True, type=click.FloatRange(1.01, 3.0),
              help="Utilisation above AVERAGE×OVERLOAD counts as an outlier.")
@json_option
@pass_ctx
def osd_list(ctx: Context, overload: float) -> None:
    """Per OSD host, class, weight, reweight, utilisation, variance, PGs and status — with
    suggestions for down/out, near-full and backfill-full OSDs and outliers.

    \b
    Example:
      cephctl osd list
      debvisor ceph osd list --json --overload 1.1
    """
    with session(ctx) as c:
        d = fetch(c, "osd_df", "osd_tree", "osd_dump")
    data = analysis.osd_report(d, overload=overload)

    def human(r: dict[str, Any]) -> None:
        rows = [{**x, "size": human_bytes(x["size_bytes"]), "util": f"{x['utilization']:.1f}%",
                 "state": x["status"] + (f",{x['fullness']}" if x["fullness"] else "")} for x in r["osds"]]
        print(table(rows, [("id", "ID"), ("host", "HOST"), ("class", "CLASS"), ("crush_weight", "WEIGHT"),
                           ("reweight", "REWEIGHT"), ("size", "SIZE"), ("util", "USE"), ("var", "VAR"),
                           ("pgs", "PGS"), ("state", "STATUS")]))
        s = r["summary"]
        print(f"\n{s['total']} OSDs, {s['up']} up, {s['in']} in, average utilisation {s['avg_utilization']}%")
        _print_suggestions(r["suggestions"])

    ctx.emit(data, human)


@osd.command("ok-to-stop")
@click.argument("ids", nargs=-1)
@click.option("--host", "host", help="Every OSD under this CRUSH host.")
@json_option
@pass_ctx
def ok_to_stop(ctx: Context, ids: tuple[str, ...], host: str | None) -> None:
    """Whether the OSDs IDS (or every OSD of --host) can stop without making PGs inactive.
    Exits 1 when they cannot.

    \b
    Example:
      cephctl osd ok-to-stop 0 1
      debvisor ceph osd ok-to-stop --host node2 --json
    """
    if bool(ids) == bool(host):
        raise BadInput("give either OSD ids or --host, not both or neither")
    with session(ctx) as c:
        if host:
            idx = analysis.tree_index(c.mon("osd tree"))
            if host not in idx["osds_of"]:
                raise BadInput(f"no CRUSH host {host!r}; hosts: {', '.join(idx['hosts']) or 'none'}")
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
            "become_inactive": out.get("bad_become_inactive", []), "unknown_pgs": out.get("unknown_pgs", []),
            "message": err.strip()}

    def human(d: dict[str, Any]) -> None:
        who = ", ".join(f"osd.{i}" for i in d["osds"])
        if d["ok_to_stop"]:
            print(f"{who}: ok to stop ({d['num_ok_pgs']} PGs stay active)")
        else:
            print(f"{who}: NOT ok to stop: {d['message'] or 'PGs would become inactive'}")

    ctx.emit(data, human)
    if not data["ok_to_stop"]:
        click.get_current_context().exit(1)


# --- pools ---------------------------------------------------------------------------------


def _samples_file(ctx: Context) -> Path:
    return ctx.plugin_state("ceph") / "capacity-samples.jsonl"


def _record_sample(ctx: Context, df: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """Append this run's stored bytes per pool (replacing a sample younger than 5 min); keep 90 days."""
    path = _samples_file(ctx)
    samples = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                samples.append(json.loads(line))
            except ValueError:
                continue
    sample = {"t": now, "stored": {p["name"]: int(p["stats"].get("stored", 0)) for p in df.get("pools", [])}}
    if samples and now - samples[-1]["t"] < 300:
        samples[-1] = sample
    else:
        samples.append(sample)
    samples = [s for s in samples if s["t"] >= now - 90 * analysis.DAY]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(s) + "\n" for s in samples))
    tmp.replace(path)
    return samples


@ceph.group("pool")
def pool() -> None:
    """Pools: capacity planning.

    \b
    Example:
      cephctl pool capacity
    """


@pool.command("capacity")
@click.option("--growth", "growth", metavar="RATE",
              help="Growth per pool instead of the measured one: 10GiB/day, 500M/week or 5%/month.")
@click.option("--no-record", is_flag=True, help="Do not record this run as a growth sample.")
@json_option
@pass_ctx
def pool_capacity(ctx: Context, growth: str | None, no_record: bool) -> None:
    """Per pool stored, used, max available, size/min_size, % used, days until near-full and full,
    and autoscale status. Each run records a sample in the plugin's state dir; growth is
    measured from the samples of the last 30 days unless --growth is given.

    \b
    Example:
      cephctl pool capacity
      debvisor ceph pool capacity --growth 5%/month --json
    """
    g = analysis.parse_growth(growth) if growth else None
    with session(ctx) as c:
        d = fetch(c, "df", "pools", "osd_dump", "autoscale")
    samples = [] if no_record else _record_sample(ctx, d["df"], time.time())
    data = analysis.capacity(d, rates=analysis.growth_rates(samples), growth=g)
    data["samples"] = len(samples)

    def human(r: dict[str, Any]) -> None:
        rows = []
        for p in r["pools"]:
            a = p["autoscale"] or {}
            auto = "-"
            if a:
                auto = str(a["mode"]) + (f" → pg_num {a['new_pg_num']}" if a["new_pg_num"] else "")
                auto += f" target {a['target_ratio']}" if a.get("target_ratio") else ""
            rate = p["growth_bytes_per_day"]
            rows.append({**p, "stored": human_bytes(p["stored_bytes"]), "used": human_bytes(p["used_bytes"]),
                         "avail": human_bytes(p["max_avail_bytes"]), "rep": f"{p['size']}/{p['min_size']}",
                         "pct": f"{p['percent_used']:.2f}%",
                         "growth": "-" if rate is None else f"{human_bytes(rate)}/d",
                         "near": _days(p["days_to_nearfull"]), "full": _days(p["days_to_full"]),
                         "auto": auto})
        print(table(rows, [("pool", "POOL"), ("stored", "STORED"), ("used", "USED"), ("avail", "MAX AVAIL"),
                           ("rep", "SIZE/MIN"), ("pct", "%USED"), ("growth", "GROWTH"),
                           ("near", "DAYS→NEARFULL"), ("full", "DAYS→FULL"), ("pg_num", "PGS"),
                           ("auto", "AUTOSCALE")]))
        if all(p["growth_bytes_per_day"] is None for p in r["pools"]):
            print(f"\nno growth measured yet ({r['samples']} sample(s)); run again later or give --growth")

    ctx.emit(data, human)


# --- PG balance -----------------------------------------------------------------------------


@ceph.group("pg")
def pg() -> None:
    """Placement groups: balance report and fixes.

    \b
    Example:
      cephctl pg balance
    """


@pg.command("balance")
@click.option("--apply", "apply_", is_flag=True, help="Apply the upmap/reweight recommendations.")
@click.option("--include-pg-num", is_flag=True, help="With --apply, also apply pg_num changes.")
@click.option("--max-moves", default=50, show_default=True, type=click.IntRange(1, 10000),
              help="At most this many upmap moves.")
@json_option
@operation_options("ceph.pg-balance")
@pass_ctx
def pg_balance(ctx: Context, apply_: bool, include_pg_num: bool, max_moves: int) -> None:
    """PGs per OSD (min, max, stddev), balancer mode and a score, and recommendations (upmap,
    reweight or pg_num) with the expected improvement. --apply runs them as one operation
    with rollback (`--rollback` undoes the last one).

    \b
    Example:
      cephctl pg balance
      debvisor ceph pg balance --apply --yes
      debvisor ceph pg balance --rollback --yes
    """
    from .steps import OsdReweight, PgUpmap, PoolPgNum

    with session(ctx) as c:
        d = fetch(c, "osd_df", "osd_tree", "osd_dump", "pgs_brief", "pools", "crush_rules", "df",
                  "balancer", "autoscale")
    data = analysis.pg_balance(d, max_moves=max_moves)
    if not apply_:
        ctx.emit(data, _human_balance)
        return
    steps: list[Any] = []
    for r in data["recommendations"]:
        if r["kind"] == "upmap":
            steps.append(PgUpmap(r["pgid"], r["mappings"], r["from"], r["to"]))
        elif r["kind"] == "reweight":
            steps.append(OsdReweight(r["osd"], r["reweight"]))
        elif r["kind"] == "pg_num" and include_pg_num:
            steps.append(PoolPgNum(r["pool"], r["to"]))
    if not steps:
        ctx.emit({**data, "applied": 0}, lambda _d: print("nothing to apply: PGs are balanced"))
        return
    op = Operation(kind="ceph.pg-balance", title=f"apply {len(steps)} PG balance change(s)", steps=steps,
                   params={"before": data["score"], "expected": data["expected"]["score"]},
                   locks=["ceph.pg-balance"])
    execute(ctx, op, human=lambda res: print(
        f"applied {len(steps)} change(s); expected score {data['score']} → {data['expected']['score']}"))


def _human_balance(r: dict[str, Any]) -> None:
    s = r["pgs_per_osd"]
    print(f"PGs per OSD: min {s['min']:.0f}, max {s['max']:.0f}, mean {s['mean']}, stddev {s['stddev']}")
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
    print(f"\nExpected after upmap/reweight: min {e['min']:.0f}, max {e['max']:.0f}, stddev {e['stddev']}, "
          f"score {r['expected']['score']}")


# --- alerts --------------------------------------------------------------------------------


@ceph.command("alerts")
@click.option("--all", "all_", is_flag=True, help="Show every detail line (default: the first 5).")
@json_option
@pass_ctx
def alerts_cmd(ctx: Context, all_: bool) -> None:
    """Critical and warning health checks: code, detail and a remediation hint; muted ones marked.

    \b
    Example:
      cephctl alerts
      debvisor ceph alerts --all --json
    """
    from .alerts import alerts
    from .steps import noout_line, noout_state

    with session(ctx) as c:
        h = c.mon("health", detail="detail")
        noout = noout_state(c, h.get("checks") or {})
    data = alerts(h, all_details=all_, noout=noout)

    def human(r: dict[str, Any]) -> None:
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

    ctx.emit(data, human)


# --- noout ---------------------------------------------------------------------------------


@ceph.group("noout")
def noout() -> None:
    """Set or unset the cluster-wide noout flag (as an operation with rollback).

    \b
    Example:
      cephctl noout set --reason "rack 2 power work" --yes
      cephctl noout unset --yes
    """


def _noout(ctx: Context, value: bool, reason: str) -> None:
    from .steps import OsdFlag

    with session(ctx) as c:
        is_set = "noout" in set(c.mon("osd dump").get("flags_set") or [])
    if is_set == value:
        ctx.emit({"flag": "noout", "set": value, "changed": False},
                 f"noout is already {'set' if value else 'unset'}; nothing to do")
        return
    op = Operation(kind="ceph.noout", title=f"{'set' if value else 'unset'} noout",
                   steps=[OsdFlag("noout", value, reason)], params={"set": value, "reason": reason},
                   locks=["ceph.flags"])
    execute(ctx, op, human=lambda res: print(f"noout {'set' if value else 'unset'}"))


@noout.command("set")
@click.option("--reason", default="", help="Why (kept in the cluster's config-key store and the audit log).")
@json_option
@operation_options("ceph.noout")
@pass_ctx
def noout_set(ctx: Context, reason: str) -> None:
    """Set noout: down OSDs are not marked out, so no data moves during maintenance.

    \b
    Example:
      cephctl noout set --reason "node3 kernel upgrade" --yes
    """
    _noout(ctx, True, reason)


@noout.command("unset")
@click.option("--reason", default="", help="Why (audit log).")
@json_option
@operation_options("ceph.noout")
@pass_ctx
def noout_unset(ctx: Context, reason: str) -> None:
    """Unset noout.

    \b
    Example:
      cephctl noout unset --yes
    """
    _noout(ctx, False, reason)


# --- maintenance plan ------------------------------------------------------------------------


@ceph.command("maintenance-plan")
@click.argument("node")
@json_option
@pass_ctx
def maintenance_plan(ctx: Context, node: str) -> None:
    """Which OSDs on NODE can stop together, the PGs that would become degraded or inactive,
    the flags to set and the data movement to expect.

    \b
    Example:
      cephctl maintenance-plan node2
      debvisor ceph maintenance-plan node2 --json
    """
    with session(ctx) as c:
        d = fetch(c, "osd_df", "osd_tree", "osd_dump", "pgs_brief", "pools")
        data = analysis.maintenance_plan(node, d)
        if data["osds"]:
            ret, out, err = c.mgr_raw("osd ok-to-stop", (-11, -16), ids=[str(i) for i in data["osds"]])
            data["ceph_ok_to_stop"] = ret == 0

    def human(p: dict[str, Any]) -> None:
        print(f"node {p['node']}: OSDs {', '.join(f'osd.{i}' for i in p['osds']) or 'none'}")
        if p["already_down"]:
            print(f"already down: {', '.join(f'osd.{i}' for i in p['already_down'])}")
        live = ""
        if "ceph_ok_to_stop" in p:
            live = f" (ceph ok-to-stop: {'yes' if p['ceph_ok_to_stop'] else 'no'})"
        print(f"can all stop together: {'yes' if p['can_stop_together'] else 'no'}{live}")
        for i, b in enumerate(p["batches"], 1):
            print(f"  batch {i}: {', '.join(f'osd.{o}' for o in b['osds'])}"
                  + (f" — {b['inactive_pgs']} PGs inactive even alone" if b["inactive_pgs"] else ""))
        print(f"PGs affected {p['pgs_affected']}: {p['pgs_degraded']} degraded, {p['pgs_inactive']} inactive")
        print(f"flags to set: {', '.join(p['flags'])}")
        m = p["data_movement"]
        print(f"data movement: none with noout; {human_bytes(m['without_noout_bytes'])} backfilled if the "
              "OSDs get marked out")
        for n in p["notes"]:
            print(f"- {n}")

    ctx.emit(data, human)


# --- join ------------------------------------------------------------------------------------


@ceph.command("join")
@click.option("--devices", "devices", multiple=True, required=True,
              help="auto (unused disks from lsblk), /dev/X (repeat or comma-separate), or file:SIZE "
                   "with the file provisioner (one OSD per item).")
@click.option("--class", "device_class", default="", help="CRUSH device class (hdd, ssd, nvme).")
@click.option("--weight", type=click.FloatRange(min=0), help="CRUSH weight (default: size in TiB).")
@click.option("--initial-weight", type=click.FloatRange(min=0),
              help="Start at this CRUSH weight (e.g. 0) and ramp up later.")
@click.option("--host", "host", help="CRUSH host bucket (default: [ceph] host or this node's short name).")
@json_option
@operation_options("ceph.join", destructive=True)
@pass_ctx
def join(ctx: Context, devices: tuple[str, ...], device_class: str, weight: float | None,
         initial_weight: float | None, host: str | None) -> None:
    """Add this node's OSDs: discover unused disks (or take the given ones), show them for
    confirmation, then per device create the OSD, place it in CRUSH, start it and wait until
    it is up — with rollback (OSD purged, CRUSH entry and key removed) if a step fails.

    \b
    Example:
      debvisor ceph join --devices auto --class ssd
      debvisor ceph join --devices /dev/sdb,/dev/sdc --initial-weight 0 --yes
      debvisor ceph join --devices file:2G --yes        # lab: file provisioner
      debvisor ceph join --rollback --yes
    """
    from .join import (
        CreateOsd,
        PlaceOsd,
        StartOsd,
        VerifyOsdUp,
        classify_disks,
        disk_identity,
        holders,
        lsblk,
        parse_size,
    )

    if weight is not None and initial_weight is not None:
        raise BadInput("give --weight or --initial-weight, not both")
    s = Settings.from_ctx(ctx)
    node = host or s.host or socket.gethostname().split(".")[0]
    items = [x.strip() for d in devices for x in d.split(",") if x.strip()]
    try:
        with session(ctx) as c:
            tree = analysis.tree_index(c.mon("osd tree"))
    except DebvisorError as exc:
        raise PreflightRefused(f"pre-flight: {exc.message}") from None
    have = sorted(tree["osds_of"].get(node, []))
    wanted: list[tuple[str, int]] = []  # (device, size)
    if items == ["auto"]:
        disks = classify_disks(lsblk(), holders())
        unused = [d for d in disks if d["unused"]]
        if not unused:
            if have:
                ctx.emit({"status": "already-joined", "host": node, "osds": have},
                         f"node {node} already has its OSDs ({', '.join(f'osd.{i}' for i in have)}) and no "
                         "unused disks: nothing to do")
                return
            why = "; ".join(f"{d['path']}: {', '.join(d['reasons'])}" for d in disks) or "no disks"
            raise BadInput(f"no unused disks on this node ({why}); name devices with --devices")
        wanted = [(d["path"], d["size"]) for d in unused]
        if not ctx.json:
            print("Unused disks found:")
            for d in unused:
                print(f"  {d['path']}  {human_bytes(d['size'])}  {d['model']}")
    else:
        disks_by_path: dict[str, dict[str, Any]] = {}
        for it in items:
            if it.startswith("file:"):
                if s.provisioner != "file":
                    raise BadInput(f"{it}: file devices need `provisioner = \"file\"` in the [ceph] config")
                wanted.append((it, parse_size(it[5:])))
                continue
            if it == "auto":
                raise BadInput("--devices auto cannot be combined with other devices")
            if s.provisioner == "file":
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
            ctx.emit({"status": "already-joined", "host": node, "osds": have},
                     f"node {node} already has its OSDs: nothing to do")
            return
    prov = s.provisioner
    steps: list[Any] = []
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
        steps += [CreateOsd(u, dev, prov, size, device_class, ident), PlaceOsd(u, node, w, device_class),
                  StartOsd(u, prov, dev), VerifyOsdUp(u)]
    op = Operation(kind="ceph.join", title=f"join {len(wanted)} OSD(s) on {node}", steps=steps,
                   params={"host": node, "devices": [d for d, _ in wanted], "uuids": uuids,
                           "provisioner": prov}, destructive=True, locks=["ceph.join"])
    res = run(ctx, op)
    if res.status != "succeeded":
        ctx.emit(res.to_dict(), lambda _r: None)
        return
    from .join import find_osd

    with session(ctx) as c:
        ids = [find_osd(ctx, c, u) for u in uuids]
    res.result = {"host": node, "osds": ids}
    log.info(f"created {', '.join(f'osd.{i}' for i in ids)} on {node} (operation {res.id})")
    ctx.emit(res.to_dict(), lambda _r: print(f"joined {node}: {', '.join(f'osd.{i}' for i in ids)}"))
