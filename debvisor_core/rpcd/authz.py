"""Who is calling and what they may do: identities, roles, tokens and rate limits.

Deny by default. The caller is the client certificate's CN (mTLS is always on), or the
subject of a verified OAuth2 bearer token (JWT) when one is sent. A certificate listed in
``[rpcd] proxies`` (the web panel's) is nobody by itself: a call from it without a user
token is UNAUTHENTICATED, so a proxy never borrows the identity of the users it forwards
(the etcd gateway CVE-2018-16886). An API key (``x-api-key``) can only narrow its owner's
permissions: the effective permissions are the owner's roles intersected with the key's.

Permissions are patterns: ``rpc:NAME`` for a method (``rpc:*`` all), an action path or glob
(``hv.migrate``, ``hv.*``, ``*``) for Invoke and Call, and ``@read`` for every read-only
action. ``rpc:Invoke`` grants ``rpc:Call`` as well (Call runs a subset of what Invoke runs,
with the same per-action checks). Built-in roles: ``viewer`` (read-only actions and the
read methods), ``operator`` and ``admin`` (everything); ``[rpcd.roles.NAME] allow = [...]``
adds or replaces roles and ``[rpcd.identities] NAME = [ROLES]`` grants them.
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..settings import Section

READ_METHODS = ("rpc:ListActions", "rpc:Health", "rpc:ListOperations", "rpc:VerifyAudit",
                "rpc:AuditEvents", "rpc:WhoAmI", "rpc:Call")
BUILTIN_ROLES: dict[str, tuple[str, ...]] = {
    "viewer": (*READ_METHODS, "rpc:Invoke", "@read"),
    "operator": ("rpc:*", "*"),
    "admin": ("rpc:*", "*"),
}


@dataclass
class Caller:
    """The authenticated caller of a call (the guard gives the same one to the calls of a
    certificate and API key it admitted before: never change it)."""

    identity: str
    cert_cn: str
    via: str | None = None  # the proxy certificate it came through
    key_id: str | None = None
    key_role: str | None = None
    roles: tuple[str, ...] = ()
    #: how a person's session was opened ("password", "oidc") when the call came with a
    #: user token (x-user-token), else None
    login: str | None = None

    def label(self) -> str:
        out = self.identity + (f" via={self.via}" if self.via else "")
        return out + (f" key={self.key_id}" if self.key_id else "")


@dataclass
class Policy:
    """Roles and grants from ``[rpcd]``."""

    roles: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(BUILTIN_ROLES))
    identities: dict[str, tuple[str, ...]] = field(default_factory=dict)
    proxies: frozenset[str] = frozenset()
    #: decisions already made, by (role, permission, read-only) and by (the caller's roles,
    #: its key's role, permission, read-only): the roles do not change for a policy's life,
    #: and matching the patterns is most of a check's cost
    _seen: dict[tuple[str, str, bool], bool] = field(default_factory=dict, repr=False, compare=False)
    _decided: dict[tuple[Any, ...], bool] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_section(cls, s: Section) -> Policy:
        """``[rpcd]``'s ``proxies``, ``[rpcd.roles.NAME] allow`` and ``[rpcd.identities]``;
        a wrong type is one sentence naming the key."""
        roles = dict(BUILTIN_ROLES)
        for name in s.table("roles"):
            roles[str(name)] = tuple(s.sub("roles", name).strings("allow"))
        ids: dict[str, tuple[str, ...]] = {}
        who = s.sub("identities")
        for name, value in who.data.items():
            one = {name: [value] if isinstance(value, str) and value else value}
            ids[str(name)] = tuple(Section(who.source, who.where, one).strings(
                name, describe='a role or a list of roles like ["viewer"]'))
        return cls(roles, ids, frozenset(s.strings("proxies")))

    def _allows(self, role: str, perm: str, read_only: bool) -> bool:
        key = (role, perm, read_only)
        hit = self._seen.get(key)
        if hit is None:
            if len(self._seen) > 4096:  # bounded: permissions come from callers' requests
                self._seen.clear()
            hit = self._seen[key] = self._match(role, perm, read_only)
        return hit

    def _match(self, role: str, perm: str, read_only: bool) -> bool:
        for pat in self.roles.get(role, ()):
            if pat == "@read" and read_only and not perm.startswith("rpc:"):
                return True
            if perm.startswith("rpc:") != pat.startswith("rpc:"):
                continue
            if fnmatch.fnmatchcase(perm, pat):
                return True
        return False

    def allowed(self, caller: Caller, perm: str, *, read_only: bool = False) -> bool:
        """Whether ``caller`` may ``perm`` (``rpc:Invoke`` or an action path)."""
        roles = caller.roles
        key = (roles, caller.key_role, perm, read_only)
        try:
            hit = self._decided.get(key)
        except TypeError:  # roles given as a list: nothing to remember them by
            return self._decide(tuple(roles), caller.key_role, perm, read_only)
        if hit is None:
            if len(self._decided) > 4096:  # bounded: permissions come from callers' requests
                self._decided.clear()
            hit = self._decided[key] = self._decide(roles, caller.key_role, perm, read_only)
        return hit

    def _decide(self, roles: tuple[str, ...], key_role: str | None, perm: str,
                read_only: bool) -> bool:
        if not any(self._allows(r, perm, read_only) for r in roles):
            return False
        return key_role is None or self._allows(key_role, perm, read_only)


class Bucket:
    """A token bucket per identity (refilled on read)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        #: identity -> [tokens, when last refilled]: updated in place (no tuple per call)
        self._state: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str, now: float) -> float:
        """0 when a call may go, else the seconds until one may; ``now``: the caller's
        ``time.monotonic()`` (the guard's, read as it admits the call)."""
        rate = self.rate
        if rate <= 0:
            return 0.0
        with self._lock:
            st = self._state.get(who)
            if st is None:
                st = self._state[who] = [self.burst, now]
            tokens = st[0]
            if now > st[1]:  # another call may have read the clock later and come first
                tokens += (now - st[1]) * rate
                if tokens > self.burst:
                    tokens = self.burst
                st[1] = now
            if tokens >= 1:
                st[0] = tokens - 1
                return 0.0
            st[0] = tokens
            return (1 - tokens) / rate


class JwtVerifier:
    """OAuth2 bearer tokens: signature against a JWKS file, issuer, audience and expiry
    required (PyJWT with ``require``: several JWT libraries accept an expired or
    wrong-audience token unless told to check)."""

    def __init__(self, jwks_file: str, issuer: str, audience: str, leeway: float = 30) -> None:
        import json

        import jwt

        self._jwt = jwt
        data = json.loads(Path(jwks_file).read_text())
        self.keys = jwt.PyJWKSet.from_dict(data)
        self.issuer, self.audience, self.leeway = issuer, audience, leeway

    def subject(self, token: str) -> str:
        """The verified token's subject; raises ValueError with the reason."""
        return str(self.claims(token)["sub"])

    def claims(self, token: str) -> dict[str, Any]:
        """The verified token's claims; raises ValueError with the reason."""
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            keys = [k for k in self.keys.keys if kid is None or k.key_id == kid]
            if not keys:
                raise ValueError("no key for the token's kid")
            last: Exception | None = None
            for k in keys:
                try:
                    claims = jwt.decode(token, k.key, algorithms=[k.algorithm_name],
                                        audience=self.audience, issuer=self.issuer,
                                        leeway=self.leeway,
                                        options={"require": ["exp", "iss", "aud", "sub"]})
                    return dict(claims)
                except jwt.InvalidSignatureError as exc:
                    last = exc
            raise ValueError(f"bad token: {last}")
        except jwt.PyJWTError as exc:
            raise ValueError(f"bad token: {exc}") from None
