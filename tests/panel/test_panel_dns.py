"""The panel's DNS page against a real debvisor-rpcd and the DNS lab (a BIND9 primary and
secondary on 127.0.0.1, signed zones, TSIG): the page is built from the dns plugin's
declared actions, and the rpcd here runs without the ceph plugin (DEBVISOR_DISABLE_PLUGINS),
so the Ceph page is absent. What the servers serve is asked of them directly (dnspython),
never through the plugin or the panel."""

from __future__ import annotations

import json
import re
import time
import tomllib
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from labworld import RpcdWorld, clients, csrf_of, start, task_of

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = [pytest.mark.lab, pytest.mark.root]
USERS = {"alice": ("operator", "alice has a long password"),
         "bob": ("viewer", "bob has another long one")}
ZONE = "lab.debvisor.test"


class Servers:
    """The lab's two BIND servers, asked directly."""

    def __init__(self, config: dict[str, Any]) -> None:
        lab = config["dns"]["lab"]
        self.addrs = [lab["primary"], lab["secondary"]]

    def serial(self, addr: str, zone: str = ZONE) -> int:
        import dns.message
        import dns.query

        host, _, port = addr.rpartition(":")
        r = dns.query.udp(dns.message.make_query(zone + ".", "SOA"), host, port=int(port),
                          timeout=2)
        return int(r.answer[0][0].serial)

    def served(self, addr: str, name: str, rdtype: str = "A") -> tuple[int | None, list[str]]:
        import dns.message
        import dns.query

        host, _, port = addr.rpartition(":")
        fqdn = f"{name}.{ZONE}."
        r = dns.query.udp(dns.message.make_query(fqdn, rdtype), host, port=int(port), timeout=2)
        for rrset in r.answer:
            if rrset.name.to_text() == fqdn and dns.rdatatype.to_text(rrset.rdtype) == rdtype:
                return rrset.ttl, sorted(rd.to_text() for rd in rrset)
        return None, []

    def both(self, name: str, rdtype: str = "A") -> list[tuple[int | None, list[str]]]:
        return [self.served(a, name, rdtype) for a in self.addrs]

    def settle(self, name: str, want: tuple[int | None, list[str]]) -> None:
        deadline = time.monotonic() + 10
        while (got := self.both(name)) != [want, want]:
            assert time.monotonic() < deadline, f"{name} never settled on {want}: {got}"
            time.sleep(0.01)


@pytest.fixture(scope="module")
def lab_config(dv_lab: Any) -> Path:
    pytest.importorskip("dns.query", reason="dnspython asks the servers")
    return Path(dv_lab.require("dns"))


@pytest.fixture(scope="module")
def servers(lab_config: Path) -> Servers:
    import dns.rdatatype  # noqa: F401 - Servers.served names types with it

    return Servers(tomllib.loads(lab_config.read_text()))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, lab_config: Path) -> Iterator[RpcdWorld]:
    w = start(tmp_path_factory.mktemp("paneldns"), USERS, base=lab_config,
              extra={"dns": {"timeout": 1.5, "update_timeout": 2.0, "propagation_timeout": 10}},
              env={"DEBVISOR_DISABLE_PLUGINS": "ceph"})
    yield w
    w.stop()


@pytest.fixture
def make_client(world: RpcdWorld) -> Iterator[Callable[..., TestClient]]:
    yield from clients(world, USERS)


def test_zones_and_records_from_every_server_and_no_ceph_page(
        make_client: Callable[..., TestClient], servers: Servers) -> None:
    c = make_client("bob")  # reading needs no more than a viewer
    page = c.get("/dns")
    assert page.status_code == 200, page.text
    nav = page.text.split("<nav>")[1].split("</nav>")[0]
    assert 'href="/dns"' in nav and 'href="/ceph"' not in nav  # no ceph plugin on this node
    r = c.get("/ceph")
    assert r.status_code == 404 and "the ceph plugin is not installed on this node" in r.text
    # each zone, each server with the serial it serves now (asked directly)
    for zone in (ZONE, "0.77.10.in-addr.arpa"):
        block = re.search(rf'data-zone="{re.escape(zone)}\.">(.*?)</article>', page.text, re.S)
        assert block, page.text
        for addr in servers.addrs:
            row = re.search(rf'data-server="{addr}"><td>{addr}</td><td>(\d+)</td><td>valid</td>',
                            block.group(1))
            assert row, (zone, addr, block.group(1))
            assert int(row.group(1)) <= servers.serial(addr, zone)
    assert 'id="dns-status">Overall: <strong>ok</strong>' in page.text
    # a lookup: the name's records on every server, and whether they agree
    ns1 = c.get("/dns", params={"name": "ns1", "type": "A"})
    assert ns1.status_code == 200
    assert "every server gives the same answer" in ns1.text
    for addr in servers.addrs:
        assert re.search(rf'data-server="{addr}" data-type="A">.*?<td data-role="values">'
                         r"10\.77\.0\.53</td>", ns1.text), ns1.text
    assert servers.both("ns1") == [(300, ["10.77.0.53"])] * 2
    # a viewer reads, and is offered no change
    assert "Your role cannot change DNS records." in ns1.text
    assert 'action="/dns/update"' not in ns1.text
    # bad input: one sentence, nothing asked of rpcd
    bad = c.get("/dns", params={"name": "a b"})
    assert bad.status_code == 400 and "A name is 1-253 letters" in bad.text
    other = c.get("/dns", params={"name": "www.example.org"})
    assert other.status_code == 200 and re.search(r'class="error" role="alert">[^<]*zone',
                                                   other.text), other.text


def test_update_plan_apply_propagation_proof_then_rollback(
        make_client: Callable[..., TestClient], servers: Servers, world: RpcdWorld) -> None:
    c = make_client()
    name = f"pnl{uuid.uuid4().hex[:8]}"
    plan = c.get("/dns/update", params={"name": name, "type": "A", "value": "10.77.0.99",
                                         "ttl": "120"})
    assert plan.status_code == 200, plan.text
    assert f"UPDATE {ZONE}: {name} A: (none) → 10.77.0.99 ttl 120" in plan.text, plan.text
    assert 'data-role="apply"' in plan.text and 'action="/dns/update"' in plan.text
    assert servers.both(name) == [(None, [])] * 2  # a plan changes nothing
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', plan.text))
    assert fields == {"csrf": c.csrf, "name": name, "type": "A",  # type: ignore[attr-defined]
                      "value": "10.77.0.99", "ttl": "120"}
    task = task_of(c, c.post("/dns/update", data=fields))
    assert task.status == "succeeded", task.view()
    assert servers.both(name) == [(120, ["10.77.0.99"])] * 2
    # the proof: every server serves it, with the serial and DNSSEC it was seen with
    card = c.get(f"/tasks/{task.id}").text
    for addr in servers.addrs:
        row = re.search(rf'data-role="served" data-server="{addr}"><td>{ZONE}\.</td>'
                        rf"<td>{addr}</td><td>[\d.]+ ms</td><td>(\d+)</td><td>valid</td>", card)
        assert row, card
        assert int(row.group(1)) == servers.serial(addr)
    assert re.search(rf'data-role="change"><td>{name}\.{ZONE}\.</td><td>A</td><td>\(none\)</td>'
                     r"<td>10\.77\.0\.99 <small>ttl 120</small></td>", card), card
    assert "Served by every authoritative server (2)" in card
    op = task.op_id
    assert world.op(op)["status"] == "succeeded"
    audit = [r for r in world.audit() if r.get("operation") == op]
    assert audit[-1]["result"] == "succeeded" and audit[-1]["caller"] == "alice via=panel"
    # the DNS page lists it; its page rolls it back (re-authentication first)
    assert f'href="/ops/{op}"' in c.get("/dns").text
    r = c.post(f"/ops/{op}/rollback", data={"csrf": c.csrf,  # type: ignore[attr-defined]
                                             "password": USERS["alice"][1]})
    assert r.status_code == 200 and 'id="op-status">rolled-back<' in r.text, r.text
    servers.settle(name, (None, []))
    assert world.op(op)["status"] == "rolled-back"


def test_bad_input_and_a_viewers_forged_update(make_client: Callable[..., TestClient],
                                               servers: Servers, world: RpcdWorld) -> None:
    c = make_client()
    for query, sentence in (
            ({"name": "web 1", "value": "10.0.0.1"}, "A name is 1-253 letters"),
            ({"name": "web1", "value": "10.0.0.1", "type": "MX"}, "The record type must be one"),
            ({"name": "web1", "value": "10.0.0.1", "ttl": "0"}, "The TTL is a number of seconds"),
            ({"name": "web1", "value": "a\nb", "type": "TXT"}, "must not contain control"),
            ({"name": "web1", "value": ""}, "Enter the record&#39;s new value.")):
        r = c.get("/dns/update", params=query)
        assert r.status_code == 400 and sentence in r.text, (query, r.text)
        assert r.text.count('class="error"') == 1
    r = c.post("/dns/update", data={"csrf": c.csrf, "name": "web1"})  # type: ignore[attr-defined]
    assert r.status_code == 400 and "Enter the record" in r.text
    # the action's own refusal (a value that is no address for an A record): in the plan
    refused = c.get("/dns/update", params={"name": "web1", "type": "A", "value": "not-an-ip"})
    assert 'data-role="apply"' not in refused.text
    assert re.search(r'class="error" role="alert">[^<]+', refused.text), refused.text
    # a viewer: the plan is not for them, and rpcd refuses the forged Apply
    v = make_client("bob")
    name = f"pnl{uuid.uuid4().hex[:8]}"
    plan = v.get("/dns/update", params={"name": name, "value": "10.77.0.98"})
    assert plan.status_code == 403 and "refused by rpcd: bob may not run dns.update" in plan.text
    assert 'data-role="apply"' not in plan.text
    r = v.post("/dns/update", data={"csrf": v.csrf, "name": name,  # type: ignore[attr-defined]
                                    "value": "10.77.0.98"})
    assert r.status_code == 403 and "refused by rpcd: bob may not run dns.update" in r.text
    assert servers.both(name) == [(None, [])] * 2
    denied = [x for x in world.calls() if x.get("code") == "PERMISSION_DENIED"]
    assert denied[-1]["caller"] == "bob via=panel"
    assert json.dumps(denied[-1]).count("dns.update") >= 1
    assert csrf_of(v.get("/dns").text)  # refused, not logged out
