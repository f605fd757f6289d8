"""rpcd's executor (`debvisor rpcd exec-serve`) under hostile requests: it runs as root,
so a request must never make it run anything but the two shapes rpcd sends, nor crash it.
Every refusal is one sentence (exit 2, the executor's own NUL line) and the executor
serves the next request."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debvisor_core.errors import BadInput
from debvisor_core.rpcd.executor import MAX_REQUEST, checked_argv

SHAPES = [
    (["actions", "run", "-rf", "-"], "not an action name"),
    (["actions", "run", "--config=/etc/shadow", "-"], "not an action name"),
    (["actions", "run", "a.b", "-", "--config", "/x"], "flags must be among"),
    (["actions", "run", "a.b", "-", "--yes", "--yes"], "each once"),
    (["actions", "run", "a.b", "payload"], "runs only"),
    (["actions", "run", "a.b"], "runs only"),
    (["ops", "rollback", "../../etc/passwd"], "operation id"),
    (["ops", "rollback", "--yes"], "operation id"),
    (["ops", "rollback"], "runs only"),
    (["--origin"], "--origin must be"),
    (["--origin", "x; rm -rf /", "ops", "rollback", "20260101-000000-abcdef"], "--origin must be"),
    (["--config", "/tmp/evil.toml", "actions", "run", "a.b", "-"], "runs only"),
    (["rpcd", "serve"], "runs only"),
    (["actions", "run", 7, "-"], "list of strings"),
    ("actions run a.b -", "list of strings"),
    (None, "list of strings"),
]


@pytest.mark.parametrize(("argv", "why"), SHAPES, ids=[str(a)[:40] for a, _ in SHAPES])
def test_only_the_two_shapes_rpcd_sends_are_taken(argv: Any, why: str) -> None:
    with pytest.raises(BadInput) as err:
        checked_argv(argv)
    assert why in err.value.message and "\n" not in err.value.message


def test_the_shapes_rpcd_sends_are_taken() -> None:
    for argv in (["actions", "run", "hv.migrate", "-", "--yes"],
                 ["--origin", "20260101-000000-abcdef.2", "actions", "run", "ops.list", "-"],
                 ["ops", "rollback", "20260101-000000-abcdef", "--dry-run", "--yes"]):
        assert checked_argv(argv) == argv


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "exec.sock"
    env = {**os.environ, "DEBVISOR_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-m", "debvisor_core", "rpcd", "exec-serve", "--socket",
                             str(sock)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("READY"), proc.stderr.read() if proc.stderr else ""
    assert sock.stat().st_mode & 0o777 == 0o600  # only root (and its own user) may connect
    yield sock
    proc.terminate()
    assert proc.wait(30) == 0 or proc.returncode == -15
    err = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in err, err


def _ask(sock: Path, raw: bytes, *, shut: bool = False) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(60)
        s.connect(str(sock))
        s.sendall(raw)
        if shut:
            s.shutdown(socket.SHUT_WR)
        return s.makefile(encoding="utf-8", errors="replace").readline()


REQUESTS = [
    (b"not json\n", ""),
    (b"[1, 2]\n", "a JSON object"),
    (b'{"argv": ["ops", "rollback", "20260101-000000-abcdef"], "stdin": 5}\n', "a JSON object"),
    (b'{"stdin": ""}\n', "list of strings"),
    (b'{"argv": ["actions", "run", "a.b", "-"]', "one line"),  # no newline: the peer stops
    (b"\xff\xfe\x00garbage\n", ""),
]


def test_hostile_requests_are_refused_and_it_keeps_serving(executor: Path) -> None:
    for raw, why in [*REQUESTS, (b"x" * (MAX_REQUEST + 10) + b"\n", "one line")]:
        line = _ask(executor, raw, shut=True)
        assert line.startswith("\0"), (raw[:40], line[:80])  # the executor's own line
        answer = json.loads(line[1:])
        assert answer["exit_code"] == 2 and why in answer["stderr"], (raw[:40], answer)
    # a caller's variables that are not a mapping, or carry more than the caller: only the
    # caller's own two variables reach the run; it is accepted and runs (an unknown id: 2)
    for env in ("garbage", {"DEBVISOR_CALLER": "x", "LD_PRELOAD": "/tmp/evil.so"}):
        req = {"argv": ["ops", "rollback", "20260101-000000-abcdef", "--dry-run"], "stdin": "",
               "env": env}
        t0 = time.monotonic()
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(60)
            s.connect(str(executor))
            s.sendall(json.dumps(req).encode() + b"\n")
            lines = s.makefile(encoding="utf-8").read().splitlines()
        assert lines[0] == "\0accepted" and lines[-1].startswith("\0"), lines
        assert json.loads(lines[-1][1:])["exit_code"] == 2 and time.monotonic() - t0 < 60
