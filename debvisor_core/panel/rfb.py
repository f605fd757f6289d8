"""RFB 3.8 (VNC) for the console proxy: a hardened client-to-server filter and the client
side of the upstream security handshake. Pure: no I/O, no asyncio (sans-IO, fed bytes).

The proxy terminates the security handshake on both sides. Towards QEMU it is the client
(:class:`UpstreamHandshake`: ProtocolVersion, security type None or VNC Authentication with
the one-time password, SecurityResult). Towards the browser it is the server and offers only
security type None, so the browser never holds a credential for the raw VNC port.

:class:`ViewFilter` parses everything the browser sends, from its ProtocolVersion on, by
type and exact length, and returns what may reach QEMU. Client message types (RFC 6143
§7.5, rfbproto.rst; ``shared/notes/panel.md`` §2.3):

=====  ======================  ============================  ===========  ===========
type   name                    length                        view         control
=====  ======================  ============================  ===========  ===========
0      SetPixelFormat          20                            forward      forward
2      SetEncodings            4 + 4n, n <= 64               rewrite      rewrite
3      FramebufferUpdateReq.   10                            forward      forward
4      KeyEvent                8                             drop         forward
5      PointerEvent            6                             drop         forward
6      ClientCutText           8 + abs(len), <= 1 MiB        drop         forward
150    EnableContinuousUpd.    10                            forward      forward
248    ClientFence             9 + len, len <= 64            forward      forward
250    xvp (power operations)  4                             drop         drop
251    SetDesktopSize          8 + 16n, 1 <= n <= 16         drop         forward
255/0  QEMU extended key       12                            drop         forward
other  (incl. 255/other)       unknown                       close        close
=====  ======================  ============================  ===========  ===========

SetEncodings is rewritten to remove the pseudo-encodings that enable client messages the
mode does not allow or this parser does not know: in both modes -316 ExtendedMouseButtons
(changes PointerEvent's length), -309 xvp, -259 QEMU audio (255/1), -305 gii (253); in view
mode also -258 QEMU extended key, -308 ExtendedDesktopSize and ExtendedClipboard
(0xc0a1e5ce: without it QEMU never registers the viewer as a clipboard peer, so the guest's
clipboard is not sent to watchers). xvp is dropped in control mode too: power operations
are rpcd actions with their own permission (QEMU does not implement xvp anyway).

In view mode ClientInit is rewritten to shared=1: a watcher never takes exclusive access
(which would disconnect every other client). Control mode passes the client's flag on.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

PROTOCOL_VERSION = b"RFB 003.008\n"
SEC_NONE = 1
SEC_VNC_AUTH = 2

MAX_ENCODINGS = 64
MAX_CUT_TEXT = 1 << 20  # QEMU's own limit for ClientCutText
MAX_FENCE = 64
MAX_SCREENS = 16
MAX_REASON = 4096

EXTENDED_CLIPBOARD = struct.unpack(">i", b"\xc0\xa1\xe5\xce")[0]  # -1063131698

MESSAGE_NAMES = {
    0: "SetPixelFormat", 2: "SetEncodings", 3: "FramebufferUpdateRequest", 4: "KeyEvent",
    5: "PointerEvent", 6: "ClientCutText", 150: "EnableContinuousUpdates", 248: "ClientFence",
    250: "xvp", 251: "SetDesktopSize", 255: "QEMUClientMessage",
}
PSEUDO_NAMES = {
    -316: "ExtendedMouseButtons", -309: "xvp", -308: "ExtendedDesktopSize", -305: "gii",
    -259: "QEMUAudio", -258: "QEMUExtendedKeyEvent", EXTENDED_CLIPBOARD: "ExtendedClipboard",
}

Mode = Literal["view", "control"]
MODES: tuple[Mode, ...] = ("view", "control")

FORWARD: dict[Mode, frozenset[int]] = {
    "view": frozenset({0, 2, 3, 150, 248}),
    "control": frozenset({0, 2, 3, 4, 5, 6, 150, 248, 251, 255}),
}
DROP: dict[Mode, frozenset[int]] = {
    "view": frozenset({4, 5, 6, 250, 251, 255}),
    "control": frozenset({250}),
}
_STRIP_ALWAYS = frozenset({-316, -309, -259, -305})
STRIP: dict[Mode, frozenset[int]] = {
    "view": _STRIP_ALWAYS | {-258, -308, EXTENDED_CLIPBOARD},
    "control": _STRIP_ALWAYS,
}

# fixed lengths (the whole message, type byte included)
_FIXED = {0: 20, 3: 10, 4: 8, 5: 6, 150: 10, 250: 4}
_VERSION_RE = re.compile(rb"RFB (\d{3})\.(\d{3})\n")


class ProtocolError(Exception):
    """The peer broke the protocol or the filter's limits: close the connection (1008).
    ``str(exc)`` is a short reason, safe to show (at most 120 bytes)."""


class AuthFailed(ProtocolError):
    """The upstream VNC server refused our credentials (or offers nothing we can use)."""


def message_name(t: int) -> str:
    return MESSAGE_NAMES.get(t, f"type{t}")


@dataclass(frozen=True)
class Event:
    """Something the proxy may act on or log.

    ``version`` (the client's ProtocolVersion was accepted: offer the security types),
    ``security`` (the client chose None: send SecurityResult OK), ``init`` (value: the
    client's shared flag; ``forced`` true when rewritten), ``stripped`` (value: the removed
    encodings), ``dropped`` (msg_type: a message that did not reach the server).
    """

    kind: str
    msg_type: int | None = None
    value: Any = None


# --- the client-to-server filter -----------------------------------------------------------


class ViewFilter:
    """Parse the browser's RFB stream (security terminated by the proxy, type None) and
    return what may reach the server. ``feed`` raises :class:`ProtocolError` on anything
    unknown, oversized or malformed; the filter is then dead (every later feed raises)."""

    def __init__(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be view or control, not {mode!r}")
        self.mode: Mode = mode
        self.forwarded: Counter[int] = Counter()
        self.dropped: Counter[int] = Counter()
        self.stripped: Counter[int] = Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self._state = "version"
        self._buf = bytearray()
        self._stream = 0  # body bytes of a ClientCutText still to pass or skip
        self._stream_drop = False
        self._error: str | None = None

    @property
    def state(self) -> str:
        """version, security, init, messages or closed."""
        return self._state

    @property
    def established(self) -> bool:
        """Whether ClientInit has passed (messages follow)."""
        return self._state == "messages"

    def named_counts(self) -> dict[str, dict[str, int]]:
        """Counters by message name (for the audit): forwarded, dropped, stripped."""
        return {"forwarded": {message_name(t): n for t, n in sorted(self.forwarded.items())},
                "dropped": {message_name(t): n for t, n in sorted(self.dropped.items())},
                "stripped": {PSEUDO_NAMES.get(e, str(e)): n
                             for e, n in sorted(self.stripped.items())}}

    def feed(self, data: bytes) -> tuple[bytes, list[Event]]:
        """Consume ``data`` (any split); return (bytes for the server, events)."""
        if self._error is not None:
            raise ProtocolError(self._error)
        self.bytes_in += len(data)
        out = bytearray()
        events: list[Event] = []
        try:
            self._feed(memoryview(data), out, events)
        except ProtocolError as exc:
            self._error = str(exc)
            self._state = "closed"
            self._buf.clear()
            raise
        self.bytes_out += len(out)
        return bytes(out), events

    # The buffer only ever holds one incomplete message of bounded size (<= 4 KiB): every
    # length is checked from the header before more is awaited; ClientCutText bodies stream.
    def _feed(self, data: memoryview, out: bytearray, events: list[Event]) -> None:
        pos, end = 0, len(data)
        while True:
            if self._stream:
                n = min(self._stream, end - pos)
                if n == 0:
                    return
                if not self._stream_drop:
                    out += data[pos:pos + n]
                self._stream -= n
                pos += n
                continue
            need = self._need()
            if len(self._buf) < need:
                take = min(need - len(self._buf), end - pos)
                if take == 0:
                    return
                self._buf += data[pos:pos + take]
                pos += take
                continue  # judge again: a complete header may ask for more
            msg = bytes(self._buf[:need])
            del self._buf[:need]
            self._handle(msg, out, events)

    def _need(self) -> int:
        """Bytes the next unit needs, judged from what is buffered: the header first,
        then (once the header is complete) the whole message."""
        if self._state == "version":
            return 12
        if self._state in ("security", "init") or not self._buf:
            return 1
        return self._length(bytes(self._buf))

    def _length(self, head: bytes) -> int:
        """Bytes needed for the message starting ``head``: its header's length while the
        header is incomplete, then the whole message's (ClientCutText: the 8-byte header,
        its body streams). ProtocolError for unknown types and out-of-bounds lengths."""
        t = head[0]
        if t in _FIXED:
            return _FIXED[t]
        if t == 2:
            if len(head) < 4:
                return 4
            n = struct.unpack_from(">H", head, 2)[0]
            if n > MAX_ENCODINGS:
                raise ProtocolError(f"SetEncodings lists {n} encodings (at most {MAX_ENCODINGS})")
            return 4 + 4 * n
        if t == 6:
            return 8
        if t == 248:
            if len(head) < 9:
                return 9
            n = head[8]
            if n > MAX_FENCE:
                raise ProtocolError(f"ClientFence carries {n} bytes (at most {MAX_FENCE})")
            return 9 + n
        if t == 251:
            if len(head) < 8:
                return 8
            n = head[6]
            if not 1 <= n <= MAX_SCREENS:
                raise ProtocolError(f"SetDesktopSize with {n} screens (1 to {MAX_SCREENS})")
            return 8 + 16 * n
        if t == 255:
            if len(head) < 2:
                return 2
            if head[1] != 0:
                raise ProtocolError(f"unknown QEMU client message 255/{head[1]}")
            return 12
        raise ProtocolError(f"unknown message type {t}")

    def _handle(self, msg: bytes, out: bytearray, events: list[Event]) -> None:
        if self._state == "version":
            if msg != PROTOCOL_VERSION:
                raise ProtocolError(f"unsupported protocol version {_show(msg)} (RFB 003.008 only)")
            self._state = "security"
            events.append(Event("version", value=msg))
            return
        if self._state == "security":
            if msg[0] != SEC_NONE:
                raise ProtocolError(f"security type {msg[0]} was not offered (only None, 1)")
            self._state = "init"
            events.append(Event("security", value=SEC_NONE))
            return
        if self._state == "init":
            shared = msg[0]
            forced = self.mode == "view" and shared != 1
            out.append(1 if self.mode == "view" else (1 if shared else 0))
            self._state = "messages"
            events.append(Event("init", value={"shared": shared, "forced": forced}))
            return
        t = msg[0]
        if t == 6:
            self._cut_text(msg, out, events)
            return
        if t in DROP[self.mode]:
            self.dropped[t] += 1
            events.append(Event("dropped", t))
            return
        if t not in FORWARD[self.mode]:  # unreachable with the tables above; fail closed
            raise ProtocolError(f"message type {t} is not allowed")
        if t == 2:
            msg = self._rewrite_encodings(msg, events)
        self.forwarded[t] += 1
        out += msg

    def _cut_text(self, head: bytes, out: bytearray, events: list[Event]) -> None:
        (length,) = struct.unpack_from(">i", head, 4)
        if length < 0:  # extended clipboard: -(message length), flags first
            if length == -(1 << 31) or -length < 4:
                raise ProtocolError(f"bad extended ClientCutText length {length}")
            length = -length
        if length > MAX_CUT_TEXT:
            raise ProtocolError(f"ClientCutText of {length} bytes (at most {MAX_CUT_TEXT})")
        drop = 6 in DROP[self.mode]
        if drop:
            self.dropped[6] += 1
            events.append(Event("dropped", 6))
        else:
            self.forwarded[6] += 1
            out += head
        self._stream, self._stream_drop = length, drop

    def _rewrite_encodings(self, msg: bytes, events: list[Event]) -> bytes:
        n = struct.unpack_from(">H", msg, 2)[0]
        encs = struct.unpack_from(f">{n}i", msg, 4)
        strip = STRIP[self.mode]
        keep = [e for e in encs if e not in strip]
        gone = [e for e in encs if e in strip]
        if not gone:
            return msg
        self.stripped.update(gone)
        events.append(Event("stripped", 2, gone))
        return struct.pack(f">BxH{len(keep)}i", 2, len(keep), *keep)


def _show(raw: bytes) -> str:
    return repr(raw[:16])[:40]


# --- the upstream (server) side: we are the client ----------------------------------------


class UpstreamHandshake:
    """Client side of the RFB 3.8 handshake with the VNC server, up to SecurityResult.

    ``feed(server bytes) -> bytes to send``. Uses VNC Authentication when the server offers
    it and a password is given, else None when offered; :class:`AuthFailed` otherwise.
    ``done`` is set after SecurityResult OK; the server then waits for ClientInit (which
    comes from the browser, through the filter). ``leftover`` holds any bytes after it.
    """

    def __init__(self, password: str | None) -> None:
        self.password = password
        self.done = False
        self.security: int | None = None
        self.leftover = b""
        self._state = "version"
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.leftover += data
            return b""
        self._buf += data
        out = bytearray()
        while not self.done:
            step = self._step()
            if step is None:
                break
            out += step
        if self.done:
            self.leftover = bytes(self._buf)
            self._buf.clear()
        return bytes(out)

    def _take(self, n: int) -> bytes | None:
        if len(self._buf) < n:
            return None
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return chunk

    def _reason(self, offset: int) -> str | None:
        """The reason string at ``offset`` of the buffer (u32 length + text), consumed."""
        if len(self._buf) < offset + 4:
            return None
        (n,) = struct.unpack_from(">I", self._buf, offset)
        if n > MAX_REASON:
            return f"(a reason of {n} bytes)"
        if len(self._buf) < offset + 4 + n:
            return None
        text = bytes(self._buf[offset + 4:offset + 4 + n]).decode("latin-1", "replace")
        del self._buf[:offset + 4 + n]
        return "".join(c if c.isprintable() else "?" for c in text)[:100]

    def _step(self) -> bytes | None:
        if self._state == "version":
            raw = self._take(12)
            if raw is None:
                return None
            m = _VERSION_RE.fullmatch(raw)
            if not m or (int(m[1]), int(m[2])) < (3, 8):
                raise ProtocolError(f"the VNC server speaks {_show(raw)}, not RFB 3.8")
            self._state = "types"
            return PROTOCOL_VERSION
        if self._state == "types":
            if not self._buf:
                return None
            n = self._buf[0]
            if n == 0:
                reason = self._reason(1)
                if reason is None:
                    return None
                raise AuthFailed(f"the VNC server refused the connection: {reason}")
            raw = self._take(1 + n)
            if raw is None:
                return None
            offered = set(raw[1:])
            if self.password is not None and SEC_VNC_AUTH in offered:
                choice = SEC_VNC_AUTH
            elif SEC_NONE in offered:
                choice = SEC_NONE
            elif SEC_VNC_AUTH in offered:
                raise AuthFailed("the VNC server asks for a password and none was given")
            else:
                raise AuthFailed(f"the VNC server offers no usable security type {sorted(offered)}")
            self.security = choice
            self._state = "challenge" if choice == SEC_VNC_AUTH else "result"
            return bytes([choice])
        if self._state == "challenge":
            challenge = self._take(16)
            if challenge is None:
                return None
            assert self.password is not None
            self._state = "result"
            return vnc_auth_response(self.password, challenge)
        if self._state == "result":
            if len(self._buf) < 4:
                return None
            (status,) = struct.unpack_from(">I", self._buf, 0)
            if status == 0:
                del self._buf[:4]
                self.done = True
                return b""
            reason = self._reason(4)
            if reason is None:
                return None
            raise AuthFailed(f"VNC authentication failed: {reason or 'no reason given'}")
        raise AssertionError(self._state)


def server_security_offer() -> bytes:
    """What the proxy sends the browser after its ProtocolVersion: one type, None."""
    return bytes([1, SEC_NONE])


SECURITY_OK = b"\0\0\0\0"


# --- VNC Authentication (DES challenge-response) -------------------------------------------


def _vnc_key(password: str) -> bytes:
    """The DES key of a VNC password: 8 bytes (truncated or NUL-padded), each bit-reversed."""
    raw = password.encode("latin-1", "replace")[:8].ljust(8, b"\0")
    return bytes(int(f"{b:08b}"[::-1], 2) for b in raw)


def des_ecb(key: bytes, data: bytes) -> bytes:
    """Single DES in ECB mode (``cryptography``'s TripleDES with K1 = K2 = K3)."""
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # cryptography < 43
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # the RFB protocol mandates DES
    return enc.update(data) + enc.finalize()


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """The 16-byte response to a VNC Authentication challenge."""
    if len(challenge) != 16:
        raise ValueError("a VNC challenge is 16 bytes")
    return des_ecb(_vnc_key(password), challenge)
