"""The panel's Starlette application: server-rendered pages over rpcd.

Every page is one or a few rpcd calls made with the session's user token (:mod:`.rpc`);
what a user may do is what rpcd says (WhoAmI) and rpcd refuses what they may not, whatever
the panel shows. Routes:

=============================  =============================================================
GET/POST ``/login``            the login form (rpcd ``Login``), with why the last session ended
GET/POST ``/login/sso``, ``/login/oidc``
                               log in with SSO (:mod:`.oidc`: OIDC, the ID token to rpcd)
POST ``/logout``               end the session here and in rpcd
GET ``/``                      overview: health (loaded after the page), maintenance, running
                               operations (live over ``/events``), the latest audit events
GET ``/ops``, ``/ops/{id}``    the journal: list, and one operation with its undo plan and,
                               when interrupted or paused, its resume plan
POST ``/ops/{id}/rollback``    roll back after re-authentication (password at most 5 min old,
                               or a fresh SSO login for an SSO user)
POST ``/ops/{id}/resume``      resume (``ops.resume`` through rpcd) the same way, as a live task
GET ``/audit``                 the audit log filtered, with the chain's verify result
GET ``/audit.jsonl``           the same records as JSON lines (a download)
GET ``/vms``, ``/vms/…``       the VM list, plan-then-apply, migrate, and live tasks
``/tasks/…``                   (:mod:`.vms`) — only when the node has the hv actions
GET ``/ceph``, ``/dns``, …     the Ceph and DNS pages (:mod:`.cephpage`, :mod:`.dnspage`),
                               each only when the node has its plugin's actions
GET ``/events``                server-sent events: one stream per tab, never activity: the
                               live tasks (:mod:`.live`, ``id:`` = the hub's sequence, so a
                               reconnect resumes), the journal's running operations, the
                               idle warning, the session's end
``/static``                    CSS and JS (the vendored htmx and SSE extension included)
=============================  =============================================================

The console's routes (:mod:`.console`, a WebSocket) are mounted when that module exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .. import log
from ..output import human_bytes, human_duration
from . import cephpage, dnspage, oidc
from . import rpc as rpcmod
from .live import Hub
from .rpc import Refused, Rpcd, RpcFailure, SessionEnded, collect
from .security import CsrfMiddleware, SecurityMiddleware, form_of, security_headers
from .sessions import (
    COOKIE,
    LOGIN_COOKIE,
    REASONS,
    Session,
    SessionMiddleware,
    SessionStore,
    clear_cookie,
    current,
    login_url,
    safe_next,
    set_cookie,
)
from .settings import PanelSettings
from .vms import VmPages

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
#: operation statuses still in progress (shown live on the overview)
ACTIVE = ("running", "rolling-back", "interrupted", "paused", "rollback-incomplete")
#: step statuses whose step has something to undo (the journal's view; see engine._pending_undo)
UNDOABLE = {"applied": "", "verified": "", "undo-failed": " (its undo failed before)",
            "in-flight": " (partly applied)", "failed": " (partly applied)"}
OP_ID_RE = re.compile(r"[0-9][0-9a-f-]{0,21}")
_ACTIONS_TTL = 60.0
_WHOAMI_TTL = 30.0


# -- small helpers ---------------------------------------------------------------------------
def undo_plan(op: dict[str, Any]) -> list[str]:
    """The rollback's steps: the operation's undoable steps in reverse, from the journal."""
    out = []
    for s in reversed(op.get("steps") or []):
        if not isinstance(s, dict):
            continue
        note = UNDOABLE.get(str(s.get("status")))
        if note is not None:
            out.append(f"undo {s.get('index')}. {s.get('description', '')}{note}")
    return out


def rollback_block(op: dict[str, Any], plan: list[str]) -> str | None:
    """Why ``op`` cannot be rolled back now (one sentence), or None when it can."""
    status = str(op.get("status", ""))
    if status in ("rolled-back", "refused"):
        return f"This operation is already {status}: there is nothing to undo."
    if status in ("running", "rolling-back"):
        return "This operation is still running; it can be rolled back once it stops."
    if status == "dry-run":
        return "This was a dry run: it changed nothing."
    if not plan:
        return "No step of this operation was applied: there is nothing to undo."
    return None


#: the step statuses a resume redoes (the engine undoes the step from its snapshot first)
_REDO = {"in-flight": " (interrupted here: undone from its snapshot, then applied again)",
         "applied": " (applied but not verified: undone, then applied again)",
         "undo-failed": " (its undo failed before: undone, then applied again)"}
RESUME_ACTION = "ops.resume"


def resume_plan(op: dict[str, Any]) -> list[str]:
    """What a resume does, from the journal: the steps from the first one not verified
    (as ``debvisor ops resume`` plans it)."""
    steps = [s for s in op.get("steps") or [] if isinstance(s, dict)]
    first = next((i for i, s in enumerate(steps) if s.get("status") != "verified"), len(steps))
    return [f"{s.get('index')}. {s.get('description', '')}"
            + (_REDO.get(str(s.get("status")), "") if k == 0 else "")
            for k, s in enumerate(steps[first:])]


def resume_block(op: dict[str, Any], plan: list[str], installed: bool) -> str | None:
    """Why ``op`` cannot be resumed now (one sentence), or None when it can."""
    status = str(op.get("status", ""))
    if status not in ("interrupted", "paused"):
        return f"Only an interrupted or paused operation can be resumed; this one is {status}."
    if status == "interrupted" and any(isinstance(s, dict) and s.get("status") == "undone"
                                       for s in op.get("steps") or []):
        return ("This operation was interrupted while it was being rolled back: roll it back "
                "again instead.")
    if not installed:
        return "This node's rpcd cannot resume operations yet (it lists no ops.resume action)."
    if not plan:
        return "Every step of this operation is already done: there is nothing to resume."
    return None


def audit_verdict(v: dict[str, Any]) -> dict[str, Any]:
    """VerifyAudit's answer as the page shows it: "chain verified" or "tampered at line N"."""
    message = str(v.get("message", ""))
    if v.get("ok"):
        return {"ok": True, "headline": "chain verified", "message": message,
                "lines": v.get("lines", 0)}
    m = re.match(r"line (\d+):", message)
    headline = f"tampered at line {m.group(1)}" if m else "chain broken"
    return {"ok": False, "headline": headline, "message": message, "lines": v.get("lines", 0)}


_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?Z?)?")


def audit_filter(query: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """The audit page's filters (user, action, from, to) checked; (filters, error)."""
    f = {k: (query.get(k) or "").strip()[:200] for k in ("user", "action", "from", "to")}
    for k in ("from", "to"):
        if f[k] and not _TIME_RE.fullmatch(f[k]):
            return f, f"'{k}' must be a date (2026-11-25) or a UTC time (2026-11-25T10:00:00)"
    return f, None


def _names(rec: dict[str, Any]) -> set[str]:
    """Every name a record attributes it to: the local user, sudo's, rpcd's caller."""
    out: set[str] = set()
    u = rec.get("user")
    if isinstance(u, dict):
        out |= {str(u.get(k)) for k in ("name", "sudo_user") if u.get(k)}
    elif u:
        out.add(str(u))
    for k in ("caller", "claimed_caller"):
        if rec.get(k):
            out.add(str(rec[k]).split()[0])
    return {n.lower() for n in out}


def audit_match(rec: dict[str, Any], f: dict[str, str]) -> bool:
    t = str(rec.get("time", ""))
    if f["from"] and t < f["from"]:
        return False
    if f["to"]:
        end = f["to"] if "T" in f["to"] else f["to"] + "T99"  # a date: the whole day
        if t > end:
            return False
    if f["user"] and f["user"].lower() not in _names(rec):
        return False
    if f["action"]:
        text = " ".join(str(rec.get(k) or "") for k in ("plugin", "action", "result", "operation"))
        text += " " + json.dumps(rec.get("details"), default=str)
        if f["action"].lower() not in text.lower():
            return False
    return True


def audit_who(rec: dict[str, Any]) -> str:
    if rec.get("caller"):
        return str(rec["caller"])
    u = rec.get("user")
    if isinstance(u, dict):
        name = str(u.get("name") or "?")
        return name + (f" (sudo {u['sudo_user']})" if u.get("sudo_user") else "")
    return str(u or "?")


def sse(event: str, data: str, event_id: int | None = None) -> str:
    """One server-sent event (``data`` may span lines)."""
    lines = data.splitlines() or [""]
    head = f"id: {event_id}\n" if event_id is not None else ""
    return head + f"event: {event}\n" + "".join(f"data: {ln}\n" for ln in lines) + "\n"


def last_event_id(request: Request) -> int | None:
    """The ``Last-Event-ID`` a reconnecting EventSource sends (None if absent or odd)."""
    value = (request.headers.get("last-event-id") or "").strip()
    return int(value) if value.isdigit() and len(value) < 20 else None


def _rate(bps: Any) -> str:
    try:
        return f"{human_bytes(float(bps))}/s"
    except (TypeError, ValueError):
        return "—"


def _duration(seconds: Any) -> str:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return "—"
    if value < 10:
        return f"{value:.1f}s"
    return human_duration(value)


def _bytes(n: Any) -> str:
    try:
        return human_bytes(float(n))
    except (TypeError, ValueError):
        return "—"


def _console_routes() -> tuple[list[BaseRoute], Any]:
    """The console's routes from :mod:`.console` when it exists (imported only here)."""
    name = f"{__package__}.console"
    try:
        if importlib.util.find_spec(name) is None:
            return [], None
        mod = importlib.import_module(name)
    except ImportError as exc:
        log.warn(f"panel: the console is not available: {exc}")
        return [], None
    routes = getattr(mod, "routes", None)
    if routes is None:
        return [], mod
    return list(routes() if callable(routes) else routes), mod


# -- the application -------------------------------------------------------------------------
class Panel:
    """The routes and what they share: settings, the rpcd client, sessions, templates."""

    def __init__(self, settings: PanelSettings, clock: Callable[[], float],
                 client: Rpcd | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.rpc = client or Rpcd(settings)
        self.sessions = SessionStore(settings.idle_timeout, settings.absolute_timeout,
                                     clock=clock, on_end=self._ended)
        env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                          autoescape=select_autoescape(default=True, default_for_string=True))
        env.globals["reasons"] = REASONS
        env.filters.update(rate=_rate, duration=_duration, bytes=_bytes)
        self.templates = Jinja2Templates(env=env)
        self._actions: tuple[float, dict[str, dict[str, Any]]] | None = None
        self.hub = Hub(self.rpc)
        self.vm_pages = VmPages(self)
        self.ceph_pages = cephpage.CephPages(self)
        self.dns_pages = dnspage.DnsPages(self)
        self.oidc = oidc.OidcLogin(self)

    # -- rpcd ----------------------------------------------------------------------------
    def _ended(self, s: Session, why: str) -> None:
        """A session ended here (idle, limit): end the user's rpcd session too."""
        threading.Thread(target=self._quiet_logout, args=(s.token,), daemon=True,
                         name="panel-logout").start()

    def _quiet_logout(self, token: str) -> None:
        with contextlib.suppress(RpcFailure):
            self.rpc.logout(token)

    async def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await run_in_threadpool(fn, *args, **kw)

    async def actions(self, s: Session) -> dict[str, dict[str, Any]]:
        """The node's installed actions by path (cached a minute; the same for everyone)."""
        now = time.monotonic()
        if self._actions is None or now - self._actions[0] > _ACTIONS_TTL:
            try:
                listed = await self.call(self.rpc.list_actions, s.token)
            except Refused:  # this user's role may not list them: no plugin pages for them
                return {}
            self._actions = (now, {a["path"]: a for a in listed})
        return self._actions[1]

    async def allowed(self, s: Session) -> set[str]:
        """The actions rpcd says this user may run (WhoAmI), cached briefly per session."""
        now = time.monotonic()
        hit = s.cache.get("whoami")
        if hit is None or now - hit[0] > _WHOAMI_TTL:
            try:
                who = await self.call(self.rpc.whoami, s.token)
            except Refused:
                who = {}
            hit = (now, who)
            s.cache["whoami"] = hit
        return {str(a) for a in hit[1].get("actions") or []}

    # -- rendering -----------------------------------------------------------------------
    def nav(self, actions: dict[str, Any] | None) -> list[tuple[str, str]]:
        items = [("/", "Overview"), ("/ops", "Operations"), ("/audit", "Audit")]
        if actions and "hv.list" in actions:
            items.append(("/vms", "VMs"))
        if cephpage.CephPages.present(actions):
            items.append(("/ceph", "Ceph"))
        if dnspage.DnsPages.present(actions):
            items.append(("/dns", "DNS"))
        return items

    async def page(self, request: Request, name: str, context: dict[str, Any],
                   status: int = 200) -> Response:
        s = current(request)
        actions = await self.actions(s) if s else None
        allowed = await self.allowed(s) if s else set()
        return self.render(request, name, {**context, "allowed": allowed}, status, actions)

    def render(self, request: Request, name: str, context: dict[str, Any], status: int = 200,
               actions: dict[str, Any] | None = None) -> Response:
        s = current(request)
        if actions is None and self._actions is not None:
            actions = self._actions[1]
        ctx = {"me": s, "csrf": s.csrf if s else "", "nav": self.nav(actions),
               "path": request.url.path, "allowed": set(),
               "tasks": [t.view() for t in self.hub.visible(s.user)] if s else [], **context}
        return self.templates.TemplateResponse(request, name, ctx, status_code=status)

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.render(request, "error.html", {"status": status, "message": message}, status)

    # -- login and logout -----------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        if current(request) is not None:
            return RedirectResponse("/", 303)
        return self._login_page(request, error="", status=200)

    def _login_page(self, request: Request, error: str, status: int, user: str = "") -> Response:
        token = request.cookies.get(LOGIN_COOKIE) or ""
        if not re.fullmatch(r"[A-Za-z0-9_-]{43}", token):
            token = secrets.token_urlsafe(32)
        why = request.query_params.get("why", "")
        nxt = request.query_params.get("next") or (form_of(request).get("next") or "")
        resp = self.render(request, "login.html", {
            "why": REASONS.get(why, ""), "error": error, "login_csrf": token, "user": user,
            "next": nxt if safe_next(nxt) else "", "sso": self.oidc.enabled,
            "sso_label": self.settings.oidc_label}, status)
        resp.headers.append("set-cookie", set_cookie(LOGIN_COOKIE, token))
        return resp

    async def login(self, request: Request) -> Response:
        form = form_of(request)
        user, password = (form.get("user") or "").strip(), form.get("password") or ""
        if not user or not password:
            return self._login_page(request, "Enter your user name and password.", 400, user)
        try:
            r = await self.call(self.rpc.login, user, password)
        except SessionEnded:
            return self._login_page(request, "Wrong user name or password.", 401, user)
        except Refused as exc:
            return self._login_page(request, exc.message, 403, user)
        old = current(request)
        if old is not None:  # a second login in the same browser replaces the first session
            self.sessions.end(old, "logged-out")
            self._ended(old, "logged-out")
        sid, _ = self.sessions.create(r.user, r.roles, r.token, rpcd_expires=r.expires)
        nxt = form.get("next") or ""
        resp = RedirectResponse(nxt if safe_next(nxt) else "/", 303)
        resp.headers.append("set-cookie", set_cookie(COOKIE, sid))
        resp.headers.append("set-cookie", clear_cookie(LOGIN_COOKIE))
        log.info(f"panel: {r.user} logged in")
        return resp

    async def logout(self, request: Request) -> Response:
        s = current(request)
        if s is not None:
            self.sessions.end(s, "logged-out")
            with contextlib.suppress(RpcFailure):
                await self.call(self.rpc.logout, s.token)
            log.info(f"panel: {s.user} logged out")
        resp = RedirectResponse(login_url("logged-out"), 303)
        resp.headers.append("set-cookie", clear_cookie(COOKIE))
        return resp

    # -- pages -----------------------------------------------------------------------------
    def _s(self, request: Request) -> Session:
        s = current(request)
        if s is None:  # the session middleware lets no such request through
            raise HTTPException(401, "log in first")
        return s

    async def overview(self, request: Request) -> Response:
        s = self._s(request)
        ops = await self.call(self.rpc.list_operations, s.token, 20)
        actions = await self.actions(s)
        maintenance, maint_error = None, ""
        if "maintenance.status" in actions:
            try:
                res = await self.call(self.rpc.run, s.token, "maintenance.status")
                maintenance = res.result if res.code == 0 else None
                maint_error = res.message if res.code else ""
            except Refused as exc:
                maint_error = exc.message
        latest: deque[dict[str, Any]] = deque(maxlen=10)
        with contextlib.suppress(Refused):
            latest.extend(await self.call(lambda: list(self.rpc.audit_events(s.token, "1d"))))
        return await self.page(request, "overview.html", {
            "running": [o for o in ops if o.get("status") in ACTIVE], "recent": ops[:10],
            "live": self._live_ops(s), "no_drawer": True,
            "maintenance": maintenance, "maint_error": maint_error,
            "audit": [{**r, "who": audit_who(r)} for r in reversed(latest)]})

    async def health_fragment(self, request: Request) -> Response:
        s = self._s(request)
        try:
            health = await self.call(self.rpc.health, s.token)
            error = ""
        except rpcmod.Unavailable as exc:
            health, error = {}, exc.message
        return self.render(request, "_health.html", {"health": health, "error": error})

    async def ops(self, request: Request) -> Response:
        s = self._s(request)
        status = request.query_params.get("status", "")
        ops = await self.call(self.rpc.list_operations, s.token, 200)
        if status:
            ops = [o for o in ops if o.get("status") == status]
        return await self.page(request, "ops.html", {"ops": ops, "status": status})

    async def _op(self, request: Request, s: Session) -> dict[str, Any]:
        op_id = request.path_params["op_id"]
        if not OP_ID_RE.fullmatch(op_id):
            raise HTTPException(404, "no such operation")
        op = await self.call(self.rpc.show_operation, s.token, op_id)
        if op is None:
            raise HTTPException(404, f"no operation {op_id} in the journal")
        return op

    async def _op_context(self, s: Session, op: dict[str, Any], **more: Any) -> dict[str, Any]:
        plan, resume = undo_plan(op), resume_plan(op)
        installed = RESUME_ACTION in await self.actions(s)
        return {"op": op, "plan": plan, "blocked": rollback_block(op, plan),
                "resume_plan": resume, "resume_blocked": resume_block(op, resume, installed),
                "resume_action": RESUME_ACTION, "resume_installed": installed,
                "reauth_needed": not s.reauth_fresh(self.clock(), self.settings.reauth_max_age),
                "reauth_minutes": int(self.settings.reauth_max_age // 60), **more}

    async def op(self, request: Request) -> Response:
        s = self._s(request)
        op = await self._op(request, s)
        return await self.page(request, "op.html", await self._op_context(s, op))

    async def reauth(self, request: Request, s: Session, doing: str,
                     nothing_done: str) -> str | None:
        """Check the re-authentication a state-changing journal action needs: None when
        the user's is fresh or the form's password proves it now; else why not (one
        sentence: ``doing`` as in "to roll back", ``nothing_done`` as in "nothing was
        rolled back")."""
        if s.reauth_fresh(self.clock(), self.settings.reauth_max_age):
            return None
        minutes = int(self.settings.reauth_max_age // 60)
        if s.method == "oidc":
            return (f"Re-authenticate with your identity provider {doing}: it needs a login "
                    f"at most {minutes} minutes old.")
        password = form_of(request).get("password") or ""
        if not password:
            return (f"Re-enter your password {doing}: it needs a login at most {minutes} "
                    "minutes old.")
        try:
            again = await self.call(self.rpc.login, s.user, password)
        except SessionEnded:
            return f"Wrong password: {nothing_done}."
        with contextlib.suppress(RpcFailure):
            await self.call(self.rpc.logout, again.token)  # only the proof was needed
        s.reauth_at = self.clock()
        return None

    async def rollback(self, request: Request) -> Response:
        s = self._s(request)
        op = await self._op(request, s)
        ctx = await self._op_context(s, op)
        if ctx["blocked"]:
            return await self.page(request, "op.html", {**ctx, "error": ctx["blocked"]}, 409)
        why = await self.reauth(request, s, "to roll back", "nothing was rolled back")
        if why is not None:
            return await self.page(request, "op.html", {**ctx, "error": why}, 401)
        log.info(f"panel: {s.user} rolls back {op['id']}")
        res = await self.call(lambda: collect(self.rpc.rollback(s.token, op["id"])))
        after = await self.call(self.rpc.show_operation, s.token, op["id"]) or op
        ctx = await self._op_context(s, after, run=res,
                                     run_error=res.message if res.code else "")
        return await self.page(request, "op.html", ctx, 200 if res.code == 0 else 500)

    async def resume(self, request: Request) -> Response:
        """Resume an interrupted or paused operation (``ops.resume`` through rpcd's Invoke)
        as a live task, after re-authentication; the plan was on the operation's page."""
        s = self._s(request)
        op = await self._op(request, s)
        ctx = await self._op_context(s, op)
        if ctx["resume_blocked"]:
            return await self.page(request, "op.html",
                                   {**ctx, "resume_error": ctx["resume_blocked"]}, 409)
        why = await self.reauth(request, s, "to resume", "nothing was resumed")
        if why is not None:
            return await self.page(request, "op.html", {**ctx, "resume_error": why}, 401)
        log.info(f"panel: {s.user} resumes {op['id']}")
        return await self.start_task(request, s, RESUME_ACTION, {"id": op["id"]},
                                     f"resume {op['id']} ({op.get('title', '')})",
                                     op_id=str(op["id"]))

    async def start_task(self, request: Request, s: Session, path: str,
                         params: dict[str, Any], title: str, *, vm: str = "",
                         op_id: str = "") -> Response:
        """Apply: run ``path`` as a live task (confirmed: the plan was shown); to its page,
        or rpcd's refusal."""
        try:
            task = await self.call(self.hub.start, s.user, s.token, path, params, title, vm=vm,
                                   op_id=op_id)
        except SessionEnded:
            raise
        except RpcFailure as exc:
            log.info(f"panel: {s.user}: {path} refused: {exc.message}")
            return await self.page(request, "error.html",
                                   {"status": exc.status, "message": exc.message}, exc.status)
        return RedirectResponse(f"/tasks/{task.id}", 303)

    async def _audit_records(self, s: Session, f: dict[str, str]) -> list[dict[str, Any]]:
        def fetch() -> list[dict[str, Any]]:
            return [r for r in self.rpc.audit_events(s.token, f["from"]) if audit_match(r, f)]

        return list(await self.call(fetch))

    async def audit(self, request: Request) -> Response:
        s = self._s(request)
        f, problem = audit_filter(dict(request.query_params))
        if problem:
            return await self.page(request, "audit.html", {"f": f, "error": problem, "records": [],
                                                           "verdict": None, "query": ""}, 400)
        verdict = audit_verdict(await self.call(self.rpc.verify_audit, s.token))
        records = await self._audit_records(s, f)
        shown = [{**r, "who": audit_who(r), "details_json": json.dumps(r.get("details"),
                                                                        default=str)}
                 for r in reversed(records[-500:])]
        return await self.page(request, "audit.html", {
            "f": f, "error": "", "records": shown, "total": len(records), "verdict": verdict,
            "query": request.url.query})

    async def audit_jsonl(self, request: Request) -> Response:
        s = self._s(request)
        f, problem = audit_filter(dict(request.query_params))
        if problem:
            return Response(problem + "\n", 400, media_type="text/plain")
        records = await self._audit_records(s, f)
        body = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records)
        return Response(body, media_type="application/jsonl", headers={
            "content-disposition": 'attachment; filename="audit.jsonl"'})

    # -- live updates ---------------------------------------------------------------------
    def _live_ops(self, s: Session) -> dict[str, dict[str, Any]]:
        """The user's live tasks by journal operation id (their % and ETA in the ops list)."""
        return {t.op_id: t.view() for t in self.hub.visible(s.user) if t.op_id and t.active}

    async def events(self, request: Request) -> Response:
        s = current(request)
        why = (request.scope.get("state") or {}).get("session_why")
        return StreamingResponse(self._stream(s, why, last_event_id(request)),
                                 media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    def _task_events(self, s: Session, changed: list[Any], seq: int) -> str:
        """The drawer (every task the user sees) and each changed task's own card."""
        visible = [t.view() for t in self.hub.visible(s.user)]
        out = [sse("tasks", self.templates.get_template("_tasks.html").render(
            tasks=visible, csrf=s.csrf), seq)]
        card = self.templates.get_template("_task.html")
        out += [sse(f"task-{t.id}", card.render(t=t.view(), full=True, csrf=s.csrf), seq)
                for t in changed]
        return "".join(out)

    async def _stream(self, s: Session | None, why: str | None,
                      last_id: int | None = None) -> AsyncIterator[str]:
        st = self.settings
        yield f"retry: {int(max(st.heartbeat, 1) * 1000)}\n\n"
        if s is None:
            yield sse("ended", why or "none")
            return
        start = last_beat = time.monotonic()
        last_poll: float | None = None
        last_ops: str | None = None
        warned = False
        # a reconnect resumes after the last task change it saw; a new page (no id, or an
        # id of another panel process) gets every task's current state
        seen = last_id if last_id is not None and last_id <= self.hub.seq else 0
        with self.hub.subscription() as wake:
            while True:
                wake.clear()
                live, why = self.sessions.peek(s.key)  # never activity
                if live is None:
                    yield sse("ended", why or "revoked")
                    return
                changed = self.hub.changed_since(live.user, seen)
                if changed:
                    seen = max(t.seq for t in changed)
                    yield self._task_events(live, changed, seen)
                now = time.monotonic()
                if last_poll is None or now - last_poll >= st.events_poll:
                    last_poll = now
                    try:
                        ops = await self.call(self.rpc.list_operations, live.token, 20)
                    except SessionEnded:
                        self.sessions.end(live, "revoked")
                        yield sse("ended", "revoked")
                        return
                    except RpcFailure:
                        ops = None
                    if ops is not None:
                        html = self.templates.get_template("_ops_running.html").render(
                            running=[o for o in ops if o.get("status") in ACTIVE],
                            live=self._live_ops(live))
                        if html != last_ops:
                            last_ops = html
                            yield sse("ops", html)
                left = st.idle_timeout - (self.clock() - live.last_activity)
                if left <= 60 and not warned:
                    warned = True
                    yield sse("idle", self.templates.get_template("_idle.html").render(
                        seconds=max(int(left), 0)))
                elif left > 60 and warned:
                    warned = False
                    yield sse("idle", "")
                if now - last_beat >= st.heartbeat:
                    last_beat = now
                    yield ": heartbeat\n\n"
                if now - start >= st.events_max:
                    return  # the browser reconnects (EventSource), the session is checked again
                pause = max(0.01, min(1.0, st.heartbeat, st.events_poll,
                                      st.events_max - (now - start)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), pause)

    # -- errors ----------------------------------------------------------------------------
    async def on_rpc_failure(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RpcFailure)
        s = current(request)
        if isinstance(exc, SessionEnded):
            if s is not None:
                self.sessions.end(s, "revoked")
            target = login_url("revoked")
            resp: Response = RedirectResponse(target, 303)
            if request.headers.get("hx-request"):
                resp = Response("", 200, headers={"hx-redirect": target})
            resp.headers.append("set-cookie", clear_cookie(COOKIE))
            return resp
        return self.error(request, exc.status, exc.message)

    async def on_http(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self.error(request, exc.status_code, str(exc.detail))

    async def on_500(self, request: Request, exc: Exception) -> Response:
        log.error(f"panel: {request.method} {request.url.path}: {type(exc).__name__}: {exc}")
        body = b"500 Internal error: see the panel's log\n"
        headers: list[tuple[bytes, bytes]] = [(b"content-type", b"text/plain; charset=utf-8")]
        security_headers(request.scope, headers)  # this response skips the middlewares
        return Response(body, 500, headers={k.decode(): v.decode() for k, v in headers})

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/", self.overview, methods=["GET"]),
            Route("/fragments/health", self.health_fragment, methods=["GET"]),
            Route("/ops", self.ops, methods=["GET"]),
            Route("/ops/{op_id}", self.op, methods=["GET"]),
            Route("/ops/{op_id}/rollback", self.rollback, methods=["POST"]),
            Route("/ops/{op_id}/resume", self.resume, methods=["POST"]),
            Route("/audit", self.audit, methods=["GET"]),
            Route("/audit.jsonl", self.audit_jsonl, methods=["GET"]),
            *self.vm_pages.routes(),
            *self.ceph_pages.routes(),
            *self.dns_pages.routes(),
            *self.oidc.routes(),
            Route("/events", self.events, methods=["GET"]),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ]


def create_app(settings: PanelSettings, *, clock: Callable[[], float] = time.time,
               client: Rpcd | None = None) -> Starlette:
    """The panel as an ASGI application; ``clock`` (seconds) drives the session limits.

    ``app.state`` holds ``settings``, ``rpc`` (:class:`.rpc.Rpcd`), ``sessions``
    (:class:`.sessions.SessionStore`), ``templates`` and ``console`` (the console module
    when mounted); a request's session is ``sessions.current(request)``.
    """
    panel = Panel(settings, clock, client)
    console_routes, console = _console_routes()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            panel.rpc.close()

    app = Starlette(
        routes=[*panel.routes(), *console_routes],
        middleware=[Middleware(SecurityMiddleware, settings=settings),
                    Middleware(SessionMiddleware, store=panel.sessions),
                    Middleware(CsrfMiddleware, settings=settings)],
        exception_handlers={RpcFailure: panel.on_rpc_failure, HTTPException: panel.on_http,
                            500: panel.on_500},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.rpc = panel.rpc
    app.state.sessions = panel.sessions
    app.state.templates = panel.templates
    app.state.panel = panel
    app.state.console = console
    importlib.import_module(f"{__package__}.consolepage").install(app)  # console page + hooks
    return app

