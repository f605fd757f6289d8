"""Turn jsonschema errors into one clear sentence each, with the offending key's line."""

from __future__ import annotations

from typing import Any

from .report import Report
from .yamlutil import Loaded, dotted

_TYPE_NAMES = {"boolean": "true or false", "integer": "a whole number", "string": "a string",
               "array": "a list", "object": "a mapping", "number": "a number", "null": "empty"}


def _leaves(err: Any) -> list[Any]:
    """For anyOf/oneOf errors, the most specific sub-errors (else the error itself)."""
    if err.validator in ("anyOf", "oneOf") and err.context:
        best = max(len(e.absolute_path) for e in err.context)
        deepest = [e for e in err.context if len(e.absolute_path) == best]
        if best > len(err.absolute_path):
            return [leaf for e in deepest for leaf in _leaves(e)]
    return [err]


def _kind(inst: Any) -> str:
    """What a value is, without the value: 'a list', 'a string' …"""
    for t, name in ((bool, "true or false"), (int, "a whole number"), (float, "a number"),
                    (str, "a string"), (list, "a list"), (dict, "a mapping")):
        if isinstance(inst, t):
            return name
    return "empty" if inst is None else "a value"


def message(err: Any, echo: bool = True) -> str:
    """One sentence for a schema error. ``echo=False`` (user-data, which holds passwords, keys
    and tokens): the sentence names the key and what was expected, never the value."""
    v, inst, schema = err.validator, err.instance, err.schema
    what = f"{inst!r}" if echo else "the value"
    if v == "additionalProperties" and isinstance(inst, dict):
        known = set(schema.get("properties", {}))
        extra = sorted(k for k in inst if k not in known)
        hint = f"; known keys: {', '.join(sorted(known))}" if known and len(known) <= 25 else ""
        return f"unknown key {', '.join(repr(e) for e in extra)}{hint}"
    if v == "required":
        return f"missing required key {err.message.split(' ')[0]}"
    if v == "type":
        want = err.validator_value
        names = [_TYPE_NAMES.get(str(t), str(t)) for t in (want if isinstance(want, list) else [want])]
        if not echo:
            return f"must be {' or '.join(names)}, not {_kind(inst)}"
        return f"{inst!r} must be {' or '.join(names)}"
    if v in ("enum", "const"):
        allowed = err.validator_value if v == "enum" else [err.validator_value]
        return f"{what} is not allowed; use one of: {', '.join(map(str, allowed))}"
    if v == "pattern":
        desc = schema.get("description") or f"matching {err.validator_value}"
        return f"{what} is not {desc}"
    if v in ("minimum", "maximum"):
        return f"{what} is out of range ({v} {err.validator_value})"
    if v in ("minItems", "minLength"):
        return f"{what} is too short (needs at least {err.validator_value})"
    if v == "anyOf" or v == "oneOf":
        return f"{what} does not match any allowed form"
    if not echo:  # jsonschema's own sentences start with the value
        return f"the value breaks the schema rule {v!r}"
    return str(err.message)


def report_errors(validator: Any, data: Any, loaded: Loaded | None, file: str, report: Report,
                  prefix: list[Any] | None = None, *, echo: bool = True) -> None:
    """Validate ``data`` and add one issue per problem (warnings for `deprecated`); ``echo=False``:
    no message quotes a value."""
    seen: set[tuple[str, str]] = set()
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    for top in errors:
        for err in _leaves(top):
            path = [*(prefix or []), *err.absolute_path]
            text = message(err, echo)
            key = (dotted(path), text)
            if key in seen:
                continue
            seen.add(key)
            line = loaded.line_of(path) if loaded else None
            if err.validator == "deprecated":
                report.warning(file, f"{dotted(path)}: {text}", line)
            else:
                report.error(file, f"{dotted(path)}: {text}", line)
