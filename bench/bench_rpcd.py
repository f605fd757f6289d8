"""debvisor-rpcd against a bare grpcio server, in the same run.

Peer: a sync grpcio server with mTLS answering an echo (no auth, no log) — the floor.
Measured: rpcd running a cheap read action (``maintenance.status``) with mTLS + API key +
RBAC + rate limit + the call log, durable (fsynced) and not: through ``Call`` (the unary
RPC for queries, what ``--remote`` and the clients use for them) and, labelled, through
``Invoke`` (server streaming: initial metadata and two messages). Two more rows split
Call's cost (measurement scaffolding, the daemon patched in its own process): the
security pipeline around an action that does nothing, and the action without the
pipeline. Servers are pinned to CPU 0 and the client to CPU 1 (unpinned runs on 2 vCPUs
were bimodal: see notes/rpcd.md); 16 calls in flight from client threads for
BENCH_SECONDS each. The echo runs first and last; ratios are to the mean of the two.
Besides calls/s, the server's CPU per call (from /proc) — the figure that stays put when
the machine is shared.
Targets: rpcd Call/bare >= 0.5 durable, >= 0.7 without fsync.

rpcd turns grpc's ``event_engine_listener`` experiment off (``debvisor_core.rpcd``): the
echo runs with grpc's defaults (the peer) and once more with that setting, and the last
column is the ratio to that one — how much of the gap is rpcd's own work. A reference
row runs the notes' prototype guard (section 7 of notes/rpcd.md, whose figures the
targets came from) around the echo, with grpc's defaults, in the same run.
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
from collections.abc import Callable
from pathlib import Path

import grpc

SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
IN_FLIGHT = 16
#: the echo with rpcd's grpc setting
TUNED = "echo, event_engine_listener off"

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

#: the guard of notes/rpcd.md section 7 (the prototype the targets were set from) around
#: the echo: API key (id lookup, SHA-256, compare_digest), certificate CN = key owner,
#: RBAC by method, a token bucket under a lock, one JSON line per call to an O_APPEND file
#: (fsynced in the worker when argv[3] is "durable"); no action runs
PROTO_SERVER = r'''
import hashlib, hmac, json, os, sys, threading, time, grpc
from concurrent import futures
d, log, durable = sys.argv[1], sys.argv[2], sys.argv[3] == "durable"
def rd(n):
    return open(d + "/" + n, "rb").read()
KEYS = {"k1": ("bench", hashlib.sha256(b"s3cret").digest())}
ROLES = {"bench": {"/bench.Proto/Echo"}}
fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
def write(rec):
    os.write(fd, (json.dumps(rec, separators=(",", ":")) + "\n").encode())
    if durable:
        os.fsync(fd)
class Bucket:
    def __init__(self, rate, burst):
        self.rate, self.burst, self.tokens = rate, burst, burst
        self.t, self.lock = time.monotonic(), threading.Lock()
    def take(self):
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
            self.t = now
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True
BUCKETS = {"bench": Bucket(1e9, 1e9)}
def check_key(key):
    try:
        _, kid, secret = key.split("_", 2)
        owner, digest = KEYS[kid]
    except (AttributeError, ValueError, KeyError):
        return None
    return owner if hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), digest) else None
class Guard(grpc.ServerInterceptor):
    def intercept_service(self, continuation, hcd):
        handler = continuation(hcd)
        method = hcd.method
        key = dict(hcd.invocation_metadata).get("x-api-key")
        principal = check_key(key)
        inner = handler.unary_unary
        def wrapped(request, context):
            t = time.time()
            cn = context.auth_context().get("x509_common_name", [b""])[0].decode()
            rec = {"ts": t, "peer": context.peer(), "cn": cn, "principal": principal, "method": method}
            code = (grpc.StatusCode.UNAUTHENTICATED if principal is None else
                    grpc.StatusCode.PERMISSION_DENIED
                    if cn != principal or method not in ROLES.get(principal, ()) else
                    grpc.StatusCode.RESOURCE_EXHAUSTED if not BUCKETS[principal].take() else None)
            if code:
                rec["code"] = code.name
                write(rec)
                context.abort(code, code.name)
            try:
                resp = inner(request, context)
                rec["code"] = "OK"
                return resp
            finally:
                rec.setdefault("code", "ERROR")
                rec["ms"] = round((time.time() - t) * 1e3, 3)
                write(rec)
        return grpc.unary_unary_rpc_method_handler(wrapped, handler.request_deserializer,
                                                   handler.response_serializer)
creds = grpc.ssl_server_credentials([(rd("node.key"), rd("node.pem"))], root_certificates=rd("ca.pem"),
                                    require_client_auth=True)
echo = grpc.unary_unary_rpc_method_handler(lambda r, c: r)
h = grpc.method_handlers_generic_handler("bench.Proto", {"Echo": echo})
s = grpc.server(futures.ThreadPoolExecutor(32), handlers=[h], interceptors=[Guard()],
                maximum_concurrent_rpcs=64)
port = s.add_secure_port("127.0.0.1:0", creds)
s.start()
print(f"READY 127.0.0.1:{port}", flush=True)
s.wait_for_termination()
'''

#: `debvisor rpcd serve` with one part of Call taken out (argv[1]: "action" or "pipeline")
SPLIT_SERVER = r'''
import sys
from debvisor_core.rpcd.cli import grpc_for_serving
grpc_for_serving()  # grpc as `rpcd serve` imports it
from debvisor_core.rpcd import server
from debvisor_core.rpcd.authz import Caller
from debvisor_core.rpcd.v1 import debvisor_pb2 as pb
if sys.argv.pop(1) == "pipeline":  # the guard, the call log and the metrics around nothing
    server.Node.Call = lambda self, request, context: pb.CallResponse()
else:  # the action and its answer without the guard (no auth, RBAC, rate limit, log)
    server.Guard.intercept_service = lambda self, continuation, details: continuation(details)
    server.caller = lambda: Caller("bench", "bench", roles=("viewer",))
sys.argv[0] = "debvisor"
from debvisor_core.entry import main
main()
'''


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if os.cpu_count() and os.cpu_count() > 1 else []  # type: ignore[operator]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load(call: Callable[[], object], seconds: float, pid: int) -> tuple[float, float, float, float]:
    """(calls/s, p50 ms, p99 ms, server CPU µs per call) of IN_FLIGHT threads calling."""
    lat: list[float] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker() -> None:
        mine = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            call()
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(IN_FLIGHT)]
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu = time.monotonic() - t0, _cpu_seconds(pid) - cpu0
    lat.sort()
    return (len(lat) / elapsed, statistics.median(lat) * 1000, lat[int(len(lat) * 0.99)] * 1000,
            cpu / len(lat) * 1e6)


def main() -> None:
    if os.cpu_count() and os.cpu_count() > 1:  # type: ignore[operator]
        os.sched_setaffinity(0, {1})
    from debvisor_core.rpcd import pki
    from debvisor_core.rpcd.cli import SERVER_EXPERIMENTS
    from debvisor_core.rpcd.v1 import debvisor_pb2 as pb
    from debvisor_core.rpcd.v1 import debvisor_pb2_grpc as pbg

    results: dict[str, tuple[float, float, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d = root / "pki"
        # rpcd's servers set their own grpc experiments (`rpcd serve`); the others say theirs
        env = {**{k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"},
               "DEBVISOR_STATE_DIR": str(root / "state"), "DEBVISOR_PLUGINS": ""}
        os.environ["DEBVISOR_STATE_DIR"] = env["DEBVISOR_STATE_DIR"]
        pki.init(d)
        pki.issue(d, "node", server=True, ips=("127.0.0.1",))
        pki.issue(d, "bench", kind="user")
        creds = grpc.ssl_channel_credentials((d / "ca.pem").read_bytes(), (d / "bench.key").read_bytes(),
                                             (d / "bench.pem").read_bytes())
        procs: list[subprocess.Popen[str]] = []

        def start(argv: list[str], extra: dict[str, str] | None = None) -> tuple[str, int]:
            p = subprocess.Popen([*_pin(0), *argv], env={**env, **(extra or {})}, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
            procs.append(p)
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.startswith("READY"), line
            return line.split()[1], p.pid

        def stop() -> None:
            while procs:
                p = procs.pop()
                p.terminate()
                p.wait(10)

        def echo(label: str, experiments: str = "") -> None:
            addr, pid = start([sys.executable, "-c", ECHO_SERVER, str(d)], {"GRPC_EXPERIMENTS": experiments})
            bare = grpc.secure_channel(addr, creds).unary_unary("/bench.Echo/Echo")
            for _ in range(200):
                bare(b"x" * 64, timeout=10)
            results[label] = _load(lambda: bare(b"x" * 64, timeout=10), SECONDS, pid)
            stop()

        try:
            echo("bare mTLS echo (first)")
            echo(TUNED, ",".join(SERVER_EXPERIMENTS))
            r = subprocess.run([sys.executable, "-m", "debvisor_core", "--json", "rpcd", "key", "create",
                                "--owner", "bench", "--role", "viewer", "--ttl", "1h"],
                               env=env, capture_output=True, text=True, check=True)
            key = json.loads(r.stdout)["key"]
            md = [("x-api-key", key)]
            req = pb.InvokeRequest(action="maintenance.status")
            runs = [("rpcd Call, durable call log", "true", None, "Call"),
                    ("rpcd Call, log not fsynced", "false", None, "Call"),
                    ("rpcd Invoke (stream), durable", "true", None, "Invoke"),
                    ("rpcd Invoke (stream), no fsync", "false", None, "Invoke"),
                    ("split: pipeline, no action", "true", "pipeline", "Call"),
                    ("split: action, no pipeline", "true", "action", "Call")]
            for label, durable, split, method in runs:
                conf = root / f"rpcd-{durable}.toml"
                conf.write_text(f'[rpcd]\nlisten = "127.0.0.1:0"\nca = "{d}/ca.pem"\ncert = "{d}/node.pem"\n'
                                f'key = "{d}/node.key"\nrate = 1000000.0\nburst = 1000000.0\n'
                                f"durable_log = {durable}\n[rpcd.identities]\nbench = [\"viewer\"]\n")
                serve = ["rpcd", "serve", "--call-log", str(root / f"calls-{len(results)}.jsonl")]
                argv = [sys.executable, "-c", SPLIT_SERVER, split, *serve] if split else \
                    [sys.executable, "-m", "debvisor_core", *serve]
                addr, pid = start(argv, {"DEBVISOR_CONFIG": str(conf)})
                stub = pbg.NodeStub(grpc.secure_channel(addr, creds))

                def one(stub: pbg.NodeStub = stub, method: str = method) -> None:
                    if method == "Call":
                        if stub.Call(req, timeout=10, metadata=md).code:
                            raise RuntimeError("the benchmarked query failed")
                    else:
                        for _ in stub.Invoke(req, timeout=10, metadata=md):
                            pass

                for _ in range(200):  # warm: channel, caches, the plugins' first run
                    one()
                results[label] = _load(one, SECONDS, pid)
                stop()
            pmd = [("x-api-key", "dvk_k1_s3cret")]
            for mode in ("durable", "none"):  # the reference: the notes' prototype guard
                addr, pid = start([sys.executable, "-c", PROTO_SERVER, str(d),
                                   str(root / f"proto-{mode}.jsonl"), mode], {"GRPC_EXPERIMENTS": ""})
                proto = grpc.secure_channel(addr, creds).unary_unary("/bench.Proto/Echo")

                def guarded(proto: Callable[..., object] = proto) -> None:
                    proto(b"x" * 64, timeout=10, metadata=pmd)

                for _ in range(200):
                    guarded()
                label = "notes' prototype, " + ("fsync per line" if mode == "durable" else "no fsync")
                results[label] = _load(guarded, SECONDS, pid)
                stop()
            echo("bare mTLS echo (last)")
        finally:
            stop()
    # the peer measured before and after the rest: the machine's drift over the run (the
    # echo moved by up to 10 % between runs here) splits evenly between the ratios
    base = (results["bare mTLS echo (first)"][0] + results["bare mTLS echo (last)"][0]) / 2
    tuned = results[TUNED][0]
    print(f"{'server':36} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'srv µs/call':>12} {'ratio':>6} "
          f"{'to tuned':>9}")
    for label, (rps, p50, p99, cpu) in results.items():
        print(f"{label:36} {rps:9.0f} {p50:8.2f} {p99:8.2f} {cpu:12.0f} {rps / base:6.2f} {rps / tuned:9.2f}")


if __name__ == "__main__":
    main()
