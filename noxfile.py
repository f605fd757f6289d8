"""nox sessions: tests, lint, typecheck, bench, docs.

They run in the environment nox itself runs in (`scripts/dev` creates it:
.venv with the core, every plugin and Debian's rados/libvirt bindings), because
those bindings are not on PyPI and cannot be installed into a fresh nox venv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]
ROOT = Path(__file__).parent
PY = sys.executable


def _packages() -> list[str]:
    return ["debvisor_core", "docs/example-plugin/debvisor_example",
            *sorted(str(p.parent) for p in ROOT.glob("plugins/*/debvisor_*/__init__.py"))]


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The whole test suite: the core's and every plugin's (with the lab's real services)."""
    session.run(PY, "-m", "pytest", "-q", "-rs", *(session.posargs or []))


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff over everything, and the import-linter contracts (core layers, plugin independence)."""
    session.run(PY, "-m", "ruff", "check", ".")
    session.run(str(Path(PY).with_name("lint-imports")), "--config", str(ROOT / "pyproject.toml"))


@nox.session(python=False)
def typecheck(session: nox.Session) -> None:
    """mypy over the core, every plugin and the benchmarks (which `tests` never runs)."""
    for pkg in _packages():
        session.run(PY, "-m", "mypy", pkg)
    for script in [*sorted(ROOT.glob("bench/*.py")), *sorted(ROOT.glob("plugins/*/bench/*.py"))]:
        session.run(PY, "-m", "mypy", str(script))


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: each prints its figures and the ratio against its peer tool."""
    scripts = [*sorted(ROOT.glob("bench/bench_*.py")), *sorted(ROOT.glob("plugins/*/bench/bench_*.py"))]
    for script in scripts:
        session.log(f"== {script.relative_to(ROOT)}")
        session.run(PY, str(script), *session.posargs)


@nox.session(python=False)
def proto(session: nox.Session) -> None:
    """Regenerate debvisor_core/rpcd/v1/*_pb2*.py from debvisor.proto (grpcio-tools)."""
    session.run("bash", str(ROOT / "scripts" / "gen-proto"), external=True)


@nox.session(venv_backend="none")
def docs(session: nox.Session) -> None:
    """Man pages from the command declarations: docs/man/*.1 and each plugin's copy in
    plugins/*/man (what its distribution installs), and docs/operators.md's command table.
    `nox -s docs -- --check` only compares."""
    session.run(PY, "-m", "debvisor_core.manpages", "--root", str(ROOT), *session.posargs)
    session.run(PY, "-m", "debvisor_core.opsdoc", "--root", str(ROOT), *session.posargs)
