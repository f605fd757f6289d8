"""`debvisor lab up rpcd`: a debvisor-rpcd per lab node, and the lab's own, on 127.0.0.1
with the lab's CA.

It starts after the other lab services. The lab's rpcd serves their whole config (the hv
nodes, the DNS servers, the Ceph cluster), so every lab action can be called through it;
the lab config gets ``[rpcd.client]`` (its address and the ``admin`` certificate): after
``eval "$(debvisor lab env)"``, ``debvisor rpcd call hv.list`` works. Each node of the
libvirt lab (``[hv.nodes]``) gets an rpcd of its own, as a real node has: its server
certificate (CN = the node's name), its own state directory and call log, and a config
whose ``[hv.nodes]`` is that node alone. The lab config gets ``[rpcd.nodes.NODE]
address`` for each, so ``debvisor --remote node1 hv list`` runs on node1's rpcd, and
``debvisor lab env`` exports ``DEBVISOR_RPCD`` and ``DEBVISOR_RPCD_<NODE>`` (the addresses).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

from ..lab import LabContext, LabService
from ..lab import process as proc

#: the lab's CA's user certificates and their roles (``panel``: a proxy, no role)
_USERS = (("admin", "user"), ("viewer", "user"), ("panel", "proxy"))


def _nodes(lctx: LabContext) -> dict[str, Any]:
    """The libvirt lab's nodes (``[hv.nodes]`` of the lab config), by name."""
    nodes = (lctx.config.get("hv") or {}).get("nodes") or {}
    return {str(k): v for k, v in sorted(nodes.items()) if isinstance(v, dict)}


def _pidfiles(lctx: LabContext) -> list[Path]:
    return [lctx.dir / "rpcd.pid", *sorted(lctx.dir.glob("rpcd-*.pid"))]


def _serve(lctx: LabContext, name: str, served: dict[str, Any], state: Path | None) -> None:
    """Start one rpcd (``name``: "rpcd" or "rpcd-NODE") on ``served`` (a whole config)."""
    conf_file = lctx.dir / f"{name}.toml"
    from ..lab.manager import to_toml

    conf_file.write_text(f"# written by `debvisor lab up rpcd`\n{to_toml(served)}")
    env = {"DEBVISOR_CONFIG": str(conf_file)}
    if state is not None:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        env["DEBVISOR_STATE_DIR"] = str(state)
    log = lctx.dir / f"{name}.log"
    pid = proc.spawn([sys.executable, "-m", "debvisor_core", "rpcd", "serve"],
                     pidfile=lctx.dir / f"{name}.pid", log=log, env=env)
    host, _, port = served["rpcd"]["listen"].rpartition(":")
    proc.wait_for(lambda: proc.port_open(host, int(port)), timeout=60, what=name, log=log, pid=pid)


def _start(lctx: LabContext) -> dict[str, Any]:
    from ..lab.manager import merge
    from . import pki

    try:
        import grpc  # noqa: F401
    except ImportError:
        raise proc.LabError("grpcio is not installed (debvisor-core[rpcd])") from None
    nodes = _nodes(lctx)
    clash = sorted(set(nodes) & {"ca", "node", *(u for u, _ in _USERS)})
    if clash:  # their certificates would be the lab CA's own files
        raise proc.LabError(f"lab node names {', '.join(clash)} are taken by the lab's CA files")
    kept = lctx.dir / "fragment.json"
    pids = [proc.read_pid(p) for p in _pidfiles(lctx)]
    if kept.exists() and pids and all(p and proc.alive(p) for p in pids):
        fragment: dict[str, Any] = json.loads(kept.read_text())
        if sorted(fragment["rpcd"].get("nodes", {})) == sorted(nodes):
            return fragment  # running, for the same nodes
    _stop(lctx)
    d = lctx.dir / "pki"
    if not (d / "ca.pem").exists():
        pki.init(d, days=30)
        pki.issue(d, "node", server=True, ips=("127.0.0.1",), dns=("localhost",), days=30)
        for user, kind in _USERS:
            pki.issue(d, user, kind=kind, days=30)
    for node in nodes:
        if not (d / f"{node}.pem").exists():
            pki.issue(d, node, server=True, ips=("127.0.0.1",), dns=("localhost",), days=30)
    client = {"ca": str(d / "ca.pem"), "cert": str(d / "admin.pem"), "key": str(d / "admin.key")}

    def rpcd(cert: str, port: int, calls: str) -> dict[str, Any]:
        return {"listen": f"127.0.0.1:{port}", "ca": str(d / "ca.pem"), "cert": str(d / f"{cert}.pem"),
                "key": str(d / f"{cert}.key"), "pki_dir": str(d), "proxies": ["panel"],
                "call_log": str(lctx.dir / calls),
                "identities": {"admin": ["admin"], "viewer": ["viewer"]}}

    port = proc.free_port()
    ports = {node: proc.free_port() for node in nodes}
    fragment = {"rpcd": {**rpcd("node", port, "calls.jsonl"),
                         "client": {"address": f"127.0.0.1:{port}", **client},
                         "nodes": {n: {"address": f"127.0.0.1:{p}"} for n, p in ports.items()}},
                "lab": {"env": {"DEBVISOR_RPCD": f"127.0.0.1:{port}", **{
                    f"DEBVISOR_RPCD_{re.sub(r'[^A-Z0-9]', '_', n.upper())}": f"127.0.0.1:{p}"
                    for n, p in ports.items()}}}}
    try:
        # the lab's: its services, and rpcd (this fragment's, not an earlier start's)
        base = {k: v for k, v in copy.deepcopy(lctx.config).items() if k != "rpcd"}
        _serve(lctx, "rpcd", merge(base, fragment), None)
        for node, p in ports.items():  # a node's: its own libvirtd, state and call log
            mine = copy.deepcopy(lctx.config)
            mine.setdefault("hv", {})["nodes"] = {node: copy.deepcopy(nodes[node])}
            mine["rpcd"] = {**rpcd(node, p, f"calls-{node}.jsonl"),
                            "client": {"address": f"127.0.0.1:{p}", **client}}
            _serve(lctx, f"rpcd-{node}", mine, lctx.dir / node / "state")
    except BaseException:
        _stop(lctx)
        raise
    kept.write_text(json.dumps(fragment))
    return fragment


def _stop(lctx: LabContext) -> None:
    for pidfile in _pidfiles(lctx):
        proc.stop_pidfile(pidfile)


def _status(lctx: LabContext) -> dict[str, Any]:
    def running(pidfile: Path) -> dict[str, Any]:
        pid = proc.read_pid(pidfile)
        return {"running": bool(pid and proc.alive(pid)), "pid": pid}

    out = running(lctx.dir / "rpcd.pid")
    nodes = {p.stem.removeprefix("rpcd-"): running(p) for p in _pidfiles(lctx)[1:]}
    if nodes:
        out["nodes"] = nodes
        out["running"] = out["running"] and all(n["running"] for n in nodes.values())
    return out


def service() -> LabService:
    return LabService("rpcd", _start, _stop, _status, after=["ceph", "dns", "libvirt"],
                      description="debvisor-rpcd per lab node and the lab's own, on 127.0.0.1 "
                                  "with the lab's CA (mTLS)")
