"""First boot: the modules plugins contribute (hook ``debvisor_firstboot_modules``), run
once, in name order (``01-network`` … ``99-completion``), each skipped when it does not
apply to the node's roles or configuration.

A module that fails stops the run (exit 1, the report says which and why) without the
"done" marker: systemd's ``Restart=on-failure`` runs it again, and modules that already
succeeded are not run twice (the report keeps them). When every module has succeeded or
been skipped, the marker is written and the unit disabled.

A module can also be declared in the config: ``[firstboot.modules."03-ceph"]`` with
``action = "ceph.join"``, ``params = {devices = ["auto"]}`` and ``roles = ["storage"]``
runs that declared action (``debvisor --yes actions run ACTION -``, the parameters on its
stdin; a secret parameter is read from the owner-only file its ``NAME_file`` key names),
so any plugin's action becomes a first-boot step without code.

The core's modules: ``01-network``, ``01-ssh-host-keys``, ``02-disk``, ``04-zfs`` (the
pools of ``[firstboot.zfs] pools`` imported; storage nodes), ``05-docker`` (``[firstboot.
docker.daemon]`` merged into daemon.json) and ``99-completion``.

``[firstboot]``: ``roles`` (this node's roles, default ``["hypervisor", "storage", "k8s"]``),
``skip`` (module names never to run), ``report`` (default
``/var/log/debvisor/firstboot-report.json``), ``root`` (the filesystem the core modules
provision, default ``/``: the test bed points it at a node image).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import log
from .errors import DebvisorError
from .settings import Section
from .timefmt import iso_utc

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context

TAIL = 20  # output lines kept per module in the report
UNIT = "debvisor-firstboot.service"


@dataclass
class Module:
    """One first-boot module. ``run(ctx)`` does the work and returns a one-line result
    (raising fails the module); ``applies(ctx)`` returns None, or why it is skipped;
    ``roles`` (empty: every node) are the node roles it is for."""

    name: str
    summary: str
    run: Callable[[Context], str]
    applies: Callable[[Context], str | None] | None = None
    roles: tuple[str, ...] = ()
    plugin: str = ""


@dataclass
class Settings:
    roles: list[str]
    skip: list[str]
    report: Path
    root: Path

    @classmethod
    def of(cls, ctx: Context) -> Settings:
        s = Section.of(ctx, "firstboot")
        roles = s.strings("roles") if "roles" in s.data else ["hypervisor", "storage", "k8s"]
        return cls(roles, s.strings("skip"),
                   Path(s.string("report") or "/var/log/debvisor/firstboot-report.json"),
                   Path(s.string("root") or "/"))


def marker(ctx: Context) -> Path:
    return ctx.state_dir / "firstboot.done"


def collect(ctx: Context) -> list[Module]:
    """Every plugin's modules and the config's, in name order; two of one name is an
    error."""
    found: dict[str, Module] = {}
    declared = [(impl.plugin_name, impl.function(ctx=ctx) or [])
                for impl in ctx.hook.debvisor_firstboot_modules.get_hookimpls()]
    for plugin, modules in [*declared, ("config", config_modules(ctx))]:
        for m in modules:
            m.plugin = m.plugin or plugin
            if m.name in found:
                raise DebvisorError(f"first-boot module {m.name} is declared by both "
                                    f"{found[m.name].plugin} and {m.plugin}")
            found[m.name] = m
    return [found[k] for k in sorted(found)]


def read_report(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_report(path: Path, report: dict[str, Any]) -> None:
    from .statefile import write_json

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    write_json(path, report)


def _skip_reason(ctx: Context, m: Module, s: Settings) -> str | None:
    if m.name in s.skip:
        return "skipped by [firstboot] skip"
    if m.roles and not set(m.roles) & set(s.roles):
        return f"not for this node's roles ({', '.join(s.roles) or 'none'}; it is for " \
               f"{', '.join(m.roles)})"
    return m.applies(ctx) if m.applies else None


def run(ctx: Context, *, force: bool = False) -> dict[str, Any]:
    """Run the modules not done yet; the report (also written to ``[firstboot] report``)."""
    s = Settings.of(ctx)
    done = marker(ctx)
    if done.exists() and not force:
        return {**(read_report(s.report) or {}), "already_done": True,
                "done_at": done.read_text().strip()}
    earlier = {m["name"]: m for m in (read_report(s.report) or {}).get("modules", [])
               if m.get("status") == "ok"} if not force else {}
    modules = collect(ctx)
    report: dict[str, Any] = {"status": "running", "host": os.uname().nodename,
                              "started": iso_utc(), "roles": s.roles, "modules": []}
    ctx.audit("firstboot-started", modules=[m.name for m in modules], roles=s.roles)
    for m in modules:
        if m.name in earlier:
            report["modules"].append({**earlier[m.name], "earlier_run": True})
            log.info(f"firstboot {m.name}: done in an earlier run")
            continue
        entry = _run_module(ctx, m, s)
        report["modules"].append(entry)
        if entry["status"] == "failed":
            report["status"] = "failed"
            report["failed"] = m.name
            break
    else:
        report["status"] = "ok"
    report["finished"] = iso_utc()
    _write_report(s.report, report)
    ctx.audit("firstboot-finished", status=report["status"], failed=report.get("failed"))
    if report["status"] == "ok":
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(report["finished"] + "\n")
        report["disabled"] = _disable_unit()
    return report


def _run_module(ctx: Context, m: Module, s: Settings) -> dict[str, Any]:
    t0 = time.monotonic()
    tail: deque[str] = deque(maxlen=TAIL)
    reason = None
    try:
        reason = _skip_reason(ctx, m, s)
    except Exception as exc:  # noqa: BLE001 - a module that cannot tell fails
        return _entry(m, "failed", f"could not tell whether it applies: {exc}", t0, tail)
    if reason:
        log.info(f"firstboot {m.name}: skipped: {reason}")
        return _entry(m, "skipped", reason, t0, tail)

    def sink(level: str, msg: str) -> None:
        tail.append(f"[{level}] {msg}")
        print(f"[{level}] {msg}", file=sys.stderr, flush=True)

    log.info(f"firstboot {m.name}: {m.summary}")
    try:
        with log.bound(sink):
            result = m.run(ctx)
    except Exception as exc:  # noqa: BLE001 - the report says why; the unit retries
        msg = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        log.error(f"firstboot {m.name} failed: {msg}")
        return _entry(m, "failed", msg, t0, tail)
    log.info(f"firstboot {m.name}: {result}")
    return _entry(m, "ok", result, t0, tail)


def _entry(m: Module, status: str, result: str, t0: float, tail: deque[str]) -> dict[str, Any]:
    return {"name": m.name, "plugin": m.plugin, "status": status, "result": result,
            "duration_ms": int((time.monotonic() - t0) * 1000), "output_tail": list(tail)}


def _disable_unit() -> str:
    """Disable the unit so it never runs again (the marker also keeps it from running)."""
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return "systemd is not running: the unit was not disabled (the marker keeps it off)"
    res = subprocess.run(["systemctl", "disable", UNIT], capture_output=True, text=True,  # noqa: S603
                         timeout=60)
    if res.returncode != 0:
        log.warn(f"systemctl disable {UNIT}: {res.stderr.strip()[:200]}")
        return f"systemctl disable failed: {res.stderr.strip()[:200]}"
    return f"{UNIT} disabled"


def config_modules(ctx: Context) -> list[Module]:
    """``[firstboot.modules.NAME]`` tables: a declared action run with parameters."""
    tables = Section.of(ctx, "firstboot").sub("modules")
    out = []
    for name in sorted(tables.data):
        sec = tables.sub(name)
        action = sec.string("action")
        if not action:
            raise sec.error("action", "is required (a declared action, e.g. ceph.join)")
        params = sec.table("params")
        out.append(Module(name, f"run {action}", _action_runner(action, params),
                          roles=tuple(sec.strings("roles"))))
    return out


def _action_runner(path: str, params: dict[str, Any]) -> Callable[[Context], str]:
    def run_action(ctx: Context) -> str:
        from .actions import find, params_from_config

        action = find(ctx, path)
        # bad parameters: one sentence before anything runs; secrets read from their files
        checked = params_from_config(action, params, f"[firstboot.modules] {path}")
        raw = {p.name: checked[p.name] for p in action.params
               if p.name in params or f"{p.name}_file" in params}
        argv = [sys.executable, "-m", "debvisor_core", "--config", str(ctx.config.path),
                "--yes", "actions", "run", path, "-"]
        res = subprocess.run(argv, input=json.dumps(raw), capture_output=True,  # noqa: S603
                             text=True, timeout=3000)
        for line in res.stderr.splitlines():
            log.info(f"{path}: {line}")
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
            raise DebvisorError(f"{path} failed (exit {res.returncode}): {last}")
        try:
            result = json.loads(res.stdout)
        except ValueError:
            return f"{path}: done"
        status = result.get("status") if isinstance(result, dict) else None
        return f"{path}: {status or 'done'}" + (f" (operation {result['id']})"
                                                 if isinstance(result, dict) and result.get("id")
                                                 else "")

    return run_action


# -- the core's modules ------------------------------------------------------------------------
def _root(ctx: Context) -> Path:
    return Settings.of(ctx).root


def network(ctx: Context) -> str:
    """The node can reach its network: a default route and a name server."""
    root = _root(ctx)
    reject = 0x0200  # RTF_REJECT: the kernel's own "unreachable" entries are no way out
    routes = [r.split() for r in Path("/proc/net/route").read_text().splitlines()[1:]]
    default4 = [f[0] for f in routes if len(f) > 3 and f[1] == "00000000"
                and not int(f[3], 16) & reject and f[0] != "lo"]
    v6 = Path("/proc/net/ipv6_route")
    routes6 = [r.split() for r in (v6.read_text().splitlines() if v6.exists() else [])]
    default6 = [f[9] for f in routes6 if len(f) > 9 and f[0] == "0" * 32 and f[1] == "00"
                and not int(f[8], 16) & reject and f[9] != "lo"]
    if not default4 and not default6:
        raise DebvisorError("no default route (IPv4 or IPv6): the node is not on its network "
                            "yet; configure it (net plugin, /etc/network/interfaces) and retry")
    resolv = root / "etc/resolv.conf"
    servers = [ln.split()[1] for ln in (resolv.read_text().splitlines() if resolv.exists()
                                        else []) if ln.startswith("nameserver ")]
    if not servers:
        raise DebvisorError(f"no nameserver in {resolv}")
    return (f"default route via {', '.join(sorted(set(default4 + default6)))}; name servers "
            f"{', '.join(servers)}")


def host_keys(ctx: Context) -> str:
    """SSH host keys of this node's own: made when missing (a node cloned from an image
    whose keys were removed gets unique keys, as the image tooling expects)."""
    root = _root(ctx)
    ssh = root / "etc/ssh"
    if not ssh.is_dir():
        return "no /etc/ssh: OpenSSH is not installed"
    before = sorted(p.name for p in ssh.glob("ssh_host_*_key"))
    if shutil.which("ssh-keygen") is None:
        raise DebvisorError("ssh-keygen is missing (package openssh-client)")
    argv = ["ssh-keygen", "-A"] + (["-f", str(root)] if root != Path("/") else [])
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)  # noqa: S603
    for line in (res.stdout + res.stderr).splitlines():
        log.info(line)
    if res.returncode != 0:
        raise DebvisorError(f"ssh-keygen -A failed: {res.stderr.strip()[:200]}")
    made = sorted(set(p.name for p in ssh.glob("ssh_host_*_key")) - set(before))
    return f"made host keys: {', '.join(made)}" if made else "host keys already present"


def state_dirs(ctx: Context) -> str:
    """DebVisor's state and log directories exist, owner-only."""
    made = []
    for d in (ctx.state_dir, Settings.of(ctx).report.parent):
        if not d.exists():
            made.append(str(d))
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(d, 0o700 if d == ctx.state_dir else 0o750)
    st = os.statvfs(ctx.state_dir)
    free = st.f_bavail * st.f_frsize / 2**30
    return (f"created {', '.join(made)}; " if made else "") + \
        f"{free:.1f} GiB free for {ctx.state_dir}"


def completion(ctx: Context) -> str:
    """Records that first boot completed (the runner writes the marker and the report)."""
    return f"first boot complete; marker {marker(ctx)}"


_POOL_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,254}")


def _table(ctx: Context, name: str) -> Section | None:
    fb = Section.of(ctx, "firstboot")
    return fb.sub(name) if name in fb.data else None


def zfs_applies(ctx: Context) -> str | None:
    return None if _table(ctx, "zfs") else "no [firstboot.zfs] table: ZFS is not used here"


def zfs(ctx: Context) -> str:
    """The pools of ``[firstboot.zfs] pools`` imported (``zpool import -N``: nothing
    mounted yet), with the kernel module loaded (the unit may not load modules itself)."""
    sec = _table(ctx, "zfs")
    assert sec is not None
    pools = sec.strings("pools")
    bad = [p for p in pools if not _POOL_RE.fullmatch(p)]
    if bad:
        raise sec.error("pools", f"{bad[0][:60]!r} is not a pool name")
    zpool = shutil.which("zpool")
    if zpool is None:
        raise DebvisorError("zpool is not installed (zfsutils-linux, in Debian's contrib); "
                            "install it, then first boot goes on")
    if not Path("/sys/module/zfs").is_dir():
        raise DebvisorError(f"the zfs kernel module is not loaded: is zfs-dkms built for "
                            f"kernel {os.uname().release}? (`modprobe zfs`)")
    res = subprocess.run([zpool, "list", "-H", "-o", "name"], capture_output=True,  # noqa: S603
                         text=True, timeout=120)
    if res.returncode != 0:
        raise DebvisorError(f"zpool list failed: {res.stderr.strip()[:200]}")
    imported = set(res.stdout.split())
    done = []
    for pool in pools:
        if pool in imported:
            continue
        res = subprocess.run([zpool, "import", "-N", "--", pool], capture_output=True,  # noqa: S603
                             text=True, timeout=600)
        if res.returncode != 0:
            raise DebvisorError(f"zpool import {pool} failed: {res.stderr.strip()[:200]}")
        done.append(pool)
    return (f"imported {', '.join(done)}" if done else "nothing to import") + (
        f"; already imported: {', '.join(sorted(imported & set(pools)))}"
        if imported & set(pools) else "")


def docker_applies(ctx: Context) -> str | None:
    return None if _table(ctx, "docker") else "no [firstboot.docker] table: Docker is not " \
        "configured here"


def docker(ctx: Context) -> str:
    """``[firstboot.docker.daemon]`` merged into the node's /etc/docker/daemon.json (keys
    not named there are kept), written atomically before Docker first starts (the unit
    runs Before=docker.service)."""
    sec = _table(ctx, "docker")
    assert sec is not None
    wanted = sec.table("daemon")
    if not wanted:
        raise sec.error("daemon", "names no setting (e.g. daemon = {log-driver = \"journald\"})")
    path = _root(ctx) / "etc/docker/daemon.json"
    current: Any = {}
    if path.exists():
        try:
            current = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DebvisorError(f"{path} cannot be read as JSON ({exc}); fix or remove it") \
                from None
        if not isinstance(current, dict):
            raise DebvisorError(f"{path} is not a JSON object; fix or remove it")
    changed = sorted(k for k, v in wanted.items() if current.get(k) != v)
    if not changed:
        return f"{path} already has these settings"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({**current, **wanted}, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return f"{path}: set {', '.join(changed)}"


def core_modules() -> list[Module]:
    return [Module("01-network", "check the default route and name servers", network),
            Module("01-ssh-host-keys", "make this node's own SSH host keys", host_keys),
            Module("02-disk", "DebVisor's state and log directories", state_dirs),
            Module("04-zfs", "import the ZFS pools of [firstboot.zfs]", zfs, zfs_applies,
                   roles=("storage",)),
            Module("05-docker", "Docker's daemon.json from [firstboot.docker]", docker,
                   docker_applies),
            Module("99-completion", "record completion", completion)]
