"""What the query fast path (quickquery.py) stores: a query action's parameters as data and
where its functions live, keyed like the help cache (discovery's installation key plus the
mtime of every debvisor module the full CLI loaded, and of the modules holding the
action's functions). Written by the full CLI after it ran a query action; read by
:func:`lookup`, which takes an entry only from a file of this user that nobody else can
write, of the exact shape :func:`entry` writes. The functions it names are then loaded
only from modules whose files it lists (quickquery.py checks). A cache that cannot be
read or written, or is not so, only costs speed."""

from __future__ import annotations

import json
import os
import stat
import sys
from typing import TYPE_CHECKING, Any

from .discovery import cache_file, installation_key, module_sources, sources_ok, store

if TYPE_CHECKING:
    from .actions import Action

TYPES = ("str", "path", "choice", "int", "float", "bool")
FIELDS = ("name", "type", "default", "choices", "positional", "pattern", "minimum", "maximum",
          "short", "case_sensitive")


def _where(fn: Any) -> str | None:
    """``module:qualname`` of a module-level function, None for anything else."""
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or not qual or "<" in qual:
        return None
    return f"{module}:{qual}"


def entry(action: Action) -> dict[str, Any] | None:
    """What running ``action`` again needs, as JSON data; None if it cannot take the path."""
    query = _where(action.query)
    render = _where(action.render) if action.render is not None else ""
    if query is None or render is None:
        return None
    params = []
    for p in action.params:
        if p.secret or p.type not in TYPES:
            return None
        fields = {f: getattr(p, f) for f in FIELDS}
        fields["choices"] = list(p.choices)
        if p.required:
            del fields["default"]
        elif not isinstance(p.default, str | int | float | bool | None):
            return None
        params.append(fields)
    return {"path": action.path, "query": query, "render": render, "params": params}


def remember(action: Action, words: list[str]) -> None:
    """Store ``action`` for ``words`` (``["hv", "list"]``) unless an up-to-date entry is
    there already. Never fails: a cache that cannot be written only costs speed."""
    if os.environ.get("DEBVISOR_NO_FAST_QUERY"):
        return
    path = cache_file("query", words, ".json")
    data = entry(action)
    if path is None or data is None:
        return
    key = installation_key(" ".join(words))
    try:
        old = json.loads(path.read_text())
        if old.get("key") == key and old.get("entry") == data and sources_ok(
                old.get("sources", "")):
            return
    except (OSError, ValueError, AttributeError):
        pass
    try:
        sources = module_sources()
        for where in (data["query"], data["render"]):
            module = sys.modules.get(where.partition(":")[0]) if where else None
            file = getattr(module, "__file__", None)
            if file and f"{file}=" not in sources:
                sources += f"\t{file}={os.stat(file).st_mtime_ns}"
        text = json.dumps({"key": key, "sources": sources, "entry": data})
    except (OSError, TypeError, ValueError):
        return
    store(path, text)


def _read_own(path: Any) -> str | None:
    """The file's text if it is a regular file of this user, in a directory of this user,
    neither writable by anyone else; None otherwise."""
    me = os.geteuid()
    try:
        d = os.stat(path.parent)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != me or st.st_mode & 0o022
                or d.st_uid != me or d.st_mode & 0o022):
            return None
        try:
            return f.read(1 << 20).decode()
        except (OSError, UnicodeDecodeError):
            return None


def _shape_ok(entry: Any) -> bool:
    """Exactly what :func:`entry` writes: anything else is not used."""
    if not (isinstance(entry, dict) and set(entry) == {"path", "query", "render", "params"}
            and all(isinstance(entry[k], str) for k in ("path", "query", "render"))
            and entry["query"] and isinstance(entry["params"], list)):
        return False
    types: dict[str, type | tuple[type, ...]] = {
        "name": str, "type": str, "choices": list, "positional": bool, "case_sensitive": bool}
    optional: dict[str, type | tuple[type, ...]] = {
        "pattern": str, "short": str, "minimum": (int, float), "maximum": (int, float)}
    for p in entry["params"]:
        if not isinstance(p, dict) or not set(FIELDS) - {"default"} <= set(p) <= set(FIELDS):
            return False
        if not all(isinstance(p[k], t) for k, t in types.items()) or p["type"] not in TYPES:
            return False
        if not all(p[k] is None or isinstance(p[k], t) for k, t in optional.items()):
            return False
        if not all(isinstance(c, str) for c in p["choices"]):
            return False
        if "default" in p and not isinstance(p["default"], str | int | float | bool | None):
            return False
    return True


def lookup(words: list[str]) -> tuple[int, dict[str, Any], set[str]] | None:
    """The stored entry for the longest prefix of ``words``: its length, the entry, and the
    module files it was stored with (the only places its functions may come from)."""
    for n in range(len(words), 0, -1):
        path = cache_file("query", words[:n], ".json")
        if path is None:
            return None
        text = _read_own(path)
        if text is None:
            continue
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if not (isinstance(data, dict) and data.get("key") == installation_key(
                " ".join(words[:n])) and isinstance(data.get("sources"), str)
                and sources_ok(data["sources"]) and _shape_ok(data.get("entry"))):
            continue
        files = {item.rpartition("=")[0] for item in data["sources"].split("\t")}
        return n, data["entry"], files
    return None
