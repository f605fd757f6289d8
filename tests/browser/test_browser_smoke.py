"""Smoke test of the browser-test setup: Debian's chromium under Playwright, over real TLS.

A minimal Starlette app is served over HTTPS (a fresh self-signed certificate) by uvicorn in a
thread. A chromium that pins that certificate's key loads it and runs its script; one that pins
another key, and the plain one that pins none, refuse it with a certificate error.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>debvisor smoke</title>
<script defer src="/app.js"></script></head>
<body><h1>DebVisor</h1><p id="out">not run</p></body></html>"""

SCRIPT = 'document.getElementById("out").textContent = "script ran over " + location.protocol;'


def _app() -> Any:
    pytest.importorskip("starlette", reason="starlette is in the panel extra: pip install -e '.[panel]'")
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    async def index(request: Any) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def js(request: Any) -> Response:
        return Response(SCRIPT, media_type="text/javascript")

    return Starlette(routes=[Route("/", index), Route("/app.js", js)])


def test_debian_chromium_launches_under_playwright(
    browser: Any, chromium_version: str, playwright_version: tuple[str, str]
) -> None:
    pw, bundled = playwright_version
    print(f"playwright {pw} (bundles chromium {bundled}); browser.version {browser.version}; "
          f"Debian chromium {chromium_version}")
    major = chromium_version.split(".")[0]
    assert major.isdigit(), f"`chromium --version` gave no version: {chromium_version!r}"
    assert browser.version.startswith(major + "."), (
        f"Playwright {pw} launched chromium {browser.version}, expected Debian's {chromium_version}"
    )


def test_pinned_certificate_is_trusted_and_no_other(
    https_server: Any, make_cert: Any, trusted_context: Any, browser: Any, shot: Any
) -> None:
    from playwright.sync_api import Error

    served, other = make_cert("served"), make_cert("other")
    url = https_server(_app(), served)

    page = trusted_context(served.cert).new_page()
    resp = page.goto(url + "/")
    assert resp is not None and resp.status == 200
    page.wait_for_function("document.getElementById('out').textContent !== 'not run'")
    assert page.text_content("#out") == "script ran over https:"
    png = shot(page, "pinned")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    for ctx, who in ((trusted_context(other.cert), "a chromium pinning another key"),
                     (browser.new_context(), "a chromium pinning nothing")):
        with pytest.raises(Error) as refused:
            ctx.new_page().goto(url + "/")
        assert re.search(r"net::ERR_CERT_\w+", str(refused.value)), f"{who}: {refused.value}"
        ctx.close()


def test_a_ca_pin_matches_only_when_the_server_sends_the_ca(
    https_server: Any, make_cert: Any, trusted_context: Any
) -> None:
    # Chromium hashes the keys of the certificates the server sent, not of the chain it built:
    # pinning a CA works for a server that sends the CA certificate after its own, and only then.
    from playwright.sync_api import Error

    ca = make_cert("ca", ca=True)
    leaf = make_cert("leaf", issuer=ca)
    with_ca = https_server(_app(), leaf, send_chain=True)
    leaf_only = https_server(_app(), leaf)
    ctx = trusted_context(ca.cert)
    page = ctx.new_page()
    resp = page.goto(with_ca + "/")
    assert resp is not None and resp.status == 200
    with pytest.raises(Error, match=r"net::ERR_CERT_\w+"):
        ctx.new_page().goto(leaf_only + "/")
