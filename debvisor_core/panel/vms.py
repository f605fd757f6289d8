"""The VM pages: the list, plan-then-apply for each VM action, migrate, and live tasks.

=====================================  =====================================================
GET ``/vms``                           ``hv.list``, filtered by state and node (by rpcd) and
                                       by name, owner and tag (here); per-row actions
GET ``/vms/{vm}/{verb}``               start, stop, snapshot: the plan (the action's dry run
                                       through rpcd: steps and preflight findings) and Apply
POST ``/vms/{vm}/{verb}``              Apply: the action runs as a live task
GET ``/vms/{vm}/migrate``              target picker; with ``target``: the preflight findings,
                                       the plan and the downtime and duration forecast
POST ``/vms/{vm}/migrate``             Apply: the migration runs as a live task
GET ``/tasks/{id}``                    one live task (its drawer, updated over ``/events``)
POST ``/tasks/{id}/abort``             cancel it (rpcd stops the action and rolls it back)
POST ``/tasks/{id}/dismiss``           take a finished task off the drawer
=====================================  =====================================================

A page or button appears only when the node has the action installed (ListActions) and
rpcd says the user may run it (WhoAmI); rpcd refuses anything else whatever the panel
shows — a forged POST gets rpcd's PERMISSION_DENIED, not the panel's. Every Apply is a
POST with the session's CSRF token and the panel's Origin (:mod:`.security`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .rpc import RunResult
from .security import form_of

if TYPE_CHECKING:  # pragma: no cover
    from .app import Panel
    from .sessions import Session

VM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
NODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SNAPSHOT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: a bandwidth or a duration as `hv migrate` takes them (the action checks them)
AMOUNT_RE = re.compile(r"[0-9][0-9.]{0,9} ?[A-Za-z/]{0,8}")
TASK_RE = re.compile(r"[0-9a-f]{12}")
STATES = ("all", "running", "stopped", "paused")
RUNNING = ("running", "blocked")
OFF = ("shutoff", "shutdown", "crashed", "nostate")
PAUSED = ("paused", "pmsuspended")
STOP_HOW = {"shutdown": ("Shut down (ACPI), wait 60 s", False, 60),
            "shutdown-force": ("Shut down (ACPI), power off after 60 s", True, 60),
            "poweroff": ("Power off now", True, 0)}


@dataclass(frozen=True)
class Verb:
    """A per-row action: the hv action it runs, its button, and the states it applies to."""

    path: str
    label: str
    states: tuple[str, ...]


VERBS = {
    "start": Verb("hv.start", "Start", OFF + PAUSED),
    "stop": Verb("hv.stop", "Stop", RUNNING + PAUSED),
    "snapshot": Verb("hv.snapshot", "Snapshot", RUNNING + OFF + PAUSED),
    "migrate": Verb("hv.migrate", "Migrate", RUNNING),
}


def check_vm(vm: str) -> str:
    if not VM_RE.fullmatch(vm):
        raise HTTPException(404, "no such VM")
    return vm


def _node(value: str | None) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if not NODE_RE.fullmatch(value):
        raise HTTPException(400, f"bad node name {value[:70]!r}")
    return value


def plan_of(res: RunResult) -> dict[str, Any]:
    """What a dry run says: title, steps, findings, the estimate (migrate), whether it
    can be applied, and why not."""
    plan = next((e for e in res.events if e.get("event") == "plan"), {})
    result = res.result if isinstance(res.result, dict) else {}
    inner = result.get("result") if isinstance(result.get("result"), dict) else {}
    findings = [f for f in plan.get("findings") or result.get("findings") or []
                if isinstance(f, dict)]
    errors = [f for f in findings if f.get("level") == "error"]
    return {"title": plan.get("title") or result.get("title") or "",
            "steps": [str(s) for s in plan.get("steps") or []], "findings": findings,
            "estimate": inner.get("estimate") if isinstance(inner, dict) else None,
            "ok": res.code == 0 and not errors,
            "error": "" if res.code == 0 else (res.message or f"exit code {res.code}")}


def vm_filter(rows: list[dict[str, Any]], q: dict[str, str]) -> list[dict[str, Any]]:
    """The rows matching the name, owner and tag filters (state and node went to rpcd)."""
    name, owner, tag = (q.get(k, "").strip().lower() for k in ("q", "owner", "tag"))
    out = []
    for v in rows:
        if name and name not in str(v.get("name", "")).lower():
            continue
        if owner and owner != str(v.get("owner") or "").lower():
            continue
        if tag and tag not in [str(t).lower() for t in v.get("tags") or []]:
            continue
        out.append(v)
    return out


class VmPages:
    """The routes of this module, sharing the panel's rpcd client, sessions and hub."""

    def __init__(self, panel: Panel) -> None:
        self.p = panel

    # -- helpers --------------------------------------------------------------------------
    async def _need(self, request: Request, path: str) -> tuple[Session, dict[str, Any]]:
        s = self.p._s(request)
        actions = await self.p.actions(s)
        if "hv.list" not in actions:
            raise HTTPException(404, "no VM plugin is installed on this node")
        if path not in actions:
            raise HTTPException(404, f"this node has no {path} action (its hv plugin is older)")
        return s, actions

    async def _list(self, s: Session, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
        res = await self.p.call(self.p.rpc.run, s.token, "hv.list", json.dumps(params))
        data = res.result if isinstance(res.result, dict) else {}
        return data, res.message if res.code and not data.get("unreachable") else ""

    # -- the list ---------------------------------------------------------------------------
    async def vms(self, request: Request) -> Response:
        t0 = time.perf_counter()
        s = self.p._s(request)
        actions = await self.p.actions(s)
        if "hv.list" not in actions:
            raise HTTPException(404, "no VM plugin is installed on this node")
        q = {k: request.query_params.get(k, "").strip()[:100]
             for k in ("q", "state", "node", "owner", "tag")}
        if q["state"] not in STATES:
            q["state"] = "all"
        params: dict[str, Any] = {"filter": q["state"]}
        node = _node(q["node"])
        if node:
            params["node"] = node
        data, error = await self._list(s, params)
        t1 = time.perf_counter()
        rows = data.get("vms") or []
        vms = vm_filter(rows, q)
        allowed = await self.p.allowed(s)
        verbs = {k: v for k, v in VERBS.items() if v.path in actions and v.path in allowed}
        nodes = sorted(set(data.get("nodes") or []) | {str(v.get("node")) for v in rows}
                       | set(data.get("unreachable") or {}))
        owners = sorted({str(v["owner"]) for v in rows if v.get("owner")})
        tags = sorted({str(t) for v in rows for t in v.get("tags") or []})
        console = "hv.ticket.create" in actions
        resp = await self.p.page(request, "vms.html", {
            "vms": vms, "total": len(rows), "unreachable": data.get("unreachable") or {},
            "error": error, "q": q, "states": STATES, "nodes": nodes, "owners": owners,
            "tags": tags, "verbs": verbs, "console": console})
        t2 = time.perf_counter()
        resp.headers["server-timing"] = (f"rpcd;dur={(t1 - t0) * 1000:.1f}, "
                                         f"render;dur={(t2 - t1) * 1000:.1f}")
        return resp

    # -- start, stop, snapshot: plan, then apply ------------------------------------------
    def _verb_params(self, verb: str, vm: str, values: dict[str, str]) -> tuple[dict[str, Any],
                                                                                 dict[str, str]]:
        """The action's parameters from the page's fields (checked); and the fields."""
        params: dict[str, Any] = {"vm": vm}
        fields: dict[str, str] = {}
        node = _node(values.get("node"))
        if node:
            params["node"] = fields["node"] = node
        if verb == "stop":
            how = values.get("how") or "shutdown-force"
            if how not in STOP_HOW:
                raise HTTPException(400, f"bad stop mode {how[:30]!r}")
            _label, force, timeout = STOP_HOW[how]
            params.update(force=force, timeout=timeout)
            fields["how"] = how
        elif verb == "snapshot":
            name = (values.get("name") or "").strip()
            if name and not SNAPSHOT_RE.fullmatch(name):
                raise HTTPException(400, "a snapshot name is 1-64 letters, digits, '.', '_', "
                                         "':' or '-'")
            params["action"] = "create"
            if name:
                params["name"] = fields["name"] = name
        return params, fields

    async def plan(self, request: Request) -> Response:
        verb = request.path_params["verb"]
        if verb not in ("start", "stop", "snapshot"):
            raise HTTPException(404, "no such page")
        vm = check_vm(request.path_params["vm"])
        s, _ = await self._need(request, VERBS[verb].path)
        params, fields = self._verb_params(verb, vm, dict(request.query_params))
        res = await self.p.call(self.p.rpc.run, s.token, VERBS[verb].path, json.dumps(params),
                                dry_run=True)
        return await self.p.page(request, "vm_plan.html", {
            "vm": vm, "verb": verb, "label": VERBS[verb].label, "plan": plan_of(res),
            "fields": fields, "stop_how": STOP_HOW, "action": VERBS[verb].path,
            "no_drawer": False})

    async def apply(self, request: Request) -> Response:
        verb = request.path_params["verb"]
        if verb not in ("start", "stop", "snapshot"):
            raise HTTPException(404, "no such page")
        vm = check_vm(request.path_params["vm"])
        s, _ = await self._need(request, VERBS[verb].path)
        params, _fields = self._verb_params(verb, vm, form_of(request))
        title = {"start": f"start {vm}", "stop": f"stop {vm}",
                 "snapshot": f"snapshot of {vm}"}[verb]
        return await self._start(request, s, VERBS[verb].path, params, title, vm)

    async def _start(self, request: Request, s: Session, path: str, params: dict[str, Any],
                     title: str, vm: str) -> Response:
        return await self.p.start_task(request, s, path, params, title, vm=vm)

    # -- migrate ------------------------------------------------------------------------------
    def _migrate_params(self, vm: str, values: dict[str, str]) -> tuple[dict[str, Any],
                                                                       dict[str, str]]:
        fields = {k: (values.get(k) or "").strip()[:30]
                  for k in ("target", "bandwidth", "max_downtime")}
        target = _node(fields["target"])
        params: dict[str, Any] = {"vm": vm}
        if target:
            params["target"] = target
        for k in ("bandwidth", "max_downtime"):
            if fields[k]:
                if not AMOUNT_RE.fullmatch(fields[k]):
                    raise HTTPException(400, f"bad {k.replace('_', ' ')} {fields[k]!r}: "
                                             "e.g. 100Mbps, 50MiB/s, 300ms")
                params[k] = fields[k]
        return params, fields

    async def migrate_page(self, request: Request) -> Response:
        vm = check_vm(request.path_params["vm"])
        s, _ = await self._need(request, "hv.migrate")
        params, fields = self._migrate_params(vm, dict(request.query_params))
        data, error = await self._list(s, {})
        rows = [v for v in data.get("vms") or [] if v.get("name") == vm]
        row = next((v for v in rows if v.get("state") in RUNNING), rows[0] if rows else None)
        unreachable = data.get("unreachable") or {}
        nodes = sorted(set(data.get("nodes") or []) | {str(v.get("node"))
                                                        for v in data.get("vms") or []})
        counts = {n: sum(1 for v in data.get("vms") or [] if v.get("node") == n
                         and v.get("state") in RUNNING) for n in nodes}
        here = row.get("node") if row else None
        targets = [{"name": n, "running": counts.get(n, 0), "here": n == here,
                    "unreachable": ""} for n in nodes]
        targets += [{"name": n, "running": 0, "here": False, "unreachable": why}
                    for n, why in sorted(unreachable.items())]
        plan = None
        if "target" in params and row is not None:
            res = await self.p.call(self.p.rpc.run, s.token, "hv.migrate", json.dumps(params),
                                    dry_run=True)
            plan = plan_of(res)
        return await self.p.page(request, "migrate.html", {
            "vm": vm, "row": row, "here": here, "targets": targets, "fields": fields,
            "plan": plan, "error": error})

    async def migrate_apply(self, request: Request) -> Response:
        vm = check_vm(request.path_params["vm"])
        s, _ = await self._need(request, "hv.migrate")
        params, _fields = self._migrate_params(vm, form_of(request))
        if "target" not in params:
            raise HTTPException(400, "pick the node to migrate to")
        return await self._start(request, s, "hv.migrate", params,
                                 f"migrate {vm} to {params['target']}", vm)

    # -- tasks ----------------------------------------------------------------------------------
    def _task(self, request: Request, s: Session) -> Any:
        tid = request.path_params["task_id"]
        task = self.p.hub.get(tid) if TASK_RE.fullmatch(tid) else None
        if task is None or task.user != s.user:
            raise HTTPException(404, "no such task (tasks are kept in the panel's memory)")
        return task

    async def task_page(self, request: Request) -> Response:
        s = self.p._s(request)
        task = self._task(request, s)
        return await self.p.page(request, "task.html", {"t": task.view(), "no_drawer": True})

    async def abort(self, request: Request) -> Response:
        s = self.p._s(request)
        task = self._task(request, s)
        why = await self.p.call(self.p.hub.abort, task.id, s.user)
        if why is not None:
            return await self.p.page(request, "task.html", {"t": task.view(), "error": why,
                                                            "no_drawer": True}, 409)
        if request.headers.get("hx-request"):
            return Response(status_code=204)
        return RedirectResponse(f"/tasks/{task.id}", 303)

    async def dismiss(self, request: Request) -> Response:
        s = self.p._s(request)
        task = self._task(request, s)
        why = self.p.hub.dismiss(task.id, s.user)
        if why is not None:
            return await self.p.page(request, "task.html", {"t": task.view(), "error": why,
                                                            "no_drawer": True}, 409)
        if request.headers.get("hx-request"):
            return Response(status_code=204)
        return RedirectResponse("/", 303)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/vms", self.vms, methods=["GET"]),
            Route("/vms/{vm}/migrate", self.migrate_page, methods=["GET"]),
            Route("/vms/{vm}/migrate", self.migrate_apply, methods=["POST"]),
            Route("/vms/{vm}/{verb}", self.plan, methods=["GET"]),
            Route("/vms/{vm}/{verb}", self.apply, methods=["POST"]),
            Route("/tasks/{task_id}", self.task_page, methods=["GET"]),
            Route("/tasks/{task_id}/abort", self.abort, methods=["POST"]),
            Route("/tasks/{task_id}/dismiss", self.dismiss, methods=["POST"]),
        ]
