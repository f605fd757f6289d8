"""A client of debvisor-rpcd: mTLS channel, credentials from owner-only files, events.

Used by ``debvisor rpcd call``, ``debvisor --remote``, the ``grpc`` transport, the tests
and other nodes. ``[rpcd.client]``: ``address``, ``ca``, ``cert``, ``key`` (the caller's
certificate from the cluster CA), ``api_key_file`` and ``token_file`` (an OAuth2 bearer
token) — secrets are read from files, never argv.

A query (an action that only reads) goes through the unary ``Call``, anything else
through the streaming ``Invoke``; both come back as the same events (:meth:`Client.call`,
:meth:`Client.invoke`). :func:`record_event` is how a proxy (the web panel's console)
puts its events in the node's audit chain.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from .. import log
from ..errors import BadInput
from ..model import OpResult
from . import ADMITTED, DEFAULT_PORT
from .v1 import debvisor_pb2 as pb
from .v1 import debvisor_pb2_grpc as pbg

if TYPE_CHECKING:  # pragma: no cover
    from ..actions import Action
    from ..context import Context


#: gRPC status -> the CLI's exit code
STATUS_EXIT = {grpc.StatusCode.INVALID_ARGUMENT: 2, grpc.StatusCode.UNAUTHENTICATED: 3,
               grpc.StatusCode.PERMISSION_DENIED: 3, grpc.StatusCode.FAILED_PRECONDITION: 3,
               grpc.StatusCode.RESOURCE_EXHAUSTED: 3}


@dataclass
class Client:
    address: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    api_key_file: str | None = None
    token_file: str | None = None
    insecure_lab: bool = False

    @classmethod
    def from_config(cls, conf: dict[str, Any], **over: Any) -> Client:
        vals: dict[str, Any] = {k: over.get(k) or conf.get(k) for k in
                                ("address", "ca", "cert", "key", "api_key_file", "token_file")}
        if not vals["address"]:
            raise BadInput("no rpcd address: give --address or set [rpcd.client] address")
        return cls(**vals, insecure_lab=bool(over.get("insecure_lab") or conf.get("insecure_lab")))

    def metadata(self) -> list[tuple[str, str]]:
        from ..secrets import read_secret

        md = []
        if self.api_key_file:
            md.append(("x-api-key", read_secret(self.api_key_file, "API key file").decode().strip()))
        if self.token_file:
            tok = read_secret(self.token_file, "token file").decode().strip()
            md.append(("authorization", f"Bearer {tok}"))
        return md

    def channel(self) -> grpc.Channel:
        from ..secrets import read_secret

        if self.insecure_lab:
            return grpc.insecure_channel(self.address)
        if not (self.ca and self.cert and self.key):
            raise BadInput("rpcd client needs [rpcd.client] ca, cert and key (mTLS)")
        creds = grpc.ssl_channel_credentials(
            Path(self.ca).read_bytes(), read_secret(self.key, "client key"),
            Path(self.cert).read_bytes())
        return grpc.secure_channel(self.address, creds)

    def stub(self) -> pbg.NodeStub:
        return pbg.NodeStub(self.channel())

    def invoke(self, action: str, params_json: str, *, dry_run: bool = False, check: bool = False,
               yes: bool = False, timeout: float = 3600, origin: str = "",
               force_maintenance: bool = False) -> Iterator[dict[str, Any]]:
        """The run's events as dicts; an RPC error becomes a ``log`` and a final ``exit`` event."""
        req = pb.InvokeRequest(action=action, params_json=params_json, dry_run=dry_run,
                               check=check, yes=yes, origin=origin,
                               force_maintenance=force_maintenance)
        try:
            for ev in self.stub().Invoke(req, timeout=timeout, metadata=self.metadata()):
                yield json.loads(ev.json)
        except grpc.RpcError as exc:
            yield from self._failed(exc)

    def call(self, action: str, params_json: str, *, timeout: float = 60,
             origin: str = "") -> list[dict[str, Any]]:
        """A query's events, as :meth:`invoke` gives them (ending with ``exit``), from one
        unary ``Call``; an RPC error (a state change is FAILED_PRECONDITION: use
        :meth:`invoke`) becomes a ``log`` and a final ``exit`` event."""
        req = pb.InvokeRequest(action=action, params_json=params_json, origin=origin)
        try:
            resp = self.stub().Call(req, timeout=timeout, metadata=self.metadata())
        except grpc.RpcError as exc:
            return list(self._failed(exc))
        end: dict[str, Any] = {"event": "exit", "code": resp.code}
        if resp.code:  # as the CLI says a failure: its message and hint
            end.update(message=resp.message, hint=resp.hint or None)
        return [*(json.loads(ev.json) for ev in resp.events), end]

    def _failed(self, exc: grpc.RpcError) -> Iterator[dict[str, Any]]:
        """A failed call's ``log`` and ``exit`` events; the exit event also says the RPC
        status (``rpc_status``) and, for ``Invoke``, whether the node had admitted the call
        (``admitted``: its initial metadata came) — a stream cut after that lost a node
        that was running the action, not one that refused it."""
        code = exc.code()
        message = f"{self.address}: {code.name}: {exc.details()}"
        md = getattr(exc, "initial_metadata", None)
        try:
            admitted = any(k == ADMITTED for k, _ in (md() if callable(md) else None) or ())
        except Exception:  # noqa: BLE001 - a call object that never got metadata
            admitted = False
        yield {"event": "log", "level": "error", "message": message}
        yield {"event": "exit", "code": STATUS_EXIT.get(code, 1), "message": message,
               "rpc_status": code.name, "admitted": admitted}


def record_event(stub: pbg.NodeStub, user_token: str, event: Mapping[str, Any], *,
                 timeout: float = 5.0) -> dict[str, Any]:
    """Record a proxy's ``event`` in the node's audit chain (``RecordEvent``), attributed to
    the user of ``user_token`` ("NAME via=PROXY"). ``event`` is the proxy's own dict — the
    web panel's console events as they are: ``{"event": "console.open", "user": …, "vm": …,
    "mode": …, …}`` (``event`` is the kind, ``user`` is dropped: rpcd takes the user from
    the token). The stub's channel must carry a certificate of ``[rpcd] proxies``.

    Returns ``{"seq", "hash", "kind"}`` of the audit record. Raises ``grpc.RpcError``:
    PERMISSION_DENIED (not a proxy, or no user token), UNAUTHENTICATED (the token ended),
    INVALID_ARGUMENT (a kind or field :mod:`.events` does not allow, with the reason),
    UNAVAILABLE (the node's audit log cannot be written: the event was not recorded)."""
    from .events import from_proxy_event

    kind, details = from_proxy_event(event)
    req = pb.RecordEventRequest(kind=kind, details_json=json.dumps(details, default=str))
    resp = stub.RecordEvent(req, timeout=timeout, metadata=[("x-user-token", user_token)])
    out: dict[str, Any] = json.loads(resp.json)
    return out


def render(ctx: Context, ev: dict[str, Any], code: int,
           on_result: Callable[[Any], None] | None = None) -> int:
    """Replay one event of the node's run on this invocation's run UI (the terminal's, or
    the --events one): the node's run looks like a local one. Returns the exit code so far.
    ``on_result`` shows the final result (default: as generic data)."""
    from ..model import Finding
    from ..ui import JsonEventsUI

    ui = ctx.ui
    kind = ev.get("event")
    if kind == "log":
        getattr(log, {"warning": "warn"}.get(ev["level"], ev["level"]), log.info)(ev["message"])
    elif kind == "plan":
        ui.plan(ev["title"], ev.get("steps", []), [Finding(**f) for f in ev.get("findings", [])],
                verb=str(ev.get("verb") or "plan").capitalize())
    elif kind == "step":
        ui.step(ev["index"], ev["total"], ev["description"], ev["status"])
    elif kind == "undo":
        ui.undo(ev["index"], ev["description"], ev["status"])
    elif kind == "note":
        ui.note(ev["text"])
    elif kind == "progress":
        ui.progress(ev["label"], ev["done"], ev.get("total"), eta=ev.get("eta"), rate=ev.get("rate"),
                    note=ev.get("note", ""))
    elif kind == "result":
        if on_result is not None:
            on_result(ev["result"])
        else:
            ctx.emit(ev["result"])
    elif kind == "exit":  # its message came as a log event already
        if isinstance(ui, JsonEventsUI) and ev.get("code"):  # the CLI says only a failure
            ui.emit("exit", code=ev.get("code", 0), message=ev.get("message"), hint=ev.get("hint"))
        return int(ev.get("code") or 0)
    return code


def node_address(ctx: Context, node: str) -> str:
    """host:port of ``node``'s rpcd: ``[rpcd.nodes.NODE] address``, else NODE itself when it
    has a port, else NODE:7443."""
    nodes = ctx.section("rpcd").get("nodes") or {}
    conf = nodes.get(node) if isinstance(nodes, dict) else None
    if isinstance(conf, dict) and conf.get("address"):
        return str(conf["address"])
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}",
                        node):
        raise BadInput(f"--remote {node[:60]!r}: not a node name or host:port")
    return node if ":" in node else f"{node}:{DEFAULT_PORT}"


def run_remote(ctx: Context, action: Action, raw: dict[str, Any]) -> int:
    """Run ``action`` with the CLI's parsed parameters on ``ctx.remote``'s rpcd, showing the
    node's run as if it were local; returns the exit code."""
    from ..engine import emit_result

    opts = ctx.op_options  # --rollback/--force-maintenance: refused by operation_options
    assert ctx.remote is not None
    client = Client.from_config(ctx.section("rpcd").get("client") or {},
                                address=node_address(ctx, ctx.remote))

    def on_result(data: Any) -> None:
        if action.plan is not None and isinstance(data, dict) and "steps" in data:
            emit_result(ctx, OpResult(**data), action.render)
        else:
            ctx.emit(data, action.render if action.plan is None else action.unchanged)

    return stream(ctx, client, action.path, json.dumps(raw), dry_run=opts.dry_run,
                  check=opts.check, yes=ctx.yes, on_result=on_result,
                  query=not action.changes_state)


def stream(ctx: Context, client: Client, action: str, params_json: str, *, dry_run: bool,
           check: bool, yes: bool, timeout: float = 3600,
           on_result: Callable[[Any], None] | None = None, query: bool = False) -> int:
    """Run ``action`` on the node — a ``query`` (it only reads) with Call, anything else
    with Invoke — and replay the node's run here (:func:`render`); the exit code."""
    code = 0
    if query and not (dry_run or check):
        events: Iterator[dict[str, Any]] = iter(client.call(action, params_json, timeout=timeout))
    else:
        events = client.invoke(action, params_json, dry_run=dry_run, check=check, yes=yes,
                               timeout=timeout)
    for ev in events:
        code = render(ctx, ev, code, on_result)
    return code


__all__ = ["STATUS_EXIT", "Client", "node_address", "record_event", "render", "run_remote",
           "stream"]
