"""The panel's request guards and response headers.

- :class:`SecurityMiddleware` (outermost): every state-changing request (POST, PUT, PATCH,
  DELETE) and every WebSocket upgrade must come from the panel's own origin — ``Origin``
  equal to ``[panel] public_origin`` (or ``https://<Host>`` when none is configured), or,
  when ``Origin`` is absent or ``null``, ``Sec-Fetch-Site: same-origin`` — else 403, or the
  WebSocket is closed before it is accepted. Every response gets a strict CSP (no inline
  script or style anywhere), ``nosniff``, ``no-referrer``, HSTS over TLS, and
  ``Cache-Control: no-store`` except on static files.
- :class:`CsrfMiddleware` (inside the session middleware): the synchronizer token of the
  session — the form field ``csrf`` or the ``X-CSRF-Token`` header — compared with
  :func:`secrets.compare_digest` on every POST (403 when missing or wrong). Before login
  the login form's double-submit cookie stands in for the session's token. The form is
  parsed here (urlencoded only, at most ``max_body_bytes``) and left in
  ``scope["state"]["form"]`` for the routes.
- The one exception to both is the identity provider's answer to an SSO login (``POST
  /login/oidc``, a cross-site form post by design): its Origin may be the provider's or
  ``null``, and its CSRF token is the OIDC state bound to a pre-login cookie
  (:mod:`.oidc`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from .sessions import LOGIN_COOKIE, Session, cookies_of
from .settings import PanelSettings, normalize_origin

CSP = ("default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HSTS = "max-age=63072000; includeSubDomains"
BASE_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
#: where the identity provider posts its answer (form_post): no session, no CSRF token
SSO_ANSWER = "/login/oidc"
CSRF_FIELD = "csrf"
CSRF_HEADER = b"x-csrf-token"


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for k, v in scope.get("headers") or []:
        if k.lower() == name:
            return str(v.decode("latin-1"))
    return None


def own_origin(scope: Mapping[str, Any], settings: PanelSettings) -> str | None:
    """The panel's origin for this request: ``public_origin``, else https://<Host>."""
    if settings.public_origin:
        return settings.public_origin
    host = _header(scope, b"host")
    if not host:
        return None
    scheme = "http" if scope.get("scheme") in ("http", "ws") else "https"
    try:
        return normalize_origin(f"{scheme}://{host}")
    except ValueError:
        return None


def origin_ok(scope: Mapping[str, Any], settings: PanelSettings) -> bool:
    """Whether a state-changing request or WebSocket upgrade comes from the panel's own
    pages: ``Origin`` equals the panel's origin; or the browser's ``Sec-Fetch-Site`` (a
    header pages cannot set) says same-origin and ``Origin`` is absent or ``null`` — with
    ``Referrer-Policy: no-referrer`` browsers send ``Origin: null`` on a plain form POST.
    Any other ``Sec-Fetch-Site`` (cross-site, same-site, none) always fails."""
    fetch_site = _header(scope, b"sec-fetch-site")
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    origin = _header(scope, b"origin")
    if origin is None or origin == "null":
        return fetch_site == "same-origin"
    mine = own_origin(scope, settings)
    if mine is None:
        return False
    try:
        return secrets.compare_digest(normalize_origin(origin).encode(), mine.encode())
    except ValueError:
        return False


def sso_answer_origin_ok(scope: Mapping[str, Any], settings: PanelSettings) -> bool:
    """The Origin check of the identity provider's answer (``POST /login/oidc``, a
    cross-site form post): the panel's or the provider's origin, or none / ``null`` (a
    provider page under ``Referrer-Policy: no-referrer``); its CSRF protection is the
    OIDC state bound to the pre-login cookie (:mod:`.oidc`)."""
    origin = _header(scope, b"origin")
    if origin is None or origin == "null":
        return True
    try:
        given = normalize_origin(origin)
    except ValueError:
        return False
    return given == own_origin(scope, settings) or given in settings.idp_origins()


def csrf_ok(expected: str | None, form: dict[str, str], scope: Mapping[str, Any]) -> bool:
    """Whether the request carries ``expected`` as form field ``csrf`` or X-CSRF-Token."""
    if not expected:
        return False
    given = form.get(CSRF_FIELD) or _header(scope, CSRF_HEADER) or ""
    return secrets.compare_digest(given.encode(), expected.encode())


def security_headers(scope: Mapping[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    """Add the panel's headers to ``headers`` in place (for an HTTP response of ``scope``)."""
    have = {k.lower() for k, _ in headers}
    for k, v in BASE_HEADERS:
        if k not in have:
            headers.append((k, v))
    if scope.get("scheme") == "https" and b"strict-transport-security" not in have:
        headers.append((b"strict-transport-security", HSTS.encode()))
    if not str(scope.get("path", "")).startswith("/static/"):
        headers[:] = [(k, v) for k, v in headers if k.lower() not in (b"cache-control",
                                                                        b"expires", b"pragma")]
        headers.append((b"cache-control", b"no-store"))


async def _deny(send: Any, status: int, message: str) -> None:
    body = f"{status} {message}\n".encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class SecurityMiddleware:
    """Origin checks on unsafe requests and WebSocket upgrades; headers on every response."""

    def __init__(self, app: Any, settings: PanelSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            if not origin_ok(scope, self.settings):
                msg = await receive()
                if msg.get("type") == "websocket.connect":
                    await send({"type": "websocket.close", "code": 1008,
                                "reason": "foreign origin"})
                return
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                security_headers(scope, headers)
                message = {**message, "headers": headers}
            await send(message)

        if scope.get("method") in UNSAFE_METHODS and not (
                sso_answer_origin_ok(scope, self.settings) if scope.get("path") == SSO_ANSWER
                else origin_ok(scope, self.settings)):
            await _deny(send_with_headers, 403, "Forbidden: the request did not come from "
                                                "this panel's pages (Origin check)")
            return
        await self.app(scope, receive, send_with_headers)


class CsrfMiddleware:
    """The synchronizer-token check of every unsafe request (after the session is known)."""

    def __init__(self, app: Any, settings: PanelSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.settings.max_body_bytes:
                await _deny(send, 413, "Request body too large")
                return
        ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if body and ctype != "application/x-www-form-urlencoded":
            await _deny(send, 415, "Forms must be application/x-www-form-urlencoded")
            return
        try:
            parsed = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=200,
                              strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            await _deny(send, 400, "Malformed form")
            return
        form = {k: v[0] for k, v in parsed.items()}
        state = scope.setdefault("state", {})
        state["form"] = form
        session = state.get("session")
        if scope.get("path") == "/login":  # no session yet: the form's double-submit cookie
            expected = cookies_of(scope.get("headers") or []).get(LOGIN_COOKIE)
        else:
            expected = session.csrf if isinstance(session, Session) else None
        # the identity provider's answer has the OIDC state instead (checked by its route)
        if scope.get("path") != SSO_ANSWER and not csrf_ok(expected, form, scope):
            await _deny(send, 403, "Forbidden: the CSRF token is missing or wrong; reload the "
                                   "page and try again")
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        await self.app(scope, replay, send)


def form_of(request: Any) -> dict[str, str]:
    """The parsed form of a POST (parsed by :class:`CsrfMiddleware`)."""
    form = (request.scope.get("state") or {}).get("form")
    return form if isinstance(form, dict) else {}
