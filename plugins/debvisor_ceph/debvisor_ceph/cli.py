"""`debvisor ceph …` (alias `cephctl`): the groups. Their commands (status, osd list,
osd ok-to-stop, pool capacity, pg balance, alerts, noout set/unset, maintenance-plan,
join) are generated from the declarations in actions.py; python-rados is imported only
when one runs."""

from __future__ import annotations

import click

from debvisor_core.actions import attach

from .actions import ACTIONS


@click.group("ceph")
def ceph() -> None:
    """Ceph cluster operations over python-rados (alias `cephctl`).

    \b
    Example:
      debvisor ceph status
      cephctl osd list --json
      cephctl pool capacity --growth 20GiB/day
      cephctl noout set --reason "kernel upgrade" --yes
    """


# The sub-groups keep their own help; attach() adds the commands to them.
@ceph.group("osd")
def osd() -> None:
    """OSDs: list with suggestions, ok-to-stop.

    \b
    Example:
      cephctl osd list
      cephctl osd ok-to-stop 3 4
    """


@ceph.group("pool")
def pool() -> None:
    """Pools: capacity planning.

    \b
    Example:
      cephctl pool capacity
    """


@ceph.group("pg")
def pg() -> None:
    """Placement groups: balance report and fixes.

    \b
    Example:
      cephctl pg balance
    """


@ceph.group("noout")
def noout() -> None:
    """Set or unset the cluster-wide noout flag (as an operation with rollback).

    \b
    Example:
      cephctl noout set --reason "rack 2 power work" --yes
      cephctl noout unset --yes
    """


attach(ceph, ACTIONS)
