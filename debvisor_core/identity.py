"""Who is running this command: the uid, its name and the sudo user behind it."""

from __future__ import annotations

import os
from typing import Any


def who() -> dict[str, Any]:
    """``{"uid", "name", "sudo_user"}`` of the current process (for audit events)."""
    import pwd

    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return {"uid": uid, "name": name, "sudo_user": os.environ.get("SUDO_USER")}


def operator() -> str:
    """One line naming the operator: ``root`` or ``root (sudo by alice)``."""
    w = who()
    return f"{w['name']} (sudo by {w['sudo_user']})" if w["sudo_user"] else str(w["name"])
