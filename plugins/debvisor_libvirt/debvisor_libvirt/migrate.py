"""`hv migrate VM TARGET`: pre-checks, downtime estimate, live migration with progress,
abort on Ctrl-C/timeout, post-migration validation and automatic migrate-back.

The client drives the migration (``virDomainMigrate3`` between two connections) and the
memory stream goes straight from QEMU to QEMU over ``tcp://MIGRATION_ADDRESS`` (plus
``VIR_MIGRATE_TLS`` with ``--tls`` / ``[hv.migration] tls = true``).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

from debvisor_core import log
from debvisor_core.context import Context
from debvisor_core.engine import Finding, Operation, Step
from debvisor_core.errors import StepFailed
from debvisor_core.statefile import read_json, update_json

from . import hvconfig
from .domains import devices, memory_kib
from .nodes import Node, NodeUnreachable, connect, lv, node
from .units import MIB, human_rate, parse_bandwidth

if TYPE_CHECKING:
    import libvirt

DEFAULT_LINK = "1Gbps"
COPY_FORMATS = ("qcow2", "raw")
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
    try:  # a copy being torn down can fail any call: it is not running
        dom = _lookup(conn, vm)
        return bool(dom is not None and dom.state()[0] == lv().VIR_DOMAIN_RUNNING)
    except lv().libvirtError:
        return False


def settled_side(sconn: libvirt.virConnect, dconn: libvirt.virConnect, vm: str,
                 timeout: float = 30.0) -> str | None:
    """Where ``vm`` runs once an aborted migration has settled: "source", "target" or None.

    An abort that lands during switch-over leaves both copies paused for a moment (libvirt
    then resumes the source, or finishes on the target), so poll until one side runs.
    """
    deadline = time.monotonic() + timeout
    while True:
        if _running(sconn, vm):
            return "source"
        if _running(dconn, vm):
            return "target"
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


# --- estimate -------------------------------------------------------------------------------


def estimate(mem_bytes: float, dirty_bps: float, bw_bps: float, limit_s: float,
             share: float = 1.0) -> dict[str, Any]:
    """Pre-copy model: the first pass sends the non-zero ``share`` of the RAM, each later
    pass what the guest dirtied during the previous one; QEMU switches over once the rest
    fits in ``limit_s`` at ``bw_bps``."""
    t = mem_bytes * share / bw_bps
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
            "dirty_bps": dirty_bps, "bandwidth_bps": bw_bps, "memory_bytes": mem_bytes,
            "nonzero_share": share}


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


def nonzero_share(dom: libvirt.virDomain, mem_bytes: int, samples: int = 256) -> float | None:
    """The share of the guest's RAM pages that are not all zeros (QEMU sends a zero page
    as a few header bytes, so only the rest costs bandwidth), from ``samples`` 64 KiB reads
    of guest-physical memory spread evenly over the RAM below 3 GiB (the part mapped at the
    same guest-physical addresses on every x86 machine type; ``virDomainMemoryPeek``,
    ~3 ms each); None if the hypervisor cannot read it."""
    libvirt = lv()
    chunk, page = 65536, 4096
    span = min(mem_bytes, 3 << 30)  # below the PCI hole on every x86 machine type
    step = max(span // samples, chunk)
    pages = nonzero = 0
    zero = bytes(page)
    try:
        for off in range(0, span - chunk + 1, step):
            buf = dom.memoryPeek(off, chunk, libvirt.VIR_MEMORY_PHYSICAL)
            for i in range(0, len(buf), page):
                pages += 1
                nonzero += buf[i:i + page] != zero
    except (libvirt.libvirtError, AttributeError):
        return None
    return nonzero / pages if pages else None


# --- preflight ------------------------------------------------------------------------------


def _host_uuid(conn: libvirt.virConnect) -> str | None:
    caps = ET.fromstring(conn.getCapabilities())
    return caps.findtext("host/uuid")


def same_host(sconn: libvirt.virConnect, dconn: libvirt.virConnect) -> bool:
    """Whether both connections reach one libvirt host. Host names first: getCapabilities
    (the host UUID) takes ~4 s on a daemon that has not probed QEMU yet, so it is asked only
    when the names agree, and of both daemons at once."""
    if sconn.getHostname() != dconn.getHostname():
        return False
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(_host_uuid, (sconn, dconn))
    return a == b


def _committed_vcpus(conn: libvirt.virConnect) -> int:
    return sum(d.info()[3] for d in conn.listAllDomains(lv().VIR_CONNECT_LIST_DOMAINS_ACTIVE))


def local_disks(src: Node, dst: Node, dconn: libvirt.virConnect, xml: str) -> list[dict[str, Any]]:
    """The VM's file/block disks the target cannot see (what ``--copy-storage`` copies):
    not network/pool volumes, not under a ``shared_storage`` prefix of both nodes, not a
    volume of the target's storage pools; read-only and shareable disks are never copied."""
    libvirt = lv()
    root = ET.fromstring(xml)
    fmt: dict[str | None, str] = {}
    for disk in root.iterfind("devices/disk"):
        tgt, drv = disk.find("target"), disk.find("driver")
        fmt[None if tgt is None else tgt.get("dev")] = (None if drv is None
                                                       else drv.get("type")) or "raw"
    out: list[dict[str, Any]] = []
    for d in devices(xml).disks:
        path = d["source"]
        if not path or d["protocol"] or d["type"] in ("network", "volume"):
            continue  # empty drive, rbd/iscsi/pool volumes: reachable by design
        if d["readonly"] or d["shareable"] or d["device"] in ("cdrom", "floppy"):
            continue  # libvirt never copies these; they must exist on the target
        shared = any(path.startswith(p.rstrip("/") + "/") for p in src.shared_storage) and any(
            path.startswith(p.rstrip("/") + "/") for p in dst.shared_storage)
        if not shared:
            try:
                dconn.storageVolLookupByPath(path)
                shared = True
            except libvirt.libvirtError:
                shared = False
        if not shared:
            out.append({"target": d["target"], "path": path, "format": fmt.get(d["target"], "raw")})
    return out


#: filesystems libvirt treats as shared (it refuses live migration of disks on others)
SHARED_FS = {"nfs", "nfs4", "cifs", "smb3", "glusterfs", "fuse.glusterfs", "ceph",
             "fuse.ceph-fuse", "gfs2", "ocfs2", "beegfs", "lustre", "gpfs", "fuse.quobyte"}
#: cluster filesystems: safe with any cache mode
CLUSTER_FS = {"gfs2", "ocfs2"}


def fs_type(path: str, mounts: str = "/proc/self/mounts") -> str | None:
    """The filesystem type of the mount that holds ``path`` on this host (None if unknown)."""
    best, kind = "", None
    try:
        with open(mounts) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        return None
    return kind


def shared_disk_findings(src: Node, dst: Node, xml: str) -> list[Finding]:
    """libvirt's own safety rule for disks we count as shared through ``shared_storage``:
    they must be on a shared filesystem, and with cache='none'/'directsync' unless it is a
    cluster filesystem. Checked where the disk's path is visible on this host."""
    out: list[Finding] = []
    root = ET.fromstring(xml)
    for disk in root.iterfind("devices/disk"):
        source, target, drv = disk.find("source"), disk.find("target"), disk.find("driver")
        path = None if source is None else (source.get("file") or source.get("dev"))
        if not path or disk.find("readonly") is not None or disk.find("shareable") is not None:
            continue
        if not any(path.startswith(p.rstrip("/") + "/") for p in src.shared_storage):
            continue
        if not os.path.exists(path):
            continue  # not visible here: libvirt will judge on the node itself
        dev = None if target is None else target.get("dev")
        kind = fs_type(os.path.realpath(path))
        cache = (None if drv is None else drv.get("cache")) or "default"
        if kind not in SHARED_FS:
            out.append(Finding("error", f"disk {dev} ({path}) is under shared_storage of {src.name}, "
                               f"but it sits on a local {kind or 'unknown'} filesystem, which "
                               "libvirt refuses to live-migrate; use --copy-storage or real "
                               "shared storage (NFS, CephFS, GFS2…)", "hv.migrate"))
        elif kind not in CLUSTER_FS and cache not in ("none", "directsync"):
            out.append(Finding("error", f"disk {dev} ({path}) on {kind} uses cache={cache}; "
                               "libvirt migrates disks on shared storage only with cache='none' "
                               "or 'directsync'", "hv.migrate"))
    return out


def storage_findings(ctx: Context, src: Node, dst: Node, dconn: libvirt.virConnect,
                     xml: str, copy_storage: bool) -> list[Finding]:
    out: list[Finding] = shared_disk_findings(src, dst, xml)
    for d in local_disks(src, dst, dconn, xml):
        where = f"disk {d['target']} ({d['path']})"
        if not copy_storage:
            out.append(Finding("error", f"{where} is not visible from {dst.name}; use shared "
                               "storage or --copy-storage", "hv.migrate"))
        elif d["format"] not in COPY_FORMATS:
            out.append(Finding("error", f"{where} is {d['format']}: --copy-storage handles "
                               f"{' and '.join(COPY_FORMATS)} images", "hv.migrate"))
        else:
            out.append(Finding("info", f"{where} will be copied to {dst.name}", "hv.migrate"))
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
    if same_host(sconn, dconn):
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
    cfg = hvconfig.table(ctx, "migration")
    reserve = int(hvconfig.number(ctx, "[hv.migration]", cfg, "memory_reserve_mib", 64)) * MIB
    free = dconn.getFreeMemory()
    if free < mem + reserve:
        findings.append(Finding("error", f"{dst.name} has {free // MIB} MiB free; {vm} needs "
                                f"{mem // MIB} MiB + {reserve // MIB} MiB reserve", "hv.migrate"))
    vcpus = dom.info()[3]
    host_cpus = dconn.getInfo()[2]
    ratio = hvconfig.number(ctx, "[hv.migration]", cfg, "cpu_overcommit", 4.0, minimum=0.1)
    committed = _committed_vcpus(dconn)
    if vcpus > host_cpus or committed + vcpus > host_cpus * ratio:
        findings.append(Finding("error", f"{dst.name} has {host_cpus} CPUs with {committed} vCPUs "
                                f"committed (overcommit {ratio:g}); {vm} needs {vcpus}",
                                "hv.migrate"))
    findings += storage_findings(ctx, src, dst, dconn, xml, bool(p.get("copy_storage")))
    # downtime estimate
    bw = float(p.get("bandwidth_bps") or parse_bandwidth(str(cfg.get("link_bandwidth", DEFAULT_LINK))))
    limit = p["max_downtime_ms"] / 1000
    rate = dirty_rate(dom, DIRTY_WINDOW_S)
    share = nonzero_share(dom, mem)
    est = estimate(mem, rate or 0.0, bw, limit, 1.0 if share is None else share)
    op.result["estimate"] = {**est, "dirty_rate_measured": rate is not None,
                             "nonzero_share_measured": share is not None}
    used = "" if share is None else f", {share * 100:.0f} % of it non-zero"
    msg = (f"estimate for {vm} ({mem // MIB} MiB{used}): downtime "
           f"~{est['downtime_s'] * 1000:.0f} ms "
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


def _finish_file(ctx: Context) -> Path:
    return ctx.plugin_state("hv") / "migration-finish.json"


def finish_overhead(ctx: Context, source: str) -> float | None:
    """Seconds from the switch-over to the end of the migration call for a migration from
    ``source``: libvirt's finish and confirm phases, dominated by stopping the source's QEMU
    (1.2-2 s for a TCG guest here, measured by ``destroy``). Learned from earlier
    migrations from ``source`` (smoothed); without any, the mean of the other nodes' (the
    same hypervisor build as a rule); None when no migration was ever measured."""
    data = read_json(_finish_file(ctx), {})
    if not isinstance(data, dict):
        return None
    known = {k: float(v) for k, v in data.items()
             if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 3600}
    if source in known:
        return known[source]
    return sum(known.values()) / len(known) if known else None


def learn_finish_overhead(ctx: Context, source: str, seconds: float) -> None:
    def change(data: dict[str, Any]) -> None:
        old = data.get(source)
        data[source] = round(seconds if not isinstance(old, int | float) else 0.5 * old + 0.5 * seconds, 3)

    update_json(_finish_file(ctx), change)


ZERO_PAGE_COST = 12  # bytes QEMU sends for an all-zero page (header + flag), measured
DIRTY_WINDOW_S = 1  # the period the pre-migration dirty rate is measured over (dirty_rate)


class EtaModel:
    """ETA of a live migration from jobStats samples.

    What is left to send is the non-zero part of the RAM not yet scanned plus what the
    guest dirties meanwhile. In the first pass: remaining non-zero bytes / rate, plus the
    pages dirtied meanwhile that the next pass resends — a working set, bounded by what
    the pre-migration measurement saw dirtied in its window. In later passes: remaining
    / (rate - dirty rate), QEMU's own dirty rate of the pass.

    - First pass: the non-zero bytes still to come are the RAM's non-zero total (the
      sampled ``share`` x the guest RAM it was sampled from, ``ram_bytes``; QEMU's other
      RAM blocks are taken as zero pages) minus the normal pages already sent
      (``memory_normal_bytes``); without a sample, the share of normal pages so far.
    - Later passes: ``memory_remaining`` is dirty pages only (non-zero).
    - Rate: ``memory_bps`` smoothed (EWMA); dirty rate: QEMU's ``memory_dirty_rate``
      (pages/s, known from the second pass) or the pre-migration measurement.
    - Plus ``finish_s``: libvirt's finish/confirm phases after the switch-over (the target
      resumes the guest, the source QEMU stops), learned from earlier migrations
      (:func:`finish_overhead`). When none was ever measured (None), the ETA is the
      switch-over's, and each point says so (``eta_to``).
    """

    def __init__(self, share: float | None = None, dirty_bps: float = 0.0,
                 alpha: float = 0.3, finish_s: float | None = 0.0,
                 ram_bytes: float | None = None) -> None:
        self.share, self.dirty_prior, self.alpha = share, dirty_bps, alpha
        #: the guest RAM the share was sampled from: QEMU's ``memory_total`` also counts
        #: its other RAM blocks (video RAM, ROMs: 16+ MiB, nearly all zero pages)
        self.ram_bytes = ram_bytes
        self.finish_s = finish_s  # switch-over to command end, learned (finish_overhead)
        self.bps: float | None = None

    def point(self, s: dict[str, Any]) -> dict[str, Any] | None:
        """% transferred, rate and ETA from one sample (None before the job starts)."""
        total = s.get("memory_total") or s.get("data_total")
        if not total or s.get("type", 0) == 0:
            return None
        remaining = s.get("data_remaining", s.get("memory_remaining", 0))
        mem_remaining = s.get("memory_remaining", remaining)
        disk_remaining = max(remaining - mem_remaining, 0)  # --copy-storage
        page = s.get("memory_page_size", 4096)
        raw_bps = float(s.get("memory_bps") or 0)
        if raw_bps > 0:
            self.bps = raw_bps if self.bps is None else (
                self.alpha * raw_bps + (1 - self.alpha) * self.bps)
        bps = self.bps or 0.0
        live_dirty = float(s.get("memory_dirty_rate") or 0) * page
        iteration = s.get("memory_iteration") or 1
        dirty = live_dirty if iteration > 1 else max(live_dirty, self.dirty_prior)
        scanned = max(total - remaining, 1)
        normal = float(s.get("memory_normal_bytes") or 0)
        if iteration > 1:
            to_send = float(mem_remaining)
        elif self.share is not None:
            sampled = min(self.ram_bytes, total) if self.ram_bytes else total
            to_send = max(self.share * sampled - normal, 0.0) + (
                (1 - self.share) * mem_remaining / page * ZERO_PAGE_COST)
            to_send = min(to_send, float(mem_remaining))
        else:  # no sample: assume the rest looks like what was scanned so far
            to_send = mem_remaining * min(1.0, normal / scanned) if normal else mem_remaining
        to_send += disk_remaining
        if iteration > 1:  # QEMU's own dirty rate of this pass: each pass resends the last's
            eta = to_send / (bps - dirty) if bps > dirty else None
        elif bps > 0:  # the first pass sends each page once; the next resends what was
            # dirtied meanwhile: the distinct pages of a working set, which the 1 s
            # measurement counted, not the rate times the whole pass
            first = to_send / bps
            eta = first + dirty * min(first, DIRTY_WINDOW_S) / bps
        else:
            eta = None
        if eta is not None:
            eta += self.finish_s or 0.0
        return {"pct": 100.0 * scanned / total, "done": scanned, "total": total,
                "bps": raw_bps, "eta_s": eta, "remaining": remaining,
                "eta_to": "switch-over" if self.finish_s is None else "end",
                "to_send": int(to_send), "dirty_bps": dirty, "iteration": iteration}


def progress_point(s: dict[str, Any]) -> dict[str, Any] | None:
    """One sample through a fresh :class:`EtaModel` (no prior knowledge)."""
    return EtaModel().point(s)


@dataclass
class MigrateVM(Step):
    """Live-migrate VM from SOURCE to TARGET (undo: migrate it back)."""

    TYPE = "hv.migrate"

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
        tls = ", TLS" if self.tls else ""
        return (f"live-migrate {self.vm}: {self.source} -> {self.target} (bandwidth {bw}, "
                f"max downtime {self.max_downtime_ms} ms, timeout {self.timeout_s:g}s{tls})")

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
        copy = [d["target"] for d in local_disks(src, dst, dconn, dom.XMLDesc(0))] \
            if self.copy_storage else []
        if copy:  # only these: shared disks must never be copied onto themselves
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = copy
        flags = _flags(persistent, bool(copy), self.tls)
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
            except BaseException as exc:  # noqa: BLE001 - reported by the caller, one sentence
                box["error"] = f"{type(exc).__name__}: {exc}"

        from debvisor_core.output import Progress

        est = (ctx.operation.result.get("estimate") or {}) if ctx.operation and not back else {}
        share = est.get("nonzero_share") if est.get("nonzero_share_measured") else None
        ram = memory_kib(dom.XMLDesc(0)) * 1024
        if share is None:
            share = nonzero_share(dom, ram)
        model = EtaModel(share, float(est.get("dirty_bps") or 0.0),
                         finish_s=finish_overhead(ctx, src.name), ram_bytes=ram)
        th = threading.Thread(target=run, daemon=True, name=f"migrate-{self.vm}")
        t0 = time.monotonic()
        samples: list[dict[str, Any]] = []
        th.start()
        label = f"{'migrate back' if back else 'migrate'} {self.vm} -> {dst.name}"
        try:
            with Progress(label, unit="bytes", every=2.0) as prog:
                while th.is_alive():
                    th.join(0.25)
                    point = model.point(_job(dom)) if th.is_alive() else None
                    if point:
                        point["t"] = round(time.monotonic() - t0, 3)
                        samples.append(point)
                        prog.update(point["done"], point["total"], eta=point["eta_s"],
                                    rate=point["bps"], note=f"pass {point['iteration']}" + (
                                        ", ETA to switch-over (stop time of the source not "
                                        "measured yet)" if model.finish_s is None else ""),
                                    extra={"pct": point["pct"], "dirty_bps": point["dirty_bps"],
                                           "iteration": point["iteration"],
                                           "remaining": point["remaining"],
                                           "phase": "migrate-back" if back else "migrate"})
                    if time.monotonic() - t0 > self.timeout_s and th.is_alive():
                        said = self._abort(dom, th)
                        side = settled_side(sconn, dconn, self.vm)
                        if side == "target":  # the abort came during switch-over, too late
                            raise StepFailed(f"migration of {self.vm} did not finish within "
                                             f"{self.timeout_s:g}s; the abort came too late, "
                                             f"it runs on {dst.name}{said}")
                        where = src.name if side == "source" else "neither node (check both)"
                        raise StepFailed(f"migration of {self.vm} did not finish within "
                                         f"{self.timeout_s:g}s; aborted, it still runs on {where}")
        except BaseException:  # Ctrl-C, SIGTERM, timeout: stop the job on the source
            self._abort(dom, th)
            raise
        if "error" in box:
            raise StepFailed(f"migration of {self.vm} to {dst.name} failed: {box['error']}")
        if box.get("dom") is None:
            raise StepFailed(f"migration of {self.vm} to {dst.name} ended without a result; "
                             f"check where it runs with `hvctl list`")
        elapsed = time.monotonic() - t0
        stats: dict[str, Any] = {}
        try:
            stats = dict(box["dom"].jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
        except libvirt.libvirtError:
            pass
        net_ms = stats.get("time_elapsed_net") or stats.get("time_elapsed") or elapsed * 1000
        finish = None
        if stats.get("time_elapsed"):  # job start (~t0) to the end of the transfer
            finish = max(elapsed - stats["time_elapsed"] / 1000, 0.0)
            try:
                learn_finish_overhead(ctx, src.name, finish)
            except OSError as exc:
                log.debug(f"cannot record the finish time: {exc}")
        return {
            "source": src.name, "target": dst.name, "total_s": round(elapsed, 3),
            "downtime_ms": stats.get("downtime"),
            "transferred_bytes": stats.get("memory_processed"),
            "avg_rate_bps": (stats.get("memory_processed") or 0) / max(net_ms / 1000, 1e-3),
            "iterations": stats.get("memory_iteration"),
            "transfer_s": round(stats["time_elapsed"] / 1000, 3) if stats.get("time_elapsed")
            else None,
            "finish_s": None if finish is None else round(finish, 3),
            "finish_prior_s": model.finish_s,
            "nonzero_share": share,
            "progress": samples[-600:],
        }

    def _abort(self, dom: libvirt.virDomain, th: threading.Thread) -> str:
        """Cancel the job and wait for the migration thread, asking again every 2 s; return
        what libvirt said, for an error that must explain why the migration went on.

        One abortJob is not always enough: libvirt refuses it while the job is being set up
        on the target, and an abort that lands between two phases can be lost. Repeating it
        is harmless (QEMU ignores a cancel with no migration running).
        """
        if getattr(self, "_aborted", False):
            return ""
        self._aborted = True
        errors: list[str] = []
        calls: list[float] = []  # how long each abortJob call took, in seconds
        log.warn(f"aborting the migration of {self.vm}")
        deadline = time.monotonic() + 60
        while th.is_alive() and time.monotonic() < deadline:
            t = time.monotonic()
            try:
                dom.abortJob()
            except lv().libvirtError as exc:
                msg = exc.get_error_message()
                log.debug(f"abortJob: {msg}")  # reported only if the abort fails
                if msg not in errors:
                    errors.append(msg)
            calls.append(time.monotonic() - t)
            th.join(min(2.0, max(deadline - time.monotonic(), 0)))
        said = f"libvirt refused the abort: {'; '.join(errors)}" if errors else \
            "libvirt accepted the abort"
        asked = f", asked {len(calls)} times, the longest call took {max(calls):.1f}s" \
            if calls else ""
        return f" ({said}{asked})"

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
        log.info(f"validating {self.vm}: running on {self.target}, gone from {self.source}, "
                 "guest CPU advancing")
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
        side = settled_side(sconn, dconn, self.vm)
        if side is None and sdom is not None and _active(sconn, self.vm) \
                and not _active(dconn, self.vm):  # a cancelled switch-over left it paused
            log.warn(f"resuming the paused {self.vm} on {self.source}")
            sdom.resume()
            side = settled_side(sconn, dconn, self.vm, timeout=5)
        if side == "source" and not _running(dconn, self.vm):
            return
        if not _running(dconn, self.vm):
            raise StepFailed(f"{self.vm} runs neither on {self.source} nor on {self.target}")
        log.warn(f"migrating {self.vm} back to {self.source}")
        # no time limit going back: an undo that gives up halfway helps nobody (Ctrl-C still
        # aborts it, and the operation stays rollback-incomplete)
        back = MigrateVM(self.vm, self.target, self.source, self.bandwidth_mib,
                         self.max_downtime_ms, math.inf, self.copy_storage, self.tls)
        back._migrate(ctx, dst, src, record.get("persistent", True), back=True)
        if not _running(sconn, self.vm):
            raise StepFailed(f"{self.vm} is not running on {self.source} after migrating back")


# --- --copy-storage: empty images on the target -----------------------------------------


@contextmanager
def dir_pool(conn: libvirt.virConnect, directory: str, *, build: bool = False,
             remove_dir: bool = False) -> Iterator[tuple[libvirt.virStoragePool, bool]]:
    """A started storage pool for ``directory`` on ``conn``: the node's own pool if one has
    that target path, else a temporary ``dir`` pool that is removed afterwards (the files
    stay). ``build`` creates a missing directory (yields ``built=True``); ``remove_dir``
    deletes the (empty) directory when the temporary pool goes."""
    libvirt = lv()
    try:
        own = conn.storagePoolLookupByTargetPath(directory)
    except libvirt.libvirtError:
        own = None
    if own is not None:
        started = not own.isActive()
        if started:
            own.create(0)
        own.refresh(0)
        try:
            yield own, False
        finally:
            if started:
                own.destroy()
        return
    name = "dv-migrate-" + hashlib.sha256(directory.encode()).hexdigest()[:12]
    try:  # a leftover of an interrupted run
        old = conn.storagePoolLookupByName(name)
        if old.isActive():
            old.destroy()
        old.undefine()
    except libvirt.libvirtError:
        pass
    pool = conn.storagePoolDefineXML(
        f"<pool type='dir'><name>{name}</name><target><path>{escape(directory)}</path>"
        "</target></pool>", 0)
    built = False
    try:
        try:
            pool.create(0)
        except libvirt.libvirtError:
            if not build:
                raise
            pool.build(0)
            built = True
            pool.create(0)
        yield pool, built
    finally:
        if pool.isActive():
            pool.destroy()
        if remove_dir:
            try:
                pool.delete(0)
            except libvirt.libvirtError as exc:
                log.debug(f"rmdir {directory}: {exc.get_error_message()}")
        pool.undefine()


def _gone(conn: libvirt.virConnect, directory: str, disks: list[dict[str, Any]]) -> bool:
    """True when none of ``disks`` exists in ``directory`` on ``conn``'s node (a directory
    that cannot even be opened as a pool holds none)."""
    try:
        with dir_pool(conn, directory) as (pool, _):
            return all(_vol(pool, d["name"]) is None for d in disks)
    except lv().libvirtError as exc:  # a missing directory holds nothing
        return "No such file or directory" in (exc.get_error_message() or "")


def storage_locks(target: str, directories: list[str]) -> list[str]:
    """Lock names for the target-side directories ``--copy-storage`` fills: the temporary
    pool of :func:`dir_pool` is per node and directory, whatever the VM."""
    return [f"hv.node.{target}.storage.{d}" for d in sorted(set(directories))]


def _vol(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return pool.storageVolLookupByName(name)
    except lv().libvirtError:
        return None


@dataclass
class PrecreateDisks(Step):
    """For ``--copy-storage``: empty images of the VM's node-local disks on the target,
    same virtual size and format (libvirt 9 creates them only inside a storage pool)."""

    TYPE = "hv.migrate.precreate-disks"

    vm: str
    source: str
    target: str
    ORDER = 40
    NAME = "PrecreateDisks"

    def describe(self, ctx: Context) -> str:
        return (f"create on {self.target} empty images for {self.vm}'s disks that "
                f"{self.target} cannot see (same size and format; the migration copies them)")

    def check(self, ctx: Context) -> None:
        node(ctx, self.source)
        node(ctx, self.target)

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        """Which disks to create (path, format, size) and which already exist there."""
        src, dst = node(ctx, self.source), node(ctx, self.target)
        sconn, dconn = connect(src), connect(dst)
        dom = sconn.lookupByName(self.vm)
        disks = []
        for d in local_disks(src, dst, dconn, dom.XMLDesc(0)):
            d["capacity"] = int(dom.blockInfo(d["path"])[0])
            directory, _, name = d["path"].rpartition("/")
            d["dir"], d["name"] = directory or "/", name
            disks.append(d)
        existing: list[str] = []
        for directory in sorted({d["dir"] for d in disks}):
            try:
                with dir_pool(dconn, directory) as (pool, _):
                    existing += [d["path"] for d in disks
                                 if d["dir"] == directory and _vol(pool, d["name"]) is not None]
            except lv().libvirtError:
                pass  # the directory does not exist there: nothing exists
        return {"disks": disks, "existing": existing}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        if prior["existing"]:
            raise StepFailed(f"{self.target} already has {', '.join(prior['existing'])}; "
                             "remove it there first (or declare the storage shared)")
        dconn = connect(node(ctx, self.target))
        built: list[str] = []
        for directory in sorted({d["dir"] for d in prior["disks"]}):
            with dir_pool(dconn, directory, build=True) as (pool, was_built):
                if was_built:
                    built.append(directory)
                for d in (d for d in prior["disks"] if d["dir"] == directory):
                    pool.createXML(
                        f"<volume><name>{escape(d['name'])}</name>"
                        f"<capacity unit='bytes'>{d['capacity']}</capacity>"
                        f"<target><format type={quoteattr(d['format'])}/></target></volume>", 0)
        return {"built_dirs": built}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        dconn = connect(node(ctx, self.target))
        for d in record["disks"]:
            with dir_pool(dconn, d["dir"]) as (pool, _):
                vol = _vol(pool, d["name"])
                if vol is None or vol.info()[1] != d["capacity"]:
                    raise StepFailed(f"{d['path']} was not created on {self.target} with "
                                     f"{d['capacity']} bytes")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Delete the images this step created (never those that existed before, never
        while the VM is defined on the target)."""
        dconn = connect(node(ctx, self.target))
        if _lookup(dconn, self.vm) is not None:
            raise StepFailed(f"{self.vm} is still defined on {self.target}; not deleting its "
                             "disk images there")
        built = set(record.get("built_dirs", []))
        failed: list[str] = []
        for directory in sorted({d["dir"] for d in record.get("disks", [])}):
            mine = [d for d in record["disks"]
                    if d["dir"] == directory and d["path"] not in record.get("existing", [])]
            try:
                with dir_pool(dconn, directory, remove_dir=directory in built) as (pool, _):
                    for d in mine:
                        vol = _vol(pool, d["name"])
                        if vol is not None:
                            vol.delete(0)
            except lv().libvirtError as exc:
                if not mine or _gone(dconn, directory, mine):
                    log.debug(f"undo PrecreateDisks {directory}: {exc.get_error_message()}")
                    continue  # nothing of ours is left there (e.g. the directory is gone)
                failed.append(f"{directory}: {exc.get_error_message()}")
        if failed:
            raise StepFailed(f"cannot delete the disk images created for {self.vm} on "
                             f"{self.target} ({'; '.join(failed)}); delete them there by hand")
