"""Engine overhead: planning and journalling a 500-step operation in one process, and the
per-step cost of the engine itself (journal intent + fsync, the undo record, the audit
record of the run), with steps that do nothing.

Figures: plan + preflight + journal creation of 500 steps (target < 0.5 s), the whole run
of 500 no-op steps, and per step in ms; the same number of bare append + fsync calls is
measured in the same run as the disk's floor.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

N_STEPS = int(os.environ.get("BENCH_STEPS", "500"))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DEBVISOR_STATE_DIR"] = tmp
        os.environ["DEBVISOR_CONFIG"] = str(Path(tmp) / "none.toml")
        Path(tmp, "none.toml").write_text("")
        os.environ["DEBVISOR_PLUGINS"] = ""  # the core alone: measure the engine, not plugins
        from debvisor_core import engine, journal
        from debvisor_core.context import Context
        from debvisor_core.model import Operation, Step
        from debvisor_core.ui import RecordingUI

        @dataclass
        class Noop(Step):
            TYPE = "bench.noop"
            i: int

            def apply(self, ctx: Any, prior: dict[str, Any]) -> dict[str, Any]:
                return {}

        def op() -> Operation:
            return Operation(kind="bench.noop", title="500 no-op steps",
                             steps=[Noop(i) for i in range(N_STEPS)])

        ctx = Context(yes=True)
        ctx.ui = RecordingUI()
        with ctx.ui.bound():
            # plan + preflight + journal creation (what precedes the first step)
            t = time.perf_counter()
            o = op()
            engine._plan(ctx, o)
            engine.preflight(ctx, o)
            j = journal.Journal.create(Path(tmp), journal.new_id(),
                                       {"kind": o.kind, "title": o.title,
                                        "steps": [s.to_json(ctx) for s in o.steps]})
            j.close()
            plan_s = time.perf_counter() - t
            runs = []
            for _ in range(3):
                t = time.perf_counter()
                engine.run(ctx, op())
                runs.append(time.perf_counter() - t)
        whole = statistics.median(runs)
        fd = os.open(f"{tmp}/sync", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        t = time.perf_counter()
        for _ in range(3 * N_STEPS):
            os.write(fd, b"x" * 200 + b"\n")
            os.fsync(fd)
        floor = (time.perf_counter() - t) / (3 * N_STEPS)
        os.close(fd)
    per_step = whole / N_STEPS * 1000
    print(f"engine, {N_STEPS} no-op steps (core only):")
    print(f"  plan + preflight + journal creation: {plan_s:.3f} s (target < 0.5 s): "
          f"{'OK' if plan_s < 0.5 else 'OVER'}")
    print(f"  whole run (median of 3):             {whole:.3f} s")
    print(f"  per-step engine overhead:            {per_step:.2f} ms "
          f"(3 journal events, each written and fsynced)")
    print(f"  disk floor, append + fsync of a line: {floor * 1000:.2f} ms, so 3 per step = "
          f"{3 * floor * 1000:.2f} ms; engine / floor = {per_step / (3 * floor * 1000):.2f}")


if __name__ == "__main__":
    main()
