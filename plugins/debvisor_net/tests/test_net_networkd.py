"""The ``networkd`` persistence driver end to end in the namespace test bed
(`ip netns exec NODE debvisor net …`, as in test_net_apply.py): a kept apply writes
``10-debvisor-NAME.{netdev,network}`` into ``[net] networkd_dir`` (and nothing else), a failed
one writes none, and `net rollback` removes them and puts back, byte for byte, the file of
that kind that was there before.

systemd-networkd itself is not run (it needs systemd as PID 1, or a private mount namespace
with tricks): the rendered files are parsed here, the way networkd reads them (sections,
repeatable keys such as ``Address=``, repeatable sections such as ``[Route]``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debvisor_net.testbed import Bed, kernel_state, net_cli

pytestmark = [pytest.mark.root]

FAR = ["--probe", "icmp:10.60.0.53", "--probe", "tcp:10.60.0.53:7"]
FAST = ["--probe-timeout", "3"]
KEEP = ["--confirm-timeout", "0", "--yes"]

#: br0 over eth3 takes eth0's addresses and routes; eth0 stays up without them
MOVE_TO_BRIDGE = """\
network:
  version: 2
  ethernets:
    eth0: {}
    eth3: {}
  bridges:
    br0:
      interfaces: [eth3]
      addresses: [10.50.0.10/24, "fd00:50::10/64"]
      routes:
        - {to: default, via: 10.50.0.1}
        - {to: "::/0", via: "fd00:50::1"}
        - {to: 10.70.0.0/16, via: 10.50.0.1, metric: 100}
      parameters: {stp: false, forward-delay: 0}
"""

#: a file of the driver's kind from before (an interface the new state does not name), with
#: what a text round trip would lose: CRLF line ends, a non-UTF-8 byte, no final newline
OLD_NAME = "10-debvisor-old.network"
OLD_BYTES = (b"# hand-written before debvisor, caf\xc3\xa9 / caf\xe9\r\n"
             b"[Match]\r\nName=eth9\r\n\r\n[Network]\r\nAddress=10.9.9.9/24")
#: not the driver's (another prefix): never touched
OTHER_NAME = "20-other.network"
OTHER_BYTES = b"[Match]\nName=eth8\n"


@pytest.fixture
def bed() -> Iterator[Bed]:
    with Bed(f"dvd{os.getpid() % 10000}") as b:
        yield b


@pytest.fixture
def networkd_dir(tmp_path: Path) -> Path:
    d = tmp_path / "networkd"
    d.mkdir()
    (d / OLD_NAME).write_bytes(OLD_BYTES)
    (d / OTHER_NAME).write_bytes(OTHER_BYTES)
    return d


@pytest.fixture
def net(dv: Any, dv_state: Any, bed: Bed, tmp_path: Path, networkd_dir: Path) -> Any:
    """``net(*args)`` runs `debvisor net ARGS` inside the node's namespace, driver networkd."""
    dv_state.config({"net": {"driver": "networkd", "networkd_dir": str(networkd_dir),
                             "interfaces_file": str(tmp_path / "interfaces"),
                             "peers": [Bed.PEER4]}})

    run = net_cli(dv, bed)
    run.interfaces = tmp_path / "interfaces"  # type: ignore[attr-defined]
    return run


def _state(net: Any) -> dict[str, Any]:
    return kernel_state(net)


def _desired(tmp_path: Path, text: str = MOVE_TO_BRIDGE) -> Path:
    p = tmp_path / "net.yaml"
    p.write_text(text)
    return p


def _files(d: Path) -> dict[str, bytes]:
    """Every file of D (hidden ones too: a leftover temporary file would show) by name."""
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _unit(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """A systemd unit file as networkd reads it: (section, [(key, value), ...]) in order,
    sections and keys repeatable; comments and blank lines skipped."""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            out.append((line[1:-1], []))
            continue
        assert out, f"{line!r} comes before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{line!r} is not KEY=VALUE"
        out[-1][1].append((key.strip(), value.strip()))
    return out


def _section(unit: list[tuple[str, list[tuple[str, str]]]], name: str) -> dict[str, list[str]]:
    """The one section NAME of UNIT: key -> its values in order."""
    found = [pairs for sec, pairs in unit if sec == name]
    assert len(found) == 1, (name, unit)
    out: dict[str, list[str]] = {}
    for key, value in found[0]:
        out.setdefault(key, []).append(value)
    return out


def test_kept_apply_writes_networkd_files_and_rollback_restores(net: Any, networkd_dir: Path,
                                                                 tmp_path: Path) -> None:
    before = _state(net)
    files_before = _files(networkd_dir)
    file = _desired(tmp_path)
    res = net("--json", "apply", str(file), *KEEP, *FAR, *FAST)
    assert res.code == 0, res
    assert all(p["ok"] for p in res.json["result"]["probes"]), res

    written = _files(networkd_dir)
    assert sorted(written) == ["10-debvisor-br0.netdev", "10-debvisor-br0.network",
                               "10-debvisor-eth0.network", "10-debvisor-eth3.network",
                               OTHER_NAME], sorted(written)
    assert written[OTHER_NAME] == OTHER_BYTES
    assert not net.interfaces.exists()  # the ifupdown driver's file: not this driver's
    texts = {name: data.decode() for name, data in written.items() if name != OTHER_NAME}
    assert all(t.startswith("# Written by `debvisor net apply`") for t in texts.values())

    netdev = _unit(texts["10-debvisor-br0.netdev"])
    assert [sec for sec, _ in netdev] == ["NetDev", "Bridge"]
    assert _section(netdev, "NetDev") == {"Name": ["br0"], "Kind": ["bridge"]}
    assert _section(netdev, "Bridge") == {"STP": ["no"], "ForwardDelaySec": ["0"]}

    br0 = _unit(texts["10-debvisor-br0.network"])
    assert [sec for sec, _ in br0] == ["Match", "Network", "Route"]
    assert _section(br0, "Match") == {"Name": ["br0"]}
    assert _section(br0, "Network") == {"Address": ["10.50.0.10/24", "fd00:50::10/64"],
                                        "Gateway": [Bed.GW4, Bed.GW6]}
    assert _section(br0, "Route") == {"Destination": [Bed.ROUTE], "Gateway": [Bed.GW4],
                                      "Metric": ["100"]}

    eth3 = _unit(texts["10-debvisor-eth3.network"])
    assert eth3 == [("Match", [("Name", "eth3")]), ("Network", [("Bridge", "br0")])]
    eth0 = _unit(texts["10-debvisor-eth0.network"])  # managed, up, without addresses
    assert eth0 == [("Match", [("Name", "eth0")]), ("Network", [])]

    after = _state(net)
    assert after["links"]["eth3"]["master"] == "br0"
    assert {"dev": "br0", "address": "10.50.0.10/24"} in after["addresses"]
    diff = net("diff", str(file))
    assert diff.code == 0 and "persisted (networkd): up to date" in diff.stdout, diff

    back = net("rollback", *KEEP, *FAR, *FAST)
    assert back.code == 0, back
    assert _state(net) == before
    assert _files(networkd_dir) == files_before  # the old file byte for byte, ours gone
    assert not net.interfaces.exists()


@pytest.mark.parametrize("case", ["dead peer", "not confirmed"])
def test_failed_apply_writes_no_networkd_files(net: Any, networkd_dir: Path, tmp_path: Path,
                                               case: str) -> None:
    before = _state(net)
    files_before = _files(networkd_dir)
    if case == "dead peer":
        res = net("apply", str(_desired(tmp_path)), *KEEP, "--probe", "icmp:10.50.0.77", *FAST)
        why = "probe failed: icmp 10.50.0.77"
    else:
        res = net("apply", str(_desired(tmp_path)), "--confirm-timeout", "1", "--yes", *FAR,
                  *FAST)
        why = "not confirmed within 1 s"
    assert res.code == 4, res
    assert why in res.stderr, res.stderr
    assert _state(net) == before
    assert _files(networkd_dir) == files_before
    assert not net.interfaces.exists()
    nothing = net("rollback", *KEEP, *FAR, *FAST)  # nothing was kept: nothing to roll back
    assert nothing.code != 0 and "nothing to roll back" in nothing.stderr, nothing
