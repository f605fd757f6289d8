"""`debvisor lab up rpcd`: a debvisor-rpcd on 127.0.0.1 with the lab's own CA.

It starts after the other lab services and serves their config (the hv nodes, the DNS
servers, the Ceph cluster), so every lab action can be called through it. The lab config
gets ``[rpcd.client]`` (address and the ``admin`` certificate): after
``eval "$(debvisor lab env)"``, ``debvisor rpcd call hv.list`` works.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from ..lab import LabContext, LabService
from ..lab import process as proc


def _start(lctx: LabContext) -> dict[str, Any]:
    from ..lab.manager import merge, to_toml
    from . import pki

    try:
        import grpc  # noqa: F401
    except ImportError:
        raise proc.LabError("grpcio is not installed (debvisor-core[rpcd])") from None
    pidfile = lctx.dir / "rpcd.pid"
    old = proc.read_pid(pidfile)
    conf_file = lctx.dir / "rpcd.toml"
    if old and proc.alive(old) and conf_file.exists():
        import tomllib

        return {"rpcd": tomllib.loads(conf_file.read_text())["rpcd"]}
    d = lctx.dir / "pki"
    if not (d / "ca.pem").exists():
        pki.init(d, days=30)
        pki.issue(d, "node", server=True, ips=("127.0.0.1",), dns=("localhost",), days=30)
        for name, kind in (("admin", "user"), ("viewer", "user"), ("panel", "proxy")):
            pki.issue(d, name, kind=kind, days=30)
    port = proc.free_port()
    fragment = {"rpcd": {
        "listen": f"127.0.0.1:{port}", "ca": str(d / "ca.pem"), "cert": str(d / "node.pem"),
        "key": str(d / "node.key"), "pki_dir": str(d), "proxies": ["panel"],
        "call_log": str(lctx.dir / "calls.jsonl"),
        "identities": {"admin": ["admin"], "viewer": ["viewer"]},
        "client": {"address": f"127.0.0.1:{port}", "ca": str(d / "ca.pem"),
                   "cert": str(d / "admin.pem"), "key": str(d / "admin.key")}}}
    served = merge(copy.deepcopy(lctx.config), fragment)  # the lab's services, and rpcd
    conf_file.write_text("# written by `debvisor lab up rpcd`\n" + to_toml(served))
    log = lctx.dir / "rpcd.log"
    pid = proc.spawn([sys.executable, "-m", "debvisor_core", "rpcd", "serve"], pidfile=pidfile,
                     log=log, env={"DEBVISOR_CONFIG": str(conf_file)})
    proc.wait_for(lambda: proc.port_open("127.0.0.1", port), timeout=60, what="rpcd", log=log,
                  pid=pid)
    return fragment


def _stop(lctx: LabContext) -> None:
    proc.stop_pidfile(lctx.dir / "rpcd.pid")


def _status(lctx: LabContext) -> dict[str, Any]:
    pid = proc.read_pid(lctx.dir / "rpcd.pid")
    return {"running": bool(pid and proc.alive(pid)), "pid": pid}


def service() -> LabService:
    return LabService("rpcd", _start, _stop, _status, after=["ceph", "dns", "libvirt"],
                      description="debvisor-rpcd on 127.0.0.1 with the lab's CA (mTLS)")
