# mypy: disable-error-code="empty-body"
"""Every hook a DebVisor plugin can implement: the plugin API.

Implement a hook with ``@debvisor_core.hookimpl`` on a function of the same name in
the module your entry point names. ``docs/plugins.md`` documents each hook with an
example; a test fails when a hook here has no entry there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from . import PROJECT

if TYPE_CHECKING:  # pragma: no cover
    from contextlib import AbstractContextManager

    import click

    from .actions import Action
    from .bundle import DiagnosticsBundle
    from .context import Context
    from .firstboot import Module as FirstbootModule
    from .health import HealthCheck
    from .lab import LabService
    from .model import Finding, Operation, Phase, Step

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def debvisor_commands() -> click.Command | list[click.Command]:
    """Return the plugin's click group, named after its entry point (its word).

    Called only when the plugin's word is typed (``debvisor WORD …``) or when every
    command is listed (``--help`` of each command, completion).
    """


@hookspec
def debvisor_preflight(ctx: Context, op: Operation) -> list[Finding] | None:
    """Inspect an operation before it runs; return findings.

    A finding with ``level="error"`` refuses the operation (exit 3) unless the
    operator overrides it where the finding allows (``--force-maintenance``).
    Runs for ``--check``, ``--dry-run`` and real runs.
    """


@hookspec(firstresult=True)
def debvisor_execute(ctx: Context, op: Operation, step: Step, prior: dict[str, Any]) -> Any:
    """Apply one step and return its undo record (a JSON-able dict).

    The core's implementation calls ``step.apply(ctx, prior)``. Implement it with
    ``@hookimpl(wrapper=True)`` to wrap every step: timing, progress, fault
    injection. ``prior`` is what ``step.snapshot(ctx)`` captured before the apply.
    """


@hookspec(firstresult=True)
def debvisor_rollback(ctx: Context, op: Operation, step: Step, record: dict[str, Any]) -> Any:
    """Undo one applied step from its journalled record.

    The core's implementation calls ``step.undo(ctx, record)``. Wrap it
    (``wrapper=True``) to observe or delay undo; the engine, not the hook chain,
    decides what to undo and in which order.
    """


@hookspec
def debvisor_steps(ctx: Context, op: Operation) -> list[Step] | None:
    """Contribute steps to another plugin's operation (join, upgrade, register…).

    Look at ``op.kind`` and ``op.params`` and return steps to add, or nothing. Each
    step class's ``ORDER`` places it: the owner's steps have order 50, so 10 runs before
    them and 90 after.
    """


@hookspec
def debvisor_phase_steps(ctx: Context, op: Operation, phase: Phase) -> list[Step] | None:
    """Contribute steps to the start of each phase of another plugin's phased operation
    (a rolling upgrade's batch): a gate such as Ceph's ok-to-stop for the phase's nodes
    (``phase.nodes``). A failing step fails the phase under its own failure policy.
    (``debvisor_steps`` contributions to a phased operation go into a first phase, ORDER
    below 50, or a last one: noout set once before every node and unset after them.)
    """


@hookspec
def debvisor_actions() -> list[Action] | None:
    """Return the plugin's actions, each declared once as data (:class:`~debvisor_core.actions.Action`).

    The CLI commands (``debvisor_core.actions.attach``), ``debvisor actions list|show|run``
    and the daemon's method table are generated from these declarations.
    """


@hookspec
def debvisor_step_types() -> list[type[Step]] | None:
    """Return every Step class the plugin's operations journal (each with its own ``TYPE``).

    ``ops rollback`` and ``ops resume`` rebuild journalled steps only from classes
    declared here: a journal names a registered ``TYPE@VERSION``, never a module to
    import. Import the modules that define the steps inside this function.
    """


@hookspec
def debvisor_health(ctx: Context) -> list[HealthCheck] | None:
    """Return health checks; ``debvisor health`` runs all of them concurrently.

    Each check has a name, a callable ``fn(ctx) -> CheckResult`` and a timeout.
    """


@hookspec
def debvisor_upgrade_checks(ctx: Context) -> list[HealthCheck] | None:
    """Return pre-upgrade checks (`debvisor upgrade check`, pve8to9-style): each ``fn(ctx)``
    returns a :class:`~debvisor_core.health.CheckResult` whose status is ``pass``, ``warn``,
    ``fail`` or ``skip`` (does not apply to this node); raising or timing out is ``fail``.
    """


@hookspec
def debvisor_firstboot_modules(ctx: Context) -> list[FirstbootModule] | None:
    """Return first-boot modules (`debvisor firstboot run`): each a
    :class:`~debvisor_core.firstboot.Module` with a name that orders it (``03-ceph``), a
    ``run(ctx)`` returning one line, and optionally ``applies(ctx)`` (None, or why it is
    skipped) and the node ``roles`` it is for.
    """


@hookspec
def debvisor_audit(ctx: Context, event: dict[str, Any]) -> None:
    """Receive every audit record (a sink) after the core wrote it to its hash chain.

    ``event`` is the chained record: ``seq``, ``prev`` and ``hash`` included, so a sink
    can anchor the chain elsewhere (syslog, the Ceph plugin's RADOS omap). The core's
    own file sink runs first and its failure refuses the change; a sink that raises
    here only produces a warning.
    """


@hookspec
def debvisor_lab_services() -> list[LabService] | None:
    """Return real services to start locally for ``debvisor lab up`` and the tests."""


@hookspec
def debvisor_diagnostics(ctx: Context, bundle: DiagnosticsBundle) -> None:
    """Add files and command outputs to ``debvisor health --collect-diagnostics``.

    Use ``bundle.add_file(path)``, ``bundle.add_text(name, text)`` and
    ``bundle.add_command(name, argv)``; secrets must not be added.
    """


@hookspec(firstresult=True)
def debvisor_cluster_lock(
    ctx: Context, op: Operation, names: list[str]
) -> AbstractContextManager[Any] | None:
    """Return a context manager that holds a cluster-wide lock for ``names``.

    The first plugin that returns one wins (the Ceph plugin uses a RADOS lock). The
    node-local flock is always taken as well.
    """


@hookspec(firstresult=True)
def debvisor_cluster_lock_admin(ctx: Context) -> Any:
    """Return the cluster lock's administration (for `debvisor cluster lock status|break`):
    an object with ``status() -> list[dict]`` (each lock: ``name`` and ``holders``, each
    holder a dict with at least ``summary``) and ``break_lock(name) -> list[dict]`` (the
    holders it removed; a holder finds out before its next step and stops). The first
    plugin that returns one wins; None when no cluster lock is configured.
    """


@hookspec(firstresult=True)
def debvisor_cluster_maintenance(ctx: Context) -> Any:
    """Return the cluster-wide maintenance store (first result wins; None: maintenance is
    this node's own): an object with ``get(node) -> dict | None``, ``put(node, record |
    None)`` and ``all() -> dict[str, dict]``. With one, `maintenance enable --node B` on
    node A puts B in maintenance, and B's preflight refuses its operations.
    """


@hookspec
def debvisor_vm_registered(ctx: Context, vm: dict[str, Any]) -> list[Step] | None:
    """A VM is being registered in the inventory (``hv register``): return steps to add.

    ``vm`` has ``name``, ``node``, ``owner``, ``role``, ``tags`` and ``addresses``.
    The steps run inside the registration operation (and are undone with it): the
    DNS plugin adds the VM's record this way.
    """


@hookspec
def debvisor_vm_unregistered(ctx: Context, vm: dict[str, Any]) -> list[Step] | None:
    """A VM is being removed from the inventory (``hv unregister``): return steps to add."""
