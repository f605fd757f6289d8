"""`ceph join`: disk discovery, provisioners and the steps that add OSDs to this node.

The join is an operation of four steps per device, all keyed by an OSD uuid chosen at
plan time (so a later process can find the OSD again from the journal):

1. ``CreateOsd``  — register the OSD (``osd new``), make its key, prepare the device;
   undo: purge it (OSD map, CRUSH entry, auth key) and release the device.
2. ``PlaceOsd``   — CRUSH entry under ``host=NODE root=default`` with the weight, and
   its device class; undo: remove the CRUSH entry.
3. ``StartOsd``   — start the daemon; undo: stop it.
4. ``VerifyOsdUp`` — wait until the mon reports it up.

Provisioners: ``ceph-volume`` (real disks: ``ceph-volume lvm prepare/activate``, LVM on the
disk), ``ceph-volume-raw`` (``ceph-volume raw prepare/activate``: BlueStore straight on the
device, no LVM or device-mapper) and ``file`` (the lab: a BlueStore OSD on a sparse file under
``[ceph] file_dir``). ceph-volume gets ``CEPH_CONF`` from ``[ceph] conf``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debvisor_core.context import Context
from debvisor_core.engine import Step
from debvisor_core.errors import BadInput, StepFailed
from debvisor_core.statefile import read_json, update_json

from .client import Settings, session
from .fileosd import OSD_CAPS, _mkfs, osd_argv
from .steps import wait

LSBLK_COLUMNS = "NAME,PATH,TYPE,SIZE,ROTA,RO,RM,MOUNTPOINT,FSTYPE,MODEL,SERIAL"
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


# --- discovery -----------------------------------------------------------------


def lsblk() -> dict[str, Any]:
    """``lsblk --json`` of this machine (bytes, with children)."""
    res = subprocess.run(["lsblk", "--json", "--bytes", "-o", LSBLK_COLUMNS],  # noqa: S603
                         capture_output=True, text=True, timeout=20)
    if res.returncode != 0:
        raise BadInput(f"lsblk failed: {res.stderr.strip()}")
    return dict(json.loads(res.stdout))


def holders() -> dict[str, list[str]]:
    """Kernel holders (LVM, dm, md) of each block device, from /sys/block."""
    out: dict[str, list[str]] = {}
    for d in Path("/sys/block").glob("*"):
        with contextlib.suppress(OSError):
            out[d.name] = sorted(p.name for p in (d / "holders").iterdir())
    return out


def _mounted_anywhere(dev: dict[str, Any]) -> bool:
    if dev.get("mountpoint") or dev.get("mountpoints") and any(dev.get("mountpoints") or []):
        return True
    return any(_mounted_anywhere(c) for c in dev.get("children") or [])


def classify_disks(tree: dict[str, Any], held: dict[str, list[str]], *,
                   loops: bool = False) -> list[dict[str, Any]]:
    """Every whole disk with ``unused`` and, if used, why: partitions, holders, mounts, a
    filesystem/LVM signature, read-only, the boot disk (pure; takes lsblk's JSON). With
    ``loops``, loop devices count as disks (an operator named one)."""
    out = []
    for dev in tree.get("blockdevices", []):
        if dev.get("type") != "disk" and not (loops and dev.get("type") == "loop"):
            continue
        name = dev["name"]
        why = []
        if dev.get("children"):
            why.append("has partitions" if any(c.get("type") == "part" for c in dev["children"])
                       else "has children")
        if held.get(name):
            why.append(f"held by {', '.join(held[name])}")
        if _mounted_anywhere(dev):
            mounts = json.dumps(dev).count('"/')
            why.append("boot disk" if _holds_root(dev) else f"mounted ({mounts})")
        if dev.get("fstype"):
            why.append(f"has a {dev['fstype']} signature")
        if dev.get("ro") in (True, "1", 1):
            why.append("read-only")
        if name.startswith(("zram", "ram")) or (name.startswith("loop") and not loops):
            why.append("not a real disk")
        out.append({"name": name, "path": dev.get("path") or f"/dev/{name}",
                    "size": int(dev.get("size") or 0), "rotational": dev.get("rota") in (True, "1", 1),
                    "model": (dev.get("model") or "").strip(), "unused": not why, "reasons": why})
    return out


def _holds_root(dev: dict[str, Any]) -> bool:
    mps = [dev.get("mountpoint")] + list(dev.get("mountpoints") or [])
    if any(m in ("/", "/boot", "/boot/efi") for m in mps if m):
        return True
    return any(_holds_root(c) for c in dev.get("children") or [])


def parse_size(text: str) -> int:
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = t[-1:] if t[-1:] in _SIZE_UNITS else ""
    try:
        n = float(t[: len(t) - len(unit)])
    except ValueError:
        raise BadInput(f"size {text!r} is not like 2G or 500M") from None
    if n <= 0:
        raise BadInput(f"size {text!r} must be positive")
    return int(n * _SIZE_UNITS[unit])


# --- steps ---------------------------------------------------------------------


def osd_id_by_uuid(c: Any, osd_uuid: str) -> int | None:
    for o in c.mon("osd dump").get("osds", []):
        if o.get("uuid") == osd_uuid:
            return int(o["osd"])
    return None


def _file_paths(s: Settings, osd_uuid: str) -> dict[str, Path]:
    base = Path(s.file_dir)
    return {"data": base / "osd" / osd_uuid, "block": base / "blocks" / f"{osd_uuid}.block",
            "pid": base / "pids" / f"{osd_uuid}.pid", "log": base / "log" / f"{osd_uuid}.out"}


def _run(argv: list[str], timeout: float = 300, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,  # noqa: S603
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr or res.stdout).strip().splitlines() if ln.strip()]
        raise StepFailed(f"{' '.join(argv[:3])} failed: {lines[-1] if lines else res.returncode}")
    return res.stdout


RAW = "ceph-volume-raw"
OSD_DATA = "/var/lib/ceph/osd"  # ceph-volume's, not configurable
CLUSTER = "ceph"  # ceph-volume's default cluster name (its conf comes from CEPH_CONF)


def _volume_env(s: Settings) -> dict[str, str]:
    return {**os.environ, "CEPH_CONF": s.conf}


def _aliases(ctx: Context) -> Path:
    return ctx.plugin_state("ceph") / "osd-fsids.json"


def real_fsid(ctx: Context, plan_uuid: str) -> str:
    """The OSD fsid behind a plan's uuid: ``ceph-volume raw`` picks its own, recorded here."""
    data = read_json(_aliases(ctx), {})
    return str(data.get(plan_uuid, plan_uuid)) if isinstance(data, dict) else plan_uuid


def _remember_fsid(ctx: Context, plan_uuid: str, fsid: str) -> None:
    update_json(_aliases(ctx), lambda d: d.__setitem__(plan_uuid, fsid))


def raw_label(device: str, env: dict[str, str]) -> dict[str, Any] | None:
    """What ``ceph-volume raw list DEVICE`` reads from the BlueStore label (None: no OSD)."""
    res = subprocess.run(["ceph-volume", "raw", "list", device, "--format", "json"],  # noqa: S603
                         capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
    if res.returncode != 0:
        return None
    try:
        found = list(json.loads(res.stdout).values())
    except ValueError:
        return None
    return dict(found[0]) if found else None


def wipe_head(device: str, size: int = 10 * 1024**2) -> None:
    """Zero the first ``size`` bytes of ``device`` (BlueStore label, BlueFS superblock), as
    `ceph-volume lvm zap` does for a device it knows."""
    fd = os.open(device, os.O_WRONLY)
    try:
        zeros = bytes(1024**2)
        for off in range(0, size, len(zeros)):
            os.pwrite(fd, zeros, off)
        os.fsync(fd)
    finally:
        os.close(fd)


def find_osd(ctx: Context, c: Any, plan_uuid: str) -> int | None:
    return osd_id_by_uuid(c, real_fsid(ctx, plan_uuid))


@dataclass
class CreateOsd(Step):
    """Register an OSD for ``device`` and prepare it (keyring, BlueStore mkfs)."""

    TYPE = "ceph.osd.create"

    DESTRUCTIVE = True
    osd_uuid: str
    device: str
    provisioner: str
    size: int = 0
    device_class: str = ""

    def describe(self, ctx: Context) -> str:
        what = (f"a {self.size / 1024**3:g} GiB file" if self.provisioner == "file" else self.device)
        return f"create a BlueStore OSD on {what} (uuid {self.osd_uuid[:8]}) [{self.provisioner}]"

    def check(self, ctx: Context) -> None:
        s = Settings.from_ctx(ctx)
        tool = "ceph-osd" if self.provisioner == "file" else "ceph-volume"
        if shutil.which(tool) is None:
            raise StepFailed(f"{tool} is not installed (needed by the {self.provisioner} provisioner)")
        if self.provisioner == "file" and not s.file_dir:
            raise StepFailed("the file provisioner needs `file_dir` in the [ceph] config table")

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        s = Settings.from_ctx(ctx)
        if self.provisioner == "file":
            p = _file_paths(s, self.osd_uuid)
            with session(ctx) as c:
                osd_id = int(c.mon("osd new", uuid=self.osd_uuid)["osdid"])
                key = c._run("mon", "auth get-or-create", {"entity": f"osd.{osd_id}", "caps": OSD_CAPS},
                              fmt=False)[1]
            p["data"].mkdir(parents=True, exist_ok=True)
            p["block"].parent.mkdir(parents=True, exist_ok=True)
            (p["data"] / "keyring").write_text(key if key.endswith("\n") else key + "\n")
            (p["data"] / "keyring").chmod(0o600)
            try:
                _mkfs(s.conf, osd_id, self.osd_uuid, p["data"], p["block"], self.size, 300)
            except Exception as exc:  # noqa: BLE001 - one clear sentence
                raise StepFailed(getattr(exc, "message", str(exc))) from None
        else:
            env = _volume_env(s)
            if self.provisioner == RAW:  # ceph-volume picks the fsid: recorded for the steps after
                argv = ["ceph-volume", "raw", "prepare", "--bluestore", "--data", self.device, "--no-tmpfs"]
            else:
                argv = ["ceph-volume", "lvm", "prepare", "--bluestore", "--data", self.device,
                        "--osd-fsid", self.osd_uuid]
            if self.device_class:
                argv += ["--crush-device-class", self.device_class]
            _run(argv, timeout=600, env=env)
            if self.provisioner == RAW:
                label = raw_label(self.device, env)
                if label is None:
                    raise StepFailed(f"ceph-volume raw prepare left no OSD label on {self.device}")
                _remember_fsid(ctx, self.osd_uuid, str(label["osd_uuid"]))
            with session(ctx) as c:
                found = find_osd(ctx, c, self.osd_uuid)
            if found is None:
                raise StepFailed(f"no OSD with uuid {self.osd_uuid} after ceph-volume prepare")
            osd_id = found
        if osd_id is None:
            raise StepFailed(f"no OSD with uuid {self.osd_uuid} after prepare")
        return {"osd_id": osd_id}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        with session(ctx) as c:
            if find_osd(ctx, c, self.osd_uuid) is None:
                raise StepFailed(f"the mons do not know the OSD with uuid {self.osd_uuid}")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        s = Settings.from_ctx(ctx)
        fsid = real_fsid(ctx, self.osd_uuid)
        if self.provisioner == RAW and fsid == self.osd_uuid:  # killed before it was recorded
            label = raw_label(self.device, _volume_env(s))
            fsid = str(label["osd_uuid"]) if label else fsid
        with session(ctx) as c:
            osd_id = osd_id_by_uuid(c, fsid)
            if osd_id is not None:
                c._run("mon", "osd down", {"ids": [str(osd_id)]}, fmt=False)
                c.mon_do("osd purge-actual", id=osd_id, yes_i_really_mean_it=True)
                c._run("mon", "auth del", {"entity": f"osd.{osd_id}"}, allow=(-2,), fmt=False)
        if self.provisioner == "file":
            p = _file_paths(s, self.osd_uuid)
            shutil.rmtree(p["data"], ignore_errors=True)
            p["block"].unlink(missing_ok=True)
        elif self.provisioner == RAW:
            if osd_id is not None:
                shutil.rmtree(f"{OSD_DATA}/{CLUSTER}-{osd_id}", ignore_errors=True)
            wipe_head(self.device)
        else:
            _run(["ceph-volume", "lvm", "zap", "--destroy", "--osd-fsid", self.osd_uuid], timeout=600,
                 env=_volume_env(s))


@dataclass
class PlaceOsd(Step):
    """Put the OSD in CRUSH under its host bucket with its weight and device class."""

    TYPE = "ceph.osd.place"

    osd_uuid: str
    host: str
    weight: float
    device_class: str = ""
    root: str = "default"

    def describe(self, ctx: Context) -> str:
        cls = f", class {self.device_class}" if self.device_class else ""
        return f"place the new OSD under host={self.host} root={self.root} with weight {self.weight:g}{cls}"

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        with session(ctx) as c:
            osd_id = _need_id(ctx, c, self.osd_uuid)
            c.mon_do("osd crush add", id=osd_id, weight=float(self.weight),
                     args=[f"host={self.host}", f"root={self.root}"])
            if self.device_class:
                c._run("mon", "osd crush rm-device-class", {"ids": [f"osd.{osd_id}"]}, fmt=False)
                dc: dict[str, Any] = {"class": self.device_class, "ids": [f"osd.{osd_id}"]}
                c.mon_do("osd crush set-device-class", **dc)
        return {"osd_id": osd_id}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        with session(ctx) as c:
            tree = c.mon("osd tree")
        from .analysis import tree_index

        if tree_index(tree)["host_of"].get(record["osd_id"]) != self.host:
            raise StepFailed(f"osd.{record['osd_id']} is not under host {self.host} in CRUSH")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        with session(ctx) as c:
            osd_id = find_osd(ctx, c, self.osd_uuid)
            if osd_id is not None:
                c._run("mon", "osd crush remove", {"name": f"osd.{osd_id}"}, allow=(-2,), fmt=False)


def _need_id(ctx: Context, c: Any, osd_uuid: str) -> int:
    osd_id = find_osd(ctx, c, osd_uuid)
    if osd_id is None:
        raise StepFailed(f"no OSD with uuid {osd_uuid}")
    return osd_id


def _systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


def _raw_pidfile(ctx: Context, osd_id: int) -> Path:
    return ctx.plugin_state("ceph") / "osd" / f"osd-{osd_id}.pid"


@dataclass
class StartOsd(Step):
    """Start the OSD daemon (file: ``ceph-osd -f`` with a pidfile; ceph-volume: its activate,
    then the ``ceph-osd@ID`` unit — or, without systemd, ``ceph-osd -f`` as the ceph user)."""

    TYPE = "ceph.osd.start"

    osd_uuid: str
    provisioner: str
    device: str = ""

    def describe(self, ctx: Context) -> str:
        return f"start the new OSD's daemon (uuid {self.osd_uuid[:8]})"

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        s = Settings.from_ctx(ctx)
        with session(ctx) as c:
            osd_id = _need_id(ctx, c, self.osd_uuid)
        from debvisor_core.lab.process import spawn

        if self.provisioner == "file":
            p = _file_paths(s, self.osd_uuid)
            p["pid"].parent.mkdir(parents=True, exist_ok=True)
            p["log"].parent.mkdir(parents=True, exist_ok=True)
            spawn(osd_argv(s.conf, osd_id, p["data"]), pidfile=p["pid"], log=p["log"])
        elif self.provisioner == RAW:
            env = _volume_env(s)
            _run(["ceph-volume", "raw", "activate", "--device", self.device, "--no-tmpfs", "--no-systemd"],
                 env=env)
            if _systemd():
                _run(["systemctl", "start", f"ceph-osd@{osd_id}"])
            else:
                pid = _raw_pidfile(ctx, osd_id)
                pid.parent.mkdir(parents=True, exist_ok=True)
                spawn(["ceph-osd", "-f", "--cluster", CLUSTER, "--id", str(osd_id), "--setuser", "ceph",
                       "--setgroup", "ceph"], pidfile=pid, log=pid.with_suffix(".out"), env=env)
        else:
            _run(["ceph-volume", "lvm", "activate", str(osd_id), self.osd_uuid], env=_volume_env(s))
        return {"osd_id": osd_id}

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        s = Settings.from_ctx(ctx)
        from debvisor_core.lab.process import stop_pidfile

        if self.provisioner == "file":
            stop_pidfile(_file_paths(s, self.osd_uuid)["pid"], timeout=30)
        elif record.get("osd_id") is None:
            return
        elif self.provisioner == RAW and not _systemd():
            stop_pidfile(_raw_pidfile(ctx, int(record["osd_id"])), timeout=30)
        else:
            _run(["systemctl", "stop", f"ceph-osd@{record['osd_id']}"])


@dataclass
class VerifyOsdUp(Step):
    """Wait until the mons report the new OSD up (nothing to undo)."""

    TYPE = "ceph.osd.verify-up"

    osd_uuid: str
    timeout: float = 120.0

    def describe(self, ctx: Context) -> str:
        return f"wait until the new OSD (uuid {self.osd_uuid[:8]}) is up"

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        with session(ctx) as c:
            osd_id = _need_id(ctx, c, self.osd_uuid)

            def up() -> bool:
                return any(int(o["osd"]) == osd_id and o.get("up") for o in c.mon("osd dump")["osds"])

            wait(up, self.timeout, f"osd.{osd_id} to come up")
        from debvisor_core import log

        log.info(f"osd.{osd_id} created and up")
        return {"osd_id": osd_id}
