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
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debvisor_core import log
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
    """Record ``plan_uuid → fsid`` durably (``statefile.update_json``: flock, tmp + fsync +
    rename + directory fsync): the steps after CreateOsd, and a rollback after a crash, find
    the OSD through it."""
    update_json(_aliases(ctx), lambda d: d.__setitem__(plan_uuid, fsid))


# --- the disk's identity (recorded at plan time, re-checked before any purge or wipe) ----

LABEL_MAGIC = b"bluestore block device\n"
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: identity keys that name a disk whatever its kernel name is
STRONG_KEYS = ("wwn", "wwid", "serial", "by_id", "backing_file")


def _sys_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _udev_props(device: str) -> dict[str, str]:
    if shutil.which("udevadm") is None:
        return {}
    try:
        res = subprocess.run(["udevadm", "info", "--query=property", f"--name={device}"],  # noqa: S603
                             capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return {}
    if res.returncode != 0:
        return {}
    return dict(ln.split("=", 1) for ln in res.stdout.splitlines() if "=" in ln)


def disk_identity(device: str) -> dict[str, Any]:
    """What names the disk at ``device`` beyond its kernel name: size, ``major:minor``,
    ``/dev/disk/by-id`` links, WWN/WWID and serial (udev, sysfs) and, for a loop device,
    its backing file and that file's ``st_dev:st_ino``. Raises StepFailed when ``device``
    is not a block device."""
    try:
        st = os.stat(device)
    except OSError as exc:
        raise StepFailed(f"{device} does not exist ({exc.strerror})") from None
    if not stat.S_ISBLK(st.st_mode):
        raise StepFailed(f"{device} is not a block device")
    dev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    sysdir = Path("/sys/dev/block") / dev
    real = os.path.realpath(device)
    out: dict[str, Any] = {"path": device, "name": os.path.basename(os.path.realpath(sysdir)), "dev": dev}
    try:
        out["size"] = int(_sys_text(sysdir / "size") or 0) * 512
    except ValueError:
        out["size"] = 0
    by_id = Path("/dev/disk/by-id")
    with contextlib.suppress(OSError):
        out["by_id"] = sorted(str(p) for p in by_id.iterdir() if os.path.realpath(p) == real)
    udev = _udev_props(device)
    wwn = udev.get("ID_WWN_WITH_EXTENSION") or udev.get("ID_WWN") or ""
    wwid = _sys_text(sysdir / "wwid") or _sys_text(sysdir / "device" / "wwid")
    serial = (udev.get("ID_SERIAL") or _sys_text(sysdir / "serial")
              or _sys_text(sysdir / "device" / "serial"))
    for key, value in (("wwn", wwn), ("wwid", wwid), ("serial", serial)):
        if value:
            out[key] = value
    backing = _sys_text(sysdir / "loop" / "backing_file")
    if backing:
        out["backing_file"] = backing
        try:
            bst = os.stat(backing)
            out["backing_inode"] = f"{bst.st_dev}:{bst.st_ino}"
        except OSError:
            out["backing_inode"] = "gone"
        out["backing_offset"] = _sys_text(sysdir / "loop" / "offset")
    return {k: v for k, v in out.items() if v not in (None, [], "")}


def describe_disk(ident: dict[str, Any]) -> str:
    """``/dev/loop3 (7:3, 3.0 GiB, backed by /tmp/disk.img)`` and the like, for messages."""
    bits = [str(ident.get("dev", "?")), f"{int(ident.get('size', 0)) / 1024**3:.1f} GiB"]
    for key, word in (("wwn", "WWN"), ("wwid", "WWID"), ("serial", "serial")):
        if ident.get(key):
            bits.append(f"{word} {ident[key]}")
    if ident.get("backing_file"):
        bits.append(f"backed by {ident['backing_file']}")
    elif ident.get("by_id"):
        bits.append(str(ident["by_id"][0]))
    return f"{ident.get('path', '?')} ({', '.join(bits)})"


def identity_mismatch(recorded: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Why the disk described by ``now`` is not the one ``recorded`` (None: it is). Only the
    keys that were recorded are compared; size always is."""
    if int(recorded.get("size", -1)) != int(now.get("size", -2)):
        return f"its size is {now.get('size')} bytes, not {recorded.get('size')}"
    for key, word in (("wwn", "WWN"), ("wwid", "WWID"), ("serial", "serial")):
        if recorded.get(key) and recorded[key] != now.get(key):
            return f"its {word} is {now.get(key) or 'missing'}, not {recorded[key]}"
    if recorded.get("backing_file"):
        if (recorded["backing_file"], recorded.get("backing_inode"), recorded.get("backing_offset")) != (
                now.get("backing_file"), now.get("backing_inode"), now.get("backing_offset")):
            return (f"it is backed by {now.get('backing_file') or 'nothing'} "
                    f"(inode {now.get('backing_inode', '-')}), not {recorded['backing_file']} "
                    f"(inode {recorded.get('backing_inode', '-')})")
    if recorded.get("by_id") and not set(recorded["by_id"]) & set(now.get("by_id") or []):
        return f"none of its /dev/disk/by-id links is {recorded['by_id'][0]}"
    if not any(recorded.get(k) for k in STRONG_KEYS) and recorded.get("dev") != now.get("dev"):
        return f"it is device {now.get('dev')}, not {recorded.get('dev')}"
    return None


def locate_disk(recorded: dict[str, Any], device: str
                ) -> tuple[str | None, dict[str, Any] | None, str]:
    """``(path, identity, "")`` of the disk ``recorded`` describes: ``device`` if it still is
    that disk, else one of its recorded by-id links (kernel names move across reboots);
    ``(None, None, why)`` when neither is."""
    why = ""
    for cand in [device, *(recorded.get("by_id") or [])]:
        try:
            now = disk_identity(cand)
        except StepFailed as exc:
            why = why or exc.message
            continue
        diff = identity_mismatch(recorded, now)
        if diff is None:
            return os.path.realpath(cand), now, ""
        why = why or f"{cand} is another disk now: {diff}"
    return None, None, why


def label_fsid(device: str | int) -> str | None:
    """The OSD fsid in the BlueStore label at the start of ``device`` (a path or an open fd),
    or None when it carries no BlueStore label."""
    n = len(LABEL_MAGIC) + 37
    if isinstance(device, int):
        head = os.pread(device, n, 0)
    else:
        try:
            with open(device, "rb") as f:
                head = f.read(n)
        except OSError:
            return None
    if not head.startswith(LABEL_MAGIC):
        return None
    text = head[len(LABEL_MAGIC):len(LABEL_MAGIC) + 36].decode(errors="replace")
    return text if _UUID_RE.match(text) else None


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


def wipe_head(device: str, size: int = 10 * 1024**2, *, rdev: str | None = None,
              fsid: str | None = None) -> None:
    """Zero the first ``size`` bytes of ``device`` (BlueStore label, BlueFS superblock), as
    `ceph-volume lvm zap` does for a device it knows. With ``rdev``/``fsid``, the open device
    must still be ``major:minor`` ``rdev`` and carry the label of OSD ``fsid`` (checked on
    the open descriptor, so the device cannot change between the check and the write)."""
    try:  # O_EXCL: refused while mounted or held by the kernel (LVM, md, dm)
        fd = os.open(device, os.O_RDWR | os.O_EXCL)
    except OSError as exc:
        raise StepFailed(f"cannot open {device} to wipe it ({exc.strerror}); nothing was wiped") from None
    try:
        if rdev is not None:
            st = os.fstat(fd)
            if f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" != rdev:
                raise StepFailed(f"{device} changed to another device while it was being wiped; "
                                 "nothing was wiped")
        if fsid is not None:
            found = label_fsid(fd)
            if found != fsid:
                raise StepFailed(f"{device} no longer carries the label of OSD {fsid}; nothing was wiped")
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
    disk: dict[str, Any] = field(default_factory=dict)  # identity at plan time (device provisioners)

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

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        """For a device: its identity, which must still be the one planned (a resume after a
        reboot may find another disk at the path); for a raw one also the OSD fsid its label
        carries now (none, for an unused disk) and the fsids of the OSDs that exist before
        this step — what the undo needs to tell the OSD this step created from any other."""
        if self.provisioner == "file":
            return {}
        disk = disk_identity(self.device)
        why = identity_mismatch(self.disk, disk) if self.disk else None
        if why:
            raise StepFailed(f"{self.device} is no longer the disk that was planned "
                             f"({describe_disk(self.disk)}): {why}; it was not touched")
        if self.provisioner != RAW:
            return {"disk": disk}
        with session(ctx) as c:
            before = sorted(str(o["uuid"]) for o in c.mon("osd dump").get("osds", []) if o.get("uuid"))
        return {"disk": disk, "label_before": label_fsid(self.device), "osds_before": before}

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
            fsid = self.osd_uuid
            if self.provisioner == RAW:
                label = raw_label(self.device, env)
                if label is None:
                    raise StepFailed(f"ceph-volume raw prepare left no OSD label on {self.device}")
                fsid = str(label["osd_uuid"])
                _remember_fsid(ctx, self.osd_uuid, fsid)
            with session(ctx) as c:
                found = find_osd(ctx, c, self.osd_uuid)
            if found is None:
                raise StepFailed(f"no OSD with uuid {self.osd_uuid} after ceph-volume prepare")
            return {"osd_id": found, "osd_fsid": fsid}  # journalled: the undo's proof of ownership
        if osd_id is None:
            raise StepFailed(f"no OSD with uuid {self.osd_uuid} after prepare")
        return {"osd_id": osd_id, "osd_fsid": self.osd_uuid}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        with session(ctx) as c:
            if find_osd(ctx, c, self.osd_uuid) is None:
                raise StepFailed(f"the mons do not know the OSD with uuid {self.osd_uuid}")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        s = Settings.from_ctx(ctx)
        if self.provisioner == RAW:
            self._undo_raw(ctx, record)
            return
        fsid = str(record.get("osd_fsid") or real_fsid(ctx, self.osd_uuid))
        with session(ctx) as c:
            osd_id = osd_id_by_uuid(c, fsid)
            if osd_id is not None:
                _purge(c, osd_id)
        if self.provisioner == "file":
            p = _file_paths(s, self.osd_uuid)
            shutil.rmtree(p["data"], ignore_errors=True)
            p["block"].unlink(missing_ok=True)
        else:
            _run(["ceph-volume", "lvm", "zap", "--destroy", "--osd-fsid", self.osd_uuid], timeout=600,
                 env=_volume_env(s))

    def _undo_raw(self, ctx: Context, record: dict[str, Any]) -> None:
        """Purge and wipe only what this step made. The OSD is purged by the fsid journalled
        (or recorded in the alias file); the disk must still be the one recorded at plan time
        (else StepFailed: rollback incomplete) and is wiped only when its label names that
        OSD — or, when prepare ran but its fsid was never recorded, an OSD that did not exist
        before this step. No label (prepare never ran): nothing is wiped."""
        alias = real_fsid(ctx, self.osd_uuid)
        known = str(record.get("osd_fsid") or (alias if alias != self.osd_uuid else "")) or None
        if known:
            self._purge_fsid(ctx, known)
        disk = record.get("disk") or self.disk
        if isinstance(disk, dict) and disk:
            dev, now, why = locate_disk(disk, self.device)
        else:  # journalled by an older version: no identity, only the label can vouch for the disk
            dev, now, why = self.device, None, ""
        if dev is None:
            done = "its OSD was purged, the disk was not wiped" if known else "nothing was purged or wiped"
            raise StepFailed(f"the disk at {self.device} is no longer the one this join prepared "
                             f"({why}); {done}: find {describe_disk(disk or {})} and clean it by hand")
        on_disk = label_fsid(dev)
        if on_disk is None:
            log.info(f"{dev} carries no BlueStore label (ceph-volume raw prepare did not write one); "
                     "nothing to wipe")
            return
        before = set(record.get("osds_before") or []) | {record.get("label_before")}
        ours = on_disk == known if known else (now is not None and on_disk not in before)
        if not ours:
            done = "its own OSD was purged" if known else "nothing was purged"
            raise StepFailed(f"{dev} carries the BlueStore label of OSD {on_disk}, which this join did "
                             f"not create; {done} and the disk was not wiped")
        if not known:  # prepare ran, its fsid was never recorded: the label names our new OSD
            self._purge_fsid(ctx, on_disk)
        wipe_head(dev, rdev=now["dev"] if now else None, fsid=on_disk)

    def _purge_fsid(self, ctx: Context, fsid: str) -> None:
        """Purge the OSD with ``fsid`` (if the mons still know it) and its data dir."""
        with session(ctx) as c:
            osd_id = osd_id_by_uuid(c, fsid)
            if osd_id is not None:
                _purge(c, osd_id)
        if osd_id is not None:
            shutil.rmtree(f"{OSD_DATA}/{CLUSTER}-{osd_id}", ignore_errors=True)


def _purge(c: Any, osd_id: int) -> None:
    c._run("mon", "osd down", {"ids": [str(osd_id)]}, fmt=False)
    c.mon_do("osd purge-actual", id=osd_id, yes_i_really_mean_it=True)
    c._run("mon", "auth del", {"entity": f"osd.{osd_id}"}, allow=(-2,), fmt=False)


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
            found = label_fsid(self.device)
            if found != real_fsid(ctx, self.osd_uuid):
                raise StepFailed(f"{self.device} does not carry the label of the OSD this join prepared "
                                 f"({found or 'no BlueStore label'}); not activating it")
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
        log.info(f"osd.{osd_id} created and up")
        op = ctx.operation  # the join's result lists the new OSDs in the order of its devices
        if op is not None and op.kind in ("ceph.join", "node.join"):
            op.result.setdefault("osds", []).append(osd_id)
        return {"osd_id": osd_id}
