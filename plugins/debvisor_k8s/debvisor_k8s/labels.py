"""Node labels and taints: parsing ``key=value`` / ``key-`` and ``key=value:Effect`` /
``key:Effect-`` as kubectl writes them, and the registered steps that set them (undo: the
values they had)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from debvisor_core.errors import BadInput, StepFailed
from debvisor_core.model import Finding, Step

from .steps import api, get_node, node_path

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context

#: a label key: optional DNS-subdomain prefix and "/", then a name (Kubernetes' rules)
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
KEY_RE = re.compile(rf"((?=[^/]{{1,253}}/)[a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?{_NAME}")
VALUE_RE = re.compile(rf"({_NAME})?")
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _key(text: str, what: str) -> str:
    if not KEY_RE.fullmatch(text):
        raise BadInput(f"{what} key {text[:80]!r} is not a valid Kubernetes label key "
                       f"(name or prefix/name: letters, digits, '-', '_', '.')")
    return text


def _value(text: str, key: str) -> str:
    if len(text) > 63 or not VALUE_RE.fullmatch(text):
        raise BadInput(f"the value of {key} ({text[:80]!r}) is not a valid label value (at "
                       f"most 63 letters, digits, '-', '_', '.')")
    return text


def parse_labels(items: list[str]) -> dict[str, str | None]:
    """``["k=v", "gone-"]`` -> ``{"k": "v", "gone": None}`` (None: remove)."""
    out: dict[str, str | None] = {}
    for item in items:
        if "=" in item:
            k, v = item.split("=", 1)
            out[_key(k, "label")] = _value(v, k)
        elif item.endswith("-"):
            out[_key(item[:-1], "label")] = None
        else:
            raise BadInput(f"label {item[:80]!r}: write key=value to set it or key- to remove it")
    if not out:
        raise BadInput("give at least one label (key=value, or key- to remove)")
    return out


def parse_taints(items: list[str]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(to add, to remove) from ``key[=value]:Effect`` and ``key[:Effect]-``; a removal
    without an effect removes the key's taints of every effect."""
    add: list[dict[str, str]] = []
    remove: list[dict[str, str]] = []
    for item in items:
        removing = item.endswith("-")
        body = item[:-1] if removing else item
        head, sep, effect = body.rpartition(":")
        if not sep:
            head, effect = body, ""
        if effect and effect not in EFFECTS:
            raise BadInput(f"taint {item[:80]!r}: the effect must be one of {', '.join(EFFECTS)}")
        if not effect and not removing:
            raise BadInput(f"taint {item[:80]!r}: write key[=value]:Effect (Effect: "
                           f"{', '.join(EFFECTS)}), or key[:Effect]- to remove it")
        key, _, value = head.partition("=")
        taint = {"key": _key(key, "taint"), "effect": effect}
        if value:
            taint["value"] = _value(value, key)
        (remove if removing else add).append(taint)
    if not add and not remove:
        raise BadInput("give at least one taint (key=value:Effect, or key:Effect- to remove)")
    return add, remove


def taint_text(t: dict[str, Any]) -> str:
    value = f"={t['value']}" if t.get("value") else ""
    return f"{t['key']}{value}:{t.get('effect', '')}".rstrip(":")


def merged_taints(current: list[dict[str, Any]], add: list[dict[str, str]],
                  remove: list[dict[str, str]]) -> list[dict[str, Any]]:
    """``current`` with ``remove`` dropped and ``add`` set (a taint is one key+effect)."""
    def gone(t: dict[str, Any]) -> bool:
        return any(t.get("key") == r["key"] and r["effect"] in ("", t.get("effect"))
                   for r in remove)

    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return (a.get("key"), a.get("effect")) == (b.get("key"), b.get("effect"))

    kept = [t for t in current if not gone(t) and not any(same(t, a) for a in add)]
    return kept + [dict(a) for a in add]


def same_taints(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def plain(ts: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
        return sorted((t.get("key"), t.get("value") or "", t.get("effect")) for t in ts)

    return plain(a) == plain(b)


def _patch(ctx: Context, name: str, body: dict[str, Any]) -> None:
    api(ctx).call("PATCH", node_path(name), body=body,
                  content_type="application/merge-patch+json")


@dataclass
class Label(Step):
    """Set (a value) or remove (None) labels of NODE (undo: the values they had)."""

    TYPE = "k8s.label"
    NAME = "Label"
    node: str
    labels: dict[str, str | None] = field(default_factory=dict)

    def describe(self, ctx: Context) -> str:
        what = ", ".join(f"{k}={v}" if v is not None else f"remove {k}"
                         for k, v in sorted(self.labels.items()))
        return f"label node {self.node}: {what}"

    def check(self, ctx: Context) -> list[Finding] | None:
        get_node(ctx, self.node)
        return None

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        have = (get_node(ctx, self.node).get("metadata") or {}).get("labels") or {}
        return {"before": {k: have.get(k) for k in self.labels}}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        _patch(ctx, self.node, {"metadata": {"labels": dict(self.labels)}})
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        have = (get_node(ctx, self.node).get("metadata") or {}).get("labels") or {}
        wrong = [k for k, v in self.labels.items() if have.get(k) != v]
        if wrong:
            raise StepFailed(f"node {self.node}: labels not as set after the patch: "
                             f"{', '.join(sorted(wrong))}")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        _patch(ctx, self.node, {"metadata": {"labels": dict(record.get("before") or {})}})


@dataclass
class Taint(Step):
    """Add and remove taints of NODE (undo: the taints it had). The node's resourceVersion
    guards the write: a taint another client set meanwhile is not lost silently."""

    TYPE = "k8s.taint"
    NAME = "Taint"
    node: str
    add: list[dict[str, str]] = field(default_factory=list)
    remove: list[dict[str, str]] = field(default_factory=list)

    def describe(self, ctx: Context) -> str:
        parts = [f"+{taint_text(t)}" for t in self.add] + \
                [f"-{taint_text(t)}" for t in self.remove]
        return f"taint node {self.node}: {' '.join(parts)}"

    def check(self, ctx: Context) -> list[Finding] | None:
        get_node(ctx, self.node)
        return None

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        return {"before": list((get_node(ctx, self.node).get("spec") or {}).get("taints") or [])}

    def _set(self, ctx: Context, node: dict[str, Any], taints: list[dict[str, Any]]) -> None:
        rv = (node.get("metadata") or {}).get("resourceVersion")
        _patch(ctx, self.node, {"metadata": {"resourceVersion": rv},
                                "spec": {"taints": taints or None}})

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        node = get_node(ctx, self.node)
        have = list((node.get("spec") or {}).get("taints") or [])
        self._set(ctx, node, merged_taints(have, self.add, self.remove))
        return {}

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        have = list((get_node(ctx, self.node).get("spec") or {}).get("taints") or [])
        if not same_taints(merged_taints(have, self.add, self.remove), have):
            raise StepFailed(f"node {self.node}: taints not as set after the patch")

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        self._set(ctx, get_node(ctx, self.node), list(record.get("before") or []))
