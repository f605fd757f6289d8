"""`hv migrate VM TARGET`: pre-checks, downtime estimate, live migration with progress,
abort on Ctrl-C/timeout, post-migration validation and automatic migrate-back.

The client drives the migration (``virDomainMigrate3`` between two connections) and the
memory stream goes straight from QEMU to QEMU over ``tcp://MIGRATION_ADDRESS`` (plus
``VIR_MIGRATE_TLS`` with ``--tls`` / ``[hv.migration] tls = true``).
"""

from __future__ import annotations

import re
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from debvisor_core import log
from debvisor_core.context import Context
from debvisor_core.engine import Finding, Operation, Step
from debvisor_core.errors import StepFailed

from .domains import devices, memory_kib
from .nodes import Node, NodeUnreachable, connect, lv, node
from .units import MIB, human_rate, parse_bandwidth

if TYPE_CHECKING:
    import libvirt

DEFAULT_LINK = "1Gbps"
SWITCHOVER_OVERHEAD_S = 0.02  # device state + switch-over, measured ~15 ms on the lab


def migration_uri(n: Node) -> str:
    """``tcp://ADDRESS`` of node ``n``: its migration_address, else the URI's host."""
    addr = n.migration_address
    if not addr:
        m = re.match(r"[a-z0-9+]+://(?:[^@/]*@)?([^/:?]+)", n.uri)
        addr = m.group(1) if m else None
    if not addr:
        raise StepFailed(f"node {n.name} has no migration_address and its URI names no host")
    return f"tcp://{addr}"


def _flags(persistent: bool, copy_storage: bool, tls: bool) -> int:
    libvirt = lv()
    flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
    if persistent:
        flags |= libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    if copy_storage:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
    if tls:
        flags |= libvirt.VIR_MIGRATE_TLS
    return int(flags)


def _lookup(conn: libvirt.virConnect, vm: str) -> libvirt.virDomain | None:
    libvirt = lv()
    try:
        return conn.lookupByName(vm)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _active(conn: libvirt.virConnect, vm: str) -> bool:
    dom = _lookup(conn, vm)
    return bool(dom is not None and dom.isActive())


def _running(conn: libvirt.virConnect, vm: str) -> bool:
    """Active and not paused (an incoming or switched-over copy is paused)."""
    dom = _lookup(conn, vm)
    try:
        return bool(dom is not None and dom.state()[0] == lv().VIR_DOMAIN_RUNNING)
    except lv().libvirtError:
        return False


# --- estimate -------------------------------------------------------------------------------


def estimate(mem_bytes: float, dirty_bps: float, bw_bps: float, limit_s: float) -> dict[str, Any]:
    """Pre-copy model: each pass sends what the guest dirtied during the previous one;
    QEMU switches over once the rest fits in ``limit_s`` at ``bw_bps``."""
    t = mem_bytes / bw_bps
    total = t
    converges = False
    for _ in range(30):
        t = dirty_bps * t / bw_bps
        if t + SWITCHOVER_OVERHEAD_S <= limit_s:
            converges = True
            break
        total += t
        if dirty_bps >= bw_bps:
            break
    downtime = t + SWITCHOVER_OVERHEAD_S
    return {"downtime_s": downtime, "total_s": total + t, "converges": converges,
            "dirty_bps": dirty_bps, "bandwidth_bps": bw_bps, "memory_bytes": mem_bytes}


def dirty_rate(dom: libvirt.virDomain, seconds: int = 1) -> float | None:
    """The guest's memory dirty rate in bytes/s (QEMU page sampling), None if unavailable."""
    libvirt = lv()
    try:
        dom.startDirtyRateCalc(seconds, 0)
        deadline = time.monotonic() + seconds + 3
        time.sleep(seconds)  # QEMU measures over exactly this period
        while time.monotonic() < deadline:
            stats = dict(dom.connect().domainListGetStats(
                [dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE, 0)[0][1])
            if stats.get("dirtyrate.calc_status") == 2:  # measured
                return float(stats.get("dirtyrate.megabytes_per_second", 0)) * MIB
            time.sleep(0.1)
    except (libvirt.libvirtError, AttributeError, IndexError):
        return None
    return None


# --- preflight ------------------------------------------------------------------------------


def _host_uuid(conn: libvirt.virConnect) -> str | None:
    caps = ET.fromstring(conn.getCapabilities())
    return caps.findtext("host/uuid")


def _committed_vcpus(conn: libvirt.virConnect) -> int:
    return sum(d.info()[3] for d in conn.listAllDomains(lv().VIR_CONNECT_LIST_DOMAINS_ACTIVE))


def storage_findings(ctx: Context, src: Node, dst: Node, dconn: libvirt.virConnect,
                     xml: str, copy_storage: bool) -> list[Finding]:
    libvirt = lv()
    out: list[Finding] = []
    for d in devices(xml).disks:
        path = d["source"]
        if not path or d["device"] in ("cdrom", "floppy") and not path:
            continue
        if d["protocol"] or d["type"] in ("network", "volume"):
            continue  # rbd/iscsi/pool volumes: reachable by design
        shared = any(path.startswith(p.rstrip("/") + "/") for p in src.shared_storage) and any(
            path.startswith(p.rstrip("/") + "/") for p in dst.shared_storage)
        if not shared:
            try:
                dconn.storageVolLookupByPath(path)
                shared = True
            except libvirt.libvirtError:
                shared = False
        if shared:
            continue
        if copy_storage:
            out.append(Finding("info", f"disk {d['target']} ({path}) will be copied to {dst.name}",
                               "hv.migrate"))
        else:
            out.append(Finding("error", f"disk {d['target']} ({path}) is not visible from "
                               f"{dst.name}; use shared storage or --copy-storage", "hv.migrate"))
    return out


def preflight(ctx: Context, op: Operation) -> list[Finding]:
    """Every pre-check of a migration as findings (errors refuse it), plus the estimate."""
    p = op.params
    vm, src, dst = p["vm"], node(ctx, p["source"]), node(ctx, p["target"])
    findings: list[Finding] = []
    conns: dict[str, Any] = {}
    for n in (src, dst):
        try:
            c = connect(n)
            c.getInfo()
            conns[n.name] = c
        except (NodeUnreachable, lv().libvirtError) as exc:
            findings.append(Finding("error", getattr(exc, "message", str(exc)), "hv.migrate"))
    if len(conns) < 2:
        return findings
    sconn, dconn = conns[src.name], conns[dst.name]
    if sconn.getURI().startswith("test:") or dconn.getURI().startswith("test:"):
        return [Finding("error", "the test:/// driver cannot live-migrate", "hv.migrate")]
    if _host_uuid(sconn) == _host_uuid(dconn):
        findings.append(Finding("error", f"{src.name} and {dst.name} are the same libvirt host "
                                "(same host UUID)", "hv.migrate"))
    dom = _lookup(sconn, vm)
    if dom is None or not dom.isActive():
        findings.append(Finding("error", f"{vm} is not running on {src.name}: live migration "
                                "needs a running VM", "hv.migrate"))
        return findings
    if _lookup(dconn, vm) is not None:
        findings.append(Finding("error", f"{dst.name} already has a domain named {vm}; "
                                "remove it first", "hv.migrate"))
    xml = dom.XMLDesc(0)
    mem = memory_kib(xml) * 1024
    cfg = ctx.section("hv").get("migration") or {}
    reserve = int(cfg.get("memory_reserve_mib", 64)) * MIB
    free = dconn.getFreeMemory()
    if free < mem + reserve:
        findings.append(Finding("error", f"{dst.name} has {free // MIB} MiB free; {vm} needs "
                                f"{mem // MIB} MiB + {reserve // MIB} MiB reserve", "hv.migrate"))
    vcpus = dom.info()[3]
    host_cpus = dconn.getInfo()[2]
    ratio = float(cfg.get("cpu_overcommit", 4.0))
    committed = _committed_vcpus(dconn)
    if vcpus > host_cpus or committed + vcpus > host_cpus * ratio:
        findings.append(Finding("error", f"{dst.name} has {host_cpus} CPUs with {committed} vCPUs "
                                f"committed (overcommit {ratio:g}); {vm} needs {vcpus}",
                                "hv.migrate"))
    findings += storage_findings(ctx, src, dst, dconn, xml, bool(p.get("copy_storage")))
    # downtime estimate
    bw = float(p.get("bandwidth_bps") or parse_bandwidth(str(cfg.get("link_bandwidth", DEFAULT_LINK))))
    limit = p["max_downtime_ms"] / 1000
    rate = dirty_rate(dom)
    est = estimate(mem, rate or 0.0, bw, limit)
    op.result["estimate"] = {**est, "dirty_rate_measured": rate is not None}
    msg = (f"estimate for {vm} ({mem // MIB} MiB): downtime ~{est['downtime_s'] * 1000:.0f} ms "
           f"(limit {p['max_downtime_ms']} ms), total ~{est['total_s']:.1f} s at {human_rate(bw)}, "
           f"dirty rate {'unknown' if rate is None else human_rate(rate)}")
    if est["downtime_s"] > limit or not est["converges"]:
        findings.append(Finding("warn", msg + " - exceeds the limit: the migration may not "
                                "converge before --timeout", "hv.migrate"))
    else:
        findings.append(Finding("info", msg, "hv.migrate"))
    return findings


# --- the step -------------------------------------------------------------------------------


def _job(dom: libvirt.virDomain) -> dict[str, Any]:
    try:
        return dict(dom.jobStats(0))
    except lv().libvirtError:
        return {}


def progress_point(s: dict[str, Any]) -> dict[str, Any] | None:
    """% transferred, rate and ETA from one jobStats sample (None before the job starts)."""
    total = s.get("memory_total") or s.get("data_total")
    if not total or s.get("type", 0) == 0:
        return None
    remaining = s.get("data_remaining", s.get("memory_remaining", 0))
    page = s.get("memory_page_size", 4096)
    bps = float(s.get("memory_bps") or 0)
    dirty = float(s.get("memory_dirty_rate") or 0) * page
    scanned = max(total - remaining, 1)
    # zero pages cost almost nothing: scale the rest by the share of real data seen so far
    normal = s.get("memory_normal_bytes")
    share = min(1.0, normal / scanned) if normal and s.get("memory_iteration", 1) <= 1 else 1.0
    to_send = remaining * share
    eta = to_send / (bps - dirty) if bps > dirty else None
    return {"pct": 100.0 * scanned / total, "done": scanned, "total": total, "bps": bps,
            "eta_s": eta,
            "remaining": remaining, "dirty_bps": dirty, "iteration": s.get("memory_iteration")}


@dataclass
class MigrateVM(Step):
    """Live-migrate VM from SOURCE to TARGET (undo: migrate it back)."""

    vm: str
    source: str
    target: str
    bandwidth_mib: int | None = None
    max_downtime_ms: int = 300
    timeout_s: float = 600.0
    copy_storage: bool = False
    tls: bool = False
    NAME = "MigrateVM"

    def describe(self, ctx: Context) -> str:
        bw = f"{self.bandwidth_mib} MiB/s" if self.bandwidth_mib else "unlimited"
        return (f"live-migrate {self.vm}: {self.source} -> {self.target} (bandwidth {bw}, "
                f"max downtime {self.max_downtime_ms} ms, timeout {self.timeout_s:g}s)")

    def check(self, ctx: Context) -> None:
        node(ctx, self.source)
        node(ctx, self.target)

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        dom = connect(node(ctx, self.source)).lookupByName(self.vm)
        return {"persistent": bool(dom.isPersistent())}

    def _migrate(self, ctx: Context, src: Node, dst: Node, persistent: bool,
                 *, back: bool = False) -> dict[str, Any]:
        """Run one migration src -> dst with progress; abort on timeout or interrupt."""
        libvirt = lv()
        sconn, dconn = connect(src), connect(dst)
        dom = sconn.lookupByName(self.vm)
        params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI: migration_uri(dst)}
        if self.bandwidth_mib:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(self.bandwidth_mib)
        flags = _flags(persistent, self.copy_storage, self.tls)
        try:
            dom.migrateSetMaxDowntime(int(self.max_downtime_ms), 0)
        except libvirt.libvirtError as exc:
            log.warn(f"cannot set max downtime: {exc.get_error_message()}")
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["dom"] = dom.migrate3(dconn, params, flags)
            except libvirt.libvirtError as exc:
                box["error"] = exc.get_error_message()

        from debvisor_core.output import Progress

        th = threading.Thread(target=run, daemon=True, name=f"migrate-{self.vm}")
        t0 = time.monotonic()
        samples: list[dict[str, Any]] = []
        th.start()
        label = f"{'migrate back' if back else 'migrate'} {self.vm} -> {dst.name}"
        try:
            with Progress(label, unit="bytes", every=2.0) as prog:
                while th.is_alive():
                    th.join(0.25)
                    point = progress_point(_job(dom)) if th.is_alive() else None
                    if point:
                        point["t"] = round(time.monotonic() - t0, 3)
                        samples.append(point)
                        prog.update(point["done"], point["total"], eta=point["eta_s"],
                                    rate=point["bps"], note=f"pass {point['iteration']}")
                    if time.monotonic() - t0 > self.timeout_s and th.is_alive():
                        self._abort(dom, th)
                        where = src.name if _running(sconn, self.vm) else "?"
                        raise StepFailed(f"migration of {self.vm} did not finish within "
                                         f"{self.timeout_s:g}s; aborted, it still runs on {where}")
        except BaseException:  # Ctrl-C, SIGTERM, timeout: stop the job on the source
            self._abort(dom, th)
            raise
        if "error" in box:
            raise StepFailed(f"migration of {self.vm} to {dst.name} failed: {box['error']}")
        elapsed = time.monotonic() - t0
        stats: dict[str, Any] = {}
        try:
            stats = dict(box["dom"].jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
        except libvirt.libvirtError:
            pass
        net_ms = stats.get("time_elapsed_net") or stats.get("time_elapsed") or elapsed * 1000
        return {
            "source": src.name, "target": dst.name, "total_s": round(elapsed, 3),
            "downtime_ms": stats.get("downtime"),
            "transferred_bytes": stats.get("memory_processed"),
            "avg_rate_bps": (stats.get("memory_processed") or 0) / max(net_ms / 1000, 1e-3),
            "iterations": stats.get("memory_iteration"),
            "progress": samples[-600:],
        }

    def _abort(self, dom: libvirt.virDomain, th: threading.Thread) -> None:
        if getattr(self, "_aborted", False):
            return
        self._aborted = True
        log.warn(f"aborting the migration of {self.vm}")
        try:
            dom.abortJob()
        except lv().libvirtError as exc:
            log.debug(f"abortJob: {exc.get_error_message()}")
        th.join(60)

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        result = self._migrate(ctx, node(ctx, self.source), node(ctx, self.target),
                               prior.get("persistent", True))
        sink = getattr(self, "sink", None)
        if sink is not None:
            sink["migration"] = result
        return {"migrated": True}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        """Running on the target, gone from the source, guest CPU still advancing."""
        libvirt = lv()
        sconn, dconn = connect(node(ctx, self.source)), connect(node(ctx, self.target))
        dom = _lookup(dconn, self.vm)
        if dom is None or dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            raise StepFailed(f"{self.vm} is not running on {self.target} after the migration")
        if _active(sconn, self.vm):
            raise StepFailed(f"{self.vm} is still active on {self.source} after the migration")
        if record.get("persistent") and _lookup(sconn, self.vm) is not None:
            raise StepFailed(f"{self.vm} is still defined on {self.source} after the migration")
        cpu0 = dom.info()[4]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.5)  # the guest needs time to run
            if dom.info()[4] > cpu0:
                return
        raise StepFailed(f"{self.vm} does not run on {self.target}: its CPU time stopped advancing")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Bring the VM back to the source, running (idempotent).

        Before switch-over the source copy runs and the target's is a paused incoming
        domain; after it the target runs and the source copy is paused or gone.
        """
        src, dst = node(ctx, self.source), node(ctx, self.target)
        sconn, dconn = connect(src), connect(dst)
        sdom = _lookup(sconn, self.vm)
        if sdom is not None and sdom.isActive():
            try:
                sdom.abortJob()  # an interrupted migration may still be running
            except lv().libvirtError:
                pass
        if _running(sconn, self.vm) and not _running(dconn, self.vm):
            return
        if not _running(dconn, self.vm):
            raise StepFailed(f"{self.vm} runs neither on {self.source} nor on {self.target}")
        log.warn(f"migrating {self.vm} back to {self.source}")
        back = MigrateVM(self.vm, self.target, self.source, self.bandwidth_mib,
                         self.max_downtime_ms, self.timeout_s, self.copy_storage, self.tls)
        back._migrate(ctx, dst, src, record.get("persistent", True), back=True)
        if not _running(sconn, self.vm):
            raise StepFailed(f"{self.vm} is not running on {self.source} after migrating back")
