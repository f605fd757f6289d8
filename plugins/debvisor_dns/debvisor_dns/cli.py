"""`debvisor dns …`: the group. Its commands (update, delete, show, check) are generated
from the declarations in actions.py; dnspython is imported only when one runs."""

from __future__ import annotations

import click

from debvisor_core.actions import attach

from .actions import ACTIONS


@click.group("dns")
def dns_group() -> None:
    """DNS records by RFC 2136 UPDATE (TSIG), with propagation proof and rollback.

    \b
    Example:
      debvisor dns update vm1 10.77.0.10 --yes
      debvisor dns show vm1
      debvisor dns check
      debvisor dns update --rollback --yes
    """


attach(dns_group, ACTIONS)
