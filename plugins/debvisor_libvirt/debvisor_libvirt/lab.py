"""Lab service: two libvirtd nodes in network namespaces, plus a tiny bootable guest.

Each node (``node1``, ``node2``) is a foreground ``libvirtd`` in its own network namespace
(``dvlXXXX-nodeN``, XXXX derived from the lab dir so two labs never share a namespace) and
its own mount/UTS namespace, where private directories of the lab are bind-mounted over
``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``, ``/var/log/libvirt`` and
``/var/cache/libvirt``. The namespaces are joined by a veth pair
(10.77.0.1/24 - 10.77.0.2/24) that carries live migration. The CLI, in the root namespace,
reaches each node through its UNIX socket (``qemu+unix:///system?socket=...``).

Guests are TCG (``type='qemu'``), diskless, booted directly from a Debian kernel and a
busybox initramfs whose ``/init`` prints :data:`READY_LINE` and then a numbered
:data:`HEARTBEAT` line every second on the serial console.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debvisor_core.lab import LabContext, LabService, netns
from debvisor_core.lab.cpio import write_initramfs
from debvisor_core.lab.process import LabError, read_pid, run, spawn, stop, stop_pidfile, wait_for

from .labpki import libvirt_client_dir, qemu_tls_dir

if TYPE_CHECKING:
    import libvirt

NODES: dict[str, str] = {"node1": "10.77.0.1", "node2": "10.77.0.2"}
"""Lab node name -> its address on the migration veth (a /24)."""
NS_PREFIX = "dvl"
CACHE_DIR = Path(os.environ.get("DEBVISOR_LAB_CACHE", "/var/cache/debvisor-lab"))
"""Kernel and initramfs cache, reused across runs (``DEBVISOR_LAB_CACHE`` overrides)."""
BUSYBOX = Path("/bin/busybox")
READY_LINE = "DEBVISOR-GUEST-READY"
HEARTBEAT = "DEBVISOR-HEARTBEAT"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
"""libvirt's namespace for QEMU pass-through elements (``<qemu:commandline>``)."""

# Private dir (under the node dir) -> the system path it replaces inside the node.
_BINDS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}
# Executed by `unshare --mount --uts` (private propagation) with argv: node dir, host name.
_WRAPPER = """#!/bin/sh
# Written by the DebVisor lab (fixed content): private libvirt dirs, then libvirtd.
set -eu
node=$1
for pair in {pairs}; do
    mount --bind "$node/${{pair%%:*}}" "${{pair#*:}}"
done
mount --bind "$node/hosts" /etc/hosts
hostname "$2"
exec libvirtd --listen -f /etc/libvirt/libvirtd.conf -p "$node/run/libvirtd.pid"
""".format(pairs=" ".join(f"{k}:{v}" for k, v in _BINDS.items()))

MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
           "virtio_pci", "virtio_blk")
"""Kernel modules put in the initramfs, in load order, so guests see virtio disks (/dev/vda)."""


_INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {" ".join(MODULES)}; do insmod /lib/modules/$m.ko 2>/dev/null; done
echo {READY_LINE}
if grep -q dv.fill /proc/cmdline; then  # fill the disk (tests of a disk that fills up)
    dd if=/dev/urandom of=/dev/vda bs=64k conv=fsync 2>/dev/null &
fi
n=0
while :; do
    n=$((n + 1))
    echo "{HEARTBEAT} $n $(cut -d' ' -f1 /proc/uptime)"
    sleep 1
done
"""


# --- guest assets -------------------------------------------------------------------------


def _modules_dir(vmlinuz: Path) -> Path:
    return vmlinuz.with_name("modules-" + vmlinuz.name.removeprefix("vmlinuz-"))


def ensure_kernel(cache: Path = CACHE_DIR) -> Path:
    """A Debian amd64 kernel (vmlinuz) in ``cache`` with its :data:`MODULES` beside it
    (``modules-VERSION/``), downloaded with apt on first use."""
    found = [k for k in sorted(cache.glob("vmlinuz-*"))
             if all((_modules_dir(k) / f"{m}.ko").exists() for m in MODULES)]
    if found:
        return found[-1]
    cache.mkdir(parents=True, exist_ok=True)
    pkg = _kernel_package()
    wanted = {f"{m}.ko" for m in MODULES}
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        res = subprocess.run(  # noqa: S603 - argument list
            ["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True, timeout=600
        )
        debs = list(Path(tmp).glob("*.deb"))
        if res.returncode != 0 or not debs:
            raise LabError(f"apt-get download {pkg} failed: {res.stderr.strip()[-300:]}")
        got: dict[str, bytes] = {}
        with subprocess.Popen(  # noqa: S603 - argument list
            ["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE
        ) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and (base in wanted or re.fullmatch(
                            r"\./boot/vmlinuz-.+", member.name)):
                        member_file = tar.extractfile(member)
                        assert member_file is not None
                        got[base] = member_file.read()
                        if len(got) == len(wanted) + 1:
                            break
            proc.kill()  # the rest of the package is not needed
        kernels = [name for name in got if name.startswith("vmlinuz-")]
        if not kernels or len(got) != len(wanted) + 1:
            raise LabError(f"{pkg} lacks /boot/vmlinuz-* or one of {', '.join(sorted(wanted))}")
        kernel = cache / kernels[0]
        staging = Path(tmp, "modules")
        staging.mkdir()
        for name, content in got.items():
            (staging / name if name in wanted else Path(tmp, name)).write_bytes(content)
        shutil.rmtree(_modules_dir(kernel), ignore_errors=True)
        staging.rename(_modules_dir(kernel))
        Path(tmp, kernel.name).chmod(0o644)
        Path(tmp, kernel.name).rename(kernel)
    return kernel


def _kernel_package() -> str:
    res = run(["apt-cache", "depends", "linux-image-amd64"], check=False)
    names = re.findall(r"Depends:\s*(linux-image-\S+-amd64)\b", res.stdout)
    if not names:
        raise LabError("cannot resolve linux-image-amd64 (run `apt-get update`?)")
    return names[0]


def ensure_initrd(cache: Path = CACHE_DIR) -> Path:
    """A gzip'd newc initramfs with static busybox, the kernel's :data:`MODULES` and the
    heartbeat ``/init`` (cached)."""
    busybox = BUSYBOX.read_bytes()
    mods = _modules_dir(ensure_kernel(cache))
    modules = {m: (mods / f"{m}.ko").read_bytes() for m in MODULES}
    digest = hashlib.sha256(busybox + _INIT.encode() + b"".join(modules.values())).hexdigest()[:12]
    path = cache / f"initrd-debvisor-{digest}.img"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
        (d, 0o040755, b"", (0, 0))
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp",
                  "lib", "lib/modules")
    ]
    entries += [
        ("dev/console", 0o020600, b"", (5, 1)),
        ("bin/busybox", 0o100755, busybox, (0, 0)),
        ("bin/sh", 0o120777, b"busybox", (0, 0)),
        ("init", 0o100755, _INIT.encode(), (0, 0)),
    ]
    entries += [(f"lib/modules/{m}.ko", 0o100644, data, (0, 0)) for m, data in modules.items()]
    return write_initramfs(path, entries)



# --- guests -------------------------------------------------------------------------------


def guest_xml(
    name: str,
    *,
    memory_mib: int = 128,
    kernel: str | Path,
    initrd: str | Path,
    vnc: bool = True,
    console_log: str | Path | None = None,
    cmdline: str = "console=ttyS0 quiet",
    disk: str | Path | None = None,
    vnc_password: str | None = None,
    error_policy: str | None = None,
    qemu_args: Sequence[str] = (),
) -> str:
    """Domain XML of a diskless TCG guest booted from ``kernel``/``initrd``.

    Serial console on a pty (``virDomain.openConsole``); with ``console_log`` the serial
    output is also appended to that file (any node can write it: same host). VNC listens
    on the node's 127.0.0.1. ``disk`` attaches a qcow2 image (see :func:`make_disk`) so
    that internal snapshots work (QEMU stores the VM state in it); ``error_policy`` is its
    libvirt ``error_policy`` (``stop`` pauses the guest on a write error). The guest sees it
    as /dev/vda; ``dv.fill`` on the ``cmdline`` makes it write the disk full.
    ``qemu_args`` are appended to QEMU's command line (``<qemu:commandline>``; libvirt
    marks the domain tainted), e.g. ``["-trace", "input_event_*", "-D", "/tmp/trace.log"]``
    to count the input events that reach the guest.
    """
    dom = ET.Element("domain", type="qemu")
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = str(int(memory_mib))
    ET.SubElement(dom, "vcpu").text = "1"
    os_ = ET.SubElement(dom, "os")
    ET.SubElement(os_, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_, "kernel").text = str(kernel)
    ET.SubElement(os_, "initrd").text = str(initrd)
    ET.SubElement(os_, "cmdline").text = cmdline
    ET.SubElement(ET.SubElement(dom, "features"), "acpi")
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_crash").text = "destroy"
    dev = ET.SubElement(dom, "devices")
    ET.SubElement(dev, "emulator").text = shutil.which("qemu-system-x86_64") or (
        "/usr/bin/qemu-system-x86_64"
    )
    if disk is not None:
        d = ET.SubElement(dev, "disk", type="file", device="disk")
        drv = ET.SubElement(d, "driver", name="qemu", type="qcow2")
        if error_policy:
            drv.set("error_policy", error_policy)
        ET.SubElement(d, "source", file=str(disk))
        ET.SubElement(d, "target", dev="vda", bus="virtio")
    serial = ET.SubElement(dev, "serial", type="pty")
    if console_log is not None:
        ET.SubElement(serial, "log", file=str(console_log), append="on")
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(ET.SubElement(dev, "console", type="pty"), "target", type="serial", port="0")
    if vnc:
        gfx = ET.SubElement(dev, "graphics", type="vnc", port="-1", autoport="yes")
        if vnc_password:
            gfx.set("passwd", vnc_password)
        ET.SubElement(gfx, "listen", type="address", address="127.0.0.1")
        ET.SubElement(ET.SubElement(dev, "video"), "model", type="vga")
    ET.SubElement(dev, "memballoon", model="none")
    if qemu_args:
        ET.register_namespace("qemu", QEMU_NS)
        cmd = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
        for arg in qemu_args:
            ET.SubElement(cmd, f"{{{QEMU_NS}}}arg", value=str(arg))
    return ET.tostring(dom, encoding="unicode")


def define_guest(
    conn: libvirt.virConnect,
    name: str,
    *,
    memory_mib: int = 128,
    kernel: str | Path,
    initrd: str | Path,
    vnc: bool = True,
    start: bool = True,
    console_log: str | Path | None = None,
    disk: str | Path | None = None,
    vnc_password: str | None = None,
    cmdline: str = "console=ttyS0 quiet",
    error_policy: str | None = None,
    qemu_args: Sequence[str] = (),
) -> libvirt.virDomain:
    """Define (persistently) the :func:`guest_xml` guest on ``conn`` and start it."""
    xml = guest_xml(
        name, memory_mib=memory_mib, kernel=kernel, initrd=initrd, vnc=vnc,
        console_log=console_log, disk=disk, vnc_password=vnc_password, cmdline=cmdline,
        error_policy=error_policy, qemu_args=qemu_args,
    )
    dom = conn.defineXML(xml)
    if start:
        dom.create()
    return dom


def make_disk(path: str | Path, size_mib: int = 64) -> Path:
    """Create an empty qcow2 image at ``path`` (for guests that need internal snapshots)."""
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{int(size_mib)}M"])
    return Path(path)


def node_local_path(lab_dir: str | Path, node: str, path: str | Path) -> Path:
    """Where ``path`` inside node ``node``'s private directories (``/var/lib/libvirt/...``:
    storage only that node sees) is, seen from the root namespace of lab ``lab_dir``."""
    text = str(path)
    for sub, target in _BINDS.items():
        if text.startswith(target + "/"):
            return Path(lab_dir) / "libvirt" / node / sub / text[len(target) + 1:]
    raise ValueError(f"{text} is not under a private directory of a lab node")


def live_migrate(
    dom: libvirt.virDomain, dconn: libvirt.virConnect, address: str
) -> libvirt.virDomain:
    """Live-migrate ``dom`` to ``dconn`` over ``tcp://address``; persistent on the target."""
    import libvirt

    params = {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{address}"}
    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    )
    return dom.migrate3(dconn, params, flags)


def console_heartbeats(console_log: str | Path) -> list[int]:
    """The heartbeat numbers seen so far in a guest's ``console_log`` file."""
    try:
        text = Path(console_log).read_text(errors="replace")
    except OSError:
        return []
    return [int(n) for n in re.findall(rf"{HEARTBEAT} (\d+)", text)]


def wait_console(console_log: str | Path, text: str = READY_LINE, *, timeout: float = 90) -> None:
    """Wait until ``text`` appears in ``console_log`` (raise LabError on timeout)."""
    path = Path(console_log)
    wait_for(
        lambda: path.exists() and text in path.read_text(errors="replace"),
        timeout=timeout,
        what=f"guest console {text!r}",
        log=path,
    )


# --- nodes --------------------------------------------------------------------------------


def _ns(lctx: LabContext, name: str) -> str:
    """The network namespace of node ``name`` (unique per lab dir)."""
    tag = hashlib.sha256(str(lctx.dir.resolve()).encode()).hexdigest()[:4]
    return f"{NS_PREFIX}{tag}-{name}"


def socket_path(lctx: LabContext, name: str) -> Path:
    """The UNIX socket of node ``name``'s libvirtd, as seen from the root namespace."""
    return lctx.dir / name / "run" / "libvirt-sock"


def node_uri(lctx: LabContext, name: str) -> str:
    """The libvirt URI the CLI (root namespace) uses for node ``name``."""
    return f"qemu+unix:///system?socket={socket_path(lctx, name)}"


def _fragment(lctx: LabContext) -> dict[str, Any]:
    return {
        "hv": {
            "nodes": {
                name: {
                    "uri": node_uri(lctx, name),
                    "migration_address": addr,
                    "netns": _ns(lctx, name),
                }
                for name, addr in NODES.items()
            },
            "guest": {"kernel": str(ensure_kernel()), "initrd": str(ensure_initrd())},
            "lab": {"dir": str(lctx.dir), "migration_tls_dir": str(_tls_dir(lctx)),
                    "tls_uris": {n: f"qemu+tls://{a}/system?pkipath={_client_dir(lctx)}"
                                 for n, a in NODES.items()}},
        }
    }


def _tls_dir(lctx: LabContext) -> Path:
    return lctx.dir / "pki" / "qemu"


def _client_dir(lctx: LabContext) -> Path:
    return libvirt_client_dir(qemu_tls_dir(_tls_dir(lctx), NODES), lctx.dir / "pki" / "libvirt-client")


def _sock_ready(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _node_up(lctx: LabContext, name: str) -> bool:
    return (
        netns.exists(_ns(lctx, name))
        and read_pid(lctx.dir / name / "daemon.pid") is not None
        and _sock_ready(socket_path(lctx, name))
    )


def _conf_values(values: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return str(v) if isinstance(v, int) else f'"{v}"'

    return "".join(f"{k} = {fmt(v)}\n" for k, v in values.items())


def _set_conf(path: Path, values: dict[str, Any]) -> None:
    """Append ``values`` to a libvirt .conf file, dropping earlier settings of those keys."""
    keys = re.compile(r"\s*(" + "|".join(map(re.escape, values)) + r")\s*=")
    kept = [ln for ln in path.read_text().splitlines(keepends=True) if not keys.match(ln)]
    path.write_text("".join(kept) + "\n# DebVisor lab\n" + _conf_values(values))


def _prepare_node(lctx: LabContext, name: str, addr: str) -> Path:
    """Fresh private config/state for node ``name`` (the capability cache dir is kept)."""
    node = lctx.dir / name
    for sub in ("etc", "run", "lib", "log"):
        shutil.rmtree(node / sub, ignore_errors=True)
    for sub in _BINDS:
        (node / sub).mkdir(parents=True, exist_ok=True)
    shutil.copytree("/etc/libvirt", node / "etc", symlinks=True, dirs_exist_ok=True)
    for link in (node / "etc" / "qemu" / "networks" / "autostart").glob("*"):
        link.unlink()
    (node / "lib" / "qemu").mkdir()
    # Node names resolve to their veth addresses inside the nodes (libvirt looks itself up).
    (node / "hosts").write_text(
        "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in NODES.items())
    )
    pki = qemu_tls_dir(_tls_dir(lctx), NODES)
    _set_conf(
        node / "etc" / "libvirtd.conf",
        {
            "host_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"debvisor-lab:{lctx.dir}:{name}")),
            "listen_tls": 1,  # qemu+tls://ADDR/system with the lab PKI (client: pkipath=)
            "key_file": str(pki / "server-key.pem"),
            "cert_file": str(pki / "server-cert.pem"),
            "ca_file": str(pki / "ca-cert.pem"),
            "auth_tls": "none",  # the client certificate is the credential
            "listen_tcp": 1,
            "listen_addr": addr,
            "auth_tcp": "none",  # lab only: reachable inside the lab namespaces only
            "log_outputs": "3:stderr",
        },
    )
    _set_conf(
        node / "etc" / "qemu.conf",
        {
            "user": "root",
            "group": "root",
            "security_driver": "none",
            "stdio_handler": "file",  # no virtlogd
            "namespaces": [],
            "cgroup_controllers": [],
            "migration_address": addr,
            # `hv migrate --tls`: QEMU's own TLS on the migration stream, with a lab PKI
            "migrate_tls_x509_cert_dir": str(pki),
            "migrate_tls_x509_verify": 1,
        },
    )
    return node


def _probe(uri: str) -> None:
    """Open the node and build its capabilities (QEMU probe, cached in the node's cache dir)."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        conn.getDomainCapabilities(None, "x86_64", None, "qemu", 0)
    finally:
        conn.close()


def start(lctx: LabContext) -> dict[str, Any]:
    """Start both nodes (idempotent) and return the ``hv`` config fragment."""
    if all(_node_up(lctx, name) for name in NODES):
        return _fragment(lctx)
    stop_nodes(lctx)
    fragment = _fragment(lctx)  # kernel + initrd first: fail before starting anything
    for name in NODES:
        if len(str(socket_path(lctx, name))) > 107:
            raise LabError(f"lab dir too deep for a UNIX socket path: {socket_path(lctx, name)}")
        netns.create(_ns(lctx, name))
    (a, addr_a), (b, addr_b) = NODES.items()
    netns.veth(_ns(lctx, a), f"dvl-{a}", f"{addr_a}/24", _ns(lctx, b), f"dvl-{b}", f"{addr_b}/24")
    for target in _BINDS.values():  # mount points; /run/libvirt may not exist yet
        if not os.path.isdir(target):
            os.makedirs(target)
            with open(lctx.dir / "created-dirs", "a") as f:
                f.write(target + "\n")
    wrapper = lctx.dir / "node-init.sh"
    wrapper.write_text(_WRAPPER)
    try:
        for name, addr in NODES.items():
            node = _prepare_node(lctx, name, addr)
            pid = spawn(
                ["unshare", "--mount", "--uts", "--", "/bin/sh", str(wrapper), str(node), name],
                pidfile=node / "daemon.pid",
                log=node / "libvirtd.log",
                netns=_ns(lctx, name),
            )
            sock = socket_path(lctx, name)
            wait_for(partial(_sock_ready, sock), timeout=30, what=f"libvirtd {name}",
                     log=node / "libvirtd.log", pid=pid)
        with ThreadPoolExecutor(len(NODES)) as pool:
            list(pool.map(_probe, (node_uri(lctx, n) for n in NODES)))
    except BaseException:
        stop_nodes(lctx)
        raise
    return fragment


def stop_nodes(lctx: LabContext) -> None:
    """Stop libvirtd and every process (QEMU) in each node namespace, then delete them."""
    for name in NODES:
        node, ns = lctx.dir / name, _ns(lctx, name)
        stop_pidfile(node / "daemon.pid")
        if netns.exists(ns):
            for pid in netns.pids_in(ns):
                stop(pid, timeout=5, group=False)
        netns.delete(ns)
        shutil.rmtree(node / "run", ignore_errors=True)
    created = lctx.dir / "created-dirs"
    if created.exists():  # mount points the lab made (empty unless a host libvirtd uses them)
        for target in created.read_text().split():
            with contextlib.suppress(OSError):
                os.rmdir(target)
        created.unlink()
    deadline = time.monotonic() + 5
    while any(netns.exists(_ns(lctx, n)) for n in NODES) and time.monotonic() < deadline:
        time.sleep(0.05)


def status(lctx: LabContext) -> dict[str, Any]:
    """``running`` is true when both libvirtd nodes answer on their sockets."""
    nodes = {
        name: {
            "running": _node_up(lctx, name),
            "pid": read_pid(lctx.dir / name / "daemon.pid"),
            "uri": node_uri(lctx, name),
            "namespace": _ns(lctx, name),
        }
        for name in NODES
    }
    return {"running": all(n["running"] for n in nodes.values()), "nodes": nodes}


def services() -> list[LabService]:
    """The hypervisor plugin's lab services."""
    return [
        LabService(
            name="libvirt",
            start=start,
            stop=stop_nodes,
            status=status,
            needs=["libvirtd", "qemu-system-x86_64", "ip", "unshare"],
            root=True,
            description="two libvirtd nodes (netns dvlXXXX-node1/2, veth 10.77.0.0/24), TCG guests",
        )
    ]


# --- hooks --------------------------------------------------------------------------------


def hooks_dir(lab_dir: str | Path, node: str) -> Path:
    """Node ``node``'s ``/etc/libvirt/hooks`` (its private copy), seen from the root
    namespace of lab ``lab_dir`` (the `[hv] hooks_dir` for `hv hook install` there)."""
    return node_local_path(lab_dir, node, "/etc/libvirt/hooks")


def restart_libvirtd(lab_dir: str | Path, node: str) -> float:
    """Restart node ``node``'s libvirtd in place and return the seconds it took: same
    namespaces, config and state; running guests keep running (libvirtd reconnects to
    them). libvirtd looks for hook scripts only when it starts (a ``qemu`` hook created
    later is never run until then; once seen, the file is read at each event, and
    removing or replacing it takes effect at once)."""
    t0 = time.monotonic()
    lctx = LabContext(Path(lab_dir) / "libvirt", Path(lab_dir))
    node_dir = lctx.dir / node
    if not _node_up(lctx, node):
        raise LabError(f"lab node {node} is not running (debvisor lab up libvirt)")
    stop_pidfile(node_dir / "daemon.pid")
    wrapper = lctx.dir / "node-init.sh"
    pid = spawn(
        ["unshare", "--mount", "--uts", "--", "/bin/sh", str(wrapper), str(node_dir), node],
        pidfile=node_dir / "daemon.pid",
        log=node_dir / "libvirtd.log",
        netns=_ns(lctx, node),
    )
    wait_for(partial(_sock_ready, socket_path(lctx, node)), timeout=30,
             what=f"libvirtd {node} (restarted)", log=node_dir / "libvirtd.log", pid=pid)
    return time.monotonic() - t0
