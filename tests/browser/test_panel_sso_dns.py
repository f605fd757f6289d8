"""SSO login and the DNS page in Debian's chromium: the panel over HTTPS (uvicorn in a thread)
over a real debvisor-rpcd that trusts a test identity provider's key for OIDC logins
(``[rpcd] oidc_jwks_file``), with the DNS lab (BIND9 primary and secondary) and without the
ceph plugin.

The identity provider is a small page on another site (``https://localhost:PORT``, while the
panel is ``https://127.0.0.1:PORT``): it signs an ID token with the nonce it was given and
posts it back to the panel (``form_post``), under ``Referrer-Policy: no-referrer`` as
Keycloak does, so the browser sends ``Origin: null`` from a cross-site page. That is what
the pre-login cookie (SameSite=None) and the continue page (SameSite=Strict session cookie)
are for, and only a real browser shows they work.
"""

from __future__ import annotations

import html
import json
import re
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.root]
PASSWORD = "alice has a long password"
CLIENT_ID = "debvisor-panel"
ZONE = "lab.debvisor.test"


def _labworld() -> Any:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "panel"))
    import labworld

    return labworld


class Idp:
    """A test identity provider: signs ID tokens for ``user`` with its own key."""

    def __init__(self, root: Path) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import ec

        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwks = root / "idp-jwks.json"
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        self.jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "t1", "alg": "ES256"}]}))
        self.url = ""
        self.user = "carol"
        self.asked: list[dict[str, str]] = []

    def app(self) -> Any:
        import jwt
        from starlette.applications import Starlette
        from starlette.responses import HTMLResponse
        from starlette.routing import Route

        async def auth(request: Any) -> HTMLResponse:
            q = dict(request.query_params)
            self.asked.append(q)
            now = int(time.time())
            token = jwt.encode({"sub": f"idp-{self.user}", "preferred_username": self.user,
                                "iss": self.url, "aud": q["client_id"], "iat": now,
                                "exp": now + 300, "nonce": q["nonce"]}, self.key,
                               algorithm="ES256", headers={"kid": "t1"})
            e = html.escape
            page = (f'<!doctype html><html><head><meta charset="utf-8"><title>Test IdP</title>'
                    f'</head><body><h1>Test identity provider</h1><p>Sign in to '
                    f'{e(q["client_id"])}</p><form method="post" action="{e(q["redirect_uri"])}">'
                    f'<input type="hidden" name="id_token" value="{e(token)}">'
                    f'<input type="hidden" name="state" value="{e(q["state"])}">'
                    f'<button id="signin" type="submit">Sign in as {e(self.user)}</button>'
                    f"</form></body></html>")
            return HTMLResponse(page, headers={"referrer-policy": "no-referrer"})

        return Starlette(routes=[Route("/auth", auth)])


@pytest.fixture(scope="module")
def dns_lab(dv_lab: Any) -> Path:
    pytest.importorskip("dns.query", reason="dnspython asks the servers")
    return Path(dv_lab.require("dns"))


@pytest.fixture(scope="module")
def stack(dns_lab: Path, module_https_server: Any, server_cert: Any, module_context: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Any, Idp]]:
    """(the panel's URL, a browser that trusts the panel and the IdP, the rpcd world, the
    IdP): the IdP first (its URL is rpcd's OIDC issuer), then rpcd, then the panel."""
    from debvisor_core.panel.app import create_app

    root = tmp_path_factory.mktemp("browsersso")
    idp = Idp(root)
    port = module_https_server(idp.app(), server_cert).rsplit(":", 1)[1]
    idp.url = f"https://localhost:{port}"  # another site than the panel's 127.0.0.1
    world = _labworld().start(
        root, {"alice": ("operator", PASSWORD)}, base=dns_lab,
        extra={"rpcd": {"oidc_jwks_file": str(idp.jwks), "oidc_issuer": idp.url,
                        "oidc_audience": CLIENT_ID, "identities": {"carol": ["operator"]}},
               "dns": {"timeout": 1.5, "update_timeout": 2.0, "propagation_timeout": 10}},
        env={"DEBVISOR_DISABLE_PLUGINS": "ceph"})
    try:
        settings = world.settings(public_origin="", oidc_issuer=idp.url,
                                  oidc_client_id=CLIENT_ID,
                                  oidc_authorization_endpoint=idp.url + "/auth")
        url = module_https_server(create_app(settings), server_cert)
        yield url, module_context, world, idp
    finally:
        world.stop()


@pytest.fixture
def panel(stack: tuple[str, Any, Any, Idp], server_cert: Any) -> Iterator[tuple[str, Any, Any,
                                                                                Idp]]:
    """(panel URL, a fresh browser context of this test, world, idp)."""
    url, contexts, world, idp = stack
    ctx = contexts(server_cert.cert, viewport={"width": 1280, "height": 900})
    yield url, ctx, world, idp
    ctx.close()


def test_sso_login_through_a_cross_site_identity_provider(panel: tuple[str, Any, Any, Idp],
                                                          shot: Any) -> None:
    from playwright.sync_api import expect

    url, ctx, world, idp = panel
    page = ctx.new_page()
    posted: list[dict[str, str]] = []
    page.on("request", lambda r: posted.append(r.headers) if r.url.endswith("/login/oidc")
            else None)
    page.goto(url + "/ops")
    expect(page).to_have_url(re.compile(r"/login\?next=/ops$"))
    expect(page.locator("a[data-role=sso]")).to_have_text("Log in with SSO")
    shot(page, "login-with-sso")
    page.click("a[data-role=sso]")
    expect(page).to_have_url(re.compile(r"^https://localhost:\d+/auth\?"))
    shot(page, "identity-provider")
    assert idp.asked[-1]["redirect_uri"] == url + "/login/oidc"
    assert idp.asked[-1]["response_mode"] == "form_post"
    page.click("#signin")
    expect(page).to_have_url(url + "/ops")  # the continue page, then where the user was going
    expect(page.locator("header .who")).to_contain_text("carol")
    expect(page.locator("main h1")).to_have_text("Operations")
    shot(page, "logged-in-with-sso")
    # the browser's post: cross-site, Origin null (the IdP's no-referrer); accepted on state
    assert posted and posted[0].get("origin") == "null", posted
    names = {c["name"]: c for c in ctx.cookies()}
    assert "__Host-debvisor-sso" not in names  # used once, then cleared
    assert names["__Host-debvisor"]["sameSite"] == "Strict"
    assert any(c.get("caller") == "carol via=panel" for c in world.calls())


def test_dns_update_plan_apply_proof_then_rollback(panel: tuple[str, Any, Any, Idp],
                                                   dns_lab: Path, shot: Any) -> None:
    import dns.message
    import dns.query
    from playwright.sync_api import expect

    url, ctx, world, _ = panel
    lab = tomllib.loads(dns_lab.read_text())["dns"]["lab"]

    def served(name: str) -> list[list[str]]:
        out = []
        for addr in (lab["primary"], lab["secondary"]):
            host, _, port = addr.rpartition(":")
            r = dns.query.udp(dns.message.make_query(f"{name}.{ZONE}.", "A"), host,
                              port=int(port), timeout=2)
            out.append(sorted(rd.to_text() for rrset in r.answer for rd in rrset
                              if rrset.rdtype == 1))
        return out

    name = f"pnlb{uuid.uuid4().hex[:8]}"
    page = ctx.new_page()
    page.on("dialog", lambda d: d.accept())
    page.goto(url + "/login")
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    expect(page.locator("header .who")).to_contain_text("alice")
    expect(page.locator("header nav a[href='/dns']")).to_have_text("DNS")
    expect(page.locator("header nav a[href='/ceph']")).to_have_count(0)  # no ceph plugin
    page.click("header nav a[href='/dns']")
    expect(page.locator("#dns-status strong")).to_have_text("ok")
    expect(page.locator("#dns-zones article.zone")).to_have_count(2)
    shot(page, "dns-zones", full_page=True)
    page.fill("#dns-lookup input[name=name]", "ns1")
    page.click("#dns-lookup button[type=submit]")
    expect(page.locator("#dns-records td[data-role=values]")).to_have_text(["10.77.0.53"] * 2)
    shot(page, "dns-lookup")
    form = page.locator("#dns-update form")
    form.locator("input[name=name]").fill(name)
    form.locator("input[name=value]").fill("10.77.0.77")
    form.locator("button[data-role=dns-plan]").click()
    expect(page.locator("#plan .plan-steps li").first).to_have_text(
        f"1. UPDATE {ZONE}: {name} A: (none) → 10.77.0.77 ttl 300")
    shot(page, "dns-plan")
    assert served(name) == [[], []]
    page.click("[data-role=apply]")
    expect(page.locator('#task-live article[data-status="succeeded"]')).to_be_visible()
    rows = page.locator("#task-live tr[data-role=served]")
    expect(rows).to_have_count(2)
    shot(page, "dns-propagation-proof", full_page=True)
    assert served(name) == [["10.77.0.77"], ["10.77.0.77"]]
    page.click("#task-live .task-actions a[href^='/ops/']")
    form = page.locator("form[action$='/rollback']")
    form.locator("input[name=password]").fill(PASSWORD)
    form.locator("button[type=submit]").click()
    expect(page.locator("#op-status")).to_have_text("rolled-back")
    shot(page, "dns-rolled-back")
    assert served(name) == [[], []]
