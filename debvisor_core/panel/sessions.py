"""Server-side sessions of the panel.

The browser holds only ``__Host-debvisor=<256-bit random id>`` (Secure, HttpOnly,
SameSite=Strict, Path=/). Everything else stays here, keyed by the id's SHA-256: the rpcd
user token, the user's name and roles, the CSRF token, when the session started, its last
activity and its last re-authentication. The server enforces both limits on every
request: ``idle_timeout`` (15 min) since the last activity — a live event stream is not
activity — and ``absolute_timeout`` (8 h) since login. A session that ends (idle, limit,
logout, or rpcd no longer accepting the token) is remembered briefly, so the next request
lands on ``/login?why=idle|expired|logged-out|revoked`` and the login page says why.
Sessions live in this process's memory: a restart of the panel logs everyone out.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

COOKIE = "__Host-debvisor"
#: the login form's double-submit CSRF cookie (there is no session before login)
LOGIN_COOKIE = "__Host-debvisor-login"
COOKIE_FLAGS = "Path=/; Secure; HttpOnly; SameSite=Strict"
#: why a session ended -> what the login page says
REASONS = {
    "idle": "Your session ended after a period without activity. Log in again.",
    "expired": "Your session reached its time limit. Log in again.",
    "logged-out": "You logged out.",
    "revoked": "rpcd no longer accepts your session (it was revoked or expired). Log in again.",
}
#: paths served without a session
PUBLIC = ("/login", "/login/sso", "/login/oidc", "/static/", "/favicon.ico")
#: paths whose requests are not activity (the event stream)
PASSIVE = ("/events",)
_ENDED_KEEP = 4096


def _key(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


@dataclass
class Session:
    """One person's session; ``token`` is the rpcd user token, never sent to the browser."""

    key: str
    user: str
    roles: tuple[str, ...]
    token: str
    csrf: str
    created: float
    last_activity: float
    reauth_at: float | None = None
    rpcd_expires: float = 0.0
    #: how the user logged in: "password" or "oidc" (re-authentication follows the same way)
    method: str = "password"
    #: small per-session caches (e.g. what rpcd says the user may do), by name: (time, value)
    cache: dict[str, tuple[float, Any]] = field(default_factory=dict)

    def reauth_fresh(self, now: float, max_age: float) -> bool:
        """Whether the user re-entered their password at most ``max_age`` seconds ago."""
        return self.reauth_at is not None and 0 <= now - self.reauth_at <= max_age


class SessionStore:
    """The sessions of one panel process; ``clock`` is injectable (tests advance it)."""

    def __init__(self, idle_timeout: float = 900.0, absolute_timeout: float = 8 * 3600.0, *,
                 clock: Callable[[], float] = time.time,
                 on_end: Callable[[Session, str], None] | None = None) -> None:
        self.idle_timeout, self.absolute_timeout = idle_timeout, absolute_timeout
        self.clock = clock
        self.on_end = on_end
        self._live: dict[str, Session] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._last_sweep = 0.0

    def __len__(self) -> int:
        return len(self._live)

    def create(self, user: str, roles: tuple[str, ...] | list[str], token: str, *,
               rpcd_expires: float = 0.0, method: str = "password") -> tuple[str, Session]:
        """A new session: (the cookie's id, the session). Logging in is not a
        re-authentication: the actions that need one ask for the password again."""
        sid = secrets.token_urlsafe(32)  # 256 bits
        now = self.clock()
        s = Session(_key(sid), user, tuple(roles), token, secrets.token_urlsafe(32), now, now,
                    rpcd_expires=rpcd_expires, method=method)
        with self._lock:
            self._live[s.key] = s
        return sid, s

    def _why_expired(self, s: Session, now: float) -> str | None:
        if now - s.created > self.absolute_timeout:
            return "expired"
        if now - s.last_activity > self.idle_timeout:
            return "idle"
        return None

    def lookup(self, sid: str | None, *, activity: bool = True) -> tuple[Session | None, str | None]:
        """The live session of ``sid`` (its activity time updated unless ``activity`` is
        False), else (None, why it ended) — why is None for an id never seen."""
        self.sweep()
        if not sid or len(sid) > 128:
            return None, None
        key = _key(sid)
        now = self.clock()
        ended: Session | None = None
        with self._lock:
            s = self._live.get(key)
            if s is None:
                return None, self._ended.get(key)
            why = self._why_expired(s, now)
            if why is None:
                if activity:
                    s.last_activity = now
                return s, None
            ended = self._live.pop(key)
            self._remember(key, why)
        self._ended_hook(ended, why)
        return None, why

    def peek(self, key: str) -> tuple[Session | None, str | None]:
        """Like :meth:`lookup` by the session's key, never activity (the event stream)."""
        now = self.clock()
        with self._lock:
            s = self._live.get(key)
            if s is None:
                return None, self._ended.get(key)
            why = self._why_expired(s, now)
            if why is None:
                return s, None
            self._live.pop(key)
            self._remember(key, why)
        self._ended_hook(s, why)
        return None, why

    def end(self, s: Session, why: str) -> bool:
        """End ``s`` now (logout: ``logged-out``; rpcd refusing the token: ``revoked``)."""
        with self._lock:
            found = self._live.pop(s.key, None) is not None
            self._remember(s.key, why)
        if found:
            self._ended_hook(s, why)
        return found

    def sweep(self, every: float = 60.0) -> None:
        """End the sessions that expired without coming back (at most once per ``every``)."""
        now = self.clock()
        if now - self._last_sweep < every:
            return
        self._last_sweep = now
        gone: list[tuple[Session, str]] = []
        with self._lock:
            for key, s in list(self._live.items()):
                why = self._why_expired(s, now)
                if why is not None:
                    del self._live[key]
                    self._remember(key, why)
                    gone.append((s, why))
        for s, why in gone:
            self._ended_hook(s, why)

    def _remember(self, key: str, why: str) -> None:
        self._ended[key] = why
        while len(self._ended) > _ENDED_KEEP:
            self._ended.popitem(last=False)

    def _ended_hook(self, s: Session, why: str) -> None:
        if self.on_end is not None and why != "logged-out":  # logout revokes by itself
            self.on_end(s, why)


# -- cookies -------------------------------------------------------------------------------
def cookies_of(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's cookies (a malformed Cookie header gives what parses)."""
    out: dict[str, str] = {}
    for k, v in headers:
        if k.lower() == b"cookie":
            c: SimpleCookie = SimpleCookie()
            try:
                c.load(v.decode("latin-1"))
            except Exception:  # noqa: BLE001 - http.cookies raises CookieError and others
                continue
            out.update({name: m.value for name, m in c.items()})
    return out


def set_cookie(name: str, value: str) -> str:
    """A ``Set-Cookie`` value with the panel's flags (a session cookie: no Max-Age)."""
    return f"{name}={value}; {COOKIE_FLAGS}"


def clear_cookie(name: str) -> str:
    return f"{name}=; Max-Age=0; {COOKIE_FLAGS}"


def login_url(why: str | None, next_path: str = "") -> str:
    q = [f"why={why}"] if why in REASONS else []
    if next_path and next_path != "/" and safe_next(next_path):
        q.append(f"next={quote(next_path, safe='/')}")
    return "/login" + ("?" + "&".join(q) if q else "")


def safe_next(path: str) -> bool:
    """Whether ``path`` is a local path to return to after login (no open redirect)."""
    return (path.startswith("/") and not path.startswith("//") and "\\" not in path
            and not any(c in path for c in "\r\n\t") and not path.startswith("/login")
            and not path.startswith("/events") and len(path) < 512)


def is_public(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC)


class SessionMiddleware:
    """Attach the session (``scope["state"]["session"]``) to every HTTP request and
    WebSocket; without a live session only the public paths are served: a page request
    is redirected to the login page with the reason, a WebSocket closed before accept."""

    def __init__(self, app: Any, store: SessionStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        sid = cookies_of(scope.get("headers") or []).get(COOKIE)
        activity = not any(path == p for p in PASSIVE) and not is_public(path)
        session, why = self.store.lookup(sid, activity=activity) if sid else (None, None)
        state = scope.setdefault("state", {})
        state["session"], state["session_why"] = session, why
        if session is not None or is_public(path) or path in PASSIVE:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            msg = await receive()
            if msg.get("type") == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008, "reason": "log in first"})
            return
        target = login_url(why, path if scope.get("method") == "GET" else "")
        headers = [(b"location", target.encode()), (b"content-type", b"text/plain; charset=utf-8")]
        if sid:
            headers.append((b"set-cookie", clear_cookie(COOKIE).encode()))
        hx = any(k == b"hx-request" for k, _ in scope.get("headers") or [])
        if hx:  # htmx follows HX-Redirect, not a 303 answered to its XHR
            headers.append((b"hx-redirect", target.encode()))
        await send({"type": "http.response.start", "status": 200 if hx else 303, "headers": headers})
        await send({"type": "http.response.body", "body": b"log in first\n"})


def current(conn: Any) -> Session | None:
    """The session of a Starlette Request or WebSocket (None without one)."""
    state = conn.scope.get("state") or {}
    s = state.get("session")
    return s if isinstance(s, Session) else None
