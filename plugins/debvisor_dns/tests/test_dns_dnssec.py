"""DNSSEC: real signed answers from the lab validate; tampered ones are rejected."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.root]


def _signed_answer(lab: Any, name: str) -> tuple[Any, Any, Any]:
    import dns.message
    import dns.name
    import dns.query
    import dns.rdatatype
    from debvisor_dns import dnssec
    from debvisor_dns.config import ZoneConfig, parse_server

    zone = ZoneConfig(f"{lab.zone}.", [parse_server(lab.primary, "p")], [], None)
    keys = dnssec.zone_keys(zone, lab.key(), timeout=2, mode="require", refresh=True)
    host, port = lab.hostport(lab.secondary)
    q = dns.message.make_query(f"{name}.{lab.zone}.", "A", want_dnssec=True)
    r = dns.query.udp(q, host, port=port, timeout=2)
    n = dns.name.from_text(f"{name}.{lab.zone}.")
    rrset = r.find_rrset(r.answer, n, dns.rdataclass.IN, dns.rdatatype.A)
    sig = r.find_rrset(r.answer, n, dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.A)
    return keys, rrset, sig


def test_validation_accepts_real_signatures_and_rejects_tampering(lab_config: Any,
                                                                  name: str) -> None:
    import dns.rdata
    import dns.rrset
    from debvisor_dns import dnssec

    lab = lab_config
    lab.set_directly(name, "A", 300, ["10.77.0.90"])
    lab.settle(name, "A", 300, ["10.77.0.90"])
    keys, rrset, sig = _signed_answer(lab, name)
    assert keys.signed
    dnssec.validate_rrset(keys, rrset, sig, "real answer")  # no exception

    forged = dns.rrset.from_text(rrset.name, rrset.ttl, "IN", "A", "10.66.66.66")
    with pytest.raises(dnssec.Bogus, match="is bogus"):
        dnssec.validate_rrset(keys, forged, sig, "forged rdata")

    rd = sig[0]
    broken = rd.replace(signature=bytes([rd.signature[0] ^ 0xFF]) + rd.signature[1:])
    bad_sig = dns.rrset.from_rdata(sig.name, sig.ttl, broken)
    with pytest.raises(dnssec.Bogus, match="is bogus"):
        dnssec.validate_rrset(keys, rrset, bad_sig, "altered signature")

    with pytest.raises(dnssec.Bogus, match="has no RRSIG"):
        dnssec.validate_rrset(keys, rrset, None, "stripped signature")


def test_a_tampered_answer_fails_the_update_with_one_error_and_rolls_back(
        dv: Any, dv_state: Any, lab_config: Any, name: str, tampering_relay: Any) -> None:
    lab = lab_config
    relay = f"127.0.0.1:{tampering_relay.port}"
    dv_state.config({"dns": {"zones": {lab.zone: {"servers": [lab.primary, lab.secondary,
                                                                relay]}}}},
                    base=dv_state.config_path)
    res = dv("dns", "update", name, "10.77.0.91", "--yes")
    assert res.code == 4, res  # failed and rolled back
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("[ERROR]")]
    assert any(f"the answer for {name}.{lab.zone}. A from {relay} is bogus" in e
               for e in errors), res.stderr
    assert "Traceback" not in res.stderr
    assert tampering_relay.tampered >= 1
    assert lab.both(name) == [(None, [])] * 2  # the change was undone on the real servers

    lab.set_directly(name, "A", 300, ["10.77.0.92"])
    lab.settle(name, "A", 300, ["10.77.0.92"])
    res = dv("--json", "dns", "show", name, "--type", "A")
    assert res.code == 0, res
    rows = {r["server"]: r for r in res.json["servers"]}
    assert res.json["agree"] is False
    assert rows[relay]["dnssec"] == "BOGUS"
    assert rows[lab.secondary]["dnssec"] == "valid"
