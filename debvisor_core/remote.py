"""Steps that run a declared action on another node, through a transport driver.

``RemoteAction(node, action, args)`` runs ``debvisor --origin OPID.STEP --json actions run
ACTION -`` on ``node`` with the parameters as JSON on stdin (never on a command line),
journals the remote operation's id whatever its outcome (``verify`` fails a run that did
not succeed), and undoes it with ``debvisor ops rollback ID`` there. The remote node
journals and audits its own operation with the origin, so an apply interrupted before
its id came back is found again by ``ops list --origin`` — never guessed.

Nodes come from the config: ``[cluster.nodes.NAME]`` with ``transport`` (``ssh``, the
default, ``local`` or ``grpc``), ``host`` (ssh), ``address`` (grpc: the node's rpcd, see
``rpcd/transport.py``) and, for ``local``, the node's ``state_dir`` and ``config``
(several "nodes" on one machine: the lab and the tests). Other transports register in the
``debvisor.transports`` entry-point group.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .errors import BadInput, StepFailed
from .journal import ORIGIN_RE
from .model import Step

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context


class Transport(Protocol):
    """Runs ``debvisor ARGS`` on a node; returns (exit code, stdout, stderr)."""

    def run(self, args: list[str], stdin: str | None, timeout: float) -> tuple[int, str, str]: ...


@dataclass
class LocalTransport:
    """This machine, with the node's own state dir and config (lab and tests)."""

    node: str
    state_dir: str | None = None
    config: str | None = None

    def run(self, args: list[str], stdin: str | None, timeout: float) -> tuple[int, str, str]:
        import sys

        env = dict(os.environ)
        env.pop("DEBVISOR_FAULTS", None)
        if self.state_dir:
            env["DEBVISOR_STATE_DIR"] = self.state_dir
        if self.config:
            env["DEBVISOR_CONFIG"] = self.config
        p = subprocess.run([sys.executable, "-m", "debvisor_core", *args],  # noqa: S603 - argv list
                           input=stdin or "", capture_output=True, text=True, timeout=timeout,
                           env=env)
        return p.returncode, p.stdout, p.stderr


@dataclass
class SshTransport:
    """OpenSSH in batch mode; arguments are quoted for the remote shell, params go on stdin."""

    node: str
    host: str
    user: str | None = None
    command: str = "debvisor"

    def run(self, args: list[str], stdin: str | None, timeout: float) -> tuple[int, str, str]:
        import shlex

        ssh = shutil.which("ssh")
        if ssh is None:
            raise StepFailed(f"node {self.node}: ssh is not installed here")
        dest = f"{self.user}@{self.host}" if self.user else self.host
        remote = shlex.join([self.command, *args])
        p = subprocess.run([ssh, "-o", "BatchMode=yes", "--", dest, remote],  # noqa: S603
                           input=stdin or "", capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr


DRIVERS: dict[str, Any] = {"local": LocalTransport, "ssh": SshTransport}


def transport_for(ctx: Context, node: str) -> Transport:
    """The transport of ``node`` as the config's ``[cluster.nodes.NODE]`` describes it."""
    nodes = ctx.section("cluster").get("nodes") or {}
    conf = nodes.get(node)
    if not isinstance(conf, dict):
        raise BadInput(f"node {node!r} is not in the inventory ([cluster.nodes.{node}] in the config)")
    name = str(conf.get("transport", "ssh"))
    if name == "grpc":  # the node's rpcd; grpc is imported only for such nodes
        from .rpcd.transport import GrpcTransport

        return GrpcTransport.for_node(ctx, node, conf)
    driver = DRIVERS.get(name) or _entry_point_driver(name)
    if driver is None:
        raise BadInput(f"[cluster.nodes.{node}] transport {name!r} is unknown "
                       f"(known: {', '.join(sorted([*DRIVERS, 'grpc']))})")
    if driver is LocalTransport:
        return LocalTransport(node, conf.get("state_dir"), conf.get("config"))
    if driver is SshTransport:
        return SshTransport(node, str(conf.get("host", node)), conf.get("user"))
    return driver(node, conf)


def _entry_point_driver(name: str) -> Any:
    from importlib.metadata import entry_points

    for ep in entry_points(group="debvisor.transports"):
        if ep.name == name:
            return ep.load()
    return None


def _last_json(stdout: str) -> Any:
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        return None


def _why(code: int, stderr: str) -> str:
    lines = [ln.removeprefix("[ERROR] ") for ln in stderr.splitlines() if ln.startswith("[ERROR]")]
    return lines[-1] if lines else f"exit {code}"


@dataclass
class RemoteAction(Step):
    """Run a declared action on another node; undo rolls back the operation it made there."""

    TYPE = "core.remote-action"
    node: str
    action: str
    args: dict[str, Any]
    timeout: float = 3600.0

    def describe(self, ctx: Context) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.args.items()))
        return f"on {self.node}: {self.action}({shown})"

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        op = ctx.operation
        index = next((i for i, st in enumerate(getattr(op, "steps", [])) if st is self), 0)
        return {"node": self.node, "origin": f"{getattr(op, 'id', '')}.{index}"}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        """Run the action there. Whatever the outcome, the remote operation's id is
        recorded (``verify`` then fails a run that did not succeed), so undo never guesses."""
        transport = transport_for(ctx, self.node)
        origin = ["--origin", prior["origin"]] if ORIGIN_RE.fullmatch(prior.get("origin", "")) else []
        code, out, err = transport.run([*origin, "--json", "actions", "run", self.action, "-",
                                        "--yes"], json.dumps(self.args), self.timeout)
        data = _last_json(out)
        data = data if isinstance(data, dict) else {}
        return {"remote_op": data.get("id") or None, "remote_status": data.get("status"),
                "remote_exit": code, "remote_error": _why(code, err) if code else None}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        code, status = record.get("remote_exit"), record.get("remote_status")
        if code != 0:
            where = f" (operation {record['remote_op']} there)" if record.get("remote_op") else ""
            raise StepFailed(f"node {self.node}: {self.action} failed with exit {code}{where}: "
                             f"{record.get('remote_error')}")
        if status not in ("succeeded", "unchanged", None):
            raise StepFailed(f"node {self.node}: {self.action} ended {status} (operation "
                             f"{record.get('remote_op')} there), not succeeded")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        transport = transport_for(ctx, self.node)
        op_id = record.get("remote_op")
        if not op_id and record.get("_partial"):
            op_id = self._find_partial(transport, record)
        if not op_id:
            return  # nothing ran there (refused before its journal, or never started)
        code, _, err = transport.run(["--json", "ops", "rollback", str(op_id), "--yes"], None,
                                     self.timeout)
        if code != 0 and "already rolled-back" not in err and "already refused" not in err:
            raise StepFailed(f"node {self.node}: rollback of operation {op_id} failed: "
                             f"{_why(code, err)}")

    def _find_partial(self, transport: Transport, record: dict[str, Any]) -> str | None:
        """An interrupted apply: the node's operation journalled for this step (``--origin``),
        if it still needs undoing; one still running there cannot be undone yet."""
        origin = str(record.get("origin", ""))
        if not ORIGIN_RE.fullmatch(origin):
            raise StepFailed(f"node {self.node}: the journal has no origin for this step; check "
                             f"`debvisor ops list` there and roll back by hand")
        code, out, err = transport.run(["--json", "ops", "list", "--origin", origin, "--limit",
                                        "5"], None, 120)
        ops = _last_json(out) if code == 0 else None
        if not isinstance(ops, list):
            raise StepFailed(f"node {self.node}: cannot list its operations: {_why(code, err)}")
        for o in ops:
            if o.get("status") == "running":
                raise StepFailed(f"node {self.node}: operation {o['id']} for this step is still "
                                 "running there; roll back again once it has ended")
            if o.get("status") in ("succeeded", "interrupted", "paused", "rollback-incomplete"):
                return str(o["id"])
        return None


