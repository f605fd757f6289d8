"""The Ceph page, from the ceph plugin's declared actions (only when the node has them).

=====================================  =====================================================
GET ``/ceph``                          status (``ceph.status``), alerts (``ceph.alerts``),
                                       OSDs (``ceph.osd.list``), pool capacity
                                       (``ceph.pool.capacity``, no growth sample recorded:
                                       looking changes nothing), and noout with its reason
GET ``/fragments/ceph-balance``        PG balance (``ceph.pg.balance`` without ``apply``: a
                                       report), a fragment loaded after the page (rpcd runs
                                       that action in a child process: it can change state
                                       with ``apply``, so a read-only role may not run it)
GET ``/ceph/noout/{set|unset}``        the plan (``ceph.noout.set``/``unset`` dry run, with
                                       the reason), or why there is nothing to do
POST ``/ceph/noout/{set|unset}``       Apply: a live task; the journal can roll it back
=====================================  =====================================================

Each section appears when its action is installed; one rpcd would refuse the user says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .plugpages import PluginPages, Read, plan_page, read, text_field
from .security import form_of

if TYPE_CHECKING:  # pragma: no cover
    pass

#: the actions the page is made of (any one installed: the page exists)
ACTIONS = ("ceph.status", "ceph.alerts", "ceph.osd.list", "ceph.pool.capacity",
           "ceph.pg.balance", "ceph.noout.set", "ceph.noout.unset")
NOOUT = {"set": "ceph.noout.set", "unset": "ceph.noout.unset"}
REASON_MAX = 200



def _noout_noop(verb: str) -> Callable[[Any], str]:
    def noop(result: Any) -> str:
        if isinstance(result, dict) and result.get("flag") == "noout" \
                and result.get("changed") is False:
            return ("noout is already set: nothing to do." if verb == "set"
                    else "noout is not set: nothing to do.")
        return ""
    return noop


class CephPages(PluginPages):
    """The routes of this module (the panel's rpcd client, sessions and hub)."""

    PLUGIN = "ceph"
    ACTIONS = ACTIONS

    async def page(self, request: Request) -> Response:
        s, actions, allowed = await self._need(request)
        status, alerts, osds, capacity = await asyncio.gather(
            read(self.p, s, actions, allowed, "ceph.status"),
            read(self.p, s, actions, allowed, "ceph.alerts"),
            read(self.p, s, actions, allowed, "ceph.osd.list"),
            read(self.p, s, actions, allowed, "ceph.pool.capacity", {"no_record": True}))
        down = bool(status.error) and not status.refused
        if down:  # no cluster to read (not configured, unreachable): say it once
            for r in (alerts, osds, capacity):
                if r.error == status.error:
                    r.missing = True
        noout = None
        for r in (status, alerts):
            if r.ok and isinstance(r.data, dict) and isinstance(r.data.get("noout"), dict):
                noout = r.data["noout"]
                break
        return await self.p.page(request, "ceph.html", {
            "status": status, "alerts": alerts, "osds": osds, "capacity": capacity,
            "noout": noout, "balance": "ceph.pg.balance" in actions and not down,
            "noout_actions": {} if down else {v: p for v, p in NOOUT.items() if p in actions},
            "reason_max": REASON_MAX})

    async def balance(self, request: Request) -> Response:
        s, actions, allowed = await self._need(request)
        r: Read = await read(self.p, s, actions, allowed, "ceph.pg.balance", {"apply": False})
        return self.p.render(request, "_ceph_balance.html", {"balance": r})

    def _noout(self, request: Request, values: dict[str, str]) -> tuple[str, dict[str, Any],
                                                                         dict[str, str]]:
        verb = request.path_params["verb"]
        if verb not in NOOUT:
            raise HTTPException(404, "no such page")
        try:
            reason = text_field(values, "reason", "reason", REASON_MAX)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        params: dict[str, Any] = {"reason": reason} if reason else {}
        return NOOUT[verb], params, ({"reason": reason} if reason else {})

    async def noout_plan(self, request: Request) -> Response:
        s, actions, _ = await self._need(request)
        path, params, fields = self._noout(request, dict(request.query_params))
        if path not in actions:
            raise HTTPException(404, f"this node has no {path} action")
        verb = request.path_params["verb"]
        return await plan_page(self.p, request, s, heading=f"{verb.capitalize()} noout",
                               action=path, params=params, fields=fields,
                               apply_url=f"/ceph/noout/{verb}", back=("/ceph", "Back to Ceph"),
                               noop=_noout_noop(verb))

    async def noout_apply(self, request: Request) -> Response:
        s, actions, _ = await self._need(request)
        path, params, _fields = self._noout(request, form_of(request))
        if path not in actions:
            raise HTTPException(404, f"this node has no {path} action")
        verb = request.path_params["verb"]
        title = f"{verb} noout" + (f" ({params['reason']})" if params.get("reason") else "")
        return await self.p.start_task(request, s, path, params, title)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/ceph", self.page, methods=["GET"]),
            Route("/fragments/ceph-balance", self.balance, methods=["GET"]),
            Route("/ceph/noout/{verb}", self.noout_plan, methods=["GET"]),
            Route("/ceph/noout/{verb}", self.noout_apply, methods=["POST"]),
        ]
