"""Cross-plugin hooks for tests, each switched on by an environment variable:
DV_CONTRIB (a step added to example.note-add), DV_PREFLIGHT=warn|error (a finding),
DV_CLUSTER_LOCK_FILE (a cluster lock that logs acquire/release there)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debvisor_core import hookimpl
from debvisor_core.engine import Finding, Step


@dataclass
class Marker(Step):
    """Writes a marker file after the owner's steps; undo removes it."""

    TYPE = "contrib.marker"

    ORDER = 90
    path: str

    def describe(self, ctx: Any) -> str:
        return f"write marker {self.path}"

    def apply(self, ctx: Any, prior: dict[str, Any]) -> dict[str, Any]:
        Path(self.path).write_text("marked")
        return {}

    def undo(self, ctx: Any, record: dict[str, Any]) -> None:
        Path(self.path).unlink(missing_ok=True)


@hookimpl
def debvisor_step_types() -> list[type[Step]]:
    return [Marker]


@hookimpl
def debvisor_steps(ctx: Any, op: Any) -> list[Step]:
    target = os.environ.get("DV_CONTRIB")
    if target and op.kind == "example.note-add":
        return [Marker(target)]
    return []


@hookimpl
def debvisor_preflight(ctx: Any, op: Any) -> list[Finding]:
    level = os.environ.get("DV_PREFLIGHT")
    return [Finding(level, f"contrib says {level}", "contrib")] if level else []


@hookimpl
def debvisor_cluster_lock(ctx: Any, op: Any, names: list[str]) -> Any:
    log = os.environ.get("DV_CLUSTER_LOCK_FILE")
    if not log:
        return None

    @contextlib.contextmanager
    def held() -> Iterator[None]:
        with open(log, "a") as f:
            f.write(f"acquire {','.join(names)}\n")
        try:
            yield
        finally:
            with open(log, "a") as f:
                f.write(f"release {','.join(names)}\n")

    return held()


@hookimpl
def debvisor_firstboot_modules(ctx: Any) -> list[Any]:
    """With DV_FIRSTBOOT_DIR: ``03-test`` (storage nodes) fails while DIR/fail exists and
    counts its runs in DIR/runs; ``05-hv-only`` is for hypervisors only."""
    d = os.environ.get("DV_FIRSTBOOT_DIR")
    if not d:
        return []
    from debvisor_core import log
    from debvisor_core.errors import DebvisorError
    from debvisor_core.firstboot import Module

    def test_module(c: Any) -> str:
        runs = Path(d, "runs")
        runs.write_text(str(int(runs.read_text()) + 1 if runs.exists() else 1))
        log.info("test module working")
        if Path(d, "fail").exists():
            raise DebvisorError("the disk is not there yet")
        return "test module done"

    return [Module("03-test", "a test module", test_module, roles=("storage",)),
            Module("05-hv-only", "for hypervisors", lambda c: "hv done", roles=("hypervisor",))]
