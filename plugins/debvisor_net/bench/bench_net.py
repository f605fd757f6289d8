"""`debvisor net` on a namespace with 50 links (root): the normalised snapshot against
`ip -j` doing the same reads, and an apply plus its rollback.

Figures (median of 7):
- snapshot: debvisor_net.snapshot.snapshot() in a running process, against the five `ip -j`
  reads it replaces (`-d link`, `addr`, `route show table all`, `-6 route show table all`,
  `rule`), each a process as an operator's script would spawn; ratio = snapshot / ip.
- `net show --json`, the whole command (interpreter, plugins, snapshot, JSON).
- apply + rollback: converge() moving the addresses of 25 links and changing 25 MTUs, then
  converge() back to the recorded snapshot (what a failed probe or the watchdog does); the
  diff after the rollback must be empty.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

NS = f"dvbench{os.getpid() % 10000}"
LINKS = 50


def _median(fn: Callable[[], Any], runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _build() -> None:
    lines = ["link set dev lo up"]
    for i in range(LINKS // 2):
        lines += [f"link add name a{i} type veth peer name b{i}",
                  f"link set dev a{i} up", f"link set dev b{i} up",
                  f"addr add 10.{i}.0.1/24 dev a{i}", f"addr add 10.{i}.1.1/24 dev b{i}",
                  f"route add 172.{16 + i % 16}.{i}.0/24 via 10.{i}.0.2 proto static metric 100"]
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(["ip", "-n", NS, "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                   check=True)


def _ip_reads() -> None:
    for argv in (["-d", "link", "show"], ["addr", "show"], ["route", "show", "table", "all"],
                 ["-6", "route", "show", "table", "all"], ["rule", "show"]):
        subprocess.run(["ip", "-n", NS, "-j", *argv], capture_output=True, check=True)


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench_net needs root (network namespaces)")
    import copy

    from debvisor_net.converge import converge
    from debvisor_net.kernel import open_netlink
    from debvisor_net.snapshot import diff, snapshot

    _build()
    try:
        with open_netlink(NS) as ipr:
            snapshot(ipr)  # warm
            snap_s = _median(lambda: snapshot(ipr))
            ip_s = _median(_ip_reads)
            show_s = _median(lambda: subprocess.run(
                ["ip", "netns", "exec", NS, sys.executable, "-m", "debvisor_core", "--json",
                 "net", "show"], capture_output=True, check=True), runs=5)
            before = snapshot(ipr)
            target = copy.deepcopy(before)
            for a in target["addresses"]:
                if a["dev"].startswith("b"):
                    a["address"] = a["address"].replace(".1.1/24", ".2.1/24")
            for name, link in target["links"].items():
                if name.startswith("a"):
                    link["mtu"] = 9000
            t = time.perf_counter()
            made = converge(ipr, target)
            apply_s = time.perf_counter() - t
            t = time.perf_counter()
            undone = converge(ipr, before)
            rollback_s = time.perf_counter() - t
            left = diff(before, snapshot(ipr))
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)
    n = len(before["links"])
    print(f"namespace with {n} links, {len(before['addresses'])} addresses, "
          f"{len(before['routes'])} routes:")
    print(f"  snapshot in process: {snap_s * 1000:.1f} ms; the five `ip -j` reads: "
          f"{ip_s * 1000:.1f} ms; ratio {snap_s / ip_s:.2f}")
    print(f"  `net show --json` (whole command): {show_s * 1000:.0f} ms")
    print(f"  apply ({len(made)} changes): {apply_s * 1000:.0f} ms; rollback ({len(undone)} "
          f"changes): {rollback_s * 1000:.0f} ms; diff after rollback: "
          f"{'empty' if not left else left[:3]}")
    if left:
        raise SystemExit("the rollback did not restore the snapshot")


if __name__ == "__main__":
    main()
