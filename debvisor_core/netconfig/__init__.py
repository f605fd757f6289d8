"""network-config (cloud-init v1/v2, netplan-like) validation, shared by the plugins.

The ISO builder of the libvirt plugin (`hv iso build --network-config`) and the
network plugin's desired-state files use the same JSON schemas
(``schemas/network-config-v{1,2}.json``) and the same semantic checks (IP addresses
and prefixes, bond/bridge members and VLAN links that exist). Every finding names
its file and line: ``net.yaml:7: ethernets.eth1: unknown key 'dhcp'; known keys: …``.

Importing this package is cheap: jsonschema and PyYAML (not dependencies of the core;
the plugins that call it depend on them) are imported when a document is checked.

    version, report = validate_file("net.yaml")
    for issue in report.errors:
        print(issue)
"""

from __future__ import annotations

from .check import check_network_config, read_regular, valid_ip, validate_bytes, validate_file
from .report import Issue, Report
from .schemautil import report_errors
from .yamlutil import Loaded, dotted, load

__all__ = [
    "Issue",
    "Loaded",
    "Report",
    "check_network_config",
    "dotted",
    "load",
    "read_regular",
    "report_errors",
    "valid_ip",
    "validate_bytes",
    "validate_file",
]
