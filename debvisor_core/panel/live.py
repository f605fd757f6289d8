"""Live operations: actions the panel runs for its users, and the hub that relays their
events to the users' tabs.

Apply (a POST) starts a :class:`Task`: one rpcd ``Invoke`` stream, opened with the user's
token and read by a thread of the panel until the action ends — closing the tab does not
stop it. Each event the action emits (plan, step, undo, progress, log, result, exit)
updates the task's state and gets the next number of the panel-wide sequence. The tab's
one event stream (``/events``) waits on :meth:`Hub.wait` and sends the state of every task
that changed, with the sequence number as the SSE ``id:``, so a reconnecting browser
(``Last-Event-ID``) gets exactly the tasks that changed since, and a fresh page the
current state.

Abort cancels the gRPC call; rpcd stops the action like Ctrl-C (SIGTERM to its
``debvisor`` process: an interrupted migration is aborted and every applied step rolled
back). The stream ends with the call, so the task then follows the operation in the
journal (``ListOperations``) until it has settled, and shows how it ended.

Tasks are visible to, and abortable by, the user who started them only: the stream holds
that user's token, and nobody else's authority may end it. They live in this process's
memory: if the panel stops, its streams end and rpcd rolls their actions back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import log
from .rpc import Rpcd, RpcFailure, Running, SessionEnded

#: task statuses while the action runs
ACTIVE = ("starting", "running", "aborting")
#: journal statuses of an operation that has not settled yet
_UNSETTLED = ("running", "rolling-back")
_OP_LINE = re.compile(r"operation ([0-9][0-9a-f-]{5,21}): ")
_LINES = 40
_FINISHED_KEEP = 30 * 60.0  # a finished task stays listed (until dismissed) this long
_MAX_TASKS = 200


@dataclass
class Task:
    """One action run by the panel for ``user``, as its events describe it."""

    id: str
    user: str
    action: str
    params: dict[str, Any]
    title: str
    vm: str = ""
    started: float = field(default_factory=time.time)
    status: str = "starting"
    op_id: str = ""
    #: the latest progress event: label, done, total, eta, rate, pct, dirty_bps, iteration,
    #: phase ("migrate" or "migrate-back"), t (when the action emitted it)
    progress: dict[str, Any] | None = None
    steps: dict[int, dict[str, Any]] = field(default_factory=dict)
    undos: dict[int, dict[str, Any]] = field(default_factory=dict)
    lines: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_LINES))
    findings: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None
    code: int | None = None
    error: str = ""
    aborted_by: str = ""
    finished: float | None = None
    dismissed: bool = False
    seq: int = 0
    #: when the action emitted its latest event (its "t")
    last_event_t: float | None = None
    #: held while the follower thread changes the state and while a page reads it
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def pct(self) -> float | None:
        p = self.progress
        if not p:
            return None
        if self.status == "succeeded":
            return 100.0
        if p.get("pct") is not None:
            return max(0.0, min(100.0, float(p["pct"])))
        if p.get("total"):
            return max(0.0, min(100.0, 100.0 * float(p.get("done") or 0) / float(p["total"])))
        return None

    def view(self) -> dict[str, Any]:
        """What the templates show (plain data, a consistent copy)."""
        with self.lock:
            return self._view()

    def _view(self) -> dict[str, Any]:
        return {
            "id": self.id, "user": self.user, "action": self.action, "title": self.title,
            "vm": self.vm, "status": self.status, "op_id": self.op_id, "active": self.active,
            "started": self.started, "finished": self.finished, "progress": self.progress,
            "pct": self.pct, "steps": [self.steps[k] for k in sorted(self.steps)],
            "undos": [self.undos[k] for k in sorted(self.undos)], "lines": list(self.lines),
            "findings": list(self.findings), "error": self.error, "aborted_by": self.aborted_by,
            "code": self.code, "seq": self.seq,
            "migration": self._outcome("migration"),
            "dns": self._outcome("dns"),
        }

    def _outcome(self, key: str) -> Any:
        """``key`` of the operation's own result (``result.result``): hv's migration
        figures, dns's propagation proof."""
        res = self.result
        if isinstance(res, dict) and isinstance(res.get("result"), dict):
            return res["result"].get(key)
        return None

    # -- events -------------------------------------------------------------------------
    def apply(self, ev: dict[str, Any]) -> bool:
        """Take one event of the action into the state; False when nothing shown changed."""
        with self.lock:
            return self._apply(ev)

    def _apply(self, ev: dict[str, Any]) -> bool:
        kind = ev.get("event")
        if kind == "plan":
            self.findings = [f for f in ev.get("findings") or [] if isinstance(f, dict)]
            if ev.get("title"):
                self.title = str(ev["title"])
        elif kind == "log":
            message = str(ev.get("message", ""))
            m = _OP_LINE.match(message)
            if m and not self.op_id:
                self.op_id = m.group(1)
            if ev.get("level") == "debug":
                return False
            self.lines.append({"level": str(ev.get("level", "info")), "message": message,
                               "t": ev.get("t")})
        elif kind == "step":
            i = int(ev.get("index") or 0)
            self.steps[i] = {"index": i, "total": ev.get("total"), "status": ev.get("status"),
                             "description": str(ev.get("description", ""))}
            if self.status == "starting":
                self.status = "running"
        elif kind == "undo":
            i = int(ev.get("index") or 0)
            self.undos[i] = {"index": i, "status": ev.get("status"),
                             "description": str(ev.get("description", ""))}
        elif kind == "progress":
            self.progress = {k: ev.get(k) for k in (
                "label", "done", "total", "eta", "rate", "note", "pct", "dirty_bps",
                "iteration", "phase", "t")}
            if self.status == "starting":
                self.status = "running"
        elif kind == "result":
            self.result = ev.get("result")
            if isinstance(self.result, dict) and self.result.get("id") and not self.op_id:
                self.op_id = str(self.result["id"])
            if isinstance(self.result, dict) and self.result.get("error"):
                self.error = str(self.result["error"])
        elif kind == "exit":
            self.code = int(ev.get("code") or 0)
            if self.code and ev.get("message") and not self.error:
                self.error = str(ev["message"])
        else:
            return False
        if isinstance(ev.get("t"), int | float):
            self.last_event_t = float(ev["t"])
        return True

    def settle(self) -> None:
        """The stream ended: the final status from the exit code and the result."""
        with self.lock:
            self._settle()

    def _settle(self) -> None:
        res = self.result if isinstance(self.result, dict) else {}
        status = str(res.get("status") or "")
        if self.code == 0:
            self.status = status if status and status not in ("planned",) else "succeeded"
        else:
            self.status = status if status and status != "succeeded" else "failed"
        if self.code is None:
            self.status = "failed"
            self.error = self.error or "the action's stream ended without an exit code"
        self.finished = time.time()


class Hub:
    """Every task of this panel and the sequence their changes are numbered by."""

    def __init__(self, rpc: Rpcd) -> None:
        self.rpc = rpc
        self._lock = threading.Lock()
        # numbered from the clock (ms), so the ids a browser saw from an earlier panel
        # process are all below this one's
        self._seq = int(time.time() * 1000)
        self._tasks: dict[str, Task] = {}
        self._running: dict[str, Running] = {}
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        #: called with the task after each change (tests may listen)
        self.listeners: list[Callable[[Task], None]] = []

    # -- reading ------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        return self._seq

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def visible(self, user: str) -> list[Task]:
        """``user``'s tasks worth showing, newest first: running ones, and finished ones not
        dismissed for a while."""
        now = time.time()
        with self._lock:
            tasks = [t for t in self._tasks.values() if t.user == user and (
                t.active or (not t.dismissed and now - (t.finished or now) < _FINISHED_KEEP))]
        return sorted(tasks, key=lambda t: t.started, reverse=True)

    def changed_since(self, user: str, seq: int) -> list[Task]:
        """``user``'s tasks changed after ``seq``, in the order they changed."""
        with self._lock:
            tasks = [t for t in self._tasks.values() if t.user == user and t.seq > seq]
        return sorted(tasks, key=lambda t: t.seq)

    def running_for_op(self, op_id: str) -> Task | None:
        with self._lock:
            return next((t for t in self._tasks.values() if t.op_id == op_id and t.active), None)

    # -- waiting (the event streams) ------------------------------------------------------
    @contextlib.contextmanager
    def subscription(self) -> Iterator[asyncio.Event]:
        """An asyncio.Event set (in the caller's loop) whenever a task changes."""
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        item = (loop, ev)
        with self._lock:
            self._waiters.add(item)
        try:
            yield ev
        finally:
            with self._lock:
                self._waiters.discard(item)

    def _publish(self, task: Task) -> None:
        with self._lock:
            self._seq += 1
            task.seq = self._seq
            waiters = list(self._waiters)
        for loop, ev in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(ev.set)
        for fn in self.listeners:
            try:
                fn(task)
            except Exception as exc:  # noqa: BLE001 - a listener never stops a task
                log.debug(f"panel: a task listener failed: {exc}")

    # -- running ------------------------------------------------------------------------
    def start(self, user: str, token: str, action: str, params: dict[str, Any], title: str,
              *, vm: str = "", op_id: str = "") -> Task:
        """Start ``action`` with ``params`` for ``user`` (confirmed: the plan was shown);
        blocks until rpcd admitted the call, and raises its refusal (:class:`RpcFailure`).
        ``op_id``: the journal's operation the task acts on, when known (a resume)."""
        task = Task(secrets.token_hex(6), user, action, dict(params), title, vm=vm, op_id=op_id)
        running = self.rpc.start(token, action, json.dumps(params))
        try:
            running.admitted()
        except RpcFailure:
            running.cancel()
            raise
        with self._lock:
            self._tasks[task.id] = task
            self._running[task.id] = running
            self._forget_old()
        self._publish(task)
        threading.Thread(target=self._follow, args=(task, running, token), daemon=True,
                         name=f"panel-task-{task.id}").start()
        log.info(f"panel: {user} started {action} ({title}) as task {task.id}")
        return task

    def _forget_old(self) -> None:
        if len(self._tasks) <= _MAX_TASKS:
            return
        done = sorted((t for t in self._tasks.values() if not t.active), key=lambda t: t.started)
        for t in done[:len(self._tasks) - _MAX_TASKS]:
            self._tasks.pop(t.id, None)

    def _follow(self, task: Task, running: Running, token: str) -> None:
        """Read the stream to its end (a thread), then settle the task."""
        try:
            for ev in running.events:
                if task.apply(ev):
                    self._publish(task)
        except RpcFailure as exc:
            if not task.aborted_by:
                with task.lock:
                    task.error = exc.message
                    task.code = task.code if task.code is not None else 1
        except Exception as exc:  # noqa: BLE001 - the task shows it, the panel goes on
            with task.lock:
                task.error = f"{type(exc).__name__}: {exc}"
                task.code = 1
        finally:
            with self._lock:
                self._running.pop(task.id, None)
        if task.aborted_by and task.code is None:  # cut short: the journal says how it ended
            self._after_abort(task, token)
        else:  # it ran to its end (an abort that came too late changed nothing)
            task.settle()
        self._publish(task)
        log.info(f"panel: task {task.id} ({task.action}) ended {task.status}")

    def _after_abort(self, task: Task, token: str, timeout: float = 600.0) -> None:
        """The call was cancelled: follow the operation in the journal until it settles."""
        if not task.op_id:  # cancelled before the operation started: nothing was changed
            with task.lock:
                task.status, task.finished = "aborted", time.time()
                task.error = "aborted before the operation started: nothing was changed"
            return
        deadline = time.monotonic() + timeout
        op: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            try:
                op = self.rpc.show_operation(token, task.op_id)
            except SessionEnded:
                break
            except RpcFailure as exc:
                log.debug(f"panel: task {task.id}: {exc.message}")
                op = None
            if op is not None:
                with task.lock:
                    self._from_journal(task, op)
                if str(op.get("status")) not in _UNSETTLED:
                    break
                self._publish(task)
            time.sleep(0.5)
        with task.lock:
            self._aborted(task, op)

    @staticmethod
    def _aborted(task: Task, op: dict[str, Any] | None) -> None:
        status = str((op or {}).get("status") or "")
        task.status = status if status and status not in _UNSETTLED else "aborted"
        error = str((op or {}).get("error") or "")
        if task.status == "rolled-back":
            task.error = f"aborted by {task.aborted_by}: every applied step was undone"
        elif task.status == "rollback-incomplete":
            task.error = (f"aborted by {task.aborted_by}, but the rollback is incomplete: "
                          f"{error}; see operation {task.op_id}")
        else:
            task.error = f"aborted by {task.aborted_by}" + (
                f" (the journal says {status})" if status else "")
        task.finished = time.time()

    def _from_journal(self, task: Task, op: dict[str, Any]) -> None:
        """The steps as the journal has them (the stream that told them has ended)."""
        for s in op.get("steps") or []:
            if not isinstance(s, dict):
                continue
            i = int(s.get("index") or 0)
            status = str(s.get("status", ""))
            step = task.steps.setdefault(i, {"index": i, "total": len(op.get("steps") or []),
                                             "description": str(s.get("description", ""))})
            step["status"] = status
            if status in ("undone", "undo-failed"):
                task.undos[i] = {"index": i, "description": s.get("description", ""),
                                 "status": "done" if status == "undone" else "failed"}

    def abort(self, task_id: str, user: str) -> str | None:
        """Cancel ``user``'s running task; None when done, else why it cannot be."""
        task = self._tasks.get(task_id)
        if task is None or task.user != user:
            return "no such task"
        running = self._running.get(task_id)
        if not task.active or running is None:
            return f"the task has already ended ({task.status})"
        if task.aborted_by:
            return "the task is already being aborted"
        with task.lock:
            task.aborted_by = user
            task.status = "aborting"
            task.lines.append({"level": "warn", "message": f"abort requested by {user}",
                               "t": time.time()})
        self._publish(task)
        running.cancel()
        log.info(f"panel: {user} aborted task {task.id} ({task.action})")
        return None

    def dismiss(self, task_id: str, user: str) -> str | None:
        task = self._tasks.get(task_id)
        if task is None or task.user != user:
            return "no such task"
        if task.active:
            return "a running task cannot be dismissed"
        task.dismissed = True
        self._publish(task)
        return None

    def cancel_all(self) -> None:
        """The panel stops: end every stream (rpcd rolls the actions back)."""
        with self._lock:
            running = list(self._running.values())
        for r in running:
            with contextlib.suppress(Exception):
                r.cancel()
