"""The DNS page, from the dns plugin's declared actions (only when the node has them).

=====================================  =====================================================
GET ``/dns``                           the zones (``dns.check``: every server's serial,
                                       DNSSEC and TSIG), a record lookup (``dns.show``:
                                       NAME's records on every server, and whether they
                                       agree), the update form, and the journal's latest
                                       DNS operations (their rollback is on their page)
GET ``/dns/update``                    the plan (``dns.update`` dry run: old -> new)
POST ``/dns/update``                   Apply: a live task whose card shows the propagation
                                       proof (each server, its serial, DNSSEC, how long it
                                       took); the journal can roll it back
=====================================  =====================================================

The plugin has no action that lists a zone's records, so the page shows the records of
the name looked up (every server's answer), not a whole zone.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .plugpages import PluginPages, plan_page, read, text_field
from .security import form_of

if TYPE_CHECKING:  # pragma: no cover
    pass

#: the actions the page is made of (any one installed: the page exists)
ACTIONS = ("dns.check", "dns.show", "dns.update")
TYPES = ("A", "AAAA", "CNAME", "TXT", "PTR")
#: an owner name relative to its zone or fully qualified, or an IP address (PTR)
NAME_RE = re.compile(r"[A-Za-z0-9_*:][A-Za-z0-9_.*:-]{0,252}")
ZONE_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,252}")
VALUE_MAX = 1000
TTL_MAX = 2147483647



def record_fields(values: dict[str, str], *, need_value: bool) -> dict[str, str]:
    """The name, type, zone (and value, TTL) of a lookup or an update, checked; a
    :class:`ValueError` says what is wrong in one sentence."""
    f = {"name": (values.get("name") or "").strip(),
         "type": (values.get("type") or "").strip().upper(),
         "zone": (values.get("zone") or "").strip()}
    if not NAME_RE.fullmatch(f["name"]):
        raise ValueError("A name is 1-253 letters, digits, '.', '-', '_' or '*' (or an IP "
                         "address for a PTR).")
    if f["type"] and f["type"] not in TYPES:
        raise ValueError(f"The record type must be one of {', '.join(TYPES)}.")
    if f["zone"] and not ZONE_RE.fullmatch(f["zone"]):
        raise ValueError("A zone is a domain name such as lab.example.net.")
    if need_value:
        f["value"] = text_field(values, "value", "value", VALUE_MAX)
        if not f["value"]:
            raise ValueError("Enter the record's new value.")
        ttl = (values.get("ttl") or "").strip()
        if ttl and not (ttl.isdigit() and 1 <= int(ttl) <= TTL_MAX):
            raise ValueError(f"The TTL is a number of seconds from 1 to {TTL_MAX}.")
        f["ttl"] = ttl
    return f


def update_params(f: dict[str, str]) -> dict[str, Any]:
    params: dict[str, Any] = {"name": f["name"], "value": f["value"]}
    for k in ("type", "zone"):
        if f.get(k):
            params[k] = f[k]
    if f.get("ttl"):
        params["ttl"] = int(f["ttl"])
    return params


class DnsPages(PluginPages):
    """The routes of this module (the panel's rpcd client, sessions and hub)."""

    PLUGIN = "dns"
    ACTIONS = ACTIONS

    async def page(self, request: Request) -> Response:
        s, actions, allowed = await self._need(request)
        q = dict(request.query_params)
        zones = await read(self.p, s, actions, allowed, "dns.check")
        lookup, lookup_error, f = None, "", {"name": "", "type": "", "zone": ""}
        status = 200
        if q.get("name"):
            try:
                f = record_fields(q, need_value=False)
            except ValueError as exc:
                lookup_error, status = str(exc), 400
                f = {k: (q.get(k) or "")[:253] for k in ("name", "type", "zone")}
            else:
                params = {k: v for k, v in f.items() if v}
                lookup = await read(self.p, s, actions, allowed, "dns.show", params)
        ops = [o for o in await self.p.call(self.p.rpc.list_operations, s.token, 100)
               if str(o.get("kind", "")).startswith("dns.")][:10]
        return await self.p.page(request, "dns.html", {
            "zones": zones, "lookup": lookup, "lookup_error": lookup_error, "f": f,
            "types": TYPES, "show": "dns.show" in actions,
            "update": "dns.update" in actions, "ops": ops}, status)

    def _fields(self, values: dict[str, str]) -> dict[str, str]:
        try:
            return record_fields(values, need_value=True)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    async def update_plan(self, request: Request) -> Response:
        s, actions, _ = await self._need(request)
        if "dns.update" not in actions:
            raise HTTPException(404, "this node has no dns.update action")
        f = self._fields(dict(request.query_params))
        fields = {k: v for k, v in f.items() if v}
        return await plan_page(self.p, request, s, heading=f"Update {f['name']}",
                               action="dns.update", params=update_params(f), fields=fields,
                               apply_url="/dns/update",
                               back=(f"/dns?name={quote(f['name'])}", "Back to DNS"))

    async def update_apply(self, request: Request) -> Response:
        s, actions, _ = await self._need(request)
        if "dns.update" not in actions:
            raise HTTPException(404, "this node has no dns.update action")
        f = self._fields(form_of(request))
        title = f"set {f['name']} {f['type'] or 'A/AAAA'} {f['value'][:60]}"
        return await self.p.start_task(request, s, "dns.update", update_params(f), title)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/dns", self.page, methods=["GET"]),
            Route("/dns/update", self.update_plan, methods=["GET"]),
            Route("/dns/update", self.update_apply, methods=["POST"]),
        ]
