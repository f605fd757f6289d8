"""`hv register` announces a VM and the DNS plugin adds its records — across two real
lab services (libvirtd nodes and BIND9), undone with the registration."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from debvisor_core.testing import Lab, Runner, StateDir

pytest.importorskip("dns.resolver", reason="the DNS plugin's dnspython is not installed")
pytest.importorskip("debvisor_libvirt.lab", reason="the hv plugin is not installed")
answers = pytest.importorskip("debvisor_dns.lab", reason="the DNS plugin is not installed").answers

VM = "regdns1"
ADDR = "10.77.0.61"
FQDN = f"{VM}.lab.debvisor.test."


@pytest.fixture
def registered_env(dv_lab: Lab, dv_state: StateDir) -> Iterator[dict[str, str]]:
    dv_lab.require("libvirt")
    cfg_path = dv_lab.require("dns")
    cfg = dv_lab.config()
    dv_state.config({"dns": {"vm_zone": "lab.debvisor.test"}}, base=cfg_path)
    import libvirt
    from debvisor_libvirt import lab

    conn = libvirt.open(cfg["hv"]["nodes"]["node1"]["uri"])
    g = cfg["hv"]["guest"]
    dom = lab.define_guest(conn, VM, kernel=g["kernel"], initrd=g["initrd"], start=False)
    yield {"primary": cfg["dns"]["lab"]["primary"], "secondary": cfg["dns"]["lab"]["secondary"]}
    dom.undefine()
    conn.close()


def test_register_adds_dns_records_and_rollback_removes_them(
        dv: Runner, registered_env: dict[str, str], dv_fault) -> None:
    servers = [registered_env["primary"], registered_env["secondary"]]
    res = dv("--yes", "hv", "register", VM, "--address", ADDR, "--owner", "ops", "--dry-run")
    assert res.code == 0 and FQDN.rstrip(".") in res.stdout, res
    assert all(answers(s, FQDN, "A") == [] for s in servers)

    res = dv("--yes", "--json", "hv", "register", VM, "--address", ADDR, "--owner", "ops")
    assert res.code == 0, res
    for s in servers:  # verified by the operation itself: both servers serve it now
        assert answers(s, FQDN, "A") == [ADDR]
        assert answers(s, "61.0.77.10.in-addr.arpa.", "PTR") == [FQDN]

    res = dv("hv", "register", "--rollback", "--yes")
    assert res.code == 0, res
    for s in servers:
        assert answers(s, FQDN, "A") == [] and answers(s, "61.0.77.10.in-addr.arpa.", "PTR") == []

    # a failure after the DNS change rolls the record back with the registration
    dv_fault("DnsVmPropagation:after")
    res = dv("--yes", "hv", "register", VM, "--address", ADDR)
    assert res.code == 4, res
    assert all(answers(s, FQDN, "A") == [] for s in servers)
    shown = json.loads(dv("ops", "list", "--json").stdout)[0]
    assert shown["kind"] == "hv.register" and shown["status"] == "rolled-back"


def test_unregister_deletes_the_records(dv: Runner, registered_env: dict[str, str]) -> None:
    primary = registered_env["primary"]
    assert dv("--yes", "hv", "register", VM, "--address", ADDR).code == 0
    assert answers(primary, FQDN, "A") == [ADDR]
    res = dv("--yes", "hv", "unregister", VM)
    assert res.code == 0, res
    assert answers(primary, FQDN, "A") == [] and answers(primary, "61.0.77.10.in-addr.arpa.", "PTR") == []
