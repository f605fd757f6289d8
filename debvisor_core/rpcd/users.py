"""People who log in to debvisor-rpcd (the web panel's users) and their sessions.

Users (``STATE/rpcd/users.json``, 0600, managed with `debvisor rpcd user add|list|remove`)
have roles and a password stored as scrypt (n=2^14, r=8, p=1, a 16-byte salt): a slow
hash, unlike API keys, because people choose passwords. ``Login`` exchanges a password —
or an OIDC ID token whose issuer, audience, expiry and signature (JWKS) are checked — for a
session token ``dvs_…``: held only as its SHA-256 in the daemon's memory, valid for
``[rpcd] session_ttl`` seconds (15 min) after the last call that used it (renewed only by
activity), never longer than ``session_max`` (12 h), revoked by ``Logout`` or when the
user is removed, and gone when the daemon restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    from .watch import DirWatch

NAME_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,63}")
TOKEN_RE = re.compile(r"dvs_[A-Za-z0-9_-]{43}")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def store_path() -> Path:
    from ..config import state_dir

    return state_dir() / "rpcd" / "users.json"


def _hash(password: str, salt: bytes) -> str:
    return hashlib.scrypt(password.encode(), salt=salt, maxmem=64 << 20, **_SCRYPT).hex()


def load() -> dict[str, Any]:
    import json

    from ..secrets import read_secret

    p = store_path()
    if not p.exists():
        return {}
    data = json.loads(read_secret(p, "rpcd user store", max_bytes=16 << 20))
    return data if isinstance(data, dict) else {}


_cache: dict[str, Any] = {"key": None, "data": {}, "gen": None}


def current(watch: DirWatch | None = None) -> dict[str, Any]:
    """The store as it is on disk now, read again only when the file changed (the daemon
    asks on every call made with a session token: a removed user's session ends). With a
    :class:`~.watch.DirWatch` of the store's directory, no system call while nothing there
    changed."""
    if watch is not None and watch.ok:
        gen = watch.generation
        if gen == _cache["gen"] and _cache["key"] is not None:
            data0: dict[str, Any] = _cache["data"]
            return data0
        _cache["gen"] = gen  # before reading: a change while we read moves it again
    p = store_path()
    try:
        st = p.stat()
        key: Any = (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        key = None
    if key != _cache["key"]:
        _cache["data"] = load() if key is not None else {}
        _cache["key"] = key
    data: dict[str, Any] = _cache["data"]
    return data


def add(name: str, password: str, roles: list[str]) -> dict[str, Any]:
    from ..statefile import update_json
    from ..timefmt import iso_utc

    if not NAME_RE.fullmatch(name):
        raise BadInput(f"user name {name[:64]!r}: lower-case letters, digits, '_', '.', '-'")
    if len(password) < 12:
        raise BadInput("the password must have at least 12 characters")
    if not roles:
        raise BadInput("give the user at least one role (--role)")
    salt = secrets.token_bytes(16)
    rec = {"salt": salt.hex(), "hash": _hash(password, salt), "roles": roles,
           "created": iso_utc()}

    def change(data: dict[str, Any]) -> None:
        data[name] = rec

    update_json(store_path(), change)  # a 0600 file, replaced atomically under a lock
    return {"name": name, "roles": roles, "created": rec["created"]}


def remove(name: str) -> bool:
    from ..statefile import update_json

    found = False

    def change(data: dict[str, Any]) -> None:
        nonlocal found
        found = data.pop(name, None) is not None

    update_json(store_path(), change)
    return found


def listing() -> list[dict[str, Any]]:
    return [{"name": n, "roles": r.get("roles", []), "created": r.get("created")}
            for n, r in sorted(load().items())]


_DUMMY_SALT = bytes(16)


def check_password(name: str, password: str) -> list[str] | None:
    """The user's roles if the password is right, else None; an unknown user costs the
    same hash, so the answer's timing does not tell who exists."""
    rec = load().get(name) if NAME_RE.fullmatch(name) else None
    salt = bytes.fromhex(rec["salt"]) if rec else _DUMMY_SALT
    got = _hash(password, salt)
    if rec is None or not hmac.compare_digest(got, str(rec.get("hash", ""))):
        return None
    return [str(r) for r in rec.get("roles") or []]


@dataclass
class Session:
    user: str
    roles: tuple[str, ...]
    via: str
    method: str  # password | oidc
    started: float
    expires: float


class Sessions:
    """The daemon's sessions, by the SHA-256 of their token."""

    def __init__(self, ttl: float = 900.0, max_lifetime: float = 12 * 3600.0) -> None:
        self.ttl, self.max_lifetime = ttl, max_lifetime
        self._by_hash: dict[str, Session] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def issue(self, user: str, roles: list[str], via: str, method: str) -> tuple[str, Session]:
        token = "dvs_" + secrets.token_urlsafe(32)
        now = time.time()
        s = Session(user, tuple(roles), via, method, now, now + self.ttl)
        with self._lock:
            self._by_hash[self._key(token)] = s
        return token, s

    def check(self, token: str) -> Session | None:
        """The live session of ``token`` (its expiry pushed on: this is activity), or None."""
        if not TOKEN_RE.fullmatch(token):
            return None
        now = time.time()
        with self._lock:
            key = self._key(token)
            s = self._by_hash.get(key)
            if s is None:
                return None
            if now > s.expires or now > s.started + self.max_lifetime:
                del self._by_hash[key]
                return None
            s.expires = min(now + self.ttl, s.started + self.max_lifetime)
            return s

    def revoke(self, token: str) -> bool:
        with self._lock:
            return self._by_hash.pop(self._key(token), None) is not None

    def revoke_user(self, user: str) -> int:
        with self._lock:
            gone = [k for k, s in self._by_hash.items() if s.user == user]
            for k in gone:
                del self._by_hash[k]
            return len(gone)
