"""One test per validation rule of `hv iso build` (checkers called directly, plus the CLI)."""

from __future__ import annotations

import gzip
import os
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest
from debvisor_libvirt.media import validate

from debvisor_core.netconfig import Report, check_network_config

HAVE_SCHEMA = os.path.isfile(validate.schema_path())
needs_schema = pytest.mark.skipif(not HAVE_SCHEMA, reason="Debian's cloud-init package (its schema) "
                                  "is not installed")


def ud(text: str | bytes, strict: bool = False) -> Report:
    r = Report(strict=strict)
    validate.check_user_data(text.encode() if isinstance(text, str) else text, "ud", r)
    return r


def net(text: str) -> Report:
    r = Report()
    check_network_config(text.encode(), "net", r)
    return r


def msgs(r: Report, level: str = "error") -> list[str]:
    return [str(i) for i in r.issues if i.level == level]


def test_yaml_syntax_error_has_file_and_line() -> None:
    r = ud("#cloud-config\npackages:\n  - vim\n bad: [\n")
    assert len(r.errors) == 1 and r.errors[0].line == 4
    assert msgs(r)[0].startswith("ud:4: YAML syntax error")


def test_duplicate_keys_are_errors() -> None:
    r = ud("#cloud-config\nhostname: a\nhostname: b\n")
    assert any("duplicate key 'hostname'" in m and m.startswith("ud:3") for m in msgs(r))


@needs_schema
def test_cloud_config_schema_errors_with_line() -> None:
    r = ud("#cloud-config\nhostname: a\nruncmd: ls\nusers:\n  - name: x\n    lock_passwd: maybe\n")
    m = msgs(r)
    assert any(x.startswith("ud:3: runcmd:") and "must be a list" in x for x in m)
    assert any(x.startswith("ud:6: users[0].lock_passwd") for x in m)


@needs_schema
def test_unknown_top_level_key_warns_and_strict_errors() -> None:
    r = ud("#cloud-config\nhostnme: a\n")
    assert not r.errors and "unknown top-level key 'hostnme'" in msgs(r, "warning")[0]
    r = ud("#cloud-config\nhostnme: a\n", strict=True)
    assert r.errors and r.errors[0].line == 2


@needs_schema
def test_valid_cloud_config_is_clean() -> None:
    r = ud("#cloud-config\nhostname: a\npackages: [vim]\nwrite_files:\n  - path: /etc/x\n    content: y\n"
           "users:\n  - default\n  - name: ops\n    sudo: ALL=(ALL) NOPASSWD:ALL\n")
    assert r.issues == []


def test_missing_schema_says_validation_is_reduced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBVISOR_CLOUDINIT_SCHEMA", "/nonexistent/schema.json")
    r = ud("#cloud-config\nruncmd: ls\n")
    assert not r.errors
    assert "validation is reduced" in msgs(r, "warning")[0]


def test_shell_script_syntax() -> None:
    assert ud("#!/bin/sh\necho ok\n").issues == []
    r = ud("#!/bin/bash\necho a\nif then\n")
    assert r.errors and r.errors[0].line == 3 and "shell syntax error" in r.errors[0].message


def test_python_script_syntax() -> None:
    r = ud("#!/usr/bin/env python3\nprint(1\n")
    assert r.errors and "Python syntax error" in r.errors[0].message


def test_include_needs_urls() -> None:
    assert ud("#include\nhttps://example.org/ud.yaml\n").issues == []
    assert "not an http(s) URL" in msgs(ud("#include\n/etc/passwd\n"))[0]
    assert "lists no URL" in msgs(ud("#include\n"))[0]


@needs_schema
def test_mime_multipart_parts_checked_as_declared() -> None:
    msg = MIMEMultipart()
    msg.attach(MIMEText("#cloud-config\nruncmd: ls\n", "cloud-config"))
    msg.attach(MIMEText("#!/bin/sh\nif then\n", "x-shellscript"))
    msg.attach(MIMEText("hello", "x-unknown"))
    r = ud(msg.as_string())
    m = msgs(r)
    assert any("runcmd" in x for x in m) and any("shell syntax error" in x for x in m)
    assert any("unknown MIME type 'text/x-unknown'" in x for x in msgs(r, "warning"))
    mismatch = MIMEMultipart()
    mismatch.attach(MIMEText("#!/bin/sh\necho\n", "cloud-config"))
    assert any("declared text/cloud-config" in x for x in msgs(ud(mismatch.as_string())))


def test_gzip_and_archive_user_data() -> None:
    assert ud(gzip.compress(b"#!/bin/sh\necho ok\n")).issues == []
    r = ud("#cloud-config-archive\n- type: text/x-shellscript\n  content: |\n    #!/bin/sh\n    if then\n")
    assert any("shell syntax error" in x for x in msgs(r))


def test_unrecognised_user_data() -> None:
    r = ud("hello world\n")
    assert "unrecognised user-data" in msgs(r)[0]
    assert validate.kind_of("#cloud-boothook\n#!/bin/sh\n") == "boothook"


def test_meta_data_needs_instance_id_and_valid_hostname() -> None:
    r = Report()
    validate.check_meta_data(b"local-hostname: web_1!\n", "md", r)
    m = msgs(r)
    assert any("must carry an instance-id" in x for x in m)
    assert any("not a valid host name" in x for x in m)
    r = Report()
    validate.check_meta_data(b'{"instance-id": "i-1", "local-hostname": "web1"}', "md", r)
    assert r.issues == []


V2_OK = """network:
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
      routes: [{to: default, via: 192.0.2.1}, {to: 10.0.0.0/8, via: 192.0.2.254, metric: 100}]
      nameservers: {addresses: [192.0.2.53], search: [example.org]}
  vlans:
    vlan10: {id: 10, link: bond0, addresses: [198.51.100.2/24]}
"""


def test_network_v2_valid() -> None:
    assert net(V2_OK).issues == []


@pytest.mark.parametrize(("change", "expected"), [
    (("dhcp4", "eth1: {dhcp4: maybe}"), "eth1.dhcp4: 'maybe' must be true or false"),
    (("unknown", "eth1: {dhcp: true}"), "eth1: unknown key 'dhcp'"),
    (("mode", "mode: 802.3ad"), "'fast' is not allowed"),
    (("vlan-id", "id: 10"), "5000 is out of range"),
    (("address", "192.0.2.10/24"), "'192.0.2.10' is not an address with prefix"),
    (("via", "via: 192.0.2.1"), "'192.0.2.300' is not a gateway IP address"),
    (("ns", "addresses: [192.0.2.53]"), "'dns.example' is not an IP address"),
    (("member", "interfaces: [eth0, eth1]"), "'eth9' is not defined"),
    (("link", "link: bond0"), "'bond7' is not a defined interface"),
    (("mac", '"52:54:00:12:34:56"'), "is not a MAC address"),
    (("mtu", "eth1: {}"), "9 is out of range"),
])
def test_network_v2_errors(change: tuple[str, str], expected: str) -> None:
    what, old = change
    new = {"dhcp4": "eth1: {dhcp4: maybe}", "unknown": "eth1: {dhcp: true}",
           "mode": "mode: fast", "vlan-id": "id: 5000", "address": "192.0.2.10",
           "via": "via: 192.0.2.300", "ns": "addresses: [dns.example]",
           "member": "interfaces: [eth0, eth9]", "link": "link: bond7", "mac": '"52:54:zz"',
           "mtu": "eth1: {mtu: 9}"}[what]
    if what in ("dhcp4", "unknown"):
        text = V2_OK.replace("    eth1: {}", "    " + new)
    elif what == "mode":
        text = V2_OK.replace("mode: 802.3ad, lacp-rate: fast", "mode: fast")
    elif what == "address":
        text = V2_OK.replace("[192.0.2.10/24,", "[192.0.2.10,")
    else:
        text = V2_OK.replace(old, new, 1) if what != "mtu" else V2_OK.replace("    eth1: {}", "    " + new)
    r = net(text)
    assert any(expected in m for m in msgs(r)), msgs(r)
    assert all(i.line for i in r.errors)


def test_network_v1_rules() -> None:
    ok = ("version: 1\nconfig:\n  - {type: physical, name: eth0, mac_address: '52:54:00:00:00:01',\n"
          "     subnets: [{type: static, address: 192.0.2.5/24, gateway: 192.0.2.1,\n"
          "                dns_nameservers: [192.0.2.53]}]}\n"
          "  - {type: bond, name: bond0, bond_interfaces: [eth0], params: {bond-mode: active-backup}}\n"
          "  - {type: vlan, name: v5, vlan_link: bond0, vlan_id: 5}\n"
          "  - {type: bridge, name: br0, bridge_interfaces: [v5], params: {bridge_stp: 'off'}}\n"
          "  - {type: nameserver, address: [192.0.2.53], search: [example.org]}\n"
          "  - {type: route, destination: 10.0.0.0/8, gateway: 192.0.2.1}\n")
    assert net(ok).issues == []
    m = msgs(net(ok.replace("type: route,", "type: rout,")))
    assert any("'rout' is not allowed" in x for x in m)
    m = msgs(net(ok.replace("vlan_id: 5", "vlan_id: 5, vlan_pri: 1")))
    assert any("unknown key 'vlan_pri'" in x for x in m)
    m = msgs(net(ok.replace("vlan_link: bond0, ", "")))
    assert any("missing required key 'vlan_link'" in x for x in m)
    m = msgs(net(ok.replace("address: 192.0.2.5/24", "address: 192.0.2.5")))
    assert any("needs a prefix" in x for x in m)
    m = msgs(net(ok.replace("bond_interfaces: [eth0]", "bond_interfaces: [eth3]")))
    assert any("'eth3' is not a defined interface" in x for x in m)


def test_network_version_must_be_1_or_2() -> None:
    assert "use 1 or 2" in msgs(net("network:\n  version: 3\n"))[0]


def test_cli_reports_every_error_and_writes_nothing(dv, tmp_path: Path) -> None:
    (tmp_path / "ud").write_text("#cloud-config\nhostnme: a\n")
    (tmp_path / "net").write_text("version: 2\nethernets:\n  eth0: {dhcp4: maybe}\n")
    (tmp_path / "md").write_text("local-hostname: a\n")
    iso = tmp_path / "s.iso"
    res = dv("hv", "iso", "build", "-o", iso, "--user-data", tmp_path / "ud", "--meta-data",
             tmp_path / "md", "--network-config", tmp_path / "net", "--strict", "--json")
    assert res.code == 2, res
    errors = res.json["errors"]
    assert {e["file"].rsplit("/", 1)[-1] for e in errors} == {"ud", "md", "net"} if HAVE_SCHEMA else True
    assert "Traceback" not in res.stderr and not iso.exists()
