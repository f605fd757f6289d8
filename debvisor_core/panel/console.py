"""The VNC console proxy: ``WebSocket /console/ws?t=TICKET`` between noVNC and QEMU.

Before ``accept()``: the Origin must be the panel's own (else the upgrade is refused with
HTTP 403), the session must be live, and ``t`` must be a panel console ticket
(:class:`ConsoleTickets`: single use, 30 s to open, bound to the session's user, the VM and
the mode). A refused ticket is answered by accepting and at once closing with code 4403 and
the reason (``used``, ``expired``, ``unknown``, ``wrong-user``) so the page can say why;
nothing else is exchanged. At most ``console_limit`` (4) consoles per user (4429).

Then the upstream comes from ``app.state.console_upstream(session, vm, mode)`` (the app
wires it to rpcd ``hv.ticket.create`` + ``hv.ticket.use``: host, port, one-time password),
the proxy logs into QEMU itself (VNC Authentication), offers the browser security type None,
and relays: server to browser verbatim, browser to server through :class:`~.rfb.ViewFilter`
(view mode drops input, see :mod:`.rfb`). Anything the filter does not know closes the
WebSocket with 1008.

Audit: every event — ``console.refused``, ``console.open``, ``console.failed``,
``console.close`` (mode, duration, dropped and forwarded counts per message type) — is one
``panel: console {json}`` line in the panel's own log, then goes to
``app.state.console_audit(event, session)``, which the app wires to the node's audit chain
(rpcd ``RecordEvent`` with the session's user token, :mod:`.consolepage`). ``session`` is
None for the refusals before anyone logged in (foreign origin, no session): those stay in
the panel's log. A hook that fails (rpcd refuses or is unreachable) costs one line in the
panel's log ("… not recorded in the node's audit chain: why") and closes nothing, with one
exception: control is a state-changing capability, and every state change is audited
before it happens, so a control console whose ``console.open`` is not recorded is refused
(4503, "control refused: …"); a view console goes on.

Hooks on ``app.state`` (each may be sync or async; a sync one runs in a thread):
``console_upstream`` (required), ``console_audit`` (default: none, the panel's log only),
``console_session(ws)`` (default: the session the session middleware attached),
``console_session_alive(session)`` (default: ``app.state.sessions.peek(session.key)``, which
is not activity; checked every ``console_check_interval`` seconds, 5), ``console_limit``
(4), ``console_max_duration`` (8 h), ``console_tickets`` / ``console_active`` (created on
first use).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .. import log as panel_log
from . import rfb

log = logging.getLogger("debvisor.panel.console")

TICKET_TTL = 30.0
DEFAULT_LIMIT = 4
DEFAULT_MAX_DURATION = 8 * 3600.0
CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 15.0
CHECK_INTERVAL = 5.0
READ_SIZE = 256 * 1024

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # protocol violation / unknown message
CLOSE_INTERNAL = 1011
CLOSE_SESSION = 4401  # no session, or it ended while the console was open
CLOSE_TICKET = 4403  # ticket refused: the reason says why
CLOSE_TIME = 4408  # console time limit
CLOSE_BUSY = 4429  # too many consoles for this user
CLOSE_UPSTREAM = 4502  # the VM's VNC server could not be reached or refused us
CLOSE_AUDIT = 4503  # control refused: its opening could not be audited
BROWSER_CLOSED = "the browser closed the console"


# --- tickets ------------------------------------------------------------------------------


@dataclass
class ConsoleTicket:
    """One panel console ticket (the token itself is never stored, only its hash)."""

    id: str  # a short public id for the audit
    user: str
    vm: str
    mode: rfb.Mode
    issued: float
    expires: float
    session: str | None = None
    used: bool = False


class ConsoleTickets:
    """Single-use console tickets, in memory, valid ``ttl`` seconds to open a console.

    ``issue`` (from the console page, for the session's user) returns the token for the
    page; the WebSocket ``redeem``\\ s it. Thread-safe (sync routes run in a thread pool).
    ``clock`` is injectable: tests advance it."""

    def __init__(self, ttl: float = TICKET_TTL, *, clock: Callable[[], float] = time.monotonic,
                 max_outstanding: int = 4096, per_user: int = 32) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_outstanding = max_outstanding
        self.per_user = per_user
        self._tickets: dict[str, ConsoleTicket] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()

    def issue(self, user: str, vm: str, mode: str, *, session: str | None = None) -> str:
        """A new ticket for ``user`` to open ``vm``'s console in ``mode`` (view|control),
        bound to ``session`` (the session's key) when given."""
        if mode not in rfb.MODES:
            raise ValueError(f"mode must be view or control, not {mode!r}")
        if not user or not vm:
            raise ValueError("a console ticket needs a user and a VM")
        token = secrets.token_urlsafe(32)
        now = self.clock()
        t = ConsoleTicket(secrets.token_hex(6), user, vm, cast(rfb.Mode, mode), now,
                          now + self.ttl, session)
        with self._lock:
            self._prune(now)
            mine = [k for k, v in self._tickets.items() if v.user == user and not v.used]
            if len(mine) >= self.per_user:  # forget the user's oldest unused ticket
                del self._tickets[min(mine, key=lambda k: self._tickets[k].issued)]
            if len(self._tickets) >= self.max_outstanding:
                del self._tickets[min(self._tickets, key=lambda k: self._tickets[k].issued)]
            self._tickets[self._key(token)] = t
        return token

    def check(self, token: str, user: str, session: str | None = None
              ) -> tuple[str, ConsoleTicket | None]:
        """(status, ticket) without consuming: ``ok``, ``unknown``, ``used``, ``expired``
        or ``wrong-user`` (another user's, or another session's, ticket)."""
        if not token or len(token) > 256:
            return "unknown", None
        with self._lock:
            return self._status(self._tickets.get(self._key(token)), user, session)

    def redeem(self, token: str, user: str, session: str | None = None
               ) -> tuple[str, ConsoleTicket | None]:
        """Like :meth:`check`, and an ``ok`` ticket is used up (atomically)."""
        if not token or len(token) > 256:
            return "unknown", None
        with self._lock:
            t = self._tickets.get(self._key(token))
            status, t = self._status(t, user, session)
            if status == "ok" and t is not None:
                t.used = True
            return status, t

    def _status(self, t: ConsoleTicket | None, user: str, session: str | None
                ) -> tuple[str, ConsoleTicket | None]:
        if t is None:
            return "unknown", None
        if t.used:
            return "used", t
        if self.clock() >= t.expires:
            return "expired", t
        if t.user != user or (t.session is not None and t.session != session):
            return "wrong-user", t
        return "ok", t

    def _prune(self, now: float) -> None:
        """Forget tickets long past their expiry (a used or expired one is still reported
        as such for 5 minutes, then as unknown)."""
        for k in [k for k, t in self._tickets.items() if now >= t.expires + 300]:
            del self._tickets[k]

    def __len__(self) -> int:
        return len(self._tickets)


# --- the consoles that are open -----------------------------------------------------------


@dataclass
class OpenConsole:
    id: str
    user: str
    vm: str
    mode: str
    started: float = field(default_factory=time.time)


class ActiveConsoles:
    """The consoles open in this process, with a per-user cap."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._open: dict[str, OpenConsole] = {}
        self._lock = threading.Lock()

    def add(self, user: str, vm: str, mode: str) -> OpenConsole | None:
        """Register a console; None when ``user`` already has ``limit`` open."""
        with self._lock:
            if sum(1 for c in self._open.values() if c.user == user) >= self.limit:
                return None
            c = OpenConsole(secrets.token_hex(6), user, vm, mode)
            self._open[c.id] = c
            return c

    def remove(self, c: OpenConsole) -> None:
        with self._lock:
            self._open.pop(c.id, None)

    def of_vm(self, vm: str) -> list[OpenConsole]:
        """Who watches or controls ``vm`` now (for "n others watching / controlled by X")."""
        with self._lock:
            return [c for c in self._open.values() if c.vm == vm]

    def __len__(self) -> int:
        return len(self._open)


def tickets_of(app: Any) -> ConsoleTickets:
    """The app's :class:`ConsoleTickets` (created on first use)."""
    t = getattr(app.state, "console_tickets", None)
    if t is None:
        t = app.state.console_tickets = ConsoleTickets()
    return cast(ConsoleTickets, t)


def active_of(app: Any) -> ActiveConsoles:
    """The app's :class:`ActiveConsoles` (created on first use, ``console_limit`` each)."""
    a = getattr(app.state, "console_active", None)
    if a is None:
        a = app.state.console_active = ActiveConsoles(
            int(getattr(app.state, "console_limit", DEFAULT_LIMIT)))
    return cast(ActiveConsoles, a)


# --- helpers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    """Where the VM's VNC server listens and the one-time password (None: no auth)."""

    host: str
    port: int
    password: str | None = None

    @classmethod
    def of(cls, value: Any) -> Upstream:
        if isinstance(value, Upstream):
            return value
        if isinstance(value, Mapping):
            return cls(str(value["host"]), int(value["port"]), value.get("password"))
        host, port, password = value
        return cls(str(host), int(port), password)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a hook: await a coroutine function, run a plain function in a thread."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _origin_ok(ws: WebSocket) -> bool:
    try:
        from .security import origin_ok
    except ImportError:  # pragma: no cover - the panel ships security.py
        return _fallback_origin_ok(ws)
    settings = getattr(ws.app.state, "settings", None)
    if settings is None:
        from .settings import PanelSettings

        settings = PanelSettings()
    return bool(origin_ok(cast(dict[str, Any], ws.scope), settings))


def _fallback_origin_ok(ws: WebSocket) -> bool:  # pragma: no cover
    origin, host = ws.headers.get("origin"), ws.headers.get("host")
    scheme = "http" if ws.scope.get("scheme") in ("http", "ws") else "https"
    return bool(origin and host and secrets.compare_digest(origin, f"{scheme}://{host}"))


async def _session(ws: WebSocket) -> Any:
    hook = getattr(ws.app.state, "console_session", None)
    if hook is not None:
        return await _call(hook, ws)
    return (ws.scope.get("state") or {}).get("session")


async def _session_alive(ws: WebSocket, session: Any) -> bool:
    hook = getattr(ws.app.state, "console_session_alive", None)
    if hook is not None:
        return bool(await _call(hook, session))
    store = getattr(ws.app.state, "sessions", None)
    key = _field(session, "key")
    if store is not None and key is not None and hasattr(store, "peek"):
        live, _why = store.peek(key)
        return live is not None
    return True


async def _audit(ws: WebSocket, event: dict[str, Any], session: Any = None) -> str | None:
    """Write ``event`` to the panel's log, then give it to ``console_audit`` with the
    session (None before anyone logged in); None when done, else why the hook failed
    (said in one line of the panel's log)."""
    panel_log.info("panel: console " + json.dumps(event, sort_keys=True, default=str))
    hook = getattr(ws.app.state, "console_audit", None)
    if hook is None:
        return None
    try:
        await _call(hook, event, session)
        return None
    except Exception as exc:  # noqa: BLE001 - the audit sink failing must not crash the proxy
        why = (str(exc) or type(exc).__name__).splitlines()[0][:300]
        what = ", ".join(str(v) for v in (event.get("mode"), event.get("ticket") and
                                          f"ticket {event['ticket']}", event.get("user")) if v)
        panel_log.warn(f"panel: console audit: {event.get('event')} ({what}) not recorded in "
                       f"the node's audit chain: {why}")
        return why


def _reason(text: str) -> str:
    """A WebSocket close reason: at most 123 bytes of UTF-8."""
    raw = text.encode()[:120]
    return raw.decode("utf-8", "ignore")


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state == WebSocketState.CONNECTED and \
            ws.client_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code, _reason(reason))


async def _refuse(ws: WebSocket, code: int, reason: str, base: dict[str, Any],
                  session: Any = None) -> None:
    """Accept only to close with ``code`` and ``reason`` (a browser cannot read an HTTP
    refusal of a WebSocket upgrade); nothing else is exchanged."""
    await _audit(ws, {**base, "event": "console.refused", "reason": reason, "code": code},
                 session)
    await ws.accept(subprotocol=_subprotocol(ws))
    await _close(ws, code, reason)


def _subprotocol(ws: WebSocket) -> str | None:
    offered = ws.scope.get("subprotocols") or []
    return "binary" if "binary" in offered else None


# --- the endpoint -------------------------------------------------------------------------


async def console_ws(ws: WebSocket) -> None:
    """``/console/ws?t=TICKET``: check, then proxy (module docstring)."""
    client = ws.client.host if ws.client else None
    base: dict[str, Any] = {"client": client}
    if not _origin_ok(ws):
        await _audit(ws, {**base, "event": "console.refused", "reason": "foreign origin"})
        await ws.close(CLOSE_POLICY)  # before accept: the upgrade is answered with 403
        return
    session = await _session(ws)
    user = _field(session, "user") if session is not None else None
    if not user:
        await _refuse(ws, CLOSE_SESSION, "log in first", base)
        return
    base["user"] = str(user)
    token = ws.query_params.get("t", "")
    tickets = tickets_of(ws.app)
    skey = _field(session, "key")
    status, ticket = tickets.check(token, str(user), skey)
    if ticket is not None:
        base.update(vm=ticket.vm, mode=ticket.mode, ticket=ticket.id)
    if status != "ok":
        await _refuse(ws, CLOSE_TICKET, status, base, session)
        return
    assert ticket is not None
    active = active_of(ws.app)
    handle = active.add(str(user), ticket.vm, ticket.mode)
    if handle is None:
        await _refuse(ws, CLOSE_BUSY, f"too many consoles (at most {active.limit} per user)",
                      base, session)
        return
    try:
        status, ticket = tickets.redeem(token, str(user), skey)
        if status != "ok" or ticket is None:  # raced with another use of the same ticket
            await _refuse(ws, CLOSE_TICKET, status, base, session)
            return
        await ws.accept(subprotocol=_subprotocol(ws))
        await _serve(ws, session, ticket, base)
    finally:
        active.remove(handle)


async def _serve(ws: WebSocket, session: Any, ticket: ConsoleTicket, base: dict[str, Any]) -> None:
    state = ws.app.state
    started = time.monotonic()
    hook = getattr(state, "console_upstream", None)
    writer: asyncio.StreamWriter | None = None
    try:
        if hook is None:
            raise _Fail(CLOSE_INTERNAL, "no console upstream is configured")
        try:
            up = Upstream.of(await _call(hook, session, ticket.vm, ticket.mode))
        except _Fail:
            raise
        except Exception as exc:  # noqa: BLE001 - rpcd said no, or the hook broke: say so
            raise _Fail(CLOSE_UPSTREAM, f"upstream: {_short(exc)}") from None
        reader, writer, security, leftover = await _connect(up)
        host = f"[{up.host}]" if ":" in up.host else up.host
        opened = {**base, "event": "console.open", "upstream": f"{host}:{up.port}",
                  "security": "vnc-password" if security == rfb.SEC_VNC_AUTH else "none"}
        why = await _audit(ws, opened, session)
        if why is not None and ticket.mode == "control":  # audited before it happens, or not
            raise _Fail(CLOSE_AUDIT, "control refused: the node's audit log did not record it "
                                     f"({why})")
    except _Fail as f:
        if writer is not None:
            writer.close()
        await _audit(ws, {**base, "event": "console.failed", "reason": f.reason, "code": f.code},
                     session)
        await _close(ws, f.code, f.reason)
        return
    filt = rfb.ViewFilter(ticket.mode)
    code, reason = CLOSE_INTERNAL, "internal error"
    try:
        code, reason = await _relay(ws, reader, writer, filt, leftover, session)
    finally:
        with contextlib.suppress(Exception):
            writer.close()
        await _close(ws, code, reason)
        counts = filt.named_counts()
        await _audit(ws, {**base, "event": "console.close", "reason": reason, "code": code,
                          "duration_s": round(time.monotonic() - started, 3),
                          "dropped": counts["dropped"],
                          "dropped_total": sum(filt.dropped.values()),
                          "forwarded": counts["forwarded"], "stripped": counts["stripped"],
                          "bytes_to_vm": filt.bytes_out, "bytes_from_browser": filt.bytes_in},
                     session)


class _Fail(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:100]


async def _connect(up: Upstream) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, bytes]:
    """Connect to the VNC server and authenticate (the upstream handshake up to
    SecurityResult); raise :class:`_Fail` with the reason."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(up.host, up.port)
    except (OSError, TimeoutError) as exc:
        raise _Fail(CLOSE_UPSTREAM, f"upstream: cannot connect to the VM's console: "
                                    f"{_short(exc)}") from None
    hs = rfb.UpstreamHandshake(up.password)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            while not hs.done:
                data = await reader.read(4096)
                if not data:
                    raise rfb.ProtocolError("the VNC server closed the connection")
                reply = hs.feed(data)
                if reply:
                    writer.write(reply)
                    await writer.drain()
    except (rfb.ProtocolError, OSError, TimeoutError) as exc:
        writer.close()
        what = "timed out" if isinstance(exc, TimeoutError) else _short(exc)
        raise _Fail(CLOSE_UPSTREAM, f"upstream: {what}") from None
    assert hs.security is not None
    return reader, writer, hs.security, hs.leftover


async def _relay(ws: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 filt: rfb.ViewFilter, leftover: bytes, session: Any) -> tuple[int, str]:
    """Relay both ways until one side ends; (close code, reason)."""
    state = ws.app.state
    init_sent = asyncio.Event()

    async def from_browser() -> tuple[int, str]:
        await ws.send_bytes(rfb.PROTOCOL_VERSION)  # the browser's side of the handshake
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return CLOSE_NORMAL, BROWSER_CLOSED
            data = msg.get("bytes")
            if data is None:
                return CLOSE_POLICY, "text frames are not RFB"
            try:
                out, events = filt.feed(data)
            except rfb.ProtocolError as exc:
                return CLOSE_POLICY, str(exc)
            for ev in events:
                if ev.kind == "version":
                    await ws.send_bytes(rfb.server_security_offer())
                elif ev.kind == "security":
                    await ws.send_bytes(rfb.SECURITY_OK)
            if out:
                try:
                    writer.write(out)
                    await writer.drain()
                except OSError as exc:
                    return CLOSE_UPSTREAM, f"upstream: {_short(exc)}"
            if filt.established:
                init_sent.set()

    async def from_vm() -> tuple[int, str]:
        await init_sent.wait()
        if leftover:
            await ws.send_bytes(leftover)
        while True:
            try:
                data = await reader.read(READ_SIZE)
            except OSError as exc:
                return CLOSE_UPSTREAM, f"upstream: {_short(exc)}"
            if not data:
                return CLOSE_NORMAL, "the VM's console closed the connection"
            await ws.send_bytes(data)

    async def watchdog() -> tuple[int, str]:
        t0 = time.monotonic()
        interval = float(getattr(state, "console_check_interval", CHECK_INTERVAL))
        limit = float(getattr(state, "console_max_duration", DEFAULT_MAX_DURATION))
        while True:
            await asyncio.sleep(min(interval, HANDSHAKE_TIMEOUT))
            elapsed = time.monotonic() - t0
            if not filt.established and elapsed > HANDSHAKE_TIMEOUT:
                return CLOSE_POLICY, "the RFB handshake took too long"
            if elapsed > limit:
                return CLOSE_TIME, "the console reached its time limit"
            if not await _session_alive(ws, session):
                return CLOSE_SESSION, "the session ended"

    tasks = [asyncio.create_task(c) for c in (from_browser(), from_vm(), watchdog())]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = next(t for t in tasks if t in done)
        try:
            return first.result()
        except (OSError, WebSocketDisconnect):  # a send to a browser that went away
            return CLOSE_NORMAL, BROWSER_CLOSED
        except Exception as exc:  # logged, then the close reason and the audit say it
            log.exception("console relay failed")
            return CLOSE_INTERNAL, _short(exc)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def routes() -> list[Any]:
    """The console's routes: the WebSocket proxy (the page is the app's)."""
    return [WebSocketRoute("/console/ws", console_ws, name="console_ws")]
