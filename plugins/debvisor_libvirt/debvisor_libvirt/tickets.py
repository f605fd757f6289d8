"""Console tickets: short-lived, single-use, HMAC-signed tokens for a VM's VNC console.

Token: ``dvt1.<payload>.<signature>`` (base64url), payload ``{vm, node, mode, iat, exp,
jti, by}``, signature HMAC-SHA256 with the key from an owner-only file
(``[hv.tickets] key_file``, default ``<state>/plugins/hv/ticket.key``, created on first
use). ``use`` consumes a ticket once: it records its id and sets a one-time VNC password
on the VM that expires with the ticket.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from debvisor_core.context import Context
from debvisor_core.errors import BadInput
from debvisor_core.identity import operator
from debvisor_core.output import iso_utc
from debvisor_core.secrets import read_secret, write_secret

PREFIX = "dvt1"
MODES = ("view", "admin")


def _configured_key_file(ctx: Context) -> str | None:
    from .hvconfig import string, table

    return string(ctx, "[hv.tickets]", table(ctx, "tickets"), "key_file")


def key_path(ctx: Context) -> Path:
    configured = _configured_key_file(ctx)
    return Path(configured) if configured else ctx.plugin_state("hv") / "ticket.key"


def _key(ctx: Context) -> bytes:
    path = key_path(ctx)
    if not path.exists() and not _configured_key_file(ctx):
        write_secret(path, secrets.token_bytes(32))
        ctx.audit("created", what="hv ticket key", path=str(path))
    key = read_secret(path, "ticket key file").strip()
    if len(key) < 16:
        raise BadInput(f"ticket key file {path} holds less than 16 bytes")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def create(ctx: Context, vm: str, node: str, ttl: int, mode: str) -> dict[str, Any]:
    now = int(time.time())
    payload = {"vm": vm, "node": node, "mode": mode, "iat": now, "exp": now + ttl,
               "jti": secrets.token_hex(8), "by": operator()}
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    sig = _b64(hmac.new(_key(ctx), f"{PREFIX}.{body}".encode(), hashlib.sha256).digest())
    return {"token": f"{PREFIX}.{body}.{sig}", **payload}


def _used_path(ctx: Context) -> Path:
    return ctx.plugin_state("hv") / "tickets-used"


def _is_used(ctx: Context, jti: str) -> bool:
    path = _used_path(ctx)
    return path.exists() and any(ln.split()[:1] == [jti] for ln in path.read_text().splitlines())


def verify(ctx: Context, token: str, *, vm: str | None = None,
           mode: str | None = None) -> dict[str, Any]:
    """``status``: valid, expired, forged, wrong-scope or used (plus the claims if signed)."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        return {"status": "forged", "reason": "not a DebVisor console ticket"}
    expected = hmac.new(_key(ctx), f"{PREFIX}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        good = hmac.compare_digest(expected, _unb64(parts[2]))
        claims = json.loads(_unb64(parts[1])) if good else None
    except (ValueError, UnicodeDecodeError):
        good, claims = False, None
    if not good or not isinstance(claims, dict):
        return {"status": "forged", "reason": "signature does not match this cluster's key"}
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


def consume(ctx: Context, claims: dict[str, Any]) -> bool:
    """Mark the ticket used; False if another process consumed it first."""
    path = _used_path(ctx)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "r+") as f:
            now = time.time()
            lines = [ln for ln in f.read().splitlines() if ln.split()[1:2]
                     and float(ln.split()[1]) > now]  # forget expired ones
            if any(ln.split()[0] == claims["jti"] for ln in lines):
                return False
            lines.append(f"{claims['jti']} {claims['exp']}")
            f.seek(0)
            f.truncate()
            f.write("".join(ln + "\n" for ln in lines))
            f.flush()
            os.fsync(f.fileno())
        return True
    finally:
        os.close(fd)


def release(ctx: Context, jti: str) -> None:
    """Un-consume a ticket whose use failed before anything was granted."""
    path = _used_path(ctx)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "r+") as f:
            lines = [ln for ln in f.read().splitlines() if ln.split()[:1] != [jti]]
            f.seek(0)
            f.truncate()
            f.write("".join(ln + "\n" for ln in lines))
    finally:
        os.close(fd)


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
