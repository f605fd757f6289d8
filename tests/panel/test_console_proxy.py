"""The console proxy: the RFB filter on crafted byte streams, the panel's console tickets,
and the whole proxy against a real QEMU 7.2 VNC server whose input trace counts what
reached the guest (``shared/notes/panel.md`` §2.3 and §3.5); its events in the node's audit
chain through a real rpcd (``RecordEvent``, real certificates, a user logged in).

QEMU runs with ``-vnc 127.0.0.1:N,password=on`` (the password is set through QMP
``set_password``), without ``-S`` (a paused VM drops input) and is never probed with a bare
TCP connect (that counts as a VNC client). The proxy runs in uvicorn in a thread; the
browser is a small RFB client over the ``websockets`` library.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labworld import RpcdWorld, start

from debvisor_core.panel import rfb
from debvisor_core.panel.console import ActiveConsoles, ConsoleTickets, active_of, routes

QEMU = shutil.which("qemu-system-x86_64")
SKIP_REASON = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"


def needs_qemu(test: Any) -> Any:
    """A test against a real QEMU (marked ``root`` like the project's other real-system tests)."""
    return pytest.mark.root(pytest.mark.skipif(QEMU is None, reason=SKIP_REASON)(test))


EXT_CLIP = rfb.EXTENDED_CLIPBOARD


# --- byte builders (client -> server) -----------------------------------------------------
def set_pixel_format() -> bytes:  # 32 bpp, depth 24, little endian, true colour, RGB 888
    return struct.pack(">BxxxBBBBHHHBBBxxx", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)


def set_encodings(*encs: int) -> bytes:
    return struct.pack(f">BxH{len(encs)}i", 2, len(encs), *encs)


def fbur(incremental: int = 0, w: int = 640, h: int = 480) -> bytes:
    return struct.pack(">BBHHHH", 3, incremental, 0, 0, w, h)


def key(keysym: int, down: bool) -> bytes:
    return struct.pack(">BBxxI", 4, int(down), keysym)


def pointer(mask: int, x: int, y: int) -> bytes:
    return struct.pack(">BBHH", 5, mask, x, y)


def cut_text(text: bytes) -> bytes:
    return struct.pack(">Bxxxi", 6, len(text)) + text


def cut_text_ext(flags: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BxxxiI", 6, -(4 + len(payload)), flags) + payload


def qemu_key(keysym: int, keycode: int, down: bool) -> bytes:
    return struct.pack(">BBHII", 255, 0, int(down), keysym, keycode)


def xvp(code: int) -> bytes:
    return struct.pack(">BxBB", 250, 1, code)


def set_desktop_size(w: int, h: int) -> bytes:
    return struct.pack(">BxHHBx", 251, w, h, 1) + struct.pack(">IHHHHI", 0, 0, 0, w, h, 0)


def fence(data: bytes = b"") -> bytes:
    return struct.pack(">BxxxIB", 248, 0, len(data)) + data


def continuous(enable: int = 1) -> bytes:
    return struct.pack(">BBHHHH", 150, enable, 0, 0, 640, 480)


CTRL, ALT, DEL, RET = 0xFFE3, 0xFFE9, 0xFFFF, 0xFF0D


def ctrl_alt_del() -> bytes:
    return b"".join([key(CTRL, True), key(ALT, True), key(DEL, True),
                     key(DEL, False), key(ALT, False), key(CTRL, False)])


def typing(text: str) -> bytes:
    return b"".join(key(ord(c), True) + key(ord(c), False) for c in text) + \
        key(RET, True) + key(RET, False)


def clicks() -> bytes:
    return b"".join([pointer(0, 100, 100), pointer(1, 100, 100), pointer(0, 100, 100),
                     pointer(4, 200, 150), pointer(0, 200, 150)])


ENCODINGS = (0, -223, -258, -316, -309, -308, EXT_CLIP, -259, -305, -312)


def input_burst() -> bytes:
    """Everything noVNC can send that acts on the guest (or the VM)."""
    return b"".join([ctrl_alt_del(), typing("ls"), clicks(), cut_text(b"rm -rf /\n"),
                     cut_text_ext(1 << 27 | 1),  # extended clipboard: notify, text
                     qemu_key(0x61, 0x1E, True), qemu_key(0x61, 0x1E, False),
                     xvp(3), set_desktop_size(800, 600)])


def client_stream(shared: int = 0) -> bytes:
    return b"".join([rfb.PROTOCOL_VERSION, bytes([rfb.SEC_NONE, shared]), set_pixel_format(),
                     set_encodings(*ENCODINGS), fbur(), continuous(), fence(b"abc"),
                     input_burst(), fbur(1)])


# --- rfb.ViewFilter -------------------------------------------------------------------
def feed_all(mode: rfb.Mode, chunks: list[bytes]) -> tuple[bytes, list[rfb.Event], rfb.ViewFilter]:
    f = rfb.ViewFilter(mode)
    out, events = b"", []
    for c in chunks:
        o, e = f.feed(c)
        out += o
        events += e
    return out, events, f


@pytest.mark.parametrize("mode", rfb.MODES)
def test_filter_same_result_at_every_split(mode: rfb.Mode) -> None:
    stream = client_stream()
    whole = feed_all(mode, [stream])
    assert feed_all(mode, [bytes([b]) for b in stream])[:2] == whole[:2]
    for i in range(len(stream) + 1):
        out, events, _ = feed_all(mode, [stream[:i], stream[i:]])
        assert (out, events) == whole[:2], f"split at byte {i}"


def test_view_mode_forwards_only_the_allowlist() -> None:
    out, events, f = feed_all("view", [client_stream(shared=0)])
    kept = [e for e in ENCODINGS if e not in rfb.STRIP["view"]]
    assert out == b"".join([b"\x01", set_pixel_format(), set_encodings(*kept), fbur(),
                            continuous(), fence(b"abc"), fbur(1)])
    assert kept == [0, -223, -312]
    assert events[:3] == [rfb.Event("version", value=rfb.PROTOCOL_VERSION),
                          rfb.Event("security", value=1),
                          rfb.Event("init", value={"shared": 0, "forced": True})]
    assert dict(f.dropped) == {4: 12, 5: 5, 6: 2, 255: 2, 250: 1, 251: 1}
    assert dict(f.forwarded) == {0: 1, 2: 1, 3: 2, 150: 1, 248: 1}
    assert f.named_counts()["dropped"]["KeyEvent"] == 12
    assert set(f.stripped) == {-258, -316, -309, -308, EXT_CLIP, -259, -305}


def test_control_mode_forwards_input_but_not_power_or_unparsed_encodings() -> None:
    out, _events, f = feed_all("control", [client_stream(shared=0)])
    assert out.startswith(b"\x00" + set_pixel_format())  # the shared flag is the client's
    kept = [e for e in ENCODINGS if e not in rfb.STRIP["control"]]
    assert kept == [0, -223, -258, -308, EXT_CLIP, -312]
    assert set_encodings(*kept) in out
    assert input_burst().replace(xvp(3), b"") in out
    assert dict(f.dropped) == {250: 1}
    assert f.forwarded[4] == 12 and f.forwarded[5] == 5 and f.forwarded[6] == 2


def test_cut_text_body_streams_without_buffering() -> None:
    f = rfb.ViewFilter("view")
    f.feed(client_stream()[:13 + 1])
    body = b"x" * rfb.MAX_CUT_TEXT
    out, _ = f.feed(struct.pack(">Bxxxi", 6, len(body)))
    for i in range(0, len(body), 65536):
        out, _ = f.feed(body[i:i + 65536])
        assert out == b"" and len(f._buf) == 0
    assert f.feed(fbur())[0] == fbur()
    g = rfb.ViewFilter("control")
    g.feed(client_stream()[:14])
    got = b"".join(g.feed(bytes([c]))[0] for c in cut_text(b"hello"))
    assert got == cut_text(b"hello")


@pytest.mark.parametrize("bad, why", [
    (set_encodings(*range(65)), "SetEncodings lists 65 encodings"),
    (struct.pack(">BxH", 2, 0xFFFF), "SetEncodings lists 65535"),
    (struct.pack(">Bxxxi", 6, rfb.MAX_CUT_TEXT + 1), "ClientCutText of 1048577 bytes"),
    (struct.pack(">Bxxxi", 6, -(rfb.MAX_CUT_TEXT + 1)), "ClientCutText of 1048577 bytes"),
    (struct.pack(">Bxxxi", 6, -(1 << 31)), "bad extended ClientCutText length"),
    (struct.pack(">Bxxxi", 6, -3), "bad extended ClientCutText length"),
    (bytes([7]), "unknown message type 7"),
    (bytes([1]), "unknown message type 1"),
    (bytes([253, 0, 0, 0]), "unknown message type 253"),
    (bytes([255, 1, 0, 0]), "unknown QEMU client message 255/1"),
    (struct.pack(">BxxxIB", 248, 0, 65), "ClientFence carries 65 bytes"),
    (struct.pack(">BxHHBx", 251, 8, 8, 0), "SetDesktopSize with 0 screens"),
])
@pytest.mark.parametrize("mode", rfb.MODES)
def test_filter_refuses(mode: rfb.Mode, bad: bytes, why: str) -> None:
    f = rfb.ViewFilter(mode)
    f.feed(rfb.PROTOCOL_VERSION + b"\x01\x01" + set_pixel_format())
    with pytest.raises(rfb.ProtocolError, match=why):
        f.feed(bad)
    with pytest.raises(rfb.ProtocolError):  # dead after an error
        f.feed(fbur())
    assert f.state == "closed"


def test_negative_clipboard_length_is_dropped_in_view_forwarded_in_control() -> None:
    msg = cut_text_ext(1 << 28 | 1, b"\x00" * 12)  # provide, text, 12 bytes of data
    for mode, forwarded in (("view", b""), ("control", msg)):
        f = rfb.ViewFilter(mode)  # type: ignore[arg-type]
        f.feed(rfb.PROTOCOL_VERSION + b"\x01\x01")
        out = b"".join(f.feed(msg[i:i + 3])[0] for i in range(0, len(msg), 3))
        assert out == forwarded
        assert f.feed(fbur())[0] == fbur()  # the stream is still in step


@pytest.mark.parametrize("head, why", [
    (b"RFB 003.003\n", "unsupported protocol version"),
    (b"GET / HTTP/1.", "unsupported protocol version"),
    (rfb.PROTOCOL_VERSION + b"\x02", "security type 2 was not offered"),
])
def test_filter_handshake_refusals(head: bytes, why: str) -> None:
    with pytest.raises(rfb.ProtocolError, match=why):
        rfb.ViewFilter("view").feed(head)


def test_des_and_vnc_key() -> None:
    # FIPS 81 / the classic DES test vector, then the bit-reversed VNC key
    assert rfb.des_ecb(bytes.fromhex("0123456789abcdef"), b"Now is t").hex() == "3fa40e8a984d4815"
    assert rfb._vnc_key("\x01\x80ab") == bytes([0x80, 0x01, 0x86, 0x46, 0, 0, 0, 0])
    assert rfb._vnc_key("123456789") == rfb._vnc_key("12345678")


def test_upstream_handshake_vnc_auth_at_every_split() -> None:
    challenge = bytes(range(16))
    server = [rfb.PROTOCOL_VERSION, b"\x02\x01\x02", challenge, b"\0\0\0\0"]
    expected = [rfb.PROTOCOL_VERSION, b"\x02", rfb.vnc_auth_response("pw", challenge), b""]
    stream = b"".join(server)
    for i in range(len(stream) + 1):
        hs = rfb.UpstreamHandshake("pw")
        sent = hs.feed(stream[:i]) + hs.feed(stream[i:])
        assert sent == b"".join(expected) and hs.done and hs.security == 2


def test_upstream_handshake_none_and_failures() -> None:
    hs = rfb.UpstreamHandshake(None)
    assert hs.feed(rfb.PROTOCOL_VERSION + b"\x01\x01") == rfb.PROTOCOL_VERSION + b"\x01"
    hs.feed(b"\0\0\0\0")
    assert hs.done and hs.security == 1
    with pytest.raises(rfb.AuthFailed, match="asks for a password"):
        rfb.UpstreamHandshake(None).feed(rfb.PROTOCOL_VERSION + b"\x01\x02")
    with pytest.raises(rfb.AuthFailed, match="too many clients"):
        rfb.UpstreamHandshake("x").feed(rfb.PROTOCOL_VERSION + b"\x00\0\0\0\x10too many clients")
    hs = rfb.UpstreamHandshake("x")
    hs.feed(rfb.PROTOCOL_VERSION + b"\x01\x02" + bytes(16))
    with pytest.raises(rfb.AuthFailed, match="VNC authentication failed: Authentication failed"):
        hs.feed(b"\0\0\0\x01\0\0\0\x15Authentication failed")
    with pytest.raises(rfb.ProtocolError, match="not RFB 3.8"):
        rfb.UpstreamHandshake("x").feed(b"RFB 003.007\n")


# --- tickets ------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tickets_single_use_expiry_and_binding() -> None:
    clock = Clock()
    t = ConsoleTickets(clock=clock)
    a = t.issue("alice", "vm1", "view", session="k1")
    assert t.check(a, "bob", "k2")[0] == "wrong-user"
    assert t.check(a, "alice", "k2")[0] == "wrong-user"  # another session of the same user
    status, ticket = t.redeem(a, "alice", "k1")
    assert status == "ok" and ticket is not None and (ticket.vm, ticket.mode) == ("vm1", "view")
    assert t.redeem(a, "alice", "k1")[0] == "used"
    b = t.issue("alice", "vm1", "control")
    clock.now += 30
    assert t.redeem(b, "alice")[0] == "expired"
    assert t.redeem("nonsense", "alice")[0] == "unknown"
    clock.now += 301
    t.issue("alice", "vm2", "view")  # prunes
    assert t.check(a, "alice", "k1")[0] == "unknown"
    with pytest.raises(ValueError):
        t.issue("alice", "vm1", "admin")


def test_active_consoles_cap() -> None:
    a = ActiveConsoles(limit=2)
    c1, c2 = a.add("alice", "vm1", "view"), a.add("alice", "vm2", "control")
    assert c1 and c2 and a.add("alice", "vm3", "view") is None and a.add("bob", "vm1", "view")
    a.remove(c1)
    assert a.add("alice", "vm3", "view") is not None
    assert len(a.of_vm("vm1")) == 1


# --- real QEMU ----------------------------------------------------------------------------
class Qemu:
    """One QEMU guest (SeaBIOS, no disk) with a password-protected VNC and an input trace."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = _free_port(5990, 6100)
        self.password = secrets.token_urlsafe(6)[:8]
        self.trace = tmp / "trace.log"
        events = tmp / "events"
        events.write_text("input_event_*\n")
        self.qmp_path = tmp / "qmp.sock"
        assert QEMU is not None
        self.proc = subprocess.Popen(
            [QEMU, "-nodefaults", "-vga", "std", "-display", "none", "-m", "64",
             "-vnc", f"127.0.0.1:{self.port - 5900},password=on",
             "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
             "-trace", f"events={events}", "-D", str(self.trace)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not self.qmp_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"QEMU did not start: {self.proc.stderr.read()!r}"  # type: ignore[union-attr]
                                   if self.proc.poll() is not None else "QEMU did not start")
            time.sleep(0.05)
        self.qmp = socket.socket(socket.AF_UNIX)
        self.qmp.connect(str(self.qmp_path))
        self.qmp_file = self.qmp.makefile("rwb")
        self.qmp_file.readline()  # greeting
        self.command("qmp_capabilities")
        self.command("set_password", protocol="vnc", password=self.password)
        vnc = self.command("query-vnc")
        assert vnc["enabled"] and vnc["auth"] == "vnc" and vnc["service"] == str(self.port)
        assert self.command("query-status")["status"] == "running"  # never -S: input is dropped

    def command(self, name: str, **args: Any) -> Any:
        self.qmp_file.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.qmp_file.flush()
        while True:
            reply = json.loads(self.qmp_file.readline())
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {name}: {reply['error']}")

    def input_events(self) -> dict[str, int]:
        """Trace lines so far by event name (input_event_key_qcode, input_event_btn, ...)."""
        counts: dict[str, int] = {}
        text = self.trace.read_text(errors="replace") if self.trace.exists() else ""
        for line in text.splitlines():
            for word in line.replace(":", " ").split():
                if word.startswith("input_event_"):
                    counts[word] = counts.get(word, 0) + 1
                    break
        return counts

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.command("quit")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.qmp.close()


def _free_port(low: int, high: int) -> int:
    for port in range(low, high):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free VNC port")


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


class Panel:
    """A Starlette app with only the console routes, served by uvicorn in a thread."""

    SESSIONS = {"sid-alice": {"user": "alice", "key": "key-alice"},
                "sid-alice2": {"user": "alice", "key": "key-alice2"},
                "sid-bob": {"user": "bob", "key": "key-bob"}}

    def __init__(self, qemu: Qemu) -> None:
        import uvicorn
        from starlette.applications import Starlette

        self.qemu = qemu
        self.app = Starlette(routes=routes())
        self.clock = Clock()
        self.audit: list[dict[str, Any]] = []
        self.upstream: dict[str, Any] = {"host": "127.0.0.1", "port": qemu.port,
                                         "password": qemu.password}
        self.upstream_calls: list[tuple[str, str, str]] = []
        st = self.app.state
        st.console_tickets = ConsoleTickets(clock=self.clock)
        st.console_upstream = self._upstream
        st.console_audit = lambda event, session: self.audit.append(event)
        st.console_session = self._session
        st.console_session_alive = lambda s: True
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    async def _upstream(self, session: Any, vm: str, mode: str) -> dict[str, Any]:
        user = session["user"] if isinstance(session, dict) else session.user
        self.upstream_calls.append((user, vm, mode))
        return dict(self.upstream)

    def _session(self, ws: Any) -> Any:
        return self.SESSIONS.get(ws.cookies.get("sid", ""))

    def ticket(self, mode: str, user: str = "alice", vm: str = "vm1") -> str:
        key = next(s["key"] for s in self.SESSIONS.values() if s["user"] == user)
        return self.app.state.console_tickets.issue(user, vm, mode, session=key)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.audit if e["event"] == kind]

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class Viewer:
    """A minimal RFB 3.8 client (the 'browser') over the panel's WebSocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.buf = bytearray()
        self.size = (0, 0)
        self.updates = 0
        self.encodings_seen: set[int] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, panel: Panel, ticket: str, *, sid: str = "sid-alice",
                      origin: str | None = None) -> Any:
        from websockets.asyncio.client import connect
        from websockets.typing import Origin

        url = f"ws://127.0.0.1:{panel.port}/console/ws?t={ticket}"
        async with connect(url, origin=Origin(origin or panel.origin), proxy=None,
                           additional_headers={"Cookie": f"sid={sid}"}, max_size=None,
                           subprotocols=["binary"], compression=None) as ws:  # type: ignore[list-item]
            yield cls(ws)

    async def read(self, n: int, timeout: float = 10.0) -> bytes:
        while len(self.buf) < n:
            data = await asyncio.wait_for(self.ws.recv(), timeout)
            assert isinstance(data, bytes), data
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def send(self, *msgs: bytes) -> None:
        await self.ws.send(b"".join(msgs))

    async def handshake(self, shared: int = 1) -> None:
        assert await self.read(12) == rfb.PROTOCOL_VERSION
        await self.send(rfb.PROTOCOL_VERSION)
        n = (await self.read(1))[0]
        assert await self.read(n) == bytes([rfb.SEC_NONE])  # the password stays in the panel
        await self.send(bytes([rfb.SEC_NONE]))
        assert await self.read(4) == rfb.SECURITY_OK
        await self.send(bytes([shared]))
        w, h = struct.unpack(">HH", await self.read(4))
        await self.read(16)
        (name_len,) = struct.unpack(">I", await self.read(4))
        await self.read(name_len)
        self.size = (w, h)
        await self.send(set_pixel_format(), set_encodings(*ENCODINGS))

    async def message(self) -> tuple[str, Any]:
        """One server message, parsed just enough to stay in step."""
        t = (await self.read(1))[0]
        if t == 0:
            (n,) = struct.unpack(">xH", await self.read(3))
            rects = []
            for _ in range(n):
                x, y, w, h, enc = struct.unpack(">HHHHi", await self.read(12))
                self.encodings_seen.add(enc)
                if enc == 0:
                    await self.read(w * h * 4)
                elif enc == -308:
                    screens = (await self.read(4))[0]
                    await self.read(16 * screens)
                    self.size = (w, h)
                elif enc == -223:
                    self.size = (w, h)
                elif enc != -258:
                    raise AssertionError(f"unexpected encoding {enc} in an update")
                rects.append(enc)
            if 0 in rects:
                self.updates += 1
            return "update", rects
        if t == 2:
            return "bell", None
        if t == 3:
            (length,) = struct.unpack(">xxxi", await self.read(7))
            return "cut", await self.read(abs(length))
        raise AssertionError(f"unexpected server message type {t}")

    async def frame(self, timeout: float = 10.0) -> None:
        """Ask for the whole screen and wait for pixels."""
        before = self.updates
        await self.send(fbur(0, *self.size))
        deadline = time.monotonic() + timeout
        while self.updates == before:
            assert time.monotonic() < deadline, "no framebuffer update"
            await self.message()

    async def closed(self, timeout: float = 10.0) -> tuple[int | None, str | None]:
        """Read until the panel closes; (code, reason)."""
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        return self.ws.close_code, self.ws.close_reason


@pytest.fixture(scope="module")
def qemu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Qemu]:
    if QEMU is None:
        pytest.skip(SKIP_REASON)
    q = Qemu(tmp_path_factory.mktemp("qemu"))
    try:
        time.sleep(0.3)  # let SeaBIOS draw something
        yield q
    finally:
        q.close()


@pytest.fixture(scope="module")
def panel(qemu: Qemu) -> Iterator[Panel]:
    p = Panel(qemu)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def fresh(panel: Panel) -> Iterator[Panel]:
    """The module's panel with no console open (the last test's are audited) and defaults."""
    _await(lambda: len(active_of(panel.app)) == 0)
    panel.audit.clear()
    panel.upstream.update(host="127.0.0.1", port=panel.qemu.port, password=panel.qemu.password)
    panel.app.state.console_session_alive = lambda s: True
    panel.app.state.console_check_interval = 5.0
    yield panel


async def _wait_events(qemu: Qemu, before: dict[str, int], at_least: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        d = _delta(before, qemu.input_events())
        if sum(d.values()) >= at_least or time.monotonic() > deadline:
            return d
        await asyncio.sleep(0.1)


async def _session_with_input(panel: Panel, mode: str) -> tuple[Viewer, dict[str, int]]:
    before = panel.qemu.input_events()
    async with Viewer.connect(panel, panel.ticket(mode)) as v:
        await v.handshake(shared=0)
        await v.frame()
        await v.send(input_burst())
        await v.frame()  # QEMU has read everything sent before this request
        await asyncio.sleep(0.5)
        d = await _wait_events(panel.qemu, before, 1 if mode == "control" else 10**9,
                               5.0 if mode == "control" else 0.5)
        await v.frame()  # still receiving the screen
    return v, d


@needs_qemu
def test_view_mode_reaches_qemu_zero_times(fresh: Panel) -> None:
    v, d = asyncio.run(_session_with_input(fresh, "view"))
    assert d == {}, f"input reached QEMU in view mode: {d}"
    assert v.updates >= 3
    assert -258 not in v.encodings_seen  # QEMU never saw the extended-key encoding: stripped
    _await(lambda: fresh.events("console.close"))
    close = fresh.events("console.close")[0]
    assert close["mode"] == "view" and close["user"] == "alice" and close["vm"] == "vm1"
    assert close["dropped"] == {"KeyEvent": 12, "PointerEvent": 5, "ClientCutText": 2,
                                "xvp": 1, "SetDesktopSize": 1, "QEMUClientMessage": 2}
    assert close["dropped_total"] == 23 and close["duration_s"] > 0
    assert (close["code"], close["reason"]) == (1000, "the browser closed the console")
    opened = fresh.events("console.open")[0]
    assert opened["security"] == "vnc-password" and fresh.upstream_calls[-1] == ("alice", "vm1", "view")
    print(f"\nview mode: QEMU input trace events {sum(d.values())}, updates {v.updates}, "
          f"dropped {close['dropped']}")


@needs_qemu
def test_control_mode_reaches_qemu(fresh: Panel) -> None:
    v, d = asyncio.run(_session_with_input(fresh, "control"))
    keys = sum(n for k, n in d.items() if k.startswith("input_event_key"))
    btns = sum(n for k, n in d.items() if k.startswith("input_event_btn"))
    assert keys > 0 and btns > 0, d
    assert -258 in v.encodings_seen  # the extended-key encoding reached QEMU in control mode
    _await(lambda: fresh.events("console.close"))
    assert fresh.events("console.close")[0]["dropped"] == {"xvp": 1}
    print(f"\ncontrol mode: QEMU input trace events {d}")


def _await(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@needs_qemu
def test_second_viewer_does_not_disconnect_the_first(fresh: Panel) -> None:
    async def run() -> None:
        async with Viewer.connect(fresh, fresh.ticket("view")) as a:
            await a.handshake(shared=0)  # asks for exclusive access: the proxy forces shared
            await a.frame()
            async with Viewer.connect(fresh, fresh.ticket("view")) as b:
                await b.handshake(shared=0)
                await b.frame()
                await asyncio.sleep(0.3)
                await a.frame()
                await b.frame()
            await a.frame()
        # the counter-proof: control mode passes shared=0 on, and QEMU then drops the others
        async with Viewer.connect(fresh, fresh.ticket("view")) as a:
            await a.handshake(shared=1)
            await a.frame()
            async with Viewer.connect(fresh, fresh.ticket("control")) as c:
                await c.handshake(shared=0)
                await c.frame()
                assert await a.closed() == (1000, "the VM's console closed the connection")

    asyncio.run(run())


@needs_qemu
def test_reused_and_expired_tickets_are_refused(fresh: Panel) -> None:
    async def run() -> None:
        t = fresh.ticket("view")
        async with Viewer.connect(fresh, t) as v:
            await v.handshake()
        async with Viewer.connect(fresh, t) as v:
            assert await v.closed() == (4403, "used")
        t = fresh.ticket("view")
        fresh.clock.now += 31
        async with Viewer.connect(fresh, t) as v:
            assert await v.closed() == (4403, "expired")
        async with Viewer.connect(fresh, "forged") as v:
            assert await v.closed() == (4403, "unknown")
        t = fresh.ticket("view")
        async with Viewer.connect(fresh, t, sid="sid-bob") as v:
            assert await v.closed() == (4403, "wrong-user")
        async with Viewer.connect(fresh, t, sid="nobody") as v:
            assert await v.closed() == (4401, "log in first")
        async with Viewer.connect(fresh, t) as v:  # still good for its owner
            await v.handshake()

    asyncio.run(run())
    refused = [(e["reason"], e.get("user")) for e in fresh.events("console.refused")]
    assert refused == [("used", "alice"), ("expired", "alice"), ("unknown", "alice"),
                       ("wrong-user", "bob"), ("log in first", None)]


@needs_qemu
def test_unknown_message_type_closes_with_1008(fresh: Panel) -> None:
    async def run() -> tuple[int | None, str | None]:
        async with Viewer.connect(fresh, fresh.ticket("control")) as v:
            await v.handshake()
            await v.frame()
            await v.send(bytes([7, 0, 0, 0]))
            return await v.closed()

    assert asyncio.run(run()) == (1008, "unknown message type 7")
    _await(lambda: fresh.events("console.close"))
    assert fresh.events("console.close")[0]["code"] == 1008


@needs_qemu
def test_foreign_origin_is_refused_before_accept(fresh: Panel) -> None:
    from websockets.exceptions import InvalidStatus

    t = fresh.ticket("view")

    async def run() -> None:
        with pytest.raises(InvalidStatus) as exc:
            async with Viewer.connect(fresh, t, origin="https://evil.example"):
                pass
        assert exc.value.response.status_code == 403
        async with Viewer.connect(fresh, t) as v:  # the ticket was not spent
            await v.handshake()

    asyncio.run(run())
    assert fresh.events("console.refused")[0]["reason"] == "foreign origin"


@needs_qemu
def test_per_user_cap_and_upstream_refusal(fresh: Panel) -> None:
    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            viewers = [await stack.enter_async_context(Viewer.connect(fresh, fresh.ticket("view")))
                       for _ in range(4)]
            for v in viewers:
                await v.handshake()
            async with Viewer.connect(fresh, fresh.ticket("view")) as v:
                assert await v.closed() == (4429, "too many consoles (at most 4 per user)")
            async with Viewer.connect(fresh, fresh.ticket("view", user="bob"), sid="sid-bob") as v:
                await v.handshake()  # another user is not counted against alice
        fresh.upstream["password"] = "wrong"
        async with Viewer.connect(fresh, fresh.ticket("view")) as v:
            code, reason = await v.closed()
            assert code == 4502 and reason and reason.startswith("upstream: VNC authentication failed")

    asyncio.run(run())
    assert fresh.events("console.failed")[0]["reason"].startswith("upstream: VNC authentication")



@needs_qemu
def test_console_closes_when_the_session_ends(fresh: Panel) -> None:
    alive = [True]
    fresh.app.state.console_session_alive = lambda s: alive[0]
    fresh.app.state.console_check_interval = 0.1

    async def run() -> tuple[int | None, str | None]:
        async with Viewer.connect(fresh, fresh.ticket("control")) as v:
            await v.handshake()
            await v.frame()
            alive[0] = False  # logout, idle or absolute limit: the server-side session is gone
            return await v.closed()

    assert asyncio.run(run()) == (4401, "the session ended")


# --- the node's audit chain: the proxy wired as the panel wires it, a real rpcd -----------
CAROL = "carol has a long password"


class NodePanel(Panel):
    """The console proxy with the hooks :func:`consolepage.install` sets (its events go to
    a real rpcd's audit chain with the logged-in user's token) and the panel's own sessions
    (rpcd ``Login``); only the upstream is the test's QEMU (this rpcd has no hv plugin)."""

    def __init__(self, qemu: Qemu, node: RpcdWorld) -> None:
        from debvisor_core.panel import consolepage
        from debvisor_core.panel.rpc import Rpcd
        from debvisor_core.panel.sessions import SessionStore

        super().__init__(qemu)
        self.node = node
        self.sids: dict[str, str] = {}
        st = self.app.state
        st.rpc = self.rpc = Rpcd(node.settings())
        st.sessions = SessionStore()
        consolepage.install(self.app)
        st.console_upstream = self._upstream
        st.console_session = self._session

    def login(self, user: str = "carol", password: str = CAROL) -> Any:
        """Log ``user`` in as the login page does: rpcd's token in a panel session."""
        r = self.app.state.rpc.login(user, password)
        sid, s = self.app.state.sessions.create(r.user, r.roles, r.token, rpcd_expires=r.expires)
        self.sids[user] = sid
        return s

    def _session(self, ws: Any) -> Any:
        return self.app.state.sessions.lookup(ws.cookies.get("sid", ""))[0]

    def ticket(self, mode: str, user: str = "carol", vm: str = "vm1") -> str:
        s = self.app.state.sessions.lookup(self.sids[user])[0]
        return self.app.state.console_tickets.issue(s.user, vm, mode, session=s.key)

    def connect(self, ticket: str, user: str = "carol", **kw: Any) -> Any:
        return Viewer.connect(self, ticket, sid=self.sids[user], **kw)

    def records(self, since: int) -> list[dict[str, Any]]:
        """The node's console records after the first ``since`` records of its chain."""
        return [r for r in self.node.audit()[since:] if r.get("plugin") == "console"]

    def close(self) -> None:
        super().close()
        self.rpc.close()
        self.app.state.rpc.close()  # a test may have swapped it


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RpcdWorld]:
    w = start(tmp_path_factory.mktemp("consolenode"), {"carol": ("operator", CAROL)})
    yield w
    w.stop()


@pytest.fixture
def nodepanel(qemu: Qemu, node: RpcdWorld) -> Iterator[NodePanel]:
    p = NodePanel(qemu, node)
    try:
        yield p
    finally:
        p.close()


def control_input() -> bytes:
    """Input a controller may send: all of it reaches QEMU (no power message)."""
    return ctrl_alt_del() + typing("ls") + clicks()


def _verified(node: RpcdWorld) -> None:
    res = node.dv("audit", "verify")
    assert res.returncode == 0, res.stdout + res.stderr


def test_node_events_fit_the_fields_rpcd_accepts() -> None:
    from debvisor_core.errors import BadInput
    from debvisor_core.panel.consolepage import node_event
    from debvisor_core.rpcd.events import checked, from_proxy_event

    event = {"event": "console.close", "user": "carol", "client": "::1", "vm": "vm1",
             "upstream": "[::1]:5901", "mode": "view", "ticket": "abc", "code": 1008,
             "reason": "bad\nthing " * 40, "stripped": {str(-300 - i): i + 1 for i in range(40)}}
    kind, raw = from_proxy_event(event)
    with pytest.raises(BadInput):  # as the proxy has it: rpcd would refuse it
        checked(kind, json.dumps(raw))
    kind, details = from_proxy_event(node_event(event))
    assert checked(kind, json.dumps(details)) == details
    one = "0000:0000:0000:0000:0000:0000:0000:0001"
    assert (details["client"], details["upstream"]) == (one, f"{one}:5901")
    assert len(details["reason"]) == 200 and "\n" not in details["reason"]
    assert len(details["stripped"]) == 32 and details["stripped"]["other"] == sum(range(1, 10))
    assert sum(details["stripped"].values()) == sum(range(1, 41))
    v4 = {"client": "127.0.0.1", "upstream": "127.0.0.1:5900", "dropped": {"KeyEvent": 3}}
    assert node_event(v4) == v4


@needs_qemu
def test_console_events_are_in_the_node_audit_chain(nodepanel: NodePanel,
                                                     node: RpcdWorld) -> None:
    nodepanel.login()
    start_at = len(node.audit())

    async def session(mode: str, burst: bytes) -> float:
        async with nodepanel.connect(nodepanel.ticket(mode)) as v:
            await v.handshake()
            t0 = time.monotonic()
            await v.frame()
            await v.send(burst)
            await v.frame()  # the proxy has filtered everything sent before this request
            return time.monotonic() - t0

    spans = {}
    for n, (mode, burst) in enumerate((("view", input_burst()), ("control", control_input()))):
        t0 = time.monotonic()
        inside = asyncio.run(session(mode, burst))
        _await(lambda n=n: len(nodepanel.records(start_at)) == 2 * (n + 1))
        spans[mode] = (inside, time.monotonic() - t0)

    recs = nodepanel.records(start_at)
    assert [r["result"] for r in recs] == ["console.open", "console.close"] * 2
    assert {r["caller"] for r in recs} == {"carol via=panel"}
    assert all("user" not in r["details"] for r in recs)
    (vo, vc), (co, cc) = (recs[0]["details"], recs[1]["details"]), \
        (recs[2]["details"], recs[3]["details"])
    for (o, c), mode in (((vo, vc), "view"), ((co, cc), "control")):
        assert (o["mode"], c["mode"], o["vm"], c["vm"]) == (mode, mode, "vm1", "vm1")
        assert o["ticket"] == c["ticket"]
        assert o["security"] == "vnc-password" and o["upstream"] == f"127.0.0.1:{nodepanel.qemu.port}"
        assert (c["code"], c["reason"]) == (1000, "the browser closed the console")
        inside, outside = spans[mode]
        assert inside <= c["duration_s"] <= outside, (mode, inside, c["duration_s"], outside)
    assert vc["dropped"] == {"KeyEvent": 12, "PointerEvent": 5, "ClientCutText": 2, "xvp": 1,
                             "SetDesktopSize": 1, "QEMUClientMessage": 2}
    assert vc["dropped_total"] == 23
    assert cc["dropped"] == {} and cc["dropped_total"] == 0
    assert cc["forwarded"]["KeyEvent"] == 12 and cc["forwarded"]["PointerEvent"] == 5
    _verified(node)


@needs_qemu
def test_refusals_before_login_stay_in_the_panel_log(nodepanel: NodePanel, node: RpcdWorld,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from websockets.exceptions import InvalidStatus

    nodepanel.login()
    start_at = len(node.audit())
    t = nodepanel.ticket("view")

    async def run() -> None:
        with pytest.raises(InvalidStatus):
            async with nodepanel.connect(t, origin="https://evil.example"):
                pass
        async with Viewer.connect(nodepanel, t, sid="nobody") as v:
            assert await v.closed() == (4401, "log in first")
        async with nodepanel.connect(t) as v:
            await v.handshake()
        async with nodepanel.connect(t) as v:
            assert await v.closed() == (4403, "used")

    asyncio.run(run())
    want = ["console.close", "console.open", "console.refused"]
    _await(lambda: sorted(r["result"] for r in nodepanel.records(start_at)) == want)
    refused = next(r for r in nodepanel.records(start_at) if r["result"] == "console.refused")
    assert refused["caller"] == "carol via=panel" and refused["details"]["reason"] == "used"
    local = [json.loads(x.split("panel: console ", 1)[1])
             for x in capsys.readouterr().err.splitlines() if "panel: console {" in x]
    assert [e["reason"] for e in local if e["event"] == "console.refused"] == \
        ["foreign origin", "log in first", "used"]  # the panel's own log has every event
    _verified(node)


@needs_qemu
@pytest.mark.parametrize("how", ["revoked", "unreachable"])
def test_console_rpcd_cannot_audit_refuses_control_not_view(
        nodepanel: NodePanel, node: RpcdWorld, capsys: pytest.CaptureFixture[str],
        how: str) -> None:
    from debvisor_core.panel.rpc import Rpcd

    s = nodepanel.login()
    start_at = len(node.audit())
    control, view = nodepanel.ticket("control"), nodepanel.ticket("view")
    if how == "revoked":  # rpcd ends the token (e.g. revoked elsewhere); the panel's session
        nodepanel.app.state.rpc.logout(s.token)  # lives until its next page
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed = sock.getsockname()[1]
        nodepanel.app.state.rpc = Rpcd(node.settings(rpcd_address=f"127.0.0.1:{closed}"))

    async def run() -> tuple[int | None, str | None]:
        async with nodepanel.connect(control) as v:
            refused = await v.closed()
        async with nodepanel.connect(view) as v:  # watching goes on, said in the panel's log
            await v.handshake()
            await v.frame()
            await v.send(input_burst())
            await v.frame()
        return refused

    code, reason = asyncio.run(run())
    assert code == 4503 and reason is not None
    assert reason.startswith("control refused: the node's audit log did not record it"), reason
    lines: list[str] = []

    def said(kind: str, mode: str) -> list[str]:
        lines.extend(capsys.readouterr().err.splitlines())
        return [x for x in lines if f"panel: console audit: {kind} ({mode}" in x]

    _await(lambda: said("console.close", "view"))
    for kind, mode in (("console.open", "control"), ("console.failed", "control"),
                       ("console.open", "view"), ("console.close", "view")):
        (line,) = said(kind, mode)
        assert "not recorded in the node's audit chain" in line, line
        assert ("rpcd ended the session" if how == "revoked" else "rpcd is unreachable") in line
    assert nodepanel.records(start_at) == []
    _verified(node)
