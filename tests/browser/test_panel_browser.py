"""debvisor-panel in Debian's chromium, against the lab: `debvisor lab up libvirt rpcd panel`.

The panel under test is the one the lab's ``panel`` service serves (``debvisor panel serve``,
HTTPS with a certificate from the lab CA, over the lab's rpcd with the ``panel`` proxy
certificate, logins ``admin`` and ``viewer`` from `debvisor lab env`). The browser trusts
exactly that certificate's key (``trusted_context``). Two tests need the server's clock
advanced (idle expiry, an expired console ticket): they use a second panel made with
``create_app(..., clock=...)`` in this process, served over the same certificate and the
same rpcd. A page of another origin (a port of its own on 127.0.0.1, so the same site:
the session cookie goes with its requests) plays the attacker.

The console runs against a real lab guest (TCG, on node1 in its network namespace) whose
QEMU writes its ``input_event_*`` trace to a file (``-trace``/``-D`` through the lab's
``guest_xml(qemu_args=...)``): in view mode clicks, typing and Ctrl-Alt-Del in noVNC, and
raw RFB input sent by a small RFB client in the page (:data:`RAW_CLIENT`: what a modified
browser would send), reach QEMU zero times; in control mode both do. (Playwright's
``route_web_socket`` cannot carry noVNC: its stand-in WebSocket fails noVNC's check of the
socket's properties.)

Every test takes screenshots (``shot``) of the pages it visits. The tests that do not depend
on a fresh session (none of them re-authenticates, logs out or lets the session expire) share
one admin login (``admin``: a new page of it per use); the others log in on their own.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from panellab import SPARE, VM, Guest, PanelLab

pytestmark = [pytest.mark.lab, pytest.mark.root]

CONNECTED = re.compile(r"^Connected")
WAIT_MS = 20_000


# --- a panel in this process (its clock is the test's), and the attacker's page -----------
class Clock:
    """The in-process panel's clock (sessions and console tickets): real time + offset."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def _serve(app: Any, cert: Path, key: Path) -> tuple[str, Callable[[], None]]:
    """uvicorn serving ``app`` over TLS on 127.0.0.1 in a thread; (url, stop)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, ssl_certfile=str(cert), ssl_keyfile=str(key),
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(15)

    return f"https://127.0.0.1:{port}", stop


@dataclass
class LocalPanel:
    url: str
    clock: Clock
    app: Any


@pytest.fixture(scope="module")
def local_panel(plab: PanelLab) -> Iterator[LocalPanel]:
    from debvisor_core.panel.app import create_app
    from debvisor_core.panel.console import ConsoleTickets
    from debvisor_core.panel.settings import PanelSettings

    settings = PanelSettings(**{**plab.config["panel"], "public_origin": ""})
    clock = Clock()
    app = create_app(settings, clock=clock)
    app.state.console_tickets = ConsoleTickets(clock=clock)
    url, stop = _serve(app, plab.cert, plab.key)
    try:
        yield LocalPanel(url, clock, app)
    finally:
        stop()


@pytest.fixture(scope="module")
def evil(plab: PanelLab) -> Iterator[str]:
    """Another origin on the same site (127.0.0.1, its own port; the same certificate, so
    the pinned browser loads it): a form that posts to the panel."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>elsewhere</title></head>
<body><h1>Win a prize</h1>
<form id="f" method="post" action="{plab.url}/logout"><input type="hidden" name="csrf" value="">
<button id="go" type="submit">Claim</button></form></body></html>"""

    async def index(request: Any) -> HTMLResponse:
        return HTMLResponse(page)

    url, stop = _serve(Starlette(routes=[Route("/", index)]), plab.cert, plab.key)
    try:
        yield url
    finally:
        stop()


# --- browser helpers -------------------------------------------------------------------------
def signin(ctx: Any, url: str, user: str, password: str, shot: Any = None) -> Any:
    from playwright.sync_api import expect

    page = ctx.new_page()
    page.goto(url + "/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    if shot:
        shot(page, "login")
    page.click("form[action='/login'] button[type=submit]")
    expect(page).to_have_url(url + "/")
    expect(page.locator("header .who")).to_contain_text(user)
    return page


def csrf_of(page: Any) -> str:
    return str(page.locator("form.logout input[name=csrf]").get_attribute("value"))


@pytest.fixture(scope="module")
def admin_context(plab: PanelLab, module_context: Any) -> Any:
    """One admin login shared by the tests that do not depend on a fresh session (none of
    them re-authenticates, logs out or waits for the session to expire)."""
    ctx = module_context(plab.cert)
    signin(ctx, plab.url, "admin", plab.users["admin"]).close()
    return ctx


@pytest.fixture
def admin(admin_context: Any, plab: PanelLab) -> Iterator[Callable[..., Any]]:
    """admin(path="/") -> a new page of the shared admin session at ``path`` (None: blank);
    the test's pages are closed at its end (their consoles with them)."""
    from playwright.sync_api import expect

    pages: list[Any] = []

    def new_page(path: str | None = "/") -> Any:
        page = admin_context.new_page()
        pages.append(page)
        if path is not None:
            page.goto(plab.url + path)
            expect(page.locator("header .who")).to_contain_text("admin")
        return page

    yield new_page
    for page in pages:
        page.close()


#: a minimal RFB 3.8 client in the page (what a modified browser could run): takes a fresh
#: console ticket from the console page (fetched with the page's session), connects through
#: the panel's proxy, asks for ``shared`` (0: exclusive access), sends ``payload`` (raw
#: client messages, base64) once initialised, stays ``hold`` ms, closes; resolves to
#: {state, code, reason} (state "done" when it stayed connected to the end).
RAW_CLIENT = """async ([vm, mode, shared, payloadB64, hold, ticket]) => {
  if (!ticket) {
    const html = await (await fetch(`/console/${vm}?mode=${mode}`)).text();
    const m = html.match(/data-ticket="([^"]+)"/);
    if (!m) return {state: "no-ticket", code: 0, reason: html.slice(0, 300)};
    ticket = m[1];
  }
  const ws = new WebSocket(`wss://${location.host}/console/ws?t=${encodeURIComponent(ticket)}`,
                           ["binary"]);
  ws.binaryType = "arraybuffer";
  let buf = new Uint8Array(0), state = "version";
  const take = (n) => { if (buf.length < n) return null;
                        const out = buf.slice(0, n); buf = buf.slice(n); return out; };
  return await new Promise((resolve) => {
    ws.onclose = (ev) => resolve({state, code: ev.code, reason: ev.reason});
    ws.onmessage = (ev) => {
      const d = new Uint8Array(ev.data), nb = new Uint8Array(buf.length + d.length);
      nb.set(buf); nb.set(d, buf.length); buf = nb;
      for (;;) {
        if (state === "version") {
          const v = take(12); if (!v) return; ws.send(v); state = "security";
        } else if (state === "security") {
          if (buf.length < 1 || buf.length < 1 + buf[0]) return;
          take(1 + buf[0]); ws.send(new Uint8Array([1])); state = "result";
        } else if (state === "result") {
          if (!take(4)) return; ws.send(new Uint8Array([shared])); state = "init";
        } else if (state === "init") {
          if (buf.length < 24) return;
          const nameLen = new DataView(buf.buffer, buf.byteOffset + 20, 4).getUint32(0);
          if (buf.length < 24 + nameLen) return;
          take(24 + nameLen); state = "ready";
          const payload = Uint8Array.from(atob(payloadB64), c => c.charCodeAt(0));
          if (payload.length) ws.send(payload);
          setTimeout(() => { state = "done"; ws.close(1000); }, hold);
        } else { buf = new Uint8Array(0); return; }
      }
    };
  });
}"""


def raw_client(page: Any, mode: str, payload: bytes = b"", *, shared: int = 1,
               hold: int = 800, ticket: str = "") -> dict[str, Any]:
    import base64

    return dict(page.evaluate(RAW_CLIENT, [VM, mode, shared, base64.b64encode(payload).decode(),
                                           hold, ticket]))


def open_with_ticket(page: Any, url: str, ticket: str) -> None:
    """Open the console page, whose script then uses ``ticket`` (one issued earlier, since
    used or expired) instead of the page's fresh one: what a browser reopening an old
    console link does. (The document itself is the server's: a document fulfilled by the
    test would count as a public page, and Chromium's Local Network Access checks would
    block its WebSocket to 127.0.0.1.)"""
    from debvisor_core.panel.app import STATIC

    script = (f"document.getElementById('console').dataset.ticket = {json.dumps(ticket)};\n"
              + (STATIC / "console.js").read_text())
    page.route(lambda u: u.endswith("/static/console.js"),
               lambda route: route.fulfill(status=200, body=script,
                                           content_type="text/javascript; charset=utf-8"))
    page.goto(f"{url}/console/{VM}?mode=view")


def fetch_text(page: Any, path: str) -> str:
    return str(page.evaluate("async p => (await fetch(p)).text()", path))


def rfb_input() -> tuple[bytes, int]:
    """Raw client messages that act on the guest: (bytes, how many KeyEvents)."""
    def key(sym: int, down: bool) -> bytes:
        return struct.pack(">BBxxI", 4, int(down), sym)

    def ptr(mask: int, x: int, y: int) -> bytes:
        return struct.pack(">BBHH", 5, mask, x, y)

    keys = [0xFFE3, 0xFFE9, 0xFFFF]  # Ctrl-Alt-Del
    msgs = [key(k, True) for k in keys] + [key(k, False) for k in reversed(keys)]
    for c in "reboot\r":
        msgs += [key(0xFF0D if c == "\r" else ord(c), True),
                 key(0xFF0D if c == "\r" else ord(c), False)]
    n_keys = len(msgs)
    msgs += [ptr(0, 50, 50), ptr(1, 50, 50), ptr(0, 50, 50), ptr(4, 80, 90), ptr(0, 80, 90)]
    msgs.append(struct.pack(">BxxxI", 6, 9) + b"rm -rf /\n")  # ClientCutText
    msgs += [struct.pack(">BBHII", 255, 0, d, 0x61, 0x1E) for d in (1, 0)]  # QEMU key
    return b"".join(msgs), n_keys


def open_console(page: Any, url: str, mode: str, vm: str = VM) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/console/{vm}?mode={mode}")
    expect(page.locator("#console-status")).to_have_text(CONNECTED, timeout=WAIT_MS)
    expect(page.locator("#console-screen canvas")).to_be_visible()


def wait_events(page: Any, guest: Guest, before: int, at_least: int, ms: int) -> int:
    """Input trace lines since ``before``, polled until ``at_least`` or ``ms`` passed."""
    deadline = time.monotonic() + ms / 1000
    while True:
        got = guest.input_events() - before
        if got >= at_least or time.monotonic() > deadline:
            return got
        page.wait_for_timeout(100)


def user_input(page: Any) -> None:
    """What a person does at the console: clicks, typing, Ctrl-Alt-Del from the keyboard."""
    box = page.locator("#console-screen canvas").bounding_box()
    assert box is not None
    for dx, dy in ((0.3, 0.3), (0.6, 0.5)):
        page.mouse.click(box["x"] + box["width"] * dx, box["y"] + box["height"] * dy)
    page.keyboard.type("ls -l")
    page.keyboard.press("Enter")
    page.keyboard.press("Control+Alt+Delete")


def _wait(cond: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- login, session expiry, CSRF and Origin ---------------------------------------------------
def test_login_with_the_lab_login(plab: PanelLab, guest: Guest, trusted_context: Any,
                                  shot: Any) -> None:
    from playwright.sync_api import expect

    ctx = trusted_context(plab.cert)
    page = signin(ctx, plab.url, "admin", plab.users["admin"], shot)
    (cookie,) = [c for c in ctx.cookies() if c["name"] == "__Host-debvisor"]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie["value"])  # only a random id
    expect(page.locator("h1").first).to_be_visible()
    shot(page, "overview")
    for path, heading in (("/ops", "Operations"), ("/audit", "Audit log"), ("/vms", "VMs")):
        page.goto(plab.url + path)
        expect(page.locator("h1")).to_have_text(heading)
        shot(page, path.strip("/"))
    expect(page.locator("table.vms")).to_contain_text(VM)


def test_idle_expiry_lands_on_the_login_page_with_the_reason(local_panel: LocalPanel,
                                                             plab: PanelLab,
                                                             trusted_context: Any,
                                                             shot: Any) -> None:
    from playwright.sync_api import expect

    from debvisor_core.panel.sessions import REASONS

    url = local_panel.url
    page = signin(trusted_context(plab.cert), url, "admin", plab.users["admin"])
    page.goto(url + "/ops")
    page.goto("about:blank")  # no event stream meanwhile: the next request decides
    local_panel.clock.advance(15 * 60 + 1)  # the server's clock: 15 min without activity
    page.goto(url + "/audit")  # the next click
    expect(page).to_have_url(re.compile(r"/login\?why=idle&next=/audit$"))
    expect(page.locator("#why")).to_have_text(REASONS["idle"])
    shot(page, "idle-next-click")
    # log in again (back to /audit), then do nothing: the tab's event stream is no activity
    # and tells the page the session ended
    page.fill("input[name=user]", "admin")
    page.fill("input[name=password]", plab.users["admin"])
    page.click("form[action='/login'] button[type=submit]")
    expect(page).to_have_url(url + "/audit")
    local_panel.clock.advance(15 * 60 + 1)
    expect(page).to_have_url(re.compile(r"/login\?why=idle$"), timeout=10_000)
    expect(page.locator("#why")).to_have_text(REASONS["idle"])
    shot(page, "idle-by-itself")


def test_a_post_without_the_csrf_token_is_refused(plab: PanelLab, trusted_context: Any,
                                                  shot: Any) -> None:
    page = signin(trusted_context(plab.cert), plab.url, "admin", plab.users["admin"])
    post = """async ([path, body]) => {
        const r = await fetch(path, {method: "POST", body: body,
            headers: {"content-type": "application/x-www-form-urlencoded"}});
        return [r.status, await r.text(), r.url];
    }"""
    status, text, _ = page.evaluate(post, ["/logout", ""])
    assert status == 403 and "CSRF token is missing or wrong" in text, (status, text)
    status, text, _ = page.evaluate(post, ["/logout", "csrf=" + "x" * 43])
    assert status == 403 and "CSRF" in text
    page.reload()
    shot(page, "still-logged-in")
    assert "admin" in page.locator("header .who").inner_text()
    # the same request with the page's token goes through (the session ends)
    status, _, final = page.evaluate(post, ["/logout", "csrf=" + csrf_of(page)])
    assert status == 200 and final.endswith("/login?why=logged-out"), (status, final)


def test_a_post_from_a_foreign_origin_is_refused(plab: PanelLab, evil: str, admin: Any,
                                                 shot: Any) -> None:
    page = admin()
    token = csrf_of(page)
    attacker = admin(None)  # the same browser, the same (site's) cookies
    attacker.goto(evil + "/")
    shot(attacker, "attacker-page")
    # even with the right CSRF token (which a real attacker does not have), and with the
    # session cookie (same site): refused for its Origin
    attacker.evaluate("t => document.querySelector('input[name=csrf]').value = t", token)
    with attacker.expect_navigation() as nav:
        attacker.click("#go")
    resp = nav.value
    assert resp is not None and resp.status == 403
    assert "Origin check" in attacker.content()
    shot(attacker, "refused")
    page.reload()
    assert "admin" in page.locator("header .who").inner_text()  # not logged out


def test_a_websocket_from_a_foreign_origin_is_closed_before_accept(
        plab: PanelLab, evil: str, admin: Any, shot: Any) -> None:
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect
    from websockets.typing import Origin, Subprotocol

    attacker = admin(None)  # a tab of the logged-in browser
    said: list[str] = []
    attacker.on("console", lambda m: said.append(m.text))
    attacker.goto(evil + "/")
    wss = plab.url.replace("https://", "wss://") + "/console/ws?t=x"
    opened, code = attacker.evaluate("""url => new Promise(done => {
        const ws = new WebSocket(url, ["binary"]);
        let opened = false;
        ws.onopen = () => { opened = true; };
        ws.onclose = (ev) => done([opened, ev.code]);
    })""", wss)
    assert (opened, code) == (False, 1006)  # the handshake failed: never open
    assert any("Unexpected response code: 403" in t for t in said), said  # Chromium's words
    shot(attacker, "attacker-page")
    # what the browser cannot see: the upgrade is answered 403 before accept, while the
    # same upgrade from the panel's origin is accepted (then closed: no such ticket)
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in attacker.context.cookies())
    tls = ssl.create_default_context(cafile=str(plab.ca))
    with pytest.raises(InvalidStatus) as refused:
        connect(wss, ssl=tls, origin=Origin(evil), additional_headers={"Cookie": cookie},
                proxy=None, open_timeout=10)
    assert refused.value.response.status_code == 403
    with connect(wss, ssl=tls, origin=Origin(plab.url), additional_headers={"Cookie": cookie},
                 proxy=None, open_timeout=10, subprotocols=[Subprotocol("binary")]) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert (ws.close_code, ws.close_reason) == (4403, "unknown")


# --- the console against QEMU -----------------------------------------------------------------
def test_view_mode_input_reaches_qemu_zero_times(plab: PanelLab, guest: Guest, admin: Any,
                                                 shot: Any) -> None:
    from playwright.sync_api import expect

    guest.ready()  # booted (it boots while the tests before this one run)
    page = admin()
    open_console(page, plab.url, "view")
    expect(page.locator("#console-cad")).to_have_count(0)  # no Ctrl-Alt-Del button
    expect(page.locator("#console-mode")).to_have_text("view only")
    shot(page, "watching")
    page.wait_for_timeout(300)
    before = guest.input_events()
    user_input(page)  # noVNC in view-only mode sends none of it...
    raw, n_keys = rfb_input()
    sent = raw_client(page, "view", raw)  # ...so send it as a modified browser would
    assert sent["state"] == "done" and sent["code"] == 1000, sent  # dropped, not closed
    got = wait_events(page, guest, before, 1, 1500)
    assert got == 0, f"{got} input events reached QEMU in view mode"
    expect(page.locator("#console-status")).to_have_text(CONNECTED)
    shot(page, "after-input")
    close = _wait(lambda: [e for e in plab.console_events() if e["event"] == "console.close"
                           and e["mode"] == "view" and e.get("bytes_from_browser", 0) > 100],
                  "the console's close event")[-1]
    assert close["dropped"]["KeyEvent"] == n_keys and close["dropped"]["PointerEvent"] == 5
    assert close["dropped"]["ClientCutText"] == 1 and close["dropped"]["QEMUClientMessage"] == 2
    assert "KeyEvent" not in close["forwarded"] and "PointerEvent" not in close["forwarded"]
    print(f"\nview mode: QEMU input trace events {got}; the proxy dropped {close['dropped']}")


def test_control_mode_needs_reauth_and_input_reaches_qemu(plab: PanelLab, guest: Guest,
                                                          trusted_context: Any,
                                                          shot: Any) -> None:
    from playwright.sync_api import expect

    guest.ready()  # booted (it boots while the tests before this one run)
    page = signin(trusted_context(plab.cert), plab.url, "admin", plab.users["admin"])
    page.goto(f"{plab.url}/console/{VM}?mode=control")
    expect(page.locator("form.console-reauth input[name=password]")).to_be_visible()
    expect(page.locator("#console")).to_have_count(0)  # no ticket before the password
    shot(page, "reauth")
    page.fill("form.console-reauth input[name=password]", "not the password at all")
    page.click("form.console-reauth button[type=submit]")
    expect(page.locator("#console-error")).to_have_text("Wrong password: the console was not opened.")
    page.fill("form.console-reauth input[name=password]", plab.users["admin"])
    page.click("form.console-reauth button[type=submit]")
    expect(page).to_have_url(f"{plab.url}/console/{VM}?mode=control")
    expect(page.locator("#console-status")).to_have_text(CONNECTED, timeout=WAIT_MS)
    expect(page.locator("#console-mode")).to_have_text("control")
    page.wait_for_timeout(300)
    before = guest.input_events()
    user_input(page)
    page.click("#console-cad")
    got = wait_events(page, guest, before, 10, 5000)
    assert got > 0, "no input reached QEMU in control mode"
    shot(page, "controlling")
    # the raw messages the view-mode test sends, in control mode (re-authenticated: fresh)
    before_raw = guest.input_events()
    sent = raw_client(page, "control", rfb_input()[0])
    assert sent["state"] == "done" and sent["code"] == 1000, sent
    raw_got = wait_events(page, guest, before_raw, 10, 5000)
    assert raw_got > 0
    print(f"\ncontrol mode: QEMU input trace events {got} (browser), {raw_got} (raw)")
    opened = [e for e in plab.console_events() if e["event"] == "console.open"]
    assert opened[-1]["mode"] == "control" and opened[-1]["user"] == "admin"
    assert opened[-1]["security"] == "vnc-password"  # the password stayed in the panel
    assert "password" not in page.content().lower().split("console-screen")[1]


def test_a_second_viewer_does_not_disconnect_the_first(plab: PanelLab, guest: Guest,
                                                       admin: Any, shot: Any) -> None:
    from playwright.sync_api import expect

    guest.ready()  # booted (it boots while the tests before this one run)
    first = admin()
    sockets: list[Any] = []
    first.on("websocket", lambda w: sockets.append(w))
    open_console(first, plab.url, "view")
    second = admin()
    open_console(second, plab.url, "view")
    expect(second.locator("#console-watchers")).to_contain_text("1 other watching")
    shot(second, "second")
    # a third asks QEMU for exclusive access (ClientInit shared=0), which would drop the others
    third = raw_client(second, "view", shared=0, hold=1500)
    assert third["state"] == "done" and third["code"] == 1000, third
    (ws,) = [w for w in sockets if "/console/ws" in w.url]
    assert not ws.is_closed(), "the first viewer was disconnected"
    expect(first.locator("#console-status")).to_have_text(CONNECTED)
    expect(second.locator("#console-status")).to_have_text(CONNECTED)
    third_page = first.context.new_page()  # a third tab counts the two already watching
    open_console(third_page, plab.url, "view")
    expect(third_page.locator("#console-watchers")).to_have_text("2 others watching")
    shot(third_page, "third")
    third_page.close()
    assert not ws.is_closed()
    expect(first.locator("#console-status")).to_have_text(CONNECTED)
    expect(second.locator("#console-status")).to_have_text(CONNECTED)


def test_a_reused_ticket_is_refused_with_its_reason(plab: PanelLab, guest: Guest, admin: Any,
                                                    shot: Any) -> None:
    from playwright.sync_api import expect

    guest.ready()  # booted (it boots while the tests before this one run)
    page = admin()
    open_console(page, plab.url, "view")
    used = page.locator("#console").get_attribute("data-ticket")
    assert used
    again = admin(None)  # the same session, another tab, the link already used
    open_with_ticket(again, plab.url, used)
    expect(again.locator("#console-status")).to_have_text(
        "This console link was already used. Open the console again from the VM page.")
    shot(again, "reused")
    refused = _wait(lambda: [e for e in plab.console_events()
                             if e["event"] == "console.refused" and e.get("reason") == "used"],
                    "the refusal in the panel's log")
    assert refused[-1]["user"] == "admin" and refused[-1]["code"] == 4403
    expect(page.locator("#console-status")).to_have_text(CONNECTED)  # the first is untouched


def test_an_expired_ticket_is_refused_with_its_reason(local_panel: LocalPanel,
                                                      plab: PanelLab, guest: Guest,
                                                      trusted_context: Any,
                                                      shot: Any) -> None:
    from playwright.sync_api import expect

    guest.ready()  # booted (it boots while the tests before this one run)
    page = signin(trusted_context(plab.cert), local_panel.url, "admin", plab.users["admin"])
    issued = re.search(r'data-ticket="([^"]+)"', fetch_text(page, f"/console/{VM}?mode=view"))
    assert issued  # a ticket issued now...
    local_panel.clock.advance(31)  # ...and opened 31 s later by the server's clock
    open_with_ticket(page, local_panel.url, issued.group(1))
    expect(page.locator("#console-status")).to_have_text(
        "This console link expired (it must be opened within 30 seconds). Open the console "
        "again.")
    shot(page, "expired")


# --- the journal, the audit log, a read-only user ---------------------------------------------
def test_rollback_from_the_journal_needs_reauth_and_shows_the_undo_plan(
        plab: PanelLab, guest: Guest, trusted_context: Any, shot: Any) -> None:
    from playwright.sync_api import expect

    op = plab.register(VM)
    page = signin(trusted_context(plab.cert), plab.url, "admin", plab.users["admin"])
    page.on("dialog", lambda d: d.accept())  # "Roll back operation …?"
    page.goto(plab.url + "/ops")
    page.click(f"a[href='/ops/{op}']")
    expect(page.locator("#op-status")).to_have_text("succeeded")
    plan = page.locator("#undo-plan li")
    expect(plan).to_have_count(2)
    expect(plan.nth(0)).to_contain_text(f"undo 2. set autostart of {VM} on")
    expect(plan.nth(1)).to_contain_text(f"undo 1. record {VM} on node1 in the inventory")
    form = page.locator(f"form[action='/ops/{op}/rollback']")
    expect(form.locator("input[name=password]")).to_be_visible()  # re-authentication
    shot(page, "undo-plan")
    form.locator("input[name=password]").fill("wrong password, twice over")
    form.locator("button[type=submit]").click()
    expect(page.locator("#rollback .error")).to_have_text("Wrong password: nothing was rolled back.")
    assert plab.op_status(op) == "succeeded"
    form.locator("input[name=password]").fill(plab.users["admin"])
    form.locator("button[type=submit]").click()
    expect(page.locator("#run-result h2")).to_have_text("Rollback finished", timeout=WAIT_MS)
    expect(page.locator("#op-status")).to_have_text("rolled-back")
    shot(page, "rolled-back")
    page.goto(plab.url + "/ops")
    row = page.locator("table.ops tr", has=page.locator(f"a[href='/ops/{op}']"))
    expect(row.locator("td.status")).to_have_text("rolled-back")
    shot(page, "journal")
    assert plab.op_status(op) == "rolled-back"
    # the last operation record (console sessions write theirs into the same chain)
    last = [e for e in map(json.loads, plab.audit_log.read_text().splitlines())
            if e.get("plugin") != "console"][-1]
    assert last["result"] == "rolled-back" and last["caller"] == "admin via=panel"


def test_the_audit_page_verifies_the_chain_and_names_a_tampered_line(
        plab: PanelLab, admin: Any, shot: Any) -> None:
    from playwright.sync_api import expect

    page = admin("/audit")
    expect(page.locator("#verdict strong")).to_have_text("chain verified")
    shot(page, "verified")
    log = plab.audit_log
    original = log.read_bytes()
    rows = original.decode().splitlines(keepends=True)
    n = next(i for i, r in enumerate(rows) if i >= 1 and '"result":"' in r)
    rows[n] = rows[n].replace('"result":"', '"result":"not ', 1)
    try:
        log.write_text("".join(rows))
        page.reload()
        expect(page.locator("#verdict strong")).to_have_text(f"tampered at line {n + 1}")
        shot(page, "tampered")
    finally:
        log.write_bytes(original)
    page.reload()
    expect(page.locator("#verdict strong")).to_have_text("chain verified")


def test_a_viewer_sees_no_write_buttons_and_rpcd_refuses_a_forged_post(
        plab: PanelLab, guest: Guest, trusted_context: Any, shot: Any) -> None:
    from playwright.sync_api import expect

    op = plab.register(SPARE)
    page = signin(trusted_context(plab.cert), plab.url, "viewer", plab.users["viewer"])
    page.goto(f"{plab.url}/ops/{op}")
    expect(page.locator("#rollback")).to_contain_text("Your role cannot roll back operations.")
    expect(page.locator("#undo-plan li")).to_have_count(2)  # the plan is readable
    expect(page.locator(f"form[action='/ops/{op}/rollback']")).to_have_count(0)
    assert page.locator("main button").count() == 0, "a write button for a read-only user"
    shot(page, "operation")
    page.goto(plab.url + "/vms")
    expect(page.locator("table.vms")).to_contain_text(VM)
    expect(page.locator("td.row-actions a:not(.act-watch)")).to_have_count(0)  # no VM actions
    assert page.locator("main button").count() == 1  # the filter form's, nothing else
    shot(page, "vms")
    page.goto(f"{plab.url}/console/{VM}?mode=control")
    expect(page.locator("#console-error")).to_contain_text("Your role cannot open consoles")
    expect(page.locator("#console")).to_have_count(0)
    expect(page.locator("form.console-reauth")).to_have_count(0)
    expect(page.locator(".console-modes")).to_have_count(0)
    shot(page, "no-console")
    # forge the form the viewer was not given, and post it from the panel's own page
    page.goto(f"{plab.url}/ops/{op}")
    page.evaluate("""([action, csrf, password]) => {
        const f = document.createElement("form");
        f.method = "post"; f.action = action;
        for (const [k, v] of [["csrf", csrf], ["password", password]]) {
            const i = document.createElement("input");
            i.type = "hidden"; i.name = k; i.value = v; f.appendChild(i);
        }
        document.body.appendChild(f);
        f.submit();
    }""", [f"/ops/{op}/rollback", csrf_of(page), plab.users["viewer"]])
    expect(page.locator("main h1")).to_have_text("Refused")
    expect(page.locator("main .error")).to_have_text(
        "refused by rpcd: viewer may not call RollbackOperation")
    shot(page, "forged-post-refused")
    denied = [c for c in plab.calls() if c.get("code") == "PERMISSION_DENIED"]
    assert denied[-1]["caller"] == "viewer via=panel"
    assert denied[-1]["method"].endswith("/RollbackOperation")
    assert plab.op_status(op) == "succeeded"  # nothing was rolled back
