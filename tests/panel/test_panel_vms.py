"""The panel's VM pages against a real debvisor-rpcd and the libvirt lab (two libvirtd nodes,
a TCG guest): the list and its filters, plan-then-apply (the action's dry run through rpcd,
then Apply as a live task), migrate with its forecast, the live-task hub relayed over the
tab's one event stream (resumed with Last-Event-ID), Abort (the gRPC call cancelled, rpcd
stops the action and the journal says rolled back), and rpcd refusing a viewer's forged
POST. Pages are fetched with Starlette's TestClient."""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from labworld import ORIGIN, Guests, RpcdWorld, start

from debvisor_core.panel.app import create_app
from debvisor_core.panel.live import Task
from debvisor_core.panel.rpc import Running

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = [pytest.mark.lab, pytest.mark.root]
USERS = {"alice": ("operator", "alice has a long password"),
         "bob": ("viewer", "bob has another long one")}
VM = "pnlvm1"


@pytest.fixture(scope="module")
def guests(dv_lab: Any) -> Guests:
    return Guests(dv_lab.require("libvirt"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, guests: Guests) -> Iterator[RpcdWorld]:
    w = start(tmp_path_factory.mktemp("panelvms"), USERS, base=guests.config_path)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def guest(guests: Guests, world: RpcdWorld) -> Iterator[Path]:
    log = guests.boot(VM, "node1")
    res = world.dv("hv", "register", VM, "--owner", "ops-team", "--role", "web", "--tags",
                   "prod,eu", "--yes")
    assert res.returncode == 0, res.stderr
    yield log
    guests.remove(VM)


@pytest.fixture
def make_client(world: RpcdWorld) -> Iterator[Callable[..., TestClient]]:
    made: list[TestClient] = []

    def make(**over: Any) -> TestClient:
        settings = world.settings(**{"heartbeat": 0.05, "events_poll": 0.05,
                                     "events_max": 0.3, **over})
        c = TestClient(create_app(settings), base_url=ORIGIN, headers={"origin": ORIGIN},
                       follow_redirects=False)
        c.__enter__()
        made.append(c)
        return c

    yield make
    for c in made:
        c.__exit__(None, None, None)


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:2000]
    return m.group(1)


def logged_in(c: TestClient, user: str = "alice") -> str:
    page = c.get("/login")
    r = c.post("/login", data={"user": user, "password": USERS[user][1],
                               "csrf": _csrf(page.text)})
    assert r.status_code == 303, r.text
    return _csrf(c.get("/ops").text)


def _task(c: TestClient, r: httpx.Response) -> Task:
    assert r.status_code == 303, r.text[:3000]
    m = re.fullmatch(r"/tasks/([0-9a-f]{12})", r.headers["location"])
    assert m, r.headers["location"]
    task = c.app.state.panel.hub.get(m.group(1))  # type: ignore[attr-defined]
    assert task is not None
    return task  # type: ignore[no-any-return]


def _wait(task: Task, timeout: float = 90) -> Task:
    deadline = time.monotonic() + timeout
    while task.active:
        assert time.monotonic() < deadline, task.view()
        time.sleep(0.1)
    return task


def _sse(text: str) -> list[dict[str, str]]:
    """The messages of an event stream's body: [{id, event, data}]."""
    out = []
    for block in text.split("\n\n"):
        msg: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            if key in ("id", "event"):
                msg[key] = value
            elif key == "data":
                msg["data"] = msg.get("data", "") + value + "\n"
        if "event" in msg:
            out.append(msg)
    return out


# -- the list --------------------------------------------------------------------------------
def test_the_list_filters_by_state_node_owner_and_tag(make_client: Callable[..., TestClient],
                                                      guest: Path, guests: Guests) -> None:
    c = make_client()
    logged_in(c)
    page = c.get("/vms")
    assert page.status_code == 200, page.text
    assert re.search(r"rpcd;dur=[\d.]+, render;dur=[\d.]+", page.headers["server-timing"])
    row = re.search(rf'<tr class="state-running" data-vm="{VM}">(.*?)</tr>', page.text, re.S)
    assert row, page.text
    cells = row.group(1)
    assert "<td>node1</td>" in cells and "<td>ops-team</td>" in cells
    assert "<td>prod, eu</td>" in cells
    # the running VM's actions, each shown because rpcd says alice may run it
    for href in (f"/vms/{VM}/stop?node=node1", f"/vms/{VM}/snapshot?node=node1",
                 f"/vms/{VM}/migrate", f"/console/{VM}?mode=view",
                 f"/console/{VM}?mode=control"):
        assert f'href="{href}"' in cells, href
    assert f"/vms/{VM}/start" not in cells  # it runs
    for query, shown in (({"owner": "ops-team"}, True), ({"owner": "nobody"}, False),
                         ({"tag": "eu"}, True), ({"tag": "us"}, False),
                         ({"state": "running"}, True), ({"state": "stopped"}, False),
                         ({"node": "node1"}, True), ({"node": "node2"}, False),
                         ({"q": VM[:4]}, True), ({"q": "zzz"}, False)):
        r = c.get("/vms", params=query)
        assert r.status_code == 200
        assert (f'data-vm="{VM}"' in r.text) is shown, query
    assert c.get("/vms", params={"node": "../etc"}).status_code == 400
    # a viewer sees the VM, its Watch link, and no button that changes anything
    v = make_client()
    logged_in(v, "bob")
    cells = re.search(rf'data-vm="{VM}">(.*?)</tr>', v.get("/vms").text, re.S)
    assert cells and f"/console/{VM}?mode=view" in cells.group(1)
    for verb in ("stop", "snapshot", "migrate", "start"):
        assert f"/vms/{VM}/{verb}" not in cells.group(1), verb
    assert "mode=control" not in cells.group(1)


# -- plan, then apply ------------------------------------------------------------------------
def test_a_refused_preflight_shows_why_and_offers_no_apply(
        make_client: Callable[..., TestClient], guest: Path) -> None:
    c = make_client()
    logged_in(c)
    page = c.get(f"/vms/{VM}/snapshot", params={"node": "node1", "name": "before"})
    assert page.status_code == 200, page.text
    assert re.search(r'data-level="error"><span class="level">error</span> VM '
                     rf"{VM} has no writable disk", page.text), page.text
    assert 'data-role="apply"' not in page.text and "The preflight refuses it" in page.text
    assert c.get(f"/vms/{VM}/snapshot", params={"name": "a b"}).status_code == 400
    assert c.get(f"/vms/{VM}/reboot").status_code == 404
    assert c.get("/vms/-bad/stop").status_code == 404


def test_rpcd_refuses_a_viewers_forged_apply(make_client: Callable[..., TestClient],
                                            guest: Path, guests: Guests,
                                            world: RpcdWorld) -> None:
    c = make_client()
    csrf = logged_in(c, "bob")
    assert 'data-role="apply"' not in c.get(f"/vms/{VM}/stop").text
    for path, data in ((f"/vms/{VM}/stop", {"how": "poweroff"}),
                       (f"/vms/{VM}/migrate", {"target": "node2"})):
        r = c.post(path, data={"csrf": csrf, **data})
        assert r.status_code == 403, r.text
        assert "refused by rpcd: bob may not run hv." in r.text
    assert guests.where(VM) == ["node1"]
    denied = [x for x in world.calls() if x.get("code") == "PERMISSION_DENIED"]
    assert denied[-1]["caller"] == "bob via=panel" and denied[-1]["method"].endswith("/Invoke")


# -- migrate ---------------------------------------------------------------------------------
def test_migrate_forecast_live_progress_over_sse_then_abort(
        make_client: Callable[..., TestClient], guest: Path, guests: Guests,
        world: RpcdWorld) -> None:
    c = make_client(events_max=4.0)  # each read of /events lasts 4 s
    csrf = logged_in(c)
    src = guests.where(VM)[0]
    dst = "node2" if src == "node1" else "node1"
    pick = c.get(f"/vms/{VM}/migrate")
    assert pick.status_code == 200
    assert re.search(rf'name="target" value="{src}"[^>]* disabled', pick.text)  # where it runs
    assert re.search(rf'name="target" value="{dst}">', pick.text)
    checked = c.get(f"/vms/{VM}/migrate", params={"target": dst, "bandwidth": "4MiB/s"})
    assert checked.status_code == 200, checked.text
    assert re.search(r'data-role="downtime">~\d+ ms', checked.text), checked.text
    assert re.search(r'data-role="total">~\d', checked.text)
    assert "estimate for " + VM in checked.text and 'data-role="apply"' in checked.text
    assert f"live-migrate {VM}: {src} -&gt; {dst} (bandwidth 4 MiB/s" in checked.text
    assert guests.where(VM) == [src]
    r = c.post(f"/vms/{VM}/migrate", data={"csrf": csrf, "target": dst, "bandwidth": "4MiB/s"})
    task = _task(c, r)
    deadline = time.monotonic() + 60
    while not (task.progress and (task.pct or 0) > 3):
        assert task.active and time.monotonic() < deadline, task.view()
        time.sleep(0.1)
    # the tab's one stream carries the task: the drawer (tasks) and its card (task-ID)
    body = c.get("/events").text
    msgs = _sse(body)
    cards = [m for m in msgs if m["event"] == f"task-{task.id}"]
    pcts = [float(x) for m in cards for x in re.findall(r'data-role="pct">([\d.]+) %', m["data"])]
    assert len(pcts) >= 3 and pcts == sorted(pcts) and pcts[-1] > pcts[0], pcts
    assert re.search(r'data-role="eta">\d', cards[-1]["data"]), cards[-1]["data"]
    assert 'data-role="dirty">' in cards[-1]["data"] and 'data-role="pass">1<' in cards[-1]["data"]
    ids = [int(m["id"]) for m in msgs if "id" in m]
    assert ids == sorted(ids)
    assert any(m["event"] == "tasks" and f'data-task="{task.id}"' in m["data"] for m in msgs)
    # a reconnect with the last id resumes: only what changed since
    last = ids[-1]
    again = _sse(c.get("/events", headers={"last-event-id": str(last)}).text)
    later = [int(m["id"]) for m in again if "id" in m]
    assert later and min(later) > last, (last, later[:5])
    # Abort: the call is cancelled, rpcd stops `hv migrate` (SIGTERM), the journal rolls back
    assert c.post(f"/tasks/{task.id}/abort").status_code == 403  # CSRF
    r = c.post(f"/tasks/{task.id}/abort", data={"csrf": csrf})
    assert r.status_code == 303
    assert c.post(f"/tasks/{task.id}/abort", data={"csrf": csrf}).status_code == 409
    _wait(task, 120)
    assert task.status == "rolled-back", task.view()
    assert task.aborted_by == "alice" and "aborted by alice" in task.error
    assert world.op(task.op_id)["status"] == "rolled-back"
    assert guests.where(VM) == [src] and dst not in guests.state(VM)
    rpcd_log = world.root / "rpcd.log"
    assert "hv.migrate: the call ended (cancelled or deadline); stopping it" in rpcd_log.read_text()
    deadline = time.monotonic() + 30  # rpcd read the stopped action to its end
    while "hv.migrate: the stopped action ended with exit code 4" not in rpcd_log.read_text():
        assert time.monotonic() < deadline, rpcd_log.read_text()[-2000:]
        time.sleep(0.2)
    page = c.get(f"/tasks/{task.id}")
    assert 'data-status="rolled-back"' in page.text and "aborted by alice" in page.text


def test_migrate_to_the_end_with_validation_and_the_overview(
        make_client: Callable[..., TestClient], guest: Path, guests: Guests,
        world: RpcdWorld) -> None:
    c = make_client()
    csrf = logged_in(c)
    src = guests.where(VM)[0]
    dst = "node2" if src == "node1" else "node1"
    task = _task(c, c.post(f"/vms/{VM}/migrate", data={"csrf": csrf, "target": dst,
                                                        "bandwidth": "16MiB/s"}))
    deadline = time.monotonic() + 60
    while not task.progress:
        assert task.active and time.monotonic() < deadline, task.view()
        time.sleep(0.1)
    home = c.get("/")  # the overview lists it live, with its percentage and ETA
    assert home.status_code == 200 and f'data-task="{task.id}"' in home.text
    assert 'sse-swap="tasks"' in home.text and 'id="drawer"' not in home.text
    assert f'href="/tasks/{task.id}"' in home.text
    _wait(task)
    assert task.status == "succeeded", task.view()
    view = task.view()
    assert view["pct"] == 100.0 and view["migration"]["target"] == dst
    lines = [ln["message"] for ln in view["lines"]]
    assert any(ln.startswith(f"validating {VM}: running on {dst}") for ln in lines), lines
    assert guests.where(VM) == [dst] and src not in guests.state(VM)
    audit = [a for a in world.audit() if a.get("operation") == task.op_id]
    assert [a["result"] for a in audit] == ["started", "succeeded"]
    assert {a["caller"] for a in audit} == {"alice via=panel"}
    page = c.get("/vms")  # the drawer of every other page shows how it ended
    assert re.search(rf'id="drawer"[^>]*>.*data-task="{task.id}" data-status="succeeded"',
                     page.text, re.S)
    assert c.post(f"/tasks/{task.id}/dismiss", data={"csrf": csrf}).status_code == 303
    assert f'data-task="{task.id}"' not in c.get("/vms").text


# -- start and stop (last: the guest reboots) ----------------------------------------------
def test_stop_and_start_show_the_plan_then_apply_as_a_task(
        make_client: Callable[..., TestClient], guest: Path, guests: Guests,
        world: RpcdWorld) -> None:
    c = make_client()
    csrf = logged_in(c)
    (node,) = guests.where(VM)
    plan = c.get(f"/vms/{VM}/stop", params={"node": node, "how": "poweroff"})
    assert plan.status_code == 200, plan.text
    assert f"Plan: power off {VM} on {node}" in plan.text
    assert f"stop {VM} on {node}: power off at once" in plan.text
    assert 'data-role="apply"' in plan.text and 'name="how" value="poweroff"' in plan.text
    assert guests.where(VM) == [node]  # the plan changed nothing
    # Apply needs the session's CSRF token
    r = c.post(f"/vms/{VM}/stop", data={"how": "poweroff", "node": node})
    assert r.status_code == 403 and guests.where(VM) == [node]
    task = _wait(_task(c, c.post(f"/vms/{VM}/stop", data={"csrf": csrf, "how": "poweroff",
                                                           "node": node})))
    assert task.status == "succeeded", task.view()
    assert guests.state(VM) == {node: "shutoff"}
    page = c.get(f"/tasks/{task.id}")
    assert page.status_code == 200 and "succeeded" in page.text and task.op_id in page.text
    rec = [a for a in world.audit() if a.get("operation") == task.op_id]
    assert rec and {a["caller"] for a in rec} == {"alice via=panel"}, rec
    # the list now offers Start (and no Stop) for it
    cells = re.search(rf'data-vm="{VM}">(.*?)</tr>', c.get("/vms").text, re.S)
    assert cells and f"/vms/{VM}/start?node={node}" in cells.group(1)
    assert f"/vms/{VM}/stop" not in cells.group(1)
    plan = c.get(f"/vms/{VM}/start", params={"node": node})
    assert f"start {VM} on {node} (boot it, or resume it if paused)" in plan.text
    task = _wait(_task(c, c.post(f"/vms/{VM}/start", data={"csrf": csrf, "node": node})))
    assert task.status == "succeeded", task.view()
    assert guests.where(VM) == [node]


# -- the hub, without the lab's timing ---------------------------------------------------------
class _Scripted:
    """An rpcd client whose started actions emit the events a test feeds them."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.feeds: list[list[dict[str, Any]]] = []
        self.go = threading.Event()

    def start(self, token: str, path: str, params_json: str = "{}", **kw: Any) -> Running:
        events = self.feeds.pop(0)
        go = self.go

        def gen() -> Iterator[dict[str, Any]]:
            for ev in events:
                go.wait(10)
                yield ev

        class Call:
            def initial_metadata(self) -> Any:
                return (("x-debvisor-admitted", "1"),)

            def cancel(self) -> bool:
                return True

            def cancelled(self) -> bool:
                return False

        return Running(Call(), gen(), path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_the_hub_keeps_tasks_per_user_and_the_stream_resumes(
        make_client: Callable[..., TestClient], world: RpcdWorld) -> None:
    c = make_client()
    logged_in(c)
    other = make_client()
    logged_in(other, "bob")
    hub = c.app.state.panel.hub  # type: ignore[attr-defined]
    scripted = _Scripted(hub.rpc)
    hub.rpc = scripted
    events = [{"event": "log", "level": "info", "message": "operation 20260101-000000-abcdef: x",
               "t": time.time()},
              {"event": "step", "index": 1, "total": 1, "description": "s1", "status": "running"},
              *[{"event": "progress", "label": "work", "done": d, "total": 100, "eta": 9 - d / 10,
                 "rate": 1e6, "t": time.time()} for d in (10, 20, 30)],
              {"event": "step", "index": 1, "total": 1, "description": "s1", "status": "done"},
              {"event": "result", "result": {"id": "20260101-000000-abcdef",
                                             "status": "succeeded"}},
              {"event": "exit", "code": 0}]
    scripted.feeds.append(events)
    before = hub.seq
    task = hub.start("alice", "tok", "hv.start", {"vm": "x"}, "start x", vm="x")
    first = hub.seq
    assert first > before and task.seq == first and task.status == "starting"
    fresh = _sse(c.get("/events").text)
    assert [m["event"] for m in fresh[:2]] == ["tasks", f"task-{task.id}"]
    assert int(fresh[0]["id"]) == first
    # nothing new since then: a reconnect with that id gets no task event
    assert not [m for m in _sse(c.get("/events", headers={"last-event-id": str(first)}).text)
                if m["event"].startswith("task")]
    scripted.go.set()
    _wait(task, 10)
    assert task.status == "succeeded" and task.op_id == "20260101-000000-abcdef"
    resumed = _sse(c.get("/events", headers={"last-event-id": str(first)}).text)
    ids = [int(m["id"]) for m in resumed if "id" in m]
    assert ids and min(ids) > first and max(ids) == hub.seq
    cards = [m for m in resumed if m["event"] == f"task-{task.id}"]
    assert len(cards) == 1 and 'data-status="succeeded"' in cards[0]["data"]  # coalesced
    # bob sees none of alice's tasks, and cannot abort or look at them
    assert not [m for m in _sse(other.get("/events").text) if m["event"].startswith("task")]
    assert other.get(f"/tasks/{task.id}").status_code == 404
    assert hub.abort(task.id, "bob") == "no such task"
    # an id from another panel process (larger than this hub's) is a fresh start
    huge = _sse(c.get("/events", headers={"last-event-id": str(hub.seq + 10**6)}).text)
    assert [m["event"] for m in huge[:1]] == ["tasks"]
