"""Secrets out of records: keyed digests for argv, audit details and config.

A secret value is replaced by ``secret:hmac:<16 hex>``, an HMAC-SHA256 under a root-only
key (``STATE/keys/redact.key``, created on first use): equal secrets give equal digests on
one host, so records can still be compared, but nobody without the key can test guesses.
Light to import: the standard library only, the rest of the core lazily.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: options whose value is always secret (``--opt VALUE`` and ``--opt=VALUE``)
SECRET_OPTIONS = frozenset({"--password", "--passwd", "--token", "--secret", "--key",
                            "--join-token"})
#: a key naming a secret contains one of these ...
SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "token", "key", "private",
                "credential")
#: ... or is split (by ``_ - .``) into a part equal to one of these
SECRET_PARTS = frozenset({"pw", "pwd", "pass"})

_TICKET = re.compile(r"dvt1\.[A-Za-z0-9_\-.=+/]+")
_URI_CREDENTIALS = re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)[^@/\s]*@")
_keys: dict[tuple[str, int, int, int], bytes] = {}


def key_path(name: str) -> Path:
    """Where the root-only key ``name`` lives: ``STATE/keys/NAME.key``."""
    from .config import state_dir

    return state_dir() / "keys" / f"{name}.key"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - a regular file never returns 0 for a non-empty write
            raise OSError(f"short write ({n} bytes)")
        view = view[n:]


def _create_exclusive(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_key(path: Path, what: str, *, create: bool = True,
             before_link: Callable[[bytes], None] | None = None) -> bytes:
    """The key in ``path`` (owner-only), created (32 random bytes, mode 0600) if absent.

    Creation is race-free: a private temporary file (``O_EXCL``) is written, fsynced and
    hard-linked to ``path`` (when another process won, its key is used);
    ``before_link(key)`` runs just before the key becomes visible.
    """
    from .secrets import read_secret

    with contextlib.suppress(OSError):
        st = os.lstat(path)
        cached = _keys.get((str(path), st.st_dev, st.st_ino, st.st_mtime_ns))
        if cached is not None:
            return cached
    if create and not os.path.lexists(path):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        data = os.urandom(32).hex().encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            try:
                os.fchmod(fd, 0o600)
                _write_all(fd, data + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            if before_link is not None:
                before_link(data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process created it first: use that one
            except OSError:  # no hard links here: create it in place, exclusively
                with contextlib.suppress(FileExistsError):
                    _create_exclusive(path, data + b"\n")
        finally:
            os.unlink(tmp)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    key = read_secret(path, what).strip()
    if len(key) < 16:
        from .errors import DebvisorError

        raise DebvisorError(f"{what} {path} holds fewer than 16 bytes; move it aside and a new "
                            "key is created")
    st = os.lstat(path)
    _keys[(str(path), st.st_dev, st.st_ino, st.st_mtime_ns)] = key
    return key


def secret_digest(value: str) -> str:
    """``secret:hmac:<16 hex>``: the keyed digest standing in for a secret ``value``."""
    try:
        key = load_key(key_path("redact"), "redaction key")
    except Exception:  # noqa: BLE001 - no key (read-only state, not root): hide it entirely
        return "secret:***"
    return "secret:hmac:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


def secretish(name: str) -> bool:
    """Whether a key or option name looks like it names a secret (a public key does not)."""
    low = name.lower().lstrip("-")
    if "pub" in low:
        return False
    return any(w in low for w in SECRET_WORDS) or bool(SECRET_PARTS & set(re.split(r"[_\-.]", low)))


def scrub_text(text: str, *, digest: bool = True) -> str:
    """``text`` with console tickets (``dvt1.…``) digested (or ``***``) and URI passwords
    hidden."""
    if "dvt1." in text:
        text = _TICKET.sub(lambda m: secret_digest(m.group(0)) if digest else "***", text)
    return _URI_CREDENTIALS.sub(r"\g<pre>***@", text) if "@" in text else text


def _set_value(arg: str) -> str:
    k, sep, v = arg.partition("=")
    return f"{k}={secret_digest(v)}" if sep and secretish(k) else scrub_text(arg)


def scrub_argv(argv: list[str], secret_options: Iterable[str] = ()) -> list[str]:
    """A copy of ``argv`` whose secret values are keyed digests.

    Secret: the value of ``secret_options`` and of :data:`SECRET_OPTIONS` (both forms),
    ``--set k=v`` values whose key looks secret, and console tickets anywhere.
    """
    secret = SECRET_OPTIONS | {o if o.startswith("-") else "--" + o.replace("_", "-")
                               for o in secret_options}
    out: list[str] = []
    after: str | None = None  # the option whose value comes next
    for i, arg in enumerate(argv):
        if after is not None:
            out.append(_set_value(arg) if after == "--set" else secret_digest(arg))
            after = None
            continue
        if arg == "--":
            out.extend(scrub_text(a) for a in argv[i:])
            break
        name, sep, value = arg.partition("=")
        if name in secret or name == "--set":
            if not sep:
                after = name
                out.append(arg)
            elif name == "--set":
                out.append(f"--set={_set_value(value)}")
            else:
                out.append(f"{name}={secret_digest(value)}")
            continue
        out.append(scrub_text(arg))
    return out


def scrub(value: Any) -> Any:
    """A copy of a JSON-like ``value``: secret-looking keys' values digested, texts scrubbed."""
    if isinstance(value, dict):
        return {k: (secret_digest(str(v)) if secretish(str(k)) and not _is_path(str(k))
                    and isinstance(v, (str, int, bytes)) else scrub(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def _is_path(name: str) -> bool:
    return name.lower().endswith(("_file", "_path", "file", "path", "_dir", "_name"))


def redact_config(value: Any) -> Any:
    """A copy of ``value`` with anything that looks like a secret replaced by ``***``: values
    of secret-looking keys (password, passwd, pw, token, key, private, data, ...) and the
    password in URIs (``scheme://user:pass@host``)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            name = str(k).lower()
            secret = secretish(name) or name == "data" or name.endswith(("_data", "-data"))
            is_path = name.endswith(("_file", "_path", "file", "path", "_dir"))
            out[k] = "***" if secret and not is_path and not isinstance(v, dict) else redact_config(v)
        return out
    if isinstance(value, list):
        return [redact_config(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value, digest=False)
    return value
