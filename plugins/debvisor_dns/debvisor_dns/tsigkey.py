"""Read and write TSIG keys in BIND's key-file format.

The format is the one ``tsig-keygen`` prints and ``named.conf`` includes::

    key "debvisor-lab" {
        algorithm hmac-sha256;
        secret "base64…";
    };

The file is read by a small tokenizer for BIND's configuration grammar: quoted strings
(a backslash escapes the next character), unquoted words, ``{ } ;`` and the three comment
styles ``// …``, ``# …`` and ``/* … */``, which count only outside quoted strings — so a
base64 secret containing ``//`` is a secret, not the start of a comment. Top-level
statements other than ``key`` are ignored, so a ``named.conf`` fragment with a key in it
is fine. The file itself is read through :func:`debvisor_core.secrets.read_secret`.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from debvisor_core.errors import BadInput
from debvisor_core.secrets import read_secret, write_secret

if TYPE_CHECKING:  # pragma: no cover
    import dns.tsig

ALGORITHMS = frozenset({"hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"})

# A key name: dot-separated labels of letters, digits, '_' and '-' (optionally a final dot).
_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?")
_ALGORITHM_LIKE = re.compile(r"(?:hmac|gss)-[a-z0-9-]{1,16}|gss-tsig")
_CLAUSE_SHAPE = 'key "NAME" { algorithm ALG; secret "BASE64"; };'


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
    """The bytes of the regular, owner-only file ``p`` (the core secret reader: one open
    without following a symlink, checks on that descriptor, nothing of the content in any
    error)."""
    try:
        return read_secret(p, "TSIG key file", max_bytes=MAX_KEYFILE)
    except TsigKeyError:
        raise
    except BadInput as exc:
        raise TsigKeyError(exc.message, hint=exc.hint) from None


# --- the tokenizer ---------------------------------------------------------------------


class _Syntax(Exception):
    """A syntax error at ``line`` (the text never quotes the file's content)."""

    def __init__(self, why: str, line: int) -> None:
        super().__init__(why)
        self.why = why
        self.line = line


class _Tok(NamedTuple):
    kind: str  # "word", "string", "{", "}" or ";"
    text: str
    line: int


_WORD_END = frozenset(' \t\r\n\f\v{};"#')


def _tokens(text: str) -> Iterator[_Tok]:
    """BIND configuration tokens; comments count only outside quoted strings."""
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise _Syntax("a /* comment is never closed", line)
            line += text.count("\n", i, end)
            i = end + 2
        elif c in "{};":
            yield _Tok(c, c, line)
            i += 1
        elif c == '"':
            start_line, j, buf = line, i + 1, []
            while True:
                if j >= n:
                    raise _Syntax("a quoted string is never closed", start_line)
                ch = text[j]
                if ch == "\\" and j + 1 < n:
                    ch, j = text[j + 1], j + 1
                elif ch == '"':
                    break
                if ch == "\n":
                    line += 1
                buf.append(ch)
                j += 1
            yield _Tok("string", "".join(buf), start_line)
            i = j + 1
        else:
            j = i
            while (j < n and text[j] not in _WORD_END and not text[j].isspace()
                   and not text.startswith("//", j) and not text.startswith("/*", j)):
                j += 1
            yield _Tok("word", text[i:j], line)
            i = j


# --- the grammar: statements of values and blocks, each ended by ';' ------------------


@dataclass
class _Stmt:
    items: list[_Tok | list[_Stmt]]
    line: int


_MAX_DEPTH = 16  # named.conf nests three or four deep; a key file one


def _statements(toks: list[_Tok], pos: int, depth: int) -> tuple[list[_Stmt], int]:
    """Statements from ``toks[pos]`` up to the ``}`` that closes a block (``depth`` > 0) or
    the end of the file (``depth`` 0); the position after them."""
    inner = depth > 0
    if depth > _MAX_DEPTH:
        raise _Syntax(f"blocks are nested more than {_MAX_DEPTH} deep", toks[pos - 1].line)
    out: list[_Stmt] = []
    while True:
        if pos >= len(toks):
            if inner:
                raise _Syntax("a { block is never closed", toks[-1].line if toks else 1)
            return out, pos
        tok = toks[pos]
        if tok.kind == "}":
            if not inner:
                raise _Syntax("a } closes no block", tok.line)
            return out, pos + 1
        if tok.kind == ";":  # an empty statement
            pos += 1
            continue
        items: list[_Tok | list[_Stmt]] = []
        start = tok.line
        while True:
            if pos >= len(toks):
                raise _Syntax("a statement does not end with ;", start)
            tok = toks[pos]
            if tok.kind == ";":
                pos += 1
                break
            if tok.kind == "{":
                block, pos = _statements(toks, pos + 1, depth + 1)
                items.append(block)
            elif tok.kind == "}":
                raise _Syntax("a statement does not end with ; before }", tok.line)
            else:
                items.append(tok)
                pos += 1
        out.append(_Stmt(items, start))


def _value(items: list[_Tok | list[_Stmt]]) -> str | None:
    """The single word or string after a clause keyword, else None."""
    if len(items) == 2 and isinstance(items[1], _Tok):
        return items[1].text
    return None


def _key(stmt: _Stmt, where: str) -> TsigKey:
    """The key of one top-level ``key NAME { … };`` statement."""
    bad = f"The TSIG key file {where} has a malformed key clause at line {stmt.line}"
    items = stmt.items
    if len(items) != 3 or not isinstance(items[1], _Tok) or not isinstance(items[2], list):
        raise TsigKeyError(f"{bad} (the shape is {_CLAUSE_SHAPE}).")
    name = items[1].text
    if not _NAME.fullmatch(name) or len(name.rstrip(".")) > 253:
        raise TsigKeyError(f"{bad}: the key name is not a DNS name of letters, digits, '.', "
                           "'_' and '-'.")
    name = name.rstrip(".")
    values: dict[str, str] = {}
    for clause in items[2]:
        head = clause.items[0]
        keyword = head.text.lower() if isinstance(head, _Tok) and head.kind == "word" else ""
        if keyword not in ("algorithm", "secret"):
            raise TsigKeyError(f"{bad}: key {name!r} has a clause other than algorithm and "
                               f"secret at line {clause.line}.")
        if keyword in values:
            raise TsigKeyError(f"{bad}: key {name!r} has two {keyword} clauses.")
        value = _value(clause.items)
        if value is None:
            raise TsigKeyError(f"{bad}: the {keyword} of key {name!r} at line {clause.line} "
                               "is not one value.")
        values[keyword] = value
    if set(values) != {"algorithm", "secret"}:
        missing = " and ".join(sorted({"algorithm", "secret"} - set(values)))
        raise TsigKeyError(f"The TSIG key file {where} has no complete key clause: key {name!r} "
                           f"has no {missing} ({_CLAUSE_SHAPE}).")
    algorithm = values["algorithm"].lower().rstrip(".")
    if algorithm not in ALGORITHMS:
        # name it only when it looks like an algorithm: it could be a misplaced secret
        shown = f" {algorithm!r}" if _ALGORITHM_LIKE.fullmatch(algorithm) else ""
        raise TsigKeyError(f"The TSIG key file {where} uses an unsupported algorithm{shown} "
                           f"for key {name!r}; use one of {', '.join(sorted(ALGORITHMS))}.")
    secret = "".join(values["secret"].split())
    try:
        if not base64.b64decode(secret, validate=True):
            raise ValueError("empty")
    except (binascii.Error, ValueError):
        raise TsigKeyError(f"The TSIG key file {where} has a secret for key {name!r} that is "
                           "not base64; write the file with tsig-keygen.") from None
    return TsigKey(name, algorithm, secret)


def parse_tsig_keys(text: str, where: str = "(text)") -> list[TsigKey]:
    """Every top-level ``key`` clause of BIND key-file ``text``, in order (at least one).

    ``where`` names the file in errors; no error quotes the secret.
    """
    try:
        toks = list(_tokens(text))
        stmts, _ = _statements(toks, 0, 0)
    except _Syntax as exc:
        raise TsigKeyError(f"The TSIG key file {where} is not a BIND key file: {exc.why} "
                           f"(line {exc.line}); write it with tsig-keygen.") from None
    keys = [_key(s, where) for s in stmts
            if s.items and isinstance(s.items[0], _Tok) and s.items[0].kind == "word"
            and s.items[0].text.lower() == "key"]
    if not keys:
        raise TsigKeyError(f"The TSIG key file {where} has no complete key clause "
                           f"({_CLAUSE_SHAPE}).")
    return keys


def read_tsig_keys(path: str | os.PathLike[str]) -> list[TsigKey]:
    """Every key of a BIND key file; the file must be owner-only (checked before reading)."""
    p = Path(path)
    data = _read_owner_only(p)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TsigKeyError(f"The TSIG key file {p} is not a text BIND key file (it is not "
                           "UTF-8); write it with tsig-keygen.") from None
    return parse_tsig_keys(text, str(p))


def read_tsig_keyfile(path: str | os.PathLike[str]) -> TsigKey:
    """The first ``key`` clause of a BIND key file; refuse files readable by others.

    The file is checked before a byte is read, and no error quotes the file's content.
    """
    return read_tsig_keys(path)[0]


def format_tsig_key(key: TsigKey) -> str:
    """The BIND key-file text for ``key``."""
    return f'key "{key.name}" {{\n\talgorithm {key.algorithm};\n\tsecret "{key.secret}";\n}};\n'


def write_tsig_keyfile(path: str | os.PathLike[str], key: TsigKey) -> Path:
    """Write ``key`` to ``path`` atomically and durably with mode 0600 (the core secret
    writer); a key that would not read back is refused before anything is written."""
    p = Path(path)
    text = format_tsig_key(key)
    if parse_tsig_keys(text, str(p)) != [key]:
        raise TsigKeyError(f"The TSIG key {key.name!r} for {p} does not survive a round trip "
                           "through the key-file format; use a plain name and lower-case "
                           "algorithm.")
    write_secret(p, text.encode(), "TSIG key file")
    return p
