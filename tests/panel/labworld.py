"""A real debvisor-rpcd for panel tests (no test module: imported by test_panel_vms.py and
tests/browser/test_panel_migrate.py).

:func:`start` gives an rpcd on 127.0.0.1 with mTLS from a fresh CA, the panel's proxy
certificate, users with passwords (`debvisor rpcd user add`), its own state directory and
call log, and a config merged over ``base`` (e.g. the libvirt lab's: its two nodes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debvisor_core.panel.settings import PanelSettings
from debvisor_core.rpcd import pki

if TYPE_CHECKING:
    from starlette.testclient import TestClient

ORIGIN = "https://testserver"


@dataclass
class RpcdWorld:
    root: Path
    state: Path
    pki: Path
    config: Path
    calllog: Path
    env: dict[str, str]
    address: str = ""
    proc: subprocess.Popen[str] | None = None
    users: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (role, password)

    def dv(self, *args: str, input: str | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "debvisor_core", *args], env=self.env,
                              input=input, capture_output=True, text=True, timeout=timeout)

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.calllog.read_text().splitlines() if x.strip()]

    def audit(self) -> list[dict[str, Any]]:
        path = self.state / "log" / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]

    def op(self, op_id: str) -> dict[str, Any]:
        res = self.dv("--json", "ops", "show", op_id)
        assert res.returncode == 0, res.stderr
        out: dict[str, Any] = json.loads(res.stdout)
        return out

    def settings(self, **over: Any) -> PanelSettings:
        d = self.pki
        base: dict[str, Any] = {"rpcd_address": self.address, "ca": str(d / "ca.pem"),
                                "cert": str(d / "panel.pem"), "key": str(d / "panel.key"),
                                "public_origin": ORIGIN}
        return PanelSettings(**{**base, **over})

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def start(root: Path, users: dict[str, tuple[str, str]], *, base: Path | None = None,
          extra: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> RpcdWorld:
    """An rpcd serving the config ``base`` (TOML) plus ``extra``; ``users``: name ->
    (role, password)."""
    from debvisor_core.lab.manager import merge, to_toml

    d = root / "pki"
    pki.init(d)
    pki.issue(d, "node1", server=True, ips=("127.0.0.1",))
    pki.issue(d, "panel", kind="proxy")
    conf: dict[str, Any] = tomllib.loads(base.read_text()) if base else {}
    merge(conf, {"rpcd": {"listen": "127.0.0.1:0", "ca": f"{d}/ca.pem",
                          "cert": f"{d}/node1.pem", "key": f"{d}/node1.key",
                          "proxies": ["panel"], "rate": 1000.0, "burst": 1000.0}})
    merge(conf, extra or {})
    config = root / "debvisor.toml"
    config.write_text(to_toml(conf))
    state = root / "state"
    state.mkdir(exist_ok=True)
    full_env = {**os.environ, "DEBVISOR_STATE_DIR": str(state), "DEBVISOR_CONFIG": str(config)}
    full_env.pop("DEBVISOR_FAULTS", None)
    full_env.update(env or {})
    w = RpcdWorld(root, state, d, config, root / "calls.jsonl", full_env, users=dict(users))
    for name, (role, password) in users.items():
        res = w.dv("rpcd", "user", "add", name, "--role", role, "--password-file", "-",
                   input=password + "\n")
        assert res.returncode == 0, res.stderr
    with (root / "rpcd.log").open("w") as errors:  # the child keeps its own descriptor
        w.proc = subprocess.Popen([sys.executable, "-m", "debvisor_core", "rpcd", "serve",
                                   "--call-log", str(w.calllog)], env=full_env,
                                  stdout=subprocess.PIPE, stderr=errors, text=True)
    assert w.proc.stdout is not None
    line = w.proc.stdout.readline()
    if not line.startswith("READY "):
        w.stop()
        raise AssertionError(f"rpcd did not start: {line!r}\n{(root / 'rpcd.log').read_text()}")
    w.address = line.split()[1]
    return w


# -- the libvirt lab's guests (as plugins/debvisor_libvirt/tests/conftest.py's HvLab) --------
class Guests:
    """Guests on the lab's nodes: boot, find, remove."""

    def __init__(self, lab_config: Path) -> None:
        self.config_path = lab_config
        self.config: dict[str, Any] = tomllib.loads(lab_config.read_text())
        self.dir = lab_config.parent

    def conn(self, node: str) -> Any:
        from debvisor_libvirt.nodes import lv

        return lv().open(str(self.config["hv"]["nodes"][node]["uri"]))

    def boot(self, name: str, node: str = "node1", *, memory_mib: int = 128) -> Path:
        """Define and boot ``name`` on ``node``; wait for its console; its console log."""
        from debvisor_libvirt import lab

        self.remove(name)
        log = self.dir / f"{name}.console.log"
        log.unlink(missing_ok=True)
        g = self.config["hv"]["guest"]
        lab.define_guest(self.conn(node), name, memory_mib=memory_mib, kernel=g["kernel"],
                         initrd=g["initrd"], console_log=log)
        lab.wait_console(log, timeout=120)
        return log

    def state(self, name: str) -> dict[str, str]:
        """Node -> libvirt state name of ``name`` there (nodes without it left out)."""
        from debvisor_libvirt.domains import state_name
        from debvisor_libvirt.nodes import lv

        out = {}
        for node in self.config["hv"]["nodes"]:
            try:
                out[node] = state_name(self.conn(node).lookupByName(name).state()[0])
            except lv().libvirtError:
                pass
        return out

    def where(self, name: str) -> list[str]:
        """Nodes on which ``name`` is running."""
        return sorted(n for n, st in self.state(name).items() if st == "running")

    def remove(self, name: str) -> None:
        from debvisor_libvirt.nodes import lv

        libvirt = lv()
        for node in self.config["hv"]["nodes"]:
            try:
                dom = self.conn(node).lookupByName(name)
            except libvirt.libvirtError:
                continue
            persistent = dom.isPersistent()
            if dom.isActive():
                dom.destroy()
            if persistent:
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


# -- the panel over such an rpcd (TestClient helpers shared by the plugin page tests) ---------
def csrf_of(html: str) -> str:
    import re

    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:2000]
    return m.group(1)


def log_in(c: Any, user: str, password: str) -> str:
    """Log ``user`` in through the form; the session's CSRF token."""
    r = c.post("/login", data={"user": user, "password": password,
                               "csrf": csrf_of(c.get("/login").text)})
    assert r.status_code == 303, r.text
    return csrf_of(c.get("/ops").text)


def task_of(c: Any, r: Any, timeout: float = 90) -> Any:
    """The live task an Apply (``r``: its 303 to /tasks/ID) started, once it has ended."""
    import re
    import time

    assert r.status_code == 303, r.text[:3000]
    m = re.fullmatch(r"/tasks/([0-9a-f]{12})", r.headers["location"])
    assert m, r.headers["location"]
    task = c.app.state.panel.hub.get(m.group(1))
    assert task is not None
    deadline = time.monotonic() + timeout
    while task.active:
        assert time.monotonic() < deadline, task.view()
        time.sleep(0.05)
    return task


def clients(world: RpcdWorld, users: dict[str, tuple[str, str]]
            ) -> Iterator[Callable[..., TestClient]]:
    """A fixture body: ``make(user)`` gives a panel TestClient logged in as ``user`` (its
    CSRF token in ``.csrf``); every client made is closed at the end."""
    from starlette.testclient import TestClient

    from debvisor_core.panel.app import create_app

    made: list[TestClient] = []

    def make(user: str = "alice") -> TestClient:
        c = TestClient(create_app(world.settings()), base_url=ORIGIN,
                       headers={"origin": ORIGIN}, follow_redirects=False)
        c.__enter__()
        made.append(c)
        c.csrf = log_in(c, user, users[user][1])  # type: ignore[attr-defined]
        return c

    yield make
    for c in made:
        c.__exit__(None, None, None)
