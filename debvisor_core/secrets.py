"""Secrets come from files only their owner can read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import BadInput


def check_owner_only(path: Path, what: str = "secret file") -> None:
    """Refuse a secret file that group or others can read or write."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise BadInput(f"{what} {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"{what} {path} is not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(st.st_mode)
        raise BadInput(
            f"{what} {path} is readable by others (mode {mode:04o}); run: chmod 600 {path}"
        )


def read_secret(path: str | Path, what: str = "secret file") -> bytes:
    """Read a secret from an owner-only file."""
    p = Path(path)
    check_owner_only(p, what)
    try:
        return p.read_bytes()
    except OSError as exc:
        raise BadInput(f"{what} {p} cannot be read: {exc.strerror}") from None


def write_secret(path: str | Path, data: bytes) -> None:
    """Create (or replace) an owner-only secret file atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)
