"""`debvisor hv hook-event`: what libvirt's QEMU hook runs on every VM lifecycle event.

libvirt runs ``/etc/libvirt/hooks/qemu DOMAIN OPERATION SUB-OPERATION EXTRA`` with the
domain XML on stdin, synchronously, inside the API call that starts, stops or migrates the
domain (the call holds the domain's job: calling back into libvirt from here could wait
for ever). A non-zero exit aborts ``prepare``, ``start``, ``migrate`` and ``restore`` and
libvirt shows the hook's stderr; a failing ``reconnect`` or ``attach`` (libvirtd
restarting) makes libvirt kill the running domain. So:

* every event but the guarded ones exits 0, whatever happens here;
* the guarded events, ``prepare begin`` (every QEMU launch: start, restore, snapshot
  revert, incoming migration) and ``migrate begin`` (an incoming migration, before
  ``prepare``), are refused while this node is in maintenance mode
  (``STATE/maintenance.json``, which `debvisor maintenance enable` writes), unless the hv
  plugin allowed that VM for the undo of its own drain (:func:`allowed`);
* fail closed: when the maintenance state cannot be read (unreadable file, not JSON, a
  stuck file system past the :data:`BUDGET_S` watchdog, any error before the decision) a
  guarded event is refused. A node whose maintenance state is unknown may be halfway
  through a disk swap or an upgrade; a refused start says why on the operator's terminal
  and costs a retry, a start let through there defeats maintenance silently. (The file
  is replaced atomically, so a reader never sees half of it: a parse error is real
  damage, not a race.) The audit record is the other way round: failing to write it is
  reported on stderr (libvirt logs it) but decides nothing, or a full /var/log would stop
  every VM start on the host;
* start (``started begin``), stop (``stopped end``) and incoming migration (``migrate
  begin``) are audited to the node's audit log (the core's hash chain, and syslog like the
  core's sink), each with the VM's name, UUID, the libvirt event and, for a registered
  VM, its inventory record (owner, role, addresses) read from the domain XML on stdin:
  the inventory lives in the domain's metadata and travels with it, so there is nothing
  for the hook to update. The source node of a migration sees only ``stopped end``
  (libvirt gives it nothing else), audited as a stop.

The hook script (``hv hook install``) runs this module directly (``python -I -m
debvisor_libvirt.hookevent``): it imports the standard library and light core modules
(config, audit, identity, redact, timefmt), never the plugin host, click or libvirt.
``debvisor hv hook-event`` runs the same :func:`handle` through the CLI, for a person.
The cluster store of maintenance (the ceph plugin's RADOS omap) is not consulted: it is
plugin code and a network call inside libvirtd's; maintenance set from another node only
there reaches this hook once `maintenance enable` ran on this node too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.config import Config
    from debvisor_core.context import Context

#: (operation, sub-operation) pairs libvirt aborts on a non-zero exit that this hook guards
GUARDED = frozenset({("prepare", "begin"), ("migrate", "begin")})
#: audited events -> the audit record's result
AUDITED = {("started", "begin"): "started", ("stopped", "end"): "stopped",
           ("migrate", "begin"): "incoming-migration"}
BUDGET_S = 5.0
"""Watchdog: the hook gives up after this long (a guarded event undecided by then is
refused, an audit record not written by then is skipped with a warning)."""
META_NS = "https://debvisor.org/xmlns/hv/1"  # domains.META_NS (domains imports libvirt's glue)
_VM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")  # nodes.VM_NAME_RE, likewise
ALLOW_DIR = "hook-allow"
PENDING_DIR = "hook-pending"
PENDING_TTL_S = 600.0
"""What a guarded event leaves for the next event of the VM (``incoming``: the
``started begin`` right after an accepted ``migrate begin`` says so; ``refused``: the
``stopped end`` libvirt sends after a refused start is no stop and is not audited); a
marker older than this is stale."""


class Unknown(Exception):
    """The maintenance state cannot be read."""


class _Late(BaseException):
    """The watchdog fired."""


@dataclass
class Event:
    """One hook call: ``qemu VM OPERATION SUB-OPERATION EXTRA``."""

    vm: str
    operation: str
    sub: str
    extra: str = "-"

    @property
    def hook(self) -> str:
        return f"{self.operation} {self.sub}"

    @property
    def guarded(self) -> bool:
        return (self.operation, self.sub) in GUARDED

    @property
    def doing(self) -> str:
        """What a refusal refuses."""
        if self.operation == "migrate":
            return f"accept the incoming migration of VM {self.vm}"
        return f"start VM {self.vm}"


@dataclass
class Outcome:
    """What :func:`handle` decided: exit 0 (``allowed``) or 1 with ``message`` on stderr."""

    allowed: bool | None = None  # None: not decided (yet)
    message: str | None = None
    audited: str | None = None
    warnings: list[str] = field(default_factory=list)


# -- state ---------------------------------------------------------------------------------
def maintenance(state_dir: Path) -> dict[str, Any] | None:
    """This node's maintenance record, None when it is not in maintenance, Unknown when
    the record cannot be read (the reader of debvisor_core.builtin.maintenance, without
    the cluster store and without treating damage as "off")."""
    path = state_dir / "maintenance.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Unknown(f"{path} cannot be read ({exc.strerror})") from None
    try:
        rec = json.loads(raw)
    except ValueError:
        raise Unknown(f"{path} is not valid JSON") from None
    if not isinstance(rec, dict):
        raise Unknown(f"{path} does not hold a maintenance record")
    return rec or None


def _allow_path(state_dir: Path, vm: str) -> Path | None:
    if not _VM_NAME.fullmatch(vm):
        return None
    return state_dir / "plugins" / "hv" / ALLOW_DIR / f"{vm}.json"


def allowance(state_dir: Path, vm: str) -> dict[str, Any] | None:
    """The unexpired allowance for VM to start or arrive here during maintenance."""
    path = _allow_path(state_dir, vm)
    if path is None:
        return None
    try:
        rec = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    until = rec.get("until") if isinstance(rec, dict) else None
    if isinstance(until, int | float) and not isinstance(until, bool) and until > time.time():
        return rec
    return None


@contextmanager
def allowed(ctx: Context, vm: str, why: str, ttl: float = 3600.0) -> Iterator[None]:
    """Let VM start on or migrate into this node while it is in maintenance, for the
    ``with`` block: the undo of the hv plugin's own drain migrates the VMs back before
    maintenance mode goes (its step is undone last)."""
    from debvisor_core.statefile import write_json

    path = _allow_path(ctx.state_dir, vm)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    op = getattr(ctx.operation, "id", None)
    write_json(path, {"vm": vm, "why": why, "operation": op, "until": time.time() + ttl})
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _pending(state_dir: Path, vm: str) -> Path | None:
    if not _VM_NAME.fullmatch(vm):
        return None
    return state_dir / "plugins" / "hv" / PENDING_DIR / vm


def node_name(cfg: Config | None) -> str:
    """``[hv] node``, else ``[cluster] node`` (maintenance's name for this node), else the
    short host name."""
    import socket

    for section in ("hv", "cluster"):
        try:
            value = cfg.section(section).get("node") if cfg is not None else None
        except Exception:  # noqa: BLE001 - a bad table names no node
            value = None
        if isinstance(value, str) and value:
            return value
    return socket.gethostname().split(".")[0]


def domain_info(xml: bytes) -> dict[str, Any]:
    """UUID and, for a registered VM, the inventory record, from the domain XML."""
    if not xml.strip():
        return {}
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    out: dict[str, Any] = {"uuid": root.findtext("uuid")}
    meta = root.find(f"metadata/{{{META_NS}}}vm")
    if meta is not None and meta.get("registered") == "yes":

        def text(tag: str) -> str | None:
            n = meta.find(tag)
            if n is None:
                n = meta.find(f"{{{META_NS}}}{tag}")
            return n.text.strip() if n is not None and n.text else None

        def texts(path: str) -> list[str]:
            a, b = path.split("/")
            found = meta.findall(path) or meta.findall(f"{{{META_NS}}}{a}/{{{META_NS}}}{b}")
            return [n.text.strip() for n in found if n.text and n.text.strip()]

        out["inventory"] = {"registered": True, "owner": text("owner"), "role": text("role"),
                            "tags": texts("tags/tag"), "addresses": texts("addresses/address")}
    return out


# -- the decision --------------------------------------------------------------------------
def decide(state_dir: Path, ev: Event, node: str, out: Outcome) -> dict[str, Any]:
    """Set ``out.allowed`` (and ``out.message``) for a guarded event; return what the audit
    record adds."""
    if not ev.guarded:
        out.allowed = True
        return {}
    try:
        rec = maintenance(state_dir)
    except Unknown as exc:
        out.allowed = False
        out.message = (f"DebVisor refuses to {ev.doing} on node {node}: its maintenance state "
                       f"cannot be read ({exc}), and the libvirt hook fails closed; repair "
                       f"it (`debvisor maintenance status`), then try again")
        return {"reason": "maintenance state unreadable", "problem": str(exc)}
    if rec is None:
        out.allowed = True
        return {}
    allow = allowance(state_dir, ev.vm)
    if allow is not None:
        out.allowed = True
        return {"maintenance": True, "allowed_by": allow.get("why"),
                "allowed_operation": allow.get("operation")}
    why = f": {rec['reason']}" if rec.get("reason") else ""
    out.allowed = False
    out.message = (f"DebVisor refuses to {ev.doing}: node {node} is in maintenance mode since "
                   f"{rec.get('since', '?')} (by {rec.get('by', '?')}){why}; "
                   f"`debvisor maintenance disable` ends it")
    return {"reason": "maintenance", "maintenance_since": rec.get("since"),
            "maintenance_reason": rec.get("reason") or None}


AuditFn = Callable[[str, dict[str, Any], int], None]


def handle(ev: Event, xml: bytes, state_dir: Path, cfg: Config | None, audit: AuditFn,
           out: Outcome, t0: float) -> Outcome:
    """Decide (guarded events) and audit (:data:`AUDITED` events and every refusal)."""
    node = node_name(cfg)
    extra = decide(state_dir, ev, node, out)
    result = "refused" if out.allowed is False else AUDITED.get((ev.operation, ev.sub))
    if result is None and not extra:
        return out
    if result is None:  # let through during maintenance (the drain's own undo)
        result = "allowed-in-maintenance"
    details: dict[str, Any] = {"what": "VM lifecycle (libvirt hook)", "vm": ev.vm,
                               "node": node, "hook": ev.hook}
    info = domain_info(xml)
    details["uuid"] = info.get("uuid")
    details.update(extra)
    if out.message:
        details["message"] = out.message
    marker = _pending(state_dir, ev.vm)
    if marker is not None and not _track(marker, ev, out, details):
        return out  # the cleanup of a refused start: nothing stopped
    if info.get("inventory"):
        details["inventory"] = info["inventory"]
    audit(result, details, int((time.monotonic() - t0) * 1000))
    out.audited = result
    return out


def _track(marker: Path, ev: Event, out: Outcome, details: dict[str, Any]) -> bool:
    """Leave or read the VM's marker (:data:`PENDING_TTL_S`); False: do not audit."""
    try:
        if ev.guarded:
            if out.allowed is False or ev.operation == "migrate":
                marker.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                marker.write_text("refused" if out.allowed is False else "incoming")
            return True
        what = marker.read_text()
        fresh = time.time() - marker.stat().st_mtime < PENDING_TTL_S
        if ev.operation == "started":  # it runs: whatever came before is settled
            marker.unlink()
            if fresh and what == "incoming":
                details["incoming_migration"] = True
        elif ev.operation == "stopped":
            marker.unlink()
            return not (fresh and what == "refused")
    except FileNotFoundError:
        pass
    except OSError as exc:
        out.warnings.append(f"marker {marker}: {exc.strerror}")
    return True


# -- the fast path: the hook script runs this ----------------------------------------------
def _write_audit(cfg: Config | None, argv: list[str]) -> AuditFn:
    """An audit writer like debvisor_core.audit.record without the plugin host: the core's
    file chain, then syslog like the core's sink (``[audit] syslog``); plugins' sinks
    (the ceph plugin's RADOS copy) are not run inside libvirtd's call."""

    def write(result: str, details: dict[str, Any], duration_ms: int) -> None:
        import socket

        from debvisor_core import audit, config
        from debvisor_core.identity import who
        from debvisor_core.redact import scrub
        from debvisor_core.timefmt import iso_utc

        event = {"time": iso_utc(), "host": socket.gethostname(), "user": who(), "argv": argv,
                 "plugin": "hv", "action": "hook-event", "operation": None, "result": result,
                 "duration_ms": duration_ms, "details": scrub(details)}
        rec = audit.append(config.log_dir() / "audit.jsonl", event)  # audit.log_path
        syslog_on = True
        if cfg is not None:
            try:
                syslog_on = cfg.section("audit").get("syslog") is not False
            except Exception:  # noqa: BLE001 - a bad [audit] table: keep the default
                pass
        if syslog_on and os.path.exists("/dev/log"):
            import syslog

            syslog.openlog("debvisor-audit", 0, syslog.LOG_AUTHPRIV)
            syslog.syslog(syslog.LOG_INFO, f"seq={rec.get('seq')} hash={rec.get('hash')} "
                          + json.dumps(rec, sort_keys=True, default=str))

    return write


def _load_config() -> Config | None:
    from debvisor_core import config

    try:
        return config.load(config.config_path())
    except Exception:  # noqa: BLE001 - no config: defaults (the node's host name)
        return None


def _alarm(signum: int, frame: Any) -> None:
    raise _Late


def _run_chain(chain: str, args: list[str], xml: bytes) -> int:
    """Run the hook that was installed before DebVisor's (its stdout is libvirt's: on
    ``migrate``/``restore`` it may hand back a changed domain XML)."""
    import subprocess

    try:
        return subprocess.run([chain, *args], input=xml, check=False).returncode  # noqa: S603
    except OSError as exc:
        print(f"DebVisor hook: the chained hook {chain} cannot run ({exc.strerror}); "
              f"ignored", file=sys.stderr)
        return 0


def main(argv: list[str] | None = None) -> int:
    """``[--hook PATH] [--chain PATH] [--] VM OPERATION SUB-OPERATION [EXTRA]``, the domain
    XML on stdin; ``--check`` only proves that this interpreter can run the hook."""
    t0 = time.monotonic()
    args = list(sys.argv[1:] if argv is None else argv)
    hook, chain = "qemu", None
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag == "--":
            break
        if flag == "--check":
            from debvisor_core import audit, config, identity, redact  # noqa: F401

            print(f"ok: {sys.executable} runs the hook (state {config.state_dir()})")
            return 0
        if flag in ("--hook", "--chain") and args:
            value = args.pop(0)
            hook, chain = (value, chain) if flag == "--hook" else (hook, value)
    ev = Event(*(args + ["-"] * 4)[:4])
    try:
        xml = sys.stdin.buffer.read()
    except (OSError, ValueError):
        xml = b""
    out = Outcome()
    use_alarm = hasattr(signal, "setitimer")
    if use_alarm:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, BUDGET_S)
    try:
        try:
            from debvisor_core import config

            cfg = _load_config()
            handle(ev, xml, config.state_dir(), cfg, _write_audit(cfg, [hook, *args[:4]]),
                   out, t0)
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except _Late:
        out.warnings.append(f"gave up after {BUDGET_S:g}s (watchdog)")
    except Exception as exc:  # noqa: BLE001 - decided below: closed for guarded events only
        out.warnings.append(f"{type(exc).__name__}: {exc}")
    if out.allowed is None and ev.guarded:
        out.allowed = False
        out.message = (f"DebVisor refuses to {ev.doing}: the libvirt hook could not decide "
                       f"({'; '.join(out.warnings)}) and fails closed")
        out.warnings = []
    for w in out.warnings:
        print(f"DebVisor hook ({ev.hook} of {ev.vm}): {w}", file=sys.stderr)
    if ev.guarded and not out.allowed:
        print(out.message, file=sys.stderr)
        return 1
    if chain:
        return _run_chain(chain, [ev.vm, ev.operation, ev.sub, ev.extra, *args[4:]], xml)
    return 0


if __name__ == "__main__":
    sys.exit(main())
