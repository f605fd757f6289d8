"""debvisor-rpcd against real daemons: real certificates (the CLI's CA), real TLS, real
gRPC clients. Each case of the auth matrix asserts its exact status code and, where the
call reached the daemon, its line in the call log."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from debvisor_core.rpcd import ADMITTED, pki
from debvisor_core.rpcd.v1 import debvisor_pb2 as pb
from debvisor_core.rpcd.v1 import debvisor_pb2_grpc as pbg

ISSUER, AUD = "https://idp.lab.invalid", "debvisor"
PANEL_AUD = "debvisor-panel"  # the OIDC client id of the web panel
PASSWORD = "correct horse battery staple"


SITE: list[str] = []  # the docs' example plugin (a journalled action with an undo), and ours

#: a plugin of this test's own: a query with a secret parameter that warns before it answers
RPCDTEST = '''
from typing import Any

from debvisor_core import hookimpl, log
from debvisor_core.actions import Action, Param


def peek(ctx: Any, p: dict[str, Any]) -> Any:
    log.warn(f"peeking at {p['name']}")
    return {"name": p["name"], "token_length": len(p["token"] or "")}


ACTIONS = [Action("rpcdtest.peek", "Answer with a secret's length", query=peek,
                  privilege="none",
                  params=(Param("name", "A name.", positional=True),
                          Param("token", "A secret.", secret=True, default=None)))]


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS


@hookimpl
def debvisor_commands() -> Any:
    import click

    from debvisor_core.actions import attach

    @click.group("rpcdtest")
    def group() -> None:
        """rpcd's test plugin."""

    return attach(group, ACTIONS)
'''


def _rpcdtest_plugin(site: Path) -> None:
    info = site / "dv_rpcdtest-0.0.1.dist-info"
    info.mkdir(parents=True)
    (site / "dv_rpcdtest.py").write_text(RPCDTEST)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dv-rpcdtest\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[debvisor.plugins]\nrpcdtest = dv_rpcdtest\n")


def _env(**more: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(SITE), **more}


def _dv(state: Path, *args: str, config: Path | None = None, input: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = _env(DEBVISOR_STATE_DIR=str(state))
    if config:
        env["DEBVISOR_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "debvisor_core", *args], env=env, input=input,
                          capture_output=True, text=True, timeout=120)


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    address: str
    state: Path
    config: Path
    calllog: Path

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.calllog.read_text().splitlines() if x.strip()]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Pki:
    dir: Path
    rogue: Path
    jwk_key: Any
    other_key: Any


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, site_plugins_dir: Path
          ) -> Iterator[tuple[Path, Pki]]:
    root = tmp_path_factory.mktemp("rpcd")
    _rpcdtest_plugin(root / "site")
    SITE[:] = [str(site_plugins_dir), str(root / "site")]
    state = root / "state"
    d = root / "pki"
    for args in (["ca", "init", "--dir", str(d)],
                 ["ca", "issue", "node1", "--server", "--ip", "127.0.0.1", "--dir", str(d)],
                 ["ca", "issue", "admin", "--kind", "user", "--dir", str(d)],
                 ["ca", "issue", "viewer", "--kind", "user", "--dir", str(d)],
                 ["ca", "issue", "nobody", "--kind", "user", "--dir", str(d)],
                 ["ca", "issue", "panel", "--kind", "proxy", "--dir", str(d)]):
        res = _dv(state, "rpcd", *args)
        assert res.returncode == 0, res.stderr
    assert (d / "admin.key").stat().st_mode & 0o777 == 0o600
    # an expired certificate from the right CA, and a valid one from another CA
    pki.issue(d, "expired", kind="user", days=1,
              not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    rogue = root / "rogue"
    pki.init(rogue)
    pki.issue(rogue, "admin", kind="user")
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    (root / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256",
                                                          "use": "sig"}]}))
    res = _dv(state, "rpcd", "user", "add", "carol", "--role", "operator", "--password-file", "-",
              input=PASSWORD + "\n")
    assert res.returncode == 0, res.stderr
    assert PASSWORD not in (state / "rpcd" / "users.json").read_text()
    yield root, Pki(d, rogue, key, other)


def _config(root: Path, name: str, **extra: Any) -> Path:
    d = root / "pki"
    lines = ["[rpcd]", 'listen = "127.0.0.1:0"', f'ca = "{d}/ca.pem"', f'cert = "{d}/node1.pem"',
             f'key = "{d}/node1.key"', f'jwks_file = "{root}/jwks.json"', f'jwt_issuer = "{ISSUER}"',
             f'jwt_audience = "{AUD}"', 'proxies = ["panel"]',
             f'oidc_jwks_file = "{root}/jwks.json"', f'oidc_issuer = "{ISSUER}"',
             f'oidc_audience = "{PANEL_AUD}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    lines += ["[rpcd.identities]", 'admin = ["admin"]', 'viewer = ["viewer"]', 'alice = ["operator"]',
              'bob = ["viewer"]', 'expired = ["admin"]', 'lister = "lister"', 'invoker = ["invoker"]',
              'noter = ["noter"]',
              "[rpcd.roles.lister]", 'allow = ["rpc:Call", "ops.*"]',
              "[rpcd.roles.invoker]", 'allow = ["rpc:Invoke", "ops.list"]',
              "[rpcd.roles.noter]", 'allow = ["rpc:Invoke", "example.note.add"]']
    p = root / f"{name}.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def _start(root: Path, name: str, *args: str, state: Path | None = None, **extra: Any) -> Daemon:
    config = _config(root, name, **extra)
    state = state or root / "state"
    log = root / f"{name}-calls.jsonl"
    env = _env(DEBVISOR_STATE_DIR=str(state), DEBVISOR_CONFIG=str(config))
    proc = subprocess.Popen([sys.executable, "-m", "debvisor_core", "rpcd", "serve", "--call-log",
                             str(log), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY "), (line, proc.stderr.read() if proc.stderr else "")
    return Daemon(proc, line.split()[1], state, config, log)


@pytest.fixture(scope="module")
def daemon(world: tuple[Path, Pki]) -> Iterator[Daemon]:
    d = _start(world[0], "main", rate=1000.0, burst=1000.0)
    yield d
    d.stop()


def _stub(d: Daemon, pk: Pki, who: str | None = "admin", *, ca_dir: Path | None = None,
          trust: Path | None = None) -> pbg.NodeStub:
    ca = (trust or pk.dir / "ca.pem").read_bytes()
    if who is None:
        creds = grpc.ssl_channel_credentials(ca)
    else:
        base = ca_dir or pk.dir
        creds = grpc.ssl_channel_credentials(ca, (base / f"{who}.key").read_bytes(),
                                             (base / f"{who}.pem").read_bytes())
    return pbg.NodeStub(grpc.secure_channel(d.address, creds))


def _code(fn: Any) -> tuple[grpc.StatusCode, str]:
    try:
        r = fn()
        if hasattr(r, "__next__"):
            list(r)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def _events(it: Any) -> list[dict[str, Any]]:
    return [json.loads(e.json) for e in it]


def _token(pk: Pki, *, sub: str = "alice", key: Any = None, aud: str = AUD, exp: float = 300,
           iss: str = ISSUER) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iss": iss, "aud": aud, "iat": now, "exp": now + exp},
                      key or pk.jwk_key, algorithm="ES256", headers={"kid": "k1"})


# -- the API ---------------------------------------------------------------------------------
def test_list_actions_comes_from_the_declarations(daemon: Daemon, world: Any) -> None:
    resp = _stub(daemon, world[1]).ListActions(pb.ListActionsRequest(), timeout=30)
    by = {a.path: a for a in resp.actions}
    local = json.loads(_dv(daemon.state, "--json", "actions", "list").stdout)
    assert set(by) == {a["path"] for a in local}
    mig = by["hv.migrate"]
    assert mig.changes_state and json.loads(mig.schema_json)["required"] == ["vm", "target"]
    assert not by["ops.list"].changes_state
    # a secret parameter is marked as one: in secret_params and in its schema
    peek = by["rpcdtest.peek"]
    assert list(peek.secret_params) == ["token"] and list(by["ops.list"].secret_params) == []
    props = json.loads(peek.schema_json)["properties"]
    assert (props["token"].get("x-secret"), props["token"].get("writeOnly")) == (True, True)
    assert "x-secret" not in props["name"] and "writeOnly" not in props["name"]
    assert json.loads(peek.describe_json)["secret_params"] == ["token"]


def test_invoke_a_query_and_a_journalled_operation(daemon: Daemon, world: Any) -> None:
    stub = _stub(daemon, world[1])
    evs = _events(stub.Invoke(pb.InvokeRequest(action="ops.list", params_json='{"limit": 3}'),
                              timeout=30))
    assert evs[-1] == {"event": "exit", "code": 0} and evs[-2]["event"] == "result"
    # the same engine as the CLI, in a child process: preflight, plan, refusal (exit 3) ...
    req = pb.InvokeRequest(action="hv.register", params_json='{"vm": "test", "owner": "ops"}',
                           dry_run=True)
    evs = _events(stub.Invoke(req, timeout=60))
    plan = next(e for e in evs if e["event"] == "plan")
    assert plan["title"] == "register test" and "no console" in plan["findings"][0]["message"]
    assert evs[-1]["event"] == "exit" and evs[-1]["code"] == 3, evs
    local = _dv(daemon.state, "hv", "register", "test", "--owner", "ops", "--dry-run")
    assert local.returncode == 3 and evs[-1]["message"] in local.stderr
    # ... and a state change audited, before it happens, with the caller the daemon saw
    req = pb.InvokeRequest(action="maintenance.enable", params_json='{"reason": "rpcd test"}',
                           yes=True)
    evs = _events(stub.Invoke(req, timeout=60))
    assert evs[-1] == {"event": "exit", "code": 0}, evs
    audit = [json.loads(x) for x in (daemon.state / "log" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["result"] == "enabled" and audit[-1]["caller"] == "admin"
    evs = _events(stub.Invoke(pb.InvokeRequest(action="maintenance.disable", yes=True), timeout=60))
    assert evs[-1]["code"] == 0
    assert json.loads(_dv(daemon.state, "--json", "maintenance", "status").stdout)["enabled"] is False
    # a journalled operation: unconfirmed it is refused; confirmed it runs; the journal is
    # listed over the API and the operation rolled back through it
    add = pb.InvokeRequest(action="example.note.add", params_json='{"name": "n1", "text": "hi"}')
    evs = _events(stub.Invoke(add, timeout=60))
    assert evs[-1]["code"] == 3, evs
    add.yes = True
    evs = _events(stub.Invoke(add, timeout=60))
    assert evs[-1]["code"] == 0, evs
    op = next(e["result"] for e in evs if e["event"] == "result")
    assert op["status"] == "succeeded" and [e["status"] for e in evs if e["event"] == "step"]
    listed = json.loads(stub.ListOperations(pb.ListOperationsRequest(limit=5), timeout=30).json)
    assert listed[0]["id"] == op["id"]
    evs = _events(stub.RollbackOperation(pb.RollbackRequest(id=op["id"], yes=True), timeout=60))
    assert evs[-1]["code"] == 0, evs
    shown = json.loads(stub.ListOperations(pb.ListOperationsRequest(id=op["id"]), timeout=30).json)
    assert shown["status"] == "rolled-back"


def test_audit_events_streams_the_chain_in_order(daemon: Daemon, world: Any) -> None:
    """AuditEvents streams the node's audit chain, oldest first, to a role that may read it
    (the viewer's): the state changes just made are at its end, attributed to their caller;
    ``since`` keeps only what came after; VerifyAudit says the chain holds."""
    pk = world[1]
    admin, viewer = _stub(daemon, pk, "admin"), _stub(daemon, pk, "viewer")
    for req in (pb.InvokeRequest(action="maintenance.enable", yes=True,
                                 params_json='{"reason": "audit stream"}'),
                pb.InvokeRequest(action="maintenance.disable", yes=True)):
        assert _events(admin.Invoke(req, timeout=60))[-1] == {"event": "exit", "code": 0}
    before = len(daemon.lines())
    streamed = list(viewer.AuditEvents(pb.AuditEventsRequest(), timeout=30))
    chain = _audit(daemon)
    assert {e.event for e in streamed} == {"audit"}
    assert [json.loads(e.json) for e in streamed] == chain  # all of it, in the chain's order
    assert [(r["argv"][-3], r["result"], r["caller"]) for r in chain[-2:]] == \
        [("maintenance.enable", "enabled", "admin"), ("maintenance.disable", "disabled", "admin")]
    assert chain[-2]["details"]["reason"] == "audit stream"
    assert chain[-2]["seq"] + 1 == chain[-1]["seq"]
    ae = "/debvisor.v1.Node/AuditEvents"
    assert [(x["method"], x["code"], x["caller"]) for x in _since(daemon, before)] == \
        [(ae, "STARTED", "viewer"), (ae, "OK", "viewer")]

    def since(when: str) -> list[dict[str, Any]]:
        return _events(viewer.AuditEvents(pb.AuditEventsRequest(since=when), timeout=30))

    last = chain[-1]["time"]
    assert since(last) == [r for r in chain if r["time"] >= last] and since(last)[-1] == chain[-1]
    assert since("2999-01-01") == []
    assert _code(lambda: since("yesterday"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    verified = json.loads(viewer.VerifyAudit(pb.VerifyAuditRequest(), timeout=30).json)
    assert (verified["ok"], verified["lines"]) == (True, len(chain)), verified


def test_bad_requests_are_invalid_argument_and_the_cli_says_the_same(daemon: Daemon,
                                                                      world: Any) -> None:
    stub = _stub(daemon, world[1])
    for action, params in (("no.such", "{}"), ("ops.list", "[1]"), ("ops.list", "{bad"),
                           ("ops.list", '{"limit": "many"}'), ("ops.list", '{"nope": 1}')):
        req = pb.InvokeRequest(action=action, params_json=params)
        code, why = _code(lambda r=req: stub.Invoke(r, timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (action, params, code, why)
    code, why = _code(lambda: stub.Invoke(pb.InvokeRequest(action="ops.list", dry_run=True),
                                          timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no dry run" in why
    cfg = world[0] / "client.toml"
    d = world[1].dir
    cfg.write_text(f'[rpcd.client]\nca = "{d}/ca.pem"\ncert = "{d}/admin.pem"\nkey = "{d}/admin.key"\n')
    res = _dv(daemon.state, "rpcd", "call", "--address", daemon.address, "ops.show", "-",
              config=cfg, input='{"id": "../../etc/passwd"}')
    local = _dv(daemon.state, "ops", "show", "../../etc/passwd")
    assert res.returncode == local.returncode == 2, (res.stderr, local.stderr)
    before = len(daemon.lines())
    res = _dv(daemon.state, "rpcd", "call", "--address", daemon.address, "ops.list", config=cfg)
    assert res.returncode == 0 and isinstance(json.loads(res.stdout), list), res.stderr
    assert [x["method"] for x in _since(daemon, before)] == ["/debvisor.v1.Node/Call"]  # a query
    # a refusal through the daemon reads like the local one: its plan, one [ERROR] line, exit 3
    before = len(daemon.lines())
    res = _dv(daemon.state, "rpcd", "call", "--address", daemon.address, "hv.register", "-",
              "--dry-run", config=cfg, input='{"vm": "test"}')
    local = _dv(daemon.state, "hv", "register", "test", "--dry-run")
    assert res.returncode == local.returncode == 3
    assert {x["method"] for x in _since(daemon, before)} == {"/debvisor.v1.Node/Invoke"}
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("[ERROR]")]
    assert errors == [ln for ln in local.stderr.splitlines() if ln.startswith("[ERROR]")], res.stderr
    assert res.stdout.startswith("Plan: register test\n") and local.stdout.startswith("Plan: register test\n")


# -- Call: a query in one unary call ----------------------------------------------------------
def _since(d: Daemon, before: int) -> list[dict[str, Any]]:
    return d.lines()[before:]


def test_call_answers_a_query_with_what_invoke_streams(daemon: Daemon, world: Any) -> None:
    stub = _stub(daemon, world[1])
    for action, params in (("ops.list", '{"limit": 3}'), ("maintenance.status", ""),
                           ("rpcdtest.peek", '{"name": "n1", "token": "s3cret-value"}'),
                           ("ops.show", '{"id": "20260101-000000-abcdef"}')):
        req = pb.InvokeRequest(action=action, params_json=params)
        streamed = _events(stub.Invoke(req, timeout=30))
        got = stub.Call(req, timeout=30)
        # the same events, in the same order; Invoke's final exit event is code and message
        assert [json.loads(e.json) for e in got.events] == streamed[:-1], action
        assert [e.event for e in got.events] == [e["event"] for e in streamed[:-1]]
        failed = {"message": got.message, "hint": got.hint or None} if got.code else {}
        assert streamed[-1] == {"event": "exit", "code": got.code, **failed}, action
    peeked = stub.Call(pb.InvokeRequest(action="rpcdtest.peek", params_json='{"name": "x", "token": "abc"}'),
                       timeout=30)
    assert [json.loads(e.json) for e in peeked.events] == [
        {"event": "log", "level": "warn", "message": "peeking at x"},
        {"event": "result", "result": {"name": "x", "token_length": 3}}]
    missing = stub.Call(pb.InvokeRequest(action="ops.show", params_json='{"id": "20260101-000000-abcdef"}'),
                        timeout=30)
    local = _dv(daemon.state, "--events", "ops", "show", "20260101-000000-abcdef")
    said = json.loads(local.stdout.splitlines()[-1])
    assert (missing.code, missing.message, missing.hint or None) == \
        (local.returncode, said["message"], said["hint"]) and missing.code == 2


def test_call_is_logged_once_before_its_answer_with_secrets_digested(daemon: Daemon,
                                                                      world: Any) -> None:
    stub = _stub(daemon, world[1])
    before = len(daemon.lines())
    secret = "hunter2-call-secret"
    stub.Call(pb.InvokeRequest(action="rpcdtest.peek",
                               params_json=json.dumps({"name": "n2", "token": secret})), timeout=30)
    (line,) = _since(daemon, before)  # one line: no "STARTED" line for a read
    assert (line["method"], line["code"], line["caller"], line["action"], line["exit"]) == \
        ("/debvisor.v1.Node/Call", "OK", "admin", "rpcdtest.peek", 0)
    assert line["params"]["name"] == "n2" and line["params"]["token"].startswith("secret:hmac:")
    assert secret not in daemon.calllog.read_text()
    # the call log is a hash chain: every line's hash covers it and follows the one before
    from debvisor_core.audit import _sealed

    lines = daemon.lines()
    assert all(_sealed(x) for x in lines)
    assert [x["prev"] for x in lines[1:]] == [x["hash"] for x in lines[:-1]]
    assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))


def test_call_refuses_state_changes_and_what_invoke_refuses(daemon: Daemon, world: Any) -> None:
    stub = _stub(daemon, world[1])
    before = len(daemon.lines())
    code, why = _code(lambda: stub.Call(pb.InvokeRequest(
        action="maintenance.enable", params_json='{"reason": "via Call"}', yes=True), timeout=15))
    assert (code, why) == (grpc.StatusCode.FAILED_PRECONDITION,
                           "maintenance.enable changes state: Call runs only queries; run it "
                           "with Invoke, which streams its progress")
    status = json.loads(_dv(daemon.state, "--json", "maintenance", "status").stdout)
    assert status["enabled"] is False
    (line,) = _since(daemon, before)
    assert (line["code"], line["action"]) == ("FAILED_PRECONDITION", "maintenance.enable")
    for action, params, dry, origin, expect in (
            ("no.such", "{}", False, "", "no action 'no.such' is installed"),
            ("ops.list", "[1]", False, "", "params_json: not a JSON object"),
            ("ops.list", "{bad", False, "", "params_json: not a JSON object"),
            ("ops.list", '{"limit": "many"}', False, "", "limit"),
            ("ops.list", '{"nope": 1}', False, "", "unknown parameter 'nope'"),
            ("ops.list", "", True, "", "no dry run or check"),
            ("ops.list", "", False, "../x", "is not OPID.STEP")):
        req = pb.InvokeRequest(action=action, params_json=params, dry_run=dry, origin=origin)
        code, why = _code(lambda r=req: stub.Call(r, timeout=15))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and expect in why, (action, why)
        assert daemon.lines()[-1]["code"] == "INVALID_ARGUMENT"


def test_call_rbac_per_method_and_per_action(daemon: Daemon, world: Any) -> None:
    pk = world[1]
    admin = _stub(daemon, pk, "admin")

    def as_(sub: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {_token(pk, sub=sub)}")]

    ops_list = pb.InvokeRequest(action="ops.list")
    status = pb.InvokeRequest(action="maintenance.status")
    # a role with rpc:Call may Call what it may run, and nothing else
    assert admin.Call(ops_list, timeout=15, metadata=as_("lister")).code == 0
    assert _code(lambda: admin.Call(status, timeout=15, metadata=as_("lister"))) == \
        (grpc.StatusCode.PERMISSION_DENIED, "lister may not run maintenance.status")
    assert _code(lambda: admin.Invoke(ops_list, timeout=15, metadata=as_("lister"))) == \
        (grpc.StatusCode.PERMISSION_DENIED, "lister may not call Invoke")
    assert _last_denial(daemon)["caller"] == "lister via=admin"
    # Invoke grants Call (a subset of it), with the same per-action checks
    assert admin.Call(ops_list, timeout=15, metadata=as_("invoker")).code == 0
    assert _code(lambda: admin.Call(status, timeout=15, metadata=as_("invoker")))[0] == \
        grpc.StatusCode.PERMISSION_DENIED
    # a viewer's read-only role calls every query; a certificate with no role nothing
    assert _stub(daemon, pk, "viewer").Call(status, timeout=15).code == 0
    assert _code(lambda: _stub(daemon, pk, "nobody").Call(status, timeout=15)) == \
        (grpc.StatusCode.PERMISSION_DENIED, "nobody has no role here")
    # the panel's certificate is nobody without its user's token; no certificate, no call
    assert _code(lambda: _stub(daemon, pk, "panel").Call(status, timeout=15)) == \
        (grpc.StatusCode.UNAUTHENTICATED, "panel is a proxy: it must forward its user's token")
    assert _code(lambda: _stub(daemon, pk, None).Call(status, timeout=15))[0] == \
        grpc.StatusCode.UNAVAILABLE


def test_force_maintenance_needs_the_right_to_end_maintenance(daemon: Daemon, world: Any) -> None:
    """Invoke's force_maintenance overrides the node's maintenance hold: only a caller who
    may end maintenance (maintenance.disable) may ask it; the call log says it was asked."""
    pk = world[1]
    admin = _stub(daemon, pk, "admin")
    noter = [("authorization", f"Bearer {_token(pk, sub='noter')}")]

    def add(name: str, force: bool) -> pb.InvokeRequest:
        return pb.InvokeRequest(action="example.note.add", yes=True, force_maintenance=force,
                                params_json=json.dumps({"name": name, "text": "x"}))

    assert _code(lambda: list(admin.Invoke(add("fm1", True), timeout=60, metadata=noter))) == \
        (grpc.StatusCode.PERMISSION_DENIED,
         "noter may not override maintenance mode: force_maintenance needs maintenance.disable")
    denied = _last_denial(daemon)
    assert (denied["caller"], denied.get("force_maintenance")) == ("noter via=admin", True), denied
    assert _events(admin.Invoke(add("fm1", False), timeout=60, metadata=noter))[-1]["code"] == 0
    assert _events(admin.Invoke(add("fm2", True), timeout=60))[-1]["code"] == 0  # admin may


def test_remote_runs_any_declared_command_like_the_local_one(daemon: Daemon, world: Any) -> None:
    """`debvisor --remote NODE …` parses the command here and runs it on NODE's rpcd: the
    same stdout, stderr and exit code as the same command run on the node."""
    d = world[1].dir
    cfg = world[0] / "remote.toml"
    cfg.write_text(f'[rpcd.client]\nca = "{d}/ca.pem"\ncert = "{d}/admin.pem"\n'
                   f'key = "{d}/admin.key"\n[rpcd.nodes.node1]\naddress = "{daemon.address}"\n')
    here = world[0] / "elsewhere"  # the caller's own state: empty, unlike the node's
    for args, method in ((["ops", "list", "--limit", "3"], "Call"), (["--json", "ops", "list"], "Call"),
                         (["hv", "register", "test", "--owner", "ops", "--dry-run"], "Invoke"),
                         (["ops", "show", "../../etc/passwd"], "Call"),
                         (["rpcdtest", "peek", "n3"], "Call"),
                         (["--events", "rpcdtest", "peek", "n3"], "Call"),
                         (["--events", "ops", "show", "20260101-000000-abcdef"], "Call"),
                         (["--events", "hv", "register", "test", "--owner", "ops", "--dry-run"],
                          "Invoke"),
                         (["audit", "verify"], "Call"),
                         (["--json", "audit", "show", "--limit", "2"], "Call")):
        before = len(daemon.lines())
        remote = _dv(here, "--remote", "node1", *args, config=cfg)
        # a query goes through the unary Call, a state change through Invoke's stream
        assert {x["method"] for x in _since(daemon, before)} == {f"/debvisor.v1.Node/{method}"}
        local = _dv(daemon.state, *args)
        if "--events" in args:  # the same events but their times
            def _untimed(out: str) -> list[dict[str, Any]]:
                return [{k: v for k, v in json.loads(x).items() if k != "t"} for x in out.splitlines()]

            assert (remote.returncode, _untimed(remote.stdout)) == \
                (local.returncode, _untimed(local.stdout)), (remote.stdout, local.stdout)
            continue
        assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), args
        assert [ln for ln in remote.stderr.splitlines() if ln.startswith(("[ERROR]", "[WARN"))] == \
            [ln for ln in local.stderr.splitlines() if ln.startswith(("[ERROR]", "[WARN"))], args
    assert not (here / "journal").exists()  # nothing ran here
    # what cannot go through the daemon is refused before anything runs: exit 2, one line
    for args, why in ((["rpcd", "serve"], "`rpcd serve` is not one"),
                      (["actions", "list"], "--remote runs declared actions"),
                      (["ops", "list", "--limit", "many"], "many"),
                      (["hv", "register", "test", "--rollback"], "--rollback does not go through")):
        res = _dv(here, "--remote", "node1", *args, config=cfg)
        assert res.returncode == 2 and why in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    res = _dv(here, "--remote", "no such node!", "ops", "list", config=cfg)
    assert res.returncode == 2 and "not a node name or host:port" in res.stderr, res.stderr


def test_health_both_services(daemon: Daemon, world: Any) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = _stub(daemon, world[1])
    h = json.loads(stub.Health(pb.HealthRequest(), timeout=60).json)
    assert {"core.state-dir", "core.audit-chain"} <= {c["name"] for c in h["checks"]}
    # the standard service needs no role, but the port still needs a client certificate
    ch = grpc.secure_channel(daemon.address, grpc.ssl_channel_credentials(
        (world[1].dir / "ca.pem").read_bytes(), (world[1].dir / "nobody.key").read_bytes(),
        (world[1].dir / "nobody.pem").read_bytes()))
    st = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert st.status == health_pb2.HealthCheckResponse.SERVING


# -- the auth matrix -----------------------------------------------------------------------------
def _ops_list(stub: pbg.NodeStub, md: Any = None) -> Any:
    return lambda: stub.Invoke(pb.InvokeRequest(action="ops.list"), timeout=15, metadata=md)


def _last_denial(d: Daemon) -> dict[str, Any]:
    return next(x for x in reversed(d.lines()) if x["code"] not in ("OK", "STARTED"))


def _refused(d: Daemon, before: int, method: str, code: grpc.StatusCode, cn: str
             ) -> dict[str, Any]:
    """The one line of a call refused at admission (nothing ran: no second line), checked
    for its method, code and certificate, without a caller: none was identified."""
    (line,) = _since(d, before)
    assert (line["method"], line["code"], line["cn"]) == (method, code.name, cn), line
    assert "caller" not in line and line["peer"].startswith("ipv4:127.0.0.1:"), line
    assert {"time", "seq", "prev", "hash", "why"} <= set(line), line
    return line


INVOKE = "/debvisor.v1.Node/Invoke"


def test_tls_failures_never_reach_a_handler(daemon: Daemon, world: Any) -> None:
    """No client certificate, one from another CA, an expired one, a server the client does
    not trust: grpc core fails the TLS handshake (require_client_authentication) before any
    HTTP/2 stream exists, so no Python code of the daemon — interceptor or handler — runs
    and no call-log line can be written; the client sees UNAVAILABLE. That no line appears
    is asserted: a handshake failure that reached the guard would show here."""
    pk = world[1]
    before = len(daemon.lines())
    for stub in (_stub(daemon, pk, None),                       # no client certificate
                 _stub(daemon, pk, "admin", ca_dir=pk.rogue),   # a certificate from another CA
                 _stub(daemon, pk, "expired"),                  # expired
                 _stub(daemon, pk, "admin", trust=pk.rogue / "ca.pem")):  # server not trusted
        assert _code(_ops_list(stub))[0] == grpc.StatusCode.UNAVAILABLE
    assert len(daemon.lines()) == before  # the handshake failed: nothing to log


def test_rbac_denies_by_default_and_says_why(daemon: Daemon, world: Any) -> None:
    pk = world[1]
    viewer = _stub(daemon, pk, "viewer")
    assert _code(_ops_list(viewer))[0] == grpc.StatusCode.OK
    code, why = _code(lambda: viewer.Invoke(pb.InvokeRequest(
        action="maintenance.enable", params_json='{"reason": "x"}', yes=True), timeout=15))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "may not run maintenance.enable" in why
    assert _last_denial(daemon)["why"] == why
    code, _ = _code(lambda: viewer.RollbackOperation(pb.RollbackRequest(id="20260101-000000-abcdef"),
                                                     timeout=15))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, why = _code(_ops_list(_stub(daemon, pk, "nobody")))  # a valid certificate, no role
    assert code == grpc.StatusCode.PERMISSION_DENIED and why == "nobody has no role here"
    status = json.loads(_dv(daemon.state, "--json", "maintenance", "status").stdout)
    assert status["enabled"] is False


def test_a_certificate_is_its_common_name_whatever_its_alternative_names(
        daemon: Daemon, world: Any, tmp_path: Path) -> None:
    """grpc names a certificate with subject alternative names by those: the caller is
    still the CN (a SAN "admin" on viewer's certificate makes no admin)."""
    pk = world[1]
    pki.issue(pk.dir, "viewer", kind="user", dns=("admin",), out=tmp_path)
    creds = grpc.ssl_channel_credentials((pk.dir / "ca.pem").read_bytes(),
                                         (tmp_path / "viewer.key").read_bytes(),
                                         (tmp_path / "viewer.pem").read_bytes())
    stub = pbg.NodeStub(grpc.secure_channel(daemon.address, creds))
    who = json.loads(stub.WhoAmI(pb.WhoAmIRequest(), timeout=10).json)
    assert who["identity"] == "viewer" and who["roles"] == ["viewer"], who
    code, why = _code(lambda: stub.Invoke(pb.InvokeRequest(
        action="maintenance.enable", params_json='{"reason": "x"}', yes=True), timeout=15))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "viewer may not run" in why


def test_every_method_of_the_service_goes_through_the_guard(daemon: Daemon, world: Any) -> None:
    """Each method debvisor.v1.Node declares, called with a certificate of no role and
    an empty request, fails and is logged — refused by the guard, or (Login, Logout,
    RecordEvent: anyone may ask) by its handler once the guard let it through."""
    pk = world[1]
    ch = grpc.secure_channel(daemon.address, grpc.ssl_channel_credentials(
        (pk.dir / "ca.pem").read_bytes(), (pk.dir / "nobody.key").read_bytes(),
        (pk.dir / "nobody.pem").read_bytes()))
    for m in pb.DESCRIPTOR.services_by_name["Node"].methods:
        method = f"/debvisor.v1.Node/{m.name}"
        call = ch.unary_stream(method) if m.server_streaming else ch.unary_unary(method)
        before = len(daemon.lines())
        code, _ = _code(lambda c=call: c(b"", timeout=10))
        assert code != grpc.StatusCode.OK, method
        logged = daemon.lines()[before:]  # its admission (Login's: then its outcome)
        assert logged and {x["method"] for x in logged} == {method}, method
        assert logged[-1]["code"] not in ("OK", "STARTED"), (method, logged[-1])


def test_unknown_and_streaming_methods_are_denied(daemon: Daemon, world: Any) -> None:
    ch = grpc.secure_channel(daemon.address, grpc.ssl_channel_credentials(
        (world[1].dir / "ca.pem").read_bytes(), (world[1].dir / "admin.key").read_bytes(),
        (world[1].dir / "admin.pem").read_bytes()))
    for method in ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                   "/debvisor.v1.Node/NoSuchMethod"):
        bidi = ch.stream_stream(method)
        code, why = _code(lambda m=bidi: m(iter([b""]), timeout=10))
        assert code == grpc.StatusCode.PERMISSION_DENIED and why == "method not exposed", method
        assert _last_denial(daemon)["method"] == method


def test_streaming_methods_without_credentials_are_refused_and_logged(daemon: Daemon,
                                                                     world: Any) -> None:
    """A server-streaming method is admitted like a unary one: refused before its first
    event, with its line — a certificate of no role, a proxy without its user's token, a
    bad API key or bearer token."""
    pk = world[1]
    nobody, panel = _stub(daemon, pk, "nobody"), _stub(daemon, pk, "panel")
    denied, unauth = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED
    calls: list[tuple[str, Any]] = [
        (INVOKE, lambda s, md: s.Invoke(pb.InvokeRequest(action="ops.list"), timeout=15, metadata=md)),
        ("/debvisor.v1.Node/AuditEvents",
         lambda s, md: s.AuditEvents(pb.AuditEventsRequest(), timeout=15, metadata=md)),
        ("/debvisor.v1.Node/RollbackOperation", lambda s, md: s.RollbackOperation(
            pb.RollbackRequest(id="20260101-000000-abcdef"), timeout=15, metadata=md))]
    for method, call in calls:
        for stub, md, code, cn, why in (
                (nobody, None, denied, "nobody", "nobody has no role here"),
                (panel, None, unauth, "panel", "panel is a proxy: it must forward its user's token"),
                (nobody, [("x-api-key", "dvk_zzzzzzzz." + "d" * 27)], unauth, "nobody",
                 "unknown API key"),
                (panel, [("authorization", f"Bearer {_token(pk, exp=-120)}")], unauth, "panel",
                 "bad token: Signature has expired")):
            before = len(daemon.lines())
            assert _code(lambda s=stub, m=md, c=call: c(s, m)) == (code, why), (method, why)
            assert _refused(daemon, before, method, code, cn)["why"] == why


def test_api_keys_authenticate_and_only_narrow(daemon: Daemon, world: Any) -> None:
    pk = world[1]
    made = _dv(daemon.state, "--json", "rpcd", "key", "create", "--owner", "admin", "--role",
               "viewer", "--ttl", "1h", config=daemon.config)
    assert made.returncode == 0, made.stderr
    rec = json.loads(made.stdout)
    key = rec["key"]
    secret = key.split(".", 1)[1]
    # the store keeps HMAC-SHA256(server key, secret), never the secret
    stored = (daemon.state / "rpcd" / "api-keys.json").read_text()
    assert secret not in stored and key not in stored
    server_key = (daemon.state / "keys" / "rpcd-api.key").read_bytes().strip()
    mac = json.loads(stored)[rec["id"]]["mac"]
    assert re.fullmatch(r"[0-9a-f]{64}", mac), mac
    assert mac == hmac.new(server_key, secret.encode(), hashlib.sha256).hexdigest()
    admin = _stub(daemon, pk, "admin")
    md = [("x-api-key", key)]
    assert _code(_ops_list(admin, md))[0] == grpc.StatusCode.OK
    code, why = _code(lambda: admin.Invoke(pb.InvokeRequest(action="maintenance.enable",
                                                            params_json='{"reason": "k"}', yes=True),
                                           timeout=15, metadata=md))
    assert code == grpc.StatusCode.PERMISSION_DENIED  # admin's key is a viewer's key
    assert _last_denial(daemon)["caller"] == f"admin key={rec['id']}"
    before = len(daemon.lines())
    code, why = _code(_ops_list(_stub(daemon, pk, "viewer"), md))
    assert (code, why) == (grpc.StatusCode.PERMISSION_DENIED,
                           f"API key {rec['id']} belongs to another identity")
    assert _refused(daemon, before, INVOKE, code, "viewer")["why"] == why
    unauth = grpc.StatusCode.UNAUTHENTICATED

    def refused(presented: str, reason: str) -> None:
        """Refused with ``reason``, in one line that names it but not the key."""
        before = len(daemon.lines())
        assert _code(_ops_list(admin, [("x-api-key", presented)])) == (unauth, reason)
        assert _refused(daemon, before, INVOKE, unauth, "admin")["why"] == reason
        assert presented.rpartition(".")[2] not in daemon.calllog.read_text()

    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    for bad, reason in ((wrong, "wrong API key secret"),
                        ("dvk_zzzzzzzz." + "b" * 27, "unknown API key"),
                        ("garbage-" + "c" * 20, "malformed API key")):
        refused(bad, reason)
    short = json.loads(_dv(daemon.state, "--json", "rpcd", "key", "create", "--owner", "admin",
                           "--role", "admin", "--ttl", "1s", config=daemon.config).stdout)
    time.sleep(1.2)  # the key's lifetime, not a wait for the daemon
    refused(short["key"], "API key expired")
    assert _dv(daemon.state, "rpcd", "key", "revoke", rec["id"], config=daemon.config).returncode == 0
    refused(key, "API key revoked")
    assert secret not in daemon.calllog.read_text()
    listed = json.loads(_dv(daemon.state, "--json", "rpcd", "key", "list", config=daemon.config).stdout)
    assert key not in json.dumps(listed) and all("mac" not in r for r in listed)


def test_bearer_tokens_and_the_proxy(daemon: Daemon, world: Any) -> None:
    pk = world[1]
    panel = _stub(daemon, pk, "panel")
    unauth = grpc.StatusCode.UNAUTHENTICATED
    before = len(daemon.lines())
    code, why = _code(_ops_list(panel))
    assert (code, why) == (unauth, "panel is a proxy: it must forward its user's token")
    assert _refused(daemon, before, INVOKE, unauth, "panel")["why"] == why
    ok = [("authorization", f"Bearer {_token(pk)}")]
    who = json.loads(panel.WhoAmI(pb.WhoAmIRequest(), timeout=10, metadata=ok).json)
    assert (who["identity"], who["via"], who["roles"]) == ("alice", "panel", ["operator"])
    assert _code(_ops_list(panel, ok))[0] == grpc.StatusCode.OK
    assert any(x.get("caller") == "alice via=panel" for x in daemon.lines())
    bob = [("authorization", f"Bearer {_token(pk, sub='bob')}")]
    assert _code(lambda: panel.Invoke(pb.InvokeRequest(action="maintenance.enable",
                                                       params_json='{"reason": "b"}', yes=True),
                                      timeout=15, metadata=bob))[0] == grpc.StatusCode.PERMISSION_DENIED
    now = int(time.time())
    none = jwt.encode({"sub": "alice", "iss": ISSUER, "aud": AUD, "exp": now + 60},
                      None, algorithm="none")  # type: ignore[arg-type]  # the attack itself
    no_exp = jwt.encode({"sub": "alice", "iss": ISSUER, "aud": AUD, "iat": now}, pk.jwk_key,
                        algorithm="ES256", headers={"kid": "k1"})  # signed, but never expires
    for tok, reason in ((_token(pk, key=pk.other_key), "Signature verification failed"),
                        (_token(pk, aud="someone-else"), "Audience doesn't match"),
                        (_token(pk, exp=-120), "Signature has expired"),
                        (_token(pk, iss="https://evil.invalid"), "Invalid issuer"),
                        (none, "The specified alg value is not allowed"),
                        (no_exp, 'Token is missing the "exp" claim')):
        before = len(daemon.lines())
        code, why = _code(_ops_list(panel, [("authorization", f"Bearer {tok}")]))
        assert code == unauth and reason in why, (reason, why)
        assert _refused(daemon, before, INVOKE, unauth, "panel")["why"] == why
        logged = daemon.calllog.read_text()
        assert tok not in logged and tok.rsplit(".", 2)[-2] not in logged  # nor its claims


def _login(stub: pbg.NodeStub, user: str = "carol", password: str = PASSWORD) -> Any:
    return stub.Login(pb.LoginRequest(user=user, password=password), timeout=15)


def _who(stub: pbg.NodeStub, token: str) -> Any:
    return lambda: stub.WhoAmI(pb.WhoAmIRequest(), timeout=10, metadata=[("x-user-token", token)])


def test_login_with_a_password_gives_a_revocable_user_token(daemon: Daemon, world: Any) -> None:
    root, pk = world
    panel = _stub(daemon, pk, "panel")
    unauth = grpc.StatusCode.UNAUTHENTICATED
    for user, password in (("carol", "not the password"), ("mallory", PASSWORD), ("", "")):
        assert _code(lambda u=user, pw=password: _login(panel, u, pw)) == \
            (unauth, "wrong user name or password"), user
    resp = _login(panel)
    assert (resp.user, list(resp.roles)) == ("carol", ["operator"]) and resp.token.startswith("dvs_")
    assert 0 < resp.expires_at - time.time() <= 900 and resp.idle_timeout == 900
    who = json.loads(_who(panel, resp.token)().json)
    assert (who["identity"], who["via"], who["roles"]) == ("carol", "panel", ["operator"])
    ok = [("x-user-token", resp.token)]
    assert _code(_ops_list(panel, ok))[0] == grpc.StatusCode.OK
    lines = daemon.lines()
    assert any(x.get("caller") == "carol via=panel" for x in lines)
    logins = [(x.get("user"), x["code"]) for x in lines
              if x["method"].endswith("/Login") and x["code"] != "STARTED"]
    assert ("mallory", "UNAUTHENTICATED") in logins and ("carol", "OK") in logins
    assert PASSWORD not in daemon.calllog.read_text()
    # a user token goes alone; a forged one is nobody
    both = [("x-user-token", resp.token), ("authorization", f"Bearer {_token(pk)}")]
    assert _code(_ops_list(panel, both))[0] == unauth
    assert _code(_who(panel, "dvs_" + "A" * 43))[0] == unauth
    # Logout ends the session at once
    panel.Logout(pb.LogoutRequest(), timeout=10, metadata=ok)
    code, why = _code(_who(panel, resp.token))
    assert code == unauth and "log in again" in why
    # removing the user ends every session of theirs at its next call
    again = _login(panel).token
    res = _dv(root / "state", "rpcd", "user", "remove", "carol")
    assert res.returncode == 0, res.stderr
    try:
        assert _code(_who(panel, again)) == (unauth, "user carol was removed: the session has ended")
        assert _code(lambda: _login(panel)) == (unauth, "wrong user name or password")
    finally:
        res = _dv(root / "state", "rpcd", "user", "add", "carol", "--role", "operator",
                  "--password-file", "-", input=PASSWORD)
        assert res.returncode == 0, res.stderr


def test_login_with_an_oidc_id_token(daemon: Daemon, world: Any) -> None:
    pk = world[1]
    panel = _stub(daemon, pk, "panel")

    def id_token(aud: str = PANEL_AUD, exp: float = 300, key: Any = None,
                 name: str = "alice") -> str:
        now = int(time.time())
        return jwt.encode({"sub": "00u1", "preferred_username": name, "iss": ISSUER, "aud": aud,
                           "iat": now, "exp": now + exp}, key or pk.jwk_key, algorithm="ES256",
                          headers={"kid": "k1"})

    resp = panel.Login(pb.LoginRequest(oidc_id_token=id_token()), timeout=15)
    assert (resp.user, list(resp.roles)) == ("alice", ["operator"])  # [rpcd.identities] alice
    assert json.loads(_who(panel, resp.token)().json)["via"] == "panel"
    for tok, reason in ((id_token(aud=AUD), "Audience doesn't match"),
                        (id_token(exp=-120), "Signature has expired"),
                        (id_token(key=pk.other_key), "Signature verification failed")):
        code, why = _code(lambda t=tok: panel.Login(pb.LoginRequest(oidc_id_token=t), timeout=15))
        assert code == grpc.StatusCode.UNAUTHENTICATED and reason in why, (reason, why)
    code, why = _code(lambda: panel.Login(pb.LoginRequest(oidc_id_token=id_token(name="zed")),
                                          timeout=15))
    assert (code, why) == (grpc.StatusCode.PERMISSION_DENIED, "zed has no role here")
    # without a client certificate of the CA there is no login at all
    anon = _stub(daemon, pk, None)
    assert _code(lambda: _login(anon))[0] == grpc.StatusCode.UNAVAILABLE


# -- RecordEvent: a proxy's events in the node's audit chain ------------------------------------
def _audit(d: Daemon) -> list[dict[str, Any]]:
    path = d.state / "log" / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


#: a console's close as the panel's console proxy reports it (debvisor_core/panel/console.py)
CONSOLE_CLOSE = {"event": "console.close", "user": "carol", "client": "127.0.0.1", "vm": "vm1",
                 "mode": "view", "ticket": "t-3f2a", "reason": "closed by the browser",
                 "code": 1000, "duration_s": 12.5, "dropped": {"KeyEvent": 3, "PointerEvent": 7},
                 "dropped_total": 10, "forwarded": {"FramebufferUpdateRequest": 40},
                 "stripped": {}, "bytes_to_vm": 812, "bytes_from_browser": 1903}


def test_a_proxy_records_console_events_for_its_logged_in_user(daemon: Daemon, world: Any) -> None:
    from debvisor_core.rpcd.client import record_event

    panel = _stub(daemon, world[1], "panel")
    token = _login(panel).token
    opened = panel.RecordEvent(pb.RecordEventRequest(kind="console.open", details_json=json.dumps(
        {"vm": "vm1", "mode": "control", "upstream": "127.0.0.1:5901", "security": "vnc-password"})),
        timeout=15, metadata=[("x-user-token", token)])
    said = json.loads(opened.json)
    rec = _audit(daemon)[-1]
    assert (said["seq"], said["hash"], said["kind"]) == (rec["seq"], rec["hash"], "console.open")
    assert (rec["caller"], rec["result"], rec["plugin"], rec["action"]) == \
        ("carol via=panel", "console.open", "console", "open")
    assert rec["details"] == {"vm": "vm1", "mode": "control", "upstream": "127.0.0.1:5901",
                              "security": "vnc-password"}
    # the panel's own event dict, as is: its kind from "event", its "user" dropped
    said = record_event(panel, token, CONSOLE_CLOSE)
    rec = _audit(daemon)[-1]
    assert said == {"seq": rec["seq"], "hash": rec["hash"], "kind": "console.close"}
    assert rec["caller"] == "carol via=panel" and "user" not in rec["details"]
    assert rec["details"] == {k: v for k, v in CONSOLE_CLOSE.items() if k not in ("event", "user")}
    # in the chain, which still verifies; the call log has the calls
    verified = json.loads(_stub(daemon, world[1]).VerifyAudit(pb.VerifyAuditRequest(), timeout=30).json)
    assert verified["ok"] is True, verified
    calls = [x for x in daemon.lines() if x["method"].endswith("/RecordEvent") and x["code"] == "OK"]
    assert [x["event"] for x in calls[-2:]] == ["console.open", "console.close"]
    assert calls[-1]["caller"] == "carol via=panel"


def test_record_event_is_denied_to_anyone_but_a_proxy_with_a_user_token(daemon: Daemon,
                                                                       world: Any) -> None:
    pk = world[1]
    panel, admin = _stub(daemon, pk, "panel"), _stub(daemon, pk, "admin")
    req = pb.RecordEventRequest(kind="console.open", details_json='{"vm": "vm1"}')
    denied = grpc.StatusCode.PERMISSION_DENIED
    chain = len(_audit(daemon))
    cases = [
        # the proxy's certificate alone is nobody
        (panel, None, grpc.StatusCode.UNAUTHENTICATED, "panel is a proxy: it must forward its user's token"),
        # the proxy with a bearer token: a user, but not one who logged in here
        (panel, [("authorization", f"Bearer {_token(pk)}")], denied,
         "a proxy records events only for a logged-in user: send the user's token (x-user-token)"),
        # anyone else: not a proxy, with or without a user's session token
        (admin, None, denied, "only a proxy ([rpcd] proxies) records events; certificate admin is not one"),
        (admin, [("x-user-token", _login(admin).token)], denied,
         "only a proxy ([rpcd] proxies) records events; certificate admin is not one")]
    for stub, md, code, why in cases:
        before = len(daemon.lines())
        assert _code(lambda s=stub, m=md: s.RecordEvent(req, timeout=15, metadata=m)) == (code, why)
        (line,) = [x for x in _since(daemon, before) if x["code"] != "STARTED"]
        assert (line["method"], line["code"]) == ("/debvisor.v1.Node/RecordEvent", code.name)
        assert line["why"] == why
    assert len(_audit(daemon)) == chain  # nothing reached the chain


def test_record_event_takes_only_known_kinds_and_bounded_fields(daemon: Daemon, world: Any) -> None:
    panel = _stub(daemon, world[1], "panel")
    md = [("x-user-token", _login(panel).token)]
    chain = len(_audit(daemon))
    for kind, details, why in (
            ("shell.exec", {}, "event kind 'shell.exec' is not one a proxy may record"),
            ("console.open", {"user": "root"}, "details key 'user' is not an event field (rpcd "
                                               "records the user whose token came with the call)"),
            ("console.open", {"command": "rm -rf /"}, "details key 'command' is not an event field"),
            ("console.open", {"vm": "a b"}, "details vm: must be a name or address"),
            ("console.open", {"mode": "admin"}, "details mode: must be one of view, control"),
            ("console.close", {"duration_s": -1}, "details duration_s: must be a number of seconds"),
            ("console.close", {"code": True}, "details code: must be a whole number from 0 to 65535"),
            ("console.close", {"dropped": {"KeyEvent": -1}}, "details dropped: must map message names"),
            ("console.close", {"dropped": {f"M{i}": 1 for i in range(40)}},
             "details dropped: must be an object of at most 32 counters"),
            ("console.close", {"dropped": {"a": {"b": 1}}}, "details dropped: must map message names"),
            ("console.close", {"reason": "x" * 201}, "details reason: must be printable text of at "
                                                     "most 200 characters"),
            ("console.close", {"reason": "a\nforged line"}, "details reason: must be printable text"),
            ("console.close", [1, 2], "details_json must be a JSON object, not list"),
            ("console.close", "x" * 5000, "the event's details are 5002 bytes of JSON; at most 4096")):
        req = pb.RecordEventRequest(kind=kind, details_json=json.dumps(details))
        code, said = _code(lambda r=req: panel.RecordEvent(r, timeout=15, metadata=md))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and said.startswith(why), (kind, said)
        assert daemon.lines()[-1]["code"] == "INVALID_ARGUMENT"
    req = pb.RecordEventRequest(kind="console.open", details_json="{not json")
    assert _code(lambda: panel.RecordEvent(req, timeout=15, metadata=md)) == \
        (grpc.StatusCode.INVALID_ARGUMENT, "details_json is not valid JSON")
    assert len(_audit(daemon)) == chain

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(kind=st.one_of(st.sampled_from(["console.open", "console.close", "console.x"]),
                          st.text(max_size=20)),
           details=st.one_of(st.text(max_size=100), st.dictionaries(
               st.sampled_from(["vm", "mode", "code", "dropped", "reason", "x"]),
               st.one_of(st.integers(), st.floats(), st.text(max_size=30), st.none(),
                         st.booleans(), st.dictionaries(st.text(max_size=5), st.integers(),
                                                        max_size=3)),
               max_size=4).map(json.dumps)))
    def fuzz(kind: str, details: str) -> None:
        req = pb.RecordEventRequest(kind=kind, details_json=details)
        code, why = _code(lambda: panel.RecordEvent(req, timeout=15, metadata=md))
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, why)
        assert code != grpc.StatusCode.OK or kind in ("console.open", "console.close")

    fuzz()
    assert daemon.proc.poll() is None


def test_a_session_expires_when_idle(world: Any) -> None:
    """A user token lives session_ttl after its last use (activity renews it), never longer
    than session_max after the login. The sleeps are the scenario's idle and busy times."""
    d = _start(world[0], "idle", session_ttl=1.0, session_max=3.0)
    try:
        panel = _stub(d, world[1], "panel")
        token = _login(panel).token
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:  # busy for twice the idle limit: still valid
            assert _code(_who(panel, token))[0] == grpc.StatusCode.OK
            time.sleep(0.3)
        time.sleep(1.5)  # idle longer than the session's 1 s
        code, why = _code(_who(panel, token))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "log in again" in why
        t1 = time.monotonic()
        token = _login(panel).token
        while (code := _code(_who(panel, token))[0]) == grpc.StatusCode.OK:
            assert time.monotonic() - t1 < 5.0, "activity renewed the session past session_max"
            time.sleep(0.3)
        assert code == grpc.StatusCode.UNAUTHENTICATED and time.monotonic() - t1 >= 3.0
    finally:
        d.stop()


OVER_GRPC = r"""
import sys
from debvisor_core.context import Context
from debvisor_core.engine import run
from debvisor_core.errors import DebvisorError
from debvisor_core.model import Operation, Phase
from debvisor_core.remote import RemoteAction

op = Operation(kind="cluster.test", title="a note over grpc", phases=[Phase("n1", [
    RemoteAction("n1", "example.note.add", {"name": "viagrpc", "text": "hi"})], node="n1")])
try:
    print(run(Context(yes=True), op).id)
except DebvisorError as exc:
    print(exc.message, file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def test_remote_action_over_the_grpc_transport(daemon: Daemon, world: Any,
                                               tmp_path: Path) -> None:
    """An orchestrator's RemoteAction runs on the node through its rpcd (transport grpc):
    the node journals the operation with the step's origin; the orchestrator's rollback
    undoes it there through the same transport."""
    pk = world[1]
    state, cfg = tmp_path / "orch", tmp_path / "orch.toml"
    state.mkdir()
    cfg.write_text(f'[cluster.nodes.n1]\ntransport = "grpc"\naddress = "{daemon.address}"\n'
                   f'[rpcd.client]\nca = "{pk.dir}/ca.pem"\ncert = "{pk.dir}/admin.pem"\n'
                   f'key = "{pk.dir}/admin.key"\n')
    env = _env(DEBVISOR_STATE_DIR=str(state), DEBVISOR_CONFIG=str(cfg))
    res = subprocess.run([sys.executable, "-c", OVER_GRPC], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    op_id = res.stdout.strip().splitlines()[-1]
    node_ops = json.loads(_dv(daemon.state, "--json", "ops", "list", "--origin", f"{op_id}.0",
                              config=daemon.config).stdout)
    (there,) = node_ops
    assert there["kind"] == "example.note-add" and there["status"] == "succeeded", there
    # what an interrupted apply's undo asks: the node's operations of this step, with Call
    from debvisor_core.context import Context
    from debvisor_core.rpcd.transport import GrpcTransport

    transport = GrpcTransport.for_node(Context(config_file=str(cfg)), "n1",
                                       {"address": daemon.address})
    before = len(daemon.lines())
    code, out, err = transport.run(["--json", "ops", "list", "--origin", f"{op_id}.0", "--limit",
                                    "5"], None, 60)
    assert (code, [o["id"] for o in json.loads(out)], err) == (0, [there["id"]], "")
    (line,) = _since(daemon, before)
    assert (line["method"], line["action"], line["params"]["origin"]) == \
        ("/debvisor.v1.Node/Call", "ops.list", f"{op_id}.0")
    shown = json.loads(_dv(state, "--json", "ops", "show", op_id, config=cfg).stdout)
    assert shown["status"] == "succeeded"
    back = _dv(state, "ops", "rollback", op_id, "--yes", config=cfg)
    assert back.returncode == 0, back.stderr
    node_ops = json.loads(_dv(daemon.state, "--json", "ops", "list", "--origin", f"{op_id}.0",
                              config=daemon.config).stdout)
    assert node_ops[0]["status"] == "rolled-back", node_ops
    bad = _stub(daemon, pk).Invoke(pb.InvokeRequest(action="example.note.add", yes=True,
                                                    params_json='{"name": "x", "text": "y"}',
                                                    origin="../../etc"), timeout=30)
    assert _code(lambda: list(bad))[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_fuzzed_requests_never_crash_the_server(daemon: Daemon, world: Any) -> None:
    stub = _stub(daemon, world[1])

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(action=st.one_of(st.text(max_size=40), st.sampled_from(["ops.list", "ops.show", "hv.migrate"])),
           params=st.one_of(st.text(max_size=200), st.dictionaries(
               st.sampled_from(["limit", "id", "vm", "target", "x"]),
               st.one_of(st.integers(), st.text(max_size=30), st.none(), st.booleans()),
               max_size=3).map(json.dumps)),
           dry=st.booleans())
    def one(action: str, params: str, dry: bool) -> None:
        code, why = _code(lambda: stub.Invoke(pb.InvokeRequest(
            action=action, params_json=params, dry_run=dry), timeout=30))
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, why)

    one()
    assert daemon.proc.poll() is None
    assert _code(_ops_list(stub))[0] == grpc.StatusCode.OK


def test_load_is_served_within_bounds(daemon: Daemon, world: Any) -> None:
    stub = _stub(daemon, world[1])
    errors: list[Any] = []

    def worker() -> None:
        for _ in range(25):
            code, why = _code(lambda: stub.WhoAmI(pb.WhoAmIRequest(), timeout=20))
            if code != grpc.StatusCode.OK:
                errors.append((code, why))

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and time.monotonic() - t0 < 120
    assert sum(1 for x in daemon.lines() if x.get("method", "").endswith("WhoAmI")
               and x["code"] == "OK") >= 200


def test_certificates_reload_on_sighup(daemon: Daemon, world: Any) -> None:
    pk = world[1]

    def served_serial() -> int:
        c = ssl.create_default_context(cafile=str(pk.dir / "ca.pem"))
        c.load_cert_chain(pk.dir / "admin.pem", pk.dir / "admin.key")
        c.set_alpn_protocols(["h2"])
        host, port = daemon.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s, \
                c.wrap_socket(s, server_hostname=host) as t:
            der = t.getpeercert(binary_form=True)
        assert der is not None
        return int(x509.load_der_x509_certificate(der).serial_number)

    old = served_serial()
    pki.issue(pk.dir, "node1", server=True, ips=("127.0.0.1",))
    new = x509.load_pem_x509_certificate((pk.dir / "node1.pem").read_bytes()).serial_number
    assert served_serial() == old  # read at start; files alone change nothing
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while served_serial() != new:
        assert time.monotonic() < deadline, "the new certificate was never served"
    assert _code(_ops_list(_stub(daemon, pk)))[0] == grpc.StatusCode.OK


# -- daemons of their own: rate limits, a failing audit sink ---------------------------------------
def test_rate_limit_per_identity(world: Any) -> None:
    from debvisor_core.lab.process import free_port

    mport = free_port()
    d = _start(world[0], "rate", "--metrics-listen", f"127.0.0.1:{mport}", rate=0.5, burst=3.0)
    try:
        admin, viewer = _stub(d, world[1], "admin"), _stub(d, world[1], "viewer")
        codes = [_code(_ops_list(admin))[0] for _ in range(5)]
        assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
        with pytest.raises(grpc.RpcError) as err:
            list(admin.Invoke(pb.InvokeRequest(action="ops.list"), timeout=10))
        md = dict(err.value.trailing_metadata())
        assert 0 < int(md["retry-after-ms"]) <= 2001  # 1 token at 0.5/s
        assert _code(_ops_list(viewer))[0] == grpc.StatusCode.OK  # its own bucket
        assert _last_denial(d)["code"] == "RESOURCE_EXHAUSTED"
        # Call takes from the same bucket, and says when to come back the same way
        status = pb.InvokeRequest(action="maintenance.status")
        assert [viewer.Call(status, timeout=10).code for _ in range(2)] == [0, 0]
        with pytest.raises(grpc.RpcError) as err:
            viewer.Call(status, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        md = dict(err.value.trailing_metadata())
        assert 0 < int(md["retry-after-ms"]) <= 2001
        assert (_last_denial(d)["method"], _last_denial(d)["caller"]) == ("/debvisor.v1.Node/Call", "viewer")
        import urllib.request

        tls = ssl.create_default_context(cafile=str(world[1].dir / "ca.pem"))  # metrics over TLS
        with urllib.request.urlopen(f"https://127.0.0.1:{mport}/metrics", context=tls, timeout=10) as r:
            text = r.read().decode()
        assert 'debvisor_rpcd_calls_total{code="RESOURCE_EXHAUSTED",method="/debvisor.v1.Node/Invoke"} 3.0' \
            in text, text[-2000:]
        assert 'debvisor_rpcd_operations_total{action="ops.list",exit="0"} 4.0' in text
        assert 'debvisor_rpcd_calls_total{code="OK",method="/debvisor.v1.Node/Call"} 2.0' in text
        assert 'debvisor_rpcd_calls_total{code="RESOURCE_EXHAUSTED",method="/debvisor.v1.Node/Call"} 1.0' \
            in text
        assert 'debvisor_rpcd_operations_total{action="maintenance.status",exit="0"} 2.0' in text
        assert 'debvisor_rpcd_call_seconds_count{method="/debvisor.v1.Node/Call"} 2.0' in text
        # no Health call was made: the scrape ran the checks (it shows every one of them)
        checks = json.loads(_dv(d.state, "--json", "health", config=d.config).stdout)["checks"]
        assert checks and all(f'debvisor_health_check{{check="{c["name"]}"}}' in text
                              for c in checks), text[-3000:]
    finally:
        d.stop()


def test_a_request_over_max_message_bytes_is_refused_by_grpc(world: Any) -> None:
    """[rpcd] max_message_bytes bounds a request: grpc refuses a larger one
    (RESOURCE_EXHAUSTED) while reading it, before any handler runs (so the guard writes no
    line), and the daemon goes on serving."""
    d = _start(world[0], "small", max_message_bytes=1024)
    try:
        stub = _stub(d, world[1])
        big = pb.InvokeRequest(action="rpcdtest.peek", params_json=json.dumps({"name": "x" * 2048}))
        before = len(d.lines())
        for call in (lambda: stub.Call(big, timeout=15), lambda: stub.Invoke(big, timeout=15)):
            code, why = _code(call)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in why, why
        assert len(d.lines()) == before
        fits = pb.InvokeRequest(action="rpcdtest.peek", params_json=json.dumps({"name": "x" * 900}))
        got = stub.Call(fits, timeout=15)
        assert got.code == 0 and json.loads(got.events[-1].json)["result"]["name"] == "x" * 900
        assert _events(stub.Invoke(fits, timeout=15))[-1] == {"event": "exit", "code": 0}
        assert [x["code"] for x in _since(d, before)] == ["OK", "STARTED", "OK"]
    finally:
        d.stop()


def test_calls_beyond_max_concurrent_are_refused_by_grpc(
        world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[rpcd] max_concurrent: while that many calls are being served (here one: an operation
    held at its first step by the fault plugin's hang), grpc refuses the next call
    (RESOURCE_EXHAUSTED) before the guard sees it — no line; once the held call ends
    (cancelled: its operation is stopped), calls are served again."""
    root, pk = world
    ready = tmp_path / "hung"
    monkeypatch.setenv("DEBVISOR_FAULTS", "1:hang")  # the node's step 1 hangs once applied
    monkeypatch.setenv("DEBVISOR_FAULT_READY", str(ready))
    (tmp_path / "state").mkdir()
    d = _start(root, "one", state=tmp_path / "state", max_concurrent=1)
    stub = _stub(d, pk)
    held = stub.Invoke(pb.InvokeRequest(action="example.note.add", yes=True,
                                        params_json='{"name": "held", "text": "x"}'), timeout=120)
    try:
        assert dict(held.initial_metadata()).get(ADMITTED) == "1"  # its handler is running
        deadline = time.monotonic() + 60
        while not ready.exists():  # ... and its operation is at the hung step
            assert time.monotonic() < deadline and d.proc.poll() is None
            time.sleep(0.05)
        before = len(d.lines())
        limit = (grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")
        for call in (lambda: stub.WhoAmI(pb.WhoAmIRequest(), timeout=10), _ops_list(stub),
                     lambda: stub.Call(pb.InvokeRequest(action="maintenance.status"), timeout=10)):
            assert _code(call) == limit
        assert len(d.lines()) == before  # refused before the guard: nothing to log
        held.cancel()
        deadline = time.monotonic() + 60
        while (code := _code(lambda: stub.WhoAmI(pb.WhoAmIRequest(), timeout=10))[0]) != \
                grpc.StatusCode.OK:
            assert code == limit[0] and time.monotonic() < deadline, code
            time.sleep(0.05)  # the cancelled operation stopping: its handler ends with it
        # the held call's two lines: its admission, and its end, which says it was cancelled
        ends = [x for x in d.lines() if x["method"] == INVOKE]
        assert [x["code"] for x in ends] == ["STARTED", "CANCELLED"], ends
    finally:
        held.cancel()
        d.stop()
        if ready.exists():  # the hung action (its own session), if it outlived its call
            with contextlib.suppress(OSError, ValueError):
                pid = int(ready.read_text())
                if b"debvisor_core" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


def test_an_unwritable_call_log_blocks_every_call(world: Any) -> None:
    root = world[0]
    config = _config(root, "full")
    env = _env(DEBVISOR_STATE_DIR=str(root / "state"), DEBVISOR_CONFIG=str(config))
    proc = subprocess.Popen([sys.executable, "-m", "debvisor_core", "rpcd", "serve", "--call-log",
                             "/dev/full"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY "), line
    d = Daemon(proc, line.split()[1], root / "state", config, Path("/dev/full"))
    try:
        stub = _stub(d, world[1])
        code, why = _code(lambda: stub.Invoke(pb.InvokeRequest(
            action="maintenance.enable", params_json='{"reason": "unaudited"}', yes=True), timeout=15))
        assert code == grpc.StatusCode.UNAVAILABLE and "audit log cannot be written" in why
        status = json.loads(_dv(d.state, "--json", "maintenance", "status").stdout)
        assert status["enabled"] is False  # refused before it ran
        # a read logged once, after it ran: its answer never leaves without its line
        assert _code(lambda: stub.Call(pb.InvokeRequest(action="maintenance.status"), timeout=15)) == \
            (grpc.StatusCode.UNAVAILABLE, "the audit log cannot be written; the call was refused")
    finally:
        d.stop()


def test_every_call_has_a_deadline(world: Any) -> None:
    """[rpcd] default_deadline_s holds every call that runs in the daemon — a query through
    Call or Invoke, and every other method (the guard's) — its answer refused once it is
    over; a state change runs in its own process, to max_operation_s."""
    d = _start(world[0], "deadline", default_deadline_s=1e-6)  # every query outlasts it
    try:
        stub = _stub(d, world[1])
        code, why = _code(lambda: stub.Call(pb.InvokeRequest(action="maintenance.status"), timeout=15))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert why == "maintenance.status ran longer than the call's deadline (1e-06 s)"
        assert (d.lines()[-1]["code"], d.lines()[-1]["exit"]) == ("DEADLINE_EXCEEDED", 0)
        sent: list[Any] = []
        code, why = _code(lambda: sent.extend(stub.Invoke(pb.InvokeRequest(
            action="maintenance.status"), timeout=15)))
        assert (code, why, sent) == (grpc.StatusCode.DEADLINE_EXCEEDED,
                                     "maintenance.status ran longer than the call's deadline "
                                     "(1e-06 s)", [])  # none of its events left
        assert (d.lines()[-1]["method"], d.lines()[-1]["code"], d.lines()[-1]["exit"]) == \
            (INVOKE, "DEADLINE_EXCEEDED", 0)
        for method, call in (("WhoAmI", lambda: stub.WhoAmI(pb.WhoAmIRequest(), timeout=15)),
                             ("ListOperations",
                              lambda: stub.ListOperations(pb.ListOperationsRequest(), timeout=15)),
                             ("Health", lambda: stub.Health(pb.HealthRequest(), timeout=30))):
            assert _code(call) == (grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"{method} ran longer than the call's deadline (1e-06 s)")
            assert (d.lines()[-1]["method"], d.lines()[-1]["code"]) == \
                (f"/debvisor.v1.Node/{method}", "DEADLINE_EXCEEDED")
        # a state change (its dry run here) is a process of its own: max_operation_s holds it
        events = _events(stub.Invoke(pb.InvokeRequest(
            action="example.note.add", params_json='{"name": "dl", "text": "x"}', dry_run=True),
            timeout=60))
        assert events[-1]["event"] == "exit" and events[-1]["code"] == 0, events
        assert (d.lines()[-1]["code"], d.lines()[-1]["exit"]) == ("OK", 0)
    finally:
        d.stop()


def test_serve_takes_its_config_file(world: Any, tmp_path: Path) -> None:
    """`rpcd serve --config FILE`, as the unit starts it (no DEBVISOR_CONFIG)."""
    root, pk = world
    config = _config(root, "own-config")
    env = {k: v for k, v in _env(DEBVISOR_STATE_DIR=str(root / "state")).items()
           if k != "DEBVISOR_CONFIG"}
    bad = subprocess.run([sys.executable, "-m", "debvisor_core", "rpcd", "serve", "--config",
                          str(tmp_path / "none.toml")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "debvisor_core", "rpcd", "serve", "--config",
                             str(config), "--call-log", str(tmp_path / "calls.jsonl")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    d = Daemon(proc, line.split()[1] if line.startswith("READY ") else "", root / "state", config,
               tmp_path / "calls.jsonl")
    try:
        assert line.startswith("READY "), proc.stderr.read() if proc.stderr else ""
        who = json.loads(_stub(d, pk, "viewer").WhoAmI(pb.WhoAmIRequest(), timeout=15).json)
        assert who["roles"] == ["viewer"]  # [rpcd.identities] of that file
    finally:
        d.stop()


def test_an_unwritable_audit_chain_records_no_event(world: Any, tmp_path: Path) -> None:
    root = world[0]
    state = tmp_path / "state"
    res = _dv(state, "rpcd", "user", "add", "carol", "--role", "viewer", "--password-file", "-",
              input=PASSWORD)
    assert res.returncode == 0, res.stderr
    log = state / "log" / "audit.jsonl"
    log.unlink()
    log.symlink_to("/dev/null")  # opened O_NOFOLLOW: refused
    d = _start(root, "noaudit", state=state)
    try:
        panel = _stub(d, world[1], "panel")
        md = [("x-user-token", _login(panel).token)]
        req = pb.RecordEventRequest(kind="console.open", details_json='{"vm": "vm1"}')
        assert _code(lambda: panel.RecordEvent(req, timeout=15, metadata=md)) == \
            (grpc.StatusCode.UNAVAILABLE, "the audit log cannot be written; the event was not recorded")
        assert (d.lines()[-1]["code"], d.lines()[-1]["caller"]) == ("UNAVAILABLE", "carol via=panel")
    finally:
        d.stop()


def test_insecure_lab_mode_is_loopback_only(world: Any) -> None:
    res = _dv(world[0] / "state", "rpcd", "serve", "--insecure-lab", "--listen", "0.0.0.0:0",
              config=_config(world[0], "insecure"))
    assert res.returncode == 2 and "only on loopback" in res.stderr, res.stderr


def test_lab_up_rpcd_serves_the_lab_and_lab_env_points_at_it(tmp_path: Path) -> None:
    env = _env(DEBVISOR_LAB_DIR=str(tmp_path / "lab"), DEBVISOR_STATE_DIR=str(tmp_path / "st"))

    def dv(*args: str, **more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "debvisor_core", *args], env={**env, **more},
                              capture_output=True, text=True, timeout=120)

    try:
        up = dv("--json", "lab", "up", "rpcd")
        assert up.returncode == 0, up.stderr
        config = json.loads(dv("--json", "lab", "env").stdout)["DEBVISOR_CONFIG"]
        res = dv("--json", "rpcd", "call", "ops.list", DEBVISOR_CONFIG=config)
        assert res.returncode == 0 and json.loads(res.stdout) == [], res.stderr
        calls = [json.loads(x) for x in (tmp_path / "lab" / "rpcd" / "calls.jsonl").read_text().splitlines()]
        assert calls[-1]["caller"] == "admin" and calls[-1]["code"] == "OK"
    finally:
        assert dv("lab", "down", "rpcd").returncode == 0
    assert json.loads(dv("--json", "lab", "status").stdout)["services"]["rpcd"]["running"] is False


def test_the_grpc_transport_says_255_only_for_a_node_lost_mid_call(
        world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As ssh's 255, the grpc transport's: a node that admitted the call and went away
    running it (killed here, as a reboot does) — which the reboot step waits out. A call the
    node refused keeps its own code, and so does a node that never answered."""
    from debvisor_core.rpcd.client import Client
    from debvisor_core.rpcd.transport import GrpcTransport

    root, pk = world
    ready = tmp_path / "hung"
    monkeypatch.setenv("DEBVISOR_FAULTS", "1:hang")  # the node's step 1 hangs once applied
    monkeypatch.setenv("DEBVISOR_FAULT_READY", str(ready))
    (tmp_path / "state").mkdir()
    d = _start(root, "lost", state=tmp_path / "state")

    def transport(who: str) -> GrpcTransport:
        return GrpcTransport("n1", Client(address=d.address, ca=str(pk.dir / "ca.pem"),
                                          cert=str(pk.dir / f"{who}.pem"),
                                          key=str(pk.dir / f"{who}.key")))

    args = ["--json", "actions", "run", "example.note.add", "-", "--yes"]
    stdin = json.dumps({"name": "lost", "text": "x"})
    try:
        assert transport("nobody").run(args, stdin, 30)[0] == 3  # refused: PERMISSION_DENIED
        out: dict[str, Any] = {}
        running = threading.Thread(target=lambda: out.update(r=transport("admin").run(
            args, stdin, 60)))
        running.start()
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and running.is_alive(), out
            time.sleep(0.05)
        d.proc.kill()  # the node goes down mid-call
        running.join(30)
        assert out["r"][0] == 255, out
        assert "UNAVAILABLE" in out["r"][2], out
        assert transport("admin").run(args, stdin, 10)[0] == 1  # nothing answers: not 255
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
        d.proc.wait(10)
        if ready.exists():  # the node's hung action (its own session): gone with the node
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(ready.read_text()), signal.SIGKILL)


def _executor(sock: Path, env: dict[str, str], config: Path, err: Path) -> subprocess.Popen[bytes]:
    """`rpcd exec-serve` as its socket unit starts it: systemd's own socket activation
    (``systemd-socket-activate``: LISTEN_FDS, fd 3), which starts it on the first call."""
    tool = shutil.which("systemd-socket-activate")
    assert tool, "systemd-socket-activate (package systemd) is not installed"
    passed = [f"-E{k}={v}" for k, v in env.items() if k.isidentifier()]
    proc = subprocess.Popen([tool, "-l", str(sock), *passed, sys.executable, "-m", "debvisor_core",
                             "rpcd", "exec-serve", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=err.open("w"))
    deadline = time.monotonic() + 30
    while not sock.is_socket():  # it listens (the program starts on the first connection)
        assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.02)
    return proc


def test_state_changes_run_in_the_executor_when_rpcd_names_one(world: Any, tmp_path: Path) -> None:
    """rpcd sandboxed hands its state changes to the executor (`rpcd exec-serve`, socket
    activated): they run there, audited with the caller rpcd sealed; a cancelled call stops
    the run there (rolled back); a query still runs in rpcd; the executor refuses any run
    rpcd would not ask for."""
    root, pk = world
    state, sock, err = tmp_path / "state", tmp_path / "exec.sock", tmp_path / "exec.log"
    state.mkdir()
    ready = tmp_path / "hung"
    env = _env(DEBVISOR_STATE_DIR=str(state), DEBVISOR_FAULTS="WriteNote:hang",
               DEBVISOR_FAULT_READY=str(ready))  # the executor's: only the note's write hangs
    ex = _executor(sock, env, _config(root, "exec"), err)
    d = _start(root, "exec", "--exec-socket", str(sock), state=state)
    try:
        stub = _stub(d, pk)
        held = stub.Invoke(pb.InvokeRequest(action="example.note.add", yes=True,
                                            params_json='{"name": "held", "text": "x"}'), timeout=120)
        deadline = time.monotonic() + 60
        while not ready.exists():  # its first step is applied, in a run of the executor's
            assert time.monotonic() < deadline and ex.poll() is None and not held.done()
            time.sleep(0.05)
        held.cancel()
        deadline = time.monotonic() + 60
        while "example.note.add - --yes for admin: exit" not in err.read_text():
            assert time.monotonic() < deadline and ex.poll() is None, err.read_text()
            time.sleep(0.05)
        assert "note.add - --yes for admin: exit 4" in err.read_text()  # stopped, step undone
        assert not list(state.rglob("notes/held*"))
        deadline = time.monotonic() + 30
        while d.lines()[-1]["method"] != INVOKE or d.lines()[-1]["code"] == "STARTED":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert d.lines()[-1]["code"] == "CANCELLED"
        events = _events(stub.Invoke(pb.InvokeRequest(
            action="maintenance.enable", params_json='{"reason": "by the executor"}', yes=True),
            timeout=60))
        assert events[-1]["event"] == "exit" and events[-1]["code"] == 0, events
        status = json.loads(_dv(state, "--json", "maintenance", "status").stdout)
        assert (status["enabled"], status["reason"]) == (True, "by the executor")
        run = [a for a in _audit(d) if "maintenance.enable" in a.get("argv", [])]
        assert run and run[-1]["caller"] == "admin", run  # sealed by rpcd, checked by the run
        assert (d.lines()[-1]["method"], d.lines()[-1]["code"], d.lines()[-1]["exit"]) == \
            (INVOKE, "OK", 0)
        assert "rpcd-exec: actions run maintenance.enable - --yes for admin: exit 0" in err.read_text()
        # a query is not a state change: rpcd runs it itself
        assert stub.Call(pb.InvokeRequest(action="maintenance.status"), timeout=15).code == 0
        # the executor runs only what rpcd asks for, and answers one sentence otherwise
        for request, why in (({"argv": ["rpcd", "serve"], "stdin": ""}, "runs only `actions run"),
                             ({"argv": ["actions", "run", "maintenance.enable", "-", "--rm"]},
                              "flags must be among"),
                             ({"argv": ["ops", "rollback", "../x"]}, "operation id"),
                             ("not json", "")):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
                s.sendall((json.dumps(request) if isinstance(request, dict) else request).encode()
                          + b"\n")
                line = s.makefile().readline()
            assert line.startswith("\0"), line  # the executor's own line (no JSON line's)
            answer = json.loads(line[1:])
            assert answer["exit_code"] == 2 and why in answer["stderr"], answer
    finally:
        d.stop()
        ex.terminate()
        ex.wait(30)
        if ready.exists():  # the hung run (its own session), if it outlived its call
            with contextlib.suppress(OSError, ValueError):
                pid = int(ready.read_text())
                if b"debvisor_core" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


def test_without_its_executor_rpcd_runs_no_state_change(world: Any, tmp_path: Path) -> None:
    """No executor on the socket, or one that takes the connection and never the run (a
    socket unit whose service cannot start): UNAVAILABLE, nothing run, nothing run here."""
    root, pk = world
    (tmp_path / "state").mkdir()
    sock = tmp_path / "exec.sock"
    d = _start(root, "noexec", "--exec-socket", str(sock), state=tmp_path / "state")
    stub = _stub(d, pk)

    def enable() -> Any:
        return _events(stub.Invoke(pb.InvokeRequest(
            action="maintenance.enable", params_json='{"reason": "x"}', yes=True), timeout=15))

    try:
        code, why = _code(enable)
        assert code == grpc.StatusCode.UNAVAILABLE and "did not take the run" in why and \
            "nothing was run" in why, why
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(sock))
            listener.listen(4)

            def close_one() -> None:
                conn, _ = listener.accept()
                conn.close()

            closer = threading.Thread(target=close_one)
            closer.start()
            code, why = _code(enable)
            closer.join(30)
        assert code == grpc.StatusCode.UNAVAILABLE and "did not take the run" in why and \
            "nothing was run" in why, why  # the connection closed (reset): no "accepted"
        status = json.loads(_dv(tmp_path / "state", "--json", "maintenance", "status").stdout)
        assert status["enabled"] is False
        assert stub.Call(pb.InvokeRequest(action="maintenance.status"), timeout=15).code == 0
    finally:
        d.stop()
