"""Benchmarks of the Ceph plugin (run: .venv/bin/python plugins/debvisor_ceph/bench/bench_ceph.py).

1. `debvisor ceph status --json` vs `ceph -s -f json` on the lab cluster (same run, ratio).
2. the cluster lock (`[ceph] cluster_lock`): RadosLock acquire+release in process vs
   `rados lock get` + `rados lock release` (same object, same run, ratio).
3. capacity, PG balance and OSD suggestion reports over a recorded dump scaled to 1,000 OSDs
   (target: each under 1 s).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import scaled_dump

VENV_BIN = Path(sys.executable).parent
RUNS = int(os.environ.get("BENCH_RUNS", "10"))


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {res.stderr.strip()[-300:]}")
    json.loads(res.stdout)
    return dt


def bench_status() -> None:
    lab = os.environ.get("DEBVISOR_LAB_DIR", "/tmp/dvbench-lab")
    env = {**os.environ, "DEBVISOR_LAB_DIR": lab, "DEBVISOR_STATE_DIR": lab + "-state"}
    st = subprocess.run([str(VENV_BIN / "debvisor"), "--json", "lab", "status"], capture_output=True,
                        text=True, env=env, timeout=60)
    was_running = st.returncode == 0 and json.loads(st.stdout)["services"].get("ceph", {}).get("running")
    up = subprocess.run([str(VENV_BIN / "debvisor"), "--json", "lab", "up", "ceph"], capture_output=True,
                        text=True, env=env, timeout=300)
    if up.returncode != 0:
        print(f"status benchmark skipped: lab up ceph failed: {up.stderr.strip()[-200:]}")
        return
    cfg = Path(lab, "debvisor.toml")
    sec = tomllib.loads(cfg.read_text())["ceph"]
    env["DEBVISOR_CONFIG"] = str(cfg)
    ours = [str(VENV_BIN / "debvisor"), "ceph", "status", "--json"]
    peer = ["ceph", "-c", sec["conf"], "-k", sec["keyring"], "-s", "-f", "json"]
    try:
        timed(ours, env), timed(peer, env)  # warm caches
        a = [timed(ours, env) for _ in range(RUNS)]
        b = [timed(peer, env) for _ in range(RUNS)]
        bench_lock(env, sec, Path(lab))
    finally:
        if not was_running:
            subprocess.run([str(VENV_BIN / "debvisor"), "lab", "down", "ceph"], capture_output=True, env=env,
                           timeout=120)
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"status: debvisor ceph status --json median {ma * 1000:.0f} ms, ceph -s -f json median "
          f"{mb * 1000:.0f} ms over {RUNS} runs; ratio {ma / mb:.2f} (debvisor/ceph)")


def bench_lock(env: dict[str, str], sec: dict[str, str], lab: Path) -> None:
    """Acquire + release of one cluster lock name: in process (connect included) vs the rados CLI."""
    import shutil

    from debvisor_ceph.clusterlock import LOCK_NAME, OBJ_PREFIX, LockSettings, RadosLock
    from debvisor_ceph.fileosd import connect

    from debvisor_core.context import Context
    from debvisor_core.engine import Operation

    cfg = Path(lab.parent, "bench-lock.toml")
    text = Path(env["DEBVISOR_CONFIG"]).read_text()
    cfg.write_text(text.replace("[ceph]\n", "[ceph]\ncluster_lock = true\n", 1))
    os.environ.update(DEBVISOR_CONFIG=str(cfg), DEBVISOR_STATE_DIR=env["DEBVISOR_STATE_DIR"])
    ctx = Context()
    s = LockSettings.from_ctx(ctx)
    op = Operation(kind="bench.lock", title="bench", steps=[])

    def ours() -> float:
        t = time.perf_counter()
        with RadosLock(ctx, op, ["bench"], s):
            pass
        return time.perf_counter() - t

    ours()  # creates the pool on first use
    a = [ours() for _ in range(RUNS)]
    line = f"cluster lock: acquire+release median {statistics.median(a) * 1000:.1f} ms (connect included)"
    if shutil.which("rados"):  # the CLI has no release: acquire only, on a fresh object each run
        base = ["rados", "-c", sec["conf"], "--keyring", sec["keyring"], "-p", s.pool]
        objs = [f"{OBJ_PREFIX}bench-peer-{os.getpid()}-{i}" for i in range(RUNS)]

        def peer(obj: str) -> float:
            t = time.perf_counter()
            subprocess.run([*base, "lock", "get", obj, LOCK_NAME, "--lock-cookie", "bench",
                            "--lock-duration", "5"], check=True, capture_output=True, timeout=60)
            return time.perf_counter() - t

        b = [peer(o) for o in objs]
        with connect(sec["conf"], sec["keyring"]) as c:
            io = c.open_ioctx(s.pool)
            for o in objs:
                io.remove_object(o)
            io.close()
        mb = statistics.median(b)
        line += (f"; `rados lock get` (acquire only) median {mb * 1000:.1f} ms; "
                 f"ratio {statistics.median(a) / mb:.2f} (debvisor/rados)")
    print(line)


def bench_analysis() -> None:
    from debvisor_ceph import analysis

    t = time.perf_counter()
    d = scaled_dump()
    print(f"synthetic dump: {len(d['osd_df']['nodes'])} OSDs, {len(d['pgs_brief'])} PGs "
          f"(built in {time.perf_counter() - t:.1f}s)")
    for name, fn in [("osd suggestions", lambda: analysis.osd_report(d)),
                     ("capacity", lambda: analysis.capacity(d, growth=("abs", 2 * 1024**4))),
                     ("pg balance", lambda: analysis.pg_balance(d, max_moves=50)),
                     ("maintenance plan", lambda: analysis.maintenance_plan("node007", d))]:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        best = min(times)
        extra = ""
        if name == "pg balance":
            extra = (f"; {sum(r['kind'] == 'upmap' for r in out['recommendations'])} upmap moves, stddev "
                     f"{out['pgs_per_osd']['stddev']} → {out['expected']['pgs_per_osd']['stddev']}")
        if name == "osd suggestions":
            extra = f"; {len(out['suggestions'])} suggestions"
        print(f"{name} over 1,000 OSDs: {best * 1000:.0f} ms ({'under' if best < 1 else 'OVER'} 1 s){extra}")


if __name__ == "__main__":
    bench_analysis()
    bench_status()
