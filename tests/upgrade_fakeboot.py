"""The reboot of a test node root (tests/test_upgrade_run.py): what the namespace test bed's
init does at boot, on a plain directory. ``python upgrade_fakeboot.py ROOT`` picks the
newest /boot/vmlinuz-* (or the kernel /etc/testbed/boot-override names, the failure
injection), writes it as the running kernel (ROOT/osrelease) and a new boot id
(ROOT/boot_id). Started detached by `upgrade reboot`, like a real reboot command."""

import re
import sys
import uuid
from pathlib import Path


def key(v: str) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, int(x), "") if x.isdigit() else (1, 0, x) for x in re.findall(r"\d+|\D+", v))


root = Path(sys.argv[1])
override = root / "etc/testbed/boot-override"
kernels = sorted((p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*")),
                 key=key)
chosen = override.read_text().strip() if override.exists() else kernels[-1]
(root / "osrelease").write_text(chosen + "\n")
(root / "boot_id").write_text(f"{uuid.uuid4()}\n")
