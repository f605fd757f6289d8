"""DNS plugin benchmark against the lab's BIND9 pair (same run, same servers).

1. 200 record changes with verification: one `debvisor dns update --batch` (one
   operation: an UPDATE per zone, one propagation wait on every server, DNSSEC-
   validated) vs 200 `nsupdate -k` runs (the old debvisor-dns-update.sh way), the
   latter with and without a `dig` check of each record on the secondary. The batch
   time is the median of --batch-runs runs (5; each its own 200 new records), since
   one run of well under a second moves with the machine's load.
   Targets: batch / nsupdate ≤ 0.15 (nsupdate *without* checks) and ≤ 0.1 against
   nsupdate + dig (the old script with its check).
2. p50 / p95 latency of one update plus propagation to the secondary: UPDATE sent →
   the secondary serves the new record (in-process, the plugin's own code path),
   and the wall time of one whole `debvisor dns update` command.

Run: /work/main/.venv/bin/python plugins/debvisor_dns/bench/bench_dns.py [--n 200]
Needs root and named/nsupdate/dig (Debian: bind9, bind9-dnsutils).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

PY = sys.executable


def _dv(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "debvisor_core", *args], env=env, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL, check=False)


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def _hp(addr: str) -> tuple[str, str]:
    host, _, port = addr.rpartition(":")
    return host, port


def bench_batch(env: dict[str, str], dns_cfg: dict[str, Any], n: int, tag: str) -> float:
    lines = [f"update {tag}-b{i} A 10.77.{4 + i // 250}.{i % 250 + 1} 300" for i in range(n)]
    batch = Path(env["DEBVISOR_LAB_DIR"]) / f"{tag}.batch"
    batch.write_text("\n".join(lines) + "\n")
    t = time.monotonic()
    res = _dv(env, "--json", "dns", "update", "--batch", str(batch), "--yes")
    took = time.monotonic() - t
    if res.returncode != 0:
        raise SystemExit(f"batch failed:\n{res.stderr}")
    prop = json.loads(res.stdout)["result"]["dns"]["propagation"]
    assert {p["server"] for p in prop} >= {dns_cfg["lab"]["secondary"]}
    return took


def bench_batches(env: dict[str, str], dns_cfg: dict[str, Any], n: int, tag: str,
                  runs: int) -> list[float]:
    """``runs`` batches of ``n`` new records each (their own names): one run's wall time
    varies with what else the machine does, so the comparison uses their median."""
    return [bench_batch(env, dns_cfg, n, f"{tag}r{k}") for k in range(runs)]


def bench_nsupdate(dns_cfg: dict[str, Any], n: int, tag: str, zone: str) -> tuple[float, float]:
    host, port = _hp(dns_cfg["lab"]["primary"])
    shost, sport = _hp(dns_cfg["lab"]["secondary"])
    key = dns_cfg["tsig_key_file"]
    t = time.monotonic()
    for i in range(n):
        name = f"{tag}-n{i}.{zone}."
        script = (f"server {host} {port}\nzone {zone}.\nupdate delete {name} A\n"
                  f"update add {name} 300 A 10.77.{8 + i // 250}.{i % 250 + 1}\nsend\n")
        res = subprocess.run(["nsupdate", "-k", key], input=script, text=True, check=False,
                             capture_output=True, timeout=30)
        if res.returncode != 0:
            raise SystemExit(f"nsupdate failed for {name}: {res.stderr.strip()}")
    plain = time.monotonic() - t
    for i in range(n):  # the old script's check: dig the record on the secondary until it's there
        name = f"{tag}-n{i}.{zone}."
        want = f"10.77.{8 + i // 250}.{i % 250 + 1}"
        deadline = time.monotonic() + 30
        while subprocess.run(["dig", "+short", "-p", sport, f"@{shost}", name, "A"],
                             capture_output=True, text=True, check=False).stdout.strip() != want:
            if time.monotonic() > deadline:
                raise SystemExit(f"nsupdate change {name} never reached the secondary")
    return plain, time.monotonic() - t


def bench_latency(env: dict[str, str], lab_cfg: Path, n: int, tag: str, cli_n: int
                  ) -> tuple[list[float], list[float]]:
    os.environ.update({k: env[k] for k in ("DEBVISOR_STATE_DIR", "DEBVISOR_CONFIG")})
    from debvisor_dns import wire
    from debvisor_dns.config import load
    from debvisor_dns.propagation import await_all

    from debvisor_core.context import Context

    cfg = load(Context())
    zone = next(z for z in cfg.zones.values() if not z.reverse)
    secondary = tomllib.loads(lab_cfg.read_text())["dns"]["lab"]["secondary"]
    zone.servers = [s for s in zone.all_servers if str(s) == secondary]
    key = cfg.key(zone).dns_key()
    lat = []
    for i in range(n):
        name = f"{tag}-l{i}.{zone.name}"
        change = {"zone": zone.name, "name": name, "type": "A",
                  "new": {"ttl": 300, "values": [f"10.77.12.{i % 250 + 1}"]}}
        t = time.monotonic()
        out = wire.send_update(zone, lambda c=change: wire.make_update(
            zone.name, key, [c], {f"{c['name']}/A": {"ttl": None, "values": []}}),
            timeout=5, key_name="bench")
        assert out.rcode == "NOERROR"
        await_all(cfg, [change], t0=t, timeout=10)
        lat.append((time.monotonic() - t) * 1000)
    cli = []
    for i in range(cli_n):
        t = time.monotonic()
        res = _dv(env, "dns", "update", f"{tag}-c{i}", f"10.77.13.{i + 1}", "--yes")
        if res.returncode != 0:
            raise SystemExit(res.stderr)
        cli.append((time.monotonic() - t) * 1000)
    return lat, cli


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="record changes (default 200)")
    ap.add_argument("--latency-n", type=int, default=50, help="single updates for p50/p95")
    ap.add_argument("--batch-runs", type=int, default=5,
                    help="batch runs whose median is compared (default 5)")
    args = ap.parse_args()
    missing = [p for p in ("named", "nsupdate", "dig") if shutil.which(p) is None]
    if missing or os.geteuid() != 0:
        print(f"SKIP dns bench: needs root and {', '.join(missing) or 'BIND'}")
        return
    base = Path(tempfile.mkdtemp(prefix="dvbench-dns-", dir="/tmp"))
    env = {**os.environ, "DEBVISOR_LAB_DIR": str(base / "lab"),
           "DEBVISOR_STATE_DIR": str(base / "state"), "DEBVISOR_PLUGINS": "dns"}
    env.pop("DEBVISOR_CONFIG", None)
    up = _dv(env, "--json", "lab", "up", "dns")
    if up.returncode != 0:
        raise SystemExit(f"lab up failed:\n{up.stderr}")
    lab_cfg = base / "lab" / "debvisor.toml"
    env["DEBVISOR_CONFIG"] = str(lab_cfg)
    try:
        dns_cfg = tomllib.loads(lab_cfg.read_text())["dns"]
        zone = next(z for z in dns_cfg["zones"] if not z.endswith(".arpa"))
        tag = f"bench{uuid.uuid4().hex[:6]}"
        runs = bench_batches(env, dns_cfg, args.n, tag, max(1, args.batch_runs))
        batch_s = statistics.median(runs)
        ns_plain, ns_checked = bench_nsupdate(dns_cfg, args.n, tag, zone)
        lat, cli = bench_latency(env, lab_cfg, args.latency_n, tag, 10)
        print(f"dns: {args.n} record changes, verified on primary + secondary (DNSSEC-validated):")
        print(f"  debvisor dns update --batch (one command)   {batch_s:7.2f} s"
              f"  (median of {len(runs)} runs: {', '.join(f'{r:.2f}' for r in runs)})")
        print(f"  {args.n} x nsupdate -k (no verification)         {ns_plain:7.2f} s")
        print(f"  {args.n} x nsupdate -k + dig check on secondary  {ns_checked:7.2f} s")
        print(f"  ratio batch / nsupdate                      {batch_s / ns_plain:7.3f}"
              f"  (target <= 0.15; vs nsupdate+dig {batch_s / ns_checked:.3f}, target <= 0.1)")
        print(f"dns: one update + propagation to the secondary, {len(lat)} runs (in-process):")
        print(f"  p50 {statistics.median(lat):6.1f} ms   p95 {_pct(lat, 95):6.1f} ms   "
              f"max {max(lat):6.1f} ms")
        print(f"dns: one whole `debvisor dns update` command (plan, preflight, UPDATE, "
              f"verification on both servers, journal, audit), {len(cli)} runs:")
        print(f"  p50 {statistics.median(cli):6.1f} ms   p95 {_pct(cli, 95):6.1f} ms")
    finally:
        _dv(env, "lab", "down", "dns")
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
