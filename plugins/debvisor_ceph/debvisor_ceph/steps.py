"""Steps that change the cluster: OSD flags (noout), upmap items, reweights, pg_num.

Each step connects on its own (steps are rebuilt from the journal by later processes)
and undoes exactly what it changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from debvisor_core import log
from debvisor_core.context import Context
from debvisor_core.engine import Step
from debvisor_core.errors import StepFailed

from .client import session

REASON_KEY = "debvisor/noout-reason"


def _flags(ctx: Context) -> set[str]:
    with session(ctx) as c:
        return set(c.mon("osd dump").get("flags_set") or [])


@dataclass
class OsdFlag(Step):
    """Set or unset a cluster-wide OSD flag (noout, norebalance…); undo restores it."""

    TYPE = "ceph.osd-flag"
    NAME = "OsdFlag"
    flag: str
    value: bool
    reason: str = ""

    def describe(self, ctx: Context) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"{'set' if self.value else 'unset'} the Ceph {self.flag} flag{why}"

    def check(self, ctx: Context) -> None:
        _flags(ctx)  # mons reachable

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        with session(ctx) as c:
            was = self.flag in set(c.mon("osd dump").get("flags_set") or [])
            reason = _get_reason(c) if self.flag == "noout" else None
        return {"was_set": was, "old_reason": reason}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        with session(ctx) as c:
            c.mon_do("osd set" if self.value else "osd unset", key=self.flag)
            if self.flag == "noout":
                _set_reason(c, self.reason if self.value else None)
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        if (self.flag in _flags(ctx)) != self.value:
            raise StepFailed(f"the {self.flag} flag did not {'get set' if self.value else 'clear'}")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        with session(ctx) as c:
            c.mon_do("osd set" if record["was_set"] else "osd unset", key=self.flag)
            if self.flag == "noout":
                _set_reason(c, record.get("old_reason"))


def _get_reason(c: Any) -> str | None:
    ret, out, _ = c._run("mon", "config-key get", {"key": REASON_KEY}, allow=(-2,), fmt=False)
    return out if ret == 0 else None


def noout_state(c: Any, checks: dict[str, Any]) -> dict[str, Any]:
    """``{"set", "reason"}`` of the noout flag; ``checks`` are the health checks, so the
    osd dump and config-key reads happen only while OSDMAP_FLAGS is raised."""
    if "OSDMAP_FLAGS" not in checks:
        return {"set": False, "reason": None}
    if "noout" not in set(c.mon("osd dump").get("flags_set") or []):
        return {"set": False, "reason": None}
    return {"set": True, "reason": _get_reason(c)}


def noout_line(state: dict[str, Any]) -> str:
    """The human line shown under OSDMAP_FLAGS (status, alerts)."""
    if state.get("reason"):
        return f"noout reason: {state['reason']}"
    return "noout reason: none recorded (set outside `debvisor ceph noout set --reason`)"


def _set_reason(c: Any, reason: str | None) -> None:
    if reason:
        c.mon_do("config-key set", key=REASON_KEY, val=reason)
    else:
        c._run("mon", "config-key rm", {"key": REASON_KEY}, allow=(-2,), fmt=False)


@dataclass
class UpgradeNoout(OsdFlag):
    """Contributed to cluster upgrades: noout before the owner's steps (ORDER 10)."""

    TYPE = "ceph.noout.set"
    NAME = "CephNooutSet"
    ORDER = 10


@dataclass
class UpgradeNooutRelease(Step):
    """Contributed to cluster upgrades: unset noout after the owner's steps (ORDER 90),
    unless it was already set before the upgrade began (then it stays)."""

    TYPE = "ceph.noout.unset"
    NAME = "CephNooutUnset"
    ORDER = 90
    reason: str = ""

    def describe(self, ctx: Context) -> str:
        return "unset the Ceph noout flag set for this upgrade"

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        with session(ctx) as c:
            return {"reason": _get_reason(c)}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        if prior.get("reason") != self.reason:  # someone else's noout: leave it
            return {"unset": False}
        with session(ctx) as c:
            c.mon_do("osd unset", key="noout")
            _set_reason(c, None)
        return {"unset": True}

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        if record.get("unset"):
            with session(ctx) as c:
                c.mon_do("osd set", key="noout")
                _set_reason(c, record.get("reason"))


def maintenance_noout(ctx: Context, reason: str) -> list[Step] | None:
    """`maintenance enable --drain` on a node with OSDs: noout while it is down for
    maintenance (undone by `maintenance disable`); nothing when noout is already set (its
    setter's reason stays) or the node has no OSD."""
    import socket

    from .analysis import tree_index
    from .client import Settings

    s = Settings.from_ctx(ctx)
    if not s.configured():
        return None
    host = s.host or socket.gethostname().split(".")[0]
    with session(ctx) as c:
        if "noout" in set(c.mon("osd dump").get("flags_set") or []):
            log.info(f"ceph: noout is already set ({_get_reason(c) or 'no reason'}): left as is")
            return None
        osds = tree_index(c.mon("osd tree"))["osds_of"].get(host, [])
    if not osds:
        return None
    return [UpgradeNoout("noout", True, f"debvisor maintenance of {host}: {reason}")]


def _upmap_items(c: Any, pgid: str) -> list[list[int]]:
    for u in c.mon("osd dump").get("pg_upmap_items", []):
        if u["pgid"] == pgid:
            return [[m["from"], m["to"]] for m in u.get("mappings", [])]
    return []


def _set_upmap(c: Any, pgid: str, maps: list[list[int]]) -> None:
    if maps:
        c.mon_do("osd pg-upmap-items", pgid=pgid, id=[x for m in maps for x in m])
    else:
        c._run("mon", "osd rm-pg-upmap-items", {"pgid": pgid}, fmt=False)


@dataclass
class PgUpmap(Step):
    """Map one replica of a PG from one OSD to another (pg-upmap-items); undo restores the
    PG's previous upmap items."""

    TYPE = "ceph.pg-upmap"

    pgid: str
    mappings: list[list[int]]
    src: int
    dst: int

    def describe(self, ctx: Context) -> str:
        return f"move a replica of PG {self.pgid} from osd.{self.src} to osd.{self.dst} (upmap)"

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        with session(ctx) as c:
            return {"old": _upmap_items(c, self.pgid)}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        with session(ctx) as c:
            _set_upmap(c, self.pgid, self.mappings)
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        with session(ctx) as c:
            if _upmap_items(c, self.pgid) != self.mappings:
                raise StepFailed(f"the upmap of PG {self.pgid} was not accepted by the mons")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        with session(ctx) as c:
            _set_upmap(c, self.pgid, record["old"])


@dataclass
class OsdReweight(Step):
    """Set an OSD's reweight (0..1); undo restores the old value."""

    TYPE = "ceph.osd-reweight"

    osd: int
    reweight: float

    def describe(self, ctx: Context) -> str:
        return f"reweight osd.{self.osd} to {self.reweight}"

    def _current(self, c: Any) -> float:
        for o in c.mon("osd dump").get("osds", []):
            if int(o["osd"]) == self.osd:
                return float(o["weight"])
        raise StepFailed(f"osd.{self.osd} does not exist")

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        with session(ctx) as c:
            return {"old": self._current(c)}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        with session(ctx) as c:
            c.mon_do("osd reweight", id=self.osd, weight=float(self.reweight))
        return {}

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        with session(ctx) as c:
            c.mon_do("osd reweight", id=self.osd, weight=float(record["old"]))


@dataclass
class PoolPgNum(Step):
    """Set a pool's pg_num; undo sets the old value back (Ceph merges PGs again)."""

    TYPE = "ceph.pool-pg-num"

    pool: str
    pg_num: int

    def describe(self, ctx: Context) -> str:
        return f"set pg_num of pool {self.pool} to {self.pg_num}"

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        with session(ctx) as c:
            return {"old": int(c.mon("osd pool get", pool=self.pool, var="pg_num")["pg_num"])}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        with session(ctx) as c:
            c.mon_do("osd pool set", pool=self.pool, var="pg_num", val=str(self.pg_num))
        return {}

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        with session(ctx) as c:
            c.mon_do("osd pool set", pool=self.pool, var="pg_num", val=str(record["old"]))


def wait(pred: Any, timeout: float, what: str, every: float = 0.5) -> None:
    """Poll ``pred`` until true or raise StepFailed naming ``what``."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise StepFailed(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


@dataclass
class OkToStopGate(Step):
    """Contributed to the start of each batch of a rolling upgrade: the OSDs of the batch's
    nodes (CRUSH host ``[cluster.nodes.NAME] ceph_host``, default NAME) must be ok to stop
    by the mgr's `osd ok-to-stop`, asked again every few seconds for up to ``wait_s``
    (recovery may finish meanwhile). Not ok: the step fails, so the batch does not start
    and the upgrade pauses there. Reads only: nothing to undo."""

    TYPE = "ceph.ok-to-stop"
    NAME = "CephOkToStop"
    ORDER = 5
    hosts: list[str]
    wait_s: float = 300.0

    def describe(self, ctx: Context) -> str:
        return (f"Ceph: the OSDs of {', '.join(self.hosts)} are ok to stop (ok-to-stop, "
                f"waiting up to {self.wait_s:g}s)")

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from .analysis import tree_index

        deadline = time.monotonic() + self.wait_s
        while True:
            with session(ctx) as c:
                idx = tree_index(c.mon("osd tree"))
                osds = sorted(i for h in self.hosts for i in idx["osds_of"].get(h, []))
                if not osds:
                    return {"osds": [], "ok_to_stop": True}
                ret, out, err = c.mgr_raw("osd ok-to-stop", (-11, -16),
                                          ids=[str(i) for i in osds])
            out = out or {}
            if ret == 0:
                return {"osds": osds, "ok_to_stop": True}
            if time.monotonic() >= deadline:
                inactive = out.get("bad_become_inactive") or []
                why = (f"{len(inactive)} PG(s) would become inactive ({', '.join(inactive[:5])})"
                       if inactive else (err.strip() or f"the mgr said {ret}"))
                raise StepFailed(f"Ceph: osd.{', osd.'.join(map(str, osds))} on "
                                 f"{', '.join(self.hosts)} are not ok to stop: {why}; let "
                                 f"recovery finish (ceph status), then `debvisor ops resume`")
            log.info(f"Ceph: the OSDs of {', '.join(self.hosts)} are not ok to stop yet; "
                     f"asking again")
            time.sleep(min(5.0, max(deadline - time.monotonic(), 0.1)))


def ok_to_stop_gates(ctx: Context, nodes: tuple[str, ...]) -> list[Step]:
    """The gate of a rolling upgrade's batch (``debvisor_phase_steps``)."""
    from debvisor_core.settings import Section

    inventory = ctx.section("cluster").get("nodes") or {}
    hosts = []
    for n in nodes:
        conf = inventory.get(n) if isinstance(inventory, dict) else None
        sec = Section.at(ctx, f"[cluster.nodes.{n}]", conf if isinstance(conf, dict) else {})
        hosts.append(sec.string("ceph_host") or n)
    wait = Section.of(ctx, "ceph").sub("upgrade").number("ok_to_stop_wait", 300.0, minimum=0,
                                                         unit="s")
    return [OkToStopGate(hosts, wait)]
