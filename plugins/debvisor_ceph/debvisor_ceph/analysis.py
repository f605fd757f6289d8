"""Pure analysis over Ceph's JSON dumps (see :mod:`debvisor_ceph.dumps`): OSD suggestions,
capacity projection, PG balance and maintenance planning. No I/O here, so recorded and
synthetic dumps exercise exactly what a live cluster does."""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from typing import Any

from debvisor_core.errors import BadInput

TIB = 1024**4
DAY = 86400.0


# --- shared helpers ------------------------------------------------------------


def ratios(osd_dump: dict[str, Any] | None) -> dict[str, float]:
    """nearfull / backfillfull / full ratios of the OSD map (Ceph's defaults if absent)."""
    d = osd_dump or {}
    return {
        "nearfull": round(float(d.get("nearfull_ratio") or 0.85), 4),
        "backfillfull": round(float(d.get("backfillfull_ratio") or 0.90), 4),
        "full": round(float(d.get("full_ratio") or 0.95), 4),
    }


def tree_index(osd_tree: dict[str, Any]) -> dict[str, Any]:
    """OSD → host and root, host → OSD ids, from ``osd tree``."""
    nodes = {n["id"]: n for n in osd_tree.get("nodes", [])}
    parent: dict[int, int] = {}
    for n in nodes.values():
        for c in n.get("children", []):
            parent[c] = n["id"]
    host_of: dict[int, str] = {}
    root_of: dict[int, str] = {}
    osds_of: dict[str, list[int]] = defaultdict(list)
    for n in nodes.values():
        if n.get("type") != "osd":
            continue
        cur, host, root = n["id"], "", ""
        while cur in parent:
            cur = parent[cur]
            p = nodes[cur]
            if p.get("type") == "host" and not host:
                host = p["name"]
            root = p["name"]
        host_of[n["id"]] = host
        root_of[n["id"]] = root
        if host:
            osds_of[host].append(n["id"])
    hosts = [n["name"] for n in nodes.values() if n.get("type") == "host"]
    for h in hosts:
        osds_of.setdefault(h, [])
    return {"host_of": host_of, "root_of": root_of, "osds_of": dict(osds_of), "hosts": sorted(hosts)}


def _osd_states(osd_dump: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    return {int(o["osd"]): o for o in (osd_dump or {}).get("osds", [])}


def _pct(x: float) -> float:
    return round(100.0 * x, 2)


# --- status ---------------------------------------------------------------------


def status_summary(st: dict[str, Any]) -> dict[str, Any]:
    """Health, quorum, OSD counts, PG states, usage and I/O rates from ``status``."""
    health = st.get("health") or {}
    checks = [
        {"code": code, "severity": c.get("severity", ""), "message": c.get("summary", {}).get("message", ""),
         "count": c.get("summary", {}).get("count", 0), "muted": bool(c.get("muted"))}
        for code, c in sorted((health.get("checks") or {}).items())
    ]
    osdmap = st.get("osdmap") or {}
    osdmap = osdmap.get("osdmap", osdmap)  # nested before Pacific
    pg = st.get("pgmap") or {}
    by_state = {s["state_name"]: s["count"] for s in pg.get("pgs_by_state", [])}
    total = int(pg.get("bytes_total", 0))
    used = int(pg.get("bytes_used", 0))
    quorum = list(st.get("quorum_names") or [])
    num_mons = int((st.get("monmap") or {}).get("num_mons", len(quorum)))
    return {
        "fsid": st.get("fsid", ""),
        "health": health.get("status", "HEALTH_UNKNOWN"),
        "checks": checks,
        "mons": {"total": num_mons, "in_quorum": len(quorum), "quorum": quorum},
        "mgr": {"available": bool((st.get("mgrmap") or {}).get("available"))},
        "osds": {"total": int(osdmap.get("num_osds", 0)), "up": int(osdmap.get("num_up_osds", 0)),
                 "in": int(osdmap.get("num_in_osds", 0)),
                 "remapped_pgs": int(osdmap.get("num_remapped_pgs", 0))},
        "pgs": {"total": int(pg.get("num_pgs", 0)), "by_state": by_state,
                "active_clean": by_state.get("active+clean", 0)},
        "usage": {"total_bytes": total, "used_bytes": used, "avail_bytes": int(pg.get("bytes_avail", 0)),
                  "stored_bytes": int(pg.get("data_bytes", 0)), "objects": int(pg.get("num_objects", 0)),
                  "pools": int(pg.get("num_pools", 0)), "percent_used": _pct(used / total) if total else 0.0},
        "io": {k: pg.get(k, 0) for k in ("read_bytes_sec", "write_bytes_sec", "read_op_per_sec",
                                          "write_op_per_sec")},
        "recovery": {k: pg.get(k, 0) for k in ("recovering_bytes_per_sec", "recovering_objects_per_sec",
                                                "degraded_objects", "degraded_ratio", "misplaced_objects",
                                                "misplaced_ratio")},
    }


# --- OSDs and suggestions --------------------------------------------------------


def osd_rows(dumps: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per OSD: host, class, weights, utilisation, variance, PGs, up/in, fullness."""
    idx = tree_index(dumps["osd_tree"])
    states = _osd_states(dumps.get("osd_dump"))
    r = ratios(dumps.get("osd_dump"))
    rows = []
    for n in dumps["osd_df"].get("nodes", []):
        if n.get("type", "osd") != "osd":
            continue
        i = int(n["id"])
        st = states.get(i, {})
        up = bool(st["up"]) if "up" in st else n.get("status") == "up"
        is_in = bool(st["in"]) if "in" in st else float(n.get("reweight", 0)) > 0
        util = float(n.get("utilization", 0.0))
        flags = set(st.get("state", []))
        if util >= 100 * r["full"] or "full" in flags:
            fullness = "full"
        elif util >= 100 * r["backfillfull"] or "backfillfull" in flags:
            fullness = "backfillfull"
        elif util >= 100 * r["nearfull"] or "nearfull" in flags:
            fullness = "nearfull"
        else:
            fullness = ""
        rows.append({
            "id": i, "name": n.get("name", f"osd.{i}"), "host": idx["host_of"].get(i, ""),
            "root": idx["root_of"].get(i, ""), "class": n.get("device_class", ""),
            "crush_weight": round(float(n.get("crush_weight", 0.0)), 5),
            "reweight": round(float(n.get("reweight", 0.0)), 5),
            "size_bytes": int(n.get("kb", 0)) * 1024, "used_bytes": int(n.get("kb_used", 0)) * 1024,
            "utilization": round(util, 2), "var": round(float(n.get("var", 0.0)), 2),
            "pgs": int(n.get("pgs", 0)), "up": up, "in": is_in,
            "status": ("up" if up else "down") + "," + ("in" if is_in else "out"),
            "fullness": fullness,
        })
    return rows


def osd_suggestions(rows: list[dict[str, Any]], dumps: dict[str, Any], *, overload: float = 1.2,
                    min_points: float = 3.0) -> list[dict[str, Any]]:
    """What to do about down/out, near-full and backfill-full OSDs, utilisation outliers (with a
    concrete reweight) and PG-count outliers."""
    r = ratios(dumps.get("osd_dump"))
    out: list[dict[str, Any]] = []

    def add(row: dict[str, Any], kind: str, severity: str, message: str, commands: list[str],
            **extra: Any) -> None:
        out.append({"osd": row["id"], "host": row["host"], "kind": kind, "severity": severity,
                    "message": message, "commands": commands, **extra})

    active = [x for x in rows if x["up"] and x["in"] and x["size_bytes"] > 0]
    by_class: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for x in active:
        by_class[(x["root"], x["class"])].append(x)  # type: ignore[index]
    for x in rows:
        i, h = x["id"], x["host"] or "its host"
        if not x["up"] and x["in"]:
            add(x, "down", "crit", f"osd.{i} on {h} is down but still in: start its daemon on {h}; "
                f"if the disk failed, mark it out so recovery starts now", [
                    f"systemctl start ceph-osd@{i}", f"ceph osd out {i}"])
        elif not x["up"]:
            add(x, "down-out", "warn", f"osd.{i} on {h} is down and out: its data was re-replicated; "
                f"replace the disk and re-create it (debvisor ceph join on {h}) or purge it", [
                    f"ceph osd purge {i} --yes-i-really-mean-it"])
        elif not x["in"]:
            add(x, "out", "warn", f"osd.{i} on {h} is up but out (holds no data): mark it in when "
                "its maintenance is over", [f"ceph osd in {i}"])
    for group in by_class.values():
        used = sum(x["used_bytes"] for x in group)
        size = sum(x["size_bytes"] for x in group)
        avg = 100.0 * used / size if size else 0.0
        for x in group:
            i, util, rw = x["id"], x["utilization"], x["reweight"]
            target = round(max(0.05, min(1.0, rw * avg / util)), 4) if util > 0 else rw
            if x["fullness"]:
                limit = {"full": r["full"], "backfillfull": r["backfillfull"], "nearfull": r["nearfull"]}
                sev = "crit" if x["fullness"] == "full" else "warn"
                what = {"full": "full: writes to its PGs are blocked",
                        "backfillfull": "backfill-full: backfill onto it is refused",
                        "nearfull": "near full"}[x["fullness"]]
                cmds = [f"ceph osd reweight {i} {target}"] if target < rw else []
                add(x, x["fullness"], sev, f"osd.{i} is {what} ({util:.1f}% ≥ "
                    f"{100 * limit[x['fullness']]:.0f}%): "
                    + (f"reweight it to {target}, " if cmds else "")
                    + "add capacity or delete data", cmds, reweight=target if cmds else None)
            elif util > avg * overload and util - avg >= min_points:
                add(x, "util-high", "warn", f"osd.{i} is {util:.1f}% used vs {avg:.1f}% average of its "
                    f"class: reweight it {rw} → {target}", [f"ceph osd reweight {i} {target}"],
                    reweight=target)
            elif util < avg / overload and avg - util >= min_points and rw < 1.0:
                add(x, "util-low", "info", f"osd.{i} is {util:.1f}% used vs {avg:.1f}% average and "
                    f"reweighted to {rw}: raise it to {target}", [f"ceph osd reweight {i} {target}"],
                    reweight=target)
        eff = {x["id"]: x["crush_weight"] * x["reweight"] for x in group}
        tot_w = sum(eff.values())
        tot_pgs = sum(x["pgs"] for x in group)
        for x in group:
            if tot_w <= 0:
                break
            exp = tot_pgs * eff[x["id"]] / tot_w
            dev = x["pgs"] - exp
            if abs(dev) > max(0.25 * exp, 3.0):
                add(x, "pgs-high" if dev > 0 else "pgs-low", "info",
                    f"osd.{x['id']} holds {x['pgs']} PGs vs {exp:.0f} expected for its weight: "
                    "run `debvisor ceph pg balance` for upmap moves", ["debvisor ceph pg balance"],
                    expected_pgs=round(exp, 1))
    order = {"crit": 0, "warn": 1, "info": 2}
    out.sort(key=lambda s: (order[s["severity"]], s["osd"]))
    return out


def osd_report(dumps: dict[str, Any], *, overload: float = 1.2) -> dict[str, Any]:
    rows = osd_rows(dumps)
    return {
        "osds": rows,
        "summary": {"total": len(rows), "up": sum(x["up"] for x in rows), "in": sum(x["in"] for x in rows),
                    **{f"avg_{k}": v for k, v in _avg_util(rows).items()}},
        "ratios": ratios(dumps.get("osd_dump")),
        "suggestions": osd_suggestions(rows, dumps, overload=overload),
    }


def _avg_util(rows: list[dict[str, Any]]) -> dict[str, float]:
    size = sum(x["size_bytes"] for x in rows if x["in"])
    used = sum(x["used_bytes"] for x in rows if x["in"])
    return {"utilization": round(100.0 * used / size, 2) if size else 0.0}


# --- capacity ----------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_PERIODS = {"d": 1.0, "day": 1.0, "w": 7.0, "week": 7.0, "m": 30.0, "month": 30.0, "y": 365.0, "year": 365.0}


def parse_growth(text: str) -> tuple[str, float]:
    """``10GiB/day``, ``500M/week``, ``2T/month`` (absolute, per pool) or ``5%/month``
    (relative to each pool's stored bytes) → (``"abs"`` bytes/day | ``"pct"`` fraction/day)."""
    amount, _, period = text.strip().lower().partition("/")
    days = _PERIODS.get(period.strip() or "day")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(%|[kmgtp]?i?b?)", amount.strip())
    if days is None or m is None or m[2] in ("i", "ib"):
        raise BadInput(f"growth rate {text!r} is not like 10GiB/day, 500M/week or 5%/month")
    num, unit = float(m[1]), m[2]
    if unit == "%":
        return "pct", num / 100.0 / days
    return "abs", num * _UNITS[unit[:1]] / days


def growth_rates(samples: list[dict[str, Any]], *, window_days: float = 30.0) -> dict[str, float]:
    """Least-squares growth (stored bytes/day) per pool over the recorded samples
    ``[{"t": epoch, "stored": {pool: bytes}}]`` of the last ``window_days``."""
    if not samples:
        return {}
    last = max(s["t"] for s in samples)
    recent = [s for s in samples if s["t"] >= last - window_days * DAY]
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in recent:
        for pool, stored in s.get("stored", {}).items():
            series[pool].append((float(s["t"]), float(stored)))
    out: dict[str, float] = {}
    for pool, pts in series.items():
        if len(pts) < 2:
            continue
        mt = sum(t for t, _ in pts) / len(pts)
        my = sum(y for _, y in pts) / len(pts)
        var = sum((t - mt) ** 2 for t, _ in pts)
        if var <= 0:
            continue
        out[pool] = sum((t - mt) * (y - my) for t, y in pts) / var * DAY
    return out


def capacity(dumps: dict[str, Any], *, rates: dict[str, float] | None = None,
             growth: tuple[str, float] | None = None) -> dict[str, Any]:
    """Per pool: stored, used, max available, size/min_size, % used, days until near-full and
    full (from ``growth`` if given, else ``rates`` measured from samples), autoscale status."""
    r = ratios(dumps.get("osd_dump"))
    pools = {p["pool_name"]: p for p in dumps.get("pools") or []}
    auto = {a["pool_name"]: a for a in dumps.get("autoscale") or []}
    rows = []
    for p in (dumps.get("df") or {}).get("pools", []):
        name, s = p["name"], p.get("stats", {})
        stored = int(s.get("stored", s.get("bytes_used", 0)))
        used = int(s.get("bytes_used", 0))
        max_avail = int(s.get("max_avail", 0))
        meta = pools.get(name, {})
        if growth is not None:
            rate, source = (growth[1] if growth[0] == "abs" else growth[1] * stored), "given"
        elif rates and name in rates:
            rate, source = rates[name], "measured"
        else:
            rate, source = None, "none"
        full_at = stored + max_avail  # max_avail already stops at the full ratio
        near_at = full_at * r["nearfull"] / r["full"]
        days_full = days_near = None
        if rate and rate > 0:
            days_full = round(max_avail / rate, 1)
            days_near = round(max(0.0, near_at - stored) / rate, 1)
        a = auto.get(name)
        autoscale = None
        if a is not None:
            autoscale = {"mode": a.get("pg_autoscale_mode"), "target_ratio": a.get("target_ratio", 0.0),
                         "target_bytes": a.get("target_bytes", 0), "pg_num": a.get("pg_num_target"),
                         "new_pg_num": a.get("pg_num_final") if a.get("would_adjust") else None}
        rows.append({
            "pool": name, "id": p.get("id"), "stored_bytes": stored, "used_bytes": used,
            "max_avail_bytes": max_avail, "objects": int(s.get("objects", 0)),
            "size": meta.get("size"), "min_size": meta.get("min_size"), "pg_num": meta.get("pg_num"),
            "percent_used": round(100.0 * float(s.get("percent_used", 0.0)), 2),
            "growth_bytes_per_day": None if rate is None else round(rate, 1), "growth_source": source,
            "days_to_nearfull": days_near, "days_to_full": days_full, "autoscale": autoscale,
        })
    return {"pools": rows, "ratios": r, "stats": (dumps.get("df") or {}).get("stats", {})}


# --- PG balance ------------------------------------------------------------------------

_RELEASES = ["jewel", "kraken", "luminous", "mimic", "nautilus", "octopus", "pacific", "quincy", "reef"]


def _failure_domains(dumps: dict[str, Any]) -> dict[int, str]:
    """pool id → CRUSH failure-domain type (``osd``, ``host``, … ; ``?`` if not simple)."""
    rules: dict[int, str] = {}
    for rule in dumps.get("crush_rules") or []:
        types = [s.get("type") for s in rule.get("steps", []) if "choose" in s.get("op", "")]
        rules[int(rule["rule_id"])] = types[-1] if len(types) == 1 else "?"
    return {int(p["pool_id"]): rules.get(int(p.get("crush_rule", 0)), "?") for p in dumps.get("pools") or []}


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"min": 0, "max": 0, "mean": 0.0, "stddev": 0.0}
    return {"min": min(values), "max": max(values), "mean": round(statistics.fmean(values), 2),
            "stddev": round(statistics.pstdev(values), 2)}


def pg_balance(dumps: dict[str, Any], *, max_moves: int = 50) -> dict[str, Any]:
    """PGs per OSD, balancer state, and recommendations (upmap moves, reweights, pg_num) with
    the expected improvement."""
    rows = osd_rows(dumps)
    active = {x["id"]: x for x in rows if x["up"] and x["in"] and x["crush_weight"] > 0}
    idx = tree_index(dumps["osd_tree"])
    pgs = dumps.get("pgs_brief") or []
    count: dict[int, int] = defaultdict(int)
    up_of: dict[str, list[int]] = {}
    on: dict[int, list[str]] = defaultdict(list)
    for pg in pgs:
        up = [o for o in pg.get("up", []) if o >= 0]
        up_of[pg["pgid"]] = up
        for o in up:
            count[o] += 1
            on[o].append(pg["pgid"])
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, x in active.items():
        groups[(x["root"], x["class"])].append(i)
    expected: dict[int, float] = {}
    for members in groups.values():
        w = {i: active[i]["crush_weight"] * active[i]["reweight"] for i in members}
        tw = sum(w.values()) or 1.0
        tot = sum(count[i] for i in members)
        for i in members:
            expected[i] = tot * w[i] / tw
    before = [count[i] for i in active]
    osd_dump = dumps.get("osd_dump") or {}
    rel = str(osd_dump.get("require_min_compat_client") or "jewel")
    upmap_ok = rel in _RELEASES and _RELEASES.index(rel) >= _RELEASES.index("luminous")
    bal = dumps.get("balancer") or {}
    domains = _failure_domains(dumps)
    existing = {u["pgid"]: [[m["from"], m["to"]] for m in u.get("mappings", [])]
                for u in osd_dump.get("pg_upmap_items", [])}
    recs: list[dict[str, Any]] = []
    after_count = dict(count)
    if upmap_ok:
        moves = _greedy_upmap(active, expected, after_count, up_of, on, idx["host_of"], domains, max_moves)
        for pgid, src, dst in moves:
            maps = [list(m) for m in existing.get(pgid, [])]
            hit = next((m for m in maps if m[1] == src), None)
            if hit is not None:
                hit[1] = dst
            else:
                maps.append([src, dst])
            maps = [m for m in maps if m[0] != m[1]]
            existing[pgid] = maps
            recs.append({"kind": "upmap", "pgid": pgid, "from": src, "to": dst, "mappings": maps,
                         "command": f"ceph osd pg-upmap-items {pgid} "
                                    + " ".join(f"{a} {b}" for a, b in maps)})
    else:
        for i, x in sorted(active.items()):
            e = expected.get(i, 0.0)
            if e > 0 and count[i] > e * 1.1 and count[i] - e >= 2:
                new = round(max(0.05, x["reweight"] * e / count[i]), 4)
                recs.append({"kind": "reweight", "osd": i, "from_reweight": x["reweight"],
                             "reweight": new, "command": f"ceph osd reweight {i} {new}"})
    after = [after_count[i] for i in active]
    recs += _pg_num_recs(dumps, len(active))
    if bal and (not bal.get("active") or bal.get("mode") not in ("upmap", "crush-compat")):
        recs.append({"kind": "balancer", "command": "ceph balancer mode upmap && ceph balancer on",
                     "message": "turn the balancer on in upmap mode so it keeps PGs even"})
    spread = _deviation(count, expected)
    return {
        "osds": [{"id": i, "pgs": count[i], "expected": round(expected.get(i, 0.0), 1),
                  "host": active[i]["host"]} for i in sorted(active)],
        "pgs_per_osd": _stats([float(v) for v in before]),
        "score": spread,
        "balancer": {"active": bal.get("active"), "mode": bal.get("mode"),
                     "last_optimize": bal.get("last_optimize_started"),
                     "result": bal.get("optimize_result")} if bal else None,
        "upmap_possible": upmap_ok,
        "recommendations": recs,
        "expected": {"pgs_per_osd": _stats([float(v) for v in after]),
                     "score": _deviation(after_count, expected)},
    }


def _deviation(count: dict[int, int], expected: dict[int, float]) -> float:
    """Root-mean-square deviation from the weight-expected PG count, relative to the mean
    (0 = perfect; lower is better)."""
    if not expected:
        return 0.0
    mean = sum(expected.values()) / len(expected) or 1.0
    rms = math.sqrt(sum((count.get(i, 0) - e) ** 2 for i, e in expected.items()) / len(expected))
    return round(rms / mean, 4)


def _greedy_upmap(active: dict[int, dict[str, Any]], expected: dict[int, float], count: dict[int, int],
                  up_of: dict[str, list[int]], on: dict[int, list[str]], host_of: dict[int, str],
                  domains: dict[int, str], max_moves: int) -> list[tuple[str, int, int]]:
    """Move one replica at a time from the most over-full OSD to the most under-full eligible one
    (same root and class, not already in the PG, respecting host failure domains)."""
    moves: list[tuple[str, int, int]] = []
    moved: set[str] = set()
    dev = {i: count[i] - expected[i] for i in active}
    key = {i: (active[i]["root"], active[i]["class"]) for i in active}
    while len(moves) < max_moves:
        src = max(dev, key=dev.__getitem__)
        if dev[src] < 1.0:
            break
        cands = sorted((i for i in dev if key[i] == key[src] and dev[src] - dev[i] > 1.0),
                       key=dev.__getitem__)
        done = False
        for pgid in on[src]:
            if pgid in moved:
                continue
            dom = domains.get(int(pgid.split(".")[0]), "?")
            if dom not in ("osd", "host"):
                continue
            up = up_of[pgid]
            hosts = {host_of.get(o) for o in up if o != src}
            for dst in cands[:50]:
                if dst in up or (dom == "host" and host_of.get(dst) in hosts):
                    continue
                up_of[pgid] = [dst if o == src else o for o in up]
                on[dst].append(pgid)
                on[src].remove(pgid)
                count[src] -= 1
                count[dst] += 1
                dev[src] -= 1
                dev[dst] += 1
                moved.add(pgid)
                moves.append((pgid, src, dst))
                done = True
                break
            if done:
                break
        if not done:
            dev.pop(src)  # nothing movable off it
            if not dev:
                break
    return moves


def _pg_num_recs(dumps: dict[str, Any], n_osds: int) -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = []
    auto = dumps.get("autoscale") or []
    pools = {p["pool_name"]: p for p in dumps.get("pools") or []}
    for a in auto:
        if a.get("would_adjust") and a.get("pool_name") in pools:
            recs.append(_pg_num_rec(pools[a["pool_name"]], int(a["pg_num_final"]), "autoscaler"))
    if recs or not pools or not n_osds:
        return recs
    replicas = sum(int(p.get("pg_num", 0)) * int(p.get("size", 1)) for p in pools.values())
    per_osd = replicas / n_osds
    if per_osd < 30:
        df_pools = (dumps.get("df") or {}).get("pools", [])
        stored = {x["name"]: x.get("stats", {}).get("stored", 0) for x in df_pools}
        big = max(pools.values(), key=lambda p: (stored.get(p["pool_name"], 0), p.get("pg_num", 0)))
        new = int(big["pg_num"]) * 2
        while (replicas + (new - big["pg_num"]) * big["size"]) / n_osds < 30 and new < 4096:
            new *= 2
        recs.append(_pg_num_rec(big, new, f"{per_osd:.0f} PG replicas per OSD is under 30"))
    return recs


def _pg_num_rec(pool: dict[str, Any], new: int, why: str) -> dict[str, Any]:
    old = int(pool.get("pg_num", 0))
    gain = round(1 - math.sqrt(old / new), 2) if new > old > 0 else 0.0
    return {"kind": "pg_num", "pool": pool["pool_name"], "from": old, "to": new, "reason": why,
            "expected": f"about {100 * gain:.0f}% less PG-count spread" if gain > 0 else "fewer PGs",
            "command": f"ceph osd pool set {pool['pool_name']} pg_num {new}"}


# --- maintenance plan -----------------------------------------------------------------


def maintenance_plan(node: str, dumps: dict[str, Any]) -> dict[str, Any]:
    """Which OSDs of ``node`` can stop together, the PGs that would be degraded or inactive,
    the flags to set and the data movement to expect.

    A PG whose acting OSDs still up are already fewer than its pool's ``min_size`` (its only
    copies sit on down OSDs) is inactive before anything stops: it is reported once, as
    already inactive, and counted in no batch and in none of the degraded/inactive counts."""
    idx = tree_index(dumps["osd_tree"])
    if node not in idx["osds_of"]:
        raise BadInput(f"no CRUSH host {node!r}; hosts: {', '.join(idx['hosts']) or 'none'}")
    mine = sorted(idx["osds_of"][node])
    rows = {x["id"]: x for x in osd_rows(dumps)}
    down = {i for i, x in rows.items() if not x["up"]}
    pools = {int(p["pool_id"]): p for p in dumps.get("pools") or []}
    affected = []
    already: list[str] = []  # PGs inactive before anything stops
    already_on: set[int] = set()  # the down OSDs holding them
    for pg in dumps.get("pgs_brief") or []:
        acting = [o for o in (pg.get("acting") or pg.get("up") or []) if o >= 0]
        if set(acting) & set(mine):
            p = pools.get(int(pg["pgid"].split(".")[0]), {})
            live = [o for o in acting if o not in down]
            mn = int(p.get("min_size", 1))
            if len(live) < mn:
                already.append(pg["pgid"])
                already_on.update(o for o in acting if o in down)
                continue
            affected.append((pg["pgid"], live, mn, int(p.get("size", len(acting)))))

    def inactive_if(stop: set[int]) -> list[str]:
        return [pgid for pgid, live, mn, _ in affected if len([o for o in live if o not in stop]) < mn]

    batches: list[list[int]] = []
    left = [o for o in mine if o not in down]
    while left:
        batch: list[int] = []
        for o in list(left):
            if not inactive_if(set(batch) | {o}):
                batch.append(o)
        if not batch:  # even one alone makes PGs inactive
            batch = [left[0]]
        batches.append(batch)
        left = [o for o in left if o not in batch]
    everything = set(mine)
    inactive = inactive_if(everything)
    degraded = [pgid for pgid, live, mn, size in affected
                if pgid not in inactive and len([o for o in live if o not in everything]) < size]
    node_rows = [rows[i] for i in mine if i in rows]
    data = sum(x["used_bytes"] for x in node_rows)
    classes = {x["class"] for x in node_rows}
    others = [x for x in rows.values() if x["class"] in classes and x["id"] not in everything and x["in"]]
    tot = sum(x["size_bytes"] for x in others)
    used = sum(x["used_bytes"] for x in rows.values() if x["class"] in classes and x["in"])
    projected = round(100.0 * used / tot, 1) if tot else None
    r = ratios(dumps.get("osd_dump"))
    flags = ["noout"]
    notes = [f"set noout (or `ceph osd set-group noout {node}`) so the stopped OSDs are not marked "
             "out and no data moves; unset it when the node is back"]
    if already:
        where = "too few OSDs in their acting sets"
        if already_on:
            where = f"on down OSDs {', '.join(f'osd.{i}' for i in sorted(already_on))}"
        notes.append(f"{len(already)} PGs already inactive ({where}): no batch counts them and "
                     f"stopping OSDs of {node} does not change that; bring their OSDs back up for them")
    if inactive:
        notes.append(f"{len(inactive)} PGs would become inactive (I/O blocked) if all OSDs of {node} stop "
                     "together: stop them in the batches shown, or accept the outage")
    if projected is not None and projected >= 100 * r["nearfull"]:
        notes.append(f"if the OSDs were marked out, the rest would be {projected}% full "
                     f"(near-full at {100 * r['nearfull']:.0f}%): do not let them go out")
    return {
        "node": node, "osds": mine, "already_down": sorted(down & everything),
        "can_stop_together": not inactive,
        "batches": [{"osds": b, "inactive_pgs": len(inactive_if(set(b)))} for b in batches],
        "pgs_affected": len(affected) + len(already), "pgs_degraded": len(degraded),
        "pgs_inactive": len(inactive), "inactive_pgs": inactive[:50],
        "pgs_already_inactive": len(already), "already_inactive_pgs": already[:50],
        "already_inactive_on": sorted(already_on), "flags": flags,
        "data_movement": {"with_noout_bytes": 0, "without_noout_bytes": data,
                          "projected_utilization_if_out": projected},
        "notes": notes,
    }
