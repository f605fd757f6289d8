"""API keys of debvisor-rpcd: ``dvk_ID.SECRET``, stored as HMAC-SHA256 under a server key.

The store (``STATE/rpcd/api-keys.json``, 0600) keeps per key id its owner (an identity),
role, expiry and ``HMAC(server key, secret)``; the secret itself is shown once, when the
key is created. Checking a key is a dictionary lookup and one HMAC (about 2 µs): the
secrets are 160 random bits, so a slow password hash would buy nothing and cap a core at
a few dozen calls a second. The server key (``STATE/keys/rpcd-api.key``) lives apart
from the store: a leaked store alone does not let anyone test guesses. The daemon
remembers, per key record as last read, the SHA-256 of the secret it verified (not the
secret): a key used again costs a plain hash instead of the HMAC; a changed store drops
them all, and revocation and expiry are checked on every call all the same.
"""

from __future__ import annotations

import hashlib
import hmac
import os
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

KEY_RE = re.compile(r"dvk_([a-z0-9]{8})\.([A-Za-z0-9_-]{27})")


def store_path() -> Path:
    from ..config import state_dir

    return state_dir() / "rpcd" / "api-keys.json"


def _server_key() -> bytes:
    from ..redact import key_path, load_key

    return load_key(key_path("rpcd-api"), "rpcd API-key secret")


def _mac(secret: str) -> str:
    return hmac.new(_server_key(), secret.encode(), hashlib.sha256).hexdigest()


def load() -> dict[str, Any]:
    import json

    from ..secrets import read_secret

    p = store_path()
    if not p.exists():
        return {}
    data = json.loads(read_secret(p, "API-key store", max_bytes=16 << 20))
    return data if isinstance(data, dict) else {}


def create(owner: str, role: str, ttl_s: float | None, note: str = "") -> tuple[str, dict[str, Any]]:
    """A new key for ``owner`` narrowed to ``role``: (the key, shown once; its record)."""
    from ..statefile import update_json

    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
    secret = secrets.token_urlsafe(20)
    now = time.time()
    rec = {"id": key_id, "owner": owner, "role": role, "created": now, "note": note,
           "expires": now + ttl_s if ttl_s else None, "revoked": None, "mac": _mac(secret)}

    def add(d: dict[str, Any]) -> None:
        d[key_id] = rec

    store_path().parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    update_json(store_path(), add)  # a 0600 file, replaced atomically under a lock
    return f"dvk_{key_id}.{secret}", rec


def revoke(key_id: str) -> dict[str, Any]:
    from ..statefile import update_json

    found: dict[str, Any] = {}

    def change(d: dict[str, Any]) -> None:
        if key_id not in d:
            raise BadInput(f"no API key {key_id[:20]!r}; see `debvisor rpcd key list`")
        d[key_id]["revoked"] = d[key_id].get("revoked") or time.time()
        found.update(d[key_id])

    update_json(store_path(), change)
    return found


def public(rec: dict[str, Any]) -> dict[str, Any]:
    """A key's record without its MAC (what `key list` shows)."""
    return {k: v for k, v in rec.items() if k != "mac"}


@dataclass
class KeyCheck:
    """The outcome of checking a presented key."""

    ok: bool
    key_id: str | None = None
    owner: str | None = None
    role: str | None = None
    why: str = ""
    #: when the key expires (a positive check holds until then, or until the store changes)
    expires: float | None = None


class KeyStore:
    """The store as the daemon reads it: re-read when the file changed, so a revoked key is
    refused at its next use. With a :class:`~.watch.DirWatch` of the store's directory a
    check makes no system call while nothing there changed; without one it stats."""

    def __init__(self, watch: DirWatch | None = None) -> None:
        self._watch = watch
        self._seen: int | None = None  # the watch's generation the keys were checked at
        self._mtime: tuple[int, int, int] | None = None  # the file read: inode, mtime, size
        self._reading = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._macs: dict[str, bytes] = {}  # key id -> its stored MAC, as bytes
        #: key id -> (its record as read, SHA-256 of the secret verified against it, the
        #: positive check once made): valid while that very record is the one read (a
        #: reload makes new ones)
        self._verified: dict[str, tuple[Any, bytes, KeyCheck | None]] = {}
        self._server_key: bytes | None = None
        self._path: str | None = None  # the state dir is fixed for a daemon's life
        self._loads = 0  # how many times the keys were read

    def _refresh(self) -> None:
        w = self._watch
        if w is not None and w.ok and w.generation == self._seen:
            return
        with self._reading:  # one reader at a time: an older read never lands after a newer
            gen = w.generation if w is not None and w.ok else None
            if gen is not None and gen == self._seen:
                return
            self._reload()
            if gen is not None:
                self._seen = gen  # read before the file: a change meanwhile moves it again

    def _reload(self) -> None:
        if self._path is None:
            self._path = str(store_path())
        try:
            st = os.stat(self._path)
            m: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            m = None
        if m != self._mtime:  # a replaced file is a new inode, even within one clock tick
            self._keys = load() if m is not None else {}
            self._macs, self._verified = {}, {}
            self._loads += 1
            for kid, rec in self._keys.items():
                try:
                    self._macs[kid] = bytes.fromhex(str(rec.get("mac", "")))
                except (ValueError, AttributeError):
                    continue  # a damaged record: its key is refused as a wrong secret
            self._mtime = m

    def version(self) -> int:
        """A number that moves whenever the keys are read again — the store changed: a
        check made at one version holds while it does not move (and the key is unexpired)."""
        self._refresh()
        return self._loads

    def check(self, presented: str) -> KeyCheck:
        """The key's owner and role, or why it is refused (malformed, unknown, wrong
        secret, revoked, expired). A positive check is shared: do not change it."""
        m = KEY_RE.fullmatch(presented.strip())
        if not m:
            return KeyCheck(False, why="malformed API key")
        self._refresh()
        kid = m[1]
        rec = self._keys.get(kid)
        if rec is None:
            return KeyCheck(False, why="unknown API key")
        secret = m[2].encode()
        seen = hashlib.sha256(secret).digest()
        known = self._verified.get(kid)
        if known is None or known[0] is not rec or not hmac.compare_digest(known[1], seen):
            if self._server_key is None:
                self._server_key = _server_key()
            mac = hmac.digest(self._server_key, secret, "sha256")
            if not hmac.compare_digest(mac, self._macs.get(kid, b"")):
                return KeyCheck(False, key_id=kid, why="wrong API key secret")
            known = self._verified[kid] = (rec, seen, None)
        if rec.get("revoked"):
            return KeyCheck(False, key_id=kid, why="API key revoked")
        if rec.get("expires") and rec["expires"] < time.time():
            return KeyCheck(False, key_id=kid, why="API key expired")
        ok = known[2]
        if ok is None:
            ok = KeyCheck(True, key_id=kid, owner=rec["owner"], role=rec["role"],
                          expires=rec.get("expires") or None)
            self._verified[kid] = (rec, seen, ok)
        return ok
