"""pytest plugin for DebVisor and for site-plugin authors (registered as ``pytest11``).

Fixtures:

- ``dv_state``: an isolated state dir and config file (``DEBVISOR_STATE_DIR``,
  ``DEBVISOR_CONFIG``) for the test; ``dv_state.config({...})`` writes the config.
- ``dv``: runs the real ``debvisor`` command in a subprocess and returns a
  :class:`Result` (exit code, stdout, stderr, parsed JSON).
- ``dv_lab``: session-wide lab; ``dv_lab.require("bind9")`` starts that service
  (once per session) and returns the lab config path, or skips the test with the
  reason when the machine lacks root or the service's programs.
- ``dv_fault``: ``dv_fault("StepName:after")`` injects a fault into ``dv`` runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Result:
    """What a ``debvisor`` run returned."""

    code: int
    stdout: str
    stderr: str
    argv: list[str]

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return (f"Result(code={self.code}, argv={self.argv})\n--- stdout\n{self.stdout}"
                f"\n--- stderr\n{self.stderr}")


def one_error(stderr: str) -> str:
    """The one ``[ERROR]`` line of a run's stderr, asserting it is the only one and that no
    traceback or "internal error" came with it."""
    errors = [ln for ln in stderr.splitlines() if ln.startswith("[ERROR]")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    return errors[0]


_PROBE = """
import contextlib, io, json, sys
from debvisor_core.cli import main_group
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main_group.main(sys.argv[1:], prog_name="debvisor")
    except SystemExit:
        pass
print(json.dumps({"stdout": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def imports_of(*argv: str) -> tuple[str, set[str]]:
    """Run ``debvisor ARGV`` in a fresh interpreter: (its stdout, every module it imported) —
    for tests that keep ``--help`` light."""
    res = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True,  # noqa: S603
                         check=True)
    doc = json.loads(res.stdout)
    return doc["stdout"], set(doc["modules"])


class StateDir:
    """An isolated DebVisor state dir plus its config file."""

    def __init__(self, path: Path, mp: pytest.MonkeyPatch) -> None:
        self.path = path
        self.config_path = path / "debvisor.toml"
        self.config_path.write_text("")
        mp.setenv("DEBVISOR_STATE_DIR", str(path))
        mp.setenv("DEBVISOR_CONFIG", str(self.config_path))
        mp.delenv("DEBVISOR_FAULTS", raising=False)

    def config(self, data: dict[str, Any], *, base: Path | None = None) -> Path:
        """Write ``data`` (merged over the TOML file ``base``, e.g. the lab's) as config."""
        import tomllib

        from .lab.manager import merge, to_toml

        merged: dict[str, Any] = tomllib.loads(base.read_text()) if base else {}
        merge(merged, data)
        self.config_path.write_text(to_toml(merged))
        return self.config_path


@pytest.fixture
def dv_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateDir:
    d = tmp_path / "dvstate"
    d.mkdir()
    return StateDir(d, monkeypatch)


class Runner:
    """Runs ``python -m debvisor_core ARGS`` like an operator would."""

    def __init__(self, mp: pytest.MonkeyPatch) -> None:
        self.mp = mp

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 300, prog: list[str] | None = None) -> Result:
        argv = [*(prog or [sys.executable, "-m", "debvisor_core"]), *map(str, args)]
        res = subprocess.run(  # noqa: S603 - argument list
            argv, input=input, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **(env or {})}, stdin=None if input is not None else subprocess.DEVNULL,
        )
        return Result(res.returncode, res.stdout, res.stderr, argv)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start ``debvisor ARGS`` without waiting (for kill tests). Ctrl-C (SIGINT) works
        in it even when the tests run as a background job, which inherit SIGINT ignored
        (and Python then never installs its KeyboardInterrupt handler)."""
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "debvisor_core", *map(str, args)], text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})}, preexec_fn=_default_sigint,
        )


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def dv(dv_state: StateDir, monkeypatch: pytest.MonkeyPatch) -> Runner:
    return Runner(monkeypatch)


@pytest.fixture
def dv_fault(monkeypatch: pytest.MonkeyPatch) -> Any:
    def inject(*specs: str) -> None:
        monkeypatch.setenv("DEBVISOR_FAULTS", ",".join(specs))

    return inject


class Lab:
    """Starts lab services on demand for a whole pytest session."""

    def __init__(self, lab_dir: Path) -> None:
        self.dir = lab_dir
        self.started: list[str] = []
        self.env = {**os.environ, "DEBVISOR_LAB_DIR": str(lab_dir),
                    "DEBVISOR_STATE_DIR": str(lab_dir.parent / "lab-state")}
        self.env.pop("DEBVISOR_CONFIG", None)

    @property
    def config_path(self) -> Path:
        return self.dir / "debvisor.toml"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603
            [sys.executable, "-m", "debvisor_core", "--json", "lab", *args],
            capture_output=True, text=True, env=self.env, timeout=900, stdin=subprocess.DEVNULL,
        )

    def require(self, *names: str) -> Path:
        """Start the named services (skip the test if this machine cannot) and
        return the lab config path."""
        need = [n for n in names if n not in self.started]
        if need:
            res = self._run("up", *need)
            if res.returncode != 0:
                pytest.fail(f"debvisor lab up {' '.join(need)} failed:\n{res.stderr}")
            report = json.loads(res.stdout)["services"]
            for n in need:
                if report[n]["status"] == "skipped":
                    pytest.skip(f"lab service {n} unavailable here: {report[n]['reason']}")
                self.started.append(n)
        return self.config_path

    def config(self) -> dict[str, Any]:
        import tomllib

        return tomllib.loads(self.config_path.read_text())

    def down(self) -> None:
        if self.started and not os.environ.get("DEBVISOR_KEEP_LAB"):
            self._run("down", *reversed(self.started))


@pytest.fixture(scope="session")
def dv_lab() -> Iterator[Lab]:
    # Short paths: libvirt's UNIX socket paths must stay under 108 bytes.
    base = os.environ.get("DEBVISOR_TEST_LAB_DIR")
    lab_dir = Path(base) if base else Path(tempfile.mkdtemp(prefix="dvlab-", dir="/tmp"))
    lab_dir.mkdir(parents=True, exist_ok=True)
    lab = Lab(lab_dir)
    yield lab
    lab.down()
