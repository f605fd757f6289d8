"""k8s plugin benchmark against the test API emulator (same run, same server).

1. `debvisor k8s nodes --json` (nodes + pods, the report) vs a minimal script that calls
   `CoreV1Api().list_node()` with the same client and kubeconfig (what an operator's own
   script would do). Target: ratio ≤ 1.1.
2. `debvisor --help` with this plugin installed vs without it (DEBVISOR_DISABLE_PLUGINS=k8s):
   the ratio must stay ~1 (the plugin adds no import to --help).

Run: /work/main/.venv/bin/python plugins/debvisor_k8s/bench/bench_k8s.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from k8s_emulator import Emulator, make_tls  # noqa: E402 - the tests' emulator, not shipped

PY = sys.executable
SCRIPT = """
import sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
nodes = client.CoreV1Api().list_node()
print(len(nodes.items))
"""


def _time(argv: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time of ``runs`` runs (after one warm-up)."""
    out = []
    for k in range(runs + 1):
        t = time.perf_counter()
        res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                             check=False)
        took = time.perf_counter() - t
        if res.returncode != 0:
            raise SystemExit(f"{argv} failed:\n{res.stderr}")
        if k:
            out.append(took)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    work = tempfile.TemporaryDirectory()
    emu = Emulator(make_tls(Path(work.name) / "tls"), Path(work.name) / "emu").start()
    try:
        for i in range(20):
            emu.add(emu.node(f"worker{i}"))
            for j in range(10):
                emu.add(emu.pod(f"p{i}-{j}", node=f"worker{i}",
                                requests={"cpu": "100m", "memory": "64Mi"}))
        with tempfile.TemporaryDirectory() as tmp:
            conf = Path(tmp) / "debvisor.toml"
            conf.write_text(f'[k8s]\nkubeconfig = "{emu.kubeconfig}"\n')
            env = {**os.environ, "DEBVISOR_CONFIG": str(conf), "DEBVISOR_STATE_DIR": tmp}
            dv = _time([PY, "-m", "debvisor_core", "--json", "k8s", "nodes"], env, args.runs)
            peer = _time([PY, "-c", SCRIPT, str(emu.kubeconfig)], env, args.runs)
            help_on = _time([PY, "-m", "debvisor_core", "--help"], env, args.runs)
            help_off = _time([PY, "-m", "debvisor_core", "--help"],
                             {**env, "DEBVISOR_DISABLE_PLUGINS": "k8s"}, args.runs)
    finally:
        emu.stop()
        work.cleanup()
    print(f"k8s nodes --json (20 nodes, 200 pods): {dv * 1000:.0f} ms; "
          f"list_node() script: {peer * 1000:.0f} ms; ratio {dv / peer:.2f} (target <= 1.1)")
    print(f"debvisor --help with k8s: {help_on * 1000:.0f} ms, without: {help_off * 1000:.0f} ms; "
          f"ratio {help_on / help_off:.2f}")


if __name__ == "__main__":
    main()
