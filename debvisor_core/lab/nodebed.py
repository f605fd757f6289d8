"""Node test bed: lab nodes as namespaces on one machine, with real sshd and apt.

Each node is an overlay (per-node upper directory, kept across "reboots" like a disk) on a
cached debootstrap base (:func:`ensure_base`), in its own network namespace and, for each
boot, fresh mount/UTS/IPC/PID namespaces where ``/usr/local/sbin/testbed-init`` runs as
PID 1 after a ``pivot_root`` into the overlay. A supervisor boots the node again whenever
its init exits 129: ``reboot`` inside the node is ``kill -HUP 1``, ``poweroff`` is
``kill -TERM 1``. At each boot testbed-init sets the host name, makes the node's own SSH
host keys on the first boot (``ssh-keygen -A``), writes a fresh boot id to
``/run/testbed/boot-id`` (also bound over ``/proc/sys/kernel/random/boot_id``), binds the
"booted kernel" over ``/proc/sys/kernel/osrelease`` (``uname -r`` keeps showing the host's
kernel), starts the node's services (``/etc/testbed/services.d``) and ``sshd``. The boot
loader before it (``boot.sh``) picks that kernel like GRUB's default (the newest
``/boot/vmlinuz-*`` by ``sort -V``, unless ``/etc/testbed/boot-override`` names one); on a
bed with ``real_boot``, a real kernel image is booted under QEMU/TCG and the release it
reports is the booted kernel.

The nodes (``node1``..``nodeN``, 10.213.X.11.. on a /24) sit on a bridge in a fabric
namespace; the host reaches them through a veth whose host end has 10.213.X.1 and serves a
flat apt repository (:class:`Repo`) there over HTTP, the only source in the nodes'
``/etc/apt/sources.list``; it is also the nodes' default gateway and the name server in
their ``/etc/resolv.conf`` (nothing forwards or answers DNS there). Namespace, interface
names and the /24 are derived from the bed's directory, so two beds never collide. The
checkout holding this package (and the venv running it) is bind-mounted read-only at the
same path in every node, so
``/work/main/.venv/bin/debvisor`` runs there with the node's ``/etc/debvisor/debvisor.toml``
(the redirected kernel and boot id files) and its own ``/var/lib/debvisor``.

Usage::

    with Bed(tmp_path / "bed", nodes=3) as bed:
        bed.repo.add_release("1.0"); bed.repo.index()
        bed.run("node1", "apt-get update && apt-get -y install debvisor-test-agent")
        bed.reboot("node1", via_ssh=True)
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from functools import partial
from pathlib import Path
from typing import Any

from . import LabContext, LabService, netns
from .manager import merge, to_toml
from .process import LabError, free_port, read_pid, run, spawn, stop, stop_pidfile, wait_for

CACHE_DIR = Path(os.environ.get("DEBVISOR_LAB_CACHE", "/var/cache/debvisor-lab"))
"""Lab cache, reused across runs (``DEBVISOR_LAB_CACHE`` overrides); the base is in it."""
BASE_DIR = CACHE_DIR / "nodebed-base"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "openssh-server", "openssh-client", "iproute2", "procps")
"""Installed into the debootstrap minbase."""
_RECIPE = {"suite": SUITE, "variant": "minbase", "packages": list(BASE_PACKAGES), "rev": 1}
_STAMP = "etc/debvisor-nodebed-base.json"
NS_PREFIX = "nb"
SUBNET_PREFIX = "10.213"
"""Beds use 10.213.X.0/24 (X derived from the bed directory, the next free one if taken)."""
KERNELS = {"6.1.0-90-debvisor": "6.1.90-1", "6.1.0-91-debvisor": "6.1.91-1"}
"""The fake Debian-like versioned kernel packages (``linux-image-RELEASE``): release -> version."""
KERNEL_META = "linux-image-debvisor-amd64"
RELEASES: dict[str, dict[str, str]] = {
    "1.0": {"agent": "1.0", "kernel": "6.1.0-90-debvisor"},
    "1.1": {"agent": "1.1", "kernel": "6.1.0-91-debvisor"},
}
"""What :meth:`Repo.add_release` publishes: the test agent, a kernel and the metapackage."""
NODE_CONFIG: dict[str, Any] = {
    "upgrade": {
        "running_kernel_file": "/proc/sys/kernel/osrelease",
        "boot_id_file": "/run/testbed/boot-id",
        "reboot_command": ["/usr/local/sbin/reboot"],
        "ignore_services": ["ssh-keygen"],  # init's first-boot key generation: transient
    }
}
"""The nodes' /etc/debvisor/debvisor.toml (``Bed(config=...)`` merges more into it)."""

_LOCK = Path("/run/debvisor-nodebed.lock")

# --- fixed scripts (values are passed as arguments, never interpolated) --------------------

_SUPERVISE = """#!/bin/sh
# Supervisor of one DebVisor test-bed node (fixed content, written by
# debvisor_core.lab.nodebed): boots the node in fresh namespaces, and boots it again each
# time its init exits 129 ("reboot"). Arguments: BOOT_SCRIPT NODE_DIR LOWER_DIR [RO_DIR...]
while :; do
    unshare --mount --uts --ipc --pid --fork --kill-child --propagation private -- /bin/sh "$@"
    rc=$?
    [ "$rc" -eq 129 ] || exit "$rc"
    echo "testbed: rebooting"
done
"""

_BOOT = """#!/bin/sh
# One boot of a DebVisor test-bed node (fixed content, written by debvisor_core.lab.nodebed),
# run in the node's fresh private mount namespace: the overlay root, /proc, /sys, /run,
# /dev/pts, the read-only host directories, then pivot_root into it (no host mount stays
# visible or pinned) and testbed-init as PID 1. Arguments: NODE_DIR LOWER_DIR [RO_DIR...]
set -eu
node=$1
lower=$2
shift 2
root=$node/root
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$node/upper,workdir=$node/work" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
mount --bind "$root/dev/pts/ptmx" "$root/dev/ptmx"
for dir in "$@"; do
    mount --bind "$dir" "$root$dir"
    mount -o remount,bind,ro "$root$dir"
done
# the boot loader (GRUB's default entry): the newest /boot/vmlinuz-*, unless the node's
# /etc/testbed/boot-override names another
kernel=
if [ -s "$root/etc/testbed/boot-override" ]; then
    kernel=$(head -n 1 "$root/etc/testbed/boot-override" 2>/dev/null) || kernel=
    [ -f "$root/boot/vmlinuz-$kernel" ] || kernel=  # no such entry: the default one
fi
if [ -z "$kernel" ]; then
    kernel=$(ls "$root/boot" 2>/dev/null | sed -n 's/^vmlinuz-//p' | sort -V | tail -n 1)
fi
# a real kernel image (bzImage) on a bed with real boots ($node/real-boot names the probe
# initramfs): boot it under QEMU/TCG and take the release the kernel itself reports; one
# that does not boot leaves the previous kernel booted (GRUB's fallback entry)
image=$root/boot/vmlinuz-$kernel
if [ -n "$kernel" ] && [ -s "$node/real-boot" ] && [ -f "$image" ] &&
        [ "$(dd if="$image" bs=1 skip=514 count=4 2>/dev/null)" = HdrS ]; then
    if reported=$(/bin/sh "${0%/*}/qemu-boot.sh" "$image" "$(sed -n 1p "$node/real-boot")" \\
            "$node/qemu-boot.log" "$(sed -n 2p "$node/real-boot")"); then
        kernel=$reported
    else
        kernel=$(ls "$root/boot" | sed -n 's/^vmlinuz-//p' | sort -V | grep -vxF "$kernel" |
                 tail -n 1)
    fi
fi
if [ -n "$kernel" ]; then
    printf '%s\\n' "$kernel" >"$root/run/testbed-booted-kernel"
fi
cd "$root"
pivot_root . .
umount -l .
cd /
exec /usr/local/sbin/testbed-init
"""

_INIT = """#!/bin/sh
# PID 1 of a DebVisor test-bed node (fixed content, written by debvisor_core.lab.nodebed).
# SIGHUP = reboot (exit 129: the supervisor boots the node again), SIGTERM = power off.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
halt() {
    trap '' HUP TERM
    echo "testbed-init: $2"
    kill -TERM -1 2>/dev/null
    exit "$1"
}
trap 'halt 129 reboot' HUP
trap 'halt 0 poweroff' TERM
hostname "$(cat /etc/hostname)"
mkdir -p /run/testbed /run/sshd /run/lock
chmod 0755 /run/sshd
# this boot's identity (the real boot id is the host's in a namespace)
cat /proc/sys/kernel/random/uuid >/run/testbed/boot-id
mount --bind /run/testbed/boot-id /proc/sys/kernel/random/boot_id
# the kernel the boot loader picked (boot.sh), bound over the release the node reports
if [ -s /run/testbed-booted-kernel ]; then
    mv /run/testbed-booted-kernel /run/testbed/booted-kernel
    mount --bind /run/testbed/booted-kernel /proc/sys/kernel/osrelease
else
    cat /proc/sys/kernel/osrelease >/run/testbed/booted-kernel
fi
# first boot: this node's own host keys (ed25519 now, the rest of `ssh-keygen -A` after
# sshd started: on this first boot sshd offers the ed25519 key only)
k=/etc/ssh/ssh_host_ed25519_key
[ -e "$k" ] || ssh-keygen -q -t ed25519 -N '' -C "root@$(hostname)" -f "$k"
# the node's services: each executable in /etc/testbed/services.d, started by init
# (before sshd: once a node answers SSH, its services have been started)
for service in /etc/testbed/services.d/*; do
    if [ -x "$service" ]; then "$service" & fi
done
/usr/sbin/sshd -D -e &
ssh-keygen -A >/dev/null &
echo "testbed-init: up, kernel $(cat /run/testbed/booted-kernel)"
while :; do
    sleep infinity &
    wait $!
done
"""

AGENT_SERVICE = "dv-agentd"
"""The test agent's service (a process named so, started by the node's init)."""
_AGENTD = """#!/bin/sh
# debvisor-test-agent @VERSION@'s daemon (test bed). From 1.1 on it refuses the option
# legacy=yes in /etc/default/dv-agentd, as real daemons refuse options they dropped.
if [ "@VERSION@" != 1.0 ] && grep -qx 'legacy=yes' /etc/default/dv-agentd 2>/dev/null; then
    echo "dv-agentd: legacy=yes is no longer supported" >&2
    exit 1
fi
while :; do sleep 3600; done
"""

_QEMU_BOOT = """#!/bin/sh
# A real boot of a test-bed node's kernel (fixed content, written by
# debvisor_core.lab.nodebed): KERNEL with the probe INITRD under QEMU/TCG, its serial
# console in LOG; prints the release the kernel reported (fails if it reported none).
# Arguments: KERNEL INITRD LOG SECONDS (the longest the boot may take)
kernel=$1
initrd=$2
log=$3
: >"$log"
timeout "${4:-300}" qemu-system-x86_64 -machine pc -accel tcg -m 256 -smp 1 -nodefaults \\
    -no-reboot -display none -serial "file:$log" -kernel "$kernel" -initrd "$initrd" \\
    -append "console=ttyS0 panic=-1" </dev/null >/dev/null 2>>"$log" || true
sed -n 's/^DVBOOT release=\\([^[:space:]]*\\).*/\\1/p' "$log" | tail -n 1 | grep .
"""

_PROBE_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "DVBOOT release=$(/bin/busybox uname -r)"
/bin/busybox poweroff -f
"""
BUSYBOX = Path("/bin/busybox")
"""A static busybox (Debian's busybox-static), the probe initramfs's only program."""


def probe_initrd(cache: Path = CACHE_DIR) -> Path:
    """The initramfs a real boot of a bed node's kernel runs (cached): it prints the kernel's
    release on the serial console and powers off."""
    from .cpio import write_initramfs

    busybox = BUSYBOX.read_bytes()
    digest = hashlib.sha256(busybox + _PROBE_INIT.encode()).hexdigest()[:12]
    path = cache / f"nodebed-boot-{digest}.img"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    entries = [(d, 0o040755, b"", (0, 0)) for d in ("bin", "proc", "dev")]
    entries += [("dev/console", 0o020600, b"", (5, 1)),
                ("bin/busybox", 0o100755, busybox, (0, 0)),
                ("init", 0o100755, _PROBE_INIT.encode(), (0, 0))]
    return write_initramfs(path, entries)


_REBOOT = "#!/bin/sh\n# test-bed node: init reboots the node on SIGHUP\nexec kill -HUP 1\n"
_POWEROFF = "#!/bin/sh\n# test-bed node: init powers the node off on SIGTERM\nexec kill -TERM 1\n"


# --- the base --------------------------------------------------------------------------------


def mirror() -> str:
    """The Debian mirror this host's apt uses (deb822 or one-line sources)."""
    d = Path("/etc/apt")
    for f in sorted((d / "sources.list.d").glob("*.sources")):
        for stanza in f.read_text(errors="replace").split("\n\n"):
            fields = dict(ln.split(":", 1) for ln in stanza.splitlines()
                          if ":" in ln and not ln.startswith((" ", "#")))
            if SUITE in fields.get("Suites", "").split() and fields.get("URIs", "").strip():
                return fields["URIs"].split()[0]
    for f in [d / "sources.list", *sorted((d / "sources.list.d").glob("*.list"))]:
        with contextlib.suppress(OSError):
            for line in f.read_text(errors="replace").splitlines():
                words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    return "http://deb.debian.org/debian"


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[int]:
    """Hold an exclusive lock on ``path``; yields its fd (a child given it holds it too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield f.fileno()


def _base_ok(base: Path) -> bool:
    try:
        return bool(json.loads((base / _STAMP).read_text()) == _RECIPE)
    except (OSError, ValueError):
        return False


def _run_group(argv: Sequence[str], *, timeout: float, log: Path,
               pass_fds: Sequence[int] = ()) -> None:
    """Run ``argv`` in its own process group (all of it is killed if we fail or time out)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,  # noqa: S603
                                stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=tuple(pass_fds))
        try:
            rc = proc.wait(timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise LabError(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed ({rc}): "
                       + " | ".join(tail))


def ensure_base(cache: Path = BASE_DIR) -> Path:
    """The debootstrap ``minbase`` bookworm tree with :data:`BASE_PACKAGES`, built on first
    use (about 30-60 s) into a temporary directory renamed to ``cache`` when complete, and
    reused afterwards. Host keys and apt lists are removed; ``policy-rc.d`` denies starts.
    Builders take turns on a lock file that the build's processes hold too: a builder
    killed mid-way leaves only a ``.NAME.tmp-*`` directory, removed by the next build."""
    if _base_ok(cache):
        return cache
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed (apt-get install debootstrap)")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with _flock(cache.parent / f".{cache.name}.lock") as lock:
        if _base_ok(cache):  # built by someone else meanwhile
            return cache
        for stale in cache.parent.glob(f".{cache.name}.tmp-*"):  # interrupted builds
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.tmp-", dir=cache.parent))
        try:
            log = cache.parent / f"{cache.name}.log"
            log.write_text("")
            # debootstrap's own /proc and /sys mounts live in a private mount namespace:
            # they vanish with it, even when the build is killed.
            _run_group(["unshare", "--mount", "--propagation", "private", "--",
                        "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                        SUITE, str(tmp), mirror()], timeout=1800, log=log, pass_fds=[lock])
            _finish_base(tmp)
            if cache.exists():  # an outdated recipe: replace it (beds on it must be stopped)
                old = Path(tempfile.mkdtemp(prefix=f".{cache.name}.tmp-", dir=cache.parent))
                cache.rename(old / "old")
                tmp.rename(cache)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(cache)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return cache


def _finish_base(root: Path) -> None:
    for need in ("usr/bin/python3.11", "usr/sbin/sshd", "usr/bin/ssh-keygen", "usr/sbin/ip",
                 "usr/bin/hostname", "usr/bin/sort"):
        if not (root / need).exists():
            raise LabError(f"the debootstrap base lacks /{need}")
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# test-bed nodes have no service manager: deny starts\nexit 101\n")
    policy.chmod(0o755)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    lists = root / "var/lib/apt/lists"
    for f in lists.iterdir():
        if f.is_file() and f.name != "lock":
            f.unlink()
    for f in [*(root / "var/cache/apt/archives").glob("*.deb"), *(root / "var/cache/apt").glob("*.bin")]:
        f.unlink()
    (root / "etc/apt/sources.list").write_text("# test-bed nodes: the bed's repository only\n")
    (root / _STAMP).write_text(json.dumps(_RECIPE))
    root.chmod(0o755)


# --- the local apt repository -----------------------------------------------------------------


class Repo:
    """A flat apt repository (``deb [trusted=yes] URL ./``) of packages built here.

    ``add`` builds a package, ``index`` (re)writes Packages and Release atomically; until
    then apt does not see new packages."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, name: str, version: str,
            files: dict[str, str | bytes | tuple[str | bytes, int]] | None = None, *,
            scripts: dict[str, str] | None = None, **fields: str) -> Path:
        """Build ``name`` ``version`` (Architecture: all) shipping ``files`` (absolute path ->
        content, or (content, mode)); ``scripts`` are maintainer scripts (``postinst``...);
        ``fields`` are more control fields, ``pre_depends="x"`` meaning ``Pre-Depends: x``."""
        extra = {"-".join(p.capitalize() for p in k.split("_")): v for k, v in fields.items()}
        control = {"Package": name, "Version": version, "Architecture": "all",
                   "Maintainer": "DebVisor test bed <lab@debvisor.invalid>",
                   "Description": f"{name} (DebVisor test-bed package)", **extra}
        deb = self.path / f"{name}_{version}_all.deb"
        self.path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.path, prefix=".build-") as tmp:
            tree = Path(tmp)
            tree.chmod(0o755)
            _write(tree, "DEBIAN/control", "".join(f"{k}: {v}\n" for k, v in control.items()))
            for script, text in (scripts or {}).items():
                _write(tree, f"DEBIAN/{script}", text, 0o755)
            for path, spec in (files or {}).items():
                content, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
                _write(tree, path, content, mode)
            run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)])
        return deb

    def add_kernel(self, release: str, version: str | None = None, *,
                   image: bytes | None = None) -> Path:
        """A Debian-like versioned kernel package ``linux-image-RELEASE`` shipping
        /boot/vmlinuz-RELEASE (``image``, a real kernel, or a placeholder) and
        /boot/System.map-RELEASE (no reboot-required flag: real kernel packages write none
        either)."""
        version = version or KERNELS[release]
        return self.add(f"linux-image-{release}", version,
                        {f"/boot/vmlinuz-{release}": image or f"fake kernel {release}\n",
                         f"/boot/System.map-{release}": f"fake System.map {release}\n"},
                        section="kernel", priority="optional")

    def add_release(self, release: str) -> list[Path]:
        """The packages of :data:`RELEASES` ``release``: debvisor-test-agent, the kernel and
        the metapackage :data:`KERNEL_META` (at version ``release``) depending on it."""
        spec = RELEASES[release]
        agent = self.add("debvisor-test-agent", spec["agent"], {
            "/usr/share/debvisor-test-agent/version": spec["agent"] + "\n",
            f"/usr/sbin/{AGENT_SERVICE}": (_AGENTD.replace("@VERSION@", spec["agent"]), 0o755),
            f"/etc/testbed/services.d/{AGENT_SERVICE}":
                (f"#!/bin/sh\nexec /usr/sbin/{AGENT_SERVICE}\n", 0o755),
        })
        kernel = self.add_kernel(spec["kernel"])
        meta = self.add(KERNEL_META, release, depends=f"linux-image-{spec['kernel']}",
                        section="kernel")
        return [agent, kernel, meta]

    def index(self) -> None:
        """Write Packages(.gz) and Release for every .deb here (each replaced atomically)."""
        self.path.mkdir(parents=True, exist_ok=True)
        stanzas = []
        for deb in sorted(self.path.glob("*.deb")):
            control = run(["dpkg-deb", "-f", str(deb)]).stdout.strip()
            data = deb.read_bytes()
            stanzas.append(f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                           f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
        packages = "\n".join(stanzas).encode()
        files = {"Packages": packages, "Packages.gz": gzip.compress(packages, mtime=0)}
        release = ("Origin: DebVisor test bed\nLabel: nodebed\nSuite: nodebed\n"
                   f"Codename: nodebed\nDate: {formatdate(usegmt=True)}\n"
                   "Architectures: all amd64\nSHA256:\n"
                   + "".join(f" {hashlib.sha256(b).hexdigest()} {len(b)} {n}\n"
                             for n, b in files.items()))
        # The HTTP server answers apt's If-Modified-Since by the files' mtime, in whole
        # seconds: a new index must not carry the same second as the one it replaces, or a
        # node that fetched that one is told "304 Not Modified" and misses the new packages.
        try:
            previous = (self.path / "Release").stat().st_mtime
        except FileNotFoundError:
            previous = 0.0
        stamp = max(time.time(), float(int(previous) + 1))
        for name, content in [*files.items(), ("Release", release.encode())]:
            tmp = self.path / f".{name}.tmp"
            tmp.write_bytes(content)
            tmp.chmod(0o644)
            os.utime(tmp, (stamp, stamp))
            tmp.rename(self.path / name)


# --- helpers ----------------------------------------------------------------------------------


def _mkdirs(root: Path, rel: str, like: Path | None = None) -> Path:
    """``root/rel`` with missing parents; each new directory takes the mode and owner of the
    same path under ``like`` (an overlay's upper dir must not change the lower's attributes)."""
    path = root
    for part in Path(rel.strip("/")).parts:
        path = path / part
        if not path.is_dir():
            path.mkdir()
            ref = like / path.relative_to(root) if like is not None else None
            if ref is not None and ref.is_dir():
                st = ref.stat()
                os.chown(path, st.st_uid, st.st_gid)
                path.chmod(st.st_mode & 0o7777)
            else:
                path.chmod(0o755)
    return path


def _write(root: Path, rel: str, content: str | bytes, mode: int = 0o644,
           like: Path | None = None) -> Path:
    rel = rel.lstrip("/")
    parent = _mkdirs(root, str(Path(rel).parent), like) if "/" in rel else root
    path = parent / Path(rel).name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _banner(address: str, port: int = 22, timeout: float = 0.5) -> bool:
    """True if an SSH server answers on ``address:port`` (its version banner)."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def unavailable() -> str | None:
    """Why this machine cannot run a bed (for tests to skip with), or None."""
    import shutil

    if os.geteuid() != 0:
        return "the node test bed needs root"
    if not BASE_DIR.exists() and shutil.which("debootstrap") is None:
        return "debootstrap is not installed (scripts/dev setup)"
    return None


def debvisor_in_nodes() -> str:
    """The `debvisor` a node runs: the checkout's venv, mounted read-only in every node."""
    return str(checkout_dirs()[0] / ".venv" / "bin" / "debvisor")


def checkout_dirs() -> list[Path]:
    """The repository root holding ``debvisor_core`` and the running venv (real paths,
    nested ones dropped): what nodes get read-only at the same path."""
    dirs = [Path(__file__).resolve().parents[2]]
    if sys.prefix != sys.base_prefix:
        venv = Path(sys.prefix).resolve()
        if not venv.is_relative_to(dirs[0]):
            dirs.append(venv)
    return dirs


# --- the bed ----------------------------------------------------------------------------------


class Bed:
    """``nodes`` lab nodes under ``dir`` (a context manager: ``stop`` on exit, always).

    ``start`` boots fresh nodes (empty upper dirs, new host keys); a ``Bed`` made later for
    the same ``dir`` (another process) finds the running one through ``dir/bed.json``.
    ``base``: the lower layer (default :func:`ensure_base`); ``binds``: host directories
    mounted read-only at the same path in each node (default :func:`checkout_dirs`);
    ``config``: merged into the nodes' :data:`NODE_CONFIG`; ``real_boot``: a node whose
    boot loader picks a real kernel image boots it under QEMU/TCG (:func:`probe_initrd`)
    and runs as the release that kernel reported, or, when it does not boot, on the
    previous kernel."""

    def __init__(self, dir: Path, nodes: int = 3, *, base: Path | None = None,
                 binds: Sequence[Path] | None = None, config: dict[str, Any] | None = None,
                 boot_timeout: float = 20.0, real_boot: bool = False,
                 real_boot_timeout: float = 300.0) -> None:
        if not 1 <= nodes <= 200:
            raise LabError(f"a test bed has 1 to 200 nodes, not {nodes}")
        self.dir = Path(dir).resolve()
        self.count = nodes
        self.base_dir = base
        self.binds = [Path(b).resolve() for b in (checkout_dirs() if binds is None else binds)]
        self.config = merge(json.loads(json.dumps(NODE_CONFIG)), config or {})
        self.boot_timeout = boot_timeout
        self.real_boot = real_boot
        if real_boot and not (shutil.which("qemu-system-x86_64") and BUSYBOX.is_file()):
            raise LabError("a bed with real boots needs qemu-system-x86_64 and a static "
                           f"busybox at {BUSYBOX} (apt-get install qemu-system-x86 "
                           "busybox-static)")
        self.real_boot_timeout = real_boot_timeout
        tag = hashlib.sha256(str(self.dir).encode()).hexdigest()[:6]
        self.prefix = f"{NS_PREFIX}{tag}"
        self.fabric = f"{self.prefix}-fab"
        self.host_if = self.prefix  # the host's end of the fabric uplink
        self.key = self.dir / "id_ed25519"
        self.ssh_config = self.dir / "ssh_config"
        self.repo = Repo(self.dir / "repo")
        self.nodes: dict[str, str] = {}
        self.host_address = ""
        self.port = 0
        self._load()

    # -- names and state
    def netns(self, node: str) -> str:
        """The network namespace of ``node``."""
        return f"{self.prefix}-{node}"

    def node_dir(self, node: str) -> Path:
        return self.dir / "nodes" / node

    def upper(self, node: str) -> Path:
        """``node``'s overlay upper directory: everything the node changed (its "disk")."""
        return self.node_dir(node) / "upper"

    @property
    def repo_url(self) -> str:
        return f"http://{self.host_address}:{self.port}/"

    def _load(self) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads((self.dir / "bed.json").read_text())
            self.nodes, self.host_address, self.port = (state["nodes"], state["host"],
                                                        state["port"])

    def _save(self) -> None:
        (self.dir / "bed.json").write_text(json.dumps(
            {"nodes": self.nodes, "host": self.host_address, "port": self.port,
             "fabric": self.fabric, "prefix": self.prefix}, indent=2))

    def __enter__(self) -> Bed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start
    def start(self) -> Bed:
        """Start the fabric, the repository server and the nodes; return when every node
        answers SSH (everything is stopped again if that fails)."""
        for path in (self.dir, *self.binds):
            if any(c in str(path) for c in ",:\n"):
                raise LabError(f"the test bed cannot use a path with ',' or ':': {path}")
        base = ensure_base(self.base_dir or BASE_DIR)
        self.stop()  # leftovers of an earlier run in this directory
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._fabric()
            self._keys()
            self.repo.index()
            http = spawn([sys.executable, "-m", "http.server", "--bind", self.host_address,
                          "--directory", str(self.repo.path), str(self.port)],
                         pidfile=self.dir / "repo-http.pid", log=self.dir / "repo-http.log")
            for script, text in (("supervise.sh", _SUPERVISE), ("boot.sh", _BOOT),
                                 ("qemu-boot.sh", _QEMU_BOOT)):
                _write(self.dir, script, text, 0o755)
            for node in self.nodes:
                self._start_node(node, base)
            self.wait_ssh(timeout=self.boot_timeout, login=True)
            wait_for(lambda: _banner_http(self.host_address, self.port), timeout=10,
                     what="test-bed repository server", log=self.dir / "repo-http.log", pid=http)
        except BaseException:
            self.stop()
            raise
        return self

    def _fabric(self) -> None:
        """Namespaces, bridge and veths, with one `ip -batch` per namespace."""
        fab = self.fabric
        with _flock(_LOCK):  # the /24 and the host interface are host-wide
            net = _free_subnet(int(self.prefix[len(NS_PREFIX):], 16))
            self.host_address = str(net[1])
            self.nodes = {f"node{i}": str(net[10 + i]) for i in range(1, self.count + 1)}
            _ip_batch(None, [["netns", "add", fab],
                             *(["netns", "add", self.netns(n)] for n in self.nodes),
                             ["link", "add", self.host_if, "type", "veth", "peer", "name",
                              "uplink", "netns", fab],
                             *(["link", "add", "eth0", "netns", self.netns(n), "type", "veth",
                                "peer", "name", f"p-{n}", "netns", fab] for n in self.nodes),
                             ["addr", "add", f"{self.host_address}/24", "dev", self.host_if],
                             ["link", "set", self.host_if, "up"]])
        _ip_batch(fab, [["link", "set", "lo", "up"], ["link", "add", "br0", "type", "bridge"],
                        ["link", "set", "br0", "up"],
                        *(["link", "set", p, "master", "br0", "up"]
                          for p in ["uplink", *(f"p-{n}" for n in self.nodes)])])
        for node, addr in self.nodes.items():
            _ip_batch(self.netns(node), [["link", "set", "lo", "up"],
                                         ["addr", "add", f"{addr}/24", "dev", "eth0"],
                                         ["link", "set", "eth0", "up"],
                                         ["route", "add", "default", "via",
                                          self.host_address]])
        self.port = free_port(self.host_address)
        self._save()

    def _keys(self) -> None:
        self.key.unlink(missing_ok=True)
        Path(f"{self.key}.pub").unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"nodebed@{self.prefix}",
             "-f", str(self.key)])
        self.ssh_config.write_text(self._ssh_config_text(str(self.key)))

    def _ssh_config_text(self, key: str) -> str:
        hosts = "".join(f"Host {n}\n    HostName {a}\n" for n, a in self.nodes.items())
        return ("# written by the DebVisor node test bed: ssh -F THIS node1\n" + hosts +
                f'Host *\n    User root\n    IdentityFile "{key}"\n    IdentitiesOnly yes\n'
                "    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n"
                "    BatchMode yes\n    LogLevel ERROR\n    ConnectTimeout 3\n")

    def _start_node(self, node: str, base: Path) -> None:
        d = self.node_dir(node)
        shutil.rmtree(d, ignore_errors=True)
        for sub in ("upper", "work", "root"):
            (d / sub).mkdir(parents=True)
        if self.real_boot:  # boot.sh boots real kernel images under QEMU with this initramfs
            (d / "real-boot").write_text(f"{probe_initrd()}\n{int(self.real_boot_timeout)}\n")
        up = d / "upper"
        hosts = "".join(f"{a} {n}\n" for n, a in self.nodes.items())
        files: dict[str, tuple[str | bytes, int]] = {
            "etc/hostname": (f"{node}\n", 0o644),
            "etc/hosts": (f"127.0.0.1 localhost\n{self.host_address} labhost\n{hosts}", 0o644),
            # the lab network's name server is the host's end (as on a DHCP-configured LAN)
            "etc/resolv.conf": (f"nameserver {self.host_address}\n", 0o644),
            "etc/apt/sources.list": (f"deb [trusted=yes] {self.repo_url} ./\n", 0o644),
            "etc/debvisor/debvisor.toml": (
                "# written by the DebVisor node test bed\n" + to_toml(self.config), 0o644),
            "root/.ssh/authorized_keys": (Path(f"{self.key}.pub").read_bytes(), 0o600),
            # node -> node SSH (an orchestrator on a node): the bed's key and node names
            "root/.ssh/id_ed25519": (self.key.read_bytes(), 0o600),
            "root/.ssh/config": (self._ssh_config_text("/root/.ssh/id_ed25519"), 0o600),
            "usr/local/sbin/testbed-init": (_INIT, 0o755),
            "usr/local/sbin/reboot": (_REBOOT, 0o755),
            "usr/local/sbin/poweroff": (_POWEROFF, 0o755),
        }
        for rel, (content, mode) in files.items():
            _write(up, rel, content, mode, like=base)
        ssh_dir = up / "root/.ssh"
        ssh_dir.chmod(0o700)
        for rel in ("var/lib/debvisor", "var/log/debvisor",
                    *(str(b).lstrip("/") for b in self.binds)):
            _mkdirs(up, rel, like=base)
        spawn(["/bin/sh", str(self.dir / "supervise.sh"), str(self.dir / "boot.sh"), str(d),
               str(base), *map(str, self.binds)],
              pidfile=d / "supervisor.pid", log=d / "console.log", netns=self.netns(node))

    # -- stop
    def stop(self) -> None:
        """Stop every node, the repository server and remove the namespaces and interfaces
        (idempotent; works from the directory alone, after any failure)."""
        errors: list[str] = []
        pidfiles = [*sorted((self.dir / "nodes").glob("*/supervisor.pid")),
                    *sorted(self.dir.glob("expose-*.pid")), self.dir / "repo-http.pid"]
        for pidfile in pidfiles:
            try:
                stop_pidfile(pidfile, timeout=5)
            except LabError as exc:
                errors.append(str(exc))
        ours = sorted(n for n in _netns_names() if n.startswith(self.prefix + "-"))
        for ns in ours:  # anything still inside (e.g. started with `ip netns exec`)
            for pid in netns.pids_in(ns):
                try:
                    stop(pid, timeout=2, group=False)
                except LabError as exc:
                    errors.append(str(exc))
        for ns in ours:  # links first: a namespace pinned elsewhere must not keep them
            if ns != self.fabric:
                run(["ip", "-n", ns, "link", "del", "eth0"], check=False)
        if netns.exists(self.fabric):
            run(["ip", "-n", self.fabric, "link", "del", "br0"], check=False)
        if Path("/sys/class/net", self.host_if).exists():
            run(["ip", "link", "del", self.host_if], check=False)
        for ns in ours:
            netns.delete(ns)
        with contextlib.suppress(LabError):
            wait_for(lambda: not any(netns.exists(n) for n in ours)
                     and not Path("/sys/class/net", self.host_if).exists(),
                     timeout=5, what="test-bed namespaces gone")
        left = [n for n in ours if netns.exists(n)]
        if left or Path("/sys/class/net", self.host_if).exists():
            errors.append(f"left behind: {' '.join([*left, self.host_if])}")
        if errors:
            raise LabError("test bed stop incomplete: " + "; ".join(errors))

    # -- host services
    def expose(self, port: int, *, host: str = "127.0.0.1") -> str:
        """Make the host's service on ``host``:``port`` (TCP and UDP) reachable from the
        nodes at ``labhost``:``port`` (the bed's host address): two socat relays, stopped with
        the bed. For the lab's services, which listen on loopback only. Returns the address
        the nodes use, ``ADDRESS:PORT``."""
        if not shutil.which("socat"):
            raise LabError("socat is not installed (apt-get install socat)")
        if (self.dir / f"expose-tcp-{port}.pid").exists():
            raise LabError(f"port {port} is already exposed")
        pids = {}
        for proto in ("TCP", "UDP"):
            name = f"expose-{proto.lower()}-{port}"
            # a UDP relay forks one child per client address: -T ends the idle ones
            pids[proto] = spawn(["socat", *(["-T", "10"] if proto == "UDP" else []),
                                 f"{proto}-LISTEN:{port},bind={self.host_address},fork,reuseaddr",
                                 f"{proto}:{host}:{port}"],
                                pidfile=self.dir / f"{name}.pid", log=self.dir / f"{name}.log")
        wait_for(lambda: _banner_tcp(self.host_address, port), timeout=5,
                 what=f"relay to {host}:{port}", log=self.dir / f"expose-tcp-{port}.log",
                 pid=pids["TCP"])
        return f"{self.host_address}:{port}"

    # -- ssh
    def ssh_options(self) -> list[str]:
        """Options for a plain ``ssh root@ADDRESS`` to a node (no config file)."""
        return ["-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", "LogLevel=ERROR"]

    def ssh_argv(self, node: str, cmd: str | Sequence[str], *,
                 connect_timeout: float | None = None) -> list[str]:
        """``ssh -F ssh_config NODE -- CMD`` (a list is quoted for the remote shell)."""
        if node not in self.nodes:
            raise LabError(f"no node {node!r} in this bed ({', '.join(self.nodes)})")
        opts = ["-o", f"ConnectTimeout={connect_timeout:g}"] if connect_timeout else []
        remote = cmd if isinstance(cmd, str) else shlex.join(cmd)
        return ["ssh", "-F", str(self.ssh_config), *opts, node, "--", remote]

    def run(self, node: str, cmd: str | Sequence[str], *, check: bool = True,
            timeout: float = 120, input: str | None = None,
            connect_timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` on ``node`` over real SSH; raise LabError if it fails and ``check``."""
        argv = self.ssh_argv(node, cmd, connect_timeout=connect_timeout)
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,  # noqa: S603
                             input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise LabError(f"on {node}: {argv[-1]!r} exited {res.returncode}: "
                           f"{(res.stderr or res.stdout).strip()[-500:]}")
        return res

    def run_all(self, cmd: str | Sequence[str], *, nodes: Sequence[str] | None = None,
                **kw: Any) -> dict[str, subprocess.CompletedProcess[str]]:
        """:meth:`run` on several nodes (all by default) in parallel."""
        names = list(nodes or self.nodes)
        with ThreadPoolExecutor(len(names)) as pool:
            return dict(zip(names, pool.map(lambda n: self.run(n, cmd, **kw), names), strict=True))

    def wait_ssh(self, *nodes: str, timeout: float = 10.0, login: bool = False) -> float:
        """Wait until ``nodes`` (all by default) answer SSH, in parallel: their sshd's
        banner, and with ``login`` a real login too. Returns the seconds it took."""
        t0 = time.monotonic()
        names = nodes or tuple(self.nodes)

        def one(node: str) -> None:
            wait_for(partial(_banner, self.nodes[node]), timeout=timeout, what=f"ssh on {node}",
                     log=self.node_dir(node) / "console.log")
            if login:
                self.run(node, "true", timeout=max(2.0, timeout - (time.monotonic() - t0)))

        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(one, names))
        return time.monotonic() - t0

    # -- boots
    def init_pid(self, node: str) -> int | None:
        """The host pid of ``node``'s init (PID 1 in the node), or None while it is down."""
        sup = read_pid(self.node_dir(node) / "supervisor.pid")
        if sup is None:
            return None
        for child in _children(sup):  # supervisor -> unshare -> init
            for pid in _children(child):
                return pid
        return None

    def _node_file(self, node: str, path: str) -> str | None:
        pid = self.init_pid(node)
        if pid is None:
            return None
        try:
            return Path(f"/proc/{pid}/root", path.lstrip("/")).read_text().strip() or None
        except OSError:
            return None

    def boot_id(self, node: str) -> str | None:
        """The current boot id of ``node`` (read from the host), None while it is down."""
        return self._node_file(node, "/run/testbed/boot-id")

    def booted_kernel(self, node: str) -> str | None:
        """The kernel ``node``'s current boot picked (read from the host)."""
        return self._node_file(node, "/run/testbed/booted-kernel")

    def wait_boot(self, node: str, previous: str | None, timeout: float = 15.0) -> float:
        """Wait until ``node`` runs a boot other than ``previous`` and answers SSH; seconds."""
        t0 = time.monotonic()

        def booted() -> bool:
            bid = self.boot_id(node)
            return bid is not None and bid != previous and _banner(self.nodes[node])

        wait_for(booted, timeout=timeout, what=f"{node} back from reboot",
                 log=self.node_dir(node) / "console.log")
        self.wait_ssh(node, timeout=max(1.0, timeout - (time.monotonic() - t0)))
        return time.monotonic() - t0

    def reboot(self, node: str, *, via_ssh: bool = False, timeout: float = 15.0) -> float:
        """Reboot ``node`` (SIGHUP to its init, or ``reboot`` run over SSH) and wait until it
        is back; returns the seconds until SSH answered again."""
        previous = self.boot_id(node)
        t0 = time.monotonic()
        if via_ssh:
            self.run(node, "reboot", check=False, timeout=10)
        else:
            pid = self.init_pid(node)
            if pid is None:
                raise LabError(f"{node} is not running")
            os.kill(pid, signal.SIGHUP)
        self.wait_boot(node, previous, timeout=timeout)
        return time.monotonic() - t0

    def status(self) -> dict[str, Any]:
        """Each node's address, init pid, boot id, booted kernel and whether SSH answers."""
        nodes = {n: {"address": a, "pid": self.init_pid(n), "boot_id": self.boot_id(n),
                     "kernel": self.booted_kernel(n), "ssh": _banner(a)}
                 for n, a in self.nodes.items()}
        return {"running": bool(nodes) and all(v["ssh"] for v in nodes.values()),
                "dir": str(self.dir), "ssh_config": str(self.ssh_config),
                "repo": self.repo_url if self.port else None, "nodes": nodes}

    # -- failure injection
    def boot_override(self, node: str, kernel: str | None) -> None:
        """Make ``node``'s next boots pick ``kernel`` (None: the newest again): its
        /etc/testbed/boot-override, written through the running node's root (into the
        upper dir while it is down), read by testbed-init at boot."""
        pid = self.init_pid(node)
        root = Path(f"/proc/{pid}/root") if pid is not None else self.upper(node)
        if kernel is None:
            (root / "etc/testbed/boot-override").unlink(missing_ok=True)
        else:
            _write(root, "etc/testbed/boot-override", kernel + "\n",
                   like=None if pid is not None else self.base_dir or BASE_DIR)

    def isolate(self, node: str) -> None:
        """Cut ``node`` off the fabric (its bridge port down): nothing reaches it."""
        run(["ip", "-n", self.fabric, "link", "set", f"p-{node}", "down"])

    def heal(self, node: str) -> None:
        """Undo :meth:`isolate`."""
        run(["ip", "-n", self.fabric, "link", "set", f"p-{node}", "up"])


def _banner_tcp(address: str, port: int) -> bool:
    """True if something accepts a TCP connection on ``address:port``."""
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _banner_http(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5) as s:
            s.sendall(b"HEAD /Release HTTP/1.0\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def _ip_batch(ns: str | None, commands: Sequence[Sequence[str]]) -> None:
    """Run iproute2 ``commands`` (argument lists of names and addresses made here, no
    spaces) in one ``ip -batch``, inside namespace ``ns`` when given."""
    argv = ["ip", *(["-n", ns] if ns else []), "-batch", "-"]
    res = subprocess.run(argv, input="".join(" ".join(c) + "\n" for c in commands),  # noqa: S603
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise LabError(f"ip -batch{' in ' + ns if ns else ''} failed: {res.stderr.strip()[-300:]}")


def _netns_names() -> list[str]:
    try:
        return os.listdir("/run/netns")
    except OSError:
        return []


def _free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A 10.213.X.0/24 that no host address or route overlaps, starting from ``seed``."""
    used: list[ipaddress.IPv4Network] = []
    for argv in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        for line in run(argv, check=False).stdout.splitlines():
            for word in line.split():
                with contextlib.suppress(ValueError):
                    if word[0].isdigit() and ("/" in word or word.count(".") == 3):
                        used.append(ipaddress.IPv4Network(word, strict=False))
    for i in range(250):
        net = ipaddress.IPv4Network(f"{SUBNET_PREFIX}.{(seed + i) % 250 + 1}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise LabError(f"no free {SUBNET_PREFIX}.X.0/24 for a test bed")


# --- as a lab service (`debvisor lab up nodebed` once a plugin returns it) -------------------


def lab_start(lctx: LabContext) -> dict[str, Any]:
    """Start (idempotently) a 3-node bed under the service's directory, its repository
    holding :data:`RELEASES`; returns the ``[nodebed]`` config fragment."""
    bed = Bed(lctx.dir / "bed")
    if not (bed.nodes and bed.status()["running"]):
        for release in RELEASES:
            bed.repo.add_release(release)
        bed.start()
    return {"nodebed": {"dir": str(bed.dir), "ssh_config": str(bed.ssh_config),
                        "key": str(bed.key), "repo": bed.repo_url, "nodes": bed.nodes}}


def lab_stop(lctx: LabContext) -> None:
    Bed(lctx.dir / "bed").stop()


def lab_status(lctx: LabContext) -> dict[str, Any]:
    return Bed(lctx.dir / "bed").status()


def lab_service() -> LabService:
    """The bed as a :class:`LabService` (for a plugin's ``debvisor_lab_services``)."""
    return LabService(name="nodebed", start=lab_start, stop=lab_stop, status=lab_status,
                      needs=["ip", "unshare", "pivot_root", "ssh", "ssh-keygen", "dpkg-deb"],
                      root=True, description="namespace nodes with sshd and apt (netns nbXXXXXX-*, "
                      "10.213.X.0/24)")
