"""debvisor-panel against a real debvisor-rpcd: real certificates (the rpcd CA), the panel's
proxy certificate, users with passwords, journalled operations made by `debvisor`, and the
daemon's own audit log. Pages are fetched with Starlette's TestClient; the session clock is
injected so idle and absolute limits are tested without waiting."""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.websockets import WebSocketDisconnect

from debvisor_core.panel.app import create_app
from debvisor_core.panel.rpc import Rpcd
from debvisor_core.panel.security import CSP
from debvisor_core.panel.sessions import COOKIE, REASONS
from debvisor_core.panel.settings import PanelSettings
from debvisor_core.rpcd import pki
from debvisor_core.rpcd.v1 import debvisor_pb2 as pb
from debvisor_core.rpcd.v1 import debvisor_pb2_grpc as pbg

with warnings.catch_warnings():  # "use httpx2": the panel extra's tests use httpx for now
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ORIGIN = "https://testserver"
ISSUER = "https://idp.example.net/realms/ops"
IDP = "https://idp.example.net"
CLIENT_ID = "debvisor-panel"
IDP_KEY = ec.generate_private_key(ec.SECP256R1())
PASSWORDS = {"alice": "alice has a long password", "bob": "bob has another long one"}
ROLES = {"alice": "operator", "bob": "viewer"}


@dataclass
class World:
    root: Path
    state: Path
    pki: Path
    config: Path
    calllog: Path
    address: str
    proc: subprocess.Popen[str]
    env: dict[str, str]
    ops: list[str]

    def dv(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "debvisor_core", *args], env=self.env,
                              input=input, capture_output=True, text=True, timeout=120)

    def op_status(self, op_id: str) -> str:
        res = self.dv("--json", "ops", "show", op_id)
        assert res.returncode == 0, res.stderr
        return str(json.loads(res.stdout)["status"])

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.calllog.read_text().splitlines() if x.strip()]

    def stub(self, who: str = "panel") -> pbg.NodeStub:
        creds = grpc.ssl_channel_credentials((self.pki / "ca.pem").read_bytes(),
                                             (self.pki / f"{who}.key").read_bytes(),
                                             (self.pki / f"{who}.pem").read_bytes())
        return pbg.NodeStub(grpc.secure_channel(self.address, creds))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, site_plugins_dir: Path) -> Iterator[World]:
    root = tmp_path_factory.mktemp("panel")
    state, d = root / "state", root / "pki"
    pki.init(d)
    pki.issue(d, "node1", server=True, ips=("127.0.0.1",))
    pki.issue(d, "panel", kind="proxy")
    pki.issue(d, "web", server=True, ips=("127.0.0.1",))  # the panel's own HTTPS certificate
    from debvisor_core.lab.process import free_port

    config = root / "debvisor.toml"
    # the identity provider's signing key: rpcd trusts its JWKS for OIDC logins
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(IDP_KEY.public_key()))
    (root / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "idp1", "alg": "ES256",
                                                          "use": "sig"}]}))
    config.write_text("\n".join([
        "[rpcd]", 'listen = "127.0.0.1:0"', f'ca = "{d}/ca.pem"', f'cert = "{d}/node1.pem"',
        f'key = "{d}/node1.key"', 'proxies = ["panel"]', "rate = 1000.0", "burst = 1000.0",
        f'oidc_jwks_file = "{root}/jwks.json"', f'oidc_issuer = "{ISSUER}"',
        f'oidc_audience = "{CLIENT_ID}"',
        "[rpcd.identities]", 'carol = ["operator"]', 'dave = ["operator"]',
        "[panel]", 'listen = "127.0.0.1:0"', f'tls_cert = "{d}/web.pem"',
        f'tls_key = "{d}/web.key"', f'ca = "{d}/ca.pem"', f'cert = "{d}/panel.pem"',
        f'key = "{d}/panel.key"', f'redirect_listen = "127.0.0.1:{free_port()}"', ""]))
    env = {**os.environ, "PYTHONPATH": str(site_plugins_dir), "DEBVISOR_STATE_DIR": str(state),
           "DEBVISOR_CONFIG": str(config)}
    w = World(root, state, d, config, root / "calls.jsonl", "", None, env, [])  # type: ignore[arg-type]
    for user, password in PASSWORDS.items():
        res = w.dv("rpcd", "user", "add", user, "--role", ROLES[user], "--password-file", "-",
                   input=password + "\n")
        assert res.returncode == 0, res.stderr
    for name in ("n1", "n2"):  # two journalled operations with undo (the docs' example plugin)
        res = w.dv("example", "note", "add", name, f"note {name}", "--yes")
        assert res.returncode == 0, res.stderr
    w.ops = [o["id"] for o in json.loads(w.dv("--json", "ops", "list").stdout)][::-1]
    assert len(w.ops) == 2
    w.proc = subprocess.Popen([sys.executable, "-m", "debvisor_core", "rpcd", "serve",
                               "--call-log", str(w.calllog)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert w.proc.stdout is not None
    line = w.proc.stdout.readline()
    assert line.startswith("READY "), (line, w.proc.stderr.read() if w.proc.stderr else "")
    w.address = line.split()[1]
    yield w
    w.proc.send_signal(signal.SIGTERM)
    try:
        w.proc.wait(30)
    except subprocess.TimeoutExpired:
        w.proc.kill()


class Clock:
    """The panel's session clock, advanced by the tests."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def settings(world: World) -> PanelSettings:
    d = world.pki
    return PanelSettings(rpcd_address=world.address, ca=str(d / "ca.pem"),
                         cert=str(d / "panel.pem"), key=str(d / "panel.key"),
                         public_origin=ORIGIN, heartbeat=0.05, events_poll=0.05, events_max=0.3)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_client(settings: PanelSettings, clock: Clock) -> Iterator[Callable[..., TestClient]]:
    made: list[TestClient] = []

    def make(s: PanelSettings | None = None, client: Rpcd | None = None) -> TestClient:
        c = TestClient(create_app(s or settings, clock=clock, client=client), base_url=ORIGIN,
                       headers={"origin": ORIGIN}, follow_redirects=False)
        c.__enter__()
        made.append(c)
        return c

    yield make
    for c in made:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:2000]
    return m.group(1)


def login(c: TestClient, user: str = "alice", password: str | None = None) -> httpx.Response:
    page = c.get("/login")
    assert page.status_code == 200
    return c.post("/login", data={"user": user, "password": password or PASSWORDS[user],
                                  "csrf": _csrf(page.text)})


def logged_in(c: TestClient, user: str = "alice") -> str:
    """Log in; the session's CSRF token."""
    r = login(c, user)
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    page = c.get("/ops")
    assert page.status_code == 200, page.text
    return _csrf(page.text)


def _token(c: TestClient) -> str:
    (s,) = c.app.state.sessions._live.values()  # type: ignore[attr-defined]
    return str(s.token)


# -- login, cookie, headers ----------------------------------------------------------------
def test_login_wrong_password_and_the_session_cookie(client: TestClient, world: World) -> None:
    for user, password in (("alice", "not alice's password"), ("mallory", "whatever it is")):
        r = login(client, user, password)
        assert r.status_code == 401 and "Wrong user name or password." in r.text
        assert COOKIE + "=" not in r.headers.get("set-cookie", "")
    r = login(client)
    assert r.status_code == 303 and r.headers["location"] == "/"
    (cookie,) = [v for v in r.headers.get_list("set-cookie") if v.startswith(COOKIE + "=")]
    value, *flags = [p.strip() for p in cookie.split(";")]
    assert re.fullmatch(rf"{COOKIE}=[A-Za-z0-9_-]{{43}}", value)  # 256 random bits, nothing else
    assert set(flags) == {"Path=/", "Secure", "HttpOnly", "SameSite=Strict"}  # no Domain, no Max-Age
    home = client.get("/")
    assert home.status_code == 200 and "alice" in home.text and world.ops[0] in home.text
    # every call carried alice's token through the panel's proxy certificate
    callers = {x.get("caller") for x in world.calls()
               if x.get("code") == "OK" and not x["method"].endswith("/Login")}
    assert callers == {"alice via=panel"}, callers


def test_every_page_has_the_headers_and_no_inline_script(make_client: Callable[..., TestClient],
                                                         world: World) -> None:
    pages = ["/", "/ops", f"/ops/{world.ops[1]}", "/audit", "/audit?user=alice", "/vms",
             "/fragments/health", "/ceph", "/fragments/ceph-balance", "/dns", "/dns?name=x",
             "/no-such-page"]
    anon = make_client()
    for user in ("alice", "bob"):
        c = make_client()
        logged_in(c, user)
        for path in pages + ["/login"]:
            r = (anon if path == "/login" else c).get(path)
            assert r.status_code in (200, 404), (user, path, r.status_code, r.text[:500])
            assert r.headers["content-security-policy"] == CSP
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["cache-control"] == "no-store"
            assert r.headers["strict-transport-security"].startswith("max-age=")
            html = r.text
            for tag, body in re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S):
                assert 'src="/static/' in tag and not body.strip(), (path, tag, body)
            assert not re.search(r"<[^>]+\son[a-z]+\s*=", html), path  # no inline handlers
            assert not re.search(r"<[^>]+\sstyle\s*=", html), path  # no inline style
            assert "javascript:" not in html.lower() and "<style" not in html.lower(), path
            if not path.startswith("/fragments/"):  # a whole page: the deferred, vendored htmx
                assert '<script src="/static/vendor/htmx.min.js" defer></script>' in html, path
    css = anon.get("/static/panel.css")
    assert css.status_code == 200 and css.headers["content-security-policy"] == CSP
    assert css.headers.get("cache-control") != "no-store"
    assert anon.get("/").status_code == 303  # nothing but the login page without a session


# -- CSRF and Origin -------------------------------------------------------------------------
def test_posts_need_the_csrf_token_and_the_panel_origin(client: TestClient, world: World) -> None:
    csrf = logged_in(client)
    op = world.ops[1]
    # no token, a wrong token: 403, nothing done, the session still there
    for data in ({}, {"csrf": "x" * 43}):
        r = client.post(f"/ops/{op}/rollback", data={**data, "password": PASSWORDS["alice"]})
        assert r.status_code == 403 and "CSRF" in r.text
        assert client.post("/logout", data=data).status_code == 403
    assert world.op_status(op) == "succeeded"
    # the token in the header works like the field (htmx sends it so)
    r = client.post(f"/ops/{op}/rollback", headers={"x-csrf-token": "wrong"})
    assert r.status_code == 403
    # a foreign Origin, a cross-site fetch, no Origin at all: 403 even with the right token
    for headers in ({"origin": "https://evil.example"}, {"origin": "null"},
                    {"origin": ORIGIN, "sec-fetch-site": "cross-site"}, {"origin": ""}):
        r = client.post("/logout", data={"csrf": csrf}, headers=headers)
        assert r.status_code == 403 and "Origin" in r.text, headers
    assert client.get("/").status_code == 200
    # a login form posted from elsewhere is refused too (no session yet: the form's cookie)
    anon_login = client.post("/login", data={"user": "alice", "password": PASSWORDS["alice"]})
    assert anon_login.status_code == 403
    # a browser's form POST under Referrer-Policy: no-referrer says "Origin: null"; its
    # Sec-Fetch-Site (which no page can set) then decides
    for headers in ({"origin": "null", "sec-fetch-site": "same-site"},
                    {"origin": "null", "sec-fetch-site": "none"}):
        assert client.post("/logout", data={"csrf": csrf}, headers=headers).status_code == 403
    client.headers.pop("origin")
    assert client.post("/logout", data={"csrf": csrf}).status_code == 403  # neither header
    r = client.post("/logout", data={"csrf": csrf},
                    headers={"origin": "null", "sec-fetch-site": "same-origin"})
    assert r.status_code == 303 and r.headers["location"] == "/login?why=logged-out"


def test_a_websocket_from_another_origin_is_closed_before_accept(client: TestClient) -> None:
    logged_in(client)
    with pytest.raises(WebSocketDisconnect) as err, \
            client.websocket_connect("/console/ws?t=x", headers={"origin": "https://evil.example"}):
        pass
    assert err.value.code == 1008 and err.value.reason == "foreign origin"
    client.cookies.clear()
    with pytest.raises(WebSocketDisconnect) as err, client.websocket_connect("/console/ws?t=x"):
        pass
    assert err.value.code == 1008 and err.value.reason == "log in first"


# -- session limits ----------------------------------------------------------------------------
def test_idle_expiry_lands_on_the_login_page_with_the_reason(client: TestClient, clock: Clock,
                                                             world: World) -> None:
    logged_in(client)
    token = _token(client)
    clock.advance(14 * 60)
    assert client.get("/ops").status_code == 200  # activity: 15 more minutes
    clock.advance(14 * 60)
    assert client.get("/audit").status_code == 200
    clock.advance(15 * 60 + 1)
    r = client.get("/ops")
    assert r.status_code == 303 and r.headers["location"] == "/login?why=idle&next=/ops"
    assert f"{COOKIE}=; Max-Age=0" in r.headers["set-cookie"]
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and REASONS["idle"] in page.text
    # the panel also ended the user's rpcd session
    deadline = time.monotonic() + 10
    while True:
        try:
            world.stub().WhoAmI(pb.WhoAmIRequest(), timeout=5, metadata=[("x-user-token", token)])
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            break
        assert time.monotonic() < deadline, "the rpcd session outlived the panel's"
        time.sleep(0.1)


def test_the_absolute_limit_ends_even_an_active_session(make_client: Callable[..., TestClient],
                                                        settings: PanelSettings,
                                                        clock: Clock) -> None:
    c = make_client(dataclasses.replace(settings, absolute_timeout=1800.0))
    logged_in(c)
    for _ in range(2):
        clock.advance(14 * 60)
        assert c.get("/ops").status_code == 200
    clock.advance(3 * 60)
    r = c.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login?why=expired"
    assert REASONS["expired"] in c.get(r.headers["location"]).text


def test_the_event_stream_is_not_activity(client: TestClient, clock: Clock, world: World) -> None:
    logged_in(client)
    clock.advance(10 * 60)
    r = client.get("/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-store"
    assert r.text.startswith("retry: ") and ": heartbeat\n\n" in r.text
    assert "event: ops\n" in r.text  # the running operations, pushed
    clock.advance(4 * 60 + 30)
    assert "event: idle\ndata: " in client.get("/events").text  # the warning, under 60 s left
    clock.advance(60)  # 15.5 min after the last page: the streams kept nothing alive
    ended = client.get("/events")
    assert "event: ended\ndata: idle\n" in ended.text
    r = client.get("/")
    assert r.status_code == 303 and "why=" in r.headers["location"]
    # a page, unlike the stream, is activity
    logged_in(client)
    clock.advance(10 * 60)
    assert client.get("/ops").status_code == 200
    clock.advance(10 * 60)
    assert client.get("/").status_code == 200


def test_logout_revokes_here_and_in_rpcd(client: TestClient, world: World) -> None:
    csrf = logged_in(client)
    token = _token(client)
    sid = client.cookies[COOKIE]
    r = client.post("/logout", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/login?why=logged-out"
    assert REASONS["logged-out"] in client.get(r.headers["location"]).text
    client.cookies.set(COOKIE, sid)  # the old cookie, replayed
    r = client.get("/ops")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?why=logged-out")
    with pytest.raises(grpc.RpcError) as err:
        world.stub().WhoAmI(pb.WhoAmIRequest(), timeout=5, metadata=[("x-user-token", token)])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_rpcd_no_longer_accepts_ends_the_session(client: TestClient, world: World) -> None:
    logged_in(client)
    world.stub().Logout(pb.LogoutRequest(), timeout=5,
                        metadata=[("x-user-token", _token(client))])  # e.g. revoked elsewhere
    r = client.get("/ops")
    assert r.status_code == 303 and r.headers["location"] == "/login?why=revoked"
    assert f"{COOKIE}=; Max-Age=0" in r.headers["set-cookie"]
    assert client.get("/").headers["location"] == "/login"  # the cookie is gone


# -- the journal and rollback ------------------------------------------------------------------
def test_rollback_needs_reauth_shows_the_plan_then_rolls_back(client: TestClient,
                                                              clock: Clock, world: World) -> None:
    csrf = logged_in(client)
    op = world.ops[0]
    listing = client.get("/ops")
    assert all(o in listing.text for o in world.ops)
    page = client.get(f"/ops/{op}")
    assert page.status_code == 200 and ">succeeded<" in page.text
    plan = re.findall(r"<li>(undo [^<]*)</li>", page.text)
    assert [p.split(".")[0] for p in plan] == ["undo 2", "undo 1"], plan  # newest first
    assert "add &#39;n1&#39; to the index" in plan[0] and "write note &#39;n1&#39;" in plan[1]
    assert 'name="password"' in page.text and f'action="/ops/{op}/rollback"' in page.text
    # no password, a wrong one: nothing happens, the session stays
    r = client.post(f"/ops/{op}/rollback", data={"csrf": csrf})
    assert r.status_code == 401 and "Re-enter your password" in r.text
    r = client.post(f"/ops/{op}/rollback", data={"csrf": csrf, "password": "not it at all"})
    assert r.status_code == 401 and "Wrong password" in r.text
    assert world.op_status(op) == "succeeded"
    r = client.post(f"/ops/{op}/rollback", data={"csrf": csrf, "password": PASSWORDS["alice"]})
    assert r.status_code == 200, r.text
    assert 'id="op-status">rolled-back<' in r.text and "Rollback finished" in r.text
    assert world.op_status(op) == "rolled-back"
    audit = [json.loads(x) for x in (world.state / "log" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["result"] == "rolled-back" and audit[-1]["caller"] == "alice via=panel"
    # now impossible, and the page says why instead of offering it
    again = client.get(f"/ops/{op}")
    assert "already rolled-back" in again.text and "disabled" in again.text
    assert f'action="/ops/{op}/rollback"' not in again.text
    r = client.post(f"/ops/{op}/rollback", data={"csrf": csrf})
    assert r.status_code == 409
    # the re-authentication holds 5 minutes, then the password is asked again
    clock.advance(6 * 60)
    assert 'name="password"' in client.get(f"/ops/{world.ops[1]}").text


def test_a_viewer_sees_no_write_button_and_rpcd_refuses_a_forged_post(client: TestClient,
                                                                       world: World) -> None:
    csrf = logged_in(client, "bob")
    op = world.ops[1]
    page = client.get(f"/ops/{op}")
    assert page.status_code == 200 and "Your role cannot roll back" in page.text
    assert "<button" not in page.text.split('id="rollback"')[1]
    assert f'action="/ops/{op}/rollback"' not in page.text
    r = client.post(f"/ops/{op}/rollback", data={"csrf": csrf, "password": PASSWORDS["bob"]})
    assert r.status_code == 403, r.text
    assert "refused by rpcd: bob may not call RollbackOperation" in r.text
    assert world.op_status(op) == "succeeded"
    denied = [x for x in world.calls() if x.get("code") == "PERMISSION_DENIED"]
    assert denied[-1]["caller"] == "bob via=panel"
    assert denied[-1]["method"].endswith("/RollbackOperation")
    assert client.get("/ops").status_code == 200  # refused, not logged out


# -- audit -------------------------------------------------------------------------------------
def test_audit_page_verifies_the_chain_and_finds_a_tampered_line(client: TestClient,
                                                                 world: World) -> None:
    logged_in(client)
    page = client.get("/audit")
    assert page.status_code == 200 and "chain verified" in page.text
    me = getpass.getuser()  # who ran `debvisor example note add` in the fixture
    mine = client.get("/audit", params={"user": me, "action": "note"})
    assert mine.status_code == 200 and mine.text.count("<td>example ") >= 2, mine.text
    assert "No audit records match." in client.get("/audit", params={"user": "nobody-at-all"}).text
    dl = client.get("/audit.jsonl", params={"action": "example"})
    assert dl.status_code == 200 and "attachment" in dl.headers["content-disposition"]
    lines = [json.loads(x) for x in dl.text.splitlines()]
    assert lines and all(r["plugin"] == "example" or "example" in json.dumps(r) for r in lines)
    assert client.get("/audit", params={"from": "yesterday"}).status_code == 400
    log = world.state / "log" / "audit.jsonl"
    original = log.read_bytes()
    rows = original.decode().splitlines(keepends=True)
    assert len(rows) >= 3
    rows[1] = rows[1].replace('"result":"', '"result":"not ', 1)
    try:
        log.write_text("".join(rows))
        page = client.get("/audit")
        assert "tampered at line 2" in page.text, page.text
    finally:
        log.write_bytes(original)
    assert "chain verified" in client.get("/audit").text


# -- plugin pages ------------------------------------------------------------------------------
class _NoHv(Rpcd):
    """The node as it would be without the hv plugin."""

    def list_actions(self, token: str) -> list[dict[str, Any]]:
        return [a for a in super().list_actions(token) if not a["path"].startswith("hv.")]


def test_the_vms_page_exists_only_with_the_hv_plugin(make_client: Callable[..., TestClient],
                                                     settings: PanelSettings) -> None:
    c = make_client()
    logged_in(c, "bob")
    home = c.get("/")
    installed = 'href="/vms"' in home.text
    r = c.get("/vms")
    if installed:
        assert r.status_code == 200 and "<h1>VMs</h1>" in r.text
        assert "<table" in r.text or "unreachable" in r.text or "No VMs match" in r.text
    else:
        assert r.status_code == 404
    bare = make_client(client=_NoHv(settings))
    logged_in(bare, "bob")
    assert 'href="/vms"' not in bare.get("/").text
    r = bare.get("/vms")
    assert r.status_code == 404 and "no VM plugin is installed" in r.text


# -- resume ----------------------------------------------------------------------------------
class _NoResume(Rpcd):
    """The node's rpcd as it would be without the ops.resume action."""

    def list_actions(self, token: str) -> list[dict[str, Any]]:
        return [a for a in super().list_actions(token) if a["path"] != "ops.resume"]


def _interrupted(world: World, name: str) -> str:
    """An operation SIGKILLed after its first step (`example note add` with a fault)."""
    res = subprocess.run([sys.executable, "-m", "debvisor_core", "example", "note", "add", name,
                          "resumed text", "--yes"], env={**world.env,
                                                         "DEBVISOR_FAULTS": "WriteNote:kill-after"},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL, res
    newest = json.loads(world.dv("--json", "ops", "list").stdout)[0]
    assert newest["status"] == "interrupted", newest
    return str(newest["id"])


def test_resume_shows_the_plan_needs_reauth_then_finishes_the_operation(
        make_client: Callable[..., TestClient], settings: PanelSettings, world: World) -> None:
    from labworld import task_of

    op = _interrupted(world, "r1")
    c = make_client()
    csrf = logged_in(c)
    page = c.get(f"/ops/{op}")
    assert page.status_code == 200 and 'id="op-status">interrupted<' in page.text
    plan = re.findall(r"<li>([^<]*)</li>", page.text.split('id="resume-plan"')[1].split("</ul>")[0])
    assert len(plan) == 2 and plan[0].startswith("1. write note") and plan[1].startswith("2. add")
    assert "then applied again" in plan[0], plan  # the interrupted step is redone
    assert f'action="/ops/{op}/resume"' in page.text and 'data-role="resume"' in page.text
    # a viewer sees the plan, no button, and rpcd refuses the forged POST
    v = make_client()
    vcsrf = logged_in(v, "bob")
    vpage = v.get(f"/ops/{op}")
    assert "Your role cannot resume operations." in vpage.text
    assert f'action="/ops/{op}/resume"' not in vpage.text
    r = v.post(f"/ops/{op}/resume", data={"csrf": vcsrf, "password": PASSWORDS["bob"]})
    assert r.status_code == 403 and "refused by rpcd: bob may not run ops.resume" in r.text
    # a node whose rpcd has no ops.resume: disabled, with the reason
    old = make_client(client=_NoResume(settings))
    logged_in(old)
    blocked = old.get(f"/ops/{op}").text
    assert re.search(r'id="resume-blocked">This node&#39;s rpcd cannot resume operations yet',
                     blocked), blocked
    assert re.search(r'<button type="button" disabled[^>]*data-role="resume">', blocked)
    # re-authentication first: no password, a wrong one
    r = c.post(f"/ops/{op}/resume", data={"csrf": csrf})
    assert r.status_code == 401 and "Re-enter your password to resume" in r.text
    r = c.post(f"/ops/{op}/resume", data={"csrf": csrf, "password": "not the password at all"})
    assert r.status_code == 401 and "Wrong password: nothing was resumed." in r.text
    assert world.op_status(op) == "interrupted"
    task = task_of(c, c.post(f"/ops/{op}/resume", data={"csrf": csrf,
                                                        "password": PASSWORDS["alice"]}))
    assert task.status == "succeeded" and task.op_id == op, task.view()
    assert world.op_status(op) == "succeeded"
    audit = [json.loads(x) for x in (world.state / "log" / "audit.jsonl").read_text().splitlines()]
    mine = [a for a in audit if a.get("operation") == op]
    assert mine[-1]["result"] == "succeeded" and mine[-1]["caller"] == "alice via=panel"
    assert mine[-1]["details"]["action"] == "resume"
    # done: nothing to resume any more, and the page says why a POST is refused
    assert 'id="resume"' not in c.get(f"/ops/{op}").text
    r = c.post(f"/ops/{op}/resume", data={"csrf": csrf})
    assert r.status_code == 409
    assert "Only an interrupted or paused operation can be resumed; this one is succeeded." \
        in r.text


# -- SSO (OpenID Connect) ----------------------------------------------------------------------
def _id_token(nonce: str, user: str = "carol", *, aud: str = CLIENT_ID, exp: float = 300,
              key: Any = None) -> str:
    now = int(time.time())
    return jwt.encode({"sub": f"idp-{user}", "preferred_username": user, "iss": ISSUER,
                       "aud": aud, "iat": now, "exp": now + exp, "nonce": nonce},
                      key or IDP_KEY, algorithm="ES256", headers={"kid": "idp1"})


def _sso_start(c: TestClient, **params: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    r = c.get("/login/sso", params=params)
    assert r.status_code == 303, r.text
    loc = urlsplit(r.headers["location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == IDP + "/realms/ops/protocol/openid-connect/auth"
    return dict(parse_qsl(loc.query))


def _sso_answer(c: TestClient, data: dict[str, str], origin: str = IDP) -> httpx.Response:
    return c.post("/login/oidc", data=data, headers={"origin": origin,
                                                      "sec-fetch-site": "cross-site"})


@pytest.fixture
def sso(settings: PanelSettings) -> PanelSettings:
    return dataclasses.replace(settings, oidc_issuer=ISSUER, oidc_client_id=CLIENT_ID,
                               oidc_authorization_endpoint=IDP + "/realms/ops/protocol/"
                                                                 "openid-connect/auth")


def test_sso_login_exchanges_the_id_token_through_rpcd(make_client: Callable[..., TestClient],
                                                       sso: PanelSettings, world: World) -> None:
    plain = make_client()
    assert 'href="/login/sso"' not in plain.get("/login").text  # not configured: no button
    r = plain.get("/login/sso")
    assert r.status_code == 404 and "SSO login is not configured" in r.text
    c = make_client(sso)
    assert re.search(r'<a class="button" href="/login/sso" data-role="sso">Log in with SSO</a>',
                     c.get("/login").text)
    r = c.get("/login/sso")
    (cookie,) = [v for v in r.headers.get_list("set-cookie") if v.startswith("__Host-debvisor-sso=")]
    assert set(p.strip() for p in cookie.split(";")[1:]) == {
        "Max-Age=600", "Path=/", "Secure", "HttpOnly", "SameSite=None"}  # the IdP posts cross-site
    q = _sso_start(c)
    assert {k: q[k] for k in ("response_type", "response_mode", "client_id", "redirect_uri",
                              "scope")} == {
        "response_type": "id_token", "response_mode": "form_post", "client_id": CLIENT_ID,
        "redirect_uri": ORIGIN + "/login/oidc", "scope": "openid profile"}
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", q["state"]) and q["nonce"] != q["state"]
    answer = {"id_token": _id_token(q["nonce"]), "state": q["state"]}
    r = _sso_answer(c, answer)
    assert r.status_code == 200, r.text
    assert '<meta http-equiv="refresh" content="0; url=/">' in r.text  # a same-site navigation
    assert any(v.startswith(COOKIE + "=") and "SameSite=Strict" in v
               for v in r.headers.get_list("set-cookie"))
    assert "__Host-debvisor-sso=; Max-Age=0" in r.headers["set-cookie"]
    home = c.get("/")
    assert home.status_code == 200 and "carol <small>(operator)</small>" in home.text
    logins = [x for x in world.calls() if x["method"].endswith("/Login") and x.get("user") == "carol"]
    assert logins[-1]["code"] == "OK" and logins[-1]["login"] == "oidc"
    assert world.calls()[-1]["caller"] == "carol via=panel"
    # the same answer again: its state was used
    r = _sso_answer(c, answer)
    assert r.status_code == 400 and "This SSO login is unknown or more than 10 minutes old" in r.text
    # every other answer is refused with its reason, and logs nobody in
    for change, status, said in (
            (lambda q: {"state": "x" * 43}, 400, "(its state differs)"),
            (lambda q: {"id_token": _id_token("another nonce")}, 400, "(its nonce differs)"),
            (lambda q: {"id_token": _id_token(q["nonce"], aud="another-app")}, 400,
             "issued to another client"),
            (lambda q: {"id_token": "not a token"}, 400, "holds no ID token"),
            (lambda q: {"id_token": _id_token(q["nonce"], exp=-120)}, 401,
             "rpcd refused the ID token: bad token: Signature has expired."),
            (lambda q: {"id_token": _id_token(q["nonce"], key=ec.generate_private_key(
                ec.SECP256R1()))}, 401, "Signature verification failed"),
            (lambda q: {"id_token": _id_token(q["nonce"], "zed")}, 403,
             "rpcd refused the login: zed has no role here."),
            (lambda q: {"error": "access_denied", "id_token": ""}, 400,
             "The identity provider did not log you in: access_denied.")):
        anon = make_client(sso)
        q = _sso_start(anon)
        r = _sso_answer(anon, {"id_token": _id_token(q["nonce"]), "state": q["state"],
                               **change(q)})
        assert r.status_code == status and said in r.text, (said, r.status_code, r.text[-1500:])
        assert r.text.count('role="alert"') == 1
        assert anon.get("/").status_code == 303  # not logged in
    # the Origin check: the IdP's or the panel's origin, or null; never another site
    anon = make_client(sso)
    q = _sso_start(anon)
    good = {"id_token": _id_token(q["nonce"]), "state": q["state"]}
    r = _sso_answer(anon, good, origin="https://evil.example")
    assert r.status_code == 403 and "Origin check" in r.text
    anon.cookies.delete("__Host-debvisor-sso")  # another browser: no pre-login cookie
    r = _sso_answer(anon, good, origin="null")
    assert r.status_code == 400 and "started in another browser" in r.text


def test_an_sso_user_reauthenticates_with_the_idp_to_roll_back(
        make_client: Callable[..., TestClient], sso: PanelSettings, world: World) -> None:
    res = world.dv("--json", "example", "note", "add", "sso1", "by carol", "--yes")
    assert res.returncode == 0, res.stderr
    op = json.loads(res.stdout)["id"]
    c = make_client(sso)
    q = _sso_start(c)
    assert _sso_answer(c, {"id_token": _id_token(q["nonce"]),
                           "state": q["state"]}, origin="null").status_code == 200
    page = c.get(f"/ops/{op}")
    csrf = _csrf(page.text)
    rollback = page.text.split('id="rollback"')[1]
    assert f'href="/login/sso?reauth=1&amp;next=/ops/{op}" data-role="reauth-sso"' in rollback
    assert 'name="password"' not in rollback  # an SSO user has no password here
    r = c.post(f"/ops/{op}/rollback", data={"csrf": csrf})
    assert r.status_code == 401 and "Re-authenticate with your identity provider to roll back" \
        in r.text
    control = c.get("/console/somevm?mode=control").text  # the console's control, likewise
    assert ('href="/login/sso?reauth=1&amp;next=/console/somevm%3Fmode%3Dcontrol" '
            'data-role="reauth-sso"') in control and 'name="password"' not in control
    r = c.post("/console/somevm?mode=control", data={"csrf": csrf})
    assert r.status_code == 401 and "Re-authenticate with your identity provider to take " \
        "control" in r.text
    q = _sso_start(c, reauth="1", next=f"/ops/{op}")
    assert (q["prompt"], q["max_age"]) == ("login", "0")  # the IdP asks again
    r = _sso_answer(c, {"id_token": _id_token(q["nonce"], "dave"), "state": q["state"]})
    assert r.status_code == 403 and "You re-authenticated as dave, not as carol" in r.text
    assert 'data-role="reauth-sso"' in c.get(f"/ops/{op}").text  # still not re-authenticated
    q = _sso_start(c, reauth="1", next=f"/ops/{op}")
    r = _sso_answer(c, {"id_token": _id_token(q["nonce"]), "state": q["state"]})
    assert r.status_code == 200 and f'content="0; url=/ops/{op}"' in r.text
    page = c.get(f"/ops/{op}")
    assert f'action="/ops/{op}/rollback"' in page.text and "reauth-sso" not in page.text
    assert re.search(r'data-ticket="[^"]+" data-mode="control"',
                     c.get("/console/somevm?mode=control").text)  # fresh for the console too
    r = c.post(f"/ops/{op}/rollback", data={"csrf": csrf})
    assert r.status_code == 200 and 'id="op-status">rolled-back<' in r.text, r.text
    audit = [json.loads(x) for x in (world.state / "log" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["result"] == "rolled-back" and audit[-1]["caller"] == "carol via=panel"


def test_the_ceph_page_of_a_node_without_a_cluster_says_why_once(client: TestClient) -> None:
    """The ceph plugin is installed here, but no cluster is configured: the page is there
    (built from the declared actions) and says once why it shows nothing."""
    logged_in(client, "bob")
    assert 'href="/ceph"' in client.get("/").text
    page = client.get("/ceph")
    assert page.status_code == 200
    assert page.text.count('role="alert"') == 1, page.text
    assert re.search(r'role="alert">Ceph config [^<]* does not exist', page.text), page.text
    assert 'id="ceph-osds"' not in page.text and "/fragments/ceph-balance" not in page.text


# -- the command -------------------------------------------------------------------------------
def test_panel_serve_https_only_and_ready_line(world: World) -> None:
    """`debvisor panel serve`: READY once listening, TLS with HSTS, plain HTTP only redirects."""
    from debvisor_core.discovery import BUILTIN_COMMANDS

    if "panel" in BUILTIN_COMMANDS:
        argv = ["-m", "debvisor_core", "panel"]
    else:  # the command group on its own, until `debvisor` lists it
        argv = ["-c", "import sys; from debvisor_core.panel.cli import panel; panel(sys.argv[1:])"]
    proc = subprocess.Popen([sys.executable, *argv, "serve", "--config", str(world.config)],
                            env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert re.fullmatch(r"READY https://127\.0\.0\.1:\d+\n", line), \
            (line, proc.stderr.read() if proc.stderr else "")
        url = line.split()[1]
        with httpx.Client(verify=ssl.create_default_context(cafile=str(world.pki / "ca.pem")),
                          timeout=10) as h:
            r = h.get(url + "/login")
            assert r.status_code == 200 and "strict-transport-security" in r.headers
            assert r.headers["content-security-policy"] == CSP and "server" not in r.headers
        redirect = re.search(r'redirect_listen = "([^"]+)"', world.config.read_text())
        assert redirect is not None
        with httpx.Client(timeout=10) as h:
            r = h.get(f"http://{redirect.group(1)}/ops?status=failed")
            assert r.status_code == 308 and r.headers["location"] == url + "/ops?status=failed"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_settings_from_the_config_section() -> None:
    from debvisor_core.errors import BadInput
    from debvisor_core.settings import Section

    def read(**panel: Any) -> PanelSettings:
        return PanelSettings.from_section(Section("/etc/debvisor.toml", "[panel]", panel),
                                          {"ca": "/pki/ca.pem"})

    sso = read(oidc_issuer="https://id.example.net/realms/ops", oidc_client_id="panel",
               oidc_authorization_endpoint="https://login.example.net:8443/auth")
    assert sso.idp_origins() == {"https://id.example.net", "https://login.example.net:8443"}
    s = read(public_origin="HTTPS://Node1.Example.NET:443/", idle_timeout=600)
    assert (s.public_origin, s.idle_timeout, s.ca) == ("https://node1.example.net", 600.0,
                                                       "/pki/ca.pem")
    assert PanelSettings.from_section(Section("f", "[panel]", {"listen": "[::]:8443"}),
                                      listen="0.0.0.0:9443").listen == "0.0.0.0:9443"
    for bad, why in (({"public_origin": "node1:8443"}, "[panel] public_origin must be an origin"),
                     ({"idle_timeout": "15m"}, "[panel] idle_timeout must be a number"),
                     ({"idle_timeout": 7200, "absolute_timeout": 3600},
                      "[panel] idle_timeout must not be longer than absolute_timeout"),
                     ({"cert": 3}, "[panel] cert must be a non-empty string"),
                     ({"oidc_issuer": "https://id.example.net"},
                      "[panel] oidc_client_id must be set too: SSO needs"),
                     ({"oidc_issuer": "https://id.example.net", "oidc_client_id": "p",
                       "oidc_authorization_endpoint": "http://id.example.net/auth"},
                      "[panel] oidc_authorization_endpoint must be an https:// URL"),
                     ({"oidc_issuer": "https://id.example.net", "oidc_client_id": "p",
                       "oidc_authorization_endpoint": "https://id.example.net/auth",
                       "oidc_scope": "profile"}, "[panel] oidc_scope must include openid")):
        with pytest.raises(BadInput) as err:
            read(**bad)
        assert err.value.message.startswith("config /etc/debvisor.toml: ") and why in err.value.message
