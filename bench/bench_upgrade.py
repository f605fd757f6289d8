"""Planning a rolling upgrade of 500 nodes: `debvisor upgrade rolling --dry-run --json` with
an inventory of 500 nodes (local transport: planning contacts no node), the whole command
as an operator runs it — interpreter start, plugins, plan, preflight, the plan printed.

Figure: wall time, median of 5 (target < 1 s); the same command's `--help` in the same run
as the floor of any debvisor command line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_NODES = int(os.environ.get("BENCH_NODES", "500"))


def _time(argv: list[str], env: dict[str, str], runs: int = 5) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(runs):
        t = time.perf_counter()
        res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        times.append(time.perf_counter() - t)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(argv[3:])} failed: {res.stderr.strip()[-300:]}")
        out = res.stdout
    return statistics.median(times), out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp, "debvisor.toml")
        cfg.write_text("".join(
            f'[cluster.nodes.node{i:03d}]\ntransport = "local"\n'
            f'state_dir = "{tmp}/n{i:03d}"\nconfig = "{tmp}/n{i:03d}.toml"\n'
            for i in range(N_NODES)))
        env = {**os.environ, "DEBVISOR_STATE_DIR": str(Path(tmp, "state")),
               "DEBVISOR_CONFIG": str(cfg)}
        base = [sys.executable, "-m", "debvisor_core"]
        plan_s, out = _time([*base, "--json", "upgrade", "rolling", "--dry-run"], env)
        help_s, _ = _time([*base, "upgrade", "rolling", "--help"], env)
    res = json.loads(out)
    # per node: its upgrade and its reboot-and-verify (plus any plugin's gates and slots)
    assert res["status"] == "dry-run" and len(res["steps"]) >= 2 * N_NODES, res["status"]
    print(f"rolling upgrade of {N_NODES} nodes, planned (upgrade rolling --dry-run --json):")
    print(f"  wall time (median of 5): {plan_s:.3f} s (target < 1 s): "
          f"{'OK' if plan_s < 1 else 'OVER'}")
    print(f"  `upgrade rolling --help` in the same run: {help_s:.3f} s; planning above it: "
          f"{plan_s - help_s:.3f} s")


if __name__ == "__main__":
    main()
