"""Benchmarks of the hv plugin on the real lab (two libvirtd nodes, QEMU/TCG guests).

1. A 256 MiB guest live migration with `hvctl migrate` (throttled so progress is
   observable): total time, downtime, ETA error at 50 % progress (relative to the time
   the command really took from there) for: the very first migration (nothing learned:
   its ETA is to the switch-over, and is checked against it), the next one (the
   source's stop time learned), and the first migration in the other direction (a
   target never migrated to, a source never migrated from: the other node's stop time
   stands in); peer: `virsh migrate --live` of the
   same guest at the same bandwidth, as a time ratio. And the whole command (pre-check,
   migration, verification) of the first migration after the daemons started against a
   later one (target: first / later <= 1.3).
2. `hvctl list` across 2 nodes with 50 domains each, against `virsh list --all` run once
   per node (sum), as a ratio (median of 5 runs each). Each run is a fresh process: most
   of `hvctl list`'s time is Python starting, importing (libvirt.py is ~10k lines) and
   exiting, and far more of it when nothing can use or write .pyc files
   (PYTHONDONTWRITEBYTECODE=1 and none installed): then every run compiles every module
   (`scripts/dev setup` writes them, like a regular install). The floor of any Python
   client is measured too: start, import the bindings, list each node's names.

Run: /work/main/.venv/bin/python plugins/debvisor_libvirt/bench/bench_hv.py  (root)
     add ``--only list`` (or ``--only migrate``) to run one section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

BANDWIDTH_MIB = 16
VM = "benchmig"


def sh(argv: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if check and res.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}… failed ({res.returncode}):\n{res.stderr}")
    return res


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    sh(argv, env)
    return time.perf_counter() - t


def bench_migrate(lab_dir: Path, env: dict[str, str], uris: dict[str, str],
                  conns: dict[str, Any], g: dict[str, Any], fig: dict[str, Any]) -> None:
    """Section 1: live migration of a 256 MiB guest, `hvctl migrate` vs `virsh migrate`."""
    from debvisor_libvirt import lab

    hvctl = str(Path(sys.executable).parent / "hvctl")
    log = lab_dir / f"{VM}.log"
    lab.define_guest(conns["node1"], VM, memory_mib=256, kernel=g["kernel"],
                     initrd=g["initrd"], console_log=log)
    lab.wait_console(log, timeout=120)

    def migrate_hv(target: str = "node2") -> dict[str, Any]:
        t = time.perf_counter()
        res = sh([hvctl, "--json", "migrate", VM, target, "--bandwidth",
                  f"{BANDWIDTH_MIB}MiB/s", "--yes"], env)
        out = dict(json.loads(res.stdout)["result"]["migration"])
        out["command_s"] = time.perf_counter() - t  # pre-check, migration, verification
        return out

    def virsh_back() -> float:
        t = time.perf_counter()
        sh(["virsh", "-c", uris["node2"], "migrate", "--live", "--persistent",
            "--undefinesource", VM, uris["node1"], "tcp://10.77.0.1",
            "--bandwidth", str(BANDWIDTH_MIB)], env)
        return time.perf_counter() - t

    def eta_at_50(mig: dict[str, Any]) -> tuple[float, float, str] | None:
        """(ETA shown, actual remaining time, to what) at the first sample at or past 50 %:
        to the end of the command, or to the switch-over when the ETA says it is that."""
        at50 = next((p for p in mig["progress"] if p["pct"] >= 50 and p["eta_s"] is not None),
                    None)
        if at50 is None:
            return None
        to = at50.get("eta_to", "end")
        end = mig["transfer_s"] if to == "switch-over" else mig["total_s"]
        return at50["eta_s"], end - at50["t"], to

    # run 1: a fresh state dir, nothing learned about this target yet
    first = migrate_hv()
    fig["virsh_migrate_total_s"] = round(virsh_back(), 3)
    # run 2: the finish/confirm time of run 1 is known (what an operator sees normally)
    mig = migrate_hv()
    fig["hv_migrate_total_s"] = mig["total_s"]
    fig["hv_migrate_downtime_ms"] = mig["downtime_ms"]
    fig["hv_migrate_avg_rate_mib_s"] = round(mig["avg_rate_bps"] / 2**20, 2)
    fig["hv_migrate_transfer_s"] = mig["transfer_s"]
    fig["hv_migrate_finish_s"] = mig["finish_s"]
    fig["guest_ram_nonzero_share"] = round(mig["nonzero_share"] or 0, 3)
    # run 3: the other way, with hvctl: a target never migrated to, a source never
    # migrated from (the VM ends on node1 again)
    other = migrate_hv("node1")
    for key, run in (("", mig), ("_first_run", first), ("_first_to_node1", other)):
        e = eta_at_50(run)
        if e:
            eta, actual, to = e
            fig[f"eta_to{key}"] = to
            fig[f"eta_at_50pct_s{key}"] = round(eta, 2)
            fig[f"actual_remaining_at_50pct_s{key}"] = round(actual, 2)
            fig[f"eta_error_at_50pct_rel{key}"] = round((eta - actual) / actual, 3)
    # the first migration after the daemons started (pre-check included) vs a later one
    fig["hv_migrate_command_s_first_run"] = round(first["command_s"], 3)
    fig["hv_migrate_command_s"] = round(mig["command_s"], 3)
    fig["first_vs_later_command_ratio"] = round(first["command_s"] / mig["command_s"], 3)
    fig["migrate_time_ratio_hv_vs_virsh"] = round(
        fig["hv_migrate_total_s"] / fig["virsh_migrate_total_s"], 3)
    dom = conns["node1"].lookupByName(VM)
    dom.destroy()
    dom.undefine()


def bench_list(env: dict[str, str], uris: dict[str, str], conns: dict[str, Any],
               g: dict[str, Any], fig: dict[str, Any]) -> None:
    """Section 2: `hvctl list` over 2 nodes x 50 domains vs `virsh list --all` per node."""
    from debvisor_libvirt import lab

    hvctl = str(Path(sys.executable).parent / "hvctl")
    for n, c in conns.items():
        for i in range(50):
            c.defineXML(lab.guest_xml(f"bl-{n}-{i:02d}", kernel=g["kernel"],
                                      initrd=g["initrd"], vnc=False))
    sh([hvctl, "list"], env)  # warm caches
    hv_runs = [timed([hvctl, "list"], env) for _ in range(5)]
    virsh_runs = [sum(timed(["virsh", "-c", u, "list", "--all"], env) for u in uris.values())
                  for _ in range(5)]
    fig["hv_list_100_domains_s"] = round(statistics.median(hv_runs), 3)
    fig["virsh_list_all_per_node_sum_s"] = round(statistics.median(virsh_runs), 3)
    fig["list_ratio_hv_vs_virsh"] = round(fig["hv_list_100_domains_s"]
                                          / fig["virsh_list_all_per_node_sum_s"], 2)
    # the floor of any Python client: start, import the bindings, list names on each node
    floor = ("import libvirt, sys\nfor u in sys.argv[1:]:\n"
             "    print(*sorted(d.name() for d in libvirt.open(u).listAllDomains(0)))")
    floor_runs = [timed([sys.executable, "-c", floor, *uris.values()], env) for _ in range(5)]
    fig["python_libvirt_floor_s"] = round(statistics.median(floor_runs), 3)
    fig["list_floor_ratio_vs_virsh"] = round(fig["python_libvirt_floor_s"]
                                             / fig["virsh_list_all_per_node_sum_s"], 2)
    import importlib.util

    import libvirt

    fig["libvirt_py_compiled"] = os.path.exists(
        importlib.util.cache_from_source(libvirt.__file__))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmarks of the hv plugin on the lab.")
    parser.add_argument("--only", choices=("migrate", "list"),
                        help="run only this section (default: every section)")
    only = parser.parse_args(argv).only
    from debvisor_libvirt.nodes import lv

    libvirt = lv()
    debvisor = str(Path(sys.executable).parent / "debvisor")
    lab_dir = Path(tempfile.mkdtemp(prefix="dvlb-", dir="/tmp"))
    env = {**os.environ, "DEBVISOR_LAB_DIR": str(lab_dir),
           "DEBVISOR_STATE_DIR": str(lab_dir / "state"), "DEBVISOR_PLUGINS": "hv"}
    env.pop("DEBVISOR_CONFIG", None)
    sh([debvisor, "lab", "up", "libvirt"], env)
    try:
        env["DEBVISOR_CONFIG"] = str(lab_dir / "debvisor.toml")
        cfg = tomllib.loads((lab_dir / "debvisor.toml").read_text())["hv"]
        uris = {n: v["uri"] for n, v in cfg["nodes"].items()}
        conns = {n: libvirt.open(u) for n, u in uris.items()}
        g = cfg["guest"]
        fig: dict[str, Any] = {}
        if only in (None, "migrate"):
            bench_migrate(lab_dir, env, uris, conns, g, fig)  # 1. a 256 MiB guest
        if only in (None, "list"):
            bench_list(env, uris, conns, g, fig)  # 2. 2 nodes x 50 domains
        for k, v in fig.items():
            print(f"{k}: {v}")
        print(json.dumps(fig))
    finally:
        sh([debvisor, "lab", "down", "libvirt"],
           {k: v for k, v in env.items() if k != "DEBVISOR_CONFIG"}, check=False)


if __name__ == "__main__":
    main()
