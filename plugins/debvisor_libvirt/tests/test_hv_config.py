"""Wrong `[hv]` config types are one sentence naming key and file (exit 2); ssh commands
reach the remote shell as one quoted string."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from debvisor_libvirt.nodes import Node, node_command, ssh_argv

from debvisor_core.errors import BadInput

NODE = {"uri": "test:///default"}


@pytest.mark.parametrize(("config", "args", "problem"), [
    ({"tickets": {"key_file": 5}}, ["ticket", "create", "test", "--mode", "admin"],
     "[hv.tickets] key_file must be a non-empty string, not 5"),
    ({"tickets": "x"}, ["ticket", "create", "test", "--mode", "admin"],
     "[hv] tickets must be a table ([hv.tickets]), not 'x'"),
    ({"nodes": {"n1": {**NODE, "shared_storage": 5}}}, ["list"],
     "[hv.nodes.n1] shared_storage must be a list of paths like [\"/srv/vmstore\"], not 5"),
    ({"nodes": {"n1": {**NODE, "shared_storage": ["/srv", 7]}}}, ["list"],
     "[hv.nodes.n1] shared_storage must be a list of paths like [\"/srv/vmstore\"], "
     "not ['/srv', 7]"),
    ({"nodes": {"n1": {**NODE, "migration_address": 10}}}, ["list"],
     "[hv.nodes.n1] migration_address must be a non-empty string, not 10"),
    ({"nodes": "x"}, ["list"], "[hv] nodes must be a table ([hv.nodes]), not 'x'"),
    ({"nodes": {"n1": {**NODE, "ssh": "-oProxyCommand=touch /tmp/pwned"}}}, ["list"],
     "[hv.nodes.n1] ssh must be [USER@]HOST without spaces and not starting with '-', "
     "not '-oProxyCommand=touch /tmp/pwned'"),
    ({"nodes": {"n1": {**NODE, "ssh": "root@h1 id"}}}, ["list"],
     "[hv.nodes.n1] ssh must be [USER@]HOST without spaces and not starting with '-', "
     "not 'root@h1 id'"),
    ({"vnc": {"port_range": "x"}}, ["vnc", "target", "test", "--listen", "0.0.0.0",
                                    "--port", "auto"],
     "[hv.vnc] port_range must be [LOW, HIGH] within 5900-65535, not 'x'"),
    ({"vnc": {"port_range": [5900, 5910, 5920]}}, ["vnc", "ensure"],
     "[hv.vnc] port_range must be [LOW, HIGH] within 5900-65535, not [5900, 5910, 5920]"),
    ({"vnc": {"firewall": "yes"}}, ["vnc", "ensure"],
     "[hv.vnc] firewall must be true or false, not 'yes'"),
    ({"vnc": 3}, ["vnc", "ensure"], "[hv] vnc must be a table ([hv.vnc]), not 3"),
    ({"migration": "x"}, ["migrate", "test", "local", "--dry-run"],
     "[hv] migration must be a table ([hv.migration]), not 'x'"),
    ({"migration": {"tls": "yes"}}, ["migrate", "test", "local", "--dry-run"],
     "[hv.migration] tls must be true or false, not 'yes'"),
    ({"register": {"autostart": ["on"]}}, ["register", "test"],
     "[hv.register] autostart must be one of enable, require, ignore, not ['on']"),
])
def test_bad_config_type_is_one_sentence(dv: Any, dv_state: Any, config: dict[str, Any],
                                         args: list[str], problem: str) -> None:
    path = dv_state.config({"hv": config})
    res = dv("hv", *args)
    assert res.code == 2, res
    assert res.stderr.strip().splitlines() == [f"[ERROR] config {path}: {problem}"], res


def test_ssh_gets_one_quoted_remote_command() -> None:
    argv = ["nft", "add", "rule", "inet", "debvisor", "vnc", "tcp", "dport", "5901", "accept",
            "comment", '"hv-vnc-a b; touch /tmp/x"', "{", ";", "}", "it's"]
    full = ssh_argv("root@node1.example.net", argv)
    assert full[:5] == ["ssh", "-o", "BatchMode=yes", "root@node1.example.net", "--"]
    assert len(full) == 6  # the remote shell sees exactly one word list: argv, quoted
    assert shlex.split(full[5]) == argv
    assert full[5] == shlex.join(argv)


@pytest.mark.parametrize("dest", ["-oProxyCommand=sh", "root@h1 id", "a\tb", ""])
def test_ssh_destination_that_is_an_option_or_splits_is_refused(dest: str) -> None:
    with pytest.raises(BadInput):
        ssh_argv(dest, ["nft", "--version"])
    with pytest.raises(BadInput):  # a Node built without the config check is refused too
        node_command(Node("n1", "qemu+ssh://h1/system", ssh=dest or "-x"), ["nft", "--version"])
