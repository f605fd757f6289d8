"""The query fast path: a read-only action (``hv list``, ``ops list``) run without click and
without loading the plugins.

Of a 80 ms `hv list`, click, the root group, the plugin host and the plugin's command tree
cost about 40 ms before the first libvirt call. The full CLI, when it has run a query
action, stores what running it again needs: the action's parameters (as data), where its
query and render functions live, and the same key as the help cache (discovery's
fingerprint, the plugin selection, the mtime of every debvisor module it loaded). A later
run whose arguments are plain (``--json``, the command's words, its declared options and
arguments, nothing else) parses them against that, imports only the action's module and
runs it through the same :func:`debvisor_core.actions.run`, with the same output and exit
code. Anything else — another global option, ``--help``, an unknown or repeated option, a
value the parameter refuses, a stale or unreadable cache, ``DEBVISOR_NO_FAST_QUERY=1`` —
takes the full CLI, which also says what is wrong. Only actions whose parameters are
str, path, choice, int, float or bool (no secrets, no lists) are stored.
"""

from __future__ import annotations

import os
from typing import Any

from . import querycache


def _load(where: str, files: set[str]) -> Any:
    """The function ``module:qualname``, only from a module whose file the entry lists."""
    import importlib
    import importlib.util

    module, _, qual = where.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin not in files:
        raise ImportError(f"{module} is not among the entry's modules")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def _parse(args: list[str], params: list[dict[str, Any]]) -> tuple[bool, dict[str, Any]] | None:
    """(--json given, raw values by name) from the command's own arguments; None for
    anything the full CLI must see."""
    options = {}
    for p in params:
        if not p["positional"]:
            options["--" + p["name"].replace("_", "-")] = p
            if p["short"]:
                options[p["short"]] = p
    positional = [p for p in params if p["positional"]]
    raw: dict[str, Any] = {}
    values: list[str] = []
    json_ = False
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok == "--json":
            json_ = True
            continue
        if tok.startswith("-") and tok != "-":
            name, eq, value = tok.partition("=")
            opt = options.get(name if tok.startswith("--") else tok)
            if opt is None or opt["name"] in raw:
                return None  # unknown (or --help, --verbose …), or repeated
            if opt["type"] == "bool":
                if eq:
                    return None
                raw[opt["name"]] = True
                continue
            if not eq:
                if i >= len(args):
                    return None
                value = args[i]
                i += 1
            raw[opt["name"]] = value
            continue
        values.append(tok)
    if len(values) > len(positional):
        return None
    for p, value in zip(positional, values, strict=False):
        raw[p["name"]] = value
    if any(p["name"] not in raw and "default" not in p for p in params):
        return None  # a required one is missing: click says which
    return json_, raw


def serve(argv: list[str], word: str | None = None) -> int | None:
    """Run ``argv`` (``debvisor``'s arguments; ``word`` first for an alias such as
    ``hvctl``) by the fast path: its exit code, or None when the full CLI must run it
    (nothing was printed then)."""
    if os.environ.get("DEBVISOR_NO_FAST_QUERY"):
        return None
    lead = 0
    while lead < len(argv) and argv[lead] == "--json":
        lead += 1
    rest = ([word] if word else []) + argv[lead:]
    words = []
    for tok in rest:
        if tok.startswith("-") or not tok.isascii() or not tok.replace("-", "").isalnum():
            break
        words.append(tok)
    found = querycache.lookup(words)
    if found is None:
        return None
    n, stored, files = found
    parsed = _parse(rest[n:], stored["params"])
    if parsed is None:
        return None
    json_, raw = parsed
    from . import log
    from .actions import Action, Param, outcome_code, run
    from .context import Context
    from .errors import DebvisorError
    from .output import report

    try:
        params = tuple(Param(help="-", **{**p, "choices": tuple(p["choices"])})
                       for p in stored["params"])
        action = Action(path=stored["path"], summary="", params=params,
                        query=_load(stored["query"], files),
                        render=_load(stored["render"], files) if stored["render"] else None)
        checked = action.validate(raw)
        ctx = Context(json=json_ or lead > 0)
        log.configure()
        ctx.config  # noqa: B018 - a bad config file: the full CLI says so
    except (DebvisorError, ImportError, AttributeError, TypeError, ValueError, KeyError):
        return None
    try:
        return outcome_code(run(ctx, action, checked))
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - one line, as the CLI does
        return report(exc)
