"""Run a Python script inside a throwaway User-Mode Linux kernel, for tests that need bonds,
VLANs, dummies or a VLAN-filtering bridge on a host kernel that has none of them.

Debian's ``user-mode-linux`` package ships ``/usr/bin/linux.uml`` (a Linux kernel that runs as
an ordinary process) and its modules. :func:`run_in_uml` boots it with the host's filesystem
as its root (hostfs), a Python init of ours, and then:

1. the init mounts proc, sysfs, a tmpfs on /run (network namespaces, TMPDIR) and on /dev/shm
   (the kernel itself mounts devtmpfs on /dev); every mount exists only inside the guest;
2. loads bonding, 8021q, bridge, veth, dummy and macvlan plus their dependencies (ordered from
   ``modules.dep``) with ``finit_module``, bonding with ``max_bonds=0`` and dummy with
   ``numdummies=0`` so that no ``bond0``/``dummy0`` appears on its own;
3. runs the script with this interpreter (the venv: pyroute2 and the debvisor packages import
   as on the host) in the guest's initial network namespace, which holds only ``lo`` (down);
4. writes the script's exit code and output into the work directory and powers the guest off.

The guest is root on a *writable view of the real host filesystem*: a script must write only
below its work directory (its cwd and HOME), or to TMPDIR, which is a guest-only tmpfs.

Two host quirks are handled here, both needed on this machine (an AVX-512/AMX CPU):

* UML 6.1 passes an 832-byte buffer to ``PTRACE_SETREGSET(NT_X86_XSTATE)``, and the host
  kernel insists on its full XSAVE size, so every guest process died at once ("ptrace set fp
  regs failed, errno = 14"). The kernel is therefore started through a seccomp filter that
  fails that ptrace request with ENODEV, and UML falls back to the FXSAVE regset.
* In that mode a guest page fault clears the AVX upper halves and mask registers (the host
  resets them for UML's SIGSEGV stub, and UML restores only the SSE part), which crashed glibc's
  AVX2/EVEX string functions (``ls -l`` segfaulted, Python died in getpath). The guest therefore
  runs with ``GLIBC_TUNABLES`` and ``OPENSSL_ia32cap`` that keep glibc and OpenSSL on SSE code.

Only the standard library is imported here.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KERNEL = Path("/usr/bin/linux.uml")
MODULES_ROOT = Path("/usr/lib/uml/modules")
#: loaded with their dependencies; any other module is not loaded
MODULES = ("8021q", "bonding", "bridge", "veth", "dummy", "macvlan")
#: module parameters: no interface that the script did not create
MODULE_PARAMS = {"bonding": "max_bonds=0", "dummy": "numdummies=0"}

#: keep glibc's ifuncs (string functions, libm, ld.so's trampoline) off AVX/AVX-512
GLIBC_TUNABLES = ("glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,"
                  "-AVX512CD,-AVX_Fast_Unaligned_Load,-FMA,-FMA4,-XSAVEC")
#: and OpenSSL's own dispatch: clear OSXSAVE/AVX/FMA in CPUID.1 and all of CPUID.7
OPENSSL_IA32CAP = "~0x1800100000000000:~0xffffffffffffffff"

_SAFE_PATH = re.compile(r"/[A-Za-z0-9_./+@%,:=-]*")
#: guest mounts that would hide a work directory below them
_GUEST_MOUNTS = ("/proc", "/sys", "/run", "/dev")

INIT_NAME = "uml-init.py"
CONFIG_NAME = "uml-config.json"
SCRIPT_NAME = "uml-script.py"
OUTPUT_NAME = "uml-output.txt"
STATUS_NAME = "uml-status.json"
CONSOLE_NAME = "uml-console.log"
UMID = "guest"

# Starts linux.uml (argv[1:]) behind a seccomp filter that fails
# ptrace(PTRACE_GETREGSET/SETREGSET, pid, NT_X86_XSTATE, ...) with ENODEV, and with
# PR_SET_PDEATHSIG so that the kernel dies with the process that started it.
_LAUNCHER = r"""
import ctypes, os, signal, struct, sys
def op(code, jt, jf, k):
    return struct.pack("=HBBI", code, jt, jf, k)
LD, JEQ, RET = 0x20, 0x15, 0x06
ALLOW, ENODEV = 0x7FFF0000, 0x00050000 | 19
prog = b"".join([
    op(LD, 0, 0, 4), op(JEQ, 0, 8, 0xC000003E),     # arch == x86_64
    op(LD, 0, 0, 0), op(JEQ, 0, 6, 101),            # nr == ptrace
    op(LD, 0, 0, 16), op(JEQ, 1, 0, 0x4204), op(JEQ, 0, 3, 0x4205),  # GET/SETREGSET
    op(LD, 0, 0, 32), op(JEQ, 0, 1, 0x202),         # NT_X86_XSTATE
    op(RET, 0, 0, ENODEV), op(RET, 0, 0, ALLOW)])
class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
buf = ctypes.create_string_buffer(prog, len(prog))
fprog = SockFprog(len(prog) // 8, ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(1, signal.SIGKILL, 0, 0, 0) or libc.prctl(38, 1, 0, 0, 0) \
        or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0):
    sys.exit("uml launcher: prctl failed: " + os.strerror(ctypes.get_errno()))
if os.getppid() != int(os.environ.pop("UML_PARENT")):
    sys.exit("uml launcher: parent gone")
os.execv(sys.argv[1], sys.argv[1:])
"""

# PID 1 inside the guest. Runs with `python -IBS`: standard library only, writes no .pyc.
_INIT = r'''
import ctypes, errno, json, os, selectors, signal, subprocess, sys, time, traceback

MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
SYS_FINIT_MODULE = 313
RB_POWER_OFF = 0x4321FEDC
libc = ctypes.CDLL(None, use_errno=True)
t0 = time.monotonic()


def log(msg):
    print("uml-init: " + msg, flush=True)


def mount(source, target, fstype, flags=MS_NOSUID | MS_NODEV, data=None):
    os.makedirs(target, exist_ok=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode(), flags,
                  data.encode() if data else None):
        err = ctypes.get_errno()
        raise OSError(err, "mount %s on %s: %s" % (fstype, target, os.strerror(err)))


def mounted(target):
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def write_synced(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load_modules(modules):
    loaded = []
    for path, params in modules:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.syscall(ctypes.c_long(SYS_FINIT_MODULE), ctypes.c_int(fd),
                            ctypes.c_char_p(params.encode()), ctypes.c_int(0)):
                err = ctypes.get_errno()
                if err != errno.EEXIST:
                    raise OSError(err, "finit_module %s: %s" % (path, os.strerror(err)))
        finally:
            os.close(fd)
        loaded.append(os.path.basename(path)[:-3] + ((" " + params) if params else ""))
    return loaded


def run_script(cfg, out):
    proc = subprocess.Popen(cfg["argv"], cwd=cfg["workdir"], env=cfg["env"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + cfg["script_timeout"]
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            break
        if not sel.select(left):
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        out.write(chunk)
        out.flush()
        os.write(1, chunk)
    rc = proc.wait()
    if timed_out:
        msg = "\n[uml-init: script killed after %.0f s]\n" % cfg["script_timeout"]
        out.write(msg.encode())
        os.write(1, msg.encode())
    return rc, timed_out


def main():
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "uml-config.json")) as f:
        cfg = json.load(f)
    status = {"returncode": None, "timed_out": False}
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        with open("/proc/uptime") as f:
            status["uptime_at_init"] = float(f.read().split()[0])
        mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        if not mounted("/dev"):
            mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755")
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        os.makedirs("/run/tmp", mode=0o1777)
        t1 = time.monotonic()
        status["loaded"] = load_modules(cfg["modules"])
        status["modules_s"] = round(time.monotonic() - t1, 3)
        log("loaded %s in %.2f s" % (", ".join(status["loaded"]), status["modules_s"]))
        t2 = time.monotonic()
        with open(cfg["output"], "wb") as out:
            status["returncode"], status["timed_out"] = run_script(cfg, out)
            out.flush()
            os.fsync(out.fileno())
        status["script_s"] = round(time.monotonic() - t2, 3)
    except BaseException:
        status["error"] = traceback.format_exc()
        sys.stdout.write(status["error"])
    status["init_s"] = round(time.monotonic() - t0, 3)
    log("script exit %s after %s s; powering off" % (status["returncode"], status.get("script_s")))
    try:
        write_synced(cfg["status"], json.dumps(status).encode())
    finally:
        os.sync()
        libc.reboot(RB_POWER_OFF)
        log("reboot(POWER_OFF) failed: " + os.strerror(ctypes.get_errno()))
        os._exit(1)


main()
'''


@dataclass(repr=False)
class UmlResult:
    """What a guest run returned."""

    #: the script's exit code; -1 when it did not finish (timeout, or the guest broke down)
    returncode: int
    #: the script's stdout and stderr, interleaved
    output: str
    #: the guest's console: kernel warnings, the init's log lines and the script's output
    console: str = ""
    #: the script or the whole guest was killed at the timeout
    timed_out: bool = False
    #: host wall time from starting the kernel until it was gone
    seconds: float = 0.0
    #: the init's figures: uptime_at_init, modules_s, script_s, init_s, loaded (module list)
    status: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"UmlResult(returncode={self.returncode}, timed_out={self.timed_out}, "
                f"seconds={self.seconds:.1f})")

    def __str__(self) -> str:
        """Everything, for an assertion message: figures, the output, the console."""
        return (f"{self!r} status={json.dumps(self.status)}\n"
                f"--- output\n{self.output}\n--- console\n{self.console}")


def _kernel_release() -> str | None:
    try:
        res = subprocess.run([str(KERNEL), "--version"], capture_output=True, text=True,  # noqa: S603
                             timeout=10, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    release = res.stdout.strip()
    return release if res.returncode == 0 and release else None


def _modules_dir() -> Path | str:
    """The module tree that matches the kernel, or why there is none."""
    if not (KERNEL.is_file() and os.access(KERNEL, os.X_OK)):
        return f"{KERNEL} is missing (install Debian's user-mode-linux package)"
    release = _kernel_release()
    if release is None:
        return f"{KERNEL} --version did not report a kernel release"
    moddir = MODULES_ROOT / release
    if not (moddir / "modules.dep").is_file():
        return f"the UML module tree {moddir} (with modules.dep) is missing"
    return moddir


def available() -> str | None:
    """None when :func:`run_in_uml` can run here, else one sentence saying why not."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "User-Mode Linux runs here only on an x86_64 Linux host"
    moddir = _modules_dir()
    if isinstance(moddir, str):
        return moddir
    try:
        _module_order(moddir, MODULES)
    except (OSError, ValueError) as exc:
        return str(exc)
    return None


_COMPRESSED = (".ko.xz", ".ko.gz")


def _module_name(target: str) -> str:
    name = Path(target).name
    for suffix in (*_COMPRESSED, ".ko"):
        name = name.removesuffix(suffix)
    return name.replace("-", "_")


def _module_order(moddir: Path, wanted: tuple[str, ...] | list[str]) -> list[Path]:
    """The module files for WANTED plus their dependencies, each after what it needs
    (``.ko``, or ``.ko.xz``/``.ko.gz`` that :func:`_plain_module` unpacks)."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        target, sep, rest = line.partition(":")
        if not sep:
            continue
        deps[_module_name(target)] = (target, rest.split())
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = _module_name(name)
        if name in seen:
            return
        seen.add(name)
        if name not in deps:
            raise ValueError(f"module {name} is not in {moddir / 'modules.dep'}")
        target, needs = deps[name]
        for dep in needs:
            visit(dep)
        path = moddir / target
        if not path.is_file():
            raise ValueError(f"module file {path} is missing")
        if not path.name.endswith((".ko", *_COMPRESSED)):
            raise ValueError(f"module file {path}: only .ko, .ko.xz and .ko.gz are supported")
        order.append(path)

    for name in wanted:
        visit(name)
    return order


def _plain_module(path: Path, workdir: Path) -> Path:
    """PATH itself when uncompressed, else a copy unpacked into WORKDIR (finit_module in the
    guest gets plain ELF and needs no decompressor configured into the UML kernel)."""
    if path.name.endswith(".ko"):
        return path
    out = workdir / "uml-modules" / (_module_name(path.name) + ".ko")
    out.parent.mkdir(exist_ok=True)
    if path.name.endswith(".xz"):
        import lzma

        out.write_bytes(lzma.decompress(path.read_bytes()))
    else:
        import gzip

        out.write_bytes(gzip.decompress(path.read_bytes()))
    return out


def _check_path(path: Path, what: str) -> None:
    # Paths travel on the kernel command line, in a #! line and through hostfs: keep them plain.
    if not _SAFE_PATH.fullmatch(str(path)) or len(str(path)) > 200:
        raise ValueError(f"{what} {str(path)!r} must be an absolute path of at most 200 "
                         "characters from [A-Za-z0-9_./+@%,:=-]")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until PROC exits without reaping it (its pid keeps naming its process group), or
    TIMEOUT passes. True when it exited."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # pragma: no cover - kernels before 5.3
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if poller.poll(max(1, int(left * 1000))):
                return True
        return False
    finally:
        os.close(pidfd)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:
        return ""


def run_in_uml(script: Path | str, *, workdir: Path, timeout: float = 120,
               mem_mib: int = 384) -> UmlResult:
    """Boot User-Mode Linux, run SCRIPT with this Python in it as root, power off.

    SCRIPT is a :class:`~pathlib.Path` to a Python file, or a ``str`` holding Python source
    (written to ``WORKDIR/uml-script.py``). It runs with WORKDIR as cwd and HOME, TMPDIR on a
    guest-only tmpfs, unbuffered output. WORKDIR (created if needed) receives the init, its
    config, the output, the status and the console log; the UML memory file is created there
    and unlinked at once. The script is killed inside the guest after TIMEOUT minus a margin
    for boot and power-off; the whole kernel is killed on the host at TIMEOUT. Raises
    RuntimeError when :func:`available` says no, ValueError for unusable paths.
    """
    moddir = _modules_dir()
    if isinstance(moddir, str):
        raise RuntimeError(moddir)
    workdir = Path(os.path.abspath(workdir))
    python = Path(sys.executable)
    _check_path(workdir, "workdir")
    _check_path(python, "the Python interpreter")
    if any(workdir == Path(m) or Path(m) in workdir.parents for m in _GUEST_MOUNTS):
        raise ValueError(f"workdir {workdir} would be hidden by the guest's own mounts")
    workdir.mkdir(parents=True, exist_ok=True)
    if isinstance(script, Path):
        script_path = Path(os.path.abspath(script))
        _check_path(script_path, "script")
    else:
        script_path = workdir / SCRIPT_NAME
        script_path.write_text(script)
    modules = [_plain_module(p, workdir) for p in _module_order(moddir, MODULES)]
    margin = min(20.0, max(5.0, timeout * 0.2))
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(workdir), "TMPDIR": "/run/tmp", "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
        "GLIBC_TUNABLES": GLIBC_TUNABLES, "OPENSSL_ia32cap": OPENSSL_IA32CAP,
    }
    config = {
        "argv": [str(python), str(script_path)], "workdir": str(workdir), "env": env,
        "modules": [[str(p), MODULE_PARAMS.get(_module_name(p.name), "")] for p in modules],
        "script_timeout": max(1.0, timeout - margin),
        "output": str(workdir / OUTPUT_NAME), "status": str(workdir / STATUS_NAME),
    }
    for name in (OUTPUT_NAME, STATUS_NAME, CONSOLE_NAME):
        (workdir / name).unlink(missing_ok=True)
    shutil.rmtree(workdir / UMID, ignore_errors=True)
    (workdir / CONFIG_NAME).write_text(json.dumps(config, indent=1))
    init = workdir / INIT_NAME
    init.write_text(f"#!{python} -IBS\n{_INIT}")
    init.chmod(0o755)

    argv = [str(python), "-I", "-B", "-S", "-c", _LAUNCHER, str(KERNEL),
            f"mem={int(mem_mib)}M", "rootfstype=hostfs", "rootflags=/", "rw", f"init={init}",
            "con=null", "con0=null,fd:1", "ssl=null", f"uml_dir={workdir}", f"umid={UMID}",
            "quiet", f"GLIBC_TUNABLES={GLIBC_TUNABLES}", f"OPENSSL_ia32cap={OPENSSL_IA32CAP}"]
    host_env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(workdir), "HOME": str(workdir),
                "UML_PARENT": str(os.getpid())}
    console_path = workdir / CONSOLE_NAME
    killed = False
    started = time.monotonic()
    with open(console_path, "wb") as console:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,  # noqa: S603
                                stderr=subprocess.STDOUT, env=host_env, cwd=workdir,
                                start_new_session=True)
        try:
            killed = not _wait_exit(proc, timeout)
        finally:
            # UML runs each guest address space as a host process of its own: take them all.
            _kill_group(proc.pid)
            proc.wait()
    seconds = time.monotonic() - started
    shutil.rmtree(workdir / UMID, ignore_errors=True)

    console_text = _read(console_path).replace("\r\n", "\n")  # the guest's tty adds \r
    try:
        status: dict[str, Any] = json.loads((workdir / STATUS_NAME).read_text())
    except (OSError, ValueError):
        status = {}
    rc = status.get("returncode")
    if killed:
        console_text += f"\n[run_in_uml: killed the guest after {timeout:.0f} s]\n"
    elif not status:
        console_text += f"\n[run_in_uml: the kernel exited with {proc.returncode} and no status]\n"
    timed_out = killed or bool(status.get("timed_out"))
    # The init fsyncs the output file before it reports; without a report the console (where
    # the init copies the script's output as it comes) is the complete record.
    output = _read(workdir / OUTPUT_NAME) if status and not killed else console_text
    if status.get("error"):
        output += f"\n[uml-init failed]\n{status['error']}"
    returncode = rc if isinstance(rc, int) and not timed_out else -1
    return UmlResult(returncode=returncode, output=output, console=console_text,
                     timed_out=timed_out, seconds=seconds, status=status)
