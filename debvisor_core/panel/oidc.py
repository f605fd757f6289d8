"""Log in with an OpenID Connect provider (SSO): the ID token goes to rpcd's Login.

The panel is an OIDC relying party without a client secret: the implicit flow with the
``form_post`` response mode (``response_type=id_token``), so the panel never talks to the
identity provider (IdP) itself and rpcd stays the only one that verifies the token
(signature against ``[rpcd] oidc_jwks_file``, issuer, audience, expiry) and maps its user
to roles (``[rpcd.identities]``).

=============================  ==============================================================
GET ``/login/sso``             start: a random ``state`` and ``nonce`` kept here for 10
                               minutes under a pre-login cookie (``__Host-debvisor-sso``),
                               then a redirect to ``[panel] oidc_authorization_endpoint``
POST ``/login/oidc``           the IdP's answer, posted by the browser: ``id_token`` and
                               ``state`` (or ``error``); the state must be the one bound to
                               the pre-login cookie (used once), the token's ``nonce`` the
                               one sent, its ``aud`` the panel's client id; then rpcd's
                               Login exchanges it for a session token
=============================  ==============================================================

The IdP's answer is a cross-site POST, so it carries no session cookie (SameSite=Strict)
and no CSRF token of the panel: the state, bound to a ``SameSite=None`` pre-login cookie,
is its CSRF protection, and the Origin check admits the panel's and the IdP's origins (or
``null``: an IdP page with ``Referrer-Policy: no-referrer`` sends that). The answer is a
page that continues to the panel with a meta refresh (a navigation of the panel's own
page, so the new SameSite=Strict session cookie goes with it; a 303 answered to the
cross-site POST would not carry it).

``/login/sso?reauth=1&next=PATH`` re-authenticates a logged-in SSO user (``prompt=login``,
``max_age=0``): the same user's fresh token makes the session's re-authentication fresh
(rollback, resume, console control), as a password does for a password user.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .. import log
from .rpc import Refused, RpcFailure, SessionEnded
from .security import form_of, own_origin
from .sessions import COOKIE, current, safe_next, set_cookie

if TYPE_CHECKING:  # pragma: no cover
    from .app import Panel

#: the pre-login cookie the state is bound to (SameSite=None: the IdP's POST is cross-site)
SSO_COOKIE = "__Host-debvisor-sso"
SSO_COOKIE_FLAGS = "Path=/; Secure; HttpOnly; SameSite=None"
PENDING_TTL = 600.0
_PENDING_MAX = 2048
TOKEN_MAX = 16 * 1024


@dataclass
class Pending:
    """One SSO login started here (by the browser holding the pre-login cookie)."""

    state: str
    nonce: str
    next: str
    created: float
    #: the key of the session to re-authenticate ("" for a login)
    reauth: str = ""


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT without checking it (rpcd verifies the same token; the panel
    reads its nonce and audience); ValueError when it is not a JWT."""
    parts = token.split(".")
    if len(token) > TOKEN_MAX or len(parts) != 3 or not all(parts[:2]):
        raise ValueError("not a JWT")
    body = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(body.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise ValueError("not a JWT") from None
    if not isinstance(claims, dict):
        raise ValueError("not a JWT")
    return claims


def _key(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


class OidcLogin:
    """The SSO routes and the logins started and not yet finished (this process's memory)."""

    def __init__(self, panel: Panel) -> None:
        self.p = panel
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.p.settings.oidc_authorization_endpoint)

    def _put(self, pending: Pending) -> str:
        cookie = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            for k in [k for k, v in self._pending.items() if now - v.created > PENDING_TTL]:
                del self._pending[k]
            self._pending[_key(cookie)] = pending
            while len(self._pending) > _PENDING_MAX:
                self._pending.popitem(last=False)
        return cookie

    def _take(self, cookie: str | None) -> Pending | None:
        """The login of this pre-login cookie, forgotten here (a state is used once)."""
        if not cookie or len(cookie) > 128:
            return None
        with self._lock:
            p = self._pending.pop(_key(cookie), None)
        if p is None or time.monotonic() - p.created > PENDING_TTL:
            return None
        return p

    # -- GET /login/sso ------------------------------------------------------------------
    async def start(self, request: Request) -> Response:
        st = self.p.settings
        if not self.enabled:
            raise HTTPException(404, "SSO login is not configured on this panel "
                                     "([panel] oidc_authorization_endpoint)")
        nxt = request.query_params.get("next") or ""
        s = current(request)
        reauth = request.query_params.get("reauth") == "1" and s is not None
        if s is not None and not reauth:
            return RedirectResponse("/", 303)
        origin = own_origin(request.scope, st)
        if origin is None:
            raise HTTPException(400, "the request names no host to come back to")
        pending = Pending(secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                          nxt if safe_next(nxt) else "/", time.monotonic(),
                          s.key if reauth and s is not None else "")
        params = {"response_type": "id_token", "response_mode": "form_post",
                  "client_id": st.oidc_client_id, "redirect_uri": origin + "/login/oidc",
                  "scope": st.oidc_scope, "state": pending.state, "nonce": pending.nonce}
        if reauth:
            params.update(prompt="login", max_age="0")
        endpoint = st.oidc_authorization_endpoint
        resp = RedirectResponse(endpoint + ("&" if "?" in endpoint else "?") + urlencode(params),
                                303)
        resp.headers.append("set-cookie", f"{SSO_COOKIE}={self._put(pending)}; "
                                          f"Max-Age={int(PENDING_TTL)}; {SSO_COOKIE_FLAGS}")
        return resp

    # -- POST /login/oidc ----------------------------------------------------------------
    def _fail(self, request: Request, message: str, status: int) -> Response:
        resp = self.p._login_page(request, message, status)
        resp.headers.append("set-cookie", f"{SSO_COOKIE}=; Max-Age=0; {SSO_COOKIE_FLAGS}")
        return resp

    def _check(self, form: dict[str, str], pending: Pending | None) -> tuple[str, str]:
        """(the ID token, "") when the answer belongs to ``pending``; else ("", why)."""
        st = self.p.settings
        if form.get("error"):
            said = (form.get("error_description") or form["error"])[:200]
            return "", f"The identity provider did not log you in: {said}."
        if pending is None:
            return "", ("This SSO login is unknown or more than 10 minutes old, or it was "
                        "started in another browser: log in again.")
        if not secrets.compare_digest((form.get("state") or "").encode(),
                                      pending.state.encode()):
            return "", ("The identity provider's answer does not belong to the login started "
                        "here (its state differs): log in again.")
        token = (form.get("id_token") or "").strip()
        try:
            claims = unverified_claims(token)
        except ValueError:
            return "", "The identity provider's answer holds no ID token."
        if not secrets.compare_digest(str(claims.get("nonce") or "").encode(),
                                      pending.nonce.encode()):
            return "", ("The ID token was not issued for this login (its nonce differs): log "
                        "in again.")
        aud = claims.get("aud")
        auds = [str(a) for a in aud] if isinstance(aud, list) else [str(aud)]
        if st.oidc_client_id not in auds:
            return "", "The ID token was issued to another client, not to this panel."
        if st.oidc_issuer and str(claims.get("iss") or "") != st.oidc_issuer:
            return "", "The ID token comes from another issuer than this panel's provider."
        return token, ""

    async def callback(self, request: Request) -> Response:
        if not self.enabled:
            raise HTTPException(404, "SSO login is not configured on this panel")
        pending = self._take(request.cookies.get(SSO_COOKIE))
        token, why = self._check(form_of(request), pending)
        if why or pending is None:
            log.info(f"panel: an SSO login was refused: {why}")
            return self._fail(request, why, 400)
        try:
            r = await self.p.call(self.p.rpc.login_oidc, token)
        except SessionEnded as exc:
            return self._fail(request, f"rpcd refused the ID token: {exc.details or 'no reason'}.",
                              401)
        except Refused as exc:
            return self._fail(request, f"rpcd refused the login: {exc.details or exc.message}.",
                              403)
        if pending.reauth:
            return await self._reauthenticated(request, pending, r.user, r.token)
        sid, _ = self.p.sessions.create(r.user, r.roles, r.token, rpcd_expires=r.expires,
                                        method="oidc")
        log.info(f"panel: {r.user} logged in with SSO")
        resp = self._continue(request, pending.next)
        resp.headers.append("set-cookie", set_cookie(COOKIE, sid))
        return resp

    async def _reauthenticated(self, request: Request, pending: Pending, user: str,
                               token: str) -> Response:
        try:
            await self.p.call(self.p.rpc.logout, token)  # only the proof was needed
        except RpcFailure:
            pass
        s, _why = self.p.sessions.peek(pending.reauth)
        if s is None:
            return self._fail(request, "Your session ended meanwhile: log in again.", 401)
        if s.user != user:
            return self._fail(request, f"You re-authenticated as {user}, not as {s.user}: "
                                       "nothing changed.", 403)
        s.reauth_at = self.p.clock()
        log.info(f"panel: {user} re-authenticated with SSO")
        return self._continue(request, pending.next)

    def _continue(self, request: Request, nxt: str) -> Response:
        resp = self.p.render(request, "sso_continue.html", {"next": nxt})
        resp.headers.append("set-cookie", f"{SSO_COOKIE}=; Max-Age=0; {SSO_COOKIE_FLAGS}")
        return resp

    def routes(self) -> list[BaseRoute]:
        return [Route("/login/sso", self.start, methods=["GET"]),
                Route("/login/oidc", self.callback, methods=["POST"])]
