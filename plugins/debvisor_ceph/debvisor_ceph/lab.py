"""The Ceph lab: a single-node Ceph cluster (1 mon, 1 mgr, 3 file-backed OSDs) on 127.0.0.1.

Everything lives under the service dir (``lctx.dir``)::

    ceph.conf  ceph.client.admin.keyring (0600)  ceph.mon.keyring  monmap
    mon/ceph-a/  mgr/ceph-x/  osd/ceph-N/  blocks/osd.N.block (outside the OSD dirs)
    log/  run/ (admin sockets)  pids/  state.json (written once bootstrap finished)

The mon ports are fixed (3300/6789), so there is one lab cluster per network
namespace; it runs in the root namespace. ``stop`` keeps the data, so the next
``start`` only restarts the daemons (a few seconds); a dir without ``state.json``
(half-made cluster) is wiped and bootstrapped again (~10 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from debvisor_core.lab import LabContext, LabService
from debvisor_core.lab.process import (
    LabError,
    alive,
    port_open,
    read_pid,
    run,
    spawn,
    stop_pidfile,
    wait_for,
)
from debvisor_core.lab.process import stop as stop_pid

from .fileosd import connect, create_file_osd, mon_command, mon_json, osd_argv

MON_ID = "a"
MGR_ID = "x"
HOST = "lab-node1"
NUM_OSDS = 3
BLOCK_SIZE = 2 * 1024**3
MON_ADDRS = "[v2:127.0.0.1:3300,v1:127.0.0.1:6789]"
START_TIMEOUT = 120.0

# Failure detection tuned for tests: a SIGKILLed OSD is marked down within a few
# seconds (peers report it at once when its port refuses; else after the grace).
CONF_TEMPLATE = """\
[global]
fsid = {fsid}
mon host = {mon_addrs}
mon initial members = {mon_id}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = {dir}/run
crash dir = {dir}/crash
log file = {dir}/log/$cluster-$name.log
pid file = {dir}/run/$cluster-$name.pid
mon cluster log file = {dir}/log/$cluster.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 2
mon data avail crit = 1
mon osd min down reporters = 1
mon osd reporter subtree level = osd
mon osd adjust heartbeat grace = false
mon osd down out interval = 30
mon osd report timeout = 45
osd heartbeat interval = 2
osd heartbeat grace = 8
osd beacon report interval = 10
mgr initial modules = iostat

[mon]
mon data = {dir}/mon/$cluster-$id
keyring = $mon_data/keyring

[mgr]
mgr data = {dir}/mgr/$cluster-$id
keyring = $mgr_data/keyring

[osd]
osd data = {dir}/osd/$cluster-$id
keyring = $osd_data/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {block_size}
osd fast shutdown = false
osd crush update on start = false
osd memory target = 939524096
osd class update on start = false
debug rocksdb = 1/5

[client]
admin socket =
log file =
keyring = {dir}/ceph.client.admin.keyring
"""


class _Paths:
    """Where each file of the lab cluster lives under the service dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "ceph.conf"
        self.admin_keyring = root / "ceph.client.admin.keyring"
        self.mon_keyring = root / "ceph.mon.keyring"
        self.monmap = root / "monmap"
        self.state = root / "state.json"
        self.mon_dir = root / "mon" / f"ceph-{MON_ID}"
        self.mgr_dir = root / "mgr" / f"ceph-{MGR_ID}"
        self.log = root / "log"
        self.pids = root / "pids"

    def osd_dir(self, osd_id: int) -> Path:
        return self.root / "osd" / f"ceph-{osd_id}"

    def block(self, osd_id: int) -> Path:
        return self.root / "blocks" / f"osd.{osd_id}.block"

    def pidfile(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def out(self, name: str) -> Path:
        return self.log / f"{name}.out"

    def osd_ids(self) -> list[int]:
        try:
            return [int(i) for i in json.loads(self.state.read_text())["osds"]]
        except (OSError, ValueError, KeyError):
            return []


def _fragment(p: _Paths) -> dict[str, Any]:
    return {
        "ceph": {
            "conf": str(p.conf),
            "keyring": str(p.admin_keyring),
            "client": "client.admin",
            "host": HOST,
            "provisioner": "file",
            "file_dir": str(p.root / "join"),
            "lab": {"dir": str(p.root)},
        }
    }


def _connect(p: _Paths, timeout: float = 15.0) -> Any:
    return connect(p.conf, p.admin_keyring, timeout=timeout)


# --- daemons -----------------------------------------------------------------


def _spawn_daemon(p: _Paths, name: str, argv: list[str]) -> int:
    pid = read_pid(p.pidfile(name))
    if pid is not None:
        return pid
    p.pids.mkdir(parents=True, exist_ok=True)
    return spawn(argv, pidfile=p.pidfile(name), log=p.out(name))


def _start_mon(p: _Paths) -> int:
    argv = ["ceph-mon", "-f", "-c", str(p.conf), "-i", MON_ID]
    return _spawn_daemon(p, f"mon.{MON_ID}", argv)


def _start_mgr(p: _Paths) -> int:
    argv = ["ceph-mgr", "-f", "-c", str(p.conf), "-i", MGR_ID]
    return _spawn_daemon(p, f"mgr.{MGR_ID}", argv)


def _spawn_osd(p: _Paths, osd_id: int) -> int:
    return _spawn_daemon(p, f"osd.{osd_id}", osd_argv(p.conf, osd_id, p.osd_dir(osd_id)))


def _osd_info(cluster: Any) -> tuple[int, dict[int, dict[str, Any]]]:
    dump = mon_json(cluster, "osd dump", timeout=10)
    return int(dump["epoch"]), {int(o["osd"]): o for o in dump["osds"]}


def _wait_osds_up(
    p: _Paths, pids: dict[int, int | None], since: int = 0, timeout: float = START_TIMEOUT
) -> None:
    """Wait until each OSD in ``pids`` is up in an osdmap epoch newer than ``since``."""
    with _connect(p) as cluster:
        for osd_id, pid in pids.items():

            def up(osd_id: int = osd_id) -> bool:
                o = _osd_info(cluster)[1].get(osd_id, {})
                return bool(o.get("up")) and int(o.get("up_from", 0)) > since

            wait_for(up, timeout=timeout, what=f"ceph osd.{osd_id}",
                     log=p.out(f"osd.{osd_id}"), pid=pid)  # fmt: skip


def _wait_mgr(p: _Paths, pid: int, timeout: float = START_TIMEOUT) -> None:
    with _connect(p) as cluster:
        wait_for(
            lambda: bool(mon_json(cluster, "mgr stat", timeout=10).get("available")),
            timeout=timeout, what="ceph-mgr", log=p.out(f"mgr.{MGR_ID}"), pid=pid,
        )  # fmt: skip


def _wait_mon(p: _Paths, pid: int, timeout: float = START_TIMEOUT) -> None:
    def quorum() -> bool:
        if not port_open("127.0.0.1", 3300):
            return False
        try:
            with _connect(p, timeout=5) as cluster:
                return bool(mon_json(cluster, "quorum_status", timeout=5).get("quorum"))
        except Exception:  # noqa: BLE001 - not ready yet
            return False

    wait_for(quorum, timeout=timeout, what="ceph-mon", log=p.out(f"mon.{MON_ID}"), pid=pid)


def _check_ports_free() -> None:
    for port in (3300, 6789):
        if port_open("127.0.0.1", port):
            raise LabError(
                f"127.0.0.1:{port} is in use: another Ceph mon runs in this network namespace",
                hint="stop the other Ceph lab/cluster first (one cluster per namespace)",
            )


def _write_conf(p: _Paths, fsid: str) -> None:
    p.conf.write_text(
        CONF_TEMPLATE.format(fsid=fsid, mon_addrs=MON_ADDRS, mon_id=MON_ID, dir=p.root, block_size=BLOCK_SIZE)
    )


# --- bootstrap -----------------------------------------------------------------


def _bootstrap(p: _Paths) -> None:
    """Make a new cluster from nothing and leave all daemons running."""
    if p.root.exists():
        for child in p.root.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    for d in ("log", "run", "crash", "pids", "blocks", "osd", "mon", "mgr"):
        (p.root / d).mkdir(parents=True, exist_ok=True)
    fsid = str(uuid.uuid4())
    _write_conf(p, fsid)
    auth = ["ceph-authtool", "-C"]
    run([*auth, str(p.mon_keyring), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"])
    run([*auth, str(p.admin_keyring), "--gen-key", "-n", "client.admin",
         "--cap", "mon", "allow *", "--cap", "osd", "allow *",
         "--cap", "mds", "allow *", "--cap", "mgr", "allow *"])  # fmt: skip
    p.admin_keyring.chmod(0o600)
    p.mon_keyring.chmod(0o600)
    run(["ceph-authtool", str(p.mon_keyring), "--import-keyring", str(p.admin_keyring)])
    run(["monmaptool", "--create", "--fsid", fsid, "--addv", MON_ID, MON_ADDRS, str(p.monmap)])
    run(["ceph-mon", "-c", str(p.conf), "--mkfs", "-i", MON_ID,
         "--monmap", str(p.monmap), "--keyring", str(p.mon_keyring)])  # fmt: skip
    _wait_mon(p, _start_mon(p))

    with _connect(p) as cluster:
        key = mon_command(
            cluster, "auth get-or-create", entity=f"mgr.{MGR_ID}",
            caps=["mon", "allow profile mgr", "osd", "allow *", "mds", "allow *"],
        )  # fmt: skip
    p.mgr_dir.mkdir(parents=True, exist_ok=True)
    (p.mgr_dir / "keyring").write_text(key if key.endswith("\n") else key + "\n")
    (p.mgr_dir / "keyring").chmod(0o600)
    mgr_pid = _start_mgr(p)

    def make_osd(osd_id: int) -> tuple[int, int]:
        create_file_osd(
            p.conf, p.admin_keyring, p.osd_dir(osd_id), p.block(osd_id),
            host=HOST, block_size=BLOCK_SIZE, device_class="hdd", osd_id=osd_id,
        )  # fmt: skip
        return osd_id, _spawn_osd(p, osd_id)

    with ThreadPoolExecutor(NUM_OSDS) as pool:
        osds = dict(pool.map(make_osd, range(NUM_OSDS)))
    _wait_osds_up(p, dict(osds))
    _wait_mgr(p, mgr_pid)
    p.state.write_text(json.dumps({"fsid": fsid, "osds": sorted(osds)}) + "\n")


# --- the service ---------------------------------------------------------------


def start(lctx: LabContext) -> dict[str, Any]:
    """Start the lab cluster (bootstrap it if needed); wait until all OSDs are up."""
    p = _Paths(lctx.dir)
    mon_pid = read_pid(p.pidfile(f"mon.{MON_ID}"))
    if not p.state.exists():
        stop(lctx)  # a half-made cluster is wiped and made again
        _check_ports_free()
        _bootstrap(p)
        return _fragment(p)
    if mon_pid is None:
        stop(lctx)  # daemons whose pidfiles were lost
        _write_conf(p, json.loads(p.state.read_text())["fsid"])  # pick up template changes
        _check_ports_free()
        mon_pid = _start_mon(p)
    _wait_mon(p, mon_pid)
    mgr_pid = _start_mgr(p)
    with _connect(p) as cluster:
        epoch = _osd_info(cluster)[0]
    missing = [i for i in p.osd_ids() if read_pid(p.pidfile(f"osd.{i}")) is None]
    pids = {i: _spawn_osd(p, i) for i in missing}
    _wait_osds_up(p, dict(pids), since=epoch)
    # OSDs already running: only wait for them to be up (they may be booting).
    running = {i: read_pid(p.pidfile(f"osd.{i}")) for i in p.osd_ids() if i not in pids}
    _wait_osds_up(p, running, since=0)
    _wait_mgr(p, mgr_pid)
    return _fragment(p)


def _daemon_pids(p: _Paths) -> dict[str, list[int]]:
    """Live Ceph daemons started with this lab's conf, by program (pidfiles may be lost)."""
    conf = str(p.conf).encode()
    found: dict[str, list[int]] = {"ceph-osd": [], "ceph-mgr": [], "ceph-mon": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        prog = os.path.basename(argv[0].decode(errors="replace"))
        if prog in found and conf in argv and alive(int(entry.name)):
            found[prog].append(int(entry.name))
    return found


def _terminate(pids: list[int], timeout: float = 30.0) -> None:
    """SIGTERM ``pids`` once (Ceph's SIGTERM handler is one-shot: a second one kills the
    daemon mid-shutdown), wait for them to exit, SIGKILL whatever is left after ``timeout``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        return not any(alive(pid) for pid in pids)

    with contextlib.suppress(LabError):
        wait_for(gone, timeout=timeout, what="ceph daemons stopping")
    for pid in pids:
        if alive(pid):
            stop_pid(pid, timeout=0, group=False)


def stop(lctx: LabContext) -> None:
    """Stop all daemons cleanly (OSDs, then mgr, then mon); keep the data for a fast restart."""
    p = _Paths(lctx.dir)
    daemons = _daemon_pids(p)
    for prog in ("ceph-osd", "ceph-mgr", "ceph-mon"):
        _terminate(daemons[prog])
    if p.pids.exists():
        for f in p.pids.glob("*.pid"):
            stop_pidfile(f)


def status(lctx: LabContext) -> dict[str, Any]:
    """Daemon liveness plus, when the mon answers, OSD counts and the health status."""
    p = _Paths(lctx.dir)
    mon = read_pid(p.pidfile(f"mon.{MON_ID}")) is not None
    mgr = read_pid(p.pidfile(f"mgr.{MGR_ID}")) is not None
    osds = {i: read_pid(p.pidfile(f"osd.{i}")) is not None for i in p.osd_ids()}
    out: dict[str, Any] = {
        "running": mon and mgr and bool(osds) and all(osds.values()),
        "bootstrapped": p.state.exists(),
        "mon": mon,
        "mgr": mgr,
        "osd_daemons": {f"osd.{i}": up for i, up in osds.items()},
        "osds_up": 0,
        "osds_in": 0,
        "health": None,
        **_fragment(p)["ceph"],
    }
    if mon:
        try:
            with _connect(p, timeout=5) as cluster:
                st = mon_json(cluster, "osd stat", timeout=5)
                out["osds_up"] = int(st.get("num_up_osds", 0))
                out["osds_in"] = int(st.get("num_in_osds", 0))
                out["health"] = mon_json(cluster, "health", timeout=5).get("status")
        except Exception as exc:  # noqa: BLE001 - status must not raise
            out["error"] = str(exc)
    return out


# --- helpers for tests -----------------------------------------------------------


def osd_ids(lctx: LabContext) -> list[int]:
    """The lab's OSD ids."""
    return _Paths(lctx.dir).osd_ids()


def start_osd(lctx: LabContext, osd_id: int, *, timeout: float = 60.0) -> None:
    """(Re)start one OSD daemon if it is not running and wait until the mon sees it up again."""
    p = _Paths(lctx.dir)
    if read_pid(p.pidfile(f"osd.{osd_id}")) is not None:
        return
    with _connect(p) as cluster:
        epoch = _osd_info(cluster)[0]
    pid = _spawn_osd(p, osd_id)
    _wait_osds_up(p, {osd_id: pid}, since=epoch, timeout=timeout)


def stop_osd(
    lctx: LabContext, osd_id: int, *, kill: bool = True, wait_down: bool = False,
    timeout: float = 60.0,
) -> None:  # fmt: skip
    """Stop one OSD: SIGKILL (``kill``, like a crash) or a clean SIGTERM.

    With ``wait_down`` also wait until the mon has marked it down.
    """
    p = _Paths(lctx.dir)
    pidfile = p.pidfile(f"osd.{osd_id}")
    pid = read_pid(pidfile)
    if pid is not None:
        if kill:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not alive(pid), timeout=10, what=f"kill osd.{osd_id}")
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if this process spawned it
        else:
            _terminate([pid])
        pidfile.unlink(missing_ok=True)
    if wait_down:
        wait_osd_down(lctx, osd_id, timeout=timeout)


def wait_osd_down(lctx: LabContext, osd_id: int, *, timeout: float = 60.0) -> float:
    """Wait until the mon marks ``osd_id`` down; return the seconds waited."""
    t0 = time.monotonic()
    with _connect(_Paths(lctx.dir)) as cluster:
        wait_for(
            lambda: not _osd_info(cluster)[1].get(osd_id, {}).get("up"),
            timeout=timeout, what=f"osd.{osd_id} marked down",
        )  # fmt: skip
    return time.monotonic() - t0


def reset(lctx: LabContext) -> dict[str, Any]:
    """Stop the cluster, wipe its dir and bootstrap a fresh one (~10 s)."""
    stop(lctx)
    (_Paths(lctx.dir).state).unlink(missing_ok=True)
    return start(lctx)


def services() -> list[LabService]:
    """The Ceph plugin's lab services."""
    return [
        LabService(
            name="ceph",
            start=start,
            stop=stop,
            status=status,
            needs=["ceph-mon", "ceph-mgr", "ceph-osd", "ceph-authtool", "monmaptool"],
            root=True,
            description="single-node Ceph 16 cluster on 127.0.0.1: 1 mon, 1 mgr, "
            f"{NUM_OSDS} BlueStore OSDs on sparse files under host {HOST}",
        )
    ]
