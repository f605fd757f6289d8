"""A rolling upgrade of 3 nodes of the node test bed (debvisor_core.lab.nodebed) over real
ssh: each node's maintenance with its drain, its `upgrade run` (apt-get update, the
checklist, dist-upgrade of the test agent and a new kernel package, journalled and audited
on the node), its reboot into the new kernel, the wait for its new boot id, the check of
the booted kernel, and the end of its maintenance.

Figures: the whole command's wall time, and per node the upgrade phase and the reboot
phase (from the orchestrator's journal: each step's intent to its verification), the
reboot itself (the command until the new boot answers). Needs root; the bed's debootstrap
base is built once (about 45 s) and cached.

Run: /work/main/.venv/bin/python bench/bench_rolling.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from debvisor_core.lab import nodebed
from debvisor_core.lab.manager import to_toml

APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q"


def step_times(journal: Path) -> list[tuple[int, float]]:
    """(step index, seconds from its intent to its verification) from a journal."""
    start: dict[int, float] = {}
    out = []
    for line in journal.read_text().splitlines():
        ev = json.loads(line)
        if ev["event"] == "intent":
            start[ev["step"]] = ev["t"]
        elif ev["event"] == "verified" and ev["step"] in start:
            out.append((ev["step"], ev["t"] - start[ev["step"]]))
    return out


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the node test bed needs root")
    nodebed.ensure_base()
    debvisor = str(nodebed.checkout_dirs()[0] / ".venv" / "bin" / "debvisor")
    with tempfile.TemporaryDirectory(prefix="bench-rolling-") as tmp:
        bed = nodebed.Bed(Path(tmp, "bed"), nodes=3)
        bed.repo.add_release("1.0")
        with bed:
            bed.run_all(f"apt-get -q update && {APT} install {nodebed.KERNEL_META} "
                        "debvisor-test-agent")
            for n in bed.nodes:
                bed.reboot(n)
            bed.repo.add_release("1.1")
            bed.repo.index()
            state, cfg = Path(tmp, "state"), Path(tmp, "debvisor.toml")
            cfg.write_text(to_toml({"cluster": {"nodes": {
                n: {"transport": "ssh", "host": n, "user": "root",
                    "ssh_config": str(bed.ssh_config), "command": debvisor,
                    "connect_timeout": 5} for n in bed.nodes}}}))
            env = {**os.environ, "DEBVISOR_STATE_DIR": str(state), "DEBVISOR_CONFIG": str(cfg)}
            import subprocess

            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "debvisor_core", "--json", "upgrade",
                                  "rolling", "--yes"], capture_output=True, text=True, env=env,
                                 timeout=900)
            wall = time.perf_counter() - t
            if res.returncode != 0:
                raise SystemExit(f"the rolling upgrade failed ({res.returncode}):\n{res.stderr}")
            op: dict[str, Any] = json.loads(res.stdout)
            kernels = {n: bed.booted_kernel(n) for n in bed.nodes}
        times = dict(step_times(state / "ops" / f"{op['id']}.jsonl"))
    steps = op["steps"]
    print("rolling upgrade of 3 namespace nodes over ssh (upgrade, reboot, verify):")
    print(f"  wall time: {wall:.2f} s; booted kernels after: {sorted({str(k) for k in kernels.values()})}")
    for k, s in enumerate(steps):
        print(f"  step {k + 1:>2} {times.get(k, float('nan')):6.2f} s  {s['description']}")
    kinds = {"maintenance": "maintenance.", "upgrade": "upgrade.run",
             "reboot+verify": "reboot if a newer"}
    per = {name: sum(v for k, v in times.items() if mark in steps[k]["description"])
           for name, mark in kinds.items()}
    print("  per phase (3 nodes): " + ", ".join(f"{k} {v:.2f} s" for k, v in per.items()))
    print(json.dumps({"rolling_3_nodes_wall_s": round(wall, 3),
                      **{f"rolling_{k}_s": round(v, 3) for k, v in per.items()}}))


if __name__ == "__main__":
    main()
