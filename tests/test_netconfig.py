"""debvisor_core.netconfig called directly, as a plugin other than the ISO builder would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from debvisor_core.netconfig import Report, check_network_config, validate_bytes, validate_file

pytest.importorskip("yaml")
pytest.importorskip("jsonschema")

GOOD_V2 = """\
network:
  version: 2
  ethernets:
    eth0: {match: {macaddress: "52:54:00:12:34:56"}, set-name: eth0}
    eth1: {}
  bonds:
    bond0:
      interfaces: [eth0, eth1]
      parameters: {mode: 802.3ad, lacp-rate: fast}
  bridges:
    br0:
      interfaces: [bond0]
      addresses: [192.0.2.10/24, "2001:db8::10/64"]
      routes: [{to: default, via: 192.0.2.1}]
      nameservers: {addresses: [192.0.2.53], search: [example.org]}
  vlans:
    vlan10: {id: 10, link: bond0, addresses: [198.51.100.2/24]}
"""

ETH_KEYS = ("accept-ra, addresses, critical, dhcp-identifier, dhcp4, dhcp4-overrides, dhcp6, "
            "dhcp6-overrides, gateway4, gateway6, ipv6-privacy, link-local, macaddress, match, mtu, "
            "nameservers, optional, renderer, routes, routing-policy, set-name, wakeonlan")


def test_good_v2_with_bonds_bridges_and_vlans_is_clean() -> None:
    version, report = validate_bytes(GOOD_V2.encode(), "net.yaml")
    assert version == 2
    assert report.issues == []


def test_wrong_key_and_bad_address_name_file_and_line() -> None:
    bad = GOOD_V2.replace("eth1: {}", "eth1: {dhcp: true}").replace("[192.0.2.10/24,", "[192.0.2.300/24,")
    version, report = validate_bytes(bad.encode(), "net.yaml")
    assert version == 2
    assert [str(i) for i in report.issues] == [
        f"net.yaml:5: network.ethernets.eth1: unknown key 'dhcp'; known keys: {ETH_KEYS}",
        "net.yaml:13: network.bridges.br0.addresses[0]: '192.0.2.300/24' is not an address with "
        "prefix like 192.0.2.10/24",
    ]
    assert [i.level for i in report.issues] == ["error", "error"]


def test_check_network_config_adds_to_the_callers_report() -> None:
    report = Report()
    report.warning("other", "from another checker")
    assert check_network_config(b"version: 3\n", "n", report) is None
    assert [str(i) for i in report.issues] == [
        "other: from another checker",
        "n:1: version: 3 is not a network-config version; use 1 or 2",
    ]


def test_validate_file(tmp_path: Path) -> None:
    path = tmp_path / "net.yaml"
    path.write_text("version: 2\nethernets:\n  eth0: {dhcp4: maybe}\n")
    version, report = validate_file(path)
    assert version == 2
    assert [str(i) for i in report.errors] == [
        f"{path}:3: ethernets.eth0.dhcp4: 'maybe' must be true or false"]
    assert validate_file(path, label="desired/eth.yaml")[1].errors[0].file == "desired/eth.yaml"
    version, report = validate_file(tmp_path / "missing.yaml")
    assert version is None
    assert [str(i) for i in report.errors] == [
        f"{tmp_path / 'missing.yaml'}: cannot read the network-config file: No such file or directory"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    version, report = validate_file(fifo)  # must not hang
    assert version is None and "not a regular file" in report.errors[0].message


def test_importing_it_loads_neither_yaml_nor_jsonschema() -> None:
    code = ("import sys, debvisor_core.netconfig\n"
            "print(sorted(m for m in ('yaml', 'jsonschema') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
