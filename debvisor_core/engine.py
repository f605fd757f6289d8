"""Operations: plan → lock → preflight → confirm → audit "started" → journalled steps →
verify → audit.

The model (:class:`Step`, :class:`Operation`, :class:`Phase`, :class:`Finding`) lives in
:mod:`debvisor_core.model`; this module runs it. The journal stores each step's
registered ``TYPE@VERSION`` and parameters, so a later process (``ops rollback``,
``ops resume``) rebuilds it from the registry of steps installed plugins declare —
never by importing what a journal names. Everything shown or asked goes through the
invocation's run UI (:mod:`debvisor_core.ui`); nothing here prints or reads stdin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import journal, log, model
from .context import Context
from .errors import (
    BadInput,
    DebvisorError,
    PreflightRefused,
    RollbackIncomplete,
    RolledBack,
    StepFailed,
)
from .identity import operator
from .model import (
    GATE_PAUSE,
    PAUSE,
    ROLLBACK_ALL,
    ROLLBACK_PHASE_AND_PAUSE,
    Finding,
    Operation,
    OpResult,
    Phase,
    Step,
    UnknownStep,
)


class _Terminated(BaseException):
    """SIGTERM or SIGHUP during an operation: treated like a failure (rollback)."""


@contextmanager
def _signals_as_failure() -> Iterator[None]:
    """SIGTERM and SIGHUP (an ssh session that went away) roll back like a failure: the
    first one raises; later ones are ignored until the block (the rollback included) ends.
    On SIGHUP stdout and stderr go to /dev/null: writing to a hung-up terminal fails, and
    the rollback must not. Only the main thread can install handlers; a daemon's worker
    threads are stopped by their own cancellation instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.close(null)
        if fired:
            return  # already rolling back
        fired.append(signum)
        raise _Terminated(f"terminated by signal {signal.Signals(signum).name}")

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


# -- preflight ---------------------------------------------------------------
def _step_findings(ctx: Context, step: Step) -> list[Finding]:
    try:
        found = step.check(ctx) or []
    except DebvisorError as exc:
        return [Finding("error", exc.message, step.step_name)]
    return [f if f.source else dataclasses.replace(f, source=step.step_name) for f in found]


def preflight(ctx: Context, op: Operation, steps: list[Step] | None = None) -> list[Finding]:
    """Every finding about ``op``: the audit log, interrupted operations on its locks,
    plugins' preflight hooks and the own ``check`` of each step in ``steps`` (default:
    all; ``ops resume`` checks only the steps still to apply)."""
    from . import audit

    findings: list[Finding] = []
    problem = audit.unwritable_reason(ctx)
    if problem:
        findings.append(Finding("error", problem, "core.audit"))
    for op_state in journal.all_ops(ctx.state_dir):
        status = op_state.effective_status
        if (op_state.id != op.id and status in journal.BLOCKING
                and set(op_state.locks) & set(op.lock_names)):
            findings.append(Finding(
                "error",
                f"operation {op_state.id} ({op_state.kind}) is {status} and holds "
                f"{', '.join(sorted(set(op_state.locks) & set(op.lock_names)))}; run "
                f"`debvisor ops rollback {op_state.id}` or `debvisor ops resume {op_state.id}` "
                "first",
                "core.journal",
            ))
    for result in ctx.hook.debvisor_preflight(ctx=ctx, op=op):
        findings.extend(result or [])
    for step in op.steps if steps is None else steps:
        findings.extend(_step_findings(ctx, step))
    opts = dataclasses.asdict(ctx.op_options)
    for f in findings:
        if f.level == "error" and f.override and opts.get(f.override):
            f.level = "warn"
            f.message += f" (overridden by --{f.override.replace('_', '-')})"
    return findings


def _plan(ctx: Context, op: Operation) -> None:
    if not op.contributions:
        pass
    elif not op.phases:
        extra: list[Step] = []
        for contributed in ctx.hook.debvisor_steps(ctx=ctx, op=op):
            extra.extend(contributed or [])
        op.steps = sorted(op.steps + extra, key=lambda s: s.ORDER)  # stable
    else:
        _plan_phases(ctx, op)
    if not op.steps:
        raise BadInput(f"{op.title}: nothing to do")


def _plan_phases(ctx: Context, op: Operation) -> None:
    """The slots of a phased operation: each phase starts with the steps plugins contribute
    for it (``debvisor_phase_steps``: a gate such as Ceph's ok-to-stop for its nodes);
    ``debvisor_steps`` contributions form a first phase (ORDER below 50, failure undoes the
    operation) and a last one (after every other phase; failure pauses)."""
    order = lambda s: s.ORDER  # noqa: E731 - the sort key, stable
    extra = sorted((s for c in ctx.hook.debvisor_steps(ctx=ctx, op=op) for s in c or []),
                   key=order)
    phases: list[Phase] = []
    for ph in op.phases:
        gates = sorted((s for c in ctx.hook.debvisor_phase_steps(ctx=ctx, op=op, phase=ph)
                        for s in c or []), key=order)
        phases.append(dataclasses.replace(ph, steps=[*gates, *ph.steps]) if gates else ph)
    before, after = [s for s in extra if s.ORDER < 50], [s for s in extra if s.ORDER >= 50]
    if before:
        phases.insert(0, Phase("before", before, on_failure=ROLLBACK_ALL))
    if after:
        phases.append(Phase("after", after, on_failure=PAUSE))
    op.phases = phases
    op.steps = [s for p in phases for s in p.steps]


def _where(f: Finding) -> str:
    return f" [{f.source}]" if f.source else ""


def _plan_lines(ctx: Context, op: Operation) -> list[str]:
    lines = []
    for i, step in enumerate(op.steps, 1):
        k = op.phase_of(i - 1)
        where = f"[{op.phases[k].name}] " if k is not None else ""
        lines.append(f"{i}. {where}{step.describe(ctx)}")
    return lines


def _confirm(ctx: Context, question: str, refusal: str | None) -> None:
    """Ask ``question``; when nobody can be asked (and without --yes) refuse with
    ``refusal`` (``refusing to …``), or go ahead when ``refusal`` is None."""
    if ctx.yes:
        return
    answer = ctx.ui.ask(question)
    if answer is False:
        raise PreflightRefused("not confirmed; nothing was changed")
    if answer is None and refusal is not None:
        raise PreflightRefused(f"refusing to {refusal} without --yes in a non-interactive "
                               "session; nothing was changed")


def _log_findings(findings: list[Finding]) -> None:
    """Every finding but the first error (the refusal's own message) as a log line."""
    first_error = next((f for f in findings if f.level == "error"), None)
    for f in findings:
        if f is not first_error:
            {"error": log.error, "warn": log.warn}.get(f.level, log.info)(
                f"preflight: {f.message}{_where(f)}")


def _refuse(ctx: Context, op: Operation, res: OpResult, errors: list[Finding]) -> None:
    res.status, res.error = "refused", errors[0].message
    emit_result(ctx, res)
    more = f" (and {len(errors) - 1} more above)" if len(errors) > 1 else ""
    raise PreflightRefused(f"preflight refused {op.kind}: {errors[0].message}{_where(errors[0])}"
                           f"{more}; nothing was changed")


class _Fence:
    """Checks, before each step and before "finished", that the cluster lock (if any)
    is still ours; a lost lease fails the operation, which then rolls back."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def check(self) -> None:
        lost = getattr(self.cluster, "lost", None)
        reason = lost() if callable(lost) else None
        if reason:
            raise StepFailed(f"fenced: {reason}")


# -- running -----------------------------------------------------------------
def run(ctx: Context, op: Operation) -> OpResult:
    """Run ``op`` through the whole pipeline. Raises on refusal or failure."""
    opts = ctx.op_options
    t0 = time.monotonic()
    _plan(ctx, op)
    if op.target is None and ctx.target is not None:
        op.target = ctx.target
    steps_view = [{"name": s.step_name, "description": s.describe(ctx), "status": "planned"}
                  for s in op.steps]
    res = OpResult("", op.kind, op.title, "planned", steps_view, [])
    if opts.check or opts.dry_run:  # change nothing, take no lock
        findings = preflight(ctx, op)
        res.findings = [f.to_dict() for f in findings]
        errors = [f for f in findings if f.level == "error"]
        ctx.ui.plan(op.title, _plan_lines(ctx, op), findings)
        if errors:
            _refuse(ctx, op, res, errors)
        res.status = "checked" if opts.check else "dry-run"
        log.info(f"preflight passed for {op.kind}; nothing was changed (--check)" if opts.check
                 else "dry run: nothing was changed")
        return res
    from . import audit, locks

    op.id = journal.new_id()
    ctx.operation = op
    with locks.hold(ctx, op, op.lock_names) as cluster:
        # Preflight under the locks: what it found cannot go stale before the steps run.
        findings = preflight(ctx, op)
        res.findings = [f.to_dict() for f in findings]
        errors = [f for f in findings if f.level == "error"]
        if errors:  # the refusal names the operation; its plan is for --dry-run/--check
            _log_findings(findings)
            _refuse(ctx, op, res, errors)
        ctx.ui.plan(op.title, _plan_lines(ctx, op), findings)
        destructive = op.destructive or any(s.DESTRUCTIVE for s in op.steps)
        _confirm(ctx, f"Proceed with: {op.title}?",
                 f"run destructive operation '{op.kind}'" if destructive else None)
        header = {
            "kind": op.kind, "title": op.title, "params": op.params, "locks": op.lock_names,
            "user": operator(), "pid": os.getpid(), "argv": ctx.safe_argv(),
            "rollback_of": op.rollback_of, "target": op.target, "origin": ctx.origin,
            "phases": [p.to_json(op.phase_range(k).start) for k, p in enumerate(op.phases)],
            "steps": [{**s.to_json(ctx), "phase": op.phase_of(i)} for i, s in enumerate(op.steps)],
        }
        j = journal.Journal.create(ctx.state_dir, op.id, header)
        res.id = op.id
        with _signals_as_failure():
            try:
                # No change without its audit record: "started" is durable before any step.
                try:
                    audit.record(ctx, result="started", op_id=op.id,
                                 details={"kind": op.kind, "title": op.title,
                                          "params": op.params, "target": op.target})
                except (DebvisorError, _Terminated) as exc:
                    why = _describe_exc(exc)
                    j.append("finished", status="refused", error=why)
                    res.status, res.error = "refused", why
                    emit_result(ctx, res)
                    raise PreflightRefused(f"{why}; refusing to change state; nothing was "
                                           "changed") from None
                try:
                    log.info(f"operation {op.id}: {op.title}")
                    paused = _apply_all(ctx, op, j, res, fence=_Fence(cluster))
                except (Exception, KeyboardInterrupt, _Terminated) as exc:  # noqa: BLE001 - any failure rolls back
                    _fail(ctx, op, j, res, exc, t0)
            finally:
                j.close()
    res.result = op.result
    res.duration_ms = int((time.monotonic() - t0) * 1000)
    if paused is not None:
        res.status = "paused"
        audit.record(ctx, result="paused", op_id=op.id, duration_ms=res.duration_ms,
                     details={"kind": op.kind, "title": op.title, "phase": paused})
        log.info(f"operation {op.id} paused before phase {paused + 1} "
                 f"({op.phases[paused].name}); continue with `debvisor ops resume {op.id}`")
        return res
    res.status = "succeeded"
    audit.record(ctx, result="succeeded", op_id=op.id, duration_ms=res.duration_ms,
                 details={"kind": op.kind, "title": op.title, "params": op.params,
                          "result": op.result})
    log.info(f"operation {op.id} succeeded in {res.duration_ms / 1000:.1f}s")
    return res


def _fail(ctx: Context, op: Operation, j: journal.Journal, res: OpResult, exc: BaseException,
          t0: float, *, action: str = "run") -> None:
    """Record a failure, apply the failed phase's policy, audit it and raise."""
    from . import audit

    failed_at = _running_index(res)
    status, err, phase = _after_failure(ctx, op, j, exc, failed_at)
    res.status, res.error, res.result = status, err, op.result
    res.duration_ms = int((time.monotonic() - t0) * 1000)
    audit.record(ctx, result=status, op_id=op.id, duration_ms=res.duration_ms,
                 details={"kind": op.kind, "title": op.title, "error": err, "action": action,
                          "params": op.params, "result": op.result,
                          "failed_step": failed_at + 1 if failed_at is not None else None})
    emit_result(ctx, res)
    verb = "resume of " if action == "resume" else ""
    if status == "paused" and phase is not None:
        name = op.phases[phase].name
        undone = "its steps were undone" if op.phases[phase].on_failure != PAUSE else "nothing was undone"
        raise RolledBack(f"{verb}{op.title} failed in phase {name}: {err}; {undone} and the "
                         f"operation is paused (operation {op.id})",
                         hint=f"fix the cause, then `debvisor ops resume {op.id}` retries phase "
                              f"{name}, or `debvisor ops rollback {op.id}` undoes the rest")
    if status == "rolled-back":
        raise RolledBack(f"{verb}{op.title} failed: {err}; every applied step was undone "
                         f"(operation {op.id})") from None
    raise RollbackIncomplete(
        f"{verb}{op.title} failed: {err}; rollback is incomplete (operation {op.id})",
        hint=f"fix the cause, then run `debvisor ops rollback {op.id}` "
             f"(details: `debvisor ops show {op.id}`)") from None


def _apply_all(ctx: Context, op: Operation, j: journal.Journal, res: OpResult,
               start: int = 0, *, fence: _Fence | None = None) -> int | None:
    """Apply steps from ``start``; return the phase to continue at when a gate pauses."""
    hook = ctx.hook
    ui = ctx.ui
    total = len(op.steps)
    for i in range(start, total):
        step = op.steps[i]
        t = time.monotonic()
        res.steps[i]["status"] = "running"
        if fence is not None:
            fence.check()
        ui.step(i + 1, total, step.describe(ctx), "running")
        prior = step.snapshot(ctx) or {}
        j.append("intent", step=i, prior=prior)
        extra = hook.debvisor_execute(ctx=ctx, op=op, step=step, prior=prior)
        record = {**prior, **(extra or {})}
        j.append("applied", step=i, record=record)
        step.add_result(ctx, record)
        step.verify(ctx, record)
        j.append("verified", step=i)
        res.steps[i]["status"] = "done"
        res.steps[i]["duration_ms"] = int((time.monotonic() - t) * 1000)
        ui.step(i + 1, total, step.describe(ctx), "done")
        log.debug(f"step {step.step_name} took {time.monotonic() - t:.3f}s")
        k = op.phase_of(i)
        if (k is not None and i == op.phase_range(k).stop - 1 and k + 1 < len(op.phases)
                and op.phases[k].gate == GATE_PAUSE):
            j.append("paused", phase=k + 1, reason=f"gate after phase {op.phases[k].name}")
            return k + 1
    if fence is not None:
        fence.check()
    j.append("finished", status="succeeded")
    return None


def _describe_exc(exc: BaseException) -> str:
    if isinstance(exc, DebvisorError):
        return exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _undo_steps(ctx: Context, op: Operation, j: journal.Journal,
                pending: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """Undo (index, record) pairs in the given order; return the failures."""
    failures: list[str] = []
    hook = ctx.hook
    for i, record in pending:
        step = op.steps[i]
        _show_undo(ctx, i, step, "running")
        try:
            hook.debvisor_rollback(ctx=ctx, op=op, step=step, record=record)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - keep undoing the rest
            msg = _describe_exc(exc)
            j.append("undo-failed", step=i, error=msg)
            failures.append(f"step {i + 1} ({step.step_name}): {msg}")
            with contextlib.suppress(OSError):
                log.error(f"undo of step {i + 1} ({step.step_name}) failed: {msg}")
            _show_undo(ctx, i, step, "failed")
            continue
        j.append("undone", step=i)
        _show_undo(ctx, i, step, "done")
    return failures


def _show_undo(ctx: Context, i: int, step: Step, status: str) -> None:
    """Tell the UI; a UI that cannot be written to (a hung-up terminal) never stops an undo."""
    with contextlib.suppress(OSError):
        ctx.ui.undo(i + 1, step.describe(ctx), status)


def _pending_undo(st: journal.OpState, only: range | None = None) -> list[tuple[int, dict[str, Any]]]:
    """Steps still to undo, newest first: applied ones with their record, an
    in-flight one with its snapshot marked partial."""
    out: list[tuple[int, dict[str, Any]]] = []
    for s in reversed(st.steps):
        if only is not None and s.index not in only:
            continue
        if s.status in ("applied", "verified", "undo-failed") and s.record is not None:
            out.append((s.index, s.record))
        elif s.status in ("in-flight", "failed", "undo-failed") and s.prior is not None:
            out.append((s.index, {**s.prior, "_partial": True}))
    return out


def _after_failure(ctx: Context, op: Operation, j: journal.Journal, exc: BaseException,
                   failed: int | None) -> tuple[str, str, int | None]:
    """Journal the failure and apply the failed phase's policy: (status, error, phase)."""
    err = _describe_exc(exc)
    j.append("failed", step=failed, error=err)
    where = f" at step {failed + 1} ({op.steps[failed].step_name})" if failed is not None else ""
    with contextlib.suppress(OSError):  # a hung-up terminal must not stop the rollback
        log.error(f"operation {op.id} failed{where}: {err}")
    k = op.phase_of(failed) if failed is not None else None
    policy = op.phases[k].on_failure if k is not None else ROLLBACK_ALL
    if k is not None and policy in (ROLLBACK_PHASE_AND_PAUSE, PAUSE):
        failures: list[str] = []
        if policy == ROLLBACK_PHASE_AND_PAUSE:
            failures = _undo_steps(ctx, op, j, _pending_undo(journal.load(j.path), op.phase_range(k)))
        if failures:
            j.append("finished", status="rollback-incomplete", error=err)
            return "rollback-incomplete", err, k
        j.append("paused", phase=k, error=err)
        return "paused", err, k
    j.append("rollback", reason=err)
    failures = _undo_steps(ctx, op, j, _pending_undo(journal.load(j.path)))
    status = "rollback-incomplete" if failures else "rolled-back"
    j.append("finished", status=status, error=err)
    return status, err, None


def _running_index(res: OpResult) -> int | None:
    return next((i for i, s in enumerate(res.steps) if s.get("status") == "running"), None)


# -- after the fact: rollback / resume ----------------------------------------
def _declare_step_types(ctx: Context, type_name: str) -> None:
    """Ask installed plugins to declare their step classes (hook ``debvisor_step_types``):
    first the plugin the type's name points to, then every plugin."""
    name, version = model.parse_step_type(type_name)
    host = ctx.host
    if version is not None:
        word = name.split(".", 1)[0]
        module = host.load(word)
        fn = getattr(module, "debvisor_step_types", None) if module else None
        if callable(fn):
            fn()
        if model.registered(type_name):
            return
    for _ in ctx.hook.debvisor_step_types():
        pass


def _rebuild(ctx: Context, st: journal.OpState) -> Operation:
    """The journalled steps as objects, looked up in the step registry only."""
    steps = []
    for s in st.steps:
        try:
            if model.registered(s.type) is None:
                _declare_step_types(ctx, s.type)
            steps.append(model.build_step(s.type, s.params))
        except UnknownStep as exc:
            name = s.type.split("@")[0]
            origin = name.split(".")[0] if "@" in s.type else name.split(".")[0].split(":")[0]
            raise UnknownStep(
                f"cannot rebuild step {s.index + 1} of operation {st.id}: {exc.message}; it came "
                f"from plugin '{origin}'",
                hint=f"reinstall the plugin that ran it, then retry; `debvisor ops show {st.id}` "
                     "shows what was applied") from None
    phases = []
    for k, p in enumerate(st.phases):
        first, count = int(p.get("first", 0)), int(p.get("count", 0))
        phases.append(Phase(str(p.get("name", f"phase {k + 1}")), steps[first:first + count],
                            node=p.get("node"), on_failure=str(p.get("on_failure", ROLLBACK_ALL)),
                            gate=str(p.get("gate", "auto")),
                            nodes=tuple(str(n) for n in p.get("nodes") or ())))
    op = (Operation(kind=st.kind, title=st.title, phases=phases, params=st.params,
                    locks=st.locks, id=st.id, target=st.target) if phases else
          Operation(kind=st.kind, title=st.title, steps=steps, params=st.params,
                    locks=st.locks, id=st.id, target=st.target))
    if [type(x) for x in op.steps] != [type(x) for x in steps]:  # journal.load checks phases
        raise UnknownStep(f"operation {st.id}: its phases do not match its steps")
    return op


def _lock_stub(st: journal.OpState) -> Operation:
    """An operation object naming the journalled kind and locks, for the lock hooks."""
    return Operation(kind=st.kind, title=st.title, steps=[], locks=st.locks or [st.kind],
                     id=st.id, target=st.target)


def _check_rollbackable(st: journal.OpState, *, held: bool = False) -> None:
    """Refuse what cannot be rolled back; ``held``: we hold the journal's lock, so a
    "running" status means interrupted."""
    status = st.status if held else st.effective_status
    if status in ("rolled-back", "refused"):
        raise BadInput(f"operation {st.id} is already {status}; nothing to undo")
    if status in ("running", "rolling-back") and not held:
        raise BadInput(f"operation {st.id} is still running in another process")


def rollback_op(ctx: Context, op_id: str) -> OpResult:
    """Undo every applied (or interrupted) step of a journalled operation.

    The plan shown (and ``--dry-run``) comes from the journalled descriptions: no
    step is rebuilt before the operation's locks are held and the journal re-read.
    """
    from . import audit, locks

    path = journal.find(ctx.state_dir, op_id)
    st = journal.load(path)
    _check_rollbackable(st)
    pending = _pending_undo(st)
    ctx.ui.plan(f"Rollback of {st.id}: {st.title}",
                [f"undo {i + 1}. {st.steps[i].description}" for i, _ in pending], [], verb="")
    if ctx.op_options.dry_run or ctx.op_options.check:
        log.info("dry run: nothing was changed")
        return OpResult(st.id, st.kind, st.title, "dry-run",
                        [{"index": i + 1, "name": st.steps[i].name} for i, _ in pending], [])
    _confirm(ctx, f"Roll back operation {st.id} ({st.title})?",
             f"roll back operation {st.id} ({st.title})")
    t0 = time.monotonic()
    stub = _lock_stub(st)
    with locks.hold(ctx, stub, stub.lock_names):
        j = journal.Journal.open_existing(ctx.state_dir, st.id)
        try:
            st = journal.load(path)  # re-read under the locks: exactly one rollback acts
            _check_rollbackable(st, held=True)
            pending = _pending_undo(st)
            op = _rebuild(ctx, st)
            ctx.operation = op
            audit.record(ctx, result="started", op_id=st.id,
                         details={"kind": st.kind, "title": st.title, "action": "rollback"})
            j.append("rollback", reason="requested", pid=os.getpid(), user=operator())
            failures = _undo_steps(ctx, op, j, pending)
            new_status = "rollback-incomplete" if failures else "rolled-back"
            j.append("finished", status=new_status, error=st.error)
        finally:
            j.close()
    ms = int((time.monotonic() - t0) * 1000)
    audit.record(ctx, result=new_status, op_id=st.id, duration_ms=ms,
                 details={"kind": st.kind, "title": st.title, "action": "rollback",
                          "failures": failures})
    res = OpResult(st.id, st.kind, st.title, new_status,
                   [{"index": i + 1, "name": op.steps[i].step_name} for i, _ in pending], [],
                   ms, error="; ".join(failures) or None)
    if failures:
        emit_result(ctx, res)
        raise RollbackIncomplete(f"rollback of {st.id} is incomplete: {'; '.join(failures)}",
                                 hint=f"fix the cause, then run `debvisor ops rollback {st.id}`")
    log.info(f"operation {st.id} rolled back")
    return res


def _check_resumable(st: journal.OpState, *, held: bool = False) -> None:
    status = ("interrupted" if st.status == "running" else st.status) if held else st.effective_status
    if status not in ("interrupted", "paused") or st.status not in ("running", "paused"):
        raise BadInput(f"operation {st.id} is {st.effective_status}; only an interrupted or "
                       "paused operation can be resumed")


def resume_op(ctx: Context, op_id: str) -> OpResult:
    """Continue an interrupted or paused operation from the step it stopped in.

    Runs under the operation's locks, re-reads the journal there, and runs preflight
    (maintenance mode included) before applying anything.
    """
    from . import audit, locks

    path = journal.find(ctx.state_dir, op_id)
    st = journal.load(path)
    _check_resumable(st)
    first = next((s.index for s in st.steps if s.status != "verified"), len(st.steps))
    ctx.ui.plan(f"Resume {st.id}: {st.title} from step {first + 1}",
                [f"{s.index + 1}. {s.description}" for s in st.steps[first:]], [], verb="")
    _confirm(ctx, f"Resume operation {st.id} ({st.title})?", f"resume operation {st.id} ({st.title})")
    t0 = time.monotonic()
    stub = _lock_stub(st)
    with locks.hold(ctx, stub, stub.lock_names) as cluster:
        j = journal.Journal.open_existing(ctx.state_dir, st.id)
        try:
            st = journal.load(path)  # re-read under the locks: exactly one resume acts
            _check_resumable(st, held=True)
            op = _rebuild(ctx, st)
            ctx.operation = op
            for s in st.steps:  # the result of the runs before this one
                if s.status == "verified" and s.record is not None:
                    try:
                        op.steps[s.index].add_result(ctx, s.record)
                    except Exception as exc:  # noqa: BLE001 - a report, not the change
                        log.warn(f"step {s.index + 1}'s report from its record: "
                                 f"{type(exc).__name__}: {exc}; the result lacks it")
            first = next((s.index for s in st.steps if s.status != "verified"), len(st.steps))
            reset = first < len(st.steps) and st.steps[first].status in (
                "in-flight", "applied", "undo-failed")
            # Steps already applied are not checked again (their check would now say "already
            # there"); an in-flight one is reset (undone) before it is applied again.
            findings = preflight(ctx, op, op.steps[first + 1 if reset else first:])
            errors = [f for f in findings if f.level == "error"]
            res = OpResult(st.id, st.kind, st.title, "running",
                           [{"name": s.name, "description": s.description,
                             "status": "done" if s.status == "verified" else "planned"}
                            for s in st.steps], [f.to_dict() for f in findings])
            if errors:
                _refuse(ctx, op, res, errors)
            try:
                audit.record(ctx, result="started", op_id=st.id,
                             details={"kind": st.kind, "title": st.title, "action": "resume"})
            except DebvisorError as exc:
                raise PreflightRefused(f"{exc.message}; nothing was changed") from None
            j.append("resumed", pid=os.getpid(), user=operator(), step=first)
            if reset:
                rec = _pending_undo(st, range(first, first + 1))
                if _undo_steps(ctx, op, j, rec):
                    audit.record(ctx, result="resume-failed", op_id=st.id,
                                 details={"kind": st.kind, "title": st.title,
                                          "error": f"cannot reset step {first + 1}"})
                    raise RollbackIncomplete(
                        f"cannot reset step {first + 1} before resuming; the operation stays "
                        "interrupted", hint=f"fix the cause, then `debvisor ops resume {st.id}` "
                                            f"or `debvisor ops rollback {st.id}`")
            try:
                with _signals_as_failure():
                    paused = _apply_all(ctx, op, j, res, start=first, fence=_Fence(cluster))
            except (Exception, KeyboardInterrupt, _Terminated) as exc:  # noqa: BLE001
                _fail(ctx, op, j, res, exc, t0, action="resume")
        finally:
            j.close()
    res.result = op.result
    res.duration_ms = int((time.monotonic() - t0) * 1000)
    if paused is not None:
        res.status = "paused"
        audit.record(ctx, result="paused", op_id=st.id, duration_ms=res.duration_ms,
                     details={"kind": st.kind, "title": st.title, "action": "resume",
                              "phase": paused})
        log.info(f"operation {st.id} paused before phase {paused + 1}; continue with "
                 f"`debvisor ops resume {st.id}`")
        return res
    res.status = "succeeded"
    audit.record(ctx, result="succeeded", op_id=st.id, duration_ms=res.duration_ms,
                 details={"kind": st.kind, "title": st.title, "action": "resume"})
    log.info(f"operation {st.id} resumed and succeeded")
    return res


def _matches(target: dict[str, Any] | None, given: dict[str, Any]) -> bool:
    """Whether a journalled operation's target is the one the command line names."""
    for key, want in given.items():
        have = (target or {}).get(key)
        if isinstance(have, dict):
            have = have.get("name")
        if have != want:
            return False
    return True


def rollback_last(ctx: Context, kind: str, target: dict[str, Any] | None = None) -> OpResult:
    """Undo the most recent successful operation of ``kind`` on ``target`` (the command's
    positional arguments: the same VM, record, pool); a command's ``--rollback``."""
    given = {k: v for k, v in (target or {}).items() if v is not None}
    what = f"'{kind}'" + (" on " + ", ".join(f"{k}={v}" for k, v in given.items()) if given else "")
    for st in journal.all_ops(ctx.state_dir):
        if st.kind == kind and st.effective_status == "succeeded" and _matches(st.target, given):
            log.info(f"--rollback picks operation {st.id} ({st.title}, {st.user}, "
                     f"{journal.iso_utc(st.started)})")
            res = rollback_op(ctx, st.id)
            emit_result(ctx, res)
            return res
    raise BadInput(f"no successful {what} operation to roll back")


def execute(ctx: Context, op: Operation, human: Any = None) -> OpResult:
    """Run ``op`` and print its result (JSON with --json); what commands call."""
    res = run(ctx, op)
    emit_result(ctx, res, human)
    return res


def emit_result(ctx: Context, res: OpResult, human: Any = None) -> None:
    """Print an operation's result: JSON with --json/--events, else ``human(res)`` on success."""
    from .output import emit

    if ctx.json or ctx.ui.events:
        emit(ctx, res.to_dict())
    elif callable(human) and res.status == "succeeded":
        human(res)


__all__ = ["Finding", "OpResult", "Operation", "Phase", "Step", "StepFailed", "emit_result",
           "execute", "rollback_last", "rollback_op", "resume_op", "run"]
