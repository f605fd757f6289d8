"""debvisor-rpcd against a bare grpcio server, in the same run.

Peer: a sync grpcio server with mTLS answering an echo (no auth, no log) — the floor.
Measured: rpcd invoking a cheap read action (``maintenance.status``) with mTLS + API key +
RBAC + the durable (fsynced) call log, and the same with the log not fsynced. Servers are
pinned to CPU 0 and the client to CPU 1 (unpinned runs on 2 vCPUs were bimodal: see
notes/rpcd.md); 16 calls in flight from client threads for BENCH_SECONDS each.
Targets: rpcd/bare >= 0.5 durable, >= 0.7 without fsync.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
IN_FLIGHT = 16

ECHO_SERVER = r'''
import sys, grpc
from concurrent import futures
d = sys.argv[1]
def rd(n):
    return open(d + "/" + n, "rb").read()
creds = grpc.ssl_server_credentials([(rd("node.key"), rd("node.pem"))], root_certificates=rd("ca.pem"),
                                    require_client_auth=True)
echo = grpc.unary_unary_rpc_method_handler(lambda r, c: r)
h = grpc.method_handlers_generic_handler("bench.Echo", {"Echo": echo})
s = grpc.server(futures.ThreadPoolExecutor(32), handlers=[h], maximum_concurrent_rpcs=64)
port = s.add_secure_port("127.0.0.1:0", creds)
s.start()
print(f"READY 127.0.0.1:{port}", flush=True)
s.wait_for_termination()
'''


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if os.cpu_count() and os.cpu_count() > 1 else []  # type: ignore[operator]


def _load(call: object, seconds: float) -> tuple[float, float, float]:
    lat: list[float] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker() -> None:
        mine = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            call()  # type: ignore[operator]
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(IN_FLIGHT)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    lat.sort()
    return len(lat) / elapsed, statistics.median(lat) * 1000, lat[int(len(lat) * 0.99)] * 1000


def main() -> None:
    if os.cpu_count() and os.cpu_count() > 1:  # type: ignore[operator]
        os.sched_setaffinity(0, {1})
    from debvisor_core.rpcd import pki
    from debvisor_core.rpcd.v1 import debvisor_pb2 as pb
    from debvisor_core.rpcd.v1 import debvisor_pb2_grpc as pbg

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d = root / "pki"
        env = {**os.environ, "DEBVISOR_STATE_DIR": str(root / "state"), "DEBVISOR_PLUGINS": ""}
        os.environ["DEBVISOR_STATE_DIR"] = env["DEBVISOR_STATE_DIR"]
        pki.init(d)
        pki.issue(d, "node", server=True, ips=("127.0.0.1",))
        pki.issue(d, "bench", kind="user")
        creds = grpc.ssl_channel_credentials((d / "ca.pem").read_bytes(), (d / "bench.key").read_bytes(),
                                             (d / "bench.pem").read_bytes())
        procs = []

        def start(argv: list[str], extra: dict[str, str] | None = None) -> str:
            p = subprocess.Popen([*_pin(0), *argv], env={**env, **(extra or {})}, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
            procs.append(p)
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.startswith("READY"), line
            return line.split()[1]

        try:
            echo = start([sys.executable, "-c", ECHO_SERVER, str(d)])
            ch = grpc.secure_channel(echo, creds)
            bare = ch.unary_unary("/bench.Echo/Echo")
            results = {"bare mTLS echo": _load(lambda: bare(b"x" * 64, timeout=10), SECONDS)}
            r = subprocess.run([sys.executable, "-m", "debvisor_core", "--json", "rpcd", "key", "create",
                                "--owner", "bench", "--role", "viewer", "--ttl", "1h"],
                               env=env, capture_output=True, text=True, check=True)
            key = json.loads(r.stdout)["key"]
            for label, durable in (("rpcd, durable call log", "true"), ("rpcd, log not fsynced", "false")):
                conf = root / f"rpcd-{durable}.toml"
                conf.write_text(f'[rpcd]\nlisten = "127.0.0.1:0"\nca = "{d}/ca.pem"\ncert = "{d}/node.pem"\n'
                                f'key = "{d}/node.key"\nrate = 1000000.0\nburst = 1000000.0\n'
                                f"durable_log = {durable}\n[rpcd.identities]\nbench = [\"viewer\"]\n")
                addr = start([sys.executable, "-m", "debvisor_core", "rpcd", "serve", "--call-log",
                              str(root / f"calls-{durable}.jsonl")], {"DEBVISOR_CONFIG": str(conf)})
                stub = pbg.NodeStub(grpc.secure_channel(addr, creds))
                req = pb.InvokeRequest(action="maintenance.status")
                md = [("x-api-key", key)]

                def one(stub: pbg.NodeStub = stub, req: pb.InvokeRequest = req,
                        md: list[tuple[str, str]] = md) -> None:
                    for _ in stub.Invoke(req, timeout=10, metadata=md):
                        pass

                one()
                results[label] = _load(one, SECONDS)
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    base = results["bare mTLS echo"][0]
    print(f"{'server':28} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}")
    for label, (rps, p50, p99) in results.items():
        print(f"{label:28} {rps:9.0f} {p50:8.2f} {p99:8.2f} {rps / base:6.2f}")


if __name__ == "__main__":
    main()
