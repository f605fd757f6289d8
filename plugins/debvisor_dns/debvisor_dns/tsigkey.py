"""Read and write TSIG keys in BIND's key-file format.

The format is the one ``tsig-keygen`` prints and ``named.conf`` includes::

    key "debvisor-lab" {
        algorithm hmac-sha256;
        secret "base64…";
    };
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from debvisor_core.errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    import dns.tsig

ALGORITHMS = frozenset({"hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"})

_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*|#[^\n]*", re.S)
_KEY = re.compile(r'\bkey\s+"?([A-Za-z0-9._-]+)"?\s*\{(.*?)\}\s*;', re.S)
_ALGORITHM = re.compile(r'\balgorithm\s+"?([A-Za-z0-9.-]+)"?\s*;')
_SECRET = re.compile(r'\bsecret\s+"([A-Za-z0-9+/=\s]+)"\s*;')


class TsigKeyError(BadInput):
    """A TSIG key file is missing, unsafe or malformed."""


class TsigKey(NamedTuple):
    """A TSIG key: ``name``, ``algorithm`` (e.g. ``hmac-sha256``) and base64 ``secret``."""

    name: str
    algorithm: str
    secret: str

    def dns_key(self) -> dns.tsig.Key:
        """This key as a dnspython ``dns.tsig.Key`` (usable as ``keyring=``)."""
        import dns.tsig

        return dns.tsig.Key(self.name, self.secret, self.algorithm)


MAX_KEYFILE = 64 * 1024  # a BIND key file is a few hundred bytes


def _read_owner_only(p: Path) -> bytes:
    """The bytes of the regular, owner-only file ``p``; its mode is checked before reading.

    The file is opened once and checked with ``fstat`` on that descriptor, so what is
    checked is what is read (no race with a swap of the path). ``O_NONBLOCK`` keeps a
    FIFO from hanging the command; ``O_NOCTTY`` keeps a terminal device from becoming
    ours. Nothing of the content appears in any error.
    """
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise TsigKeyError(f"Cannot read the TSIG key file {p}: {exc.strerror or exc}.") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise TsigKeyError(f"The TSIG key file {p} is a directory, not a key file.")
        if not stat.S_ISREG(st.st_mode):
            raise TsigKeyError(f"The TSIG key file {p} is not a regular file.")
        if st.st_mode & 0o077:
            raise TsigKeyError(
                f"The TSIG key file {p} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); it must be 0600.",
                hint=f"chmod 600 {p}",
            )
        data = b""
        while len(data) <= MAX_KEYFILE and (chunk := os.read(fd, MAX_KEYFILE + 1 - len(data))):
            data += chunk
    except OSError as exc:
        raise TsigKeyError(f"Cannot read the TSIG key file {p}: {exc.strerror or exc}.") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEYFILE:
        raise TsigKeyError(f"The TSIG key file {p} is larger than {MAX_KEYFILE // 1024} KiB, "
                           "so it is not a BIND key file.")
    return data


def read_tsig_keyfile(path: str | os.PathLike[str]) -> TsigKey:
    """Parse the first ``key`` clause of a BIND key file; refuse files readable by others.

    The mode is checked before a byte is read, and no error quotes the file's content.
    """
    p = Path(path)
    data = _read_owner_only(p)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TsigKeyError(f"The TSIG key file {p} is not a text BIND key file (it is not "
                           "UTF-8); write it with tsig-keygen.") from None
    m = _KEY.search(_COMMENTS.sub(" ", text))
    alg = _ALGORITHM.search(m.group(2)) if m else None
    sec = _SECRET.search(m.group(2)) if m else None
    if not (m and alg and sec):
        raise TsigKeyError(
            f"The TSIG key file {p} has no complete key clause "
            '(key "NAME" { algorithm ALG; secret "BASE64"; };).'
        )
    algorithm = alg.group(1).lower().rstrip(".")
    if algorithm not in ALGORITHMS:
        raise TsigKeyError(f"The TSIG key file {p} uses unsupported algorithm {algorithm!r}.")
    secret = "".join(sec.group(1).split())
    try:
        if not base64.b64decode(secret, validate=True):
            raise ValueError("empty")
    except (binascii.Error, ValueError) as exc:
        raise TsigKeyError(f"The TSIG key file {p} has a secret that is not base64.") from exc
    return TsigKey(m.group(1).rstrip("."), algorithm, secret)


def format_tsig_key(key: TsigKey) -> str:
    """The BIND key-file text for ``key``."""
    return f'key "{key.name}" {{\n\talgorithm {key.algorithm};\n\tsecret "{key.secret}";\n}};\n'


def write_tsig_keyfile(path: str | os.PathLike[str], key: TsigKey) -> Path:
    """Write ``key`` to ``path`` atomically with mode 0600."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(format_tsig_key(key))
    os.replace(tmp, p)
    return p
