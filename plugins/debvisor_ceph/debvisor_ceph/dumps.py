"""The JSON dumps the analysis works on, fetched by name.

A *dump* is a dict ``{name: decoded JSON}``; the analysis functions in
:mod:`debvisor_ceph.analysis` take these and nothing else, so recorded dumps and the
synthetic 1,000-OSD dump of the benchmark exercise the same code as a live cluster.
"""

from __future__ import annotations

from typing import Any

from .client import Cluster
from .fileosd import CephCommandError

# name: (mon|mgr, command, optional)
COMMANDS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "status": ("mon", {"prefix": "status"}, False),
    "health": ("mon", {"prefix": "health", "detail": "detail"}, False),
    "osd_df": ("mon", {"prefix": "osd df"}, False),
    "osd_tree": ("mon", {"prefix": "osd tree"}, False),
    "osd_dump": ("mon", {"prefix": "osd dump"}, False),
    "crush_rules": ("mon", {"prefix": "osd crush rule dump"}, False),
    "df": ("mon", {"prefix": "df", "detail": "detail"}, False),
    "pools": ("mon", {"prefix": "osd pool ls", "detail": "detail"}, False),
    "pgs_brief": ("mgr", {"prefix": "pg dump", "dumpcontents": ["pgs_brief"]}, False),
    "balancer": ("mgr", {"prefix": "balancer status"}, True),
    "autoscale": ("mgr", {"prefix": "osd pool autoscale-status"}, True),
}


def fetch(cluster: Cluster, *names: str) -> dict[str, Any]:
    """Fetch the named dumps; optional ones (mgr modules) are None when unavailable."""
    out: dict[str, Any] = {}
    for name in names:
        target, cmd, optional = COMMANDS[name]
        args = {k: v for k, v in cmd.items() if k != "prefix"}
        try:
            fn = cluster.mon if target == "mon" else cluster.mgr
            out[name] = fn(cmd["prefix"], **args)
        except CephCommandError:
            if not optional:
                raise
            out[name] = None
    if "pgs_brief" in out:
        out["pgs_brief"] = pg_stats(out["pgs_brief"])
    return out


def pg_stats(raw: Any) -> list[dict[str, Any]]:
    """``pg dump pgs_brief`` is a list (older releases) or ``{"pg_stats": [...]}``."""
    if isinstance(raw, dict):
        return list(raw.get("pg_stats") or [])
    return list(raw or [])
