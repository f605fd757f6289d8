"""`debvisor net …` declared once, as actions: show and diff (reads), apply and rollback
(operations: checkpoint + watchdog, probes, confirmation, persistence), confirm.

Light module: pyroute2 is imported only when an action runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from debvisor_core.actions import Action, Param
from debvisor_core.errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context
    from debvisor_core.model import Operation

DEFAULT_PROBES = ("gateway", "dns", "peers")


def settings(ctx: Context) -> dict[str, Any]:
    """``[net]``: driver, interfaces_file, networkd_dir, peers, probes, timeouts."""
    from .persist import DRIVERS

    s = dict(ctx.section("net"))
    if s.get("driver", "ifupdown") not in DRIVERS:
        raise BadInput(f"[net] driver {s['driver']!r} is not one of {', '.join(DRIVERS)}")
    return s


def _running() -> dict[str, Any]:
    from .kernel import open_netlink
    from .snapshot import snapshot

    with open_netlink() as ipr:
        return snapshot(ipr)


def _applied(ctx: Context) -> dict[str, Any] | None:
    import json

    p = ctx.plugin_state("net") / "applied.json"
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- net.show --------------------------------------------------------------------------------
def query_show(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from .steps import checkpoint

    return {**_running(), "pending": checkpoint(ctx).pending()}


def render_show(data: dict[str, Any]) -> None:
    from .render import state_text

    print(state_text(data))


# -- net.diff --------------------------------------------------------------------------------
def query_diff(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    import difflib

    from . import desired
    from .converge import plan
    from .persist import printable, read

    data = desired.load(Path(params["file"]))
    now = _running()
    target = desired.target(data, now, _applied(ctx))
    s = settings(ctx)
    driver = s.get("driver", "ifupdown")
    files = _files(driver, data, s)
    persisted = []
    for path, text in files.items():
        old = read(path) or ""
        if old != (text or ""):
            persisted.append({"file": path, "diff": "".join(difflib.unified_diff(
                printable(old).splitlines(True), (text or "").splitlines(True), path,
                f"{path} (desired)"))})
    return {"file": params["file"], "running": [c.description for c in plan(now, target)],
            "persisted": persisted, "driver": driver}


def render_diff(data: dict[str, Any]) -> None:
    if data["running"]:
        print(f"running -> {data['file']}:")
        for c in data["running"]:
            print(f"  {c}")
    else:
        print(f"running: the kernel already holds {data['file']}")
    if data["persisted"]:
        for f in data["persisted"]:
            print(f"persisted ({data['driver']}): {f['file']} differs:")
            print(f["diff"].rstrip())
    else:
        print(f"persisted ({data['driver']}): up to date")


# -- net.apply -------------------------------------------------------------------------------
def _files(driver: str, data: dict[str, Any] | None, s: dict[str, Any]) -> dict[str, str | None]:
    from . import persist

    files: dict[str, str | None] = dict(persist.files(driver, data, s)) if data else {}
    for old in persist.owned(driver, s):
        files.setdefault(old, None)  # networkd files of interfaces the new state drops
    return files


def _probes(ctx: Context, params: dict[str, Any], target: dict[str, Any],
            data: dict[str, Any] | None) -> list[dict[str, Any]]:
    from dataclasses import asdict

    from debvisor_core import log

    from . import desired, probes

    s = settings(ctx)
    specs = [probes.parse(p) for p in (params.get("probe") or s.get("probes") or DEFAULT_PROBES)]
    found = probes.expand(specs, gateways=desired.gateways(target),
                          nameservers=desired.nameservers(data or {}),
                          peers=[str(p) for p in s.get("peers") or []])
    if found and all(p.kind == "gateway" for p in found):
        log.warn("only the gateway is probed: it can answer while routing past it is broken; "
                 "add --probe dns, peers ([net] peers) or tcp:HOST:PORT beyond it")
    if not found and params.get("probe"):
        raise BadInput("none of the probes asked for has a target (no default gateway, "
                       "nameservers or [net] peers in this state)")
    return [asdict(p) for p in found]


def _operation(ctx: Context, params: dict[str, Any], *, kind: str, title: str,
               target: dict[str, Any], now: dict[str, Any], data: dict[str, Any] | None,
               files: dict[str, str | None], history: str) -> Operation | None:
    from debvisor_core.model import Operation

    from .converge import plan
    from .persist import read
    from .steps import WATCHDOG_MARGIN, NetApply, NetConfirm, NetPersist

    s = settings(ctx)
    changes = [c.description for c in plan(now, target)]
    stale = {p: t for p, t in files.items() if read(p) != t}
    if not changes and not stale and history == "push":
        return None
    probe_timeout = float(params.get("probe_timeout") or s.get("probe_timeout", 10))
    confirm = float(params["confirm_timeout"])
    watchdog = probe_timeout + confirm + WATCHDOG_MARGIN
    return Operation(
        kind=kind, title=title, locks=["net"], target={"file": params.get("file", "")},
        params={"file": params.get("file", ""), "confirm_timeout": confirm},
        steps=[NetApply(target, changes, watchdog, bool(params.get("i_have_console"))),
               NetConfirm(_probes(ctx, params, target, data), probe_timeout, confirm),
               NetPersist(s.get("driver", "ifupdown"), files, data, history)])


def plan_apply(ctx: Context, params: dict[str, Any]) -> Operation | None:
    from . import desired

    file = Path(params["file"])
    data = desired.load(file)
    now = _running()
    target = desired.target(data, now, _applied(ctx))
    _unique_addresses(target)
    s = settings(ctx)
    return _operation(ctx, params, kind="net.apply", title=f"apply {file}", target=target,
                      now=now, data=data, files=_files(s.get("driver", "ifupdown"), data, s),
                      history="push")


def _unique_addresses(state: dict[str, Any]) -> None:
    import ipaddress

    seen: dict[str, str] = {}
    for a in state["addresses"]:
        ip = str(ipaddress.ip_interface(a["address"]).ip)
        if ip in seen and seen[ip] != a["dev"]:
            raise BadInput(f"{ip} would be on both {seen[ip]} and {a['dev']}: an address "
                           "belongs to one interface")
        seen[ip] = a["dev"]


# -- net.confirm / net.rollback --------------------------------------------------------------
def execute_confirm(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from .steps import checkpoint

    cp = checkpoint(ctx)
    pending = cp.pending()
    if pending is None:
        raise BadInput("no network change is waiting for confirmation")
    ctx.audit("confirmed", seconds_left=round(pending["seconds_left"]))
    cp.confirm()
    if pending["applier_alive"]:
        return {"confirmed": True, "persisted_by": "the applying process"}
    with cp.locked():
        cp.finish("kept", by="net confirm")
    return {"confirmed": True, "persisted_by": None,
            "warning": "the applying process is gone: the change is kept in the kernel but "
                       "was not persisted; apply the file again to persist it"}


def render_confirm(data: dict[str, Any]) -> None:
    print("confirmed: the network change is kept" + (
        f" ({data['warning']})" if data.get("warning") else ""))


def execute_rollback(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from debvisor_core import engine

    from . import history
    from .steps import checkpoint
    from .watchdog import restore

    cp = checkpoint(ctx)
    pending = cp.pending()
    if pending is not None and not ctx.op_options.dry_run:
        ctx.audit("started", reason="roll back the change waiting for confirmation")
        changes = restore(cp, "net rollback")
        ctx.audit("restored", changes=changes)
        return {"status": "restored", "pending": True, "changes": changes}
    entry = history.latest(ctx.plugin_state("net"))
    if entry is None:
        raise BadInput("nothing to roll back: no kept network change is remembered")
    now = _running()
    files: dict[str, str | None] = dict(entry["files"])
    op = _operation(ctx, {**params, "file": f"history {entry['id']}"}, kind="net.rollback",
                    title=f"roll back the network change kept at {entry['id']}",
                    target=entry["running"], now=now, data=entry.get("applied"),
                    files=files, history=entry["id"])
    assert op is not None
    return engine.run(ctx, op).to_dict()


_CONFIRM = Param("confirm_timeout", "Seconds to wait for `net confirm` (or Enter) after the "
                 "probes pass; 0 keeps the change once they pass.", type="duration",
                 default=120, minimum=0, maximum=3600)
_PROBE = Param("probe", "A probe that must pass: gateway, dns, peers, icmp:ADDR or "
               "tcp:ADDR:PORT (repeat it; default: gateway, dns and peers).", type="list",
               default=[], metavar="PROBE")
_PROBE_TIMEOUT = Param("probe_timeout", "Seconds the probes may take, each retried until then "
                       "(default: [net] probe_timeout, else 10).", type="duration", default=None,
                       minimum=1, maximum=600)

ACTIONS = [
    Action("net.show", "Show the kernel's network state, normalised", query=query_show,
           render=render_show, privilege="none",
           description="Links by name (kind, master, MTU, MAC, state, bond and bridge "
                       "parameters), addresses, routes with their protocol and metric, rules, "
                       "and a change waiting for confirmation.",
           examples=("debvisor net show", "debvisor net show --json")),
    Action("net.diff", "Compare a desired state with the running and persisted ones",
           query=query_diff, render=render_diff, privilege="none",
           params=(Param("file", "The desired-state file (netplan v2-like YAML).",
                         type="path", positional=True),),
           examples=("debvisor net diff /etc/debvisor/net.yaml",)),
    Action("net.apply", "Apply a desired state; keep it only if probes pass and it is confirmed",
           plan=plan_apply, unchanged="the kernel and the persisted files already hold it",
           description="Saves the running state, starts a detached watchdog that restores it "
                       "at the deadline (even if this process is killed), applies the change "
                       "through netlink, announces moved addresses, waits out IPv6 DAD, runs "
                       "the probes, then waits for `net confirm` or Enter. Only then are the "
                       "persisted files written ([net] driver: ifupdown or networkd). Refuses "
                       "to cut the SSH session it runs in unless --i-have-console.",
           params=(Param("file", "The desired-state file (netplan v2-like YAML).", type="path",
                         positional=True), _CONFIRM, _PROBE, _PROBE_TIMEOUT,
                   Param("i_have_console", "Allow a change that cuts this SSH session.",
                         type="bool", default=False)),
           examples=("debvisor net apply net.yaml --dry-run",
                     "debvisor net apply net.yaml --probe dns --probe tcp:10.0.0.5:22",
                     "debvisor net apply net.yaml --confirm-timeout 0 --yes")),
    Action("net.confirm", "Keep the network change that waits for confirmation",
           execute=execute_confirm, render=render_confirm,
           examples=("debvisor net confirm",)),
    Action("net.rollback", "Return to the network state before the last kept change",
           execute=execute_rollback, kind="net.rollback",
           description="A change still waiting for confirmation is restored at once. "
                       "Otherwise the running state and the persisted files go back to what "
                       "the last kept change replaced, with the same probes and confirmation "
                       "as an apply.",
           params=(_CONFIRM, _PROBE, _PROBE_TIMEOUT,
                   Param("i_have_console", "Allow a change that cuts this SSH session.",
                         type="bool", default=False)),
           examples=("debvisor net rollback", "debvisor net rollback --confirm-timeout 0 --yes")),
]
