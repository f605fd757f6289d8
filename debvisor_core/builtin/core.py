"""The core's own hook implementations: step execution, the audit file sink, core
health checks and diagnostics. Registered in every process (``debvisor hv --help``
too), so everything beyond pluggy's marker is imported inside the hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from ..bundle import DiagnosticsBundle
    from ..context import Context
    from ..health import CheckResult, HealthCheck
    from ..model import Operation, Step


@hookimpl(trylast=True)
def debvisor_execute(ctx: Context, op: Operation, step: Step, prior: dict[str, Any]) -> Any:
    return step.apply(ctx, prior) or {}


@hookimpl(trylast=True)
def debvisor_rollback(ctx: Context, op: Operation, step: Step, record: dict[str, Any]) -> Any:
    step.undo(ctx, record)
    return True


@hookimpl
def debvisor_step_types() -> list[type[Step]]:
    from ..remote import RemoteAction

    return [RemoteAction]


@hookimpl
def debvisor_audit(ctx: Context, event: dict[str, Any]) -> None:
    from .. import audit

    audit.append(audit.log_path(ctx), event)


def _state_dir(ctx: Context) -> CheckResult:
    from ..health import CheckResult
    path = ctx.state_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".health-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return CheckResult.crit(f"state dir {path} is not writable: {exc.strerror}")
    return CheckResult.ok(f"state dir {path} is writable")


def _audit_chain(ctx: Context) -> CheckResult:
    from .. import audit
    from ..health import CheckResult
    problem = audit.unwritable_reason(ctx)
    if problem:
        return CheckResult.crit(problem)
    ok, msg, n = audit.verify(audit.log_path(ctx))
    return CheckResult.ok(msg, lines=n) if ok else CheckResult.crit(f"audit chain broken: {msg}")


def _interrupted(ctx: Context) -> CheckResult:
    from .. import journal
    from ..health import CheckResult
    bad = [o.summary() for o in journal.all_ops(ctx.state_dir)
           if o.effective_status in journal.BLOCKING]
    if bad:
        ids = ", ".join(f"{o['id']} ({o['status']})" for o in bad[:5])
        return CheckResult.warn(f"{len(bad)} operation(s) need attention: {ids}; "
                                "see `debvisor ops show ID`", operations=bad)
    return CheckResult.ok("no interrupted operations")


@hookimpl
def debvisor_health(ctx: Context) -> list[HealthCheck]:
    from ..health import HealthCheck
    return [
        HealthCheck("core.state-dir", _state_dir, timeout=5),
        HealthCheck("core.audit-chain", _audit_chain, timeout=30),
        HealthCheck("core.operations", _interrupted, timeout=10),
    ]


@hookimpl
def debvisor_diagnostics(ctx: Context, bundle: DiagnosticsBundle) -> None:
    import json
    import platform
    import sys
    from importlib.metadata import distributions

    from .. import __version__, audit, journal
    from ..redact import redact_config as redact

    versions = {
        "debvisor-core": __version__,
        "python": sys.version,
        "platform": platform.platform(),
        "distributions": sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions()),
        "plugins": {n: ctx.host.entries()[n].version for n in ctx.host.entries()},
    }
    bundle.add_text("versions.json", json.dumps(versions, indent=2))
    bundle.add_text("config.json", json.dumps(
        {"path": str(ctx.config.path), "config": redact(ctx.config.data)}, indent=2, default=str))
    events = list(audit.read(audit.log_path(ctx)))[-200:]
    bundle.add_text("audit-recent.jsonl", "".join(json.dumps(e) + "\n" for e in events))
    ops = [o.summary() for o in journal.all_ops(ctx.state_dir)[:50]]
    bundle.add_text("operations.json", json.dumps(ops, indent=2))
