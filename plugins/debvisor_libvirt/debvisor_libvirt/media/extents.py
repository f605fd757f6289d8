"""Reading the guest-visible content of an image without copying it through a socket.

`qemu-img map --output=json` tells, for any format, which ranges are zero (holes, zero
clusters: never read) and where data sits in the image file. Data at a known host offset in
the image file itself (raw, qcow2, vdi) is read with ``pread`` (``O_DIRECT`` when asked,
so a read-back comes from the disk, not the page cache); anything else (compressed clusters,
backing files, vmdk extents) through a read-only `qemu-nbd`.
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from debvisor_core.errors import DebvisorError

from .hashing import TREE_BLOCK
from .nbd import NBDClient, NBDError, QemuNbd

DIRECT_FORMATS = {"raw", "qcow2", "vdi"}  # data offsets point into the image file (vhdx: no offsets)
ALIGN = 4096
CHUNK = 8 * TREE_BLOCK  # one read: 8 blocks (page-cache friendly, few syscalls)
ZERO_CHUNK = memoryview(bytes(CHUNK))


@dataclass(frozen=True)
class Extent:
    start: int
    length: int
    zero: bool
    offset: int | None  # host offset in the image file, when it can be read directly


def map_extents(path: str, fmt: str, start: int, length: int, direct_ok: bool) -> list[Extent]:
    """`qemu-img map` of [start, start+length) (-U: the image may be open elsewhere). ``path``
    is a file (format ``fmt``, given explicitly) or a `json:` spec built by the caller."""
    image = ["--", path] if path.startswith("json:") else ["-f", fmt, "--", os.path.abspath(path)]
    res = subprocess.run(  # noqa: S603 - argument list
        ["qemu-img", "map", "--output=json", "-U", f"--start-offset={start}",
         f"--max-length={length}", *image],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if res.returncode != 0:
        raise DebvisorError(f"qemu-img map of {path} failed: {res.stderr.strip()}")
    out = []
    for e in json.loads(res.stdout):
        zero = bool(e.get("zero"))
        off = e.get("offset") if direct_ok and e.get("data") and e.get("depth", 0) == 0 else None
        out.append(Extent(int(e["start"]), int(e["length"]), zero, None if off is None else int(off)))
    return out


Piece = tuple[int, int, int | None]  # (position in block, length, host offset or None: via NBD)


def blocks(extents: list[Extent], start: int, length: int) -> list[tuple[int, int, list[Piece]]]:
    """Split [start, start+length) into TREE_BLOCK blocks, each with the pieces to read."""
    out: list[tuple[int, int, list[Piece]]] = []
    end = start + length
    ei = 0
    for b in range(start, end, TREE_BLOCK):
        blen = min(TREE_BLOCK, end - b)
        pieces: list[Piece] = []
        while ei < len(extents) and extents[ei].start + extents[ei].length <= b:
            ei += 1
        j = ei
        while j < len(extents) and extents[j].start < b + blen:
            e = extents[j]
            lo, hi = max(e.start, b), min(e.start + e.length, b + blen)
            if not e.zero and hi > lo:
                host = None if e.offset is None else e.offset + (lo - e.start)
                pieces.append((lo - b, hi - lo, host))
            j += 1
        out.append((b, blen, pieces))
    pos = start
    for e in extents:
        if e.start > pos:
            break
        pos = max(pos, e.start + e.length)
    if pos < end:
        raise DebvisorError(f"qemu-img map did not describe the range up to offset {end}")
    return out


def merge(chunk: list[tuple[int, int, list[Piece]]]) -> list[Piece]:
    """The pieces of consecutive blocks, relative to the first block, with neighbours that are
    contiguous both in the guest and in the image file joined into one read."""
    base = chunk[0][0]
    out: list[Piece] = []
    for b, _, pieces in chunk:
        for pos, n, host in pieces:
            rel = b - base + pos
            if out:
                lpos, ln, lhost = out[-1]
                if lpos + ln == rel and ((lhost is None and host is None) or
                                         (lhost is not None and host == lhost + ln)):
                    out[-1] = (lpos, ln + n, lhost)
                    continue
            out.append((rel, n, host))
    return out


class GuestReader:
    """Reads blocks of guest-visible bytes of one image (thread-safe)."""

    def __init__(self, path: str, fmt: str, *, odirect: bool, sockdir: Path, name: str,
                 spec: str | None = None) -> None:
        self.path, self.fmt = path, fmt
        self.spec = spec  # what qemu-nbd opens (a json: spec), else the file as format fmt
        self.fd = os.open(path, os.O_RDONLY)
        self.dfd: int | None = None
        if odirect:
            try:
                self.dfd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            except OSError:  # tmpfs and friends: no O_DIRECT
                self.dfd = None
        self.sock = sockdir / f"{name}.sock"
        self._server: QemuNbd | None = None
        self._nbd: NBDClient | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def buffer(self, size: int = TREE_BLOCK) -> mmap.mmap:
        """A page-aligned buffer of at least ``size`` bytes for this thread (O_DIRECT needs
        alignment)."""
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < size:
            buf = self._local.buf = mmap.mmap(-1, max(size, TREE_BLOCK))
        return buf

    def read_range(self, length: int, start: int, pieces: list[Piece],
                   buf: mmap.mmap | None = None) -> memoryview:
        """Fill ``buf`` (default: this thread's buffer; page-aligned) with ``length`` guest bytes
        at ``start`` (pieces relative to ``start``, in order); the gaps between pieces are zeros
        and are not read."""
        buf = self.buffer(length) if buf is None else buf
        view = memoryview(buf)[:length]
        pos = 0
        for ppos, n, host in pieces:
            if ppos > pos:
                view[pos:ppos] = ZERO_CHUNK[:ppos - pos]
            part = view[ppos:ppos + n]
            pos = ppos + n
            if host is None:
                self._nbd_read(part, start + ppos)
                continue
            fd = self.fd
            if self.dfd is not None and not (ppos | n | host) % ALIGN:
                fd = self.dfd
            got = os.preadv(fd, [part], host)
            if got < n:  # past the end of a raw file whose size is not sector-aligned
                part[got:] = bytes(n - got)
        if pos < length:
            view[pos:] = ZERO_CHUNK[:length - pos]
        return view

    def _nbd_read(self, view: memoryview, offset: int) -> None:
        with self._lock:
            if self._nbd is None:
                self._server = QemuNbd(self.spec or self.path, self.fmt, self.sock, read_only=True,
                                       cache="writeback", aio="threads")
                self._nbd = self._server.connect()
            try:
                self._nbd.pread_into(view, offset)
            except OSError as exc:  # qemu-nbd went away (it cannot open the image, it died)
                raise NBDError(f"reading {self.path} through qemu-nbd failed: {exc}") from exc

    def reset_nbd(self) -> None:
        """Drop the NBD view (its metadata cache) so the next read sees new writes."""
        with self._lock:
            if self._nbd is not None:
                self._nbd.close()
                self._nbd = None
            if self._server is not None:
                self._server.wait()
                self._server = None

    def close(self) -> None:
        self.reset_nbd()
        os.close(self.fd)
        if self.dfd is not None:
            os.close(self.dfd)
