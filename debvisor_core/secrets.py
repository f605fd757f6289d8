"""Secrets come from files only their owner can read: one reader, one writer for every plugin.

Reading opens the file once, without following a symbolic link in its last component
(``O_NOFOLLOW``), and checks the open descriptor with ``fstat``, so what is checked is
what is read. The file must be a regular file owned by root or by this user, with no
group or other permission bits, in a directory that group and others cannot write
(else someone else could swap it). ``O_NONBLOCK`` keeps a FIFO from hanging the
command; ``O_NOCTTY`` keeps a terminal device from becoming ours.

Writing creates a fresh, randomly named temporary file with ``O_CREAT|O_EXCL|O_NOFOLLOW``
and mode 0600 in the target's directory, writes and fsyncs it, renames it over the
target and fsyncs the directory: a pre-created temporary file or a planted symbolic link
cannot change where the secret goes or who can read it.

Every refusal is a :class:`~debvisor_core.errors.BadInput` (exit 2): one sentence that
names the file and the fix. No message ever contains the file's content.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets as _random
import stat
from pathlib import Path

from .errors import BadInput

MAX_SECRET = 1024 * 1024  # no secret file is anywhere near this

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _label(what: str) -> str:
    return what[:1].upper() + what[1:]


def _size_text(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n // 1024} KiB"


def _open_dir(d: Path, p: Path, what: str) -> int:
    """A descriptor of ``p``'s directory ``d``, refused if group or others can write it."""
    try:
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BadInput(f"{_label(what)} {p} does not exist (no directory {d}).") from None
    except NotADirectoryError:
        raise BadInput(f"{_label(what)} {p} does not exist ({d} is not a directory).") from None
    except OSError as exc:
        raise BadInput(f"{_label(what)} {p} cannot be opened: {exc.strerror or exc}.") from None
    try:
        st = os.fstat(dfd)
    except OSError as exc:
        os.close(dfd)
        raise BadInput(f"{_label(what)} {p} cannot be opened: {exc.strerror or exc}.") from None
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(dfd)
        raise BadInput(
            f"{_label(what)} {p} is in directory {d}, which group or others can write "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod go-w {d}")
    return dfd


def _check_fd(fd: int, p: Path, what: str) -> os.stat_result:
    """Refuse what ``fd`` (opened from ``p``) is unless it is an owner-only regular file of
    root or this user."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "a special file")
        raise BadInput(f"{_label(what)} {p} is not a regular file (it is {kind}); "
                       "give the path of the file itself.")
    euid = os.geteuid()
    if st.st_uid not in (0, euid):
        raise BadInput(f"{_label(what)} {p} is owned by uid {st.st_uid}, not by root or by "
                       f"this user (uid {euid}); run: chown {euid} {p}")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(st.st_mode)
        how = "readable" if mode & (stat.S_IRGRP | stat.S_IROTH) else "writable"
        raise BadInput(f"{_label(what)} {p} is {how} by others (mode {mode:04o}); "
                       f"run: chmod 600 {p}")
    return st


def _open_checked(path: str | os.PathLike[str], what: str) -> tuple[Path, int]:
    """``(path, fd)``: the file opened once without following a final symlink, checked."""
    p = Path(path)
    dfd = _open_dir(p.parent, p, what)
    try:
        try:
            fd = os.open(p.name or ".", _OPEN_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            raise BadInput(f"{_label(what)} {p} does not exist.") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BadInput(f"{_label(what)} {p} is a symbolic link, which is refused for "
                               "secrets; give the path of the file itself.") from None
            raise BadInput(f"{_label(what)} {p} cannot be opened: {exc.strerror or exc}.") from None
    finally:
        os.close(dfd)
    try:
        _check_fd(fd, p, what)
    except BadInput:
        os.close(fd)
        raise
    except OSError as exc:
        os.close(fd)
        raise BadInput(f"{_label(what)} {p} cannot be read: {exc.strerror or exc}.") from None
    return p, fd


def check_owner_only(path: str | os.PathLike[str], what: str = "secret file") -> None:
    """Refuse ``path`` unless it is a regular file of root or this user that only its owner
    can read, in a directory that group and others cannot write (no symlink followed)."""
    _, fd = _open_checked(path, what)
    os.close(fd)


def read_secret(path: str | os.PathLike[str], what: str = "secret file", *,
                max_bytes: int = MAX_SECRET) -> bytes:
    """The bytes of the owner-only secret file ``path``, checked on the descriptor read from.

    ``what`` names the file in errors ("TSIG key file"); a file over ``max_bytes`` is refused.
    """
    p, fd = _open_checked(path, what)
    try:
        data = b""
        while len(data) <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - len(data))):
            data += chunk
    except OSError as exc:
        raise BadInput(f"{_label(what)} {p} cannot be read: {exc.strerror or exc}.") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise BadInput(f"{_label(what)} {p} is larger than {_size_text(max_bytes)}, too large "
                       "for a secret file; check the path.")
    return data


def write_secret(path: str | os.PathLike[str], data: bytes, what: str = "secret file") -> None:
    """Create or replace the secret file ``path`` (mode 0600) atomically and durably.

    The parent directory is created if missing (never group- or world-writable) and must not
    be writable by group or others. A fresh temporary file is created with ``O_EXCL`` and
    ``O_NOFOLLOW``, written, fsynced and renamed over ``path``; then the directory is fsynced.
    """
    p = Path(path)
    try:
        p.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"Cannot create the directory of {what} {p}: {exc.strerror or exc}.") from None
    dfd = _open_dir(p.parent, p, what)
    tmp = ""
    try:
        for _ in range(100):
            tmp = f".{p.name}.{_random.token_hex(8)}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=dfd)
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 100 collisions of 64 random bits
            raise BadInput(f"Cannot create a temporary file next to {what} {p}.")
        try:
            os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        tmp = ""
        os.fsync(dfd)
    except OSError as exc:
        raise BadInput(f"Cannot write {what} {p}: {exc.strerror or exc}.") from None
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
        os.close(dfd)
