"""`debvisor lab up panel`: the web panel on 127.0.0.1, over the lab's rpcd, with lab logins.

It starts after rpcd (``after=["rpcd"]``) and uses rpcd's CA (``[rpcd] pki_dir`` of the lab):

- an HTTPS server certificate for 127.0.0.1 / localhost from the lab CA
  (``panel/panel-https.pem``; browsers trust it by pinning its key, or by trusting the CA);
- the ``panel`` proxy certificate rpcd's lab already issued and lists in ``[rpcd] proxies``
  (the certificate alone is nobody: every call carries the logged-in person's token);
- two people in rpcd's user store, made with ``debvisor rpcd user add`` and a random
  password read from an owner-only file in the lab dir (never on a command line): ``admin``
  (role ``admin``) and ``viewer`` (role ``viewer``, read-only);
- ``panel/panel.toml`` (``[panel]``: listen on a free loopback port, the TLS files, rpcd's
  address and the proxy certificate), then ``debvisor panel serve --config`` until it
  prints ``READY https://127.0.0.1:PORT``.

The lab config gets ``[panel]`` and ``[lab.env]`` (``DEBVISOR_PANEL_URL``,
``DEBVISOR_PANEL_USER``, ``DEBVISOR_PANEL_PASSWORD_FILE`` and the viewer's two), which
`debvisor lab env` prints as exports.

The libvirt lab's nodes live in network namespaces, where each guest's VNC listens on the
node's own 127.0.0.1: when the lab config has ``[hv.nodes.NAME] netns``, the panel is started
with ``DEBVISOR_PANEL_CONSOLE_NETNS`` (``{"node1": "dvl…-node1", …}``) and its console
reaches a node's VNC through :func:`forward` (root only, lab only).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from ..lab import LabContext, LabService
from ..lab import process as proc

#: the environment variable naming each lab node's network namespace (JSON object)
NETNS_ENV = "DEBVISOR_PANEL_CONSOLE_NETNS"
#: the lab's logins: user name -> rpcd role
USERS = {"admin": "admin", "viewer": "viewer"}
_READY_RE = re.compile(r"READY (https://\S+)")


def _password(path: Path) -> str:
    """The lab user's password from its owner-only file (made on first use)."""
    from ..secrets import read_secret, write_secret

    if path.exists():
        return read_secret(path, "lab panel password").decode().strip()
    pw = secrets.token_urlsafe(18)
    write_secret(path, (pw + "\n").encode(), "lab panel password")
    return pw


def _add_users(lctx: LabContext, rpcd_conf: Path) -> dict[str, Path]:
    """Create (or replace) the lab's users in rpcd's store; their password files."""
    env = {"DEBVISOR_CONFIG": str(rpcd_conf)}
    files = {}
    for user, role in USERS.items():
        pw_file = lctx.dir / f"{user}.password"
        _password(pw_file)
        res = _dv(["rpcd", "user", "add", user, "--role", role, "--password-file", str(pw_file)],
                  env)
        if res.returncode != 0:
            raise proc.LabError(f"debvisor rpcd user add {user} failed: "
                                f"{(res.stderr or res.stdout).strip()[-300:]}")
        files[user] = pw_file
    return files


def _dv(args: list[str], env: dict[str, str]) -> Any:
    import os
    import subprocess

    return subprocess.run([sys.executable, "-m", "debvisor_core", *args],  # noqa: S603
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def _netns_of(config: dict[str, Any]) -> dict[str, str]:
    nodes = ((config.get("hv") or {}).get("nodes") or {})
    return {str(n): str(v["netns"]) for n, v in nodes.items()
            if isinstance(v, dict) and v.get("netns")}


def _url(log: Path) -> str | None:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    found = _READY_RE.findall(text)
    return found[-1] if found else None


def _fragment(lctx: LabContext, panel: dict[str, Any], url: str,
              files: dict[str, Path]) -> dict[str, Any]:
    return {"panel": panel, "lab": {"env": {
        "DEBVISOR_PANEL_URL": url,
        "DEBVISOR_PANEL_USER": "admin", "DEBVISOR_PANEL_PASSWORD_FILE": str(files["admin"]),
        "DEBVISOR_PANEL_VIEWER": "viewer",
        "DEBVISOR_PANEL_VIEWER_PASSWORD_FILE": str(files["viewer"]),
        "DEBVISOR_PANEL_CA": str(panel["ca"]), "DEBVISOR_PANEL_CERT": str(panel["tls_cert"])}}}


def _start(lctx: LabContext) -> dict[str, Any]:
    from ..lab.manager import to_toml
    from ..rpcd import pki

    try:
        import grpc  # noqa: F401
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise proc.LabError(f"{exc.name} is not installed (debvisor-core[panel])") from None
    rpcd = lctx.config.get("rpcd") or {}
    if not rpcd.get("listen") or not rpcd.get("pki_dir"):
        raise proc.LabError("the lab's rpcd is not running: `debvisor lab up rpcd` first")
    rpcd_conf = lctx.lab_dir / "rpcd" / "rpcd.toml"
    pidfile, log, conf_file = lctx.dir / "panel.pid", lctx.dir / "panel.log", \
        lctx.dir / "panel.toml"
    files = {u: lctx.dir / f"{u}.password" for u in USERS}
    old = proc.read_pid(pidfile)
    if old and proc.alive(old) and conf_file.exists():
        import tomllib

        panel = tomllib.loads(conf_file.read_text())["panel"]
        url = _url(log)
        if panel.get("rpcd_address") == rpcd["listen"] and url and \
                all(f.exists() for f in files.values()):
            return _fragment(lctx, panel, url, files)
    proc.stop_pidfile(pidfile)
    pki_dir = Path(rpcd["pki_dir"])
    pki.issue(pki_dir, "panel-https", server=True, ips=("127.0.0.1",), dns=("localhost",),
              days=30, out=lctx.dir)  # from the CA rpcd serves with now
    files = _add_users(lctx, rpcd_conf)
    port = proc.free_port()
    panel = {"listen": f"127.0.0.1:{port}", "public_origin": f"https://127.0.0.1:{port}",
             "tls_cert": str(lctx.dir / "panel-https.pem"),
             "tls_key": str(lctx.dir / "panel-https.key"),
             "rpcd_address": rpcd["listen"], "ca": str(pki_dir / "ca.pem"),
             "cert": str(pki_dir / "panel.pem"), "key": str(pki_dir / "panel.key")}
    conf_file.write_text("# written by `debvisor lab up panel`\n" + to_toml({"panel": panel}))
    env = {"DEBVISOR_CONFIG": str(rpcd_conf)}
    netns = _netns_of(lctx.config)
    if netns:
        env[NETNS_ENV] = json.dumps(netns, sort_keys=True)
    log.write_text("")
    pid = proc.spawn([sys.executable, "-m", "debvisor_core", "panel", "serve", "--config",
                      str(conf_file)], pidfile=pidfile, log=log, env=env)
    proc.wait_for(lambda: _url(log) is not None, timeout=60, what="panel", log=log, pid=pid)
    url = _url(log)
    assert url is not None
    return _fragment(lctx, panel, url, files)


def _stop(lctx: LabContext) -> None:
    proc.stop_pidfile(lctx.dir / "panel.pid")


def _status(lctx: LabContext) -> dict[str, Any]:
    pid = proc.read_pid(lctx.dir / "panel.pid")
    running = bool(pid and proc.alive(pid))
    return {"running": running, "pid": pid,
            "url": _url(lctx.dir / "panel.log") if running else None}


def service() -> LabService:
    return LabService("panel", _start, _stop, _status, after=["rpcd"],
                      description="debvisor-panel (HTTPS) on 127.0.0.1 over the lab's rpcd, "
                                  "with the logins admin and viewer")


# -- the console's way into a lab node's network namespace ----------------------------------
def forward(netns: str, host: str, port: int, *, timeout: float = 10.0) -> tuple[str, int]:
    """A one-shot TCP forwarder: listens on 127.0.0.1 (an ephemeral port) here and relays
    the first connection made within ``timeout`` to ``host:port`` inside ``netns``.
    Returns the address to connect to. Lab only (setns needs root)."""
    from ..lab.netns import connect

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(timeout)
    addr = listener.getsockname()

    def serve() -> None:
        try:
            try:
                client, _ = listener.accept()
            finally:
                listener.close()
            with client:
                client.settimeout(None)
                with connect(netns, host, port, timeout=timeout) as upstream:
                    upstream.settimeout(None)
                    _relay(client, upstream)
        except OSError:  # nobody came, or the VM's VNC went away: the proxy reports it
            return

    threading.Thread(target=serve, daemon=True, name=f"panel-netns-{netns}").start()
    return str(addr[0]), int(addr[1])


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until either side closes."""
    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    t = threading.Thread(target=pump, args=(b, a), daemon=True)
    t.start()
    pump(a, b)
    t.join()
