"""The executor: where debvisor-rpcd's state changes run when the daemon is sandboxed.

``debvisor-rpcd.service`` is held to a small exposure (read-only system, no capabilities
beyond binding its port, no netlink): enough for its queries, the guard and the call
log, not for what a state change may need — ``upgrade run`` writes the system through
apt, ``net apply`` configures links over netlink. So, as Proxmox's unprivileged
``pveproxy`` hands its work to the root ``pvedaemon``, rpcd hands each state change to the
executor (``debvisor rpcd exec-serve``, ``debvisor-rpcd-exec.service``, started by its
socket unit) over a UNIX socket only root may open, when ``[rpcd] exec_socket`` (or
``rpcd serve --exec-socket``) names it. Without one, rpcd runs the change as its own child,
as in the lab.

Protocol, one connection per run: rpcd sends one JSON line ``{"argv": [...], "stdin":
"...", "env": CALLER}`` (the variables of :func:`..audit.caller_env`: the caller, sealed,
checked again by the child), then nothing; closing its side cancels the run (the child gets
SIGTERM, as on Ctrl-C, and rolls back). The executor answers ``NUL accepted`` once the run
has started (rpcd waits :data:`ACCEPT_TIMEOUT` for it: a socket unit accepts connections
even when its service cannot start, and then nothing was run), the child's event lines
(``debvisor --events ARGV``, the CLI's engine, audit and journal), then
``NUL {"exit_code": N, "stderr": TAIL}`` — or only that last line for a request it
refuses. Its own lines start with a NUL, which no JSON line does. It runs only the two
shapes rpcd sends —
``[--origin OPID.STEP] actions run ACTION - [FLAGS]`` and ``ops rollback ID [FLAGS]`` —
and only for a peer running as root (or as itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import log
from ..errors import BadInput

#: the flags rpcd passes with a run (``Invoke``'s and ``RollbackOperation``'s)
FLAGS = frozenset({"--dry-run", "--check", "--yes", "--force-maintenance"})
_ACTION = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+")
#: the request line's largest size (the parameters, JSON in JSON): well above rpcd's
#: default message limit (1 MiB)
MAX_REQUEST = 64 << 20
#: seconds rpcd waits for the executor to accept a run
ACCEPT_TIMEOUT = 30.0
#: seconds the executor waits, when stopped, for the runs still going to roll back (its
#: unit's TimeoutStopSec is longer: KillMode=mixed kills the rest once it exits)
STOP_WAIT = 280.0
ACCEPTED = b"\0accepted\n"
_END = "\0"


def checked_argv(argv: Any) -> list[str]:
    """``argv`` if it is one of the runs rpcd asks for, else BadInput (one sentence)."""
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise BadInput("argv must be a list of strings")
    rest = list(argv)
    if rest[:1] == ["--origin"]:
        from ..journal import ORIGIN_RE

        if len(rest) < 2 or not ORIGIN_RE.fullmatch(rest[1]):
            raise BadInput("--origin must be OPID.STEP")
        rest = rest[2:]
    if rest[:2] == ["actions", "run"] and len(rest) >= 4 and rest[3] == "-":
        if not _ACTION.fullmatch(rest[2]):
            raise BadInput(f"not an action name: {rest[2][:60]!r}")
        flags = rest[4:]
    elif rest[:2] == ["ops", "rollback"] and len(rest) >= 3:
        from ..journal import check_id

        check_id(rest[2])
        flags = rest[3:]
    else:
        raise BadInput("the executor runs only `actions run ACTION -` and `ops rollback ID`")
    if not set(flags) <= FLAGS or len(set(flags)) != len(flags):
        raise BadInput(f"flags must be among {', '.join(sorted(FLAGS))}, each once")
    return list(argv)


class LocalRun:
    """``debvisor --events ARGV`` as a child of this process (its own session), the
    parameters on stdin, for the caller ``caller`` (:func:`..audit.caller_env`'s variables)
    and on ``config_file`` when given."""

    def __init__(self, argv: list[str], stdin: str, caller: dict[str, Any],
                 config_file: str | None, label: str = "") -> None:
        from ..audit import CALLER_VARS

        self.label = label or " ".join(argv[:4])
        env = {**os.environ, **{k: str(caller.get(k, ""))[:512] for k in CALLER_VARS}}
        if config_file:
            env["DEBVISOR_CONFIG"] = config_file
        self.proc = subprocess.Popen(  # noqa: S603 - an argv list, parameters on stdin
            [sys.executable, "-m", "debvisor_core", "--events", *argv], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write(stdin)
        self.proc.stdin.close()

    def lines(self) -> Iterator[str]:
        """Its stdout's lines: the pipe itself, not a generator over it — closing a
        generator that delegates (``yield from``) closes the pipe, and a run that can no
        longer write its events fails in the middle of its rollback."""
        assert self.proc.stdout is not None
        return iter(self.proc.stdout)

    def stop(self) -> None:
        """As Ctrl-C: the run rolls back what it did."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def finish(self) -> tuple[int, str]:
        """(Its exit code, its stderr), once it has ended."""
        code = self.proc.wait()
        return code, self.proc.stderr.read() if self.proc.stderr else ""

    def abandon(self) -> None:
        """The call ended first: stop the run and read what is left in a thread (so
        that its rollback is never blocked on a full pipe), until it exits."""
        if self.proc.poll() is None:
            self.stop()
            threading.Thread(target=_drain, args=(self.proc, self.label), daemon=True,
                             name=f"rpcd-drain-{self.proc.pid}").start()


def _drain(proc: subprocess.Popen[str], label: str) -> None:
    """Read a stopped call's child to its end: its rollback (a migration going back can take
    minutes) must never block on a full pipe nor be killed halfway. Its outcome is logged."""
    def discard(stream: Any) -> None:
        with contextlib.suppress(OSError, ValueError):
            for _ in stream:
                pass

    errors = threading.Thread(target=discard, args=(proc.stderr,), daemon=True)
    errors.start()
    said = ""
    with contextlib.suppress(OSError, ValueError):
        for line in proc.stdout or ():
            if '"event": "exit"' in line:
                with contextlib.suppress(ValueError, AttributeError):
                    said = str(json.loads(line).get("message") or "")[:300]
    errors.join()
    code = proc.wait()
    log.info(f"rpcd: {label}: the stopped action ended with exit code {code}"
             + (f": {said}" if said else ""))


class ExecutorRun:
    """The same run, made by the executor listening on ``path``: OSError (nothing was run)
    unless the executor accepts it, or refuses it with its reason, within
    :data:`ACCEPT_TIMEOUT`."""

    def __init__(self, path: str, argv: list[str], stdin: str, caller: dict[str, str]) -> None:
        self._end: dict[str, Any] | None = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(ACCEPT_TIMEOUT)
            self.sock.connect(path)
            request = {"argv": argv, "stdin": stdin, "env": caller}
            self.sock.sendall(json.dumps(request).encode() + b"\n")
            self._file = self.sock.makefile("r", encoding="utf-8", newline="\n")
            first = self._file.readline()
            if first.startswith(_END + "{"):  # refused (its reason), before anything ran
                self._end = json.loads(first[1:])
            elif first.encode() != ACCEPTED:
                raise OSError("it closed the connection" if not first else "it answered garbage")
            self.sock.settimeout(None)
        except (OSError, ValueError) as exc:
            self.sock.close()
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or "timed out"
            raise OSError(f"the executor ({path}) did not take the run: {why}") from None

    def lines(self) -> Iterator[str]:
        if self._end is not None:
            return
        try:
            for line in self._file:
                if line.startswith(_END):
                    with contextlib.suppress(ValueError):
                        self._end = json.loads(line[1:])
                    return
                yield line
        except OSError as exc:  # the executor went away mid-run: finish() says so
            log.error(f"rpcd: the executor's connection broke: {exc}")

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)  # the executor stops the run as on Ctrl-C

    def finish(self) -> tuple[int, str]:
        self.abandon()
        if self._end is None:
            return 1, ("[ERROR] the executor's connection ended before the run did; see "
                       "`debvisor ops list` on the node")
        return int(self._end.get("exit_code", 1)), str(self._end.get("stderr", ""))

    def abandon(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self._file.close()
            self.sock.close()


# -- the executor's side ------------------------------------------------------------------
def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class _Handler(socketserver.StreamRequestHandler):
    server: Executor

    def handle(self) -> None:
        sock: socket.socket = self.request
        if _peer_uid(sock) not in (0, os.geteuid()):
            self._end(2, "[ERROR] only root may ask the executor for a run")
            return
        try:
            raw = self.rfile.readline(MAX_REQUEST + 1)
            if not raw.endswith(b"\n"):
                raise BadInput(f"the request must be one line of at most {MAX_REQUEST} bytes")
            req = json.loads(raw)
            if not isinstance(req, dict) or not isinstance(req.get("stdin", ""), str):
                raise BadInput("the request must be a JSON object with argv and stdin")
            argv = checked_argv(req.get("argv"))
        except (ValueError, BadInput) as exc:
            self._end(2, f"[ERROR] {getattr(exc, 'message', None) or exc}")
            return
        given = req.get("env")
        caller: dict[str, Any] = given if isinstance(given, dict) else {}
        who = str(caller.get("DEBVISOR_CALLER") or "?")[:200]
        log.info(f"rpcd-exec: {' '.join(argv[:5])} for {who}")
        run = LocalRun(argv, str(req.get("stdin", "")), caller, self.server.config_file)
        self.server.runs.add(run)
        gone = False
        try:
            self.wfile.write(ACCEPTED)
        except OSError:
            gone = True  # rpcd went away at once: the watch below stops the run
        def watch() -> None:  # rpcd closing its side (the call cancelled, rpcd gone) stops it
            with contextlib.suppress(OSError, ValueError):
                self.rfile.read(1)
            run.stop()

        threading.Thread(target=watch, daemon=True).start()
        try:
            for line in run.lines():
                if not gone:
                    try:
                        self.wfile.write(line.encode() if line.endswith("\n") else
                                         line.encode() + b"\n")
                    except OSError:
                        gone = True  # go on reading: the run rolls back until it exits
            code, err = run.finish()
        finally:
            self.server.runs.discard(run)
        log.info(f"rpcd-exec: {' '.join(argv[:5])} for {who}: exit {code}")
        if not gone:
            self._end(code, err[-4000:])
        with contextlib.suppress(OSError):  # ends the watch's read (finish() would wait on it)
            sock.shutdown(socket.SHUT_RDWR)

    def _end(self, code: int, stderr: str) -> None:
        with contextlib.suppress(OSError):
            self.wfile.write(f'{_END}{json.dumps({"exit_code": code, "stderr": stderr})}\n'.encode())


class Executor(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, config_file: str | None) -> None:
        super().__init__("", _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.config_file = config_file
        self.runs: set[LocalRun] = set()


def listening_socket(path: str | None) -> socket.socket:
    """The socket systemd passed (``LISTEN_FDS``, fd 3), else a new one at ``path``
    (mode 0600: only root, or this user, may connect)."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(k, None)  # not for the runs
        return socket.socket(fileno=3)
    if not path:
        raise BadInput("no socket: start it from debvisor-rpcd-exec.socket or give --socket PATH")
    p = Path(path)
    if p.is_socket():
        p.unlink()  # a stale one (a live executor on it would answer: see rpcd's error)
    elif p.exists():
        raise BadInput(f"{path} exists and is not a socket")
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(64)
    return sock


def serve(path: str | None, config_file: str | None, ready: Any = None) -> None:
    """Serve runs until SIGTERM or SIGINT; then the runs still going are stopped as on
    Ctrl-C (they roll back) and waited for."""
    server = Executor(listening_socket(path), config_file)

    def stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if ready:
        ready()
    try:
        server.serve_forever()
    finally:
        runs = list(server.runs)
        for run in runs:
            run.stop()
        until = time.monotonic() + STOP_WAIT
        for run in runs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.proc.wait(max(until - time.monotonic(), 0))
        server.server_close()
