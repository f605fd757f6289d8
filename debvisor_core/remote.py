"""Steps that run a declared action on another node, through a transport driver.

``RemoteAction(node, action, args)`` runs ``debvisor --origin OPID.STEP --json actions run
ACTION -`` on ``node`` with the parameters as JSON on stdin (never on a command line),
journals the remote operation's id whatever its outcome (``verify`` fails a run that did
not succeed), and undoes it with ``debvisor ops rollback ID`` there. The remote node
journals and audits its own operation with the origin, so an apply interrupted before
its id came back is found again by ``ops list --origin`` — never guessed.
``RebootAndVerify(node)`` reboots a node into its newest kernel through the same
transport and checks that it came back running it.

Nodes come from the config: ``[cluster.nodes.NAME]`` with ``transport`` (``ssh``, the
default, ``local`` or ``grpc``), ``host``, ``user``, ``command`` (the remote debvisor),
``ssh_config`` (a file for ``ssh -F``) and ``connect_timeout`` (ssh), ``address`` (grpc: the node's rpcd, see
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
    """OpenSSH in batch mode; arguments are quoted for the remote shell, params go on stdin.
    ``ssh_config`` is a client config file (``ssh -F``), ``command`` the remote debvisor,
    ``connect_timeout`` how long an unreachable node may keep a step waiting."""

    node: str
    host: str
    user: str | None = None
    command: str = "debvisor"
    ssh_config: str | None = None
    connect_timeout: float = 10.0

    def run(self, args: list[str], stdin: str | None, timeout: float) -> tuple[int, str, str]:
        import shlex

        ssh = shutil.which("ssh")
        if ssh is None:
            raise StepFailed(f"node {self.node}: ssh is not installed here")
        dest = f"{self.user}@{self.host}" if self.user else self.host
        remote = shlex.join([self.command, *args])
        argv = [ssh, *(["-F", self.ssh_config] if self.ssh_config else []), "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={max(1, round(self.connect_timeout))}", "--", dest, remote]
        try:
            p = subprocess.run(argv, input=stdin or "", capture_output=True,  # noqa: S603
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return 255, "", f"[ERROR] node {self.node}: no answer within {timeout:g}s\n"
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
        from .settings import Section

        sec = Section.at(ctx, f"[cluster.nodes.{node}]", conf)
        return SshTransport(node, sec.string("host") or node, sec.string("user"),
                            sec.string("command") or "debvisor", sec.string("ssh_config"),
                            sec.number("connect_timeout", 10.0, minimum=1, unit="s"))
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


#: the largest node report a step's journal record keeps (bytes of JSON)
REPORT_MAX = 256 * 1024


def _reportable(result: Any) -> dict[str, Any] | None:
    """A node's report (its action's result) as the step's journal record keeps it: what
    looks secret digested, as the audit log has it (``ops show`` is a query anyone
    allowed to read may run); plain JSON only (a NaN would make the journal unreadable)
    and at most :data:`REPORT_MAX` bytes — else a note of why it was left out."""
    if not isinstance(result, dict):
        return None
    from .redact import scrub

    clean = scrub(result)
    try:
        size = len(json.dumps(clean, allow_nan=False))
    except (ValueError, TypeError):
        return {"omitted": "the node's report is not plain JSON"}
    return clean if size <= REPORT_MAX else {"omitted": f"the node's report is {size} bytes"}


def _why(code: int, stderr: str) -> str:
    """Why a remote run failed: its last ``[ERROR]`` line, else the last line it wrote (what
    ssh says about an unreachable node), else its exit code."""
    lines = [ln.removeprefix("[ERROR] ") for ln in stderr.splitlines() if ln.startswith("[ERROR]")]
    other = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else (other[-1][:300] if other else f"exit {code}")


@dataclass
class RemoteAction(Step):
    """Run a declared action on another node; undo rolls back the operation it made there."""

    TYPE = "core.remote-action"
    node: str
    action: str
    args: dict[str, Any]
    timeout: float = 3600.0
    #: run it there even though maintenance mode is on (the orchestrator put the node in
    #: maintenance itself, for this very work)
    force_maintenance: bool = False

    def describe(self, ctx: Context) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.args.items()))
        forced = " in its maintenance" if self.force_maintenance else ""
        return f"on {self.node}: {self.action}({shown}){forced}"

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        op = ctx.operation
        index = next((i for i, st in enumerate(getattr(op, "steps", [])) if st is self), 0)
        return {"node": self.node, "origin": f"{getattr(op, 'id', '')}.{index}"}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        """Run the action there. Whatever the outcome, the remote operation's id is
        recorded (``verify`` then fails a run that did not succeed), so undo never guesses."""
        transport = transport_for(ctx, self.node)
        origin = ["--origin", prior["origin"]] if ORIGIN_RE.fullmatch(prior.get("origin", "")) else []
        forced = ["--force-maintenance"] if self.force_maintenance else []
        code, out, err = transport.run([*origin, "--json", "actions", "run", self.action, "-",
                                        "--yes", *forced], json.dumps(self.args), self.timeout)
        data = _last_json(out)
        data = data if isinstance(data, dict) else {}
        return {"remote_op": data.get("id") or None, "remote_status": data.get("status"),
                "remote_exit": code, "remote_error": _why(code, err) if code else None,
                "report": _reportable(data.get("result"))}

    def add_result(self, ctx: Context, record: dict[str, Any]) -> None:
        """The node's report (the action's result), in the operation's result per node."""
        if isinstance(record.get("report"), dict):
            node_report(ctx, self.node)[self.action] = record["report"]

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


def node_report(ctx: Context, node: str) -> dict[str, Any]:
    """What the running operation reports about ``node`` (its result's ``nodes.NODE``:
    each remote action's result by action path, the reboot's kernels and services)."""
    if ctx.operation is None:
        return {}
    nodes = ctx.operation.result.setdefault("nodes", {})
    return nodes.setdefault(node, {})


def _services(before: list[str] | None, after: list[str] | None
              ) -> dict[str, list[str]] | None:
    from .upgrade import services_diff

    return services_diff(before, after)


@dataclass
class RebootAndVerify(Step):
    """Reboot NODE when its newest installed kernel is not the running one, wait until it
    is back (a new boot id, asked through its transport) and verify it booted that kernel
    and runs the services it ran before. A node that boots another kernel, or lost a
    service, fails the step: the upgrade pauses there, the packages stay (``ops resume``
    reboots if still needed and verifies again once the cause is fixed)."""

    TYPE = "core.reboot-and-verify"
    node: str
    timeout: float = 900.0
    poll_s: float = 1.0
    #: how long a node back from its reboot may take to start the services it ran before
    settle_s: float = 120.0

    def describe(self, ctx: Context) -> str:
        return (f"on {self.node}: reboot if a newer kernel is installed, wait up to "
                f"{self.timeout:g}s, verify the booted kernel and the services")

    def _tagged(self, ctx: Context, args: list[str], tag: str, timeout: float
                ) -> tuple[int, str, str]:
        """Run ``args --for-operation TAG`` there. A node whose debvisor predates the option
        (a cluster halfway through upgrading debvisor itself) runs ``args`` alone: its
        reboot is then not told apart from one by hand (warned; ``_per_operation`` False)."""
        transport = transport_for(ctx, self.node)
        if not tag:
            return transport.run(args, None, timeout)
        code, out, err = transport.run([*args, "--for-operation", tag], None, timeout)
        if code == 2 and ("no such option" in err.lower() and "--for-operation" in err
                          or "unknown parameter 'for_operation'" in err):  # ssh / grpc
            from . import log

            log.warn(f"{self.node}: its debvisor is older than `{' '.join(args[-2:])} "
                     "--for-operation`: running it without; a resumed check there verifies "
                     "the kernel, not the services it ran before the reboot")
            self._per_operation = False
            return transport.run(args, None, timeout)
        return code, out, err

    def _status(self, ctx: Context, timeout: float, tag: str = "") -> dict[str, Any]:
        """The node's ``upgrade status`` (its last reboot: the one made for ``tag``)."""
        import json

        code, out, err = self._tagged(ctx, ["--json", "upgrade", "status"], tag, timeout)
        try:
            data = json.loads(out) if code == 0 else None
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or "boot_id" not in data:
            from .errors import StepFailed

            raise StepFailed(f"node {self.node}: cannot read its boot state: {_why(code, err)}")
        return data

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        import time

        from . import log
        from .errors import StepFailed
        tag = f"{ctx.operation.id}:{self.node}" if ctx.operation is not None else ""
        before = self._status(ctx, 120, tag)
        if not before["reboot_required"]:
            # resumed after this operation rebooted the node: the services it ran then
            last = before.get("last_reboot") or {}
            # an older debvisor there keeps no reboot per operation: a reboot by hand and
            # ours look alike, so the services are not compared on a resume (warned)
            ours = getattr(self, "_per_operation", True) and last.get("tag") == tag
            rebooted = bool(tag) and ours and last.get("boot_id") != before["boot_id"]
            ran = last.get("services") if rebooted else before.get("services")
            if rebooted:
                before = self._settled(ctx, {"services": ran}, before)
            return {
                "rebooted": False, "before": before, "after": before,
                "expected_kernel": before["running_kernel"],
                "services": _services(ran, before.get("services"))}
        log.info(f"{self.node}: rebooting into {before['newest_kernel']} "
                 f"(runs {before['running_kernel']})")
        t0 = time.monotonic()
        code, _, err = self._tagged(ctx, ["--yes", "upgrade", "reboot"], tag, 120)
        if code not in (0, 255):  # 255: ssh lost the session to the reboot
            raise StepFailed(f"node {self.node}: upgrade reboot failed: {_why(code, err)}")
        last = "no answer yet"
        while time.monotonic() - t0 < self.timeout:
            try:
                after = self._status(ctx, 30)
            except (StepFailed, OSError) as exc:
                last = getattr(exc, "message", str(exc))
            else:
                if after["boot_id"] != before["boot_id"]:
                    took = round(time.monotonic() - t0, 3)
                    log.info(f"{self.node}: back after {took}s, runs {after['running_kernel']}")
                    after = self._settled(ctx, before, after)
                    return {
                        "rebooted": True, "before": before, "after": after,
                        "expected_kernel": before["newest_kernel"], "reboot_s": took,
                        "services": _services(before.get("services"),
                                              after.get("services"))}
                last = "still the same boot"
            time.sleep(self.poll_s)
        raise StepFailed(f"node {self.node} did not come back within {self.timeout:g}s of its "
                         f"reboot ({last})")

    def add_result(self, ctx: Context, record: dict[str, Any]) -> None:
        """The reboot in the operation's result per node: kernels, time, services."""
        before, after = record.get("before"), record.get("after")
        if not (isinstance(before, dict) and isinstance(after, dict)):
            return  # a record from before this step reported (an older journal)
        node_report(ctx, self.node)["reboot"] = {
            "rebooted": record.get("rebooted"), "kernel_before": before.get("running_kernel"),
            "kernel_after": after.get("running_kernel"), "reboot_s": record.get("reboot_s"),
            "services": record.get("services")}

    def _settled(self, ctx: Context, before: dict[str, Any], after: dict[str, Any]
                 ) -> dict[str, Any]:
        """The node's state once every service it ran before runs again, or ``settle_s``
        after it came back (services start after the SSH server that answered)."""
        import time

        from .errors import StepFailed

        deadline = time.monotonic() + self.settle_s
        while ((_services(before.get("services"), after.get("services")) or {}).get("stopped")
               and time.monotonic() < deadline):
            time.sleep(self.poll_s)
            try:
                after = self._status(ctx, 30)
            except (StepFailed, OSError):
                continue
        return after

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        from .errors import StepFailed

        after, expected = record.get("after") or {}, record.get("expected_kernel")
        if after.get("running_kernel") != expected:
            raise StepFailed(f"node {self.node} booted kernel {after.get('running_kernel')}, not "
                             f"{expected}: check its boot loader (default entry, "
                             f"/etc/default/grub), then `debvisor ops resume` reboots and "
                             f"verifies it again")
        if record.get("services") is None:
            from . import log

            log.warn(f"node {self.node}: its services before and after the reboot are not "
                     f"known (systemctl failed there): not compared")
        stopped = (record.get("services") or {}).get("stopped")
        if stopped:
            raise StepFailed(f"node {self.node} does not run {', '.join(stopped)} since its "
                             f"reboot (it did before): start or fix them (`systemctl status "
                             f"NAME`, `journalctl -b -u NAME`), then `debvisor ops resume` "
                             f"verifies again")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """A reboot cannot be undone; the package undo before it boots the old kernel
        again at the node's next reboot."""
