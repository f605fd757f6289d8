"""`debvisor-netcfg`: the operators' alias for `debvisor net`.

The old tool's spellings still work: `debvisor-netcfg --apply FILE` is `net apply FILE`,
`debvisor-netcfg --rollback` is `net rollback`.
"""

from __future__ import annotations

import sys

_OLD = {"--apply": "apply", "--rollback": "rollback", "--confirm": "confirm",
        "--show": "show", "--interactive": "interactive"}


def main() -> None:
    """Run `debvisor net ARGS…` under the name `debvisor-netcfg`."""
    from debvisor_core.entry import alias

    sys.argv[1:] = [_OLD.get(a, a) if i == 0 else a for i, a in enumerate(sys.argv[1:])]
    alias("net", "debvisor-netcfg")
