"""Verified, resumable disk image conversion (`debvisor hv convert`).

`qemu-img convert` cannot resume, so it is run once per segment (at most 256 MiB; the first
and last ones ramp up and down): the source and the target are both opened through QEMU's
`raw` driver with `offset`/`size` layered over the real format (`--image-opts` /
`--target-image-opts`, `-n`, `--target-is-zero`), so qemu-img itself copies the segment,
skipping holes, with `-t none -W`. When it has exited (flushed), `qemu-img map` tells where
the segment's data landed in the target, and verifier threads read source and result
(``O_DIRECT``, a few runs ahead), compare them and hash them while qemu-img writes the next
segment. A verified segment is checkpointed in a state file next to the target; `--resume`
continues after the last one. On success the result is checked (`qemu-img check`), renamed
to DST, and the checksum stored next to it (DST.blake3, DST.sha256-tree or DST.sha256: the
file name says the algorithm).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import json
import mmap
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from debvisor_core import log
from debvisor_core.errors import BadInput, DebvisorError
from debvisor_core.output import Progress, human_bytes, iso_utc
from debvisor_core.statefile import atomic_write, remove_stale_temps, write_json

from .extents import CHUNK, DIRECT_FORMATS, Extent, GuestReader, Piece, blocks, map_extents, merge
from .hashing import Blake3Stream, ResumableSha256, block_digest, zero_digest
from .nbd import NBDError

FORMATS = ("qcow2", "raw", "vmdk", "vdi", "vhdx")
CHECKABLE = {"qcow2", "vdi", "vhdx", "vmdk"}
CHECKSUMS = ("blake3", "sha256-tree", "sha256")
STREAMED = {"blake3", "sha256"}  # one hash over the byte stream, fed in order
STATE_VERSION = 3  # 3: ramped segment schedule
MiB = 1 << 20


@dataclass
class ImageInfo:
    path: str
    format: str
    virtual_size: int
    actual_size: int
    external: bool = False  # a backing file, an external data file or an extent in another file
    refs: list[tuple[str, str]] = field(default_factory=list)  # (what, file name) of those
    backing_format: str | None = None


PROTOCOL_RE = re.compile(r"^[A-Za-z0-9_.+-]+:")  # json:, nbd:, http: … (QEMU pseudo-protocols)
MAGIC = ((0, b"QFI\xfb", "qcow2"), (0, b"QED\x00", "qed"), (0, b"KDMV", "vmdk"), (0, b"COWD", "vmdk"),
         (0, b"# Disk DescriptorFile", "vmdk"), (64, b"\x7f\x10\xda\xbe", "vdi"),
         (0, b"vhdxfile", "vhdx"), (0, b"conectix", "vpc"), (0, b"LUKS\xba\xbe", "luks"))


def qpath(path: str | Path) -> str:
    """A file name for a qemu tool: absolute, so it never parses as an option (`-h.raw`) nor
    as a pseudo-protocol (`json:…`, `nbd:…`: QEMU treats a colon before the first slash so)."""
    return os.path.abspath(path)


def sniff(path: str) -> str | None:
    """The image format the first bytes announce (None: no known header), read here rather
    than by QEMU's prober, which would open what a header names."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    for off, magic, name in MAGIC:
        if head[off:off + len(magic)] == magic:
            return name
    return None


def image_info(path: str, fmt: str | None = None) -> ImageInfo:
    """What `qemu-img info` says about ``path`` (format ``fmt``, or detected by QEMU, which
    opens neither the backing file nor the data file for this)."""
    argv = ["qemu-img", "info", "--output=json", "-U", *(["-f", fmt] if fmt else []), "--", qpath(path)]
    res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)  # noqa: S603
    if res.returncode != 0:
        msg = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "unreadable"
        raise BadInput(f"cannot read image {path}: {msg.removeprefix('qemu-img: ')}")
    try:
        data = json.loads(res.stdout)
        spec = (data.get("format-specific") or {}).get("data") or {}
        refs: list[tuple[str, str]] = []
        given, full = data.get("backing-filename"), data.get("full-backing-filename")
        if given or full:  # the resolved name, unless the name as written is a pseudo-protocol
            refs.append(("backing file", str(given if given and PROTOCOL_RE.match(str(given))
                                             else full or given)))
        if spec.get("data-file"):
            refs.append(("external data file", str(spec["data-file"])))
        here = os.path.realpath(path)
        for ext in spec.get("extents") or []:  # vmdk: a descriptor may name any file as an extent
            name = str(ext.get("filename", ""))
            if PROTOCOL_RE.match(name) or os.path.realpath(
                    os.path.join(os.path.dirname(qpath(path)), name)) != here:
                refs.append(("extent file", name))
        return ImageInfo(path, str(data["format"]), int(data["virtual-size"]),
                         int(data.get("actual-size", 0)), bool(refs), refs,
                         data.get("backing-filename-format"))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BadInput(f"cannot read image {path}: qemu-img info gave no usable description") from None


def source_format(src: str, given: str | None) -> tuple[str | None, list[str]]:
    """The source format to pass explicitly (None: let qemu-img info detect it) and warnings.

    ``-f`` wins; a `.raw` file is raw whatever its first bytes say (a guest can write any
    header into its own raw disk)."""
    found = sniff(src)
    if given:
        warn = [f"{src} starts with a {found} header; converting it as {given} as -f says"] \
            if found and found != given else []
        return given, warn
    if src.lower().endswith(".raw"):
        warn = [f"{src} starts with a {found} header; converting it as raw because of its name "
                f"(pass -f {found} if it really is a {found} image)"] if found else []
        return "raw", warn
    return None, []


@dataclass
class Plan:
    """A checked conversion request (everything validated before work starts)."""

    src: str
    dst: str
    fmt: str
    src_format: str
    size: int
    compress: bool = False
    checksum: str = "blake3"
    segment: int = 256 * MiB
    cache: str = "none"
    aio: str = "threads"
    resume: bool = False
    src_mtime_ns: int = 0
    src_direct: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    allow_backing: bool = False
    mode: int = 0o600
    chain: list[dict[str, str]] = field(default_factory=list)  # files read besides the source

    @property
    def tmp(self) -> Path:
        d = Path(self.dst)
        return d.with_name(f".{d.name}.partial")

    @property
    def state_path(self) -> Path:
        d = Path(self.dst)
        return d.with_name(f".{d.name}.convert-state.json")

    @property
    def checksum_path(self) -> Path:
        return Path(f"{self.dst}.{self.checksum}")

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed."""
        return {"version": STATE_VERSION, "src": os.path.abspath(self.src), "src_format": self.src_format,
                "size": self.size, "src_mtime_ns": self.src_mtime_ns, "fmt": self.fmt,
                "compress": self.compress, "checksum": self.checksum, "segment": self.segment}


def prepare(src: str, dst: str, fmt: str | None, *, compress: bool, force: bool, resume: bool,
            checksum: str = "blake3", segment_mib: int = 256, cache: str = "none",
            aio: str = "threads", src_fmt: str | None = None, allow_backing: bool = False,
            mode: int = 0o600) -> Plan:
    """Validate everything (bad input → BadInput) and return the plan."""
    if not dst or dst.endswith("/") or os.path.isdir(dst):
        raise BadInput(f"destination {dst!r} is not an image file name: give a file path "
                       "(not a directory), e.g. disk.qcow2")
    if not os.path.exists(src):
        raise BadInput(f"source image {src} does not exist")
    if not os.path.isfile(src) and not Path(src).is_block_device():
        raise BadInput(f"source {src} is not a file or block device")
    if fmt is not None and fmt not in FORMATS:
        raise BadInput(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")
    if src_fmt is not None and src_fmt not in FORMATS:
        raise BadInput(f"unknown source format {src_fmt!r}: use one of {', '.join(FORMATS)}")
    if mode & ~0o777:
        raise BadInput(f"--mode {mode:o} is not a permission mode like 0600 or 0644")
    forced, warnings = source_format(src, src_fmt)
    for w in warnings:
        log.warn(w)
    info = image_info(src, forced)
    chain = _check_references(info, allow_backing)
    target_fmt = fmt or info.format
    if target_fmt not in FORMATS:
        raise BadInput(f"source format {info.format} cannot be written: pass -O with one of "
                       f"{', '.join(FORMATS)}")
    if compress and target_fmt != "qcow2":
        raise BadInput("--compress needs -O qcow2")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise BadInput("source and destination are the same file")
    if checksum not in CHECKSUMS:
        raise BadInput(f"unknown checksum {checksum!r}: use one of {', '.join(CHECKSUMS)}")
    if segment_mib < 1:
        raise BadInput("--segment must be at least 1 (MiB)")
    if aio == "native" and cache not in ("none", "directsync"):
        raise BadInput("--aio native needs --cache none or directsync; use --aio threads")
    dst_dir = Path(os.path.abspath(dst)).parent  # not resolve(): a symlink at DST is replaced, never followed
    if not dst_dir.is_dir():
        raise BadInput(f"destination directory {dst_dir} does not exist")
    plan = Plan(src, dst, target_fmt, info.format, info.virtual_size, compress, checksum,
                segment_mib * MiB, cache, aio, resume, os.stat(src).st_mtime_ns,
                info.format in DIRECT_FORMATS and not info.external, allow_backing=allow_backing,
                mode=mode, chain=chain)
    if os.path.lexists(dst) and not force:
        raise BadInput(f"{dst} already exists: pass --force to replace it")
    state = load_state(plan)
    if resume and state is not None and state.get("identity") != plan.identity():
        raise BadInput(f"cannot resume: the checkpoint in {plan.state_path} is for a different "
                       "source or options; run without --resume to start over")
    if not resume and os.path.lexists(plan.tmp):
        log.info(f"discarding an earlier unfinished conversion ({plan.tmp.name}); "
                 "use --resume to continue one instead")
    need = _space_needed(info, plan, state if resume else None)
    st = os.statvfs(dst_dir)
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise BadInput(f"not enough free space in {dst_dir}: the image needs about "
                       f"{human_bytes(need)}, {human_bytes(free)} free")
    return plan


MAX_CHAIN = 16


def _check_references(info: ImageInfo, allow_backing: bool) -> list[dict[str, str]]:
    """Refuse an image that reads other files (backing file, external data file, vmdk extent)
    unless ``allow_backing``; refuse QEMU pseudo-protocols (`json:`, `nbd:`, `http:` …) always.
    With ``allow_backing``, walk the chain one level at a time (each level is checked before
    the next is opened) and return the files that will be read, for the operator to see."""
    chain: list[dict[str, str]] = []
    cur = info
    while cur.refs:
        for what, name in cur.refs:
            if PROTOCOL_RE.match(name):
                raise BadInput(f"{info.path}: its {what} is a QEMU pseudo-protocol name "
                               f"({name.split(':', 1)[0]}:…), which can read any file or a network "
                               "endpoint; refused (also with --allow-backing)")
        if not allow_backing:
            what, name = cur.refs[0]
            raise BadInput(f"{info.path} reads another file ({what} {name}), whose content would be "
                           "copied into the result; refused: pass --allow-backing to convert it with "
                           "that file (the chain is shown), or convert a flattened copy")
        for what, name in cur.refs:
            chain.append({"of": cur.path, "kind": what, "file": name})
        backing = [n for w, n in cur.refs if w == "backing file"]
        if not backing:
            break
        if len(chain) > MAX_CHAIN:
            raise BadInput(f"{info.path}: the backing chain is longer than {MAX_CHAIN} files")
        nxt = backing[0]
        if not os.path.exists(nxt):
            raise BadInput(f"{info.path}: backing file {nxt} does not exist")
        cur = image_info(nxt, cur.backing_format)
    if chain:
        log.warn(f"{info.path} reads {len(chain)} other file(s) (--allow-backing): "
                 + "; ".join(f"{c['kind']} of {c['of']}: {c['file']}" for c in chain))
    return chain


def _space_needed(info: ImageInfo, plan: Plan, state: dict[str, Any] | None) -> int:
    data = info.actual_size or info.virtual_size
    if info.format == "raw" and os.path.isfile(info.path):
        data = os.stat(info.path).st_blocks * 512  # allocated bytes of a sparse raw file
    need = min(data, info.virtual_size) + 16 * MiB
    if state is not None and plan.tmp.exists():
        need -= os.stat(plan.tmp).st_blocks * 512
    return max(need, 0)


def load_state(plan: Plan) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(plan.state_path.read_text())
        return data
    except (OSError, ValueError):
        return None


class _Sums:
    """The running checksum of one conversion, saved in every checkpoint (the result is
    compared with the source byte for byte, so one checksum serves both).

    sha256-tree: the outer sha256 over the block digests; sha256: the running sha256; blake3:
    the running BLAKE3 (not saved: a resume re-hashes the verified prefix).
    """

    def __init__(self, checksum: str, state: dict[str, Any] | None = None) -> None:
        self.checksum = checksum
        saved = (state or {}).get("sums") or {}
        self.src: ResumableSha256 | Blake3Stream
        self.dst: ResumableSha256 | Blake3Stream
        if checksum == "blake3":
            self.src = self.dst = Blake3Stream()
            return
        self.src = ResumableSha256(bytes.fromhex(saved["src"]) if saved.get("src") else None)
        self.dst = ResumableSha256(bytes.fromhex(saved["dst"]) if saved.get("dst") else None)

    def to_state(self) -> dict[str, str | None]:
        if self.checksum == "blake3":
            return {"src": None, "dst": None}
        s1, s2 = self.src.state(), self.dst.state()
        return {"src": s1.hex() if s1 else None, "dst": s2.hex() if s2 else None}


def _save_state(plan: Plan, done: int, sums: dict[str, str | None]) -> None:
    write_json(plan.state_path, {"identity": plan.identity(), "tmp": str(plan.tmp), "done": done,
                                 "sums": sums, "time": iso_utc()})


def _run(argv: list[str], what: str, ok: tuple[int, ...] = (0,)) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)  # noqa: S603
    if res.returncode not in ok:
        raise DebvisorError(f"{what} failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def _create_target(plan: Plan) -> None:
    """Create the partial result: `qemu-img create` works in a private (0700) directory next to
    DST, where nobody can plant a symlink for it to follow; the file is made owner-only and
    renamed to ``.DST.partial``, which replaces (never follows) whatever sits under that name."""
    private = Path(tempfile.mkdtemp(dir=plan.tmp.parent, prefix=f".{Path(plan.dst).name}.", suffix=".new"))
    try:
        image = private / Path(plan.dst).name
        argv = ["qemu-img", "create", "-q", "-f", plan.fmt]
        if plan.fmt == "qcow2":
            argv += ["-o", "compat=1.1"]
        _run([*argv, "--", qpath(image), str(plan.size)], "qemu-img create")
        fd = os.open(image, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        os.replace(image, plan.tmp)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    got = image_info(str(plan.tmp), plan.fmt).virtual_size
    if got < plan.size:
        raise DebvisorError(f"{plan.fmt} cannot hold exactly {plan.size} bytes (got {got})")


def source_json(plan: Plan, window: tuple[int, int] | None = None) -> str:
    """The source for qemu tools as a `json:` spec built here: the format is explicit (never
    probed), the file name is only ever a value, and without --allow-backing the backing file
    is switched off (``"backing": null``) even if the header changed since the preflight."""
    proto: dict[str, Any] = {"driver": "host_device" if Path(plan.src).is_block_device() else "file",
                             "filename": qpath(plan.src)}
    node: dict[str, Any] = proto
    if plan.src_format != "raw":
        node = {"driver": plan.src_format, "file": proto}
        if not plan.allow_backing:
            node["backing"] = None
    if window is not None:
        node = {"driver": "raw", "offset": window[0], "size": window[1], "file": node}
    return "json:" + json.dumps(node, separators=(",", ":"))


def _esc(value: str) -> str:
    return value.replace(",", ",,")


def _window_opts(fmt: str, path: str, offset: int, size: int, *, protocol: str,
                 extra: str = "", compress: bool = False) -> str:
    """`raw` driver with offset/size over the real format: a window of the guest-visible bytes."""
    proto = f"driver={protocol},filename={_esc(path)}{extra}"
    inner = proto if fmt == "raw" else f"driver={fmt},{_prefix('file.', proto)}"
    if compress:
        inner = f"driver=compress,{_prefix('file.', inner)}"
    return f"driver=raw,offset={offset},size={size},{_prefix('file.', inner)}"


def _prefix(prefix: str, opts: str) -> str:
    """Prefix every key of an option string (values may contain doubled commas)."""
    parts, cur, i = [], "", 0
    while i < len(opts):
        if opts[i] == "," and opts[i + 1:i + 2] == ",":
            cur += ",,"
            i += 2
            continue
        if opts[i] == ",":
            parts.append(cur)
            cur = ""
        else:
            cur += opts[i]
        i += 1
    parts.append(cur)
    return ",".join(prefix + p for p in parts)


class _Writer:
    """One `qemu-img convert -n` of one segment, in its own process group (Ctrl-C is ours)
    and killed if we die (``setpriv --pdeathsig``), so no writer outlives a killed run."""

    def __init__(self, plan: Plan, offset: int, size: int) -> None:
        src = source_json(plan, (offset, size))
        extra = f",aio={plan.aio}" if plan.aio != "threads" else ""
        dst = _window_opts(plan.fmt, qpath(plan.tmp), offset, size, protocol="file", extra=extra,
                           compress=plan.compress)
        # --target-is-zero: the target is fresh, and every earlier (possibly killed) writer of
        # it copied the same source to the same place, never writing where the source is zero.
        # writeback: QEMU writes through the page cache and does not flush (-t unsafe); DebVisor
        # fdatasyncs the image before each checkpoint instead (one flush, not qcow2's many).
        cache = "unsafe" if plan.cache == "writeback" else plan.cache
        argv = ["qemu-img", "convert", "-n", "--target-is-zero", "-W", "-m", "16", "-t", cache,
                "-T", "writeback", "--target-image-opts", "--", src, dst]
        if shutil.which("setpriv"):
            argv = ["setpriv", "--pdeathsig", "KILL", *argv]
        self.proc = subprocess.Popen(  # noqa: S603 - argument list
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            process_group=0,
        )

    def wait(self) -> None:
        _, err = self.proc.communicate()
        if self.proc.returncode != 0:
            raise DebvisorError(f"qemu-img convert failed: {err.decode(errors='replace').strip()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.communicate()


def convert(plan: Plan) -> dict[str, Any]:
    """Run (or resume) the conversion; return a summary with the verified checksum."""
    state = load_state(plan) if plan.resume else None
    if state is not None and not Path(state.get("tmp", "")).exists():
        state = None
    done = 0
    saved = (state or {}).get("sums") or {}
    if state is not None and (plan.checksum == "blake3" or
                              (ResumableSha256.available() and saved.get("src"))):
        done = int(state["done"])
        sums = _Sums(plan.checksum, state)
        log.info(f"resuming at {human_bytes(done)} of {human_bytes(plan.size)} "
                 f"({100 * done // max(plan.size, 1)}%)")
        if plan.fmt == "qcow2":  # a writer killed mid-segment may have leaked clusters; after a
            # power loss (QEMU's ordering flushes are replaced by our checkpoint syncs) refcounts
            # of unverified segments may be wrong: both are repaired before writing again
            _run(["qemu-img", "check", "-q", "-r", "all", "-f", "qcow2", "--", qpath(plan.tmp)],
                 "qemu-img check -r all of the partial result", ok=(0, 3))
    else:
        if plan.resume:
            log.info("no usable checkpoint: starting from the beginning")
        sums = _Sums(plan.checksum)
        _create_target(plan)
        _save_state(plan, 0, sums.to_state())
    started = time.monotonic()
    _copy(plan, done, sums)
    digest = sums.src.hexdigest()  # every block of the result was compared with the source's
    if plan.fmt in CHECKABLE:
        _run(["qemu-img", "check", "-q", "-f", plan.fmt, "--", qpath(plan.tmp)],
             "qemu-img check of the result")
    fd = os.open(plan.tmp, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, plan.mode)  # 0600 unless --mode (also for a partial result of an older run)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(plan.tmp, plan.dst)  # a symlink planted at DST is replaced, not followed
    name = Path(plan.dst).name
    how = {"blake3": "qemu-img convert -O raw {n} x.raw && b3sum x.raw",
           "sha256": "qemu-img convert -O raw {n} x.raw && sha256sum x.raw"}.get(
        plan.checksum, "sha256 over the sha256 digests of its 1 MiB blocks (see MEDIA.md)")
    with atomic_write(plan.checksum_path, plan.mode) as f:
        f.write(f"# {plan.checksum} of the guest-visible content ({plan.size} bytes) of {name}\n"
                f"# check: {how.format(n=name)}\n{digest}  {name}\n".encode())
    plan.state_path.unlink(missing_ok=True)
    remove_stale_temps(plan.state_path)  # a checkpoint write cut short by a SIGKILL
    dfd = os.open(Path(os.path.abspath(plan.dst)).parent, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    return {"source": plan.src, "source_format": plan.src_format, "destination": plan.dst,
            "format": plan.fmt, "compressed": plan.compress, "virtual_size": plan.size,
            "checksum": plan.checksum, plan.checksum: digest, "checksum_file": str(plan.checksum_path),
            "resumed_from": done, "copied_bytes": plan.size - done,
            "seconds": round(time.monotonic() - started, 3)}


Job = tuple[int, int, list[Piece], list[Piece]]  # block start, length, source and result pieces


class _Mismatch(Exception):
    def __init__(self, offset: int) -> None:
        self.offset = offset


READ_AHEAD = 2  # runs being read while one is compared and hashed (streamed checksums)


class _Verifier:
    """Reads source and result, compares them byte for byte (memcmp, no GIL) and hashes each
    block once: the checksum of identical content is the checksum of both.

    Blocks that are zero on both sides cost nothing (constant digest, no read); the others are
    read in runs of up to CHUNK bytes, the source once and the result once. For a streamed
    checksum, hashed in order, the next READ_AHEAD runs are read (source and result in parallel)
    while one is compared and hashed, so the disk never waits for the hash."""

    def __init__(self, src: GuestReader, dst: GuestReader,
                 plain: ResumableSha256 | Blake3Stream | None) -> None:
        self.src, self.dst, self.plain = src, dst, plain
        self.pool = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="dv-verify")
        self.io = cf.ThreadPoolExecutor(max_workers=2 * READ_AHEAD, thread_name_prefix="dv-read")
        self.before: cf.Future[bytes] | None = None  # hashing of a resumed run's prefix
        self._slots: list[tuple[mmap.mmap, mmap.mmap]] = []  # read-ahead buffers, reused
        self._slots_lock = threading.Lock()

    def rehash(self, ext: list[Extent], done: int) -> None:
        """Start feeding the source's [0, done) to the streamed hash (a resumed blake3: its state
        was not saved); the segments after it are hashed once this has finished."""
        jobs: list[Job] = [(b, blen, sp, []) for b, blen, sp in blocks(ext, 0, done)]
        self.before = self.pool.submit(self._plain, jobs, False)

    def submit(self, jobs: list[Job]) -> Callable[[], list[bytes]]:
        """Start verifying ``jobs`` (consecutive blocks); the returned call waits for the block
        digests (streamed: one item, the running state after them; hashed in order)."""
        if self.plain is not None:
            fut = self.pool.submit(self._plain, jobs)
            return lambda: [fut.result()]
        digests: list[bytes] = [b""] * len(jobs)
        futs = []
        for lo, hi in self._runs(jobs):
            futs.append(self.pool.submit(self._digests, jobs, lo, hi, digests))
        for i, job in enumerate(jobs):
            if not job[2] and not job[3]:
                digests[i] = zero_digest(job[1])

        def wait() -> list[bytes]:
            for f in futs:
                f.result()
            return digests
        return wait

    @staticmethod
    def _runs(jobs: list[Job]) -> list[tuple[int, int]]:
        """Index ranges of consecutive blocks to read (not zero on both sides), ≤ CHUNK bytes."""
        runs: list[tuple[int, int]] = []
        lo, size = -1, 0
        for i, (_, blen, sp, dp) in enumerate(jobs):
            if not sp and not dp:
                if lo >= 0:
                    runs.append((lo, i))
                lo = -1
                continue
            if lo >= 0 and size + blen > CHUNK:
                runs.append((lo, i))
                lo = -1
            if lo < 0:
                lo, size = i, 0
            size += blen
        if lo >= 0:
            runs.append((lo, len(jobs)))
        return runs

    def _read_side(self, jobs: list[Job], lo: int, hi: int, side: int,
                   buf: mmap.mmap | None = None) -> memoryview | None:
        """The bytes of run [lo, hi) of the source (``side`` 2) or the result (3); None when
        that side is all zero there (nothing is read)."""
        pieces = merge([(j[0], j[1], j[2] if side == 2 else j[3]) for j in jobs[lo:hi]])
        if not pieces:
            return None
        reader = self.src if side == 2 else self.dst
        return reader.read_range(sum(j[1] for j in jobs[lo:hi]), jobs[lo][0], pieces, buf)

    def _read(self, jobs: list[Job], lo: int, hi: int) -> tuple[memoryview | None, memoryview | None]:
        return self._read_side(jobs, lo, hi, 2), self._read_side(jobs, lo, hi, 3)

    def _read_ahead(self, jobs: list[Job], runs: list[tuple[int, int]], *, result: bool = True
                    ) -> Iterator[tuple[int, int, memoryview | None, memoryview | None]]:
        """(lo, hi, source bytes, result bytes) of each run, in order, read READ_AHEAD runs
        ahead; a run's buffers are reused once the caller has moved on to the next run."""
        with self._slots_lock:
            slots = [self._slots.pop() if self._slots else (mmap.mmap(-1, CHUNK), mmap.mmap(-1, CHUNK))
                     for _ in range(min(READ_AHEAD, len(runs)))]
        Read = cf.Future[memoryview | None]
        inflight: deque[tuple[int, int, Read, Read | None, tuple[mmap.mmap, mmap.mmap]]] = deque()

        def start(k: int, slot: tuple[mmap.mmap, mmap.mmap]) -> None:
            lo, hi = runs[k]
            fa = self.io.submit(self._read_side, jobs, lo, hi, 2, slot[0])
            fb = self.io.submit(self._read_side, jobs, lo, hi, 3, slot[1]) if result else None
            inflight.append((lo, hi, fa, fb, slot))

        try:
            for k, slot in enumerate(slots):
                start(k, slot)
            nxt = len(slots)
            while inflight:
                lo, hi, fa, fb, slot = inflight.popleft()
                yield lo, hi, fa.result(), fb.result() if fb else None
                if nxt < len(runs):
                    start(nxt, slot)
                    nxt += 1
        finally:  # stopped early (a mismatch, an error): no read may outlive its buffer's use
            for *_, fa, fb, _slot in inflight:
                cf.wait([f for f in (fa, fb) if f is not None])
            with self._slots_lock:
                self._slots.extend(slots)

    @staticmethod
    def _check(jobs: list[Job], lo: int, hi: int, a: memoryview | None,
               b: memoryview | None) -> memoryview | None:
        """Compare a run block by block; its bytes (None: all zero)."""
        pos = 0
        for j in jobs[lo:hi]:
            blen = j[1]
            if not same(None if a is None else a[pos:pos + blen], None if b is None else b[pos:pos + blen],
                        blen):
                raise _Mismatch(j[0])
            pos += blen
        return a if a is not None else b

    def _digests(self, jobs: list[Job], lo: int, hi: int, out: list[bytes]) -> None:
        data = self._check(jobs, lo, hi, *self._read(jobs, lo, hi))
        pos = 0
        for i in range(lo, hi):
            blen = jobs[i][1]
            out[i] = zero_digest(blen) if data is None else block_digest(data[pos:pos + blen])
            pos += blen

    def _plain(self, jobs: list[Job], compare: bool = True) -> bytes:
        """Compare (or, for a resumed prefix, only read the source) and feed the stream in order;
        holes are fed from a preallocated zero buffer, never read."""
        assert self.plain is not None
        if compare and self.before is not None:
            self.before.result()
            self.before = None
        i = 0
        for lo, hi, a, b in self._read_ahead(jobs, self._runs(jobs), result=compare):
            self._zeros(sum(j[1] for j in jobs[i:lo]))  # zero on both sides
            data = self._check(jobs, lo, hi, a, b) if compare else a
            length = sum(j[1] for j in jobs[lo:hi])
            self.plain.update(ZEROS[:length] if data is None else data)
            i = hi
        self._zeros(sum(j[1] for j in jobs[i:]))
        return self.plain.state() or b""

    def _zeros(self, n: int) -> None:
        assert self.plain is not None
        while n > 0:
            k = min(n, CHUNK)
            self.plain.update(ZEROS[:k])
            n -= k

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.io.shutdown(wait=True, cancel_futures=True)


_ZBUF = ctypes.create_string_buffer(CHUNK)  # writable: ResumableSha256 hashes it without a copy
ZEROS = memoryview(_ZBUF).cast("B")


@cache
def _memcmp() -> Any:
    fn = ctypes.CDLL(None).memcmp
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return fn


def same(a: memoryview | None, b: memoryview | None, n: int) -> bool:
    """``a == b`` over n bytes (None: zeros) with libc memcmp, which runs without the GIL."""
    def addr(v: memoryview | None) -> int:
        if v is None:
            return ctypes.addressof(_ZBUF)
        return ctypes.addressof(ctypes.c_char.from_buffer(v))
    return int(_memcmp()(addr(a), addr(b), n)) == 0


def schedule(size: int, segment: int) -> list[tuple[int, int]]:
    """The (offset, length) of every segment of a ``size``-byte image: one qemu-img run and one
    checkpoint each, at most ``segment`` bytes. The first segments ramp up (segment/8, /4, /2)
    and the last ones ramp down, because nothing overlaps the first write and the last
    read-back. Every boundary but the end is a whole MiB (sha256-tree blocks never straddle
    two segments)."""
    whole = size - size % MiB
    ramp = [r for r in (segment // 8 // MiB * MiB, segment // 4 // MiB * MiB,
                        segment // 2 // MiB * MiB) if r >= MiB]
    head: list[int] = []
    left = whole
    for r in ramp:
        if left > 0:
            head.append(min(r, left))
            left -= head[-1]
    tail: list[int] = []
    for r in ramp:
        if left > 0:
            tail.append(min(r, left))
            left -= tail[-1]
    middle = [left % segment] if left % segment else []  # the odd one early: no extra tail cost
    middle += [segment] * (left // segment)
    out, off = [], 0
    for n in [*head, *middle, *reversed(tail)]:
        out.append((off, n))
        off += n
    if size > off:  # the bytes after the last whole MiB belong to the last segment
        out[-1:] = [(out[-1][0], size - out[-1][0])] if out else [(0, size)]
    return out


def segments(plan: Plan, done: int) -> list[tuple[int, int]]:
    """The (offset, length) of the segments still to copy after ``done``."""
    return [(max(off, done), off + n - max(off, done)) for off, n in schedule(plan.size, plan.segment)
            if off + n > done]


def _jobs(src_ext: list[Extent], dst_ext: list[Extent], off: int, n: int) -> list[Job]:
    return [(b, blen, sp, dp) for (b, blen, sp), (_, _, dp)
            in zip(blocks(src_ext, off, n), blocks(dst_ext, off, n), strict=True)]


def _map_and_verify(verifier: _Verifier, plan: Plan, src_ext: list[Extent], off: int,
                    n: int) -> list[bytes]:
    dst_ext = map_extents(str(plan.tmp), plan.fmt, off, n, True)
    return verifier.submit(_jobs(src_ext, dst_ext, off, n))()


def _later(fut: cf.Future[list[bytes]]) -> Callable[[], list[bytes]]:
    return fut.result


def _copy(plan: Plan, done: int, sums: _Sums) -> None:
    """Copy [done, size) segment by segment, checkpointing after each verified segment."""
    sockdir = Path(tempfile.mkdtemp(prefix="dv-convert-"))
    plain = plan.checksum in STREAMED
    src_r = GuestReader(plan.src, plan.src_format, odirect=False, sockdir=sockdir, name="src",
                        spec=source_json(plan))
    dst_r = GuestReader(str(plan.tmp), plan.fmt, odirect=plan.cache in ("none", "directsync"),
                        sockdir=sockdir, name="dst")
    verifier = _Verifier(src_r, dst_r, sums.src if plain else None)
    writer: _Writer | None = None
    pending: tuple[int, int, Callable[[], list[bytes]]] | None = None
    verified = done
    syncer = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dv-sync")
    mapper = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dv-map")
    sync_fd = os.open(plan.tmp, os.O_RDONLY)
    synced: list[cf.Future[None]] = []

    def checkpoint(upto: int, saved: dict[str, str | None]) -> None:
        """Record a verified segment once it is on disk (in order: one thread)."""
        if plan.cache != "unsafe":
            os.fdatasync(sync_fd)
        _save_state(plan, upto, saved)

    try:
        if plan.checksum == "blake3" and done > 0:
            verifier.rehash(map_extents(source_json(plan), plan.src_format, 0, done, plan.src_direct), done)
        src_ext = map_extents(source_json(plan), plan.src_format, done, plan.size - done,
                              plan.src_direct) \
            if done < plan.size else []
        label = f"convert {Path(plan.src).name} -> {Path(plan.dst).name}"
        with Progress(label) as progress:
            progress.update(done, plan.size)

            def verify() -> None:
                nonlocal pending, verified
                if pending is None:
                    return
                off, n, wait = pending
                pending = None
                try:
                    digests = wait()
                except _Mismatch as exc:
                    raise DebvisorError(
                        f"verification failed: the result differs from the source in the block at "
                        f"offset {exc.offset}; the partial result stays in {plan.tmp}") from None
                if plain:  # the running state after this segment
                    saved = {"src": digests[0].hex() or None, "dst": None}
                else:
                    for d in digests:
                        sums.src.update(d)
                    saved = sums.to_state()
                verified = off + n
                synced.append(syncer.submit(checkpoint, verified, saved))
                progress.update(verified, plan.size)

            # the result's map is taken in a thread while qemu-img writes the next segment (with
            # -U: segments before it are final, its L2 entries are rewritten unchanged); data QEMU
            # cannot place in the file (read through qemu-nbd) is verified before the next writer
            direct = plan.fmt in DIRECT_FORMATS and not plan.compress
            for off, n in segments(plan, done):
                writer = _Writer(plan, off, n)
                verify()  # the previous segment is verified while qemu-img writes this one
                writer.wait()
                writer = None
                if direct:
                    pending = (off, n, _later(mapper.submit(_map_and_verify, verifier, plan, src_ext,
                                                            off, n)))
                    continue
                dst_ext = map_extents(str(plan.tmp), plan.fmt, off, n, plan.fmt in DIRECT_FORMATS)
                pending = (off, n, verifier.submit(_jobs(src_ext, dst_ext, off, n)))
                if any(not e.zero and e.offset is None for e in dst_ext):
                    verify()  # read through qemu-nbd: finish before the next writer opens the image
                    dst_r.reset_nbd()
            verify()
        if verifier.before is not None:  # resumed after the last segment: nothing left to copy
            verifier.before.result()
        for f in synced:
            f.result()
    except KeyboardInterrupt:
        log.warn(f"interrupted at {human_bytes(verified)} of {human_bytes(plan.size)}: run the same "
                 "command with --resume to continue")
        raise
    except NBDError as exc:
        raise DebvisorError(f"conversion failed after offset {verified}: {exc}") from exc
    finally:
        if writer is not None:
            writer.stop()
        mapper.shutdown(wait=True, cancel_futures=True)
        verifier.close()
        syncer.shutdown(wait=True)  # checkpoints of verified segments still count
        os.close(sync_fd)
        src_r.close()
        dst_r.close()
        shutil.rmtree(sockdir, ignore_errors=True)


def plan_dict(plan: Plan) -> dict[str, Any]:
    d = asdict(plan)
    d.update(tmp=str(plan.tmp), state=str(plan.state_path))
    return d
