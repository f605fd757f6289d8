"""YAML loading with file:line errors, duplicate-key detection and path → line lookup."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .report import Report


class Loaded:
    """A parsed YAML document plus its node tree (for line numbers of schema errors)."""

    def __init__(self, data: Any, node: Any) -> None:
        self.data = data
        self.node = node

    def line_of(self, path: Sequence[Any]) -> int | None:
        """1-based line of the value at ``path`` (keys and list indexes), or the nearest parent."""
        import yaml

        node = self.node
        line = node.start_mark.line + 1 if node is not None else None
        for part in path:
            nxt = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if getattr(k, "value", None) == str(part) or getattr(k, "value", None) == part:
                        nxt = v
                        line = k.start_mark.line + 1
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                nxt = node.value[part]
                line = nxt.start_mark.line + 1
            if nxt is None:
                break
            node = nxt
        return line


def load(text: str, file: str, report: Report) -> Loaded | None:
    """Parse ``text``; on a syntax error add ``file:line: problem`` and return None."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        report.error(file, f"YAML syntax error: {problem}", line)
        return None
    except yaml.YAMLError as exc:
        report.error(file, f"YAML error: {exc}")
        return None
    _duplicates(node, file, report)
    return Loaded(data, node)


def _duplicates(node: Any, file: str, report: Report) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for k, v in node.value:
            key = getattr(k, "value", None)
            if isinstance(key, str | int) and key in seen:
                report.error(file, f"duplicate key {key!r} (first at line {seen[key]}); "
                             "YAML keeps only the last one", k.start_mark.line + 1)
            elif isinstance(key, str | int):
                seen[key] = k.start_mark.line + 1
            _duplicates(v, file, report)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _duplicates(item, file, report)


def dotted(path: Sequence[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"
