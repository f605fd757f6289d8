"""Example DebVisor site plugin: `debvisor example note add|show`.

It keeps notes as files in a directory. Adding a note is an operation of two
steps — write the note file, then append it to the index — each with undo.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from debvisor_core import hookimpl
from debvisor_core.actions import Action, Param, attach
from debvisor_core.context import Context
from debvisor_core.engine import Finding, Operation, Step
from debvisor_core.errors import BadInput, StepFailed
from debvisor_core.health import CheckResult, HealthCheck
from debvisor_core.lab import LabContext, LabService


def notes_dir(ctx: Context) -> Path:
    """Where notes live: `[example] dir` in the config, or the plugin's state dir."""
    configured = ctx.section("example").get("dir")
    return Path(configured) if configured else ctx.plugin_state("example") / "notes"


@dataclass
class WriteNote(Step):
    """Step 1: write NAME's file (undo: restore the previous content or remove it)."""

    TYPE = "example.note.write"

    dir: str
    name: str
    text: str

    def describe(self, ctx: Context) -> str:
        return f"write note {self.name!r} in {self.dir}"

    def check(self, ctx: Context) -> None:
        if not Path(self.dir).parent.is_dir():
            raise StepFailed(f"{Path(self.dir).parent} does not exist")

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        path = Path(self.dir, self.name)
        return {"old": path.read_text() if path.exists() else None}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        Path(self.dir).mkdir(exist_ok=True)
        Path(self.dir, self.name).write_text(self.text)
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        if Path(self.dir, self.name).read_text() != self.text:
            raise StepFailed(f"note {self.name} did not take the new text")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        path = Path(self.dir, self.name)
        if record["old"] is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(record["old"])


@dataclass
class IndexNote(Step):
    """Step 2: list NAME in the index file (undo: restore the previous index)."""

    TYPE = "example.note.index"

    dir: str
    name: str

    def describe(self, ctx: Context) -> str:
        return f"add {self.name!r} to the index"

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        index = Path(self.dir, "INDEX")
        return {"old_index": index.read_text() if index.exists() else None}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        names = set((prior["old_index"] or "").split())
        Path(self.dir, "INDEX").write_text("".join(f"{n}\n" for n in sorted(names | {self.name})))
        return {}

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Take out only this step's own name (if it was not there before): notes added to
        the index after this operation stay listed."""
        if self.name in (record["old_index"] or "").split():
            return
        index = Path(self.dir, "INDEX")
        names = set(index.read_text().split()) if index.exists() else set()
        if names - {self.name}:
            index.write_text("".join(f"{n}\n" for n in sorted(names - {self.name})))
        else:
            index.unlink(missing_ok=True)


@click.group("example")
def example() -> None:
    """Example site plugin: notes kept with an undoable operation.

    \b
    Example:
      debvisor example note add hello "first note" --yes
      debvisor example note show
      debvisor example note add --rollback --yes
    """


@example.group("note")
def note() -> None:
    """Add and show notes.

    \b
    Example:
      debvisor example note show --json
    """


def plan_add(ctx: Context, params: dict[str, Any]) -> Operation:
    """The operation that adds (or replaces) a note: two steps, each with undo."""
    name = params["name"]
    if not name.isidentifier():
        raise BadInput(f"note name {name!r} must be letters, digits and underscores")
    d = str(notes_dir(ctx))
    return Operation(kind="example.note-add", title=f"add note {name}",
                     steps=[WriteNote(d, name, params["text"]), IndexNote(d, name)],
                     params={"name": name}, destructive=True, result={"name": name})


def query_show(ctx: Context, params: dict[str, Any]) -> dict[str, str]:
    """Every note, by name."""
    d = notes_dir(ctx)
    index = d / "INDEX"
    names = index.read_text().split() if index.exists() else []
    return {n: (d / n).read_text() for n in names}


ACTIONS = [
    Action(
        path="example.note.add", kind="example.note-add", plan=plan_add, destructive=True,
        summary="Add (or replace) note NAME with TEXT",
        params=(Param("name", "The note's name (letters, digits, underscores).", positional=True),
                Param("text", "The note's text.", positional=True)),
        render=lambda res: print(f"note {res.result['name']} added"),
        result="the operation result (id, status, steps); result.name is the note's name",
        examples=('debvisor example note add hello "first note" --yes',
                  "debvisor example note add hello --rollback --yes"),
    ),
    Action(
        path="example.note.show", query=query_show, privilege="none",
        summary="Show every note",
        render=lambda notes: print("\n".join(f"{k}: {v}" for k, v in notes.items()) or "no notes"),
        result="an object: note name -> text",
        examples=("debvisor example note show --json",),
    ),
]
attach(example, ACTIONS)


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS


@hookimpl
def debvisor_commands() -> click.Command:
    return example


@hookimpl
def debvisor_preflight(ctx: Context, op: Operation) -> list[Finding]:
    """Refuse to add a note while `[example] frozen = true` (a site policy)."""
    if op.kind == "example.note-add" and ctx.section("example").get("frozen"):
        return [Finding("error", "notes are frozen ([example] frozen = true)", "example")]
    return []


@hookimpl
def debvisor_step_types() -> list[type[Step]]:
    """The steps this plugin journals: `ops rollback` rebuilds them from these only."""
    return [WriteNote, IndexNote]


def _index_consistent(ctx: Context) -> CheckResult:
    d = notes_dir(ctx)
    index = d / "INDEX"
    names = index.read_text().split() if index.exists() else []
    lost = [n for n in names if not (d / n).exists()]
    if lost:
        return CheckResult.crit(f"index lists missing notes: {', '.join(lost)}")
    return CheckResult.ok(f"{len(names)} notes, index consistent")


def _echo_answers(ctx: Context) -> CheckResult:
    addr = ctx.section("example").get("echo")
    if not addr:
        return CheckResult.ok("no echo server configured")
    host, _, port = addr.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(b"ping\n")
        if s.recv(16) != b"ping\n":
            return CheckResult.crit(f"echo server {addr} answered wrongly")
    return CheckResult.ok(f"echo server {addr} answers")


@hookimpl
def debvisor_health(ctx: Context) -> list[HealthCheck]:
    return [HealthCheck("example.index", _index_consistent, timeout=5),
            HealthCheck("example.echo", _echo_answers, timeout=5)]


def _echo_start(lctx: LabContext) -> dict[str, Any]:
    from debvisor_core.lab import process

    pidfile, log = lctx.dir / "echo.pid", lctx.dir / "echo.log"
    port_file = lctx.dir / "port"
    if process.read_pid(pidfile) is None:
        port = process.free_port()
        port_file.write_text(str(port))
        pid = process.spawn([sys.executable, "-m", "debvisor_example.echo", str(port)],
                            pidfile=pidfile, log=log)
        process.wait_for(lambda: process.port_open("127.0.0.1", port), timeout=10,
                         what="example echo server", log=log, pid=pid)
    return {"example": {"echo": f"127.0.0.1:{port_file.read_text()}"}}


def _echo_stop(lctx: LabContext) -> None:
    from debvisor_core.lab import process

    process.stop_pidfile(lctx.dir / "echo.pid")


def _echo_status(lctx: LabContext) -> dict[str, Any]:
    from debvisor_core.lab import process

    pid = process.read_pid(lctx.dir / "echo.pid")
    return {"running": pid is not None, "pid": pid}


@hookimpl
def debvisor_lab_services() -> list[LabService]:
    return [LabService("example-echo", _echo_start, _echo_stop, _echo_status,
                       description="TCP echo server for the example plugin")]
