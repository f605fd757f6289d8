"""Operations: preflight → plan → confirm → lock → journalled steps → verify → audit.

A :class:`Step` is a dataclass whose fields are its JSON parameters; the journal
stores its type and parameters, so any later process (``ops rollback``, ``ops
resume``) can rebuild it and undo it from its journalled record.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import click

from . import journal, log
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


class Step:
    """One undoable change. Subclass it as a ``@dataclass``; the fields are its params.

    Class attributes (upper case, so they never clash with a field): ``NAME``
    identifies it (fault injection, logs; default: the class name); ``ORDER``
    places contributed steps (owner's steps are 50); ``DESTRUCTIVE`` steps need
    confirmation.
    ``undo`` must be idempotent: it also runs for a step interrupted mid-apply, with
    ``record`` holding only the snapshot and ``record["_partial"] = True``.
    """

    NAME: ClassVar[str] = ""
    ORDER: ClassVar[int] = 50
    DESTRUCTIVE: ClassVar[bool] = False

    @property
    def step_name(self) -> str:
        return self.NAME or type(self).__name__

    def describe(self, ctx: Context) -> str:
        """One line for the plan."""
        return self.step_name

    def check(self, ctx: Context) -> None:
        """Raise :class:`StepFailed` if the step cannot run (preflight)."""

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        """Capture the prior state needed to undo; journalled before ``apply``."""
        return {}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any] | None:
        """Make the change; return extra data for the undo record."""
        raise NotImplementedError

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Restore the prior state from ``record`` (snapshot + apply's data)."""

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        """Raise :class:`StepFailed` if the change did not take effect."""

    # -- serialisation -------------------------------------------------------
    def params(self) -> dict[str, Any]:
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return {}

    def to_json(self, ctx: Context) -> dict[str, Any]:
        cls = type(self)
        return {
            "name": self.step_name,
            "type": f"{cls.__module__}:{cls.__qualname__}",
            "params": self.params(),
            "description": self.describe(ctx),
            "order": self.ORDER,
        }


def step_from_json(type_name: str, params: dict[str, Any]) -> Step:
    """Rebuild a journalled step."""
    mod, _, qual = type_name.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in qual.split("."):
        obj = getattr(obj, part)
    step = obj(**params)
    if not isinstance(step, Step):
        raise TypeError(f"{type_name} is not a Step")
    return step


@dataclass
class Finding:
    """A preflight result. ``level`` is error, warn or info; an error refuses the
    operation unless ``override`` names an option the operator gave."""

    level: str
    message: str
    source: str = ""
    override: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Operation:
    """A state change made of steps. ``kind`` is ``plugin.action``."""

    kind: str
    title: str
    steps: list[Step]
    params: dict[str, Any] = field(default_factory=dict)
    destructive: bool = False
    locks: list[str] = field(default_factory=list)
    id: str = ""
    rollback_of: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    #: in-process state steps share during one run (never journalled or printed)
    scratch: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def lock_names(self) -> list[str]:
        return self.locks or [self.kind]


@dataclass
class OpResult:
    id: str
    kind: str
    title: str
    status: str
    steps: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    duration_ms: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Terminated(BaseException):
    """SIGTERM during an operation: treated like a failure (rollback)."""


@contextmanager
def _sigterm_as_failure() -> Iterator[None]:
    def handler(signum: int, _frame: Any) -> None:
        raise _Terminated(f"terminated by signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# -- preflight ---------------------------------------------------------------
def preflight(ctx: Context, op: Operation) -> list[Finding]:
    from . import audit

    findings: list[Finding] = []
    problem = audit.unwritable_reason(ctx)
    if problem:
        findings.append(Finding("error", problem, "core.audit"))
    for op_state in journal.all_ops(ctx.state_dir):
        if op_state.effective_status == "interrupted" and set(op_state.locks) & set(op.lock_names):
            findings.append(Finding(
                "error",
                f"operation {op_state.id} ({op_state.kind}) was interrupted; run "
                f"`debvisor ops rollback {op_state.id}` or `debvisor ops resume {op_state.id}` "
                "first",
                "core.journal",
            ))
    for result in ctx.hook.debvisor_preflight(ctx=ctx, op=op):
        findings.extend(result or [])
    for step in op.steps:
        try:
            step.check(ctx)
        except DebvisorError as exc:
            findings.append(Finding("error", exc.message, step.step_name))
    opts = dataclasses.asdict(ctx.op_options)
    for f in findings:
        if f.level == "error" and f.override and opts.get(f.override):
            f.level = "warn"
            f.message += f" (overridden by --{f.override.replace('_', '-')})"
    return findings


def _plan(ctx: Context, op: Operation) -> None:
    extra: list[Step] = []
    for contributed in ctx.hook.debvisor_steps(ctx=ctx, op=op):
        extra.extend(contributed or [])
    op.steps = sorted(op.steps + extra, key=lambda s: s.ORDER)  # stable
    if not op.steps:
        raise BadInput(f"{op.title}: nothing to do")


def _where(f: Finding) -> str:
    return f" [{f.source}]" if f.source else ""


def _print_plan(ctx: Context, op: Operation, findings: list[Finding]) -> None:
    first_error = next((f for f in findings if f.level == "error"), None)
    for f in findings:
        if f is not first_error:  # the first error is the refusal's own message
            {"error": log.error, "warn": log.warn}.get(f.level, log.info)(
                f"preflight: {f.message}{_where(f)}")
    if ctx.json:
        return
    print(f"Plan: {op.title}")
    for i, step in enumerate(op.steps, 1):
        print(f"  {i}. {step.describe(ctx)}")


def _confirm(ctx: Context, question: str, refusal: str | None) -> None:
    """Ask ``question`` on a TTY; without one (and without --yes) refuse with ``refusal``
    (``refusing to …``), or go ahead when ``refusal`` is None (nothing destructive)."""
    if ctx.yes:
        return
    if ctx.interactive:
        if not click.confirm(question, default=False, err=True):
            raise PreflightRefused("not confirmed; nothing was changed")
    elif refusal is not None:
        raise PreflightRefused(f"refusing to {refusal} without --yes in a non-interactive "
                               "session; nothing was changed")


# -- running -----------------------------------------------------------------
def run(ctx: Context, op: Operation) -> OpResult:
    """Run ``op`` through the whole pipeline. Raises on refusal or failure."""
    opts = ctx.op_options
    t0 = time.monotonic()
    _plan(ctx, op)
    findings = preflight(ctx, op)
    fdicts = [f.to_dict() for f in findings]
    steps_view = [{"name": s.step_name, "description": s.describe(ctx), "status": "planned"}
                  for s in op.steps]
    errors = [f for f in findings if f.level == "error"]
    _print_plan(ctx, op, findings)
    res = OpResult("", op.kind, op.title, "planned", steps_view, fdicts)
    if errors:
        res.status, res.error = "refused", errors[0].message
        _emit_failure(ctx, res)
        more = f" (and {len(errors) - 1} more above)" if len(errors) > 1 else ""
        raise PreflightRefused(f"preflight refused {op.kind}: {errors[0].message}{_where(errors[0])}"
                               f"{more}; nothing was changed")
    if opts.check:
        res.status = "checked"
        log.info(f"preflight passed for {op.kind}; nothing was changed (--check)")
        return res
    if opts.dry_run:
        res.status = "dry-run"
        log.info("dry run: nothing was changed")
        return res
    destructive = op.destructive or any(s.DESTRUCTIVE for s in op.steps)
    _confirm(ctx, f"Proceed with: {op.title}?",
             f"run destructive operation '{op.kind}'" if destructive else None)
    from . import audit, locks

    op.id = journal.new_id()
    res.id = op.id
    ctx.operation = op
    with locks.hold(ctx, op, op.lock_names):
        j = journal.Journal.create(ctx.state_dir, op.id, {
            "kind": op.kind, "title": op.title, "params": op.params, "locks": op.lock_names,
            "user": operator(), "pid": os.getpid(), "argv": ctx.argv, "rollback_of": op.rollback_of,
            "steps": [s.to_json(ctx) for s in op.steps],
        })
        log.info(f"operation {op.id}: {op.title}")
        try:
            with _sigterm_as_failure():
                _apply_all(ctx, op, j, res)
        except (Exception, KeyboardInterrupt, _Terminated) as exc:  # noqa: BLE001 - any failure rolls back
            failed_at = _running_index(res)
            status, err = _rollback_after_failure(ctx, op, j, exc, failed_at)
            res.status, res.error = status, err
            res.duration_ms = int((time.monotonic() - t0) * 1000)
            audit.record(ctx, result=status, op_id=op.id, duration_ms=res.duration_ms,
                         details={"kind": op.kind, "title": op.title, "error": err,
                                  "params": op.params, "result": op.result,
                                  "failed_step": failed_at + 1 if failed_at is not None else None})
            _emit_failure(ctx, res)
            if status == "rolled-back":
                raise RolledBack(f"{op.title} failed: {err}; every applied step was undone "
                                 f"(operation {op.id})") from None
            raise RollbackIncomplete(
                f"{op.title} failed: {err}; rollback is incomplete (operation {op.id})",
                hint=f"fix the cause, then run `debvisor ops rollback {op.id}` "
                     f"(details: `debvisor ops show {op.id}`)") from None
        finally:
            j.close()
    res.status = "succeeded"
    res.result = op.result
    res.duration_ms = int((time.monotonic() - t0) * 1000)
    audit.record(ctx, result="succeeded", op_id=op.id, duration_ms=res.duration_ms,
                 details={"kind": op.kind, "title": op.title, "params": op.params,
                          "result": op.result})
    log.info(f"operation {op.id} succeeded in {res.duration_ms / 1000:.1f}s")
    return res


def _apply_all(ctx: Context, op: Operation, j: journal.Journal, res: OpResult,
               start: int = 0) -> None:
    hook = ctx.hook
    for i in range(start, len(op.steps)):
        step = op.steps[i]
        t = time.monotonic()
        res.steps[i]["status"] = "running"
        log.info(f"step {i + 1}/{len(op.steps)}: {step.describe(ctx)}")
        prior = step.snapshot(ctx) or {}
        j.append("intent", step=i, prior=prior)
        extra = hook.debvisor_execute(ctx=ctx, op=op, step=step, prior=prior)
        record = {**prior, **(extra or {})}
        j.append("applied", step=i, record=record)
        step.verify(ctx, record)
        j.append("verified", step=i)
        res.steps[i]["status"] = "done"
        res.steps[i]["duration_ms"] = int((time.monotonic() - t) * 1000)
        log.debug(f"step {step.step_name} took {time.monotonic() - t:.3f}s")
    j.append("finished", status="succeeded")


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
        try:
            log.info(f"undo step {i + 1}: {step.describe(ctx)}")
            hook.debvisor_rollback(ctx=ctx, op=op, step=step, record=record)
            j.append("undone", step=i)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - keep undoing the rest
            msg = _describe_exc(exc)
            log.error(f"undo of step {i + 1} ({step.step_name}) failed: {msg}")
            j.append("undo-failed", step=i, error=msg)
            failures.append(f"step {i + 1} ({step.step_name}): {msg}")
    return failures


def _pending_undo(st: journal.OpState) -> list[tuple[int, dict[str, Any]]]:
    """Steps still to undo, newest first: applied ones with their record, an
    in-flight one with its snapshot marked partial."""
    out: list[tuple[int, dict[str, Any]]] = []
    for s in reversed(st.steps):
        if s.status in ("applied", "verified", "undo-failed") and s.record is not None:
            out.append((s.index, s.record))
        elif s.status in ("in-flight", "failed", "undo-failed") and s.prior is not None:
            out.append((s.index, {**s.prior, "_partial": True}))
    return out


def _rollback_after_failure(ctx: Context, op: Operation, j: journal.Journal,
                            exc: BaseException, failed: int | None) -> tuple[str, str]:
    err = _describe_exc(exc)
    j.append("failed", step=failed, error=err)
    where = f" at step {failed + 1} ({op.steps[failed].step_name})" if failed is not None else ""
    log.error(f"operation {op.id} failed{where}: {err}")
    j.append("rollback", reason=err)
    failures = _undo_steps(ctx, op, j, _pending_undo(journal.load(j.path)))
    status = "rollback-incomplete" if failures else "rolled-back"
    j.append("finished", status=status, error=err)
    return status, err


def _running_index(res: OpResult) -> int | None:
    return next((i for i, s in enumerate(res.steps) if s.get("status") == "running"), None)


def _emit_failure(ctx: Context, res: OpResult) -> None:
    if ctx.json:
        from .output import emit

        emit(ctx, res.to_dict())


# -- after the fact: rollback / resume ----------------------------------------
def _rebuild(st: journal.OpState) -> Operation:
    try:
        steps = [step_from_json(s.type, s.params) for s in st.steps]
    except Exception as exc:  # noqa: BLE001 - a plugin was removed or changed
        raise RollbackIncomplete(
            f"cannot rebuild the steps of operation {st.id}: {type(exc).__name__}: {exc}",
            hint="reinstall the plugin that ran it, then retry") from None
    return Operation(kind=st.kind, title=st.title, steps=steps, params=st.params,
                     locks=st.locks, id=st.id)


def rollback_op(ctx: Context, op_id: str) -> OpResult:
    """Undo every applied (or interrupted) step of a journalled operation."""
    from . import audit, locks

    path = journal.find(ctx.state_dir, op_id)
    st = journal.load(path)
    status = st.effective_status
    if status in ("rolled-back", "refused"):
        raise BadInput(f"operation {st.id} is already {status}; nothing to undo")
    if status in ("running", "rolling-back"):
        raise BadInput(f"operation {st.id} is still running in another process")
    pending = _pending_undo(st)
    op = _rebuild(st)
    ctx.operation = op
    if not ctx.json:
        print(f"Rollback of {st.id}: {st.title}")
        for i, _ in pending:
            print(f"  undo {i + 1}. {op.steps[i].describe(ctx)}")
    if ctx.op_options.dry_run:
        log.info("dry run: nothing was changed")
        return OpResult(st.id, st.kind, st.title, "dry-run", [], [])
    _confirm(ctx, f"Roll back operation {st.id} ({st.title})?",
             f"roll back operation {st.id} ({st.title})")
    t0 = time.monotonic()
    with locks.hold(ctx, op, op.lock_names):
        j = journal.Journal.open_existing(ctx.state_dir, st.id)
        try:
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
        _emit_failure(ctx, res)
        raise RollbackIncomplete(f"rollback of {st.id} is incomplete: {'; '.join(failures)}",
                                 hint=f"fix the cause, then run `debvisor ops rollback {st.id}`")
    log.info(f"operation {st.id} rolled back")
    return res


def resume_op(ctx: Context, op_id: str) -> OpResult:
    """Continue an interrupted operation from the step it stopped in."""
    from . import audit, locks

    st = journal.load(journal.find(ctx.state_dir, op_id))
    if st.effective_status != "interrupted" or st.status != "running":
        raise BadInput(f"operation {st.id} is {st.effective_status}; only an interrupted "
                       "operation can be resumed")
    op = _rebuild(st)
    ctx.operation = op
    first = next((s.index for s in st.steps if s.status not in ("verified",)), len(st.steps))
    res = OpResult(st.id, st.kind, st.title, "running",
                   [{"name": s.name, "description": s.description,
                     "status": "done" if s.status == "verified" else "planned"}
                    for s in st.steps], [])
    if not ctx.json:
        print(f"Resume {st.id}: {st.title} from step {first + 1}")
    _confirm(ctx, f"Resume operation {st.id} ({st.title})?", f"resume operation {st.id} ({st.title})")
    t0 = time.monotonic()
    with locks.hold(ctx, op, op.lock_names):
        j = journal.Journal.open_existing(ctx.state_dir, st.id)
        try:
            j.append("resumed", pid=os.getpid(), user=operator(), step=first)
            inflight = st.steps[first] if first < len(st.steps) else None
            if inflight is not None and inflight.status in ("in-flight", "applied"):
                rec = inflight.record if inflight.status == "applied" else {
                    **(inflight.prior or {}), "_partial": True}
                if _undo_steps(ctx, op, j, [(first, rec or {})]):
                    raise RollbackIncomplete(f"cannot reset step {first + 1} before resuming")
            with _sigterm_as_failure():
                _apply_all(ctx, op, j, res, start=first)
        except (Exception, KeyboardInterrupt, _Terminated) as exc:
            if isinstance(exc, RollbackIncomplete):
                raise
            status, err = _rollback_after_failure(ctx, op, j, exc, _running_index(res))
            audit.record(ctx, result=status, op_id=st.id,
                         details={"kind": st.kind, "action": "resume", "error": err})
            if status == "rolled-back":
                raise RolledBack(f"resume of {st.id} failed: {err}; every step was undone") from None
            raise RollbackIncomplete(f"resume of {st.id} failed: {err}; rollback incomplete",
                                     hint=f"run `debvisor ops rollback {st.id}`") from None
        finally:
            j.close()
    res.status = "succeeded"
    res.duration_ms = int((time.monotonic() - t0) * 1000)
    audit.record(ctx, result="succeeded", op_id=st.id, duration_ms=res.duration_ms,
                 details={"kind": st.kind, "title": st.title, "action": "resume"})
    log.info(f"operation {st.id} resumed and succeeded")
    return res


def rollback_last(ctx: Context, kind: str) -> OpResult:
    """Undo the most recent successful operation of ``kind`` (a command's --rollback)."""
    for st in journal.all_ops(ctx.state_dir):
        if st.kind == kind and st.effective_status == "succeeded":
            res = rollback_op(ctx, st.id)
            if ctx.json:
                from .output import emit

                emit(ctx, res.to_dict())
            return res
    raise BadInput(f"no successful '{kind}' operation to roll back")


def execute(ctx: Context, op: Operation, human: Any = None) -> OpResult:
    """Run ``op`` and print its result (JSON with --json); what commands call."""
    res = run(ctx, op)
    from .output import emit

    if ctx.json:
        emit(ctx, res.to_dict())
    elif callable(human) and res.status == "succeeded":
        human(res)
    return res


__all__ = ["Finding", "OpResult", "Operation", "Step", "StepFailed", "execute",
           "rollback_last", "rollback_op", "resume_op", "run"]
