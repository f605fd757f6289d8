"""debvisor-panel page weight, first paint, VM list server time and live progress latency,
measured in Debian's chromium through Playwright (and httpx for the VM list).

For each page: the JS and CSS one cold load transfers (a fresh browser context, so an empty cache),
both as sent (the encoded body sizes Chromium reports, i.e. gzipped when the panel compresses) and
as gzip -6 of the decoded bodies (what they weigh gzipped, whatever the panel sends); and the first
contentful paint, p50 of BENCH_FCP_RUNS (5) cold loads, from
performance.getEntriesByName('first-contentful-paint').
Targets (notes/panel.md 4.5): JS+CSS <= 100 KB gzipped per page (console pages <= 200 KB),
FCP p50 <= 300 ms.

VM list: GET /vms (after a login through the form) BENCH_VM_LIST_RUNS (40) times over one
keep-alive HTTPS connection, after 3 warm-ups: p50 and p95 of the time to the whole page at
the client, plus the panel's own Server-Timing (rpcd call, render). Target: p95 <= 150 ms for
an inventory of 500 VMs; another inventory size is reported, not judged.

Progress latency: with BENCH_PANEL_MIGRATE ("VM TARGET [BANDWIDTH]", default bandwidth
12MiB/s) the bench migrates VM there and back through the panel in the browser; a
MutationObserver (injected by Playwright, so the CSP does not apply) records, for every
progress point that reaches the task's drawer, now minus the point's ``t`` (stamped when the
action in rpcd's child emitted it; same host, same clock). Target: <= 1 s.

Console: with BENCH_PANEL_CONSOLE (a running VM's name) the bench clicks the VM's Watch link
on /vms, BENCH_CONSOLE_RUNS (5) times, each in a fresh browser context (an empty cache: noVNC's
modules are loaded too), and measures from the click (a capture-phase listener injected by
Playwright notes the time) to (a) noVNC's 'connect' (the page says "Connected"), (b) the
first frame on screen (the first opaque pixel of noVNC's canvas: a framebuffer update was
drawn) and (c) the first non-black pixel, when the guest's screen has any. Target: (b) p50
<= 1.5 s. The time is spent in the page, the panel (the console ticket, rpcd's
``hv.ticket.create`` and ``hv.ticket.use``), and the VNC handshake through the proxy.

DEBVISOR_PANEL_URL=stack starts everything itself (then the VARIABLES below are set for it):
a CA, a debvisor-rpcd and `debvisor panel serve` on 127.0.0.1 with a user `bench`
(operator), and a synthetic inventory of BENCH_VMS (500) VMs — libvirt's test driver
(``test:///FILE``, two nodes, one node XML each; a third of the VMs shut off, half of them
registered with an owner and a tag) queried for real by `hv list` inside rpcd, through the
panel's real /vms code path; plus, unless BENCH_PANEL_LAB=0, the libvirt lab's two nodes
(`debvisor lab up libvirt`, root) and a TCG guest to migrate for the progress latency.

Environment:
  DEBVISOR_PANEL_URL       the panel, e.g. https://127.0.0.1:8443, or `stack` (above); unset:
                           prints "skipped", exits 0
  DEBVISOR_PANEL_PAGES     comma-separated paths to measure (default "/")
  DEBVISOR_PANEL_USER      log in first (with DEBVISOR_PANEL_PASSWORD) through the login form at
  DEBVISOR_PANEL_LOGIN     (default /login): fields name=user and name=password, a submit button;
                           the VM list and the progress latency need a login
  DEBVISOR_PANEL_CERT      PEM of the panel's certificate: the browser trusts exactly its key
                           (--ignore-certificate-errors-spki-list); unset: the system's trust
  DEBVISOR_CHROMIUM        default /usr/bin/chromium (Debian's; never `playwright install`)
  BENCH_FCP_RUNS           default 5
  BENCH_VM_LIST_RUNS       default 40 (0: skip the VM list)
  BENCH_PANEL_MIGRATE      "VM TARGET [BANDWIDTH]": measure the progress latency (see above)
  BENCH_VMS                the stack's synthetic inventory (default 500)
  BENCH_PANEL_LAB          0: the stack starts no libvirt lab (no progress latency, no console)
  BENCH_PANEL_CONSOLE      a running VM: measure its console's click -> first frame (the
                           stack sets it to its guest)
  BENCH_CONSOLE_RUNS       default 5
  BENCH_JSON               also write the results to this file
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlparse

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Request, StorageState

PAGE_BUDGET = 100 * 1024
CONSOLE_BUDGET = 200 * 1024
FCP_BUDGET_MS = 300.0
VM_LIST_BUDGET_MS = 150.0
VM_LIST_SIZE = 500  # the inventory size the VM list target is for
PROGRESS_BUDGET_S = 1.0
CONSOLE_BUDGET_S = 1.5
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
    page.fill("[name=user]", user)
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


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, nearest rank."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def _tls(cert: str | None) -> ssl.SSLContext | bool:
    """httpx's verification: exactly the panel's certificate when given (a leaf is trusted
    as an anchor: partial chains allowed), else the system's trust."""
    if not cert:
        return True
    ctx = ssl.create_default_context(cafile=cert)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


@dataclass
class VmListResult:
    runs: int = 0
    shown: int = 0
    total: int = 0
    ms: list[float] = field(default_factory=list)
    rpcd_ms: list[float] = field(default_factory=list)
    render_ms: list[float] = field(default_factory=list)

    @property
    def p95(self) -> float:
        return percentile(self.ms, 95)


def measure_vm_list(base: str, cert: str | None, user: str, password: str,
                    runs: int) -> VmListResult:
    """GET /vms ``runs`` times over one keep-alive connection, after logging in."""
    import httpx

    res = VmListResult(runs)
    origin = base.rstrip("/")
    with httpx.Client(verify=_tls(cert), timeout=30, headers={"origin": origin}) as h:
        form = h.get(urljoin(base, "/login"))
        m = re.search(r'name="csrf" value="([^"]+)"', form.text)
        if not m:
            raise SystemExit(f"bench_panel: no login form at {base}/login")
        r = h.post(urljoin(base, "/login"), data={"user": user, "password": password,
                                                  "csrf": m.group(1)})
        if r.status_code != 303:
            raise SystemExit(f"bench_panel: login as {user} failed ({r.status_code})")
        url = urljoin(base, "/vms")
        for _ in range(3):
            h.get(url)
        for _ in range(runs):
            t0 = time.perf_counter()
            r = h.get(url)
            elapsed = (time.perf_counter() - t0) * 1000
            if r.status_code != 200:
                raise SystemExit(f"bench_panel: /vms answered {r.status_code}")
            res.ms.append(elapsed)
            timing = dict(re.findall(r"(\w+);dur=([\d.]+)", r.headers.get("server-timing", "")))
            if timing:
                res.rpcd_ms.append(float(timing.get("rpcd", 0)))
                res.render_ms.append(float(timing.get("render", 0)))
        count = re.search(r"(\d+) of (\d+) VMs", r.text)
        res.shown, res.total = (int(count.group(1)), int(count.group(2))) if count else (0, 0)
    return res


LATENCY_PROBE = """
window.__latency = [];
new MutationObserver(() => {
  const el = document.querySelector('#task-live [data-role=phase][data-t]');
  if (!el) return;
  const t = parseFloat(el.getAttribute('data-t'));
  if (t && t !== window.__lastT) {
    window.__lastT = t;
    window.__latency.push(Date.now() / 1000 - t);
  }
}).observe(document, {subtree: true, childList: true});
"""


def measure_progress(browser: Browser, state: StorageState | None, base: str,
                     spec: str) -> list[float]:
    """Migrate VM to TARGET and back through the panel; every progress point's age on screen."""
    parts = spec.split()
    if len(parts) not in (2, 3):
        raise SystemExit(f"bench_panel: BENCH_PANEL_MIGRATE={spec!r}: give 'VM TARGET [BANDWIDTH]'")
    vm, target = parts[0], parts[1]
    bandwidth = parts[2] if len(parts) == 3 else "12MiB/s"
    ctx = cold_context(browser, state)
    page = ctx.new_page()
    page.add_init_script(LATENCY_PROBE)
    page.goto(urljoin(base, f"/vms/{vm}/migrate"))
    source = page.inner_text("#vm-node").strip()
    ages: list[float] = []
    for to in (target, source):
        page.goto(urljoin(base, f"/vms/{vm}/migrate?target={to}&bandwidth={bandwidth}"))
        page.click("[data-role=apply]", timeout=60_000)
        page.wait_for_url(re.compile(r".*/tasks/[0-9a-f]{12}$"))
        page.wait_for_selector('#task-live article:not([data-status="starting"])'
                               ':not([data-status="running"])', timeout=600_000)
        status = page.get_attribute("#task-live article", "data-status")
        ages += page.evaluate("window.__latency")
        if status != "succeeded":
            raise SystemExit(f"bench_panel: migrating {vm} to {to} ended {status}")
    ctx.close()
    return ages


#: in every document: note when a Watch link is clicked (sessionStorage survives the
#: navigation to the console page); on the console page, poll noVNC's canvas every frame
CONSOLE_PROBE = """
(() => {
  document.addEventListener('click', (e) => {
    const a = e.target && e.target.closest && e.target.closest('a.act-watch');
    if (a) sessionStorage.setItem('benchClick', String(Date.now()));
  }, true);
  if (!location.pathname.startsWith('/console/')) return;
  const b = window.__bench = {click: Number(sessionStorage.getItem('benchClick') || 0),
                              connect: null, frame: null, lit: null};
  const tick = () => {
    const st = document.getElementById('console-status');
    if (!b.connect && st && /^Connected/.test(st.textContent)) b.connect = Date.now();
    const c = document.querySelector('#console-screen canvas');
    if (c && c.width && c.height) {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 3; i < d.length; i += 16) {
        if (!d[i]) continue;
        if (!b.frame) b.frame = Date.now();
        if (d[i - 1] || d[i - 2] || d[i - 3]) { b.lit = Date.now(); break; }
      }
    }
    if (!(b.frame && b.lit)) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})();
"""


@dataclass
class ConsoleResult:
    runs: int = 0
    connect_s: list[float] = field(default_factory=list)
    frame_s: list[float] = field(default_factory=list)
    lit_s: list[float] = field(default_factory=list)


def measure_console(browser: Browser, state: StorageState | None, base: str, vm: str,
                    runs: int) -> ConsoleResult:
    """Click VM's Watch link on /vms ``runs`` times (a cold context each): the seconds to
    noVNC's connect, to the first frame and to the first non-black pixel."""
    res = ConsoleResult(runs)
    for _ in range(runs):
        ctx = cold_context(browser, state)
        page = ctx.new_page()
        page.add_init_script(CONSOLE_PROBE)
        page.goto(urljoin(base, f"/vms?q={vm}"), wait_until="load")
        page.click(f'tr[data-vm="{vm}"] a.act-watch')
        try:
            page.wait_for_function("() => window.__bench && window.__bench.frame",
                                   timeout=15_000)
            page.wait_for_function("() => window.__bench.lit", timeout=1_000)
        except Exception:  # noqa: BLE001 - an all-black screen has no lit pixel; judged on frame
            pass
        b = page.evaluate("window.__bench || {}")
        status = page.inner_text("#console-status") if page.locator("#console-status").count() \
            else "no console on the page"
        ctx.close()
        if not b.get("click") or not b.get("frame"):
            raise SystemExit(f"bench_panel: the console of {vm} showed no frame ({status})")
        res.frame_s.append((b["frame"] - b["click"]) / 1000)
        if b.get("connect"):
            res.connect_s.append((b["connect"] - b["click"]) / 1000)
        if b.get("lit"):
            res.lit_s.append((b["lit"] - b["click"]) / 1000)
    return res


class Stack:
    """DEBVISOR_PANEL_URL=stack: a CA, rpcd, the panel and a synthetic inventory (and the
    libvirt lab with a guest, when it can start), all under one temporary directory."""

    USER, PASSWORD = "bench", "bench has a long password"
    GUEST = "benchmig"

    def __init__(self, vms: int, lab: bool) -> None:
        self.vms, self.want_lab = vms, lab
        self.dir = Path(tempfile.mkdtemp(prefix="dvbp-", dir="/tmp"))  # short: libvirt sockets
        self.procs: list[subprocess.Popen[str]] = []
        self.lab_env: dict[str, str] | None = None
        self.migrate = ""
        self.console = ""
        self.url = ""
        self.cert = ""
        self.env = {**os.environ, "DEBVISOR_STATE_DIR": str(self.dir / "state"),
                    "DEBVISOR_CONFIG": str(self.dir / "debvisor.toml")}
        self.env.pop("DEBVISOR_FAULTS", None)

    def _dv(self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "debvisor_core", *args], input=stdin,
                              capture_output=True, text=True, env=env or self.env, timeout=timeout)

    def _inventory(self) -> dict[str, Any]:
        """Two test-driver nodes holding ``vms`` VMs between them (real libvirt calls)."""
        nodes: dict[str, Any] = {}
        per = [self.vms - self.vms // 2, self.vms // 2]
        k = 0
        for n, count in zip(("syn-a", "syn-b"), per, strict=True):
            lines = ["<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"]
            for _ in range(count):
                meta = ("" if k % 2 else
                        "<metadata><dv:vm xmlns:dv='https://debvisor.org/xmlns/hv/1' "
                        f"registered='yes'><dv:owner>team{k % 7}</dv:owner><dv:tags><dv:tag>"
                        f"t{k % 5}</dv:tag></dv:tags></dv:vm></metadata>")
                lines.append(f"<domain type='test'><name>syn{k:05d}</name>"
                             f"<uuid>{uuid.UUID(int=k + 1)}</uuid><memory>524288</memory>"
                             f"<vcpu>1</vcpu><os><type>hvm</type></os>{meta}"
                             f"<test:runstate>{5 if k % 3 == 0 else 1}</test:runstate></domain>")
                k += 1
            lines.append("</node>")
            f = self.dir / f"{n}.xml"
            f.write_text("\n".join(lines))
            nodes[n] = {"uri": f"test://{f}"}
        return nodes

    def _lab(self) -> dict[str, Any]:
        """The libvirt lab's nodes, with a guest to migrate ({} when it cannot start)."""
        import tomllib

        env = {**os.environ, "DEBVISOR_LAB_DIR": str(self.dir / "lab"),
               "DEBVISOR_STATE_DIR": str(self.dir / "lab-state")}
        env.pop("DEBVISOR_CONFIG", None)
        res = self._dv("--json", "lab", "up", "libvirt", env=env)
        report = json.loads(res.stdout or "{}").get("services", {}).get("libvirt", {})
        if res.returncode != 0 or report.get("status") == "skipped":
            print(f"  (no libvirt lab: {report.get('reason') or res.stderr.strip()[-300:]}; "
                  "no progress latency)")
            return {}
        self.lab_env = env
        conf = tomllib.loads((self.dir / "lab" / "debvisor.toml").read_text())
        from debvisor_libvirt import lab
        from debvisor_libvirt.nodes import lv

        g = conf["hv"]["guest"]
        log = self.dir / "guest.log"
        lab.define_guest(lv().open(conf["hv"]["nodes"]["node1"]["uri"]), self.GUEST,
                         memory_mib=128, kernel=g["kernel"], initrd=g["initrd"], console_log=log,
                         vnc_password="initial")  # QEMU takes the tickets' passwords only then
        lab.wait_console(log, timeout=120)
        self.migrate = f"{self.GUEST} node2"
        self.console = self.GUEST
        nodes = dict(conf["hv"]["nodes"])
        # the panel's console reaches each node's VNC inside its network namespace
        from debvisor_core.panel.lab import NETNS_ENV

        netns = {n: v["netns"] for n, v in nodes.items() if isinstance(v, dict) and v.get("netns")}
        if netns:
            self.env[NETNS_ENV] = json.dumps(netns, sort_keys=True)
        return nodes

    def _serve(self, *args: str) -> str:
        """Start ``debvisor ARGS``; the address of its READY line."""
        log = (self.dir / f"{args[0]}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "debvisor_core", *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=log, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"bench_panel: `debvisor {' '.join(args)}` did not start: "
                             f"{(self.dir / f'{args[0]}.log').read_text()[-2000:]}")
        return line.split()[1]

    def start(self) -> None:
        from debvisor_core.lab.manager import to_toml
        from debvisor_core.rpcd import pki

        d = self.dir / "pki"
        pki.init(d)
        pki.issue(d, "node", server=True, ips=("127.0.0.1",))
        pki.issue(d, "web", server=True, ips=("127.0.0.1",))
        pki.issue(d, "panel", kind="proxy")
        nodes = self._inventory()
        if self.want_lab:
            nodes.update(self._lab())
        conf: dict[str, dict[str, Any]] = {"hv": {"nodes": nodes},
                "rpcd": {"listen": "127.0.0.1:0", "ca": f"{d}/ca.pem", "cert": f"{d}/node.pem",
                         "key": f"{d}/node.key", "proxies": ["panel"], "rate": 10000.0,
                         "burst": 10000.0},
                "panel": {"listen": "127.0.0.1:0", "tls_cert": f"{d}/web.pem",
                          "tls_key": f"{d}/web.key", "ca": f"{d}/ca.pem",
                          "cert": f"{d}/panel.pem", "key": f"{d}/panel.key"}}
        (self.dir / "state").mkdir()
        Path(self.env["DEBVISOR_CONFIG"]).write_text(to_toml(conf))
        res = self._dv("rpcd", "user", "add", self.USER, "--role", "operator",
                       "--password-file", "-", stdin=self.PASSWORD + "\n")
        if res.returncode:
            raise SystemExit(f"bench_panel: rpcd user add: {res.stderr}")
        address = self._serve("rpcd", "serve")
        conf["panel"]["rpcd_address"] = address
        Path(self.env["DEBVISOR_CONFIG"]).write_text(to_toml(conf))
        self.url = self._serve("panel", "serve")
        self.cert = f"{d}/web.pem"

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.lab_env is not None:
            try:
                import tomllib

                from debvisor_libvirt.nodes import lv

                conf = tomllib.loads((self.dir / "lab" / "debvisor.toml").read_text())
                for n in conf["hv"]["nodes"].values():
                    try:
                        dom = lv().open(n["uri"]).lookupByName(self.GUEST)
                    except Exception:  # noqa: BLE001 - not on that node
                        continue
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
            finally:
                self._dv("lab", "down", "libvirt", env=self.lab_env)
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> int:
    base = os.environ.get("DEBVISOR_PANEL_URL", "").strip()
    if not base:
        print("skipped: no panel (set DEBVISOR_PANEL_URL, or DEBVISOR_PANEL_URL=stack)")
        return 0
    chromium = Path(os.environ.get("DEBVISOR_CHROMIUM", "/usr/bin/chromium"))
    if not chromium.exists():
        print(f"bench_panel: no chromium at {chromium} (apt-get install chromium)", file=sys.stderr)
        return 2
    if base != "stack":
        return measure(base, chromium)
    stack = Stack(int(os.environ.get("BENCH_VMS", str(VM_LIST_SIZE))),
                  os.environ.get("BENCH_PANEL_LAB", "1") != "0")
    t0 = time.monotonic()
    try:
        stack.start()
        print(f"stack: rpcd and the panel at {stack.url}, {stack.vms} synthetic VMs (libvirt test "
              f"driver){', the libvirt lab and a guest' if stack.migrate else ''}; "
              f"started in {time.monotonic() - t0:.1f} s")
        os.environ.update(DEBVISOR_PANEL_USER=Stack.USER, DEBVISOR_PANEL_PASSWORD=Stack.PASSWORD,
                          DEBVISOR_PANEL_CERT=stack.cert)
        os.environ.setdefault("DEBVISOR_PANEL_PAGES", "/,/vms,/ops,/audit")
        if stack.migrate:
            os.environ.setdefault("BENCH_PANEL_MIGRATE", stack.migrate)
        if stack.console:
            os.environ.setdefault("BENCH_PANEL_CONSOLE", stack.console)
        return measure(stack.url, chromium)
    finally:
        stack.stop()


def measure(base: str, chromium: Path) -> int:
    from importlib.metadata import version

    from playwright.sync_api import sync_playwright

    pages = [p.strip() for p in os.environ.get("DEBVISOR_PANEL_PAGES", "/").split(",") if p.strip()]
    runs = int(os.environ.get("BENCH_FCP_RUNS", "5"))
    list_runs = int(os.environ.get("BENCH_VM_LIST_RUNS", "40"))
    migrate = os.environ.get("BENCH_PANEL_MIGRATE", "").strip()
    console_vm = os.environ.get("BENCH_PANEL_CONSOLE", "").strip()
    console_runs = int(os.environ.get("BENCH_CONSOLE_RUNS", "5"))
    user = os.environ.get("DEBVISOR_PANEL_USER", "")
    args = ["--no-sandbox"]
    cert = os.environ.get("DEBVISOR_PANEL_CERT")
    if cert:
        args.append(f"--ignore-certificate-errors-spki-list={spki_pin(Path(cert).read_bytes())}")

    results: list[PageResult] = []
    vm_list: VmListResult | None = None
    console: ConsoleResult | None = None
    ages: list[float] = []
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
        if console_vm and state is not None and console_runs > 0:
            console = measure_console(browser, state, base, console_vm, console_runs)
        if migrate and state is not None:
            ages = measure_progress(browser, state, base, migrate)
        browser.close()
    if user and list_runs > 0:
        vm_list = measure_vm_list(base, cert, user, os.environ.get("DEBVISOR_PANEL_PASSWORD", ""),
                                  list_runs)

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
    if vm_list is not None:
        if vm_list.total >= VM_LIST_SIZE:
            ok = vm_list.p95 <= VM_LIST_BUDGET_MS
            over += not ok
            verdict = "OK" if ok else "OVER"
        else:
            verdict = f"not judged: the target is for {VM_LIST_SIZE} VMs"
        inner = ""
        if vm_list.rpcd_ms:
            inner = (f"; in the panel (Server-Timing) p95 rpcd {percentile(vm_list.rpcd_ms, 95):.0f}"
                     f" ms + render {percentile(vm_list.render_ms, 95):.0f} ms")
        print(f"  /vms with {vm_list.total} VMs ({vm_list.shown} shown): p50 "
              f"{statistics.median(vm_list.ms):.0f} ms, p95 {vm_list.p95:.0f} ms at the client over "
              f"{vm_list.runs} loads{inner} (target p95 <= {VM_LIST_BUDGET_MS:.0f} ms for "
              f"{VM_LIST_SIZE}): {verdict}")
    if console is not None:
        p50 = statistics.median(console.frame_s)
        ok = p50 <= CONSOLE_BUDGET_S
        over += not ok

        def ms(xs: list[float]) -> str:
            return f"{[round(x * 1000) for x in xs]} ms" if xs else "none seen"

        print(f"  console click -> first frame: p50 {p50 * 1000:.0f} ms, max "
              f"{max(console.frame_s) * 1000:.0f} ms of {console.runs} cold clicks "
              f"(target p50 <= {CONSOLE_BUDGET_S * 1000:.0f} ms): {'OK' if ok else 'OVER'}; "
              f"connect {ms(console.connect_s)}, first frame {ms(console.frame_s)}, first "
              f"non-black pixel {ms(console.lit_s)}")
    if migrate:
        if ages:
            worst = max(ages)
            ok = worst <= PROGRESS_BUDGET_S
            over += not ok
            print(f"  progress event in rpcd -> on screen: {len(ages)} points, p50 "
                  f"{statistics.median(ages) * 1000:.0f} ms, p95 {percentile(ages, 95) * 1000:.0f} "
                  f"ms, max {worst * 1000:.0f} ms (target <= {PROGRESS_BUDGET_S * 1000:.0f} ms): "
                  f"{'OK' if ok else 'OVER'}")
        else:
            over += 1
            print("  progress event in rpcd -> on screen: no progress point reached the screen")
    print(f"  {over} figure(s) over target ({time.monotonic() - t0:.1f} s)")
    out = os.environ.get("BENCH_JSON")
    if out:
        Path(out).write_text(json.dumps({
            "pages": [{**asdict(r), "fcp_p50_ms": r.fcp_p50, "budget_bytes": r.budget}
                      for r in results],
            "vm_list": None if vm_list is None else {**asdict(vm_list), "p95_ms": vm_list.p95},
            "console": None if console is None else asdict(console),
            "progress_latency_s": ages}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
