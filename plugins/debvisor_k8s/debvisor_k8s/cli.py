"""`debvisor k8s …` (alias `k8sctl`): the group, the commands generated from actions.py,
and `logs`, which streams. Light on purpose: `k8s --help` imports only click and the
declarations; the ``kubernetes`` client is imported when a command talks to the API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from debvisor_core.actions import attach, parse_duration
from debvisor_core.lazygroup import LazyGroup

from .actions import ACTIONS

if TYPE_CHECKING:  # pragma: no cover
    from debvisor_core.context import Context


@click.group("k8s", cls=LazyGroup)
def k8s() -> None:
    """Kubernetes: nodes, workloads, logs, debug, addons, labels, taints, drain.

    The kubeconfig comes from [k8s] kubeconfig, KUBECONFIG, ~/.kube/config or the
    in-cluster service account. `k8sctl ...` is the same as `debvisor k8s ...`.

    \b
    Example:
      k8sctl nodes
      k8sctl workloads -A
      k8sctl logs web-0 -f --since 10m
      k8sctl debug node/worker2
      k8sctl addon enable monitoring --dry-run
      k8sctl drain worker2 --timeout 10m --yes
    """


@k8s.group("addon", cls=LazyGroup)
def addon() -> None:
    """Addons: manifest sets applied by server-side apply, with the diff shown first.

    Shipped: metrics-server, monitoring, ingress; a site adds its own in [k8s] addon_dirs.

    \b
    Example:
      k8sctl addon list
      k8sctl addon enable monitoring --dry-run
      k8sctl addon status metrics-server
    """


attach(k8s, ACTIONS)

LOGS_SUMMARY = "Print a pod's log; -f streams it as it is written"
LOGS_HELP = f"""{LOGS_SUMMARY}.

A pod with several containers needs -c (the error lists them).

\b
Example:
  k8sctl logs web-0
  k8sctl logs web-0 -c sidecar --tail 50
  k8sctl logs web-0 -f --since 10m
  k8sctl logs web-0 --previous --json
"""


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} {exc}", param_hint="'--since'") from None


def logs(ctx: Context, pod: str, namespace: str | None, container: str | None, follow: bool,
         since: str | None, tail: int | None, previous: bool, timestamps: bool) -> None:
    from .logs import pod_logs

    pod_logs(ctx, pod, namespace, container, follow, _since(since), tail, previous, timestamps)


def logs_command() -> click.Command:
    from debvisor_core.commands import json_option, pass_ctx

    fn: Any = json_option(pass_ctx(logs))
    for deco in reversed([
        click.argument("pod"),
        click.option("-n", "--namespace", help="The pod's namespace (default: the "
                                               "kubeconfig context's)."),
        click.option("-c", "--container", help="The container (needed when there are "
                                               "several)."),
        click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines."),
        click.option("--since", metavar="DURATION", help="Only lines newer than this (10m)."),
        click.option("--tail", type=click.IntRange(0), help="Only the last N lines."),
        click.option("--previous", is_flag=True, help="The previous (crashed) instance's log."),
        click.option("--timestamps", is_flag=True, help="Prefix each line with its time."),
    ]):
        fn = deco(fn)
    return click.command("logs", help=LOGS_HELP, short_help=LOGS_SUMMARY)(fn)


k8s.pending["logs"] = (LOGS_SUMMARY, logs_command)

DEBUG_SUMMARY = "A debug shell in a pod (ephemeral container) or on a node (host pod)"
DEBUG_HELP = f"""{DEBUG_SUMMARY}.

POD: an ephemeral container (default image busybox) is added to the running pod, sharing
the processes of --target, and attached; Kubernetes keeps it, ended, in the pod's spec.
node/NAME: a pod in the node's PID, network and IPC namespaces with the node's root
filesystem at /host, labelled debvisor.io/debug=node and deleted when the session ends
(--keep leaves it; --cleanup deletes every one left behind). The exit code is the
shell's. Audited.

\b
Example:
  k8sctl debug web-0 --target app
  k8sctl debug web-0 --image nicolaka/netshoot -c netdebug
  k8sctl debug node/worker2
  k8sctl debug --cleanup
"""


def debug(ctx: Context, target: str | None, namespace: str | None, image: str,
          container_target: str | None, container: str | None, keep: bool, timeout: str,
          cleanup: bool) -> None:
    from .debug import run

    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise click.BadParameter(f"{timeout!r} {exc}", param_hint="'--timeout'") from None
    code = run(ctx, target, namespace, image, container_target, container, keep, seconds,
               cleanup)
    if code:
        raise click.exceptions.Exit(code)


def debug_command() -> click.Command:
    from debvisor_core.commands import json_option, pass_ctx

    fn: Any = json_option(pass_ctx(debug))
    for deco in reversed([
        click.argument("target", required=False, metavar="POD|node/NAME"),
        click.option("-n", "--namespace", help="The pod's namespace, or where a node's debug "
                                               "pod goes (default: the context's)."),
        click.option("--image", default="busybox", show_default=True,
                     help="The debug container's image."),
        click.option("--target", "container_target", metavar="CONTAINER",
                     help="Share this container's processes (pods only)."),
        click.option("-c", "--container", help="The debug container's name (default: "
                                               "debugger-XXXXX; pods only)."),
        click.option("--keep", is_flag=True, help="Leave a node's debug pod when the session "
                                                  "ends."),
        click.option("--timeout", default="2m", show_default=True, metavar="DURATION",
                     help="How long the debug container may take to start."),
        click.option("--cleanup", is_flag=True, help="Delete every node debug pod left "
                                                     "behind, then exit."),
    ]):
        fn = deco(fn)
    return click.command("debug", help=DEBUG_HELP, short_help=DEBUG_SUMMARY)(fn)


k8s.pending["debug"] = (DEBUG_SUMMARY, debug_command)
