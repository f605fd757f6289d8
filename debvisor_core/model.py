"""The operation model: Step, Finding, Phase, Operation, OpResult and the step registry.

This is the bottom layer of the core: it imports nothing above it (no engine, no
journal, no output). A step class declares a stable ``TYPE`` (``"hv.snapshot.create"``)
and a ``VERSION``; the journal stores ``TYPE@VERSION`` and its parameters, and a
later ``ops rollback`` finds the class in the registry of steps that installed
plugins declare (hook ``debvisor_step_types``). Nothing is imported because a
journal names it, so moving or renaming a class never breaks an old journal.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import DebvisorError

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context

#: TYPE -> class, for every step class that declares its own TYPE
_BY_TYPE: dict[str, type[Step]] = {}
#: "module:qualname" -> class, for every step class imported (legacy journals)
_BY_QUALNAME: dict[str, type[Step]] = {}

TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+$")
_TYPED_RE = re.compile(r"^(?P<type>[a-z][a-z0-9_-]*(?:\.[a-z0-9_-]+)+)@(?P<version>[0-9]{1,4})$")
_LEGACY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class UnknownStep(DebvisorError):
    """A journal names a step type that no installed plugin declares."""

    exit_code = 3


@dataclass
class Finding:
    """A preflight result. ``level`` is error, warn or info; an error refuses the
    operation unless ``override`` names an option the operator gave."""

    level: str
    message: str
    source: str = ""
    override: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Step:
    """One undoable change. Subclass it as a ``@dataclass``; the fields are its params.

    Class attributes (upper case, so they never clash with a field):

    - ``TYPE``: the stable registered name (``"plugin.thing"``) the journal stores;
    - ``VERSION``: bump it when the params change, and override :meth:`upgrade`;
    - ``NAME``: shown in logs and used by fault injection (default: the class name);
    - ``ORDER``: places contributed steps (the owner's steps are 50);
    - ``DESTRUCTIVE``: the step needs confirmation.

    ``undo`` must be idempotent: it also runs for a step interrupted mid-apply, with
    ``record`` holding only the snapshot and ``record["_partial"] = True``. An undo
    that cannot restore must raise (the rollback is then incomplete, exit 5).
    """

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    NAME: ClassVar[str] = ""
    ORDER: ClassVar[int] = 50
    DESTRUCTIVE: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _BY_QUALNAME[f"{cls.__module__}:{cls.__qualname__}"] = cls
        own = cls.__dict__.get("TYPE")
        if own:
            if not TYPE_RE.match(own):
                raise ValueError(f"step {cls.__qualname__}: TYPE {own!r} is not 'plugin.name'")
            _BY_TYPE[own] = cls

    @property
    def step_name(self) -> str:
        return self.NAME or type(self).__name__

    @classmethod
    def step_type(cls) -> str:
        """``TYPE@VERSION`` (or ``module:qualname`` for a class without its own TYPE)."""
        own = cls.__dict__.get("TYPE")
        return f"{own}@{cls.VERSION}" if own else f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def upgrade(cls, version: int, params: dict[str, Any]) -> dict[str, Any]:
        """Turn params journalled by ``version`` of this step into today's."""
        if version != cls.VERSION:
            raise UnknownStep(f"step {cls.TYPE}@{version} was journalled by another version of its "
                              f"plugin (this one has @{cls.VERSION}) and cannot be rebuilt")
        return params

    def describe(self, ctx: Context) -> str:
        """One line for the plan."""
        return self.step_name

    def check(self, ctx: Context) -> list[Finding] | None:
        """Findings about this step's preconditions (raise StepFailed for one error)."""
        return None

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        """Capture the prior state needed to undo; journalled before ``apply``."""
        return {}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any] | None:
        """Make the change; return extra data for the undo record."""
        raise NotImplementedError

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Restore the prior state from ``record`` (snapshot + apply's data)."""

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        """Raise :class:`StepFailed` if the change did not take effect."""

    def add_result(self, ctx: Context, record: dict[str, Any]) -> None:
        """Add what this step has to say to the operation's result (``ctx.operation.result``),
        from its ``record`` alone: called once the record is journalled (before ``verify``)
        and again, when the operation is resumed, for each step verified before — so a
        resumed operation's result covers the steps of every run."""

    # -- serialisation -------------------------------------------------------
    def params(self) -> dict[str, Any]:
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return {}

    def to_json(self, ctx: Context) -> dict[str, Any]:
        return {
            "name": self.step_name,
            "type": self.step_type(),
            "params": self.params(),
            "description": self.describe(ctx),
            "order": self.ORDER,
        }


def parse_step_type(type_name: str) -> tuple[str, int | None]:
    """``("hv.snapshot.create", 1)`` for a typed name, ``(module:qualname, None)`` for a
    legacy one; anything else is refused."""
    m = _TYPED_RE.match(type_name or "")
    if m:
        return m["type"], int(m["version"])
    if _LEGACY_RE.match(type_name or "") and len(type_name) <= 200:
        return type_name, None
    raise UnknownStep(f"the journal names a step type that is not a step name: {type_name[:80]!r}")


def registered(type_name: str) -> type[Step] | None:
    """The class registered for ``TYPE`` or legacy ``module:qualname`` (no import)."""
    name, version = parse_step_type(type_name)
    return _BY_TYPE.get(name) if version is not None else _BY_QUALNAME.get(name)


def registry() -> dict[str, type[Step]]:
    """Every registered step TYPE and its class."""
    return dict(_BY_TYPE)


def build_step(type_name: str, params: Any) -> Step:
    """Rebuild a journalled step from a registered class (never imports anything)."""
    cls = registered(type_name)
    name, version = parse_step_type(type_name)
    if cls is None:
        raise UnknownStep(f"step type {name} is not declared by any installed plugin")
    if not isinstance(params, dict):
        raise UnknownStep(f"step {name}: the journalled parameters are not an object")
    if version is not None:
        try:
            params = cls.upgrade(version, dict(params))
        except UnknownStep:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's upgrade() on untrusted data
            raise UnknownStep(f"step {name}: its journalled parameters cannot be upgraded: "
                              f"{type(exc).__name__}: {exc}") from None
    if dataclasses.is_dataclass(cls):
        allowed = {f.name for f in dataclasses.fields(cls) if f.init}
        extra = sorted(set(params) - allowed)
        if extra:
            raise UnknownStep(f"step {name}: the journal has parameters this version does not "
                              f"know: {', '.join(extra[:5])}")
    try:
        return cls(**params)
    except Exception as exc:  # noqa: BLE001 - a step's __init__/__post_init__ on untrusted data
        raise UnknownStep(f"step {name}: the journalled parameters do not fit: {exc}") from None


#: failure policies of a phase
ROLLBACK_ALL = "rollback-all"
ROLLBACK_PHASE_AND_PAUSE = "rollback-phase-and-pause"
PAUSE = "pause"
POLICIES = (ROLLBACK_ALL, ROLLBACK_PHASE_AND_PAUSE, PAUSE)
#: gates after a phase
GATE_AUTO = "auto"
GATE_PAUSE = "pause"


@dataclass
class Phase:
    """A group of steps (often one node's) with a failure policy and a gate after it.

    ``on_failure``: ``rollback-all`` (undo the whole operation), ``rollback-phase-and-pause``
    (undo this phase only and pause: ``ops resume`` retries it, ``ops rollback`` undoes
    the rest) or ``pause`` (undo nothing and pause). ``gate``: ``auto`` (go on) or
    ``pause`` (stop after this phase until ``ops resume ID``). A gate that must check
    something is a step of its own at the end of the phase.
    """

    name: str
    steps: list[Step]
    node: str | None = None
    on_failure: str = ROLLBACK_ALL
    gate: str = GATE_AUTO
    #: the nodes the phase works on (for contributed gates; ``node`` is the one of a
    #: single-node phase)
    nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.on_failure not in POLICIES:
            raise ValueError(f"phase {self.name}: on_failure must be one of {', '.join(POLICIES)}")
        if self.gate not in (GATE_AUTO, GATE_PAUSE):
            raise ValueError(f"phase {self.name}: gate must be auto or pause")

    def to_json(self, first: int) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "on_failure": self.on_failure,
                "gate": self.gate, "first": first, "count": len(self.steps),
                "nodes": list(self.nodes)}


@dataclass
class Operation:
    """A state change made of steps (or of phases of steps). ``kind`` is ``plugin.action``.

    ``target`` names what the operation changes (``{"vm": "vm1"}``): ``--rollback``
    undoes only the last operation of the same kind on the same target.
    """

    kind: str
    title: str
    steps: list[Step] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    destructive: bool = False
    locks: list[str] = field(default_factory=list)
    id: str = ""
    rollback_of: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    target: dict[str, Any] | None = None
    #: in-process state steps share during one run (never journalled or printed)
    scratch: dict[str, Any] = field(default_factory=dict, repr=False)
    #: whether other plugins' ``debvisor_steps`` / ``debvisor_phase_steps`` are added when
    #: it is planned (False: the owner composed it from them itself, as `join` does)
    contributions: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        if self.phases:
            if self.steps:
                raise ValueError("an operation has either steps or phases")
            self.steps = [s for p in self.phases for s in p.steps]

    @property
    def lock_names(self) -> list[str]:
        return self.locks or [self.kind]

    def phase_of(self, index: int) -> int | None:
        """The index of the phase that holds step ``index`` (None without phases)."""
        n = 0
        for k, p in enumerate(self.phases):
            n += len(p.steps)
            if index < n:
                return k
        return None

    def phase_range(self, k: int) -> range:
        first = sum(len(p.steps) for p in self.phases[:k])
        return range(first, first + len(self.phases[k].steps))


@dataclass
class OpResult:
    """What running, rolling back or resuming an operation returned (its JSON shape)."""

    id: str
    kind: str
    title: str
    status: str
    steps: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    duration_ms: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
