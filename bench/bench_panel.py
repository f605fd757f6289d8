"""debvisor-panel page weight and first paint, measured in Debian's chromium through Playwright.

For each page: the JS and CSS one cold load transfers (a fresh browser context, so an empty cache),
both as sent (the encoded body sizes Chromium reports, i.e. gzipped when the panel compresses) and
as gzip -6 of the decoded bodies (what they weigh gzipped, whatever the panel sends); and the first
contentful paint, p50 of BENCH_FCP_RUNS (5) cold loads, from
performance.getEntriesByName('first-contentful-paint').
Targets (notes/panel.md 4.5): JS+CSS <= 100 KB gzipped per page (console pages <= 200 KB),
FCP p50 <= 300 ms.

Environment:
  DEBVISOR_PANEL_URL       the panel, e.g. https://127.0.0.1:8443 (unset: prints "skipped", exits 0)
  DEBVISOR_PANEL_PAGES     comma-separated paths to measure (default "/")
  DEBVISOR_PANEL_USER      log in first (with DEBVISOR_PANEL_PASSWORD) through the login form at
  DEBVISOR_PANEL_LOGIN     (default /login): fields name=username and name=password, a submit button
  DEBVISOR_PANEL_CERT      PEM of the panel's certificate: the browser trusts exactly its key
                           (--ignore-certificate-errors-spki-list); unset: the system's trust
  DEBVISOR_CHROMIUM        default /usr/bin/chromium (Debian's; never `playwright install`)
  BENCH_FCP_RUNS           default 5
  BENCH_JSON               also write the results to this file
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlparse

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Request, StorageState

PAGE_BUDGET = 100 * 1024
CONSOLE_BUDGET = 200 * 1024
FCP_BUDGET_MS = 300.0
SETTLE_MS = 300  # after the load event, for late requests (the SSE stream never ends: no networkidle)

FCP_JS = """() => new Promise((resolve) => {
  const now = performance.getEntriesByName('first-contentful-paint');
  if (now.length) { resolve(now[0].startTime); return; }
  new PerformanceObserver((list) => {
    const e = list.getEntriesByName('first-contentful-paint');
    if (e.length) resolve(e[0].startTime);
  }).observe({type: 'paint', buffered: true});
  setTimeout(() => resolve(null), 5000);
})"""


@dataclass
class PageResult:
    path: str
    requests: int = 0
    js_css_files: int = 0
    js_css_raw: int = 0  # decoded bytes
    js_css_wire: int = 0  # encoded body bytes as transferred
    js_css_gzip: int = 0  # gzip -6 of the decoded bodies
    fcp_ms: list[float] = field(default_factory=list)

    @property
    def budget(self) -> int:
        return CONSOLE_BUDGET if "console" in self.path else PAGE_BUDGET

    @property
    def fcp_p50(self) -> float | None:
        return statistics.median(self.fcp_ms) if self.fcp_ms else None


def spki_pin(cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def login(browser: Browser, base: str) -> StorageState | None:
    """Log in through the form and return the storage state (the session cookie) for the cold
    contexts; None when no user is configured."""
    user = os.environ.get("DEBVISOR_PANEL_USER")
    if not user:
        return None
    login_path = os.environ.get("DEBVISOR_PANEL_LOGIN", "/login")
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(urljoin(base, login_path))
    page.fill("[name=username]", user)
    page.fill("[name=password]", os.environ.get("DEBVISOR_PANEL_PASSWORD", ""))
    with page.expect_navigation():
        page.click("button[type=submit], input[type=submit]")
    if urlparse(page.url).path.rstrip("/") == login_path.rstrip("/"):
        raise SystemExit(f"bench_panel: login as {user} failed (still on {page.url})")
    state = ctx.storage_state()
    ctx.close()
    return state


def cold_context(browser: Browser, state: StorageState | None) -> BrowserContext:
    return browser.new_context(storage_state=state) if state else browser.new_context()


def measure_weight(browser: Browser, state: StorageState | None, url: str, res: PageResult) -> None:
    ctx = cold_context(browser, state)
    page = ctx.new_page()
    finished: list[Request] = []
    page.on("requestfinished", lambda req: finished.append(req))  # a bound builtin can't be a handler
    resp = page.goto(url, wait_until="load")
    if resp is None or not resp.ok:
        raise SystemExit(f"bench_panel: {url}: {resp.status if resp else 'no response'}")
    page.wait_for_timeout(SETTLE_MS)
    res.requests = len(finished)
    for req in finished:
        if req.resource_type not in ("script", "stylesheet"):
            continue
        r = req.response()
        if r is None:
            continue
        body = r.body()
        res.js_css_files += 1
        res.js_css_raw += len(body)
        res.js_css_gzip += len(gzip.compress(body, 6, mtime=0))
        res.js_css_wire += max(req.sizes()["responseBodySize"], 0)
    ctx.close()


def measure_fcp(browser: Browser, state: StorageState | None, url: str, runs: int, res: PageResult) -> None:
    for _ in range(runs):
        ctx = cold_context(browser, state)
        page = ctx.new_page()
        page.goto(url, wait_until="load")
        fcp = page.evaluate(FCP_JS)
        ctx.close()
        if fcp is None:
            raise SystemExit(f"bench_panel: {url}: no first-contentful-paint entry within 5 s")
        res.fcp_ms.append(float(fcp))


def main() -> int:
    base = os.environ.get("DEBVISOR_PANEL_URL", "").strip()
    if not base:
        print("skipped: no panel (set DEBVISOR_PANEL_URL)")
        return 0
    chromium = Path(os.environ.get("DEBVISOR_CHROMIUM", "/usr/bin/chromium"))
    if not chromium.exists():
        print(f"bench_panel: no chromium at {chromium} (apt-get install chromium)", file=sys.stderr)
        return 2
    from importlib.metadata import version

    from playwright.sync_api import sync_playwright

    pages = [p.strip() for p in os.environ.get("DEBVISOR_PANEL_PAGES", "/").split(",") if p.strip()]
    runs = int(os.environ.get("BENCH_FCP_RUNS", "5"))
    args = ["--no-sandbox"]
    cert = os.environ.get("DEBVISOR_PANEL_CERT")
    if cert:
        args.append(f"--ignore-certificate-errors-spki-list={spki_pin(Path(cert).read_bytes())}")

    results: list[PageResult] = []
    t0 = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=args)
        print(f"panel {base}: chromium {browser.version}, playwright {version('playwright')}, "
              f"cold context per load, FCP p50 of {runs}")
        state = login(browser, base)
        for path in pages:
            res = PageResult(path)
            url = urljoin(base, path)
            measure_weight(browser, state, url, res)
            measure_fcp(browser, state, url, runs, res)
            results.append(res)
        browser.close()

    over = 0
    for r in results:
        weight_ok = r.js_css_gzip <= r.budget
        fcp = r.fcp_p50
        fcp_ok = fcp is not None and fcp <= FCP_BUDGET_MS
        over += (not weight_ok) + (not fcp_ok)
        print(f"  {r.path}: {r.requests} requests, {r.js_css_files} JS/CSS files: "
              f"raw {r.js_css_raw / 1024:.1f} KB, "
              f"as sent {r.js_css_wire / 1024:.1f} KB, gzipped {r.js_css_gzip / 1024:.1f} KB "
              f"(target <= {r.budget // 1024} KB): {'OK' if weight_ok else 'OVER'}")
        print(f"  {r.path}: FCP p50 {fcp or 0:.0f} ms of {[round(x) for x in r.fcp_ms]} "
              f"(target <= {FCP_BUDGET_MS:.0f} ms): {'OK' if fcp_ok else 'OVER'}")
    print(f"  {over} figure(s) over target ({time.monotonic() - t0:.1f} s)")
    out = os.environ.get("BENCH_JSON")
    if out:
        Path(out).write_text(json.dumps(
            [{**asdict(r), "fcp_p50_ms": r.fcp_p50, "budget_bytes": r.budget} for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
