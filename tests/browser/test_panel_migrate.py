"""Migrate a lab VM from the browser: Debian's chromium, the panel over HTTPS (uvicorn in a
thread), a real debvisor-rpcd, the libvirt lab's two nodes and the suite's TCG guest (conftest.py
``guest``, which the console tests use before: one boot for the whole suite).

The drawer's percentage rises and shows an ETA while the migration runs (a bandwidth cap
makes it last a few seconds); the end state is what libvirt says on both nodes; the audit
log names the user through the panel; Abort leaves the VM running on the source. The
latency from a progress event's emission (its ``t``, stamped by the action in rpcd's child
process) to the drawer on screen is measured in the page by a MutationObserver.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from panellab import VM

pytestmark = [pytest.mark.lab, pytest.mark.root]
PASSWORD = "alice has a long password"
#: the page records how old each progress point is when it is on screen (CDP-injected, so
#: the panel's CSP, which forbids inline script, does not apply to it)
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


def _labworld() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "panel"))
    import labworld

    return labworld


@pytest.fixture(scope="module")
def lab(dv_lab: Any, guest: Any, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[Any, Any]]:
    """An rpcd of its own (user alice) over the libvirt lab's nodes; the VM is the suite's
    console guest (conftest.py ``guest``: one TCG guest for the whole browser suite)."""
    lw = _labworld()
    guests = lw.Guests(dv_lab.require("libvirt"))
    world = lw.start(tmp_path_factory.mktemp("browsermig"), {"alice": ("operator", PASSWORD)},
                     base=guests.config_path)
    try:
        guest.ready()
        yield world, guests
    finally:
        world.stop()


@pytest.fixture
def panel(lab: tuple[Any, Any], https_server: Any, server_cert: Any,
          trusted_context: Any) -> Iterator[tuple[str, Any]]:
    from debvisor_core.panel.app import create_app

    world, _ = lab
    url = https_server(create_app(world.settings(public_origin="")), server_cert)
    ctx = trusted_context(server_cert.cert, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.add_init_script(LATENCY_PROBE)
    page.goto(url + "/login")
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    yield url, page


def _pct(page: Any) -> float:
    text = page.locator("#task-live [data-role=pct]").inner_text()
    return float(text.split()[0])


def _start_migration(page: Any, url: str, target: str, bandwidth: str, shot: Any,
                     name: str) -> str:
    """From the VM list: Migrate, pick the target, Check (the forecast), Apply; the task id."""
    page.goto(url + "/vms")
    page.locator(f'tr[data-vm="{VM}"] a.act-migrate').click()
    page.check(f"input[name=target][value={target}]")
    page.fill("input[name=bandwidth]", bandwidth)
    page.click("[data-role=check]")
    page.wait_for_selector("#forecast [data-role=downtime]")
    assert re.fullmatch(r"~\d+ ms.*", page.inner_text("#forecast [data-role=downtime]"))
    shot(page, f"{name}-forecast", full_page=True)
    page.click("[data-role=apply]")
    page.wait_for_url(re.compile(r".*/tasks/[0-9a-f]{12}$"))
    return page.url.rsplit("/", 1)[1]


def test_migrate_from_the_browser_then_abort_the_way_back(panel: tuple[str, Any],
                                                          lab: tuple[Any, Any],
                                                          shot: Any) -> None:
    url, page = panel
    world, guests = lab
    assert guests.where(VM) == ["node1"]
    page.goto(url + "/vms")
    shot(page, "vm-list")
    page.locator(f'tr[data-vm="{VM}"] a.act-stop').click()  # a plan, not applied
    page.wait_for_selector("#plan .plan-steps")
    assert f"stop {VM} on node1" in page.inner_text("#plan")
    assert page.locator("[data-role=apply]").is_visible()
    shot(page, "stop-plan")
    task = _start_migration(page, url, "node2", "24MiB/s", shot, "there")
    # the drawer: the percentage rises, an ETA is shown
    page.wait_for_selector("#task-live [data-role=pct]", timeout=30_000)
    seen = [_pct(page)]
    eta = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and page.locator(
            '#task-live article[data-status="running"]').count():
        seen.append(_pct(page))
        text = page.locator("#task-live [data-role=eta]")
        if text.count() and re.match(r"\d", text.inner_text()):
            eta = text.inner_text()
        if len(set(seen)) >= 3 and eta:
            break
        page.wait_for_timeout(250)
    shot(page, "drawer-running")
    assert len(set(seen)) >= 3 and seen == sorted(seen), seen
    assert re.fullmatch(r"\d+(\.\d)?s|\d+m\d\ds", eta), eta
    page.wait_for_selector('#task-live article[data-status="succeeded"]', timeout=60_000)
    assert "100 %" in page.inner_text("#task-live [data-role=pct]")
    assert "Now on node2" in page.inner_text("#task-live [data-role=migrated]")
    assert "validating " + VM in page.inner_text("#task-live")
    shot(page, "drawer-succeeded", full_page=True)
    # what libvirt says on both nodes
    assert guests.state(VM) == {"node2": "running"}
    # the audit log names the user, through the panel
    href = page.locator("#task-live a[href^='/ops/']").first.get_attribute("href")
    op_id = str(href).rsplit("/", 1)[1]
    audit = [a for a in world.audit() if a.get("operation") == op_id]
    assert [(a["result"], a["caller"]) for a in audit] == \
        [("started", "alice via=panel"), ("succeeded", "alice via=panel")], audit
    latency = page.evaluate("window.__latency")
    # and back, aborted halfway: the VM keeps running where it was
    back = _start_migration(page, url, "node1", "8MiB/s", shot, "back")
    assert back != task
    page.wait_for_function(
        "() => { const e = document.querySelector('#task-live [data-role=pct]');"
        " return e && parseFloat(e.textContent) >= 5; }", timeout=30_000)
    latency += page.evaluate("window.__latency")
    page.once("dialog", lambda d: d.accept())
    page.click("#task-live [data-role=abort]")
    page.wait_for_selector('#task-live article[data-status="rolled-back"]', timeout=60_000)
    assert "aborted by alice" in page.inner_text("#task-live [data-role=error]")
    shot(page, "drawer-aborted", full_page=True)
    assert guests.state(VM) == {"node2": "running"}
    page.goto(url + "/")
    shot(page, "overview")
    # progress event emitted in rpcd's child -> on screen
    assert len(latency) >= 5, latency
    p50, worst = statistics.median(latency), max(latency)
    print(f"progress event -> screen: {len(latency)} points, p50 {p50 * 1000:.0f} ms, "
          f"max {worst * 1000:.0f} ms")
    assert worst <= 1.0, latency
