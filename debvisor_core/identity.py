"""Who is running this command: the uid, its name and the sudo user behind it.

``$SUDO_USER`` is only an environment variable, which anyone can set. It is believed only
when it agrees with ``$SUDO_UID`` and with the real caller: the kernel's login uid
(``/proc/self/loginuid``, set by PAM at login and kept across sudo) when there is one,
else a process running as root. Otherwise the real user is recorded and the claimed sudo
user is kept apart, as ``claimed_sudo_user``.
"""

from __future__ import annotations

import os
from typing import Any

LOGINUID = "/proc/self/loginuid"
_UNSET = 4294967295  # (uid_t)-1: no login uid (a daemon, a container)


def _name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def login_uid() -> int | None:
    """The kernel's login uid of this process, or None when it is not set."""
    try:
        with open(LOGINUID) as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if value in (_UNSET, -1) else value


def _sudo_user_verified(claimed: str, sudo_uid: str | None, uid: int, luid: int | None) -> bool:
    import pwd

    if not sudo_uid or not sudo_uid.isdigit():
        return False
    try:
        if pwd.getpwnam(claimed).pw_uid != int(sudo_uid):
            return False
    except KeyError:
        return False
    return luid == int(sudo_uid) if luid is not None else uid == 0


def who() -> dict[str, Any]:
    """``{"uid", "name", "sudo_user"}`` of the current process (for audit events), plus
    ``login_user`` when the login uid differs from the uid and ``claimed_sudo_user`` when
    ``$SUDO_USER`` could not be verified."""
    uid = os.getuid()
    out: dict[str, Any] = {"uid": uid, "name": _name(uid), "sudo_user": None}
    luid = login_uid()
    if luid is not None and luid != uid:
        out["login_user"] = _name(luid)
    claimed = os.environ.get("SUDO_USER")
    if claimed:
        if _sudo_user_verified(claimed, os.environ.get("SUDO_UID"), uid, luid):
            out["sudo_user"] = claimed
        else:
            out["claimed_sudo_user"] = claimed
    return out


def operator() -> str:
    """One line naming the operator: ``root``, ``root (sudo by alice)`` or
    ``root (claims sudo by alice, unverified)``."""
    w = who()
    if w["sudo_user"]:
        return f"{w['name']} (sudo by {w['sudo_user']})"
    if w.get("claimed_sudo_user"):
        return f"{w['name']} (claims sudo by {w['claimed_sudo_user']}, unverified)"
    return str(w["name"])
