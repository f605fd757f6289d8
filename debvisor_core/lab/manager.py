"""`debvisor lab` behind the CLI: start, stop and inspect the contributed services."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import log
from ..errors import BadInput, DebvisorError
from . import LabContext, LabService

if TYPE_CHECKING:  # pragma: no cover
    from ..context import Context


def lab_dir(ctx: Context) -> Path:
    env = os.environ.get("DEBVISOR_LAB_DIR")
    return Path(env) if env else ctx.state_dir / "lab"


def config_file(ctx: Context) -> Path:
    return lab_dir(ctx) / "debvisor.toml"


def services(ctx: Context) -> list[LabService]:
    """Every contributed service, in start order (``after`` respected)."""
    found: dict[str, LabService] = {}
    for batch in ctx.hook.debvisor_lab_services():
        for svc in batch or []:
            found[svc.name] = svc
    ordered: list[LabService] = []
    seen: set[str] = set()

    def visit(svc: LabService, stack: tuple[str, ...] = ()) -> None:
        if svc.name in seen:
            return
        if svc.name in stack:
            raise DebvisorError(f"lab services depend on each other in a cycle: {stack}")
        for dep in svc.after:
            if dep in found:
                visit(found[dep], (*stack, svc.name))
        seen.add(svc.name)
        ordered.append(svc)

    for svc in sorted(found.values(), key=lambda s: s.name):
        visit(svc)
    return ordered


def _select(ctx: Context, only: tuple[str, ...]) -> list[LabService]:
    svcs = services(ctx)
    if only:
        names = {s.name for s in svcs}
        unknown = [o for o in only if o not in names]
        if unknown:
            raise BadInput(f"unknown lab service {unknown[0]!r}; known: {', '.join(sorted(names))}")
        svcs = [s for s in svcs if s.name in only]
    return svcs


def missing(svc: LabService) -> str | None:
    """Why ``svc`` cannot run on this machine, or None."""
    if svc.root and os.geteuid() != 0:
        return "needs root"
    absent = [n for n in svc.needs if shutil.which(n) is None and not Path(n).exists()]
    return f"missing {', '.join(absent)}" if absent else None


def _lctx(ctx: Context, svc: LabService, config: dict[str, Any]) -> LabContext:
    d = lab_dir(ctx) / svc.name
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return LabContext(dir=d, lab_dir=lab_dir(ctx), config=config)


def _state(ctx: Context) -> dict[str, Any]:
    try:
        return json.loads((lab_dir(ctx) / "lab.json").read_text())
    except (OSError, ValueError):
        return {"services": {}}


def _save(ctx: Context, state: dict[str, Any]) -> None:
    d = lab_dir(ctx)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    (d / "lab.json").write_text(json.dumps(state, indent=2))
    merged: dict[str, Any] = {}
    for name in state["services"]:
        merge(merged, state["services"][name].get("config", {}))
    (d / "debvisor.toml").write_text(
        "# written by `debvisor lab up`: points the CLI at the lab's services\n" + to_toml(merged))


def up(ctx: Context, only: tuple[str, ...] = ()) -> dict[str, Any]:
    state = _state(ctx)
    merged: dict[str, Any] = {}
    for v in state["services"].values():
        merge(merged, v.get("config", {}))
    report: dict[str, Any] = {}
    for svc in _select(ctx, only):
        why = missing(svc)
        if why:
            log.warn(f"lab service {svc.name} skipped: {why}")
            report[svc.name] = {"status": "skipped", "reason": why}
            continue
        lctx = _lctx(ctx, svc, merged)
        log.info(f"lab: starting {svc.name}")
        try:
            fragment = svc.start(lctx) or {}
        except Exception as exc:
            log.error(f"lab service {svc.name} failed to start: {exc}")
            try:
                svc.stop(lctx)
            except Exception as stop_exc:  # noqa: BLE001
                log.warn(f"lab service {svc.name}: cleanup failed too: {stop_exc}")
            state["services"].pop(svc.name, None)
            _save(ctx, state)
            raise DebvisorError(f"lab service {svc.name} failed to start: "
                                f"{getattr(exc, 'message', exc)}") from exc
        merge(merged, fragment)
        state["services"][svc.name] = {"config": fragment}
        _save(ctx, state)
        report[svc.name] = {"status": "running", "config": fragment}
    _save(ctx, state)
    return {"lab_dir": str(lab_dir(ctx)), "config": str(config_file(ctx)), "services": report}


def down(ctx: Context, only: tuple[str, ...] = ()) -> dict[str, Any]:
    state = _state(ctx)
    report: dict[str, Any] = {}
    errors: list[str] = []
    for svc in reversed(_select(ctx, only)):
        if missing(svc) and svc.name not in state["services"]:
            continue
        lctx = _lctx(ctx, svc, {})
        try:
            svc.stop(lctx)
            report[svc.name] = "stopped"
        except Exception as exc:  # noqa: BLE001 - stop the others anyway
            errors.append(f"{svc.name}: {exc}")
            report[svc.name] = f"stop failed: {exc}"
        state["services"].pop(svc.name, None)
    _save(ctx, state)
    if not state["services"]:
        config_file(ctx).unlink(missing_ok=True)
    if errors:
        raise DebvisorError("lab down incomplete: " + "; ".join(errors))
    return {"services": report}


def status(ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for svc in services(ctx):
        why = missing(svc)
        if why:
            out[svc.name] = {"running": False, "unavailable": why}
            continue
        try:
            out[svc.name] = svc.status(_lctx(ctx, svc, {}))
        except Exception as exc:  # noqa: BLE001
            out[svc.name] = {"running": False, "error": str(exc)}
    return {"lab_dir": str(lab_dir(ctx)), "config": str(config_file(ctx)), "services": out}


def merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``new`` into ``into``."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v
    return into


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Serialise nested dicts as TOML tables (enough for lab configs)."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    out = []
    if prefix and (scalars or not tables):
        out.append(f"\n[{prefix}]")
    out += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items()]
    for k, v in tables.items():
        out.append(to_toml(v, f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)))
    return "\n".join(x for x in out if x) + ("\n" if not prefix else "")
