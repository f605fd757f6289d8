"""The console page, and the console proxy's hooks wired to rpcd (:func:`install`).

=====================================  ======================================================
GET ``/console/{vm}?mode=view``        Watch: a page with a panel console ticket (single use,
                                       30 s to open, bound to the session and the VM) for
                                       noVNC (``static/console.js``); input is dropped by the
                                       proxy on the server, whatever the browser sends
GET ``/console/{vm}?mode=control``     Control: the same with keyboard, mouse and a
                                       Ctrl-Alt-Del button, after a re-authentication (the
                                       password, at most ``reauth_max_age`` old, as rollback)
POST ``/console/{vm}?mode=control``    the re-authentication (``password``), then back to GET
=====================================  ======================================================

The page says how many others watch the VM and who controls it (:class:`.console.
ActiveConsoles` of this panel process). It offers a console only to a user whose actions
(rpcd's WhoAmI) include ``hv.ticket.create``; rpcd decides again when the console opens.

``app.state.console_upstream(session, vm, mode)`` (:class:`RpcdUpstream`) asks rpcd, with
the session's user token, for ``hv.ticket.create`` (``mode`` view or admin, 30 s) and then
``hv.ticket.use``: the VM's VNC endpoint and a one-time password, which stays in the panel
(the proxy logs into QEMU itself). rpcd audits both calls as ``USER via=panel``.

``app.state.console_audit(event, session)`` (:class:`NodeAudit`): the console's own events
(open, close with mode, duration and the dropped input counts, failures, refusals) go to the
node's audit chain through rpcd ``RecordEvent`` with the session's user token (rpcd records
``USER via=panel``), each fitted to what rpcd accepts (:func:`node_event`). The refusals
before anyone logged in have no token: those stay in the panel's log, where the proxy
writes every event (:mod:`.console` says what happens when rpcd does not record one).

In the lab, each node's VNC listens inside the node's network namespace: with
``DEBVISOR_PANEL_CONSOLE_NETNS`` (``{"node1": "dvl…-node1"}``, set by the lab's panel
service) the upstream is reached through :func:`.lab.forward` (``app.state.console_netns``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import grpc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .. import log
from ..rpcd.client import record_event
from ..rpcd.events import MAX_COUNTERS
from .console import Upstream, active_of, tickets_of
from .lab import NETNS_ENV
from .rpc import RpcFailure, SessionEnded, _mapped
from .security import form_of
from .sessions import Session, current

#: VM names as hv accepts them (debvisor_libvirt.nodes.VM_NAME_RE)
VM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
MODES = ("view", "control")
#: hv's ticket mode for each console mode
HV_MODE = {"view": "view", "control": "admin"}
#: seconds the hv ticket stays valid (the panel uses it at once)
HV_TICKET_TTL = 30
#: the action that opens a console (what a user must be allowed to run)
TICKET_ACTION = "hv.ticket.create"
_NS_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ConsoleRefused(Exception):
    """rpcd gave no console (its reason in the message)."""


def netns_from_env() -> dict[str, str]:
    """Node -> network namespace from ``DEBVISOR_PANEL_CONSOLE_NETNS`` (lab only)."""
    raw = os.environ.get(NETNS_ENV, "")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        log.warn(f"panel: {NETNS_ENV} is not a JSON object; ignored")
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()
            if isinstance(v, str) and _NS_RE.fullmatch(v)}


class RpcdUpstream:
    """``console_upstream``: the VM's VNC endpoint and a one-time password from rpcd."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, session: Session, vm: str, mode: str) -> Upstream:
        rpc = self.app.state.rpc
        made = rpc.run(session.token, TICKET_ACTION, json.dumps(
            {"vm": vm, "mode": HV_MODE[mode], "ttl": HV_TICKET_TTL}), yes=True)
        t = made.result if isinstance(made.result, dict) else {}
        if made.code or not t.get("token"):
            raise ConsoleRefused(made.message or "rpcd issued no console ticket")
        used = rpc.run(session.token, "hv.ticket.use", json.dumps(
            {"token": t["token"], "vm": vm}), yes=True)
        u = used.result if isinstance(used.result, dict) else {}
        if used.code or not u.get("endpoint"):
            raise ConsoleRefused(used.message or "rpcd gave no console endpoint")
        host, _, port = str(u["endpoint"]).rpartition(":")
        host = host.strip("[]")
        ns = (getattr(self.app.state, "console_netns", None) or {}).get(str(t.get("node")))
        if ns:
            from .lab import forward

            host, fport = forward(ns, host, int(port))
            return Upstream(host, fport, u.get("password"))
        return Upstream(host, int(port), u.get("password"))


#: seconds a RecordEvent may take (rpcd appends and syncs the chain)
AUDIT_TIMEOUT = 5.0
_COUNTERS = ("dropped", "forwarded", "stripped")


class AuditNotRecorded(Exception):
    """rpcd did not record a console event (its reason in the message)."""


def _address(value: str, *, port: bool = False) -> str:
    """An address as rpcd's event fields take it (they start with a letter or digit): an
    IPv6 address written out in full (``0000:…:0001``), with ``:PORT`` when ``port``."""
    host, p = value, ""
    if port:
        host, _, p = value.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return value
    if ip.version != 6:
        return value
    return ip.exploded + (f":{p}" if port else "")


def node_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """A proxy event fitted to rpcd's event fields (:mod:`debvisor_core.rpcd.events`):
    IPv6 addresses written out, the reason printable and at most 200 characters, at most
    32 counters per counter field (the smallest summed as ``other``)."""
    out = dict(event)
    if isinstance(out.get("client"), str):
        out["client"] = _address(out["client"])
    if isinstance(out.get("upstream"), str):
        out["upstream"] = _address(out["upstream"], port=True)
    if isinstance(out.get("reason"), str):
        out["reason"] = "".join(c if c.isprintable() else " " for c in out["reason"])[:200]
    for name in _COUNTERS:
        counts = out.get(name)
        if isinstance(counts, dict) and len(counts) > MAX_COUNTERS:
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            keep = dict(ranked[:MAX_COUNTERS - 1])
            out[name] = {**keep, "other": sum(n for _, n in ranked[MAX_COUNTERS - 1:])}
    return out


class NodeAudit:
    """``console_audit``: a console event in the node's audit chain (rpcd ``RecordEvent``
    over the panel's proxy certificate with the session's user token). Nothing for no
    session (a refusal before login). Blocking (the proxy runs it in a thread); raises
    :class:`AuditNotRecorded` with rpcd's reason in one sentence."""

    def __init__(self, app: Any, timeout: float = AUDIT_TIMEOUT) -> None:
        self.app = app
        self.timeout = timeout

    def __call__(self, event: Mapping[str, Any], session: Session | None) -> None:
        if session is None:
            return
        token = getattr(session, "token", None)
        if not token:
            raise AuditNotRecorded("the session carries no rpcd user token")
        try:
            record_event(self.app.state.rpc.stub(), token, node_event(event),
                         timeout=self.timeout)
        except grpc.RpcError as exc:
            raise AuditNotRecorded(_mapped(exc, "console audit").message) from None
        except RpcFailure as exc:  # no channel (the panel's certificate files)
            raise AuditNotRecorded(exc.message) from None


def _watchers(app: Any, vm: str) -> tuple[int, list[str]]:
    """(how many watch ``vm`` now, who controls it) in this panel."""
    open_ = active_of(app).of_vm(vm)
    watching = sum(1 for c in open_ if c.mode != "control")
    return watching, sorted({c.user for c in open_ if c.mode == "control"})


async def console_page(request: Request) -> Response:
    app = request.app
    panel = app.state.panel
    s = current(request)
    if s is None:  # the session middleware lets no such request through
        raise HTTPException(401, "log in first")
    vm = request.path_params["vm"]
    if not VM_RE.fullmatch(vm):
        raise HTTPException(404, f"no VM {vm[:64]!r}")
    mode = request.query_params.get("mode", "view")
    if mode not in MODES:
        raise HTTPException(400, "mode must be view or control")
    watching, controllers = _watchers(app, vm)
    ctx: dict[str, Any] = {
        "vm": vm, "vm_q": quote(vm, safe=""), "mode": mode, "ticket": "", "error": "",
        "reauth_needed": False, "watching": watching, "controllers": controllers,
        "can_open": True,
        "reauth_minutes": int(panel.settings.reauth_max_age // 60),
    }
    if TICKET_ACTION not in await panel.allowed(s):
        ctx["error"] = (f"Your role cannot open consoles: {TICKET_ACTION} is not among the "
                        f"actions rpcd lets {s.user} run (rpcd would answer "
                        "PERMISSION_DENIED).")
        ctx["can_open"] = False
        return await panel.page(request, "console.html", ctx, 403)
    if mode == "control" and not s.reauth_fresh(panel.clock(), panel.settings.reauth_max_age):
        if request.method == "POST":
            return await _reauth(request, s, ctx)
        ctx["reauth_needed"] = True
        return await panel.page(request, "console.html", ctx)
    if request.method == "POST":  # already fresh: nothing to do but show the console
        return RedirectResponse(f"/console/{ctx['vm_q']}?mode={mode}", 303)
    ctx["ticket"] = tickets_of(app).issue(s.user, vm, mode, session=s.key)
    return await panel.page(request, "console.html", ctx)


async def _reauth(request: Request, s: Session, ctx: dict[str, Any]) -> Response:
    panel = request.app.state.panel
    password = form_of(request).get("password") or ""
    ctx["reauth_needed"] = True
    if s.method == "oidc":
        ctx["error"] = ("Re-authenticate with your identity provider to take control: control "
                        f"needs a login at most {ctx['reauth_minutes']} minutes old.")
        return await panel.page(request, "console.html", ctx, 401)
    if not password:
        ctx["error"] = ("Re-enter your password to take control: control needs a login at "
                        f"most {ctx['reauth_minutes']} minutes old.")
        return await panel.page(request, "console.html", ctx, 401)
    try:
        again = await panel.call(panel.rpc.login, s.user, password)
    except SessionEnded:
        ctx["error"] = "Wrong password: the console was not opened."
        return await panel.page(request, "console.html", ctx, 401)
    with contextlib.suppress(RpcFailure):
        await panel.call(panel.rpc.logout, again.token)  # only the proof was needed
    s.reauth_at = panel.clock()
    log.info(f"panel: {s.user} re-authenticated to control the console of {ctx['vm']}")
    return RedirectResponse(f"/console/{ctx['vm_q']}?mode=control", 303)


def install(app: Any) -> None:
    """Mount the console page and wire the console proxy's hooks to rpcd."""
    app.router.routes.append(Route("/console/{vm}", console_page, methods=["GET", "POST"],
                                   name="console_page"))
    app.state.console_upstream = RpcdUpstream(app)
    app.state.console_audit = NodeAudit(app)
    app.state.console_netns = netns_from_env()
