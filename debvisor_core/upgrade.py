"""Before an upgrade: the pve8to9-style checklist (`debvisor upgrade check`) and the package
changes `apt-get -s dist-upgrade` predicts (``--diff``), changing nothing.

The node is read through ``[upgrade] root`` (default ``/``: a test bed or a mounted node
image points it elsewhere; apt then runs with ``-o Dir=ROOT``), the running kernel
through ``[upgrade] running_kernel_file`` (default ``/proc/sys/kernel/osrelease``: in a
namespace node `uname -r` shows the host's kernel, a bind mount over this file does not)
and the boot's identity through ``[upgrade] boot_id_file`` (default
``/proc/sys/kernel/random/boot_id``); ``[upgrade] reboot_command`` (default
``["systemctl", "reboot"]``) reboots it.
Checks are contributed by plugins through the ``debvisor_upgrade_checks`` hook; a check's
status is pass, warn, fail or skip.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fnmatch
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DebvisorError
from .health import CheckResult, HealthCheck
from .model import Step
from .settings import Section

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context

#: the checker's statuses, best first
ORDER = {"skip": 0, "pass": 1, "warn": 2, "fail": 3}
_INST = re.compile(r"^Inst (\S+)(?: \[([^\]]+)\])? \((\S+) (.*?)(?: \[([^\]]+)\])?\)")
_REMV = re.compile(r"^(?:Remv|Purg) (\S+)(?: \[([^\]]+)\])?")
_SUMMARY = re.compile(r"^(\d+) upgraded, (\d+) newly installed, (\d+) to remove and (\d+) not "
                      r"upgraded")


def passed(summary: str, /, **details: Any) -> CheckResult:
    return CheckResult("pass", summary, details)


def warned(summary: str, /, **details: Any) -> CheckResult:
    return CheckResult("warn", summary, details)


def failed(summary: str, /, **details: Any) -> CheckResult:
    return CheckResult("fail", summary, details)


def skipped(summary: str, /, **details: Any) -> CheckResult:
    return CheckResult("skip", summary, details)


@dataclass
class Node:
    """The node being checked: its root directory and where its running kernel is read."""

    root: Path
    running_kernel_file: Path
    min_free_gib: float
    boot_id_file: Path = Path("/proc/sys/kernel/random/boot_id")
    reboot_command: tuple[str, ...] = ("systemctl", "reboot")
    ignore_services: tuple[str, ...] = ()

    @classmethod
    def of(cls, ctx: Context) -> Node:
        s = Section.of(ctx, "upgrade")
        return cls(Path(s.string("root") or "/"),
                   Path(s.string("running_kernel_file") or "/proc/sys/kernel/osrelease"),
                   s.number("min_free_gib", 5.0, minimum=0, unit="GiB"),
                   Path(s.string("boot_id_file") or "/proc/sys/kernel/random/boot_id"),
                   tuple(s.strings("reboot_command") or ("systemctl", "reboot")),
                   tuple(s.strings("ignore_services")))

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def apt(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``apt-get ARGS`` against this node's root, in the C locale."""
        argv = ["apt-get"]
        if self.root != Path("/"):  # dpkg installs into the root too (its scripts chrooted)
            argv += ["-o", f"Dir={self.root}",
                     "-o", f"Dir::State::status={self.path('var/lib/dpkg/status')}",
                     "-o", f"DPkg::Options::=--root={self.root}",
                     "-o", f"DPkg::Options::=--admindir={self.path('var/lib/dpkg')}"]
        env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        try:
            return subprocess.run([*argv, *args], capture_output=True, text=True,  # noqa: S603
                                  timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise DebvisorError("apt-get is not installed: not a Debian node?") from None
        except subprocess.TimeoutExpired:
            raise DebvisorError(f"apt-get {' '.join(args)} did not finish within "
                                f"{timeout:g}s") from None


# -- the package changes ---------------------------------------------------------------------
def parse_simulation(text: str) -> dict[str, Any]:
    """``apt-get -s dist-upgrade`` output (C locale) as {upgrade, install, remove, kept_back,
    summary, kernel, reboot_expected}."""
    upgrade, install, remove, kept = [], [], [], []
    summary: dict[str, int] = {}
    in_kept = False
    for line in text.splitlines():
        if line.startswith("The following packages have been kept back:"):
            in_kept = True
            continue
        if in_kept:
            if line.startswith("  "):
                kept += line.split()
                continue
            in_kept = False
        if m := _INST.match(line):
            name, old, new, origin = m.group(1), m.group(2), m.group(3), m.group(4)
            entry = {"name": name, "to": new, "origin": origin}
            if old:
                upgrade.append({**entry, "from": old})
            else:
                install.append(entry)
        elif m := _REMV.match(line):
            remove.append({"name": m.group(1), "version": m.group(2)})
        elif m := _SUMMARY.match(line):
            summary = dict(zip(("upgraded", "installed", "removed", "not_upgraded"),
                               map(int, m.groups()), strict=True))
    kernel = [p["name"] for p in install + upgrade if p["name"].startswith("linux-image-")]
    return {"upgrade": upgrade, "install": install, "remove": remove, "kept_back": kept,
            "summary": summary, "kernel": kernel, "reboot_expected": bool(kernel)}


def simulate(node: Node) -> dict[str, Any]:
    """What a dist-upgrade would change, from apt's own simulation (nothing changes)."""
    res = node.apt("-s", "-q", "dist-upgrade")
    if res.returncode != 0:
        why = " ".join(ln for ln in res.stderr.splitlines() if ln.startswith("E:"))[:400]
        raise DebvisorError(f"apt-get -s dist-upgrade failed: {why or res.stderr.strip()[:400]}")
    return parse_simulation(res.stdout)


def diff_text(sim: dict[str, Any]) -> str:
    lines = [f"  upgrade  {p['name']} {p['from']} -> {p['to']}" for p in sim["upgrade"]]
    lines += [f"  install  {p['name']} {p['to']}" for p in sim["install"]]
    lines += [f"  remove   {p['name']} {p['version'] or ''}".rstrip() for p in sim["remove"]]
    lines += [f"  kept     {name} (kept back)" for name in sim["kept_back"]]
    s = sim["summary"]
    head = (f"package changes: {s.get('upgraded', 0)} upgraded, {s.get('installed', 0)} new, "
            f"{s.get('removed', 0)} removed, {len(sim['kept_back'])} kept back"
            + ("; a new kernel: reboot expected" if sim["reboot_expected"] else ""))
    return "\n".join([head, *lines])


# -- kernels ---------------------------------------------------------------------------------
def version_key(v: str) -> tuple[Any, ...]:
    """A natural sort key (digits as numbers), like ``sort -V`` and GRUB's default order."""
    return tuple((0, int(x), "") if x.isdigit() else (1, 0, x) for x in re.findall(r"\d+|\D+", v))


def installed_kernels(node: Node) -> list[str]:
    """Release strings of /boot/vmlinuz-* (regular files only), oldest first."""
    boot = node.path("boot")
    names = [p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*") if p.is_file()] \
        if boot.is_dir() else []
    return sorted(names, key=version_key)


def running_kernel(node: Node) -> str:
    try:
        return node.running_kernel_file.read_text().strip()
    except OSError:
        return os.uname().release


def boot_state(node: Node) -> dict[str, Any]:
    """This boot: its id, the running kernel, the newest installed one, and whether a reboot
    is needed (the newest is not the running one: Debian's kernel packages do not create
    /run/reboot-required)."""
    try:
        boot_id = node.boot_id_file.read_text().strip()
    except OSError as exc:
        raise DebvisorError(f"cannot read the boot id from {node.boot_id_file}: "
                            f"{exc.strerror}") from None
    running, kernels = running_kernel(node), installed_kernels(node)
    newest = kernels[-1] if kernels else running
    return {"boot_id": boot_id, "running_kernel": running, "newest_kernel": newest,
            "reboot_required": newest != running, "kernels": kernels,
            "services": _without(running_services(), node.ignore_services)}


def _without(names: list[str] | None, globs: tuple[str, ...]) -> list[str] | None:
    if names is None:
        return None
    return [n for n in names if not any(fnmatch.fnmatchcase(n, g) for g in globs)]


def _systemctl(*args: str) -> set[str] | None:
    """The unit names ``systemctl ARGS`` lists (first column), None if it failed."""
    try:
        res = subprocess.run(["systemctl", *args, "--no-legend", "--plain",  # noqa: S603
                              "--no-pager"],
                             capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    return {ln.split()[0] for ln in res.stdout.splitlines() if ln.strip()}


def running_services() -> list[str] | None:
    """The services running on this machine, sorted (None when systemd cannot say):
    systemd's running service units that are enabled, when systemd is the init; otherwise
    the names of the processes init started — children of PID 1 in its session, not
    processes that became its children when their parent died
    (daemons that detached into sessions of their own come and go with whatever started
    them: they would make the comparison before and after a reboot noise)."""
    if Path("/run/systemd/system").is_dir():
        running = _systemctl("list-units", "--type=service", "--state=running")
        enabled = _systemctl("list-unit-files", "--type=service", "--state=enabled")
        if running is None or enabled is None:
            return None
        # enabled ones only: a unit started on demand (systemd-hostnamed...) comes and goes
        return sorted(u for u in running
                      if u in enabled or (u.partition("@")[0] + "@.service") in enabled)
    procs = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        close = text.rindex(")")
        fields = text[close + 2:].split()  # after comm: state, ppid, pgrp, session
        procs[stat.parent.name] = (text[text.index("(") + 1:close], fields[1], fields[3])
    init_session = procs.get("1", ("", "", None))[2]
    return sorted({comm for comm, ppid, session in procs.values()
                   if ppid == "1" and session == init_session})


def services_diff(before: list[str] | None, after: list[str] | None
                  ) -> dict[str, list[str]] | None:
    """What stopped and what started between two :func:`running_services` snapshots (None
    when either is unknown)."""
    if before is None or after is None:
        return None
    return {"stopped": sorted(set(before) - set(after)), "started": sorted(set(after) - set(before))}


# -- the core's checks -------------------------------------------------------------------------
def check_disk(ctx: Context) -> CheckResult:
    node = Node.of(ctx)
    st = os.statvfs(node.root)
    free = st.f_bavail * st.f_frsize / 2**30
    details = {"path": str(node.root), "free_gib": round(free, 2)}
    if free < 1:
        return failed(f"{free:.2f} GiB free on {node.root}: an upgrade needs room to unpack",
                      **details)
    if free < node.min_free_gib:
        return warned(f"only {free:.1f} GiB free on {node.root} (under "
                      f"{node.min_free_gib:g} GiB)", **details)
    return passed(f"{free:.1f} GiB free on {node.root}", **details)


def _suites(node: Node) -> list[str]:
    """Every suite the apt sources name (one-line and deb822 formats)."""
    found: list[str] = []
    d = node.path("etc/apt")
    files = [d / "sources.list", *sorted((d / "sources.list.d").glob("*.list"))] \
        if d.is_dir() else []
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            words = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] in ("deb", "deb-src"):
                found.append(words[2])
    for f in sorted((d / "sources.list.d").glob("*.sources")) if d.is_dir() else []:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            if re.search(r"^Enabled:\s*no\s*$", stanza, re.M | re.I):
                continue
            m = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if m:
                found += m.group(1).split()
    return found


def check_sources(ctx: Context) -> CheckResult:
    node = Node.of(ctx)
    suites = _suites(node)
    if not suites:
        return failed(f"no apt source in {node.path('etc/apt')}: nothing to upgrade from")
    codenames = sorted({re.split(r"[-/]", s)[0] for s in suites
                        if s not in ("./", "/") and not s.endswith("/")})
    details = {"suites": sorted(set(suites)), "codenames": codenames}
    if len(codenames) > 1:
        return warned(f"the apt sources mix releases: {', '.join(codenames)}", **details)
    return passed(f"apt sources: {', '.join(sorted(set(suites)))}", **details)


def check_kernel(ctx: Context) -> CheckResult:
    node = Node.of(ctx)
    running, kernels = running_kernel(node), installed_kernels(node)
    details = {"running": running, "installed": kernels}
    if not kernels:
        return skipped(f"no kernel image in {node.path('boot')}", **details)
    newest = kernels[-1]
    if running == newest:
        return passed(f"running the newest installed kernel, {running}", **details)
    if running not in kernels:
        return warned(f"the running kernel {running} is not installed any more (newest: "
                      f"{newest}): reboot before upgrading", **details)
    return warned(f"kernel {newest} is installed but {running} is running: a reboot is "
                  f"pending; reboot before upgrading", **details)


class _Timex(ctypes.Structure):
    """struct timex (adjtimex(2)), enough of it to read the clock's state."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("constant", ctypes.c_long),
                ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long),
                ("tick", ctypes.c_long), ("_rest", ctypes.c_byte * 128)]


STA_UNSYNC = 0x0040
TIME_ERROR = 5


def clock_state() -> dict[str, Any]:
    """The kernel's NTP state (adjtimex with modes 0 reads, changes nothing)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    tx = _Timex()
    state = libc.adjtimex(ctypes.byref(tx))
    if state < 0:
        raise OSError(ctypes.get_errno(), "adjtimex failed")
    return {"state": state, "synchronized": state != TIME_ERROR and not tx.status & STA_UNSYNC,
            "status": tx.status, "maxerror_us": tx.maxerror, "esterror_us": tx.esterror}


def check_time(ctx: Context) -> CheckResult:
    st = clock_state()
    if st["synchronized"]:
        return passed(f"the clock is synchronized (estimated error {st['esterror_us']} us)", **st)
    return warned("the clock is not synchronized by NTP (kernel state TIME_ERROR/STA_UNSYNC): "
                  "Ceph and TLS need agreeing clocks; run chrony or systemd-timesyncd", **st)


def dpkg_status(node: Node) -> list[dict[str, str]]:
    """dpkg's status file as records: name, version, want (install/hold/…), state
    (installed, half-configured, …)."""
    try:
        text = node.path("var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return []
    out = []
    for stanza in text.split("\n\n"):
        name = re.search(r"^Package:\s*(\S+)", stanza, re.M)
        status = re.search(r"^Status:\s*(\S+) \S+ (\S+)", stanza, re.M)
        version = re.search(r"^Version:\s*(\S+)", stanza, re.M)
        if name and status:
            out.append({"name": name.group(1), "want": status.group(1),
                        "state": status.group(2), "version": version.group(1) if version else ""})
    return out


def held_packages(node: Node) -> list[str]:
    return sorted(p["name"] for p in dpkg_status(node) if p["want"] == "hold")


def installed(node: Node) -> dict[str, str]:
    """Package -> version of what dpkg lists as installed."""
    return {p["name"]: p["version"] for p in dpkg_status(node)
            if p["state"] == "installed" and p["version"]}


def unsettled(node: Node) -> list[str]:
    """Packages dpkg left half-installed or unconfigured."""
    return [f"{p['name']} ({p['state']})" for p in dpkg_status(node)
            if p["state"] not in ("installed", "not-installed", "config-files")]


def changes(before: dict[str, str], after: dict[str, str]) -> dict[str, Any]:
    """What moved between two package listings."""
    return {"upgraded": [{"name": n, "from": before[n], "to": after[n]}
                         for n in sorted(before) if n in after and after[n] != before[n]],
            "installed": [{"name": n, "version": after[n]} for n in sorted(after)
                          if n not in before],
            "removed": [{"name": n, "version": before[n]} for n in sorted(before)
                        if n not in after]}


def check_holds(ctx: Context) -> CheckResult:
    held = held_packages(Node.of(ctx))
    if held:
        return warned(f"{len(held)} package(s) on hold will not be upgraded: {', '.join(held)}",
                      held=held)
    return passed("no package on hold")


def check_apt(ctx: Context) -> CheckResult:
    try:
        sim = simulate(Node.of(ctx))
    except DebvisorError as exc:
        return failed(str(exc))
    s = sim["summary"]
    details = {k: sim[k] for k in ("summary", "kernel", "kept_back")} | \
        {"remove": [p["name"] for p in sim["remove"]]}
    what = (f"{s.get('upgraded', 0)} to upgrade, {s.get('installed', 0)} new, "
            f"{s.get('removed', 0)} to remove")
    if sim["remove"]:
        return warned(f"{what}: the upgrade removes {', '.join(p['name'] for p in sim['remove'])}",
                      **details)
    if sim["kept_back"]:
        return warned(f"{what}; kept back: {', '.join(sim['kept_back'])}", **details)
    return passed(what + ("; a new kernel (reboot expected)" if sim["kernel"] else ""), **details)


def check_zfs(ctx: Context) -> CheckResult:
    node = Node.of(ctx)
    used = Path("/sys/module/zfs").exists() if node.root == Path("/") else False
    used = used or any(node.path(p).exists() for p in ("sbin/zpool", "usr/sbin/zpool"))
    if not used:
        return skipped("ZFS is not used on this node")
    kernels = installed_kernels(node)
    if not kernels:
        return skipped("no kernel image to check the ZFS module of")
    newest = kernels[-1]
    mods = node.path(f"lib/modules/{newest}")
    found = [str(p) for p in mods.rglob("zfs.ko*")] if mods.is_dir() else []
    if found:
        return passed(f"the ZFS module is built for kernel {newest}", modules=found)
    return failed(f"ZFS is used but no zfs module is built for kernel {newest} (DKMS): the "
                  f"node would boot without its pools", kernel=newest)


def check_operations(ctx: Context) -> CheckResult:
    from . import journal

    stuck = [f"{st.id} ({st.kind}, {st.effective_status})" for st in journal.all_ops(ctx.state_dir)
             if st.effective_status in journal.BLOCKING]
    if stuck:
        return failed(f"unfinished operations: {', '.join(stuck)}; resume or roll them back first",
                      operations=stuck)
    return passed("no unfinished operation in the journal")


def checklist(ctx: Context) -> dict[str, Any]:
    """Every installed plugin's upgrade checks, run (the report `upgrade check` shows)."""
    from .health import collect, run_checks

    return run_checks(ctx, collect(ctx, "debvisor_upgrade_checks", failed="fail"), order=ORDER,
                      failed="fail")


def core_checks() -> list[HealthCheck]:
    return [HealthCheck("core.disk", check_disk, timeout=10),
            HealthCheck("core.apt-sources", check_sources, timeout=10),
            HealthCheck("core.apt-upgrade", check_apt, timeout=120),
            HealthCheck("core.held-packages", check_holds, timeout=10),
            HealthCheck("core.kernel", check_kernel, timeout=10),
            HealthCheck("core.time-sync", check_time, timeout=10),
            HealthCheck("core.zfs-dkms", check_zfs, timeout=30),
            HealthCheck("core.operations", check_operations, timeout=10)]


# -- the upgrade of this node (`debvisor upgrade run`) -------------------------------------------
def _apt_ok(res: subprocess.CompletedProcess[str], what: str) -> None:
    from .errors import StepFailed

    if res.returncode != 0:
        errors = [ln for ln in (res.stderr + res.stdout).splitlines()
                  if ln.startswith(("E:", "dpkg: error"))]
        raise StepFailed(f"{what} failed (exit {res.returncode}): "
                         f"{' '.join(errors)[:400] or res.stderr.strip()[-400:]}")


APT_INSTALL_OPTS = ("-y", "-q", "-o", "Dpkg::Options::=--force-confdef",
                    "-o", "Dpkg::Options::=--force-confold")


@dataclass
class AptDistUpgrade(Step):
    """``apt-get update`` then ``dist-upgrade`` on this node, the package lists before and
    after journalled and diffed. Undo: put every changed package back to the version it had
    (``apt-get install NAME=VERSION``, newly installed ones removed) — possible while the
    repositories still carry the old versions; otherwise the undo fails naming them."""

    TYPE = "core.apt-dist-upgrade"
    NAME = "AptDistUpgrade"
    #: the plan's prediction, one line (for the plan and the journal)
    predicted: str = ""
    timeout_s: float = 3600.0

    def describe(self, ctx: Context) -> str:
        return f"apt-get dist-upgrade on {Node.of(ctx).root}: {self.predicted}"

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        return {"before": installed(Node.of(ctx))}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from . import log

        node = Node.of(ctx)
        _apt_ok(node.apt("-q", "update", timeout=600), "apt-get update")
        log.info("apt-get dist-upgrade")
        res = node.apt(*APT_INSTALL_OPTS, "dist-upgrade", timeout=self.timeout_s)
        for line in res.stdout.splitlines():
            if line.startswith(("Unpacking", "Setting up", "Removing")):
                log.info(line)
        _apt_ok(res, "apt-get dist-upgrade")
        return {"changes": changes(prior.get("before") or {}, installed(node))}

    def add_result(self, ctx: Context, record: dict[str, Any]) -> None:
        if ctx.operation is not None and isinstance(record.get("changes"), dict):
            ctx.operation.result["packages"] = record["changes"]

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        from .errors import StepFailed

        node = Node.of(ctx)
        bad = unsettled(node)
        if bad:
            raise StepFailed(f"dpkg left packages unsettled: {', '.join(bad)}")
        left = simulate(node)["summary"].get("upgraded", 0)
        if left:
            raise StepFailed(f"{left} package(s) still to upgrade after the dist-upgrade")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        from . import log

        node = Node.of(ctx)
        before: dict[str, str] = record.get("before") or {}
        diff = changes(before, installed(node))
        back = [f"{p['name']}={p['from']}" for p in diff["upgraded"]] + \
            [f"{p['name']}={p['version']}" for p in diff["removed"]]
        drop = [f"{p['name']}-" for p in diff["installed"]]
        if not back and not drop:
            return
        log.warn(f"putting back {len(back)} package version(s), removing {len(drop)} new "
                 f"package(s)")
        res = node.apt(*APT_INSTALL_OPTS, "--allow-downgrades", "install", *back, *drop,
                       timeout=self.timeout_s)
        _apt_ok(res, "putting the previous package versions back (are they still in the "
                     "repositories?)")


@dataclass
class RebootCheck(Step):
    """Whether the node must reboot: the newest installed kernel is not the running one
    (Debian's kernel packages do not create /run/reboot-required). Reports only."""

    TYPE = "core.reboot-check"
    NAME = "RebootCheck"
    ORDER = 60

    def describe(self, ctx: Context) -> str:
        return "compare the running kernel with the newest installed one"

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from . import log

        node = Node.of(ctx)
        running, kernels = running_kernel(node), installed_kernels(node)
        newest = kernels[-1] if kernels else running
        needed = newest != running
        if needed:
            log.warn(f"reboot needed: kernel {newest} is installed, {running} runs")
        return {"reboot_required": needed, "running_kernel": running, "newest_kernel": newest}

    def add_result(self, ctx: Context, record: dict[str, Any]) -> None:
        if ctx.operation is not None and "running_kernel" in record:
            ctx.operation.result.update({k: record.get(k) for k in (
                "running_kernel", "newest_kernel", "reboot_required")})


def last_reboot_file(ctx: Context) -> Path:
    return ctx.state_dir / "upgrade" / "last-reboot.json"


def last_reboot(ctx: Context, tag: str | None = None) -> dict[str, Any] | None:
    """What :func:`reboot` kept before the last reboot it made — for operation ``tag``
    when given (a reboot made otherwise meanwhile does not replace it); None if none."""
    from .statefile import read_json

    data = _reboot_records(read_json(last_reboot_file(ctx), None))
    rec = data["operations"].get(tag) if tag else data.get("last")
    return rec if isinstance(rec, dict) else None


def _reboot_records(data: Any) -> dict[str, Any]:
    """The reboot records file's content in its shape (anything else in it is dropped):
    ``last`` and ``operations`` {tag: record}."""
    data = data if isinstance(data, dict) else {}
    ops = data.get("operations")
    return {"last": data.get("last"),
            "operations": {t: r for t, r in ops.items() if isinstance(r, dict)}
            if isinstance(ops, dict) else {}}


#: reboots kept per operation (the newest)
KEEP_TAGGED = 16


def reboot(ctx: Context, tag: str | None = None) -> dict[str, Any]:
    """Reboot this node with ``[upgrade] reboot_command``, audited first; returns the boot
    state it rebooted from, which it also keeps (with ``tag``, the operation that asked) so
    that the services running before can be checked after (:func:`last_reboot`). The
    command is started detached: the reboot may end this process (and the SSH session that
    ran it) before it could answer."""
    import time

    from .statefile import update_json

    node = Node.of(ctx)
    state = boot_state(node)
    rec = {**state, "tag": tag, "at": time.time()}

    def keep(data: dict[str, Any]) -> None:
        ops = _reboot_records(data)["operations"]
        if tag:
            ops[tag] = rec
        def at(t: str) -> float:
            when = ops[t].get("at")
            return float(when) if isinstance(when, int | float) else 0.0

        newest = sorted(ops, key=at)[-KEEP_TAGGED:]
        data.clear()
        data.update(last=rec, operations={t: ops[t] for t in newest})

    update_json(last_reboot_file(ctx), keep)
    ctx.audit("started", command=list(node.reboot_command), **state)
    try:
        subprocess.Popen(list(node.reboot_command), stdin=subprocess.DEVNULL,  # noqa: S603
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except OSError as exc:
        ctx.audit("failed", error=str(exc))
        raise DebvisorError(f"cannot run the reboot command {node.reboot_command[0]}: "
                            f"{exc.strerror}") from None
    return state
