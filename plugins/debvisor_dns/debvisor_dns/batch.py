"""The `dns update --batch FILE` format.

Text, one change per line (``#`` starts a comment, values may be quoted)::

    update NAME TYPE VALUE [TTL]     # several lines for one NAME/TYPE make one RRset
    update NAME VALUE                # TYPE inferred from an IP address (A / AAAA)
    delete NAME [TYPE]               # TYPE defaults to A

or JSON: a list of ``{"action": "update"|"delete", "name", "type", "value", "ttl"}``.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from debvisor_core.errors import BadInput

from .config import TYPES


@dataclass
class Entry:
    action: str
    name: str
    type: str | None
    value: str | None
    ttl: int | None
    line: int


def _ttl(text: str, where: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise BadInput(f"{where}: TTL {text!r} is not a whole number of seconds")
    ttl = int(text)
    if not 0 < ttl < 2**31:
        raise BadInput(f"{where}: TTL {ttl} is out of range")
    return ttl


def _line(words: list[str], where: str, n: int) -> Entry:
    action = words[0].lower()
    rest = words[1:]
    if action in ("add", "set", "replace"):
        action = "update"
    if action == "delete":
        if not 1 <= len(rest) <= 2:
            raise BadInput(f"{where}: expected `delete NAME [TYPE]`")
        rdtype = rest[1].upper() if len(rest) == 2 else None
        if rdtype and rdtype not in TYPES:
            raise BadInput(f"{where}: type {rest[1]!r} is not one of {', '.join(TYPES)}")
        return Entry("delete", rest[0], rdtype, None, None, n)
    if action != "update":
        raise BadInput(f"{where}: unknown action {words[0]!r} (use update or delete)")
    if len(rest) == 2:
        return Entry("update", rest[0], None, rest[1], None, n)
    if len(rest) not in (3, 4) or rest[1].upper() not in TYPES:
        raise BadInput(f"{where}: expected `update NAME [TYPE] VALUE [TTL]` with TYPE one of "
                       f"{', '.join(TYPES)}")
    ttl = _ttl(rest[3], where) if len(rest) == 4 else None
    return Entry("update", rest[0], rest[1].upper(), rest[2], ttl, n)


def parse(path: Path) -> list[Entry]:
    """Every entry of a batch file (BadInput naming the file and line on any error)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read batch file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise BadInput(f"batch file {path} is not UTF-8 text (line {line} has a byte that is "
                       "not UTF-8)") from None
    if text.lstrip().startswith("["):
        return _parse_json(path, text)
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        where = f"{path}:{n}"
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as exc:
            raise BadInput(f"{where}: {exc}") from None
        if words:
            out.append(_line(words, where, n))
    if not out:
        raise BadInput(f"batch file {path} has no changes")
    return out


_JSON_KEYS = {"action": str, "name": str, "type": str, "value": str, "ttl": int}


def _json_entry(it: object, where: str, n: int) -> Entry:
    """One JSON entry, with the type of every field checked (bool is not a TTL)."""
    if not isinstance(it, dict) or "name" not in it:
        raise BadInput(f"{where}: expected an object with at least a name")
    for k, v in it.items():
        kind = _JSON_KEYS.get(k)
        if kind is None:
            raise BadInput(f"{where}: unknown key {k!r} (use {', '.join(_JSON_KEYS)})")
        if v is not None and (isinstance(v, bool) or not isinstance(v, kind)):
            want = "a whole number" if kind is int else "a string"
            raise BadInput(f"{where}: {k} must be {want}, not {json.dumps(v)[:40]}")
    action = (it.get("action") or "update").lower()
    if action in ("add", "set", "replace"):
        action = "update"
    if action not in ("update", "delete"):
        raise BadInput(f"{where}: unknown action {it['action']!r} (use update or delete)")
    rdtype = it["type"].upper() if it.get("type") else None
    if rdtype and rdtype not in TYPES:
        raise BadInput(f"{where}: type {it['type']!r} is not one of {', '.join(TYPES)}")
    value, ttl = it.get("value"), it.get("ttl")
    if action == "delete":
        if value is not None or ttl is not None:
            raise BadInput(f"{where}: a delete takes only a name and a type")
        return Entry("delete", it["name"], rdtype, None, None, n)
    if value is None:
        raise BadInput(f"{where}: an update needs a value")
    return Entry("update", it["name"], rdtype, value,
                 None if ttl is None else _ttl(str(ttl), where), n)


def _parse_json(path: Path, text: str) -> list[Entry]:
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"batch file {path} is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise BadInput(f"batch file {path}: expected a JSON list of changes")
    out = [_json_entry(it, f"{path}: entry {n}", n) for n, it in enumerate(items, 1)]
    if not out:
        raise BadInput(f"batch file {path} has no changes")
    return out
