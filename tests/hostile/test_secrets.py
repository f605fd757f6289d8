"""Hostile inputs for the core secret reader and writer (security review M8).

One reader (``read_secret`` / ``check_owner_only``): a single open without following a
symlink, checks on that descriptor (regular file, owner root or this user, mode
owner-only), in a directory group and others cannot write. One writer
(``write_secret``): a fresh ``O_EXCL|O_NOFOLLOW`` temporary file, fsync, rename.
Every refusal is ``BadInput`` (exit 2) naming the file and the fix, never its content.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from debvisor_core.errors import EXIT_USAGE, BadInput
from debvisor_core.secrets import check_owner_only, read_secret, write_secret

SECRET = b"TOPSECRET-key-material-0123456789"
Reader = Callable[[Path], object]
READERS: list[Reader] = [read_secret, check_owner_only]


def _secret_file(path: Path, data: bytes = SECRET, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, data)
    os.close(fd)
    os.chmod(path, mode)
    return path


def _refused(reader: Reader, path: Path) -> str:
    with pytest.raises(BadInput) as exc:
        reader(path)
    msg = exc.value.message
    assert exc.value.exit_code == EXIT_USAGE
    assert str(path) in msg and "TOPSECRET" not in msg and "\n" not in msg, msg
    assert exc.value.__cause__ is None
    return msg


@pytest.mark.parametrize("reader", READERS)
def test_symlink_to_an_owner_only_secret_is_refused(tmp_path: Path, reader: Reader) -> None:
    real = _secret_file(tmp_path / "real.key")
    link = tmp_path / "link.key"
    link.symlink_to(real)
    msg = _refused(reader, link)
    assert "is a symbolic link" in msg and "give the path of the file itself" in msg


@pytest.mark.parametrize("reader", READERS)
def test_secret_owned_by_another_user_is_refused(tmp_path: Path, reader: Reader) -> None:
    p = _secret_file(tmp_path / "nobody.key")
    os.chown(p, 65534, 65534)  # the tests run as root (the lab needs it)
    msg = _refused(reader, p)
    assert f"is owned by uid 65534, not by root or by this user (uid {os.geteuid()})" in msg
    assert msg.endswith(f"run: chown {os.geteuid()} {p}")


@pytest.mark.parametrize("dir_mode", [0o770, 0o730, 0o707, 0o777, 0o1777])
@pytest.mark.parametrize("reader", READERS)
def test_secret_in_a_group_or_world_writable_directory_is_refused(
        tmp_path: Path, reader: Reader, dir_mode: int) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    p = _secret_file(d / "key")
    os.chmod(d, dir_mode)
    msg = _refused(reader, p)
    assert (f"is in directory {d}, which group or others can write (mode {dir_mode:04o}); "
            f"run: chmod go-w {d}") in msg
    with pytest.raises(BadInput, match="which group or others can write"):
        write_secret(d / "other.key", SECRET)
    assert not (d / "other.key").exists()
    os.chmod(d, 0o755)
    assert read_secret(p) == SECRET  # the fix the message names works


def test_precreated_temporary_file_or_symlink_does_not_leak_the_secret(tmp_path: Path) -> None:
    """The old writer opened `.NAME.tmpPID` with O_CREAT|O_TRUNC: a 0644 file planted there
    kept its mode (the secret became world-readable), and a symlink planted there was
    followed (the secret was written into the link's target)."""
    target = tmp_path / "ticket.key"
    planted = tmp_path / f".{target.name}.tmp{os.getpid()}"
    _secret_file(planted, b"planted", 0o644)
    write_secret(target, SECRET)
    st_ = os.lstat(target)
    assert stat.S_ISREG(st_.st_mode) and stat.S_IMODE(st_.st_mode) == 0o600
    assert read_secret(target) == SECRET
    assert planted.read_bytes() == b"planted"  # not ours: neither reused nor removed

    victim = tmp_path / "victim"
    victim.write_bytes(b"victim")
    planted.unlink()
    planted.symlink_to(victim)
    write_secret(target, b"second")
    assert victim.read_bytes() == b"victim"
    assert read_secret(target) == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, planted.name, victim.name])  # no temporary file left behind


def test_write_replaces_a_symlink_at_the_target_instead_of_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim")
    target = tmp_path / "key"
    target.symlink_to(victim)
    write_secret(target, SECRET)
    assert victim.read_bytes() == b"victim"
    assert not target.is_symlink() and read_secret(target) == SECRET


@pytest.mark.parametrize("via_symlink", [False, True])
def test_fifo_is_refused_without_hanging(tmp_path: Path, via_symlink: bool) -> None:
    """A FIFO with no writer would block a plain open() forever: the reader must answer at
    once (a separate process, so a regression fails on the timeout instead of hanging)."""
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo, 0o600)
    path = fifo
    if via_symlink:
        path = tmp_path / "key.link"
        path.symlink_to(fifo)
    code = ("import sys\nfrom pathlib import Path\nfrom debvisor_core.errors import BadInput\n"
            "from debvisor_core.secrets import read_secret, check_owner_only\n"
            "for f in (check_owner_only, read_secret):\n"
            "    try:\n        f(Path(sys.argv[1]))\n    except BadInput as e:\n        print(e.message)\n"
            "    else:\n        print('ACCEPTED')\n")
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 2 and "ACCEPTED" not in res.stdout, res.stdout
    want = "is a symbolic link" if via_symlink else "is not a regular file (it is a FIFO)"
    assert all(want in ln and str(path) in ln for ln in lines), lines


def test_directory_missing_file_and_oversized_file_are_one_sentence(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    assert "is not a regular file (it is a directory)" in _refused(read_secret, d)
    assert _refused(read_secret, tmp_path / "missing").endswith("does not exist.")
    assert "does not exist" in _refused(read_secret, tmp_path / "nodir" / "key")
    big = _secret_file(tmp_path / "big", SECRET * 40)
    with pytest.raises(BadInput, match=r"is larger than 1 KiB, too large for a secret file") as e:
        read_secret(big, max_bytes=1024)
    assert "TOPSECRET" not in e.value.message
    assert read_secret(big, max_bytes=len(SECRET) * 40) == SECRET * 40


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.integers(0, 0o777))
def test_only_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    p = tmp_path / "mode.key"
    p.unlink(missing_ok=True)
    _secret_file(p, mode=mode)
    if mode & 0o077:
        msg = _refused(read_secret, p)
        how = "readable" if mode & 0o044 else "writable"
        assert msg == f"Secret file {p} is {how} by others (mode {mode:04o}); run: chmod 600 {p}"
    else:
        assert read_secret(p) == SECRET  # root reads even mode 0000
        check_owner_only(p)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(umask=st.integers(0, 0o777), data=st.binary(max_size=4096))
def test_written_secrets_are_exactly_0600_whatever_the_umask(tmp_path: Path, umask: int,
                                                            data: bytes) -> None:
    p = tmp_path / "sub" / "w.key"
    old = os.umask(umask)
    try:
        write_secret(p, data)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(p).st_mode) == 0o600
    assert not stat.S_IMODE(os.stat(p.parent).st_mode) & 0o022  # never a writable dir
    assert read_secret(p) == data
