"""The steps of a network change: apply (behind a checkpoint and its watchdog), probe and
confirm, persist. Undo restores the exact prior state from the journalled snapshot."""

from __future__ import annotations

import ipaddress
import json
import os
import select
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debvisor_core.errors import StepFailed
from debvisor_core.model import Finding, Step

from .checkpoint import Checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context

#: seconds the watchdog allows beyond probes and confirmation (DAD, slow netlink)
WATCHDOG_MARGIN = 15.0


def checkpoint(ctx: Context) -> Checkpoint:
    return Checkpoint.under(ctx.plugin_state("net"))


def _restore(ctx: Context, state: dict[str, Any], by: str) -> list[str]:
    """Converge the kernel to ``state`` (the prior snapshot) and announce the addresses."""
    from .watchdog import put_back

    cp = checkpoint(ctx)
    cp.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with cp.locked():
        changes = put_back(state)
        if cp.pending() is not None:
            cp.finish("restored", by=by, changes=changes)
    return changes


def ssh_arrival(state: dict[str, Any]) -> tuple[str, str] | None:
    """(server address, client address) of the SSH session this runs in, if any."""
    parts = os.environ.get("SSH_CONNECTION", "").split()
    if len(parts) != 4:
        return None
    try:
        client, server = ipaddress.ip_address(parts[0]), ipaddress.ip_address(parts[2])
    except ValueError:
        return None
    return str(server), str(client)


def _reaches(state: dict[str, Any], server: str, client: str) -> str | None:
    """Why ``state`` would cut the SSH session from ``client`` to ``server`` (None: it keeps it)."""
    mine = {a["dev"]: a for a in state["addresses"]
            if str(ipaddress.ip_interface(a["address"]).ip) == server}
    if not mine:
        return f"it removes {server}, the address this SSH session arrives on"
    dev = next(iter(mine))
    if not state["links"].get(dev, {}).get("up", True):
        return f"it sets {dev} down, which holds {server}, the address this SSH session uses"
    c = ipaddress.ip_address(client)
    for a in state["addresses"]:
        if c in ipaddress.ip_interface(a["address"]).network:
            return None  # on a connected prefix
    for r in state["routes"]:
        if r.get("table", 254) != 254 or not r.get("gateway"):
            continue
        net = ipaddress.ip_network("0.0.0.0/0" if c.version == 4 else "::/0") \
            if r["dst"] == "default" else ipaddress.ip_network(r["dst"])
        if net.version == c.version and c in net:
            return None
    return f"it leaves no route back to {client}, where this SSH session comes from"


@dataclass
class NetApply(Step):
    """Save the running state as the checkpoint, start the watchdog, converge the kernel to
    ``target``, wait out DAD and announce moved addresses. Undo restores the checkpoint."""

    TYPE = "net.apply"
    ORDER = 10

    target: dict[str, Any]
    changes: list[str] = field(default_factory=list)
    watchdog_s: float = 150.0
    i_have_console: bool = False

    def describe(self, ctx: Context) -> str:
        lines = [f"netlink: {len(self.changes)} change(s), after saving the running state; a "
                 f"detached watchdog restores it in {self.watchdog_s:.0f} s unless confirmed"]
        lines += [f"     - {c}" for c in self.changes]
        return "\n".join(lines)

    def check(self, ctx: Context) -> list[Finding] | None:
        from .kernel import open_netlink
        from .snapshot import snapshot

        with open_netlink() as ipr:
            now = snapshot(ipr)
        arrival = ssh_arrival(now)
        if arrival is None or _reaches(now, *arrival) is not None:
            return None  # not over SSH, or the session does not arrive here anyway
        why = _reaches(self.target, *arrival)
        if why is None:
            return None
        if self.i_have_console:
            return [Finding("warn", f"{why} (--i-have-console given)", "net.apply")]
        return [Finding("error", f"refusing this change: {why}; run it from a console and add "
                        "--i-have-console", "net.apply")]

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        from .kernel import open_netlink
        from .snapshot import snapshot

        with open_netlink() as ipr:
            now = snapshot(ipr)
        checkpoint(ctx).create(now)
        return {"snapshot": now}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any] | None:
        from .announce import announce, wait_dad
        from .converge import converge
        from .kernel import open_netlink

        cp = checkpoint(ctx)
        pid = cp.start_watchdog(self.watchdog_s, ctx.config_file)
        with cp.locked():
            with open_netlink() as ipr:
                made = converge(ipr, self.target)
                failed = wait_dad(ipr, 5)
        announced = announce(self.target, prior["snapshot"])
        if failed:
            raise StepFailed(f"duplicate address detection failed for {', '.join(failed)}: "
                             "another host on the link has it")
        return {"made": made, "watchdog_pid": pid, "announced": announced}

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        if "snapshot" not in record:
            return  # interrupted before the state was saved: nothing was changed
        _restore(ctx, record["snapshot"], by="rollback")

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        from .kernel import open_netlink
        from .snapshot import diff, snapshot

        with open_netlink() as ipr:
            left = diff(self.target, snapshot(ipr))
        if left:
            raise StepFailed("the kernel does not hold the desired state: " + "; ".join(left[:5]))


def _wait_confirmation(ctx: Context, cp: Checkpoint, until: float) -> bool:
    """Wait for `net confirm` (or Enter in this terminal) until ``until``; True if given."""
    from debvisor_core import log

    tty = sys.stdin.isatty() and not ctx.json
    last = 0.0
    while (left := until - time.time()) > 0:
        if cp.pending() is None or cp.pending()["confirmed"]:  # type: ignore[index]
            return True
        if time.monotonic() - last >= 10 or last == 0.0:
            last = time.monotonic()
            log.warn(f"keeping this network change needs a confirmation within {left:.0f} s: "
                     + ("press Enter here, or run " if tty else "run ")
                     + "`debvisor net confirm`; otherwise the prior state comes back")
        if tty:
            if select.select([sys.stdin], [], [], min(0.2, left))[0]:
                sys.stdin.readline()
                return True
        else:
            time.sleep(min(0.2, left))
    return cp.pending() is not None and bool(cp.pending()["confirmed"])  # type: ignore[index]


@dataclass
class NetConfirm(Step):
    """Run the probes, then wait for the operator's confirmation; keep the change only then."""

    TYPE = "net.confirm"
    ORDER = 20

    probes: list[dict[str, Any]]
    probe_timeout: float = 10.0
    confirm_timeout: float = 120.0

    def describe(self, ctx: Context) -> str:
        what = ", ".join(f"{p['kind']} {p['target']}" + (f":{p['port']}" if p.get("port") else "")
                         for p in self.probes) or "no probes"
        wait = (f"then wait up to {self.confirm_timeout:.0f} s for `net confirm` or Enter"
                if self.confirm_timeout else "then keep it (no confirmation asked)")
        return f"probe ({what}) for up to {self.probe_timeout:.0f} s; {wait}"

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any] | None:
        from . import probes

        results = probes.run([probes.Probe(**p) for p in self.probes], self.probe_timeout)
        if ctx.operation is not None:
            ctx.operation.result["probes"] = results
        bad = [r for r in results if not r["ok"]]
        if bad:
            raise StepFailed("probe failed: " + "; ".join(f"{r['probe']}: {r['error']}"
                                                         for r in bad))
        cp = checkpoint(ctx)
        if self.confirm_timeout:
            deadline = float((cp.dir / "deadline").read_text()) - 5
            until = min(time.time() + self.confirm_timeout, deadline)
            if not _wait_confirmation(ctx, cp, until):
                raise StepFailed(f"not confirmed within {self.confirm_timeout:.0f} s")
        with cp.locked():
            done = cp.finished()
            if done is not None and done.get("how") == "restored":
                raise StepFailed(f"the {done.get('by', 'watchdog')} restored the prior state "
                                 "before the change was kept")
            cp.confirm()
            cp.finish("kept", by="net apply")
        return {"probes": results}


@dataclass
class NetPersist(Step):
    """Write the persisted configuration (only after the change was kept), and remember what
    it replaced for `net rollback`. Undo puts every file back as it was."""

    TYPE = "net.persist"
    ORDER = 30

    driver: str
    files: dict[str, str | None]
    applied: dict[str, Any] | None
    #: "push": remember the prior state for `net rollback`; else the history entry to drop
    history: str = "push"

    def describe(self, ctx: Context) -> str:
        names = ", ".join(sorted(self.files)) or "no files"
        return f"persist ({self.driver}): {names}"

    def _state(self, ctx: Context) -> Path:
        return ctx.plugin_state("net")

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        from .persist import read

        prior: dict[str, str | None] = {path: read(path) for path in self.files}
        applied = self._state(ctx) / "applied.json"
        return {"files": prior,
                "applied": json.loads(applied.read_text()) if applied.is_file() else None}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any] | None:
        from .history import drop, push

        _write_files(self.files)
        _write_applied(self._state(ctx), self.applied)
        if self.history == "push":
            running = checkpoint(ctx).snapshot()
            entry = push(self._state(ctx), {"running": running, "files": prior["files"],
                                            "applied": prior["applied"], "driver": self.driver})
            return {"pushed": entry}
        return {"dropped": drop(self._state(ctx), self.history)}

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        from .history import put, remove

        if "files" not in record:
            return
        _write_files(record["files"])
        _write_applied(self._state(ctx), record.get("applied"))
        if record.get("pushed"):
            remove(self._state(ctx), record["pushed"])
        if record.get("dropped"):
            put(self._state(ctx), record["dropped"])


def _write_files(files: dict[str, str | None]) -> None:
    from .persist import encode

    for path, text in files.items():
        p = Path(path)
        if text is None:
            p.unlink(missing_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.debvisor-tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(encode(text))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)


def _write_applied(state: Path, applied: dict[str, Any] | None) -> None:
    path = state / "applied.json"
    if applied is None:
        path.unlink(missing_ok=True)
    else:
        _write_files({str(path): json.dumps(applied, indent=1, sort_keys=True)})
