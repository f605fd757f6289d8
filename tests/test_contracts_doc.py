"""docs/contracts.md lists every contract a site plugin can rely on, each with the
signature the code has today (the model is datasette's tests/test_docs.py).

Each contract's text is computed from the code: ``name(params) -> return`` from
:func:`inspect.signature`, with annotations as the source spells them (every core
module uses ``from __future__ import annotations``, so they are strings) and defaults
as ``repr``; a dataclass is ``Name(field: type = default, …)`` from its fields. The
doc must contain that exact text (whitespace runs count as one space, so a long
signature may be wrapped). A changed argument list, type or default, a new hook, a
new public method or attribute of a listed class, a new dataclass field, audit event
field, fault keyword or exit code makes this test fail until the doc says so.

Run ``python tests/test_contracts_doc.py`` to print every expected text.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from debvisor_core import (
    actions,
    audit,
    bundle,
    commands,
    config,
    context,
    engine,
    errors,
    faults,
    health,
    hookspecs,
    lab,
    log,
    model,
    output,
    remote,
    secrets,
    settings,
    testing,
    ui,
)

ROOT = Path(__file__).resolve().parent.parent
DOC_PATH = ROOT / "docs" / "contracts.md"


def _doc() -> str:
    return DOC_PATH.read_text()


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _ann(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def _default(value: Any) -> str:
    return repr(value)


def render_signature(name: str, fn: Callable[..., Any]) -> str:
    """``name(a: T, *, b: U = 1) -> R`` with annotations as the source spells them."""
    sig = inspect.signature(fn)
    parts: list[str] = []
    kw_only_marked = False
    for p in sig.parameters.values():
        text = p.name
        if p.kind is p.VAR_POSITIONAL:
            text, kw_only_marked = "*" + text, True
        elif p.kind is p.VAR_KEYWORD:
            text = "**" + text
        elif p.kind is p.KEYWORD_ONLY and not kw_only_marked:
            parts.append("*")
            kw_only_marked = True
        if p.annotation is not p.empty:
            text += f": {_ann(p.annotation)}"
        if p.default is not p.empty:
            text += f" = {_default(p.default)}" if p.annotation is not p.empty \
                else f"={_default(p.default)}"
        parts.append(text)
    out = f"{name}({', '.join(parts)})"
    if sig.return_annotation is not sig.empty:
        out += f" -> {_ann(sig.return_annotation)}"
    return out


def _field_default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return f" = {_default(f.default)}"
    if f.default_factory is not dataclasses.MISSING:
        factory = f.default_factory
        fname = getattr(factory, "__name__", repr(factory))
        return f" = field(default_factory={fname})"
    return ""


def render_dataclass(cls: type, *, public_only: bool = False) -> str:
    """``Name(field: type = default, …)`` for the fields ``__init__`` takes."""
    fields = [f for f in dataclasses.fields(cls) if f.init
              and not (public_only and f.name.startswith("_"))]
    return f"{cls.__name__}(" + ", ".join(
        f"{f.name}: {_ann(f.type)}{_field_default(f)}" for f in fields) + ")"


def _method(cls: type, name: str) -> Callable[..., Any]:
    """The function behind ``cls.name`` as written (classmethods keep ``cls``)."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            attr = klass.__dict__[name]
            return attr.__func__ if isinstance(attr, classmethod | staticmethod) else attr
    raise AttributeError(f"{cls.__name__}.{name}")


def _public_methods(cls: type) -> list[str]:
    """Public methods defined on ``cls`` itself (not inherited, not properties)."""
    out = []
    for name, attr in cls.__dict__.items():
        if name.startswith("_"):
            continue
        if isinstance(attr, classmethod | staticmethod) or inspect.isfunction(attr):
            out.append(name)
    return out


def _properties(cls: type) -> list[str]:
    return [n for n, a in cls.__dict__.items() if isinstance(a, property) and not n.startswith("_")]


def _property_text(cls: type, name: str) -> str:
    prop = cls.__dict__[name]
    ret = inspect.signature(prop.fget).return_annotation
    return f"{name}: {_ann(ret)}"


# -- what the doc must list ------------------------------------------------------------
FUNCTIONS: list[tuple[str, Callable[..., Any]]] = [
    # actions
    ("attach", actions.attach), ("run", actions.run), ("run_json", actions.run_json),
    ("command", actions.command), ("installed", actions.installed), ("find", actions.find),
    ("parse_duration", actions.parse_duration), ("parse_size", actions.parse_size),
    # running operations
    ("execute", engine.execute), ("run", engine.run),
    # the step registry
    ("registered", model.registered), ("registry", model.registry),
    ("build_step", model.build_step), ("parse_step_type", model.parse_step_type),
    # remote
    ("transport_for", remote.transport_for),
    # the run UIs
    ("active", ui.active),
    # config and state locations
    ("config_path", config.config_path), ("state_dir", config.state_dir),
    ("log_dir", config.log_dir),
    # commands, log lines, secrets
    ("operation_options", commands.operation_options), ("pass_ctx", commands.pass_ctx),
    ("get_ctx", commands.get_ctx), ("info", log.info), ("warn", log.warn),
    ("error", log.error), ("debug", log.debug), ("read_secret", secrets.read_secret),
]
FUNCTIONS += [(name, getattr(output, name)) for name in output.__all__
              if inspect.isfunction(getattr(output, name))]

#: classes whose every public method (and property) the doc lists
CLASSES: list[type] = [
    model.Step, model.Operation, model.Finding, model.OpResult, model.Phase,
    actions.Action, actions.Param, remote.RemoteAction, remote.LocalTransport,
    remote.SshTransport, ui.RunUI, ui.TerminalUI, ui.JsonEventsUI, ui.RecordingUI,
    output.Progress, bundle.DiagnosticsBundle, health.CheckResult, health.HealthCheck,
    lab.LabService, lab.LabContext, context.Context, context.OpOptions, context.Env,
    settings.Section, testing.Result,
    testing.StateDir, testing.Runner, testing.Lab,
]

#: dataclasses whose fields the doc lists (Context: its public fields only)
DATACLASSES: list[type] = [c for c in CLASSES if dataclasses.is_dataclass(c)]

#: plain classes whose constructor the doc gives
CONSTRUCTED: list[type] = [ui.TerminalUI, ui.JsonEventsUI, ui.RecordingUI, output.Progress,
                           bundle.DiagnosticsBundle, errors.DebvisorError, context.Env,
                           actions.Outcome]

#: methods the engine or the CLI calls that a plugin author never needs (not contracts)
INTERNAL = {("Step", "to_json"), ("Step", "params"), ("Phase", "to_json"),
            ("Operation", "phase_of"), ("Operation", "phase_range"), ("Lab", "down"),
            ("Lab", "config"), ("Context", "safe_argv")}


def expected_texts() -> Iterator[tuple[str, str]]:
    """(what, the exact text the doc must contain) for every contract."""
    for fn in _hookspecs():
        yield f"hook {fn.__name__}", render_signature(fn.__name__, fn)
    for name, fn in FUNCTIONS:
        yield f"function {name}", render_signature(name, fn)
    for cls in DATACLASSES:
        yield f"dataclass {cls.__name__}", render_dataclass(cls, public_only=cls is context.Context)
    for cls in CONSTRUCTED:
        yield f"constructor {cls.__name__}", render_signature(cls.__name__, cls)
    for cls in CLASSES:
        for name in _public_methods(cls):
            if (cls.__name__, name) in INTERNAL:
                continue
            yield f"method {cls.__name__}.{name}", render_signature(name, _method(cls, name))
        for name in _properties(cls):
            if (cls.__name__, name) not in INTERNAL:
                yield f"property {cls.__name__}.{name}", _property_text(cls, name)
    for name in ("TYPE", "VERSION", "NAME", "ORDER", "DESTRUCTIVE"):
        value = getattr(model.Step, name)
        yield f"Step.{name}", f"{name}: ClassVar[{type(value).__name__}] = {value!r}"
    yield "dv", render_signature("dv", testing.Runner(pytest.MonkeyPatch()).__call__)
    yield "RemoteAction.TYPE", f'TYPE = "{remote.RemoteAction.TYPE}"'
    yield "step TYPE pattern", model.TYPE_RE.pattern


def _hookspecs() -> list[Callable[..., Any]]:
    return [fn for name, fn in vars(hookspecs).items()
            if name.startswith("debvisor_") and inspect.isfunction(fn)]


@pytest.mark.parametrize(("what", "text"), list(expected_texts()), ids=lambda v: str(v)[:60])
def test_contract_is_documented_with_its_signature(what: str, text: str) -> None:
    assert _norm(text) in _norm(_doc()), (
        f"docs/contracts.md lacks {what}, or gives it another signature; the code says:\n"
        f"    {text}")


def test_every_hook_has_its_firstresult_semantics() -> None:
    doc = _doc()
    for fn in _hookspecs():
        opts = getattr(fn, "debvisor_spec", {}) or {}
        section = doc.split(f"### `{fn.__name__}`", 1)
        assert len(section) == 2, f"no `### `{fn.__name__}`` heading in docs/contracts.md"
        body = section[1].split("\n### ", 1)[0]
        if opts.get("firstresult"):
            assert "first result" in body.lower(), f"{fn.__name__} is firstresult=True"


def test_every_public_context_attribute_is_documented() -> None:
    doc = _doc()
    names = [f.name for f in dataclasses.fields(context.Context) if not f.name.startswith("_")]
    names += [n for n in _properties(context.Context) + _public_methods(context.Context)
              if ("Context", n) not in INTERNAL]
    missing = [n for n in names if f"`ctx.{n}" not in doc]
    assert not missing, f"Context attributes not documented as `ctx.NAME`: {missing}"
    opt_fields = [f.name for f in dataclasses.fields(context.OpOptions)]
    missing = [n for n in opt_fields if f"`ctx.op_options.{n}`" not in doc]
    assert not missing, f"OpOptions fields not documented as `ctx.op_options.NAME`: {missing}"


def _exit_row(doc: str, code: int) -> str:
    rows = [ln for ln in doc.splitlines() if ln.startswith(f"| {code} |")]
    assert len(rows) == 1, f"docs/contracts.md needs exactly one exit-code row '| {code} | …'"
    return rows[0]


def _error_classes() -> list[type[errors.DebvisorError]]:
    out: list[type[errors.DebvisorError]] = []
    for mod in (errors, model, faults, actions, remote):
        for obj in vars(mod).values():
            if (inspect.isclass(obj) and issubclass(obj, errors.DebvisorError)
                    and obj.__module__ == mod.__name__ and not obj.__name__.startswith("_")):
                out.append(obj)
    return out


def test_exit_codes_and_the_errors_that_raise_them() -> None:
    doc = _doc()
    codes = {n: v for n, v in vars(errors).items() if n.startswith("EXIT_")}
    for name, code in codes.items():
        assert f"`{name}`" in _exit_row(doc, code), f"{name} = {code} is not in its exit-code row"
    for cls in _error_classes():
        assert f"`{cls.__name__}`" in _exit_row(doc, cls.exit_code), (
            f"{cls.__name__} (exit {cls.exit_code}) is not in the exit-code row {cls.exit_code}")
    assert "declined" in _exit_row(doc, errors.PreflightRefused.exit_code)


def _dict_keys(node: ast.AST) -> list[str]:
    assert isinstance(node, ast.Dict)
    return [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]


def audit_event_fields() -> list[str]:
    """The keys of the event ``audit.record`` writes, plus the chain's own."""
    tree = ast.parse(inspect.getsource(audit.record))
    event = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "event" for t in n.targets))
    chained = ast.parse(inspect.getsource(audit._chained))
    extra = [str(n.targets[0].slice.value) for n in ast.walk(chained)
             if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Subscript)
             and isinstance(n.targets[0].slice, ast.Constant)]
    return _dict_keys(event) + extra


def audit_results() -> set[str]:
    """Every ``result=`` the engine writes."""
    tree = ast.parse(inspect.getsource(engine))
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "record":
            for kw in n.keywords:
                if kw.arg == "result" and isinstance(kw.value, ast.Constant):
                    out.add(str(kw.value.value))
    return out


def test_audit_event_fields_and_results() -> None:
    doc = _doc()
    section = doc.split("## Audit events", 1)[1].split("\n## ", 1)[0]
    fields = audit_event_fields()
    assert {"time", "argv", "result", "operation", "hash"} <= set(fields)
    missing = [f for f in fields if f"`{f}`" not in section]
    assert not missing, f"audit event fields missing from '## Audit events': {missing}"
    missing = [r for r in sorted(audit_results()) if f"`{r}`" not in section]
    assert not missing, f"audit results the engine writes, missing from '## Audit events': {missing}"


def fault_keywords() -> set[str]:
    """Every WHEN the fault plugin understands (``"kill-before" in when``)."""
    tree = ast.parse(inspect.getsource(faults))
    out: set[str] = set()
    for n in ast.walk(tree):
        if (isinstance(n, ast.Compare) and isinstance(n.left, ast.Constant)
                and isinstance(n.ops[0], ast.In)):
            out.add(str(n.left.value))
    return out


def test_fault_syntax() -> None:
    section = _doc().split("## Fault injection", 1)[1].split("\n## ", 1)[0]
    words = fault_keywords()
    assert {"before", "after", "undo"} <= words
    missing = [w for w in sorted(words) if f"`{w}`" not in section]
    assert not missing, f"fault keywords missing from '## Fault injection': {missing}"
    for env in ("DEBVISOR_FAULTS", "DEBVISOR_FAULT_READY"):
        assert env in inspect.getsource(faults) and f"`{env}`" in section


def test_locations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = _doc()
    monkeypatch.delenv("DEBVISOR_STATE_DIR", raising=False)
    monkeypatch.delenv("DEBVISOR_CONFIG", raising=False)
    for path in (config.config_path(), config.state_dir(), config.log_dir()):
        assert f"`{path}`" in doc, f"the default location {path} is not in docs/contracts.md"
    monkeypatch.setenv("DEBVISOR_STATE_DIR", str(tmp_path))
    assert config.log_dir().relative_to(tmp_path) == Path("log")
    assert "`$DEBVISOR_STATE_DIR/log`" in doc
    ctx = context.Context()
    made = ctx.plugin_state("WORD")
    assert f"`STATE/{made.relative_to(tmp_path)}`" in doc
    assert oct(made.stat().st_mode & 0o777) == "0o700" and "0700" in doc
    for env in ("DEBVISOR_CONFIG", "DEBVISOR_STATE_DIR", "DEBVISOR_PLUGINS",
                "DEBVISOR_DISABLE_PLUGINS"):
        assert f"`{env}`" in doc, env


def test_dv_fault_called_twice_is_documented(dv_fault: Callable[..., None]) -> None:
    """The doc says a second ``dv_fault`` call replaces the first: check that it does."""
    import os

    dv_fault("A:after")
    dv_fault("B")
    assert os.environ["DEBVISOR_FAULTS"] == "B"
    assert "replaces" in _doc().split("### `dv_fault`", 1)[1].split("\n### ", 1)[0]


def test_the_doc_names_only_existing_modules() -> None:
    """Every ``debvisor_core.X`` the doc names can be imported."""
    import importlib

    for mod in sorted(set(re.findall(r"debvisor_core\.([a-z_]+)(?![a-z_(])", _doc()))):
        try:
            importlib.import_module(f"debvisor_core.{mod}")
        except ImportError:
            target = importlib.import_module("debvisor_core")
            assert hasattr(target, mod), f"docs/contracts.md names debvisor_core.{mod}"


if __name__ == "__main__":  # pragma: no cover - prints what the doc must contain
    for what, text in expected_texts():
        print(f"{what}\n    {text}")
