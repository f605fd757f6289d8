"""What the query fast path (quickquery.py) stores: a query action's parameters as data and
where its functions live, keyed like the help cache (discovery's installation key plus the
mtime of every debvisor module the full CLI loaded). Written by the full CLI after it ran
a query action; read by :func:`lookup`. A cache that cannot be read or written only
costs speed."""

from __future__ import annotations

import json
import os
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
        text = json.dumps({"key": key, "sources": module_sources(), "entry": data})
    except (OSError, TypeError, ValueError):
        return
    store(path, text)


def lookup(words: list[str]) -> tuple[int, dict[str, Any]] | None:
    """The stored entry for the longest prefix of ``words`` (and its length)."""
    for n in range(len(words), 0, -1):
        path = cache_file("query", words[:n], ".json")
        if path is None:
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (isinstance(data, dict) and data.get("key") == installation_key(
                " ".join(words[:n])) and sources_ok(str(data.get("sources", "")))):
            return n, data["entry"]
    return None
