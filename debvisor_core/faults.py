"""Fault injection for tests: a plugin that wraps ``debvisor_execute`` and
``debvisor_rollback`` to fail at a named step.

Enabled only when ``DEBVISOR_FAULTS`` is set, as a comma-separated list of
``STEP[:WHEN]`` where STEP is a step's name (or its 1-based position) and WHEN is:

- ``before`` (default): raise before the step applies;
- ``after``: raise after it applied (its undo record is journalled);
- ``kill-before`` / ``kill-after``: SIGKILL this process there;
- ``hang``: after applying, write ``$DEBVISOR_FAULT_READY`` (if set) and sleep, so
  a test can SIGKILL the process mid-operation from outside;
- ``undo``: raise when the step is undone (rollback incomplete).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from . import hookimpl
from .errors import StepFailed

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context
    from .engine import Operation, Step


class FaultInjected(StepFailed):
    """The failure the fault plugin raises."""


def _faults() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for item in os.environ.get("DEBVISOR_FAULTS", "").split(","):
        if item.strip():
            name, _, when = item.strip().partition(":")
            out.setdefault(name, set()).add(when or "before")
    return out


def _match(op: Operation, step: Step) -> set[str]:
    faults = _faults()
    pos = str(next((i + 1 for i, s in enumerate(op.steps) if s is step), 0))
    return faults.get(step.step_name, set()) | faults.get(pos, set())


@hookimpl(wrapper=True)
def debvisor_execute(ctx: Context, op: Operation, step: Step, prior: dict[str, Any]
                     ) -> Generator[None, Any, Any]:
    when = _match(op, step)
    if "kill-before" in when:
        os.kill(os.getpid(), signal.SIGKILL)
    if "before" in when:
        raise FaultInjected(f"injected fault before step {step.step_name}")
    result = yield
    if "after" in when:
        raise FaultInjected(f"injected fault after step {step.step_name}")
    if "kill-after" in when:
        os.kill(os.getpid(), signal.SIGKILL)
    if "hang" in when:
        ready = os.environ.get("DEBVISOR_FAULT_READY")
        if ready:
            with open(ready, "w") as f:
                f.write(str(os.getpid()))
        while True:
            time.sleep(1)
    return result


@hookimpl(wrapper=True)
def debvisor_rollback(ctx: Context, op: Operation, step: Step, record: dict[str, Any]
                      ) -> Generator[None, Any, Any]:
    if "undo" in _match(op, step):
        raise FaultInjected(f"injected fault while undoing {step.step_name}")
    return (yield)
