"""What the plugin pages (:mod:`.cephpage`, :mod:`.dnspage`) share.

A plugin page is built from the actions the node's rpcd lists (ListActions): the page and
its link in the navigation exist only when one of its actions is installed, and each
section of it only when its own action is. A section is one read action run through rpcd
with the user's token (:func:`read`); a section whose action rpcd would refuse the user
(WhoAmI) says so instead of calling it. A change is plan-then-apply, as on the VM pages:
the action's dry run through rpcd shows the plan (:func:`plan_page`), and Apply (a POST
with the CSRF token) runs it as a live task (:meth:`.app.Panel.start_task`), journalled by
the engine and so rolled back from the operations journal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from .rpc import BadRequest, Refused, Unavailable
from .vms import plan_of

if TYPE_CHECKING:  # pragma: no cover
    from .app import Panel
    from .sessions import Session

#: printable text of a free-text field (a reason, a TXT value): no control characters
_TEXT_RE = re.compile(r"[^\x00-\x1f\x7f]*")


@dataclass
class Read:
    """One read action's answer for a page section: its data, or why there is none."""

    path: str
    summary: str = ""
    data: Any = None
    error: str = ""
    refused: bool = False
    missing: bool = False

    @property
    def ok(self) -> bool:
        return not (self.error or self.missing or self.refused)


class PluginPages:
    """The routes of one plugin's page (``PLUGIN``), there only when rpcd lists one of its
    ``ACTIONS`` on this node."""

    PLUGIN = ""
    ACTIONS: tuple[str, ...] = ()

    def __init__(self, panel: Panel) -> None:
        self.p = panel

    @classmethod
    def present(cls, actions: dict[str, Any] | None) -> bool:
        return bool(actions) and any(a in (actions or {}) for a in cls.ACTIONS)

    async def _need(self, request: Request) -> tuple[Session, dict[str, Any], set[str]]:
        s = self.p._s(request)
        actions = await self.p.actions(s)
        if not self.present(actions):
            from starlette.exceptions import HTTPException

            raise HTTPException(404, f"the {self.PLUGIN} plugin is not installed on this node")
        return s, actions, await self.p.allowed(s)


def text_field(values: dict[str, str], name: str, label: str, limit: int) -> str:
    """A free-text field, stripped; :class:`ValueError` (one sentence) when it is too
    long or holds control characters."""
    value = (values.get(name) or "").strip()
    if len(value) > limit:
        raise ValueError(f"The {label} is longer than {limit} characters.")
    if not _TEXT_RE.fullmatch(value):
        raise ValueError(f"The {label} must not contain control characters (tabs, new lines).")
    return value


async def read(panel: Panel, s: Session, actions: dict[str, Any], allowed: set[str],
               path: str, params: dict[str, Any] | None = None) -> Read:
    """Run the read action ``path`` for the page (when installed and allowed)."""
    summary = str((actions.get(path) or {}).get("summary") or "")
    if path not in actions:
        return Read(path, summary, missing=True)
    if path not in allowed:
        return Read(path, summary, refused=True,
                    error=f"Your role cannot run {path} (rpcd would refuse it).")
    try:
        res = await panel.call(panel.rpc.run, s.token, path, json.dumps(params or {}))
    except Refused as exc:
        return Read(path, summary, refused=True, error=exc.message)
    except (BadRequest, Unavailable) as exc:
        return Read(path, summary, error=exc.message)
    if res.code:
        return Read(path, summary, data=res.result, error=res.message)
    return Read(path, summary, data=res.result)


async def plan_page(panel: Panel, request: Request, s: Session, *, heading: str, action: str,
                    params: dict[str, Any], fields: dict[str, str], apply_url: str,
                    back: tuple[str, str], noop: Callable[[Any], str] | None = None) -> Response:
    """The plan of ``action`` with ``params`` (its dry run through rpcd) and, when the
    preflight allows it, the Apply form (``fields`` as hidden inputs, POSTed to
    ``apply_url``). ``noop(result)`` says why there is nothing to apply (e.g. the flag is
    already set) or ""."""
    try:
        res = await panel.call(panel.rpc.run, s.token, action, json.dumps(params),
                               dry_run=True)
    except (BadRequest, Refused) as exc:
        return await panel.page(request, "action_plan.html", {
            "heading": heading, "action": action, "fields": fields, "apply_url": apply_url,
            "back": back, "noop": "", "no_drawer": False,
            "plan": {"title": "", "steps": [], "findings": [], "ok": False,
                     "error": exc.message}}, exc.status)
    plan = plan_of(res)
    why_noop = noop(res.result) if noop is not None and res.code == 0 else ""
    return await panel.page(request, "action_plan.html", {
        "heading": heading, "action": action, "fields": fields, "apply_url": apply_url,
        "back": back, "noop": why_noop, "plan": plan, "no_drawer": False})
