"""The panel's rpcd client: one mTLS channel with the panel's proxy certificate, every call
made with the logged-in person's token (``x-user-token``).

The certificate alone is nobody (``[rpcd] proxies``): without a user token rpcd answers
UNAUTHENTICATED, so the panel can only ever do what the person could. Reads have a 2 s
deadline (``[panel] read_timeout``); the few reads that run plugin code in the daemon
(health, ``hv.list``, the audit chain) get ``slow_read_timeout``. gRPC errors become one
sentence: :class:`SessionEnded` (UNAUTHENTICATED: the panel session ends),
:class:`Refused` (PERMISSION_DENIED: shown as refused, with rpcd's reason),
:class:`Unavailable` and :class:`RpcFailure` for the rest.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ..rpcd import ADMITTED
from ..rpcd.v1 import debvisor_pb2 as pb
from ..rpcd.v1 import debvisor_pb2_grpc as pbg
from .settings import PanelSettings

TOKEN_KEY = "x-user-token"  # the metadata rpcd's Guard reads a session token from


class RpcFailure(Exception):
    """A call to rpcd failed; ``message`` is one sentence for the page."""

    status = 502

    def __init__(self, message: str, code: str = "", details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        #: rpcd's own words (the gRPC status details), when it gave any
        self.details = details


class SessionEnded(RpcFailure):
    """rpcd does not (or no longer) accept the user's token: the session ends."""

    status = 401


class Refused(RpcFailure):
    """rpcd refused the call (PERMISSION_DENIED), with its reason."""

    status = 403


class Unavailable(RpcFailure):
    """rpcd cannot be reached or did not answer in time."""

    status = 503


class BadRequest(RpcFailure):
    """rpcd says the request is invalid (INVALID_ARGUMENT, FAILED_PRECONDITION)."""

    status = 400


def _mapped(exc: grpc.RpcError, what: str) -> RpcFailure:
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    name = code.name if code is not None else "UNKNOWN"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return SessionEnded(f"rpcd ended the session: {details or 'not authenticated'}", name,
                            details)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return Refused(f"refused by rpcd: {details or 'permission denied'}", name, details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        why = "did not answer in time" if code == grpc.StatusCode.DEADLINE_EXCEEDED \
            else f"is unreachable ({details.splitlines()[0] if details else 'unavailable'})"
        return Unavailable(f"rpcd {why} ({what})", name)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND):
        return BadRequest(f"{what}: {details}", name)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Unavailable(f"rpcd is busy: {details}", name)
    return RpcFailure(f"{what} failed: {name}: {details}", name)


@dataclass(frozen=True)
class LoginResult:
    token: str
    user: str
    roles: tuple[str, ...]
    expires: float
    idle_timeout: float


@dataclass(frozen=True)
class RunResult:
    """A streamed run (Invoke, RollbackOperation): every event, the exit code, the result."""

    events: list[dict[str, Any]]
    code: int
    result: Any

    @property
    def message(self) -> str:
        """The run's error message, if it failed."""
        for ev in reversed(self.events):
            if ev.get("event") == "exit" and ev.get("message"):
                return str(ev["message"])
            if ev.get("event") == "log" and ev.get("level") == "error":
                return str(ev.get("message", ""))
        return f"exit code {self.code}" if self.code else ""


class Rpcd:
    """The panel's client of one rpcd; thread-safe (one channel, created on first use)."""

    def __init__(self, settings: PanelSettings) -> None:
        self.settings = settings
        self._stub: pbg.NodeStub | None = None
        self._channel: grpc.Channel | None = None
        self._lock = threading.Lock()

    def stub(self) -> pbg.NodeStub:
        with self._lock:
            if self._stub is None:
                s = self.settings
                if not (s.ca and s.cert and s.key):
                    raise Unavailable("the panel has no rpcd client certificate "
                                      "([panel] ca, cert and key)")
                from ..errors import BadInput
                from ..secrets import read_secret

                try:
                    creds = grpc.ssl_channel_credentials(
                        Path(s.ca).read_bytes(), read_secret(s.key, "panel client key"),
                        Path(s.cert).read_bytes())
                except OSError as exc:
                    raise Unavailable(f"the panel's rpcd certificate files: {exc.strerror}: "
                                      f"{exc.filename}") from None
                except BadInput as exc:
                    raise Unavailable(exc.message) from None
                opts = [("grpc.ssl_target_name_override", s.rpcd_server_name)] \
                    if s.rpcd_server_name else []
                self._channel = grpc.secure_channel(s.rpcd_address, creds, options=opts)
                self._stub = pbg.NodeStub(self._channel)
            return self._stub

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = self._stub = None

    @staticmethod
    def _md(token: str) -> list[tuple[str, str]]:
        return [(TOKEN_KEY, token)]

    def _unary(self, what: str, method: str, request: Any, token: str | None,
               timeout: float | None = None) -> Any:
        fn = getattr(self.stub(), method)
        try:
            return fn(request, timeout=timeout or self.settings.read_timeout,
                      metadata=self._md(token) if token is not None else None)
        except grpc.RpcError as exc:
            raise _mapped(exc, what) from None

    def _json(self, what: str, method: str, request: Any, token: str,
              timeout: float | None = None) -> tuple[Any, int]:
        resp = self._unary(what, method, request, token, timeout)
        try:
            return json.loads(resp.json or "null"), int(resp.code)
        except ValueError:
            raise RpcFailure(f"{what}: rpcd answered with something that is not JSON") from None

    def _stream(self, what: str, call: Any) -> Iterator[dict[str, Any]]:
        try:
            for ev in call:
                try:
                    data = json.loads(ev.json)
                except ValueError:
                    continue
                if isinstance(data, dict):
                    yield data
        except grpc.RpcError as exc:
            raise _mapped(exc, what) from None

    # -- people ----------------------------------------------------------------------------
    def login(self, user: str, password: str) -> LoginResult:
        """Exchange a password for a user token; SessionEnded when rpcd says no."""
        r = self._unary("login", "Login", pb.LoginRequest(user=user, password=password), None,
                        timeout=max(self.settings.read_timeout, 5.0))
        return LoginResult(r.token, r.user, tuple(r.roles), r.expires_at, r.idle_timeout)

    def login_oidc(self, id_token: str) -> LoginResult:
        """Exchange an OIDC ID token for a user token (rpcd verifies it against its JWKS);
        SessionEnded when rpcd does not accept the token, Refused when its user has no
        role there."""
        r = self._unary("SSO login", "Login", pb.LoginRequest(oidc_id_token=id_token), None,
                        timeout=max(self.settings.read_timeout, 5.0))
        return LoginResult(r.token, r.user, tuple(r.roles), r.expires_at, r.idle_timeout)

    def logout(self, token: str) -> None:
        self._unary("logout", "Logout", pb.LogoutRequest(), token)

    def whoami(self, token: str) -> dict[str, Any]:
        data, _ = self._json("who am I", "WhoAmI", pb.WhoAmIRequest(), token)
        return data if isinstance(data, dict) else {}

    # -- reads -----------------------------------------------------------------------------
    def health(self, token: str) -> dict[str, Any]:
        data, _ = self._json("health", "Health", pb.HealthRequest(), token,
                             self.settings.slow_read_timeout)
        return data if isinstance(data, dict) else {}

    def list_actions(self, token: str) -> list[dict[str, Any]]:
        resp = self._unary("list actions", "ListActions", pb.ListActionsRequest(), token)
        return [{"path": a.path, "plugin": a.plugin, "summary": a.summary,
                 "changes_state": a.changes_state, "destructive": a.destructive}
                for a in resp.actions]

    def list_operations(self, token: str, limit: int = 50) -> list[dict[str, Any]]:
        data, _ = self._json("list operations", "ListOperations",
                             pb.ListOperationsRequest(limit=limit), token)
        return data if isinstance(data, list) else []

    def show_operation(self, token: str, op_id: str) -> dict[str, Any] | None:
        """One operation, or None when the journal has no such operation."""
        data, code = self._json("show operation", "ListOperations",
                                pb.ListOperationsRequest(id=op_id), token)
        return data if code == 0 and isinstance(data, dict) else None

    def verify_audit(self, token: str) -> dict[str, Any]:
        data, _ = self._json("verify the audit log", "VerifyAudit", pb.VerifyAuditRequest(),
                             token, self.settings.slow_read_timeout)
        return data if isinstance(data, dict) else {}

    def audit_events(self, token: str, since: str = "") -> Iterator[dict[str, Any]]:
        """The audit records since ``since`` (as `debvisor audit show --since`)."""
        call = self.stub().AuditEvents(pb.AuditEventsRequest(since=since),
                                       timeout=self.settings.slow_read_timeout,
                                       metadata=self._md(token))
        yield from self._stream("audit events", call)

    # -- runs ------------------------------------------------------------------------------
    def invoke(self, token: str, path: str, params_json: str = "{}", *, dry_run: bool = False,
               yes: bool = False, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Run an action; its events as they come."""
        req = pb.InvokeRequest(action=path, params_json=params_json, dry_run=dry_run, yes=yes)
        call = self.stub().Invoke(req, timeout=timeout or self.settings.slow_read_timeout,
                                  metadata=self._md(token))
        yield from self._stream(path, call)

    def start(self, token: str, path: str, params_json: str = "{}", *, yes: bool = True,
              timeout: float = 6 * 3600.0) -> Running:
        """Start an action whose events are read as they come and that can be cancelled
        (rpcd then stops it like Ctrl-C: applied steps are rolled back)."""
        req = pb.InvokeRequest(action=path, params_json=params_json, yes=yes)
        call = self.stub().Invoke(req, timeout=timeout, metadata=self._md(token))
        return Running(call, self._stream(path, call), path)

    def run(self, token: str, path: str, params_json: str = "{}", *, dry_run: bool = False,
            yes: bool = False, timeout: float | None = None) -> RunResult:
        """Run an action to its end: every event, the exit code and the final result."""
        return collect(self.invoke(token, path, params_json, dry_run=dry_run, yes=yes,
                                   timeout=timeout))

    def rollback(self, token: str, op_id: str, *, dry_run: bool = False,
                 timeout: float = 3600.0) -> Iterator[dict[str, Any]]:
        """Roll an operation back (confirmed: the panel asked first); events as they come."""
        call = self.stub().RollbackOperation(pb.RollbackRequest(id=op_id, dry_run=dry_run,
                                                                yes=not dry_run),
                                             timeout=timeout, metadata=self._md(token))
        yield from self._stream(f"rollback of {op_id}", call)


class Running:
    """A started Invoke: ``events`` as they come (raising :class:`RpcFailure`), ``cancel()``."""

    def __init__(self, call: Any, events: Iterator[dict[str, Any]], what: str = "") -> None:
        self._call = call
        self.events = events
        self.what = what

    def admitted(self) -> None:
        """Wait until rpcd admitted the call (its initial metadata, sent before the action
        runs); raise the :class:`RpcFailure` of a refused call (PERMISSION_DENIED, ...)."""
        md = self._call.initial_metadata()
        if md and any(k == ADMITTED for k, _ in md):
            return
        if self._call.done():
            code = self._call.code()
            if code is not None and code != grpc.StatusCode.OK:
                raise _mapped(self._call, self.what)

    def cancel(self) -> bool:
        """Cancel the call (rpcd stops the action); False when it had already ended."""
        return bool(self._call.cancel())

    @property
    def cancelled(self) -> bool:
        return bool(self._call.cancelled())


def collect(events: Iterator[dict[str, Any]]) -> RunResult:
    """Drain a run's events into a :class:`RunResult`."""
    seen: list[dict[str, Any]] = []
    code, result = 0, None
    for ev in events:
        seen.append(ev)
        if ev.get("event") == "result":
            result = ev.get("result")
        elif ev.get("event") == "exit":
            code = int(ev.get("code") or 0)
    return RunResult(seen, code, result)
