"""debvisor-rpcd: the node's gRPC API (``debvisor rpcd serve``).

A sync ``grpc.server`` (measured here: 1.6× less CPU per call than grpc.aio) with:

- mTLS on the one port (client certificates from the cluster CA), reloaded on SIGHUP
  without dropping the service; plain text only with
  ``--insecure-lab`` on a loopback address;
- a guard (:class:`Guard`) around every handler kind it serves — unary and server
  streaming — that denies any other kind and any method it does not know: identity from
  the certificate, an OAuth2 bearer token or an API key (:mod:`.authz`), RBAC, a token
  bucket per identity, a deadline on every call, and a blocking call log (:mod:`.calllog`);
- the declared actions: read-only ones run in the daemon (a thread, a recording UI),
  state changes in a child ``debvisor --events actions run`` process — the CLI's engine,
  preflight, rollback and audit, cancelled like Ctrl-C when the call is. ``Invoke``
  streams any action's events; ``Call`` answers a query in one message (a unary call
  costs about half a stream) and refuses a state change;
- ``RecordEvent``: a proxy's event (the panel's console) in the node's audit chain, for
  the logged-in user whose token it forwards (:mod:`.events` says what it may carry);
- the standard ``grpc.health.v1`` service, and Prometheus metrics on their own port.

docs/rpcd.md is the reference (methods, the call log, settings, what a call costs).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import signal
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from .. import actions as _actions
from .. import log
from ..actions import Outcome
from ..audit import caller_env
from ..context import Context, OpOptions
from ..errors import BadInput, DebvisorError
from ..output import report
from ..settings import Section
from ..ui import RecordingUI
from . import ADMITTED, DEFAULT_PORT
from .authz import Bucket, Caller, JwtVerifier, Policy
from .calllog import CallLog, c_encoder
from .v1 import debvisor_pb2 as pb
from .v1 import debvisor_pb2_grpc as pbg

if TYPE_CHECKING:  # pragma: no cover
    from ..actions import Action

SERVICE = "debvisor.v1.Node"
CALL = f"/{SERVICE}/Call"
LOGIN = f"/{SERVICE}/Login"
#: the caller of the call being served and its call-log record (a handler adds to it:
#: what it ran, the reason it denies); one variable, set once a call
_call: contextvars.ContextVar[tuple[Caller, dict[str, Any]] | None] = \
    contextvars.ContextVar("rpcd_call", default=None)
#: methods anyone with a valid TLS connection may call (probes); mTLS still applies
UNAUTHENTICATED_OK = ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch")
#: methods every authenticated caller may reach without a role: Login and Logout are about
#: the caller itself; RecordEvent checks its own, stricter, rule (a proxy and a user token)
SELF_SERVICE = ("rpc:Login", "rpc:Logout", "rpc:RecordEvent")
#: methods that only read and are logged once, before their answer leaves (blocking all the
#: same: no line, no answer); every other method is logged when admitted and when done
LOGGED_ONCE = frozenset({CALL})
#: methods that keep their own deadline (Call's is :meth:`Node.Call`'s): a state change runs
#: at most ``max_operation_s``, stopped like Ctrl-C, a query ``default_deadline_s``. The
#: guard holds the others to ``default_deadline_s`` — :data:`LONG_READS` to
#: ``max_operation_s`` — except :data:`SELF_SERVICE`, whose answer says what was done
#: (a session made or ended, an event written): never refused once it is
OWN_DEADLINE = frozenset({f"/{SERVICE}/Invoke", f"/{SERVICE}/RollbackOperation"})
#: reads that may take long on a big node (the whole audit chain)
LONG_READS = frozenset({f"/{SERVICE}/AuditEvents", f"/{SERVICE}/VerifyAudit"})
#: the metrics' method label of a call to a method that is not served (the call log has it)
NOT_SERVED = "(not served)"


@dataclass
class Settings:
    """``[rpcd]`` of the config (read through :class:`~debvisor_core.settings.Section`),
    with the command line's overrides. Plain text (``insecure_lab``) comes only from the
    ``--insecure-lab`` flag, never from a config file."""

    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    ca: str = ""
    cert: str = ""
    key: str = ""
    insecure_lab: bool = False
    metrics_listen: str = ""
    call_log: str = ""
    #: the executor's socket (:mod:`.executor`): state changes run there, not as children
    exec_socket: str = ""
    durable_log: bool = True
    max_workers: int = 32
    max_concurrent: int = 64
    max_message_bytes: int = 1 << 20
    default_deadline_s: float = 60.0
    max_operation_s: float = 6 * 3600.0
    rate: float = 20.0
    burst: float = 40.0
    jwks_file: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = "debvisor"
    session_ttl: float = 900.0
    session_max: float = 12 * 3600.0
    oidc_jwks_file: str = ""
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_username_claim: str = "preferred_username"
    #: roles, identities and proxies (``[rpcd.roles.NAME]``, ``[rpcd.identities]``, ``proxies``)
    policy: Policy = field(default_factory=Policy)

    _STRINGS = ("listen", "ca", "cert", "key", "metrics_listen", "call_log", "exec_socket", "jwks_file",
                "jwt_issuer", "jwt_audience", "oidc_jwks_file", "oidc_issuer", "oidc_audience",
                "oidc_username_claim")
    #: name, default, minimum, maximum (whole numbers)
    _INTS = (("max_workers", 32, 1, 4096), ("max_concurrent", 64, 1, 1 << 20),
             ("max_message_bytes", 1 << 20, 1024, 1 << 30))
    #: name, default, greater than, minimum, unit
    _NUMBERS = (("default_deadline_s", 60.0, 0.0, None, "seconds"),
                ("max_operation_s", 6 * 3600.0, 0.0, None, "seconds"),
                ("rate", 20.0, None, 0.0, "calls a second"), ("burst", 40.0, None, 1.0, "calls"),
                ("session_ttl", 900.0, 0.0, None, "seconds"),
                ("session_max", 12 * 3600.0, 0.0, None, "seconds"))

    @classmethod
    def from_section(cls, s: Section, **over: Any) -> Settings:
        """Read ``s`` (the ``[rpcd]`` table): a wrong type or value is one sentence naming
        the key and the config file; ``over`` (command-line values) wins when given."""
        vals: dict[str, Any] = {}
        for name in cls._STRINGS:
            v = s.string(name)
            if v is not None:
                vals[name] = v
        vals["durable_log"] = s.boolean("durable_log", True)
        for name, default, lo, hi in cls._INTS:
            vals[name] = int(s.number(name, default, minimum=lo, maximum=hi, integer=True))
        for name, dflt, above, minimum, unit in cls._NUMBERS:
            vals[name] = float(s.number(name, dflt, above=above, minimum=minimum, unit=unit))
        if vals["session_ttl"] > vals["session_max"]:
            raise s.error("session_ttl", "must not be longer than session_max")
        vals["policy"] = Policy.from_section(s)
        vals.update({k: v for k, v in over.items() if v not in (None, "")})
        return cls(**vals)

    @classmethod
    def from_context(cls, ctx: Context, **over: Any) -> Settings:
        """``[rpcd]`` of the config in effect."""
        return cls.from_section(Section.of(ctx, "rpcd"), **over)


#: the latency histogram's buckets (prometheus-client's default ones), seconds
_BOUNDS = (.005, .01, .025, .05, .075, .1, .25, .5, .75, 1.0, 2.5, 5.0, 7.5, 10.0, float("inf"))


#: calls counted but not yet tallied, at most (then the call that adds one tallies them)
_TALLY_AT = 4096
#: seconds a scrape shows the health checks' last states before running them again
HEALTH_TTL = 30.0


class Metrics:
    """Prometheus metrics, served on their own port. The per-call ones — calls by method
    and code, their latency, actions run — are appended to a queue (no lock, no lookup),
    tallied into plain numbers when scraped or when the queue is long, and made into
    metric families (prometheus-client's, the same series) when scraped: updating
    prometheus-client's labelled children cost ~4 µs of every call. The health gauge is
    prometheus-client's own, set by every ``Health`` call and, when a scrape finds it older
    than :data:`HEALTH_TTL`, by running the checks then (``health_source``)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.registry = CollectorRegistry()
        #: (method, code, elapsed or None, time) and (action, exit code, time), not tallied
        self._new_calls: deque[tuple[str, str, float | None, float]] = deque()
        self._new_ops: deque[tuple[str, int, float]] = deque()
        self._lock = threading.Lock()  # held by the one tally running
        #: (method, code) -> [count, created]; method -> [per-bucket counts..., sum, created];
        #: (action, exit) -> [count, created]
        self._calls: dict[tuple[str, str], list[float]] = {}
        self._latency: dict[str, list[float]] = {}
        self._ops: dict[tuple[str, str], list[float]] = {}
        self.registry.register(self)
        self.health = Gauge("debvisor_health_check", "Health check state (0 ok, 1 warn, 2 crit)",
                            ["check"], registry=self.registry)
        #: runs the health checks (and sets the gauge): the daemon's
        self.health_source: Callable[[], Any] | None = None
        self.health_at = float("-inf")  # time.monotonic() of the gauge's last setting
        self._health_running = threading.Lock()

    def health_states(self, data: Any) -> None:
        """Set the gauge from ``health.run``'s result."""
        for c in (data or {}).get("checks", []) if isinstance(data, dict) else []:
            self.health.labels(c.get("name", "?")).set(
                {"ok": 0, "warn": 1}.get(c.get("status", ""), 2))
        self.health_at = time.monotonic()

    def call(self, method: str, code: str, elapsed: float | None = None,
             when: float | None = None) -> None:
        """Count a call (its method served, so the labels stay few) and its latency;
        ``when``: its ``time.time()``, when the caller has read it already."""
        self._new_calls.append((method, code, elapsed, time.time() if when is None else when))
        if len(self._new_calls) > _TALLY_AT:
            self._tally()

    def op(self, action: str, code: int) -> None:
        self._new_ops.append((action, code, time.time()))
        if len(self._new_ops) > _TALLY_AT:
            self._tally()

    def _tally(self) -> None:
        """Add the calls and actions counted since the last tally to the totals."""
        with self._lock:
            calls, latency, ops = self._calls, self._latency, self._ops
            new = self._new_calls
            for _ in range(len(new)):  # what is there now: appends go on meanwhile
                method, code, elapsed, now = new.popleft()
                c = calls.get((method, code))
                if c is None:
                    c = calls[(method, code)] = [0, now]
                c[0] += 1
                if elapsed is not None:
                    h = latency.get(method)
                    if h is None:
                        h = latency[method] = [0] * len(_BOUNDS) + [0.0, now]
                    h[bisect_left(_BOUNDS, elapsed)] += 1  # the first bound >= it, as p-c
                    h[-2] += elapsed
            new_ops = self._new_ops
            for _ in range(len(new_ops)):
                action, exit_code, now = new_ops.popleft()
                c = ops.get((action, str(exit_code)))
                if c is None:
                    c = ops[(action, str(exit_code))] = [0, now]
                c[0] += 1

    def collect(self) -> Iterator[Any]:
        """The metric families, as prometheus-client's Counter and Histogram make them."""
        from prometheus_client import metrics as pm
        from prometheus_client.metrics_core import Metric
        from prometheus_client.utils import floatToGoString

        created = bool(getattr(pm, "_use_created", True))  # PROMETHEUS_DISABLE_CREATED_SERIES
        if self.health_source is not None and time.monotonic() - self.health_at > HEALTH_TTL \
                and self._health_running.acquire(blocking=False):  # one run for concurrent scrapes
            try:
                self.health_source()  # the gauge collects after this collector (registered first)
            finally:
                self._health_running.release()
        self._tally()
        with self._lock:
            calls = [(k, list(v)) for k, v in self._calls.items()]
            latency = [(k, list(v)) for k, v in self._latency.items()]
            ops = [(k, list(v)) for k, v in self._ops.items()]

        def counter(name: str, doc: str, labels: tuple[str, str],
                    rows: list[tuple[tuple[str, str], list[float]]]) -> Any:
            m = Metric(name, doc, "counter")
            for values, (count, since) in rows:
                lab = dict(zip(labels, values, strict=True))
                m.add_sample(name + "_total", lab, float(count))
                if created:
                    m.add_sample(name + "_created", lab, since)
            return m

        yield counter("debvisor_rpcd_calls", "RPCs by method and status code", ("method", "code"),
                      calls)
        name = "debvisor_rpcd_call_seconds"
        h = Metric(name, "RPC latency", "histogram")
        for method, row in latency:
            lab, acc = {"method": method}, 0.0
            for bound, n in zip(_BOUNDS, row, strict=False):
                acc += n
                h.add_sample(name + "_bucket", {**lab, "le": floatToGoString(bound)}, acc)
            h.add_sample(name + "_count", lab, acc)
            h.add_sample(name + "_sum", lab, row[-2])
            if created:
                h.add_sample(name + "_created", lab, row[-1])
        yield h
        yield counter("debvisor_rpcd_operations", "Actions run, by action and exit code",
                      ("action", "exit"), ops)

    def serve(self, listen: str, certfile: str = "", keyfile: str = "") -> None:
        from prometheus_client import start_http_server

        host, _, port = listen.rpartition(":")
        kw: dict[str, Any] = {"certfile": certfile, "keyfile": keyfile} if certfile else {}
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.registry, **kw)


class Guard(grpc.ServerInterceptor):
    """Authentication, RBAC, rate limits, deadlines and the blocking call log, around every
    handler; a handler kind it does not wrap (client or bidi streaming) is denied, and so is
    any method the service does not declare. The wrapped handler of each served method is
    made once (the table is as small as the service)."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self._wrapped: dict[str, Any] = {}
        #: callers admitted on a certificate alone or with an API key, by (CN, the key's
        #: SHA-256, permission): (the key store's version and the key's expiry they hold
        #: until, the caller, its label). The policy is fixed for the daemon's life; a
        #: changed store (a revocation) or an expired key makes the next call check again.
        self._admitted: dict[tuple[str, bytes | None, str], tuple[int, float | None, Caller, str]] = {}

    def intercept_service(self, continuation: Callable[[Any], Any],
                          details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = continuation(details)
            wrapped = self._wrap(method, handler)
            if handler is not None:
                self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        if method in UNAUTHENTICATED_OK and handler is not None:
            return handler
        if handler is None or not method.startswith(f"/{SERVICE}/"):
            return self._deny_all(method, "method not exposed", handler)
        if handler.request_streaming:
            return self._deny_all(method, "streaming requests are not served", handler)
        perm = "rpc:" + method.rsplit("/", 1)[1]
        if handler.unary_unary is not None and method in LOGGED_ONCE:
            inner_once = handler.unary_unary

            def once(request: Any, context: grpc.ServicerContext) -> Any:
                return self._once(method, perm, inner_once, request, context)

            return grpc.unary_unary_rpc_method_handler(once, handler.request_deserializer,
                                                       handler.response_serializer)
        own = method in OWN_DEADLINE or perm in SELF_SERVICE
        s = self.d.settings
        limit = s.max_operation_s if method in LONG_READS else s.default_deadline_s
        name = method.rsplit("/", 1)[1]

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                with self._served(method, perm, request, context):
                    if own:
                        return inner(request, context)
                    end = deadline(context, limit)
                    response = inner(request, context)
                    in_time(context, end, name)  # a handler here cannot be stopped: its answer can
                    return response

            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer,
                                                       handler.response_serializer)
        if handler.unary_stream is not None:
            inner_s = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                with self._served(method, perm, request, context):
                    if own:
                        yield from inner_s(request, context)
                        return
                    end = deadline(context, limit)
                    for message in inner_s(request, context):  # none leaves after the deadline
                        in_time(context, end, name)
                        yield message

            return grpc.unary_stream_rpc_method_handler(stream, handler.request_deserializer,
                                                        handler.response_serializer)
        return self._deny_all(method, "this kind of method is not served", handler)

    @contextlib.contextmanager
    def _served(self, method: str, perm: str, request: Any,
                context: grpc.ServicerContext) -> Iterator[None]:
        """Admit the call (or abort it; logged), log it, run the handler, log its outcome
        and duration. The call log's fsyncs wait for its last line only once the handler
        (a stream, maybe for hours) is done (:class:`_Pool`)."""
        t0, rec, token = self._admit(method, perm, request, context, log_start=True)
        calllog = self.d.calllog
        calllog.leave()  # not waited for while the handler runs (a stream: maybe hours)
        try:
            yield
            rec["code"] = context.code().name if context.code() else "OK"
        except GeneratorExit:  # a stream closed before its end: cancelled, or out of time
            rec["code"] = "DEADLINE_EXCEEDED" if context.time_remaining() <= 0 else "CANCELLED"
            raise
        except Exception as exc:
            rec["code"] = getattr(context.code(), "name", None) or "INTERNAL"
            rec.setdefault("error", str(exc)[:300])
            raise
        finally:
            calllog.enter()
            _call.reset(token)
            rec.pop("params", None)  # in the admission's line
            self._finish(rec, t0)

    def _once(self, method: str, perm: str, inner: Callable[[Any, Any], Any], request: Any,
              context: grpc.ServicerContext) -> Any:
        """A read logged once: admit the call (or abort it; logged), run the handler, then
        write its one line — the answer leaves only once that line is written."""
        t0, rec, token = self._admit(method, perm, request, context, log_start=False)
        try:
            response = inner(request, context)
        except Exception as exc:
            rec["code"] = getattr(context.code(), "name", None) or "INTERNAL"
            rec.setdefault("error", str(exc)[:300])
            self._finish(rec, t0)  # the call failed whatever the log says
            raise
        finally:
            _call.reset(token)
        code = context.code()
        rec["code"] = code.name if code else "OK"
        self._finish(rec, t0, context)  # blocking: a line that cannot be written fails it
        return response

    def _deny_all(self, method: str, why: str, handler: Any = None) -> Any:
        """A handler of the same kind as ``handler`` (any kind for an unknown method) that
        records the call and answers PERMISSION_DENIED."""
        def deny(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            self.d.record({"method": method, "peer": context.peer(), "code": "PERMISSION_DENIED",
                           "why": why}, context)
            self.d.metrics.call(NOT_SERVED, "PERMISSION_DENIED")
            context.abort(grpc.StatusCode.PERMISSION_DENIED, why)

        def deny_stream(request_or_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            deny(request_or_iterator, context)
            yield from ()

        if handler is None or (handler.request_streaming and handler.response_streaming):
            return grpc.stream_stream_rpc_method_handler(deny_stream)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny_stream)
        return grpc.unary_unary_rpc_method_handler(deny)

    def _may(self, caller: Caller, perm: str) -> bool:
        policy = self.d.policy
        if policy.allowed(caller, perm):
            return True
        # Call runs a subset of what Invoke runs (queries), with the same per-action checks
        return perm == "rpc:Call" and policy.allowed(caller, "rpc:Invoke")

    def _admit(self, method: str, perm: str, request: Any, context: grpc.ServicerContext, *,
               log_start: bool) -> tuple[float, dict[str, Any], Any]:
        t0 = time.monotonic()
        rec: dict[str, Any] = {"method": method, "peer": context.peer()}
        md: dict[str, str] = {}
        for k, v in context.invocation_metadata() or ():
            md.setdefault(k, v)  # the first of a repeated key, as grpc's own lookups do
        cn = ""
        if not self.d.settings.insecure_lab:
            cn = _common_name(context)
        rec["cn"] = cn
        # a certificate, with an API key or without, admitted before (a user or bearer
        # token is checked every time): valid while the key store and the key's expiry say so
        known = None if method == LOGIN or "authorization" in md or "x-user-token" in md \
            else (cn, _fingerprint(md.get("x-api-key")), perm)
        hit = self._admitted.get(known) if known is not None else None
        caller: Caller | None
        code: grpc.StatusCode | None = None
        why = ""
        if hit is not None and hit[0] == self.d.keys.version() and \
                (hit[1] is None or hit[1] >= time.time()):
            caller, rec["caller"] = hit[2], hit[3]
        else:
            version = self.d.keys.version() if known is not None else 0  # before the check
            caller, code, why, expires = self._authenticate(method, md, cn)
            if caller is not None:
                rec["caller"] = label = caller.label()
                if perm not in SELF_SERVICE and not self._may(caller, perm):
                    code, why = grpc.StatusCode.PERMISSION_DENIED, \
                        f"{caller.identity} may not call {perm[4:]}"
                    caller = None
                elif known is not None:  # admitted: remembered
                    if len(self._admitted) >= 1024:  # bounded: keys and certificates come and go
                        self._admitted.clear()
                    self._admitted[known] = (version, expires, caller, label)
        if caller is not None:
            wait = self.d.bucket.take(caller.identity, t0)
            if wait:
                context.set_trailing_metadata((("retry-after-ms", str(int(wait * 1000) + 1)),))
                caller, code, why = None, grpc.StatusCode.RESOURCE_EXHAUSTED, \
                    f"rate limited; retry in {wait:.2f}s"
        if caller is None:
            assert code is not None
            rec.update(code=code.name, why=why)
            self.d.record(rec, context)
            self.d.metrics.call(method, code.name)
            context.abort(code, why)
        assert caller is not None
        if log_start:
            action = getattr(request, "action", "") or None
            if action:
                rec["action"] = action
                rec["params"] = self.d.redacted_params(action, getattr(request, "params_json", ""))
            if getattr(request, "force_maintenance", False):
                rec["force_maintenance"] = True
            rec["code"] = "STARTED"
            self.d.record(rec, context)  # blocking: no record, no call
        return t0, rec, _call.set((caller, rec))

    def _authenticate(self, method: str, md: dict[str, str], cn: str
                      ) -> tuple[Caller | None, grpc.StatusCode | None, str, float | None]:
        """(The caller, None, "", its API key's expiry) or (None, the code, why, None)."""
        d = self.d
        unauth = grpc.StatusCode.UNAUTHENTICATED
        bearer = md.get("authorization")
        identity, via = cn, None
        if method == LOGIN:  # the password (or ID token) is checked there
            if not cn and not d.settings.insecure_lab:
                return None, unauth, "no client certificate", None
            return Caller(cn or "lab", cn), None, "", None
        user_token = md.get("x-user-token")
        if user_token is not None:
            if bearer is not None or md.get("x-api-key") is not None:
                return None, unauth, "send a user token alone, without a bearer token or API key", None
            s = d.sessions.check(user_token)
            if s is None:
                return None, unauth, "the user token is unknown, expired or revoked: log in again", None
            if s.method == "password":
                from .users import current

                rec = current(d.watch).get(s.user)
                if rec is None:
                    d.sessions.revoke(user_token)
                    return None, unauth, f"user {s.user} was removed: the session has ended", None
                s.roles = tuple(str(r) for r in rec.get("roles") or [])
            return Caller(s.user, cn, cn or None, roles=s.roles, login=s.method), None, "", None
        if bearer is not None:
            if not bearer.lower().startswith("bearer ") or d.jwt is None:
                return None, unauth, "bearer tokens are not accepted here" if d.jwt is None \
                    else "the authorization header must be 'Bearer TOKEN'", None
            try:
                identity = d.jwt.subject(bearer[7:].strip())
            except ValueError as exc:
                return None, unauth, str(exc), None
            via = cn or None
        elif cn in d.policy.proxies:
            return None, unauth, f"{cn} is a proxy: it must forward its user's token", None
        key = md.get("x-api-key")
        key_id = key_role = expires = None
        if key is not None:
            check = d.keys.check(key)
            if not check.ok:
                return None, unauth, check.why, None
            if not identity:
                identity = str(check.owner)
            elif check.owner != identity:
                return None, grpc.StatusCode.PERMISSION_DENIED, \
                    f"API key {check.key_id} belongs to another identity", None
            key_id, key_role, expires = check.key_id, check.role, check.expires
        if not identity:
            return None, unauth, "no client certificate, token or API key", None
        roles = d.policy.identities.get(identity, ())
        if not roles:
            return None, grpc.StatusCode.PERMISSION_DENIED, f"{identity} has no role here", None
        return Caller(identity, cn, via, key_id, key_role, roles), None, "", expires

    def _finish(self, rec: dict[str, Any], t0: float,
                context: grpc.ServicerContext | None = None) -> None:
        """Log the call's outcome and duration; with ``context``, a line that cannot be
        written fails the call (the answer has not left yet)."""
        elapsed = time.monotonic() - t0
        rec["ms"] = round(elapsed * 1000, 3)
        try:
            self.d.record(rec, context, last=True)
        except Exception:  # the line was not written: the call is refused (UNAVAILABLE)
            self.d.metrics.call(rec["method"], "UNAVAILABLE", elapsed)
            raise
        self.d.metrics.call(rec["method"], rec["code"], elapsed, rec["time"])


def _common_name(context: grpc.ServicerContext) -> str:
    """The verified client certificate's CN ("" without one). grpc names a certificate
    without subject alternative names by its CN: then its peer identities are the CN,
    read without the whole auth context (with the certificate's PEM: ~1.5 µs a call)."""
    if context.peer_identity_key() == "x509_common_name":
        vals = context.peer_identities()
    else:
        vals = context.auth_context().get("x509_common_name")
    return vals[0].decode() if vals else ""


def _fingerprint(key: str | None) -> bytes | None:
    """What the guard remembers of an API key: its SHA-256, not the key."""
    return None if key is None else hashlib.sha256(key.encode()).digest()


def deadline(context: grpc.ServicerContext, limit: float) -> tuple[float, float]:
    """(The ``time.monotonic()`` by which the call must be answered, the seconds that gives
    it): the client's deadline as it stands now, at most ``limit`` seconds (grpc's
    ``time_remaining`` is a number for every call: very large without a deadline)."""
    allowed = min(context.time_remaining(), limit)
    return time.monotonic() + allowed, allowed


def in_time(context: grpc.ServicerContext, end: tuple[float, float], what: str) -> None:
    """Abort the call (DEADLINE_EXCEEDED) if it is past ``end`` (:func:`deadline`'s)."""
    if time.monotonic() > end[0]:
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                      f"{what} ran longer than the call's deadline ({end[1]:.3g} s)")


def caller() -> Caller:
    c = _call.get()
    if c is None:  # the guard sets it for every served method
        raise RuntimeError("no caller")
    return c[0]


def _record() -> dict[str, Any] | None:
    """The call-log record of the call being served (None outside a call)."""
    c = _call.get()
    return None if c is None else c[1]


#: JSON of events: json.dumps(default=str), its encoder made once
_json = c_encoder(sort_keys=False, compact=False)


def _event(name: str, **data: Any) -> pb.Event:
    return pb.Event(event=name, json=_json({"event": name, **data}))


class Node(pbg.NodeServicer):
    """debvisor.v1.Node over the installed actions."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    # -- in-process runs (read-only) ----------------------------------------------------
    def _inprocess(self, path: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int, Any]:
        """Run the read-only action ``path`` (found, its ``params`` validated) here."""
        action = self.d.actions().get(path)
        if action is None:
            try:
                action = _actions.find(Context(json=True, env=self.d.env), path)
            except DebvisorError as exc:
                return [{"event": "log", "level": "error", "message": exc.message},
                        {"event": "exit", "code": exc.exit_code}], exc.exit_code, None
        return self._run(action, params, validate=True)

    def _run(self, action: Action, params: dict[str, Any], *, validate: bool = False
             ) -> tuple[list[dict[str, Any]], int, Any]:
        """Run a read-only ``action`` in this process on a recording UI: (its events, ending
        with "exit"; the exit code; the result)."""
        ui = RecordingUI()
        ctx = self.d.run_context(json=True, env=self.d.env, argv=["debvisor-rpcd", action.path],
                                 _ui=ui)
        code, data = 0, None
        with ui.bound():  # the run's log lines, errors and exit event: the CLI's, as events
            try:
                result = _actions.run(ctx, action, action.validate(params) if validate else params)
                code = _actions.outcome_code(result)  # an Outcome's message and exit event
                data = result.data if isinstance(result, Outcome) else result
            except DebvisorError as exc:
                code = report(exc)  # its message, its hint and the exit event
            except Exception as exc:  # noqa: BLE001 - one line to the client, like the CLI
                code = 1
                log.error(f"internal error: {type(exc).__name__}: {exc}")
        seen = ui.events_seen
        if not seen or seen[-1]["event"] != "exit":  # success (or an internal error)
            ui.emit("exit", code=code)
        return ui.events_seen, code, data

    def _query(self, action: Action, checked: dict[str, Any], context: grpc.ServicerContext
               ) -> tuple[list[dict[str, Any]], int]:
        """Run the query ``action`` here within the call's deadline (else the call is
        aborted): its events, ending with "exit", and its exit code."""
        due = deadline(context, self.d.settings.default_deadline_s)
        events, code, _ = self._run(action, checked)
        self._ran(action.path, code)
        in_time(context, due, action.path)
        return events, code

    def _ran(self, path: str, code: int) -> None:
        """Count the action that ran, and put its exit code in the call's log line."""
        self.d.metrics.op(path, code)
        rec = _record()
        if rec is not None:
            rec["exit"] = code

    def _checked(self, request: Any, context: grpc.ServicerContext, who: Caller, *,
                 queries_only: bool = False) -> tuple[Action, dict[str, Any], dict[str, Any]]:
        """The request's action, its parameters as sent and as validated — or the call
        aborted: no such action, a state change asked of Call (FAILED_PRECONDITION), bad
        parameters, dry run or check of an action that has none, a bad origin
        (INVALID_ARGUMENT), an action the caller may not run (PERMISSION_DENIED)."""
        rec = _record() if queries_only else None  # Call logs what it ran at the end
        name, raw = request.action, request.params_json  # each read makes a new str
        if rec is not None:
            rec["action"] = name[:80]
        action = self.d.actions().get(name)
        if action is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"no action {name[:80]!r} is installed; see ListActions")
        assert action is not None
        changes = action.changes_state
        if queries_only and changes:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{action.path} changes state: Call runs only queries; run it with "
                          "Invoke, which streams its progress")
        params: Any = None
        try:
            params = json.loads(raw) if raw else {}
            if not isinstance(params, dict):
                raise ValueError("not an object")
            checked = action.validate(params)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"params_json: not a JSON object ({exc})")
        except BadInput as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        finally:
            if rec is not None:
                rec["params"] = self.d.redacted(action, params, raw)
        if not self.d.policy.allowed(who, action.path, read_only=not changes):
            self.d.denied(context, f"{who.identity} may not run {action.path}")
        if (request.dry_run or request.check) and not action.journalled:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{action.path} is not a journalled operation: it has no dry run or check")
        if request.origin:
            from ..journal import ORIGIN_RE

            if not ORIGIN_RE.fullmatch(request.origin):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"origin {request.origin[:40]!r} is not OPID.STEP")
        return action, params, checked

    # -- methods -------------------------------------------------------------------------
    def ListActions(self, request: Any, context: grpc.ServicerContext) -> Any:
        out = []
        for a in self.d.actions().values():
            if request.plugin and a.plugin != request.plugin:
                continue
            desc = a.describe()
            out.append(pb.ActionInfo(
                path=a.path, plugin=a.plugin, summary=a.summary, changes_state=a.changes_state,
                destructive=a.destructive, privilege=a.privilege,
                schema_json=json.dumps(desc["params"]), secret_params=desc["secret_params"],
                describe_json=json.dumps(desc, default=str)))
        return pb.ListActionsResponse(actions=out)

    def Invoke(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        who = caller()
        action, params, checked = self._checked(request, context, who)
        if request.force_maintenance and action.changes_state and \
                not self.d.policy.allowed(who, "maintenance.disable"):
            self.d.denied(context, f"{who.identity} may not override maintenance mode: "
                                   "force_maintenance needs maintenance.disable")
        origin = ["--origin", request.origin] if request.origin else []
        # admitted: say so at once (a client that started a long action learns now that it
        # was not refused, long before the action's first event)
        context.send_initial_metadata(((ADMITTED, "1"),))
        if not action.changes_state:  # a query: Call's deadline, its events once it is in time
            events, code = self._query(action, checked, context)
            for ev in events:
                yield _event(ev.pop("event"), **ev)
            context.set_trailing_metadata((("exit-code", str(code)),))
            return
        flags = [f for f, on in (("--dry-run", request.dry_run), ("--check", request.check),
                                 ("--yes", request.yes),
                                 ("--force-maintenance", request.force_maintenance)) if on]
        yield from self._child([*origin, "actions", "run", action.path, "-", *flags],
                               json.dumps(params), who, context, action.path)

    def Call(self, request: Any, context: grpc.ServicerContext) -> Any:
        who = caller()
        action, _, checked = self._checked(request, context, who, queries_only=True)
        events, code = self._query(action, checked, context)
        end = events.pop()  # the exit event: its code, message and hint are fields
        message = end.get("message") or ""
        if code and not message:  # an internal error: its last error line
            message = next((str(e.get("message")) for e in reversed(events)
                            if e["event"] == "log" and e.get("level") == "error"), "")
        response = pb.CallResponse(code=code, message=message, hint=end.get("hint") or "")
        add = response.events.add  # made in place (a list of Events would be copied in)
        for e in events:
            add(event=e["event"], json=_json(e))
        return response

    def _child(self, args: list[str], stdin: str, who: Caller, context: grpc.ServicerContext,
               label: str) -> Iterator[Any]:
        """Run ``debvisor --events ARGS`` (the CLI's engine) and stream its events: through
        the executor when ``exec_socket`` names one (:mod:`.executor`), else as a child of
        this process. A cancelled call or an exceeded deadline stops it like Ctrl-C (it
        rolls back)."""
        from .executor import ExecutorRun, LocalRun

        sealed = caller_env(who.label())  # audited as `caller`, not claimed
        run: ExecutorRun | LocalRun
        if self.d.settings.exec_socket:
            try:
                run = ExecutorRun(self.d.settings.exec_socket, args, stdin, sealed)
            except OSError as exc:
                log.error(f"rpcd: {label}: {exc}")
                context.abort(grpc.StatusCode.UNAVAILABLE,
                              f"{exc}; nothing was run (systemctl status debvisor-rpcd-exec.socket)")
        else:
            run = LocalRun(args, stdin, sealed, self.d.config_file, label)

        done = threading.Event()  # the run ended: nothing to stop when the call does

        def stop() -> None:
            if not done.is_set():
                log.warn(f"rpcd: {label}: the call ended (cancelled or deadline); stopping it")
                run.stop()

        if not context.add_callback(stop):  # the call ended already
            stop()
        # the client's deadline, at most max_operation_s
        timer = threading.Timer(max(deadline(context, self.d.settings.max_operation_s)[1], 0.1), stop)
        timer.daemon = True
        timer.start()
        exit_seen = False
        try:
            for line in run.lines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(ev, dict):
                    continue
                exit_seen = exit_seen or ev.get("event") == "exit"
                yield pb.Event(event=str(ev.get("event", "")), json=line.rstrip("\n"))
            code, err = run.finish()
            done.set()
        finally:
            timer.cancel()
            if not done.is_set():  # the call ended first (cancelled): the run rolls back
                run.abandon()
        if code and not exit_seen:  # it failed before its events started (its stderr says why)
            last = [ln for ln in err.splitlines() if ln.startswith("[ERROR]")]
            message = last[-1][8:] if last else f"{label} exited with {code}"
            yield _event("log", level="error", message=message)
            yield _event("exit", code=code, message=message)
        elif not exit_seen:
            yield _event("exit", code=code)
        self._ran(label, code)
        context.set_trailing_metadata((("exit-code", str(code)),))

    def Health(self, request: Any, context: grpc.ServicerContext) -> Any:
        events, code, data = self._inprocess("health.run", {})
        self.d.metrics.health_states(data)
        return pb.JsonResponse(json=json.dumps(data, default=str), code=code)

    def ListOperations(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.id:
            _, code, data = self._inprocess("ops.show", {"id": request.id})
        else:
            _, code, data = self._inprocess("ops.list", {"limit": request.limit or 20})
        return pb.JsonResponse(json=json.dumps(data, default=str), code=code)

    def RollbackOperation(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        who = caller()
        if not self.d.policy.allowed(who, "ops.rollback"):
            self.d.denied(context, f"{who.identity} may not run ops.rollback")
        from ..journal import check_id

        try:
            check_id(request.id)
        except BadInput as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        flags = [f for f, on in (("--dry-run", request.dry_run), ("--yes", request.yes)) if on]
        yield from self._child(["ops", "rollback", request.id, *flags], "", who, context,
                               "ops.rollback")

    def VerifyAudit(self, request: Any, context: grpc.ServicerContext) -> Any:
        from ..audit import log_path, verify

        ok, message, lines = verify(log_path(self.d.ctx))
        return pb.JsonResponse(json=json.dumps({"ok": ok, "message": message, "lines": lines}),
                               code=0 if ok else 1)

    def AuditEvents(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        from ..audit import log_path, read
        from ..builtin.audit_cmd import _since

        try:
            since = _since(request.since or None)
        except BadInput as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        for rec in read(log_path(self.d.ctx)):
            if since is None or str(rec.get("time", "")) >= since:
                yield pb.Event(event="audit", json=json.dumps(rec, default=str))

    def WhoAmI(self, request: Any, context: grpc.ServicerContext) -> Any:
        who = caller()
        allowed = [p for p, a in self.d.actions().items()
                   if self.d.policy.allowed(who, p, read_only=not a.changes_state)]
        return pb.JsonResponse(json=json.dumps({
            "identity": who.identity, "certificate": who.cert_cn, "via": who.via,
            "api_key": who.key_id, "roles": list(who.roles), "actions": allowed}))


    # -- people: the panel's login -------------------------------------------------------
    def Login(self, request: Any, context: grpc.ServicerContext) -> Any:
        from .users import check_password

        d, rec = self.d, _record()
        unauth = grpc.StatusCode.UNAUTHENTICATED
        if request.oidc_id_token:
            verifier = d.oidc
            if verifier is None:
                context.abort(unauth, "OIDC login is not configured here ([rpcd] oidc_jwks_file)")
            assert verifier is not None  # abort raised
            try:
                claims = verifier.claims(request.oidc_id_token)
            except ValueError as exc:
                context.abort(unauth, str(exc))
            user = str(claims.get(d.settings.oidc_username_claim) or "")
            if rec is not None:
                rec.update(user=user or None, login="oidc")
            roles = list(d.policy.identities.get(user, ())) if user else []
            if not user:
                context.abort(unauth, f"the ID token has no {d.settings.oidc_username_claim} "
                                      f"claim")
            if not roles:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{user} has no role here")
            method = "oidc"
        else:
            user = request.user
            if rec is not None:
                rec.update(user=user[:64] or None, login="password")
            found = check_password(user, request.password) if user and request.password else None
            if not found:
                context.abort(unauth, "wrong user name or password")
            roles, method = list(found or []), "password"
        token, s = d.sessions.issue(user, roles, caller().cert_cn, method)
        return pb.LoginResponse(token=token, user=user, roles=roles, expires_at=s.expires,
                                idle_timeout=d.sessions.ttl)

    def Logout(self, request: Any, context: grpc.ServicerContext) -> Any:
        token = next((str(v) for k, v in context.invocation_metadata() or ()
                      if k == "x-user-token"), None)
        if token is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "no session to end: Logout ends the x-user-token sent with it")
        ended = self.d.sessions.revoke(str(token))
        return pb.JsonResponse(json=json.dumps({"user": caller().identity, "ended": ended}))

    # -- proxies: their events in the node's audit chain ---------------------------------
    def RecordEvent(self, request: Any, context: grpc.ServicerContext) -> Any:
        from .events import checked

        who, d = caller(), self.d
        rec = _record()
        if rec is not None:
            rec["event"] = request.kind[:40]
        if who.cert_cn not in d.policy.proxies:
            d.denied(context, f"only a proxy ([rpcd] proxies) records events; certificate "
                              f"{who.cert_cn or '(none)'} is not one")
        if who.login is None:
            d.denied(context, "a proxy records events only for a logged-in user: send the "
                              "user's token (x-user-token)")
        try:
            details = checked(request.kind, request.details_json)
        except BadInput as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        try:
            written = d.audit_event(request.kind, details, who)
        except (OSError, DebvisorError) as exc:
            why = exc.message if isinstance(exc, DebvisorError) else (exc.strerror or str(exc))
            log.error(f"rpcd: the audit log cannot be written ({why}); event not recorded")
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          "the audit log cannot be written; the event was not recorded")
        return pb.JsonResponse(json=json.dumps({"seq": written["seq"], "hash": written["hash"],
                                                "kind": request.kind}))


class _Pool(futures.ThreadPoolExecutor):
    """grpc's worker pool (a call's handler and its sending run in one of its work items),
    telling the call log which calls are being served: an fsync about to start waits, at
    most a millisecond, for those that have not written their line yet (group commit,
    :mod:`.calllog`) — under load one fsync covers several calls, a lone call waits for
    none. A queued call is not waited for, nor a stream while its handler runs
    (``Guard._served``). A call whose request never arrives is waited for, at most that
    millisecond per fsync, until its deadline ends it: a bounded delay, never a wrong
    answer (measured: counting only admitted calls made a durable call 17 % dearer)."""

    def __init__(self, calllog: CallLog, max_workers: int) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="rpcd")
        self._log = calllog

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        log = self._log

        def served() -> Any:
            log.enter()  # running (not queued): its call's line is near
            try:
                return fn(*args, **kwargs)
            finally:
                log.leave()

        return super().submit(served)


def _run_context(state_dir: Path, hook: Any) -> type[Context]:
    """A Context for the daemon's in-process runs whose state directory and plugin hooks
    are the daemon's, read once when it loaded its actions: like the API-key store's place
    and the actions it serves, they are fixed for its life (asking again per call re-read
    the environment, parsed a path and checked the plugin selection: ~9 µs of a query).
    It sets only what differs from the class defaults (the dataclass's ``__init__`` stores
    all 15 fields: a query's costliest object in the daemon, measured), so
    ``dataclasses.replace`` does not work on it, and a ``__post_init__`` that ``Context``
    might get would not run (a test says so)."""

    class RunContext(Context):
        def __init__(self, *, env: Any, argv: list[str], _ui: Any, json: bool = True) -> None:
            # every other field keeps its class-level default (immutable: False, None,
            # ()) until a run sets it on the instance
            self.json, self.argv, self.env, self._ui = json, argv, env, _ui
            self.op_options = OpOptions()

        @property
        def state_dir(self) -> Path:
            return state_dir

        @property
        def hook(self) -> Any:
            return hook

    return RunContext


class Daemon:
    """Everything one rpcd process holds: settings, policy, credentials, logs, metrics —
    over the process's one :class:`~debvisor_core.context.Context` (its config, plugins and
    cache); each in-process run gets its own Context over the same Env."""

    def __init__(self, settings: Settings, ctx: Context) -> None:
        from .apikeys import KeyStore
        from .apikeys import store_path as key_store_path
        from .watch import DirWatch

        self.settings = settings
        self.ctx = ctx
        #: what the children (state changes) read: the config this daemon serves
        self.config_file = ctx.config_file or os.environ.get("DEBVISOR_CONFIG")
        self.env = ctx.env
        self.policy = settings.policy
        self.bucket = Bucket(settings.rate, settings.burst)
        store_dir = key_store_path().parent  # API keys and users: watched, not stat'ed per call
        with contextlib.suppress(OSError):
            store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.watch = DirWatch(store_dir)
        # the state directory (maintenance.json) read by the in-process queries only when
        # something there changed (builtin/maintenance.py); one watch per Env
        state, have = ctx.state_dir, getattr(self.env, "state_watch", None)
        if state.is_dir() and state != store_dir and not (
                have is not None and have.ok and have.directory == state):
            setattr(self.env, "state_watch", DirWatch(state))  # noqa: B010 - read by getattr
        self.keys = KeyStore(self.watch)
        self.jwt = JwtVerifier(settings.jwks_file, settings.jwt_issuer, settings.jwt_audience) \
            if settings.jwks_file else None
        self.oidc = JwtVerifier(settings.oidc_jwks_file, settings.oidc_issuer,
                                settings.oidc_audience) if settings.oidc_jwks_file else None
        from .users import Sessions

        self.sessions = Sessions(settings.session_ttl, settings.session_max)
        path = Path(settings.call_log) if settings.call_log else ctx.log_dir / "rpcd-calls.jsonl"
        self.calllog = CallLog(path, durable=settings.durable_log)
        self.metrics = Metrics()
        self._actions: dict[str, Action] | None = None
        #: the Context class of in-process runs (:func:`_run_context`), once plugins load
        self.run_context: type[Context] = Context
        self._reload = threading.Event()

    def actions(self) -> dict[str, Action]:
        if self._actions is None:
            self._actions = _actions.installed(self.ctx)
            state, watch = self.ctx.state_dir, getattr(self.env, "state_watch", None)
            if watch is not None and watch.directory == state:
                state = watch.directory  # the same object: the maintenance query's check is `is`
            self.run_context = _run_context(state, self.ctx.hook)
        return self._actions

    def redacted_params(self, path: str, raw: str) -> Any:
        """The call's parameters for the log: secret ones replaced by keyed digests."""
        try:
            params = json.loads(raw or "{}")
        except ValueError:
            params = None
        return self.redacted(self.actions().get(path), params, raw)

    @staticmethod
    def redacted(action: Action | None, params: Any, raw: str) -> Any:
        """``params`` (``raw`` parsed, None when it is not JSON) for the log: secret ones
        replaced by keyed digests."""
        if params is None:
            return {"unparsed_bytes": len(raw)}
        if not isinstance(params, dict):
            return {"not_an_object": type(params).__name__}
        if not params:
            return {}
        from ..redact import scrub, secret_digest  # not per parameterless query

        secret = {p.name for p in action.params if p.secret} if action else set()
        return scrub({k: secret_digest(str(v)) if k in secret else v for k, v in params.items()})

    def audit_event(self, kind: str, details: dict[str, Any], who: Caller) -> dict[str, Any]:
        """Append a proxy's event (checked by :func:`.events.checked`) to the node's audit
        chain, attributed to ``who`` ("NAME via=PROXY"), then to the other audit sinks, like
        :func:`debvisor_core.audit.record`; the written record. Raises OSError or
        DebvisorError when the chain cannot be written."""
        import socket

        from ..audit import append, log_path
        from ..identity import who as os_user
        from ..redact import scrub_text
        from ..timefmt import iso_utc

        plugin, _, action = kind.partition(".")
        # the fields are known and none is a secret (a counter named KeyEvent is a count),
        # but a text may quote a console ticket or a URI's password: those are digested
        clean = {k: scrub_text(v) if isinstance(v, str) else v for k, v in details.items()}
        event = {"time": iso_utc(), "host": socket.gethostname(), "user": os_user(),
                 "argv": ["debvisor-rpcd", "RecordEvent", kind], "plugin": plugin,
                 "action": action, "operation": None, "result": kind, "duration_ms": None,
                 "details": clean, "caller": who.label()}
        written = append(log_path(self.ctx), event)
        for impl in reversed(self.ctx.hook.debvisor_audit.get_hookimpls()):
            if impl.plugin_name == "core":
                continue  # the file chain, written above
            try:
                impl.function(ctx=self.ctx, event=dict(written))
            except Exception as exc:  # noqa: BLE001 - other sinks only warn, as for the CLI
                log.warn(f"audit sink {impl.plugin_name} failed: {exc}")
        return written

    def record(self, rec: dict[str, Any], context: grpc.ServicerContext | None = None, *,
               last: bool = False) -> None:
        """Write a call-log record; when it cannot be written, fail the call given
        (blocking audit) or, for a call that already ran, say so. ``last``: the call's last
        record, written as it is (else a copy: the guard adds to it for the next line)."""
        if last:
            rec["time"] = time.time()
        else:
            rec = {"time": time.time(), **rec}
        try:
            self.calllog.write(rec)
        except OSError as exc:
            log.error(f"rpcd: the call log cannot be written ({exc}); refusing calls")
            if context is not None:
                context.abort(grpc.StatusCode.UNAVAILABLE,
                              "the audit log cannot be written; the call was refused")

    def denied(self, context: grpc.ServicerContext, why: str) -> None:
        """Refuse the call being served (PERMISSION_DENIED); the guard logs it with ``why``."""
        rec = _record()
        if rec is not None:
            rec["why"] = why
        context.abort(grpc.StatusCode.PERMISSION_DENIED, why)

    # -- TLS --------------------------------------------------------------------------------
    def _tls_config(self) -> Any:
        s = self.settings
        from ..secrets import read_secret

        try:
            key = read_secret(s.key, "rpcd server key")
            cert, ca = Path(s.cert).read_bytes(), Path(s.ca).read_bytes()
        except OSError as exc:
            raise BadInput(f"rpcd TLS files: {exc.strerror}: {exc.filename}") from None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def _fetch(self) -> Any:
        """Called on each new TLS handshake: a new configuration after SIGHUP, else None
        (keep the current one; connections already open keep theirs)."""
        if not self._reload.is_set():
            return None
        self._reload.clear()
        try:
            cfg = self._tls_config()
        except DebvisorError as exc:
            log.error(f"rpcd: certificate reload failed, keeping the old ones: {exc.message}")
            return None
        log.info("rpcd: certificates reloaded")
        return cfg

    def server(self) -> tuple[grpc.Server, int, Any]:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        s = self.settings
        mb = s.max_message_bytes
        pool = _Pool(self.calllog, s.max_workers) if self.calllog.durable else \
            futures.ThreadPoolExecutor(max_workers=s.max_workers, thread_name_prefix="rpcd")
        server = grpc.server(pool, interceptors=[Guard(self)],
                             maximum_concurrent_rpcs=s.max_concurrent,
                             options=[("grpc.max_receive_message_length", mb),
                                      ("grpc.max_send_message_length", 16 * mb),
                                      ("grpc.so_reuseport", 0)])
        pbg.add_NodeServicer_to_server(Node(self), server)
        hs = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(hs, server)
        if s.insecure_lab:
            host = s.listen.rpartition(":")[0].strip("[]")
            if host not in ("127.0.0.1", "::1", "localhost"):
                raise BadInput(f"--insecure-lab serves only on loopback, not {host}")
            port = server.add_insecure_port(s.listen)
        else:
            if not (s.ca and s.cert and s.key):
                raise BadInput("rpcd needs [rpcd] ca, cert and key (TLS is always on; "
                               "`debvisor rpcd ca issue NODE --server` makes them)")
            creds = grpc.dynamic_ssl_server_credentials(self._tls_config(), self._fetch,
                                                        require_client_authentication=True)
            port = server.add_secure_port(s.listen, creds)
        if not port:
            raise BadInput(f"rpcd cannot listen on {s.listen}")
        for name in ("", SERVICE):
            hs.set(name, health_pb2.HealthCheckResponse.SERVING)
        return server, port, hs

    def serve(self, ready: Callable[[int], None] | None = None) -> None:
        """Run until SIGTERM or SIGINT; SIGHUP reloads the certificates."""
        self.actions()  # load every plugin once, before the first call
        server, port, hs = self.server()
        stop = threading.Event()
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        server.start()
        s = self.settings
        if s.metrics_listen:  # with rpcd's own certificate, unless it has none (lab)
            node = Node(self)
            self.metrics.health_source = lambda: self.metrics.health_states(
                node._inprocess("health.run", {})[2])
            tls = not s.insecure_lab
            self.metrics.serve(s.metrics_listen, s.cert if tls else "", s.key if tls else "")
        if ready:
            ready(port)
        stop.wait()
        hs.enter_graceful_shutdown()
        server.stop(grace=10).wait()
        self.calllog.close()
