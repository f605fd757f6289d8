"""Health checks as alerts: severity, detail and a remediation hint per check code (pure)."""

from __future__ import annotations

from typing import Any

DOCS = "https://docs.ceph.com/en/latest/rados/operations/health-checks/#"

HINTS: dict[str, str] = {
    "OSD_DOWN": "start the OSD daemons (systemctl start ceph-osd@ID on their host); see "
                "`debvisor ceph osd list` for what to do per OSD",
    "OSD_HOST_DOWN": "the whole host is down: check its power/network; set noout if it is planned",
    "OSD_ROOT_DOWN": "every OSD under a CRUSH root is down: check the hosts and the network",
    "OSD_OUT_OF_ORDER_FULL": "fix the ratios: nearfull < backfillfull < full",
    "OSD_NEARFULL": "add capacity, delete data or reweight the fullest OSDs "
                    "(`debvisor ceph osd list` gives values)",
    "OSD_BACKFILLFULL": "backfill onto these OSDs is refused: add capacity or reweight them now",
    "OSD_FULL": "writes are blocked: add OSDs, delete data, or raise the full ratio slightly "
                "(ceph osd set-full-ratio) only to free space",
    "POOL_NEARFULL": "the pool nears its quota or the cluster's capacity: raise the quota or add capacity",
    "POOL_FULL": "the pool hit its quota or the cluster is full: raise the quota or add capacity",
    "PG_AVAILABILITY": "some PGs are inactive (I/O blocked): bring their OSDs back up "
                       "(ceph pg dump_stuck inactive)",
    "PG_DEGRADED": "some data has fewer copies than wanted: recovery runs on its own once OSDs are up",
    "PG_RECOVERY_FULL": "recovery stopped because OSDs are full: add capacity",
    "PG_BACKFILL_FULL": "backfill stopped because OSDs are backfill-full: add capacity or reweight",
    "PG_DAMAGED": "scrub found inconsistencies: ceph pg repair PGID after checking the OSD logs",
    "OSD_SCRUB_ERRORS": "scrub errors: list them (rados list-inconsistent-pg POOL) and repair",
    "OSD_TOO_MANY_REPAIRS": "an OSD needed many repairs: check its disk (smartctl)",
    "OBJECT_UNFOUND": "objects are unfound: bring back the OSDs that may hold them before marking lost",
    "PG_NOT_SCRUBBED": "scrubs are late: check scrub settings and OSD load",
    "PG_NOT_DEEP_SCRUBBED": "deep scrubs are late: check osd_deep_scrub_interval and OSD load",
    "PG_SLOW_SNAP_TRIMMING": "snapshot trimming is behind: check OSD load",
    "TOO_FEW_PGS": "raise pg_num (see `debvisor ceph pg balance`) or enable the autoscaler",
    "TOO_MANY_PGS": "too many PGs per OSD: add OSDs or merge PGs (lower pg_num)",
    "POOL_TOO_FEW_PGS": "raise the pool's pg_num to the autoscaler's value or enable autoscaling",
    "POOL_TOO_MANY_PGS": "lower the pool's pg_num to the autoscaler's value",
    "POOL_APP_NOT_ENABLED": "tag the pool with its application: ceph osd pool application enable POOL rbd",
    "POOL_NO_REDUNDANCY": "the pool keeps one copy only: ceph osd pool set POOL size 3",
    "SMALLER_PGP_NUM": "set pgp_num to pg_num so the new PGs are placed",
    "MANY_OBJECTS_PER_PG": "raise the pool's pg_num",
    "MON_DOWN": "a monitor is out of quorum: start it and check its clock and network",
    "MON_CLOCK_SKEW": "mon clocks disagree: fix NTP/chrony on the mon hosts",
    "MON_DISK_LOW": "free space on the mon's data disk (/var/lib/ceph)",
    "MON_DISK_CRIT": "the mon's disk is almost full: free space now or the mon stops",
    "MON_DISK_BIG": "compact the mon store (ceph tell mon.ID compact)",
    "MGR_MODULE_ERROR": "a mgr module failed: ceph mgr module ls; restart the mgr",
    "MGR_MODULE_DEPENDENCY": "a mgr module lacks a dependency: install it or disable the module",
    "OSDMAP_FLAGS": "cluster flags are set (e.g. noout): unset them when maintenance is over "
                    "(`debvisor ceph noout unset`)",
    "OSD_FLAGS": "per-OSD or per-host flags are set: ceph osd unset-group FLAG WHO when done",
    "SLOW_OPS": "requests are blocked: check the OSDs named in the detail (disk, network)",
    "RECENT_CRASH": "daemons crashed recently: ceph crash ls; archive them once understood",
    "OSD_SLOW_PING_TIME_BACK": "slow heartbeats on the cluster network: check NICs and switches",
    "OSD_SLOW_PING_TIME_FRONT": "slow heartbeats on the public network: check NICs and switches",
    "BLUESTORE_SPILLOVER": "BlueFS spilled onto the slow device: give the OSD a larger DB device",
    "BLUESTORE_DISK_SIZE_MISMATCH": "recreate the OSD: its disk size does not match BlueStore's",
    "DEVICE_HEALTH": "a disk is predicted to fail: mark its OSD out and replace it",
    "DEVICE_HEALTH_IN_USE": "a failing disk still holds data: wait for it to drain, then replace it",
    "LARGE_OMAP_OBJECTS": "reshard the bucket index or trim the large omap objects",
    "AUTH_INSECURE_GLOBAL_ID_RECLAIM": "update clients, then ceph config set mon "
                                       "auth_allow_insecure_global_id_reclaim false",
    "AUTH_INSECURE_GLOBAL_ID_RECLAIM_ALLOWED": "once clients are updated: ceph config set mon "
                                               "auth_allow_insecure_global_id_reclaim false",
    "OSD_NO_DOWN_OUT_INTERVAL": "set mon_osd_down_out_interval so down OSDs get marked out",
}

SEVERITY = {"HEALTH_ERR": "critical", "HEALTH_WARN": "warning"}


def alerts(health: dict[str, Any], *, all_details: bool = False, max_lines: int = 5,
           noout: dict[str, Any] | None = None) -> dict[str, Any]:
    """Critical and warning checks of ``health detail`` with a hint each; muted ones marked.
    ``noout`` (``{"set", "reason"}``) adds the stored noout reason to the OSDMAP_FLAGS row."""
    rows = []
    noout = noout or {"set": False, "reason": None}
    for code, c in (health.get("checks") or {}).items():
        lines = [d.get("message", "") for d in c.get("detail", [])]
        shown = lines if all_details else lines[:max_lines]
        rows.append({
            "code": code, "severity": SEVERITY.get(c.get("severity", ""), "info"),
            "summary": c.get("summary", {}).get("message", ""),
            "count": c.get("summary", {}).get("count", 0), "muted": bool(c.get("muted")),
            "detail": shown, "detail_more": len(lines) - len(shown),
            "hint": HINTS.get(code, "see the Ceph health-check reference"), "doc": DOCS + code,
        })
        if code == "OSDMAP_FLAGS" and noout["set"]:
            rows[-1]["noout_reason"] = noout["reason"]
    order = {"critical": 0, "warning": 1, "info": 2}
    rows.sort(key=lambda r: (r["muted"], order[r["severity"]], r["code"]))
    return {
        "status": health.get("status", "HEALTH_UNKNOWN"),
        "alerts": rows,
        "counts": {k: sum(1 for r in rows if r["severity"] == k and not r["muted"]) for k in order},
        "muted": [m.get("code") for m in health.get("mutes", [])],
        "noout": noout,
    }
