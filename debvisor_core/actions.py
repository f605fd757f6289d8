"""Actions declared once, as data: the CLI, ``debvisor actions`` and the daemon read them.

An :class:`Action` names its path (``example.note.add``), its typed parameters
(:class:`Param`: help, default, validation, whether it is secret), whether it changes
state (a ``plan`` function returning an Operation) or only reads (a ``query`` function
returning JSON-able data), the privilege it needs and a renderer for humans. Plugins
return them from the ``debvisor_actions`` hook; :func:`attach` generates the click
commands (help with examples, ``--json``, and ``--dry-run``/``--check``/``--yes``/
``--rollback`` where the action changes state); :func:`run_json` runs one from a
JSON object (``debvisor actions run``, remote steps).

The parameter model is a tuple of frozen dataclasses (stdlib): measured, importing
``dataclasses`` costs nothing extra at start-up, where attrs or msgspec add an import
to every ``debvisor --help``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    import click

    from .context import Context
    from .model import Operation


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
TYPES = ("str", "int", "float", "bool", "choice", "path", "duration", "size", "list")
PRIVILEGES = ("none", "root")  # or "group:NAME"
_PATH_RE = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)+$")
_DURATION_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)?$")
_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]i?B?|B)?$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"10m"``, ``"1.5h"``, ``"2d"``, ``"250ms"`` → seconds."""
    m = _DURATION_RE.match(str(text).strip())
    if not m:
        raise ValueError("is not a duration like 90s, 10m, 2h or 1d")
    return float(m[1]) * _DURATION_UNITS[m[2]]


def parse_size(text: str) -> int:
    """``"512"``, ``"10G"``, ``"1.5GiB"``, ``"100MB"`` → bytes (K/M/G/T/P are powers of 1024)."""
    m = _SIZE_RE.match(str(text).strip())
    if not m:
        raise ValueError("is not a size like 512M, 10G or 1.5TiB")
    unit = (m[2] or "B").upper()[0]
    power = "BKMGTP".index(unit)
    return int(float(m[1]) * 1024 ** power)


@dataclass(frozen=True)
class Param:
    """One parameter of an action.

    ``type`` is one of str, int, float, bool, choice, path, duration (seconds), size
    (bytes) or list (of str). ``positional`` parameters are CLI arguments (and what
    ``--rollback`` matches); the others are options. A ``secret`` parameter is never
    taken from the command line: the CLI reads it from the file named by
    ``--NAME-file`` (``-`` for stdin), and audit, journal and errors never show it.
    """

    name: str
    help: str
    type: str = "str"
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()
    positional: bool = False
    secret: bool = False
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    #: a one-letter alias for the option (``"-y"``)
    short: str | None = None
    #: choices match in any case (the value is the declared spelling)
    case_sensitive: bool = True
    #: the placeholder shown in --help (default: from the type)
    metavar: str | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"param {self.name}: type must be one of {', '.join(TYPES)}")
        if self.type == "choice" and not self.choices:
            raise ValueError(f"param {self.name}: a choice needs choices")
        if not self.help:
            raise ValueError(f"param {self.name}: every parameter needs help")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-") + ("-file" if self.secret else "")

    def schema(self) -> dict[str, Any]:
        """This parameter as JSON Schema (plus ``x-secret`` / ``x-positional``)."""
        schemas: dict[str, dict[str, Any]] = {
            "str": {"type": "string"}, "path": {"type": "string", "format": "path"},
            "int": {"type": "integer"}, "float": {"type": "number"},
            "bool": {"type": "boolean"}, "choice": {"type": "string", "enum": list(self.choices)},
            "duration": {"type": ["number", "string"], "format": "duration",
                         "description": "seconds, or 90s / 10m / 2h / 1d"},
            "size": {"type": ["integer", "string"], "format": "size",
                     "description": "bytes, or 512M / 10G / 1.5TiB"},
            "list": {"type": "array", "items": {"type": "string"}},
        }
        base = schemas[self.type]
        out = {**base, "description": self.help + (f" ({base['description']})"
                                                    if "description" in base else "")}
        if self.pattern:
            out["pattern"] = self.pattern
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if not self.required and self.default is not None:
            out["default"] = self.default
        if self.secret:
            out["x-secret"] = True
            out["writeOnly"] = True
        if self.positional:
            out["x-positional"] = True
        return out

    def convert(self, value: Any) -> Any:
        """``value`` (JSON or a CLI string) as this parameter's type, or BadInput naming
        the parameter (a secret's value is never shown)."""
        shown = "the value" if self.secret else repr(value if not isinstance(value, str)
                                                    else value[:60])
        try:
            out = self._convert(value)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"parameter {self.name}: {shown} {exc}") from None
        if self.pattern and isinstance(out, str) and not re.fullmatch(self.pattern, out):
            raise BadInput(f"parameter {self.name}: {shown} does not match {self.pattern}")
        if isinstance(out, int | float) and not isinstance(out, bool):
            if self.minimum is not None and out < self.minimum:
                raise BadInput(f"parameter {self.name}: {shown} is below {self.minimum:g}")
            if self.maximum is not None and out > self.maximum:
                raise BadInput(f"parameter {self.name}: {shown} is above {self.maximum:g}")
        return out

    def _convert(self, value: Any) -> Any:
        t = self.type
        if t in ("str", "path"):
            if not isinstance(value, str):
                raise TypeError("is not a string")
            if "\0" in value:
                raise ValueError("contains a NUL byte")
            return value
        if t == "choice":
            if not isinstance(value, str):
                raise TypeError("is not a string")
            for c in self.choices:
                if value == c or (not self.case_sensitive and value.lower() == c.lower()):
                    return c
            raise ValueError(f"is not one of {', '.join(self.choices)}")
        if t == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            raise TypeError("is not a boolean")
        if t == "int":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise TypeError("is not an integer")
            try:
                return int(value)
            except ValueError:
                raise ValueError("is not an integer") from None
        if t == "float":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise TypeError("is not a number")
            try:
                return float(value)
            except ValueError:
                raise ValueError("is not a number") from None
        if t == "duration":
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
                else parse_duration(value)
        if t == "size":
            return int(value) if isinstance(value, int) and not isinstance(value, bool) \
                else parse_size(value)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise TypeError("is not a list of strings")
        return list(value)


class Outcome:
    """A result with an exit code other than 0 (``health --strict`` with warnings): the
    data is shown as usual, then ``message`` (an ``[ERROR]`` line) and the command exits
    with ``code``."""

    def __init__(self, data: Any, code: int, message: str | None = None) -> None:
        self.data = data
        self.code = code
        self.message = message


class Unchanged(Exception):
    """Raised by a plan (at any depth) that finds nothing to run but has something to
    report (``noout is already set``, the balance report without ``--apply``): ``data`` is
    shown with ``render`` (a callable or a line) as the run's result, exit 0."""

    def __init__(self, data: Any, render: Callable[[Any], None] | str | None = None) -> None:
        super().__init__("nothing to change")
        self.data = data
        self.render = render


@dataclass(frozen=True)
class Action:
    """One thing DebVisor can do, declared once. Exactly one of ``plan`` (a state change:
    params + context → Operation, or None when there is nothing to change) and ``query``
    (a read: params + context → JSON-able data) is set. ``render`` prints the result for
    humans; ``result`` documents its shape."""

    path: str
    summary: str
    params: tuple[Param, ...] = ()
    plan: Callable[[Context, dict[str, Any]], Operation | None] | None = None
    query: Callable[[Context, dict[str, Any]], Any] | None = None
    #: a state change that is not one operation of steps (maintenance mode, rolling back or
    #: resuming a journalled operation): it audits and journals what it does itself
    execute: Callable[[Context, dict[str, Any]], Any] | None = None
    render: Callable[[Any], None] | None = None
    description: str = ""
    examples: tuple[str, ...] = ()
    destructive: bool = False
    privilege: str = "root"
    result: str = ""
    kind: str = ""
    #: what to print when ``plan`` returns None (nothing to change); JSON: {"status": "unchanged"}
    unchanged: str = "nothing to change"
    plugin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not _PATH_RE.match(self.path):
            raise ValueError(f"action path {self.path!r} must be like 'plugin.verb' (lower case)")
        if sum(f is not None for f in (self.plan, self.query, self.execute)) != 1:
            raise ValueError(f"action {self.path}: give exactly one of plan, query and execute")
        if self.privilege not in PRIVILEGES and not self.privilege.startswith("group:"):
            raise ValueError(f"action {self.path}: privilege must be none, root or group:NAME")
        names = [p.name for p in self.params]
        if len(names) != len(set(names)):
            raise ValueError(f"action {self.path}: duplicate parameter names")

    @property
    def changes_state(self) -> bool:
        return self.query is None

    @property
    def journalled(self) -> bool:
        """Whether its runs are journalled operations (a plan, or an execute with a kind
        that runs its operation itself): these get --dry-run/--check/--yes/--rollback."""
        return self.plan is not None or (self.execute is not None and bool(self.kind))

    @property
    def op_kind(self) -> str:
        """The operation kind its runs are journalled under (what --rollback looks for)."""
        return self.kind or self.path

    def schema(self) -> dict[str, Any]:
        """The parameters as one JSON Schema object."""
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {p.name: p.schema() for p in self.params},
            "required": [p.name for p in self.params if p.required],
        }

    def describe(self) -> dict[str, Any]:
        """What ``debvisor actions show`` prints (and the daemon serves)."""
        return {
            "path": self.path, "plugin": self.plugin or self.path.split(".")[0],
            "summary": self.summary, "description": self.description,
            "changes_state": self.changes_state, "destructive": self.destructive,
            "privilege": self.privilege, "kind": self.op_kind if self.journalled else None,
            "result": self.result, "examples": list(self.examples),
            "secret_params": [p.name for p in self.params if p.secret],
            "params": self.schema(),
        }

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Typed parameters from ``raw`` (JSON or CLI values; None means "not given")."""
        if type(raw) is not dict and not isinstance(raw, Mapping):  # ABC check: not per query
            raise BadInput(f"{self.path}: the parameters must be a JSON object")
        if not raw and not self.params:  # a query without parameters (the daemon's common case)
            return {}
        known = {p.name: p for p in self.params}
        unknown = sorted(k for k in raw if k not in known)
        if unknown:
            raise BadInput(f"{self.path}: unknown parameter {unknown[0]!r} (known: "
                           f"{', '.join(known) or 'none'})")
        out: dict[str, Any] = {}
        for p in self.params:
            value = raw.get(p.name)
            if value is None:
                if p.required:
                    raise BadInput(f"{self.path}: parameter {p.name} is required ({p.help})")
                out[p.name] = p.default
            else:
                out[p.name] = p.convert(value)
        return out

    def target(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The positional parameters given: what this run changes (``--rollback`` matches it)."""
        return {p.name: params[p.name] for p in self.params
                if p.positional and params.get(p.name) is not None and not p.secret}


def run(ctx: Context, action: Action, params: dict[str, Any]) -> Any:
    """Run ``action`` with validated ``params`` through the engine; return its result
    (the query's data, or the operation result as a dict; an :class:`Outcome` when the
    exit code is not 0) and show it on ctx's UI."""
    ctx.action = action.path
    ctx.plugin = action.path.split(".")[0]
    if action.params:
        ctx.secret_options = tuple(p.option for p in action.params if p.secret)
    if ctx.target is None:
        ctx.target = action.target(params) if action.params else {}
    opts = ctx.op_options
    if (opts.dry_run or opts.check) and not action.journalled:
        flag = "--dry-run" if opts.dry_run else "--check"
        what = "only reads" if action.query is not None else "is not a journalled operation"
        raise BadInput(f"{action.path} {what}: it has no {flag}")
    if action.query is not None or action.execute is not None:
        fn = action.query or action.execute
        assert fn is not None
        data = fn(ctx, params)
        outcome = data if isinstance(data, Outcome) else None
        if outcome is not None:
            data = outcome.data
        ctx.emit(data, action.render)
        return outcome if outcome is not None and outcome.code else data
    assert action.plan is not None
    from . import engine  # not on the query path above: `hv list` should start fast

    try:
        op = action.plan(ctx, params)
    except Unchanged as nothing:
        ctx.emit(nothing.data, nothing.render if nothing.render is not None else action.unchanged)
        return nothing.data
    if op is None:  # the plan found nothing to change
        data = {"status": "unchanged"}
        ctx.emit(data, action.unchanged)
        return data
    if op.kind != action.op_kind:
        raise BadInput(f"{action.path}: its plan made a '{op.kind}' operation, not "
                       f"'{action.op_kind}'")
    render = action.render
    return engine.execute(ctx, op, human=render).to_dict()


def params_from_config(action: Action, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An action's typed parameters from a config table (``[k8s.join]``, a first-boot
    module's ``params``): a secret parameter ``NAME`` is read from the owner-only file its
    ``NAME_file`` key names, never from the table itself."""
    from .secrets import read_secret

    raw = dict(table)
    for p in action.params:
        if not p.secret:
            continue
        if p.name in raw:
            raise BadInput(f"{where}: {p.name} is a secret: give {p.name}_file (an owner-only "
                           f"file), not the value")
        ref = raw.pop(f"{p.name}_file", None)
        if ref is not None:
            if not isinstance(ref, str):
                raise BadInput(f"{where}: {p.name}_file must be a path")
            raw[p.name] = read_secret(ref, f"{p.name} file of {where}").decode().strip()
    return action.validate(raw)


def plan_from_config(ctx: Context, action: Action, table: Mapping[str, Any],
                     where: str) -> Operation | None:
    """``action``'s plan with its parameters from a config table (``[ceph.join]``), for an
    operation that composes several plugins' parts; None when it has nothing to change."""
    assert action.plan is not None
    try:
        return action.plan(ctx, params_from_config(action, table, where))
    except Unchanged as nothing:
        from . import log

        said = nothing.render if isinstance(nothing.render, str) else nothing.data
        log.info(f"{action.path}: nothing to change ({said})")
        return None


def run_json(ctx: Context, path: str, raw: Mapping[str, Any]) -> Any:
    """Find the installed action ``path`` and run it with JSON parameters."""
    action = find(ctx, path)
    return run(ctx, action, action.validate(raw))


def installed(ctx: Context) -> dict[str, Action]:
    """Every action the installed plugins declare, by path."""
    out: dict[str, Action] = {}
    host = ctx.host
    host.load_all()
    for impl in host.pm.hook.debvisor_actions.get_hookimpls():
        try:
            declared: list[Action] = list(impl.function() or [])  # type: ignore[call-overload]
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the rest
            from . import log

            log.warn(f"plugin {impl.plugin_name} failed to declare its actions: "
                     f"{type(exc).__name__}: {exc}")
            continue
        for a in declared:
            out[a.path] = _owned(a, impl.plugin_name)
    return dict(sorted(out.items()))


def _owned(action: Action, plugin: str) -> Action:
    from dataclasses import replace

    return replace(action, plugin=plugin)


def find(ctx: Context, path: str) -> Action:
    if not isinstance(path, str) or not _PATH_RE.match(path):
        raise BadInput(f"{str(path)[:60]!r} is not an action path like 'hv.migrate'")
    found = installed(ctx).get(path)
    if found is None:
        word = path.split(".")[0]
        reason = ctx.host.failed.get(word)
        why = f" (plugin {word} failed to load: {reason})" if reason else ""
        raise BadInput(f"no action {path!r} is installed{why}; see `debvisor actions list`")
    return found


# -- click generation -----------------------------------------------------------
def outcome_code(result: Any) -> int:
    """The exit code of a run's result (an :class:`Outcome`'s, else 0); its message is said
    (the data was already shown)."""
    if not (isinstance(result, Outcome) and result.code):
        return 0
    from . import log
    from .ui import JsonEventsUI, active

    if result.message:
        log.error(result.message)
    ui = active()
    if isinstance(ui, JsonEventsUI):
        ui.emit("exit", code=result.code, message=result.message, hint=None)
    return result.code


def exit_with(result: Any) -> None:
    """Exit with an :class:`Outcome`'s code (the data was already shown)."""
    code = outcome_code(result)
    if code:
        import click

        raise click.exceptions.Exit(code)

def _help(action: Action) -> str:
    text = action.summary.rstrip(".") + "."
    if action.description:
        text += "\n\n" + action.description
    if action.examples:
        text += "\n\n\b\nExamples:\n" + "\n".join(f"  {e}" for e in action.examples)
    return text


def _read_secret_value(p: Param, where: str) -> str:
    """A secret parameter's value from the file ``where`` names (``-``: stdin)."""
    import sys

    if where == "-":
        data = sys.stdin.read()
    else:
        from .secrets import read_secret

        data = read_secret(where, f"{p.option} file").decode("utf-8", errors="strict")
    value = data.rstrip("\n")
    if not value:
        raise BadInput(f"{p.option}: the secret is empty")
    return value


def _words(c: click.Context) -> list[str]:
    """The words that named this command (``["hv", "list"]``, also when run as `hvctl`)."""
    import os

    words: list[str] = []
    while c.parent is not None:
        name = str(c.info_name)
        if c.parent.parent is None and name == os.environ.get("DEBVISOR_ALIAS"):
            name = os.environ.get("DEBVISOR_ALIAS_WORD", name)
        words.append(name)
        c = c.parent
    return words[::-1]


def command(action: Action, name: str | None = None) -> click.Command:
    """The click command of ``action`` (named after the last word of its path)."""
    import click

    from .commands import get_ctx, json_option, operation_options

    def callback(**kwargs: Any) -> None:
        ctx = get_ctx()
        raw: dict[str, Any] = {}
        for p in action.params:
            value = kwargs.get(p.name)
            if isinstance(value, tuple):
                value = list(value) or None
            if p.secret and value is not None:
                value = _read_secret_value(p, str(value))
            raw[p.name] = value
        checked = action.validate(raw)
        if ctx.remote is not None:  # parsed and checked here, run on the node's rpcd
            from .rpcd.client import run_remote

            raise click.exceptions.Exit(run_remote(ctx, action, raw))
        result = run(ctx, action, checked)
        if action.query is not None:  # the next run of it may skip click (quickquery.py)
            from .querycache import remember

            remember(action, _words(click.get_current_context()))
        exit_with(result)

    params: list[click.Parameter] = []
    for p in action.params:
        ptype: Any = None
        if p.type == "choice":
            ptype = click.Choice(p.choices, case_sensitive=p.case_sensitive)
        elif p.type == "int" and (p.minimum is not None or p.maximum is not None):
            ptype = click.IntRange(None if p.minimum is None else int(p.minimum),
                                   None if p.maximum is None else int(p.maximum))
        elif p.type == "float" and (p.minimum is not None or p.maximum is not None):
            ptype = click.FloatRange(p.minimum, p.maximum)
        elif p.type == "path":
            ptype = click.Path(dir_okay=True)
        elif p.type in ("duration", "size"):  # "3s", "1.5GiB": never FLOAT/INT from a default
            ptype = click.STRING
        if p.positional:
            params.append(click.Argument([p.name], required=p.required, type=ptype,
                                         nargs=-1 if p.type == "list" else 1))
        elif p.type == "bool":
            params.append(click.Option([*([p.short] if p.short else []), p.option, p.name],
                                       is_flag=True, default=None, help=p.help))
        else:
            metavar = p.metavar or ("FILE" if p.secret else p.type.upper())
            extra = " (a file, or - for stdin; never the value itself)" if p.secret else ""
            params.append(click.Option(
                [*([p.short] if p.short else []), p.option, p.name], type=ptype,
                required=p.required and not p.secret,
                multiple=p.type == "list", metavar=metavar, help=p.help + extra,
                show_default=not p.required and p.default not in (None, False),
                default=None if p.required else (None if p.default is None else p.default)))
    fn: Any = callback
    if action.journalled:
        fn = operation_options(action.op_kind, destructive=action.destructive)(fn)
    fn = json_option(fn)
    # click's option decorators store their params in reverse order of application
    cmd = click.Command(name or action.path.rsplit(".", 1)[1], callback=fn,
                        params=params + list(reversed(getattr(fn, "__click_params__", []))),
                        help=_help(action), short_help=action.summary)
    cmd.debvisor_action = action.path  # type: ignore[attr-defined]  # --remote runs only these
    return cmd


def attach(group: click.Group, actions: list[Action], *, strip: int = 1) -> click.Group:
    """Add a command for each action to ``group``, making sub-groups for the middle words
    of its path (``example.note.add`` → ``example note add`` with ``strip=1``). In a
    :class:`~debvisor_core.lazygroup.LazyGroup` each command is generated when first asked
    for, so ``WORD --help`` stays cheap."""
    import click

    from .lazygroup import LazyGroup

    for action in actions:
        words = action.path.split(".")[strip:]
        g = group
        for w in words[:-1]:
            sub = g.commands.get(w)
            if not isinstance(sub, click.Group):
                sub = (LazyGroup if isinstance(g, LazyGroup) else click.Group)(
                    w, help=f"{w} commands.")
                g.add_command(sub)
            g = sub
        if isinstance(g, LazyGroup):
            g.pending[words[-1]] = (action.summary.strip(), _factory(action, words[-1]))
        else:
            g.add_command(command(action, words[-1]))
    return group


def _factory(action: Action, name: str) -> Callable[[], click.Command]:
    return lambda: command(action, name)
