"""The lab's panel and the browser tests' one TCG guest (no test module: used by conftest.py's
``plab`` and ``guest`` fixtures and by the tests that use them).

``plab``: `debvisor lab up libvirt rpcd panel`, the panel's URL, certificate and the lab
logins from `debvisor lab env`. ``guest``: the console guest, on node1, with a VNC password
(QEMU takes the tickets' passwords only then) and QEMU's ``input_event_*`` trace in a file;
started at once and booted in the background: the tests that need it booted (the console
and migration tests) call :meth:`Guest.ready`, so its boot overlaps the tests before them.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VM = "pbcons"  # the console guest (running, VNC with a password, QEMU input trace)
SPARE = "pbspare"  # defined, never started: a second VM to register (a second operation)


@dataclass
class PanelLab:
    url: str
    cert: Path  # the panel's HTTPS certificate: the key the browser pins
    key: Path
    ca: Path
    users: dict[str, str]  # user -> password (read from the lab's owner-only files)
    config: dict[str, Any]
    env: dict[str, str]
    dir: Path

    @property
    def state(self) -> Path:
        return Path(self.env["DEBVISOR_STATE_DIR"])

    @property
    def audit_log(self) -> Path:
        return self.state / "log" / "audit.jsonl"

    def dv(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "debvisor_core", *args], env=self.env,
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    def conn(self, node: str = "node1") -> Any:
        from debvisor_libvirt.nodes import lv

        return lv().open(self.config["hv"]["nodes"][node]["uri"])

    def console_events(self) -> list[dict[str, Any]]:
        """The console events the panel logged (``panel: console {...}``)."""
        text = (self.dir / "panel" / "panel.log").read_text(errors="replace")
        return [json.loads(m) for m in re.findall(r"panel: console (\{.*\})", text)]

    def calls(self) -> list[dict[str, Any]]:
        text = (self.dir / "rpcd" / "calls.jsonl").read_text()
        return [json.loads(x) for x in text.splitlines() if x.strip()]

    def op_status(self, op_id: str) -> str:
        res = self.dv("--json", "ops", "show", op_id)
        assert res.returncode == 0, res.stderr
        return str(json.loads(res.stdout)["status"])

    def register(self, vm: str) -> str:
        """A journalled operation to roll back: `hv register VM` (id)."""
        res = self.dv("--json", "hv", "register", vm, "--owner", "browser-test", "--yes")
        assert res.returncode == 0, res.stderr
        return str(json.loads(res.stdout)["id"])

    def remove(self, name: str) -> None:
        """Destroy and undefine ``name`` wherever it is."""
        from debvisor_libvirt.nodes import lv

        libvirt = lv()
        for node in self.config["hv"]["nodes"]:
            try:
                dom = self.conn(node).lookupByName(name)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()


def open_plab(dv_lab: Any) -> PanelLab:
    config_path = dv_lab.require("libvirt", "rpcd", "panel")
    res = subprocess.run([sys.executable, "-m", "debvisor_core", "--json", "lab", "env"],
                         env=dv_lab.env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    env = json.loads(res.stdout)
    users = {}
    for user, var in (("admin", "DEBVISOR_PANEL_PASSWORD_FILE"),
                      ("viewer", "DEBVISOR_PANEL_VIEWER_PASSWORD_FILE")):
        pw_file = Path(env[var])
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600, pw_file  # owner-only
        users[user] = pw_file.read_text().strip()
    assert env["DEBVISOR_PANEL_USER"] == "admin" and env["DEBVISOR_PANEL_VIEWER"] == "viewer"
    import tomllib

    config = tomllib.loads(config_path.read_text())
    panel = config["panel"]
    assert env["DEBVISOR_PANEL_URL"] == panel["public_origin"]
    return PanelLab(env["DEBVISOR_PANEL_URL"], Path(panel["tls_cert"]), Path(panel["tls_key"]),
                    Path(panel["ca"]), users, config,
                    {**dv_lab.env, "DEBVISOR_CONFIG": str(config_path)}, config_path.parent)


@dataclass
class Guest:
    name: str
    trace: Path
    console: Path

    def ready(self) -> Guest:
        """Wait until it has booted (its serial console spoke); at once when it has."""
        from debvisor_libvirt import lab

        lab.wait_console(self.console, timeout=120)
        return self

    def input_events(self) -> int:
        """QEMU's input trace lines so far (input_event_key_*, _btn, _rel, _abs, _sync)."""
        try:
            text = self.trace.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if "input_event_" in line)


def start_guest(plab: PanelLab, d: Path) -> Guest:
    """Define SPARE (never started) and start VM on node1; it boots in the background."""
    from debvisor_libvirt import lab

    events = d / "events"
    events.write_text("input_event_*\n")
    trace, console = d / "trace.log", d / "console.log"
    g = plab.config["hv"]["guest"]
    for name in (VM, SPARE):
        plab.remove(name)
    conn = plab.conn("node1")
    lab.define_guest(conn, SPARE, kernel=g["kernel"], initrd=g["initrd"], start=False)
    lab.define_guest(conn, VM, kernel=g["kernel"], initrd=g["initrd"], console_log=console,
                     vnc_password="initial",  # QEMU takes the tickets' passwords only then
                     qemu_args=["-trace", f"events={events}", "-D", str(trace)])
    return Guest(VM, trace, console)
