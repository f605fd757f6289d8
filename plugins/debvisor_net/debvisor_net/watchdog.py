"""The detached watchdog of a pending network change (see checkpoint.py).

``python -m debvisor_net.watchdog DIR [--config FILE]``: started by ``net apply`` in a
session of its own; restores ``DIR/snapshot.json`` at the deadline unless the change was
confirmed or finished first.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .checkpoint import CONFIRMED, DEADLINE, Checkpoint


def put_back(state: dict[str, Any]) -> list[str]:
    """Converge this namespace's kernel to ``state``, wait out DAD and announce the addresses
    that moved; the changes made. The caller holds the checkpoint's lock."""
    from .announce import announce, wait_dad
    from .converge import converge
    from .kernel import open_netlink
    from .snapshot import snapshot

    with open_netlink() as ipr:
        now = snapshot(ipr)
        changes = converge(ipr, state)
        wait_dad(ipr, 5)
    announce(state, now)
    return changes


def restore(cp: Checkpoint, by: str) -> list[str]:
    """Restore the checkpoint's snapshot now (under its lock); the changes made."""
    with cp.locked():
        if cp.finished() is not None:
            return []
        changes = put_back(cp.snapshot())
        cp.finish("restored", by=by, changes=changes)
    return changes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="debvisor-net-watchdog")
    ap.add_argument("dir", type=Path)
    ap.add_argument("--config")
    args = ap.parse_args(argv)
    cp = Checkpoint(args.dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    deadline = float((args.dir / DEADLINE).read_text())
    while time.time() < deadline:
        if (args.dir / CONFIRMED).exists() or cp.finished() is not None:
            return 0
        time.sleep(0.2)
    if (args.dir / CONFIRMED).exists() or cp.finished() is not None:
        return 0
    from debvisor_core.context import Context

    ctx = Context(config_file=args.config, argv=["debvisor-net-watchdog", str(args.dir)])
    why = "the network change was not confirmed before the deadline"
    ctx.audit("started", component="net watchdog", reason=why, checkpoint=str(args.dir))
    try:
        changes = restore(cp, "watchdog")
    except Exception as exc:
        ctx.audit("failed", component="net watchdog", error=f"{type(exc).__name__}: {exc}")
        raise
    ctx.audit("restored", component="net watchdog", changes=changes)
    print(f"restored the snapshot: {len(changes)} change(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
