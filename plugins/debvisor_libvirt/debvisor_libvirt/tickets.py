"""Console tickets: short-lived, single-use, HMAC-signed tokens for a VM's VNC console.

Token: ``dvt1.<payload>.<signature>`` (base64url), payload ``{vm, node, mode, iat, exp,
jti, by}``, signature HMAC-SHA256 with the key from an owner-only file
(``[hv.tickets] key_file``, default ``<state>/plugins/hv/ticket.key``, created by the
first ``ticket create``; ``verify`` and ``use`` never create it).

``use`` consumes a ticket once and sets a one-time VNC password on the VM that stops
working ``[hv.tickets] password_ttl`` seconds later (default 60) or when the ticket
expires, whichever comes first: the password is for connecting now, not for the whole TTL.

Single use: the claim is one file per ticket id, created with ``O_EXCL`` (atomic, also on
NFS) in the ledger directory, ``[hv.tickets] ledger_dir`` (default
``<state>/plugins/hv/tickets-used.d``). Admin hosts that share ``key_file`` must share
``ledger_dir`` too (shared storage): otherwise a ticket can be used once per host.

View-only tickets exist only behind a console proxy that drops input: plain VNC has one
password, which grants keyboard and mouse, so a ``view`` ticket handed to a person would be
full control in disguise. The web panel's proxy (debvisor_core.panel.console) parses every
client message and forwards no input in view mode; a ``view`` ticket is therefore created
and used only for a call that debvisor-rpcd received through a certificate listed in
``[rpcd] proxies`` (the caller it seals reads ``USER via=PROXY``, see :func:`proxied`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from debvisor_core.context import Context
from debvisor_core.errors import BadInput
from debvisor_core.identity import operator
from debvisor_core.output import iso_utc
from debvisor_core.secrets import read_secret

PREFIX = "dvt1"
MODES = ("view", "admin")
DEFAULT_PASSWORD_TTL = 60
VIEW_REFUSED = ("view-only console tickets are refused: plain VNC has a single password that "
                "grants keyboard and mouse, so a view ticket would give full control; "
                "issue the ticket with --mode admin, or watch through the web panel, whose "
                "console proxy drops input")
_JTI = re.compile(r"[0-9a-f]{16}")
_LEGACY_LEDGER = "tickets-used"


def _table(ctx: Context) -> dict[str, Any]:
    from .hvconfig import table

    return table(ctx, "tickets")


def _configured_key_file(ctx: Context) -> str | None:
    from .hvconfig import string

    return string(ctx, "[hv.tickets]", _table(ctx), "key_file")


def key_path(ctx: Context) -> Path:
    configured = _configured_key_file(ctx)
    return Path(configured) if configured else ctx.plugin_state("hv") / "ticket.key"


def password_ttl(ctx: Context) -> int:
    """Seconds a ticket's VNC password stays valid (``[hv.tickets] password_ttl``)."""
    from debvisor_core.settings import Section

    return int(Section.at(ctx, "[hv.tickets]", _table(ctx)).number(
        "password_ttl", DEFAULT_PASSWORD_TTL, minimum=10, maximum=3600, integer=True,
        unit="seconds"))


def _create_key(path: Path) -> bool:
    """Create ``path`` with a new random key unless it exists (race-free: a private
    ``O_EXCL`` file, fsynced, hard-linked into place); True if this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(32).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False  # another process won: its key is the key
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _key(ctx: Context, *, create: bool = False) -> bytes | None:
    """The signing key; None when there is none yet and ``create`` is False (a host that
    never issued a ticket). A configured ``key_file`` is never created."""
    path = key_path(ctx)
    configured = _configured_key_file(ctx)
    if not os.path.lexists(path):
        if configured:
            raise BadInput(f"ticket key file {path} ([hv.tickets] key_file) does not exist")
        if not create:
            return None
        if _create_key(path):
            ctx.audit("created", what="hv ticket key", path=str(path))
    key = read_secret(path, "ticket key file").strip()
    if len(key) < 16:
        raise BadInput(f"ticket key file {path} holds less than 16 bytes")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def proxied(ctx: Context) -> bool:
    """Whether this run serves an rpcd call that came through a configured proxy (the
    panel), as the caller rpcd sealed says: only such a caller gets a view ticket."""
    from debvisor_core.audit import rpc_caller

    label = rpc_caller().get("caller", "")
    _, sep, via = label.partition(" via=")
    proxies = ctx.section("rpcd").get("proxies") or []
    return bool(sep) and via in [str(p) for p in proxies]


def create(ctx: Context, vm: str, node: str, ttl: int, mode: str) -> dict[str, Any]:
    if mode != "admin" and not proxied(ctx):
        raise BadInput(VIEW_REFUSED)
    now = int(time.time())
    payload = {"vm": vm, "node": node, "mode": mode, "iat": now, "exp": now + ttl,
               "jti": secrets.token_hex(8), "by": operator()}
    key = _key(ctx, create=True)
    assert key is not None
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    sig = _b64(hmac.new(key, f"{PREFIX}.{body}".encode(), hashlib.sha256).digest())
    return {"token": f"{PREFIX}.{body}.{sig}", **payload}


# --- the used-ticket ledger ---------------------------------------------------------------


def ledger_dir(ctx: Context) -> Path:
    """Where used tickets are claimed: ``[hv.tickets] ledger_dir`` (must exist: it is
    meant to be shared storage), else the plugin's state directory."""
    from .hvconfig import config_error, string

    configured = string(ctx, "[hv.tickets]", _table(ctx), "ledger_dir")
    if configured:
        path = Path(configured)
        if not path.is_dir():
            raise config_error(ctx, "[hv.tickets] ledger_dir",
                               f"{configured} is not a directory (mount the shared storage "
                               "it lives on, or create it)")
        return path
    path = ctx.plugin_state("hv") / "tickets-used.d"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _legacy_used(ctx: Context, jti: str) -> bool:
    """Whether the ledger file of earlier versions lists ``jti`` (bad lines are skipped)."""
    path = ctx.state_dir / "plugins" / "hv" / _LEGACY_LEDGER
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return any(ln.split()[:1] == [jti] for ln in text.splitlines())


def _is_used(ctx: Context, jti: str) -> bool:
    return os.path.lexists(ledger_dir(ctx) / jti) or _legacy_used(ctx, jti)


def consume(ctx: Context, claims: dict[str, Any]) -> bool:
    """Claim the ticket: create its ledger entry with ``O_EXCL``; False if it exists
    (used before, here or on any host sharing the ledger)."""
    jti = claims["jti"]
    if not _JTI.fullmatch(jti) or _legacy_used(ctx, jti):
        return False
    directory = ledger_dir(ctx)
    try:
        fd = os.open(directory / jti, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{int(claims['exp'])} {socket.gethostname()} {operator()}\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(directory)
    _prune(directory)
    return True


def release(ctx: Context, jti: str) -> None:
    """Un-consume a ticket whose use failed before anything was granted."""
    if _JTI.fullmatch(jti):
        (ledger_dir(ctx) / jti).unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _prune(directory: Path, *, grace: float = 300.0) -> None:
    """Forget entries of expired tickets (best effort; an unreadable entry is judged by
    its age, kept for a day plus ``grace``: the longest a ticket lives)."""
    now = time.time()
    for p in directory.iterdir():
        if not _JTI.fullmatch(p.name):
            continue
        try:
            first = p.read_text(errors="replace").split()[:1]
            exp = float(first[0]) if first and first[0].isdigit() else p.stat().st_mtime + 86400
            if exp + grace < now:
                p.unlink(missing_ok=True)
        except OSError:
            continue


# --- verification -------------------------------------------------------------------------


def _claims_ok(claims: Any) -> bool:
    return (isinstance(claims, dict)
            and all(isinstance(claims.get(k), str) for k in ("vm", "node", "mode", "jti"))
            and all(isinstance(claims.get(k), int) and not isinstance(claims.get(k), bool)
                    for k in ("iat", "exp"))
            and claims["mode"] in MODES and bool(_JTI.fullmatch(claims["jti"])))


def verify(ctx: Context, token: str, *, vm: str | None = None,
           mode: str | None = None) -> dict[str, Any]:
    """``status``: valid, expired, forged, wrong-scope or used (plus the claims if signed).

    Read-only: a host without a key (it never issued a ticket) answers "forged"."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        return {"status": "forged", "reason": "not a DebVisor console ticket"}
    key = _key(ctx)
    if key is None:
        return {"status": "forged", "reason": "no ticket key exists on this host, so no ticket "
                "signed here can be valid (set [hv.tickets] key_file to the shared key)"}
    expected = hmac.new(key, f"{PREFIX}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        good = hmac.compare_digest(expected, _unb64(parts[2]))
        claims = json.loads(_unb64(parts[1])) if good else None
    except (ValueError, UnicodeDecodeError):
        good, claims = False, None
    if not good or not _claims_ok(claims):
        return {"status": "forged", "reason": "signature does not match this cluster's key"}
    assert isinstance(claims, dict)
    out: dict[str, Any] = {"claims": claims}
    if time.time() >= claims["exp"]:
        return {**out, "status": "expired", "reason": f"expired at {_iso(claims['exp'])}"}
    if vm is not None and claims["vm"] != vm:
        return {**out, "status": "wrong-scope", "reason": f"ticket is for {claims['vm']}, not {vm}"}
    if mode == "admin" and claims["mode"] != "admin":
        return {**out, "status": "wrong-scope", "reason": "ticket is view-only, admin was asked"}
    if _is_used(ctx, claims["jti"]):
        return {**out, "status": "used", "reason": "ticket was already used"}
    return {**out, "status": "valid", "reason": f"valid until {_iso(claims['exp'])}"}


def read_token(token: str) -> str:
    """The token itself: ``-`` reads it from the first line of stdin (keeps it out of argv,
    the process list and shell history)."""
    import sys

    if token != "-":
        return token
    line = sys.stdin.readline(16384).strip()
    if not line:
        raise BadInput("no ticket on standard input (`ticket use -` reads it from there)")
    return line


def password_valid_to(ctx: Context, claims: dict[str, Any], now: float | None = None) -> int:
    """When the ticket's VNC password stops working: ``password_ttl`` from now, never
    after the ticket expires."""
    now = time.time() if now is None else now
    return int(min(claims["exp"], now + password_ttl(ctx)))


def set_vnc_password(dom: Any, password: str, valid_to: int) -> None:
    """Give the running VM's VNC a password that stops working at ``valid_to``.

    QEMU accepts a new password only if the VNC server started with one: set one with
    `hv vnc target VM ... --password-file F` (applies at the next start).
    """
    from debvisor_core.errors import DebvisorError

    from .nodes import lv

    libvirt = lv()
    root = ET.fromstring(dom.XMLDesc(0))
    g = root.find("devices/graphics[@type='vnc']")
    if g is None:
        raise BadInput(f"{dom.name()} has no VNC console")
    g.set("passwd", password)
    g.set("passwdValidTo", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(valid_to)))
    try:
        dom.updateDeviceFlags(ET.tostring(g, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as exc:
        raise DebvisorError(
            f"cannot set a VNC password on {dom.name()}: {exc.get_error_message()}",
            hint="the VNC console must start password-protected: "
                 "`hvctl vnc target VM --password-file F`, then restart the VM") from None


def _iso(t: float) -> str:
    return iso_utc(t)
