"""A minimal NBD client (fixed-newstyle handshake, simple replies) and a `qemu-nbd` launcher.

`qemu-nbd` exposes any image format QEMU understands as a flat, guest-visible byte
range on a Unix socket; this client reads and writes that range in chunks, which is
what makes a conversion resumable (qemu-img convert has no resume).
Protocol: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from pathlib import Path

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
OPT_EXPORT_NAME = 1
REQUEST_MAGIC = 0x25609513
REPLY_MAGIC = 0x67446698
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_WRITE_ZEROES = 0, 1, 2, 3, 6
FLAG_READ_ONLY = 1 << 1
MAX_REQUEST = 32 << 20


class NBDError(Exception):
    """The NBD server refused a request or broke the protocol."""


class NBDClient:
    """One connection to an NBD export over a Unix socket."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self._handle = 0
        self._pending: dict[int, memoryview | None] = {}
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            self.sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        self.size, self.flags = self._handshake()

    def _recv(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:], n - got)
            if k == 0:
                raise NBDError("the NBD server closed the connection")
            got += k
        return bytes(buf)

    def _recv_into(self, view: memoryview) -> None:
        got, n = 0, len(view)
        while got < n:
            k = self.sock.recv_into(view[got:], n - got)
            if k == 0:
                raise NBDError("the NBD server closed the connection")
            got += k

    def _handshake(self) -> tuple[int, int]:
        magic, opt_magic, hflags = struct.unpack(">QQH", self._recv(18))
        if magic != NBDMAGIC or opt_magic != IHAVEOPT or not hflags & FLAG_FIXED_NEWSTYLE:
            raise NBDError("not a fixed-newstyle NBD server")
        cflags = FLAG_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES)
        self.sock.sendall(struct.pack(">I", cflags))
        self.sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, 0))
        size, tflags = struct.unpack(">QH", self._recv(10))
        if not cflags & FLAG_NO_ZEROES:
            self._recv(124)
        return size, tflags

    def _request(self, cmd: int, offset: int, length: int, payload: bytes | memoryview = b"") -> int:
        self._handle += 1
        self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, cmd, self._handle, offset, length))
        if payload:
            self.sock.sendall(payload)
        return self._handle

    def _reply(self, handle: int) -> None:
        while handle in self._pending:
            self._read_one_reply()

    def _read_one_reply(self) -> None:
        magic, err, h = struct.unpack(">IIQ", self._recv(16))
        if magic != REPLY_MAGIC or h not in self._pending:
            raise NBDError("unexpected NBD reply")
        view = self._pending.pop(h)
        if err:
            raise NBDError(f"NBD request failed: {os.strerror(err)}")
        if view is not None:
            self._recv_into(view)

    def submit_read(self, view: memoryview, offset: int) -> None:
        """Queue a read into ``view`` (filled when its reply arrives; see ``drain``)."""
        pos = 0
        while pos < len(view):
            n = min(MAX_REQUEST, len(view) - pos)
            h = self._request(CMD_READ, offset + pos, n)
            self._pending[h] = view[pos:pos + n]
            pos += n

    def submit_write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Send a write without waiting for its reply (``drain`` collects replies)."""
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            n = min(MAX_REQUEST, len(view) - pos)
            h = self._request(CMD_WRITE, offset + pos, n, view[pos:pos + n])
            self._pending[h] = None
            pos += n

    def submit_write_zeroes(self, offset: int, length: int) -> None:
        pos = 0
        while pos < length:
            n = min(1 << 30, length - pos)
            self._pending[self._request(CMD_WRITE_ZEROES, offset + pos, n)] = None
            pos += n

    def drain(self, keep: int = 0) -> None:
        """Collect replies until at most ``keep`` requests are outstanding."""
        while len(self._pending) > keep:
            self._read_one_reply()

    def pread_into(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` with the export's bytes at ``offset``."""
        self.submit_read(view, offset)
        self.drain()

    def flush(self) -> None:
        self.drain()
        h = self._request(CMD_FLUSH, 0, 0)
        self._pending[h] = None
        self._reply(h)

    def close(self) -> None:
        try:
            self._request(CMD_DISC, 0, 0)
        except OSError:
            pass
        self.sock.close()


class QemuNbd:
    """A private `qemu-nbd` serving one image on a Unix socket for one client.

    It runs in its own process group (a Ctrl-C in the terminal reaches only us, so
    we can flush and checkpoint) and exits by itself when the client disconnects —
    also when this process is killed with SIGKILL.
    """

    def __init__(self, image: str, fmt: str, sock: Path, *, read_only: bool,
                 cache: str = "writeback", aio: str = "threads", compress: bool = False) -> None:
        self.sock = sock
        argv = ["qemu-nbd", "--socket", str(sock), f"--cache={cache}", f"--aio={aio}", "--discard=unmap"]
        if read_only:
            argv.append("--read-only")
        if compress:
            # every write of the compress filter becomes a compressed cluster (qcow2)
            argv += ["--image-opts", f"driver=compress,file.driver={fmt},"
                     f"file.file.driver=file,file.file.filename={_escape(os.path.abspath(image))}"]
        elif image.startswith("json:"):  # a spec built by the caller: the format is inside
            argv += ["--", image]
        else:  # an absolute name after `--`: never an option, never a pseudo-protocol
            argv += ["--format", fmt, "--", os.path.abspath(image)]
        sock.unlink(missing_ok=True)
        self.proc = subprocess.Popen(  # noqa: S603 - argument list
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            process_group=0,
        )

    def connect(self, timeout: float = 20.0) -> NBDClient:
        """Connect once the server listens (poll its socket; report its error if it died)."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
                raise NBDError(f"qemu-nbd failed: {err or 'exit ' + str(self.proc.returncode)}")
            if self.sock.exists():
                try:
                    return NBDClient(str(self.sock))
                except (ConnectionRefusedError, FileNotFoundError):
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise NBDError("qemu-nbd did not start listening in time")
            time.sleep(delay)  # readiness poll of a child process, not a test sleep
            delay = min(delay * 2, 0.05)

    def wait(self, timeout: float = 120.0) -> None:
        """Wait for the server to close the image (after the client disconnected)."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.stderr:
                self.proc.stderr.close()
            self.sock.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.wait()


def _escape(value: str) -> str:
    """Escape a value for QEMU's key=value option syntax (commas are doubled)."""
    return value.replace(",", ",,")
