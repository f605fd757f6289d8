"""`debvisor dns …`: update, delete, show, check. dnspython is imported per command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from debvisor_core import log
from debvisor_core.commands import json_option, operation_options, pass_ctx
from debvisor_core.context import Context
from debvisor_core.errors import BadInput, DebvisorError

from .config import TYPES
from .config import load as load_config

_TYPE = click.Choice(TYPES, case_sensitive=False)


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


def _print_result(res: Any) -> None:
    from debvisor_core.output import table

    rep = (res.result or {}).get("dns", {})
    for a in rep.get("attempts", []):
        if a["result"] != "NOERROR":
            print(f"primary {a['server']}: {a['result']} ({a['ms']:.0f} ms)")
    for zone, server in rep.get("primaries", {}).items():
        print(f"zone {zone.rstrip('.')}: primary {server} took the change")
    if rep.get("propagation"):
        print("propagation (time from the UPDATE's answer):")
        rows = [{**r, "ms": f"{r['ms']:.1f} ms"} for r in rep["propagation"]]
        print(table(rows, [("zone", "ZONE"), ("server", "SERVER"), ("ms", "TIME"),
                           ("serial", "SERIAL"), ("dnssec", "DNSSEC")]))


def _run(ctx: Context, op: Any, changes_text: list[str]) -> None:
    from debvisor_core.engine import execute

    def human(res: Any) -> None:
        for line in changes_text:
            print(line)
        _print_result(res)

    execute(ctx, op, human=human)


@dns_group.command("update")
@click.argument("name", required=False)
@click.argument("value", required=False)
@click.option("--type", "rdtype", type=_TYPE, help="Record type (default: A/AAAA from the value).")
@click.option("--ttl", type=click.IntRange(1, 2**31 - 1),
              help="TTL in seconds (default: the record's current TTL, else [dns] default_ttl).")
@click.option("--zone", help="Zone of NAME (default: from NAME, or [dns] vm_zone).")
@click.option("--with-ptr", is_flag=True, help="Also set the PTR in the configured reverse zone.")
@click.option("--no-wait-ttl", is_flag=True,
              help="When lowering the TTL, do not wait the old TTL out before the value changes.")
@click.option("--batch", "batch", type=click.Path(dir_okay=False, path_type=Path),
              help="Apply every change in FILE as one operation (see README for the format).")
@click.option("--timeout", type=click.FloatRange(0.1), help="Propagation timeout in seconds.")
@json_option
@operation_options("dns.update")
@pass_ctx
def update(ctx: Context, name: str | None, value: str | None, rdtype: str | None,
           ttl: int | None, zone: str | None, with_ptr: bool, no_wait_ttl: bool,
           batch: Path | None, timeout: float | None) -> None:
    """Set NAME's TYPE record to VALUE (replacing the RRset), verified on every server.

    The plan shows old → new; the UPDATE carries the old records as prerequisites, so
    a concurrent change is never overwritten silently. When --ttl is lower than the
    record's TTL, the TTL is lowered first and the old TTL waited out.

    \b
    Example:
      debvisor dns update vm-name 192.168.1.100 --yes
      debvisor dns update web --type CNAME vm-name --zone lab.debvisor.test
      debvisor dns update vm-name 192.168.1.101 --ttl 60 --with-ptr --dry-run
      debvisor dns update --batch changes.txt --yes
      debvisor dns update --rollback --yes
    """
    from . import plan

    cfg = load_config(ctx)
    if batch is not None:
        if name or value or rdtype or ttl or with_ptr:
            raise BadInput("--batch takes the changes from the file; give no NAME, VALUE, "
                           "--type, --ttl or --with-ptr")
        op = plan.plan_batch(cfg, batch, zone)
    else:
        if not name or value is None:
            raise BadInput("give NAME and VALUE (or --batch FILE)")
        op = plan.plan_update(cfg, name, value, rdtype, ttl, zone, with_ptr=with_ptr,
                              wait_ttl=not no_wait_ttl)
    _execute(ctx, op, timeout)


def _execute(ctx: Context, op: Any, timeout: float | None) -> None:
    from .records import describe_change
    from .steps import AwaitPropagation

    if op is None:
        ctx.emit({"status": "unchanged"}, "nothing to change: the records are already so")
        return
    for step in op.steps:
        if isinstance(step, AwaitPropagation) and timeout:
            step.timeout = timeout
    lines = [describe_change(c) for c in op.params["changes"]]
    _run(ctx, op, lines[:20] + ([f"... and {len(lines) - 20} more"] if len(lines) > 20 else []))


@dns_group.command("delete")
@click.argument("name")
@click.option("--type", "rdtype", type=_TYPE, help="Only this type (default: every RRset of NAME).")
@click.option("--zone", help="Zone of NAME (default: from NAME, or [dns] vm_zone).")
@click.option("--with-ptr", is_flag=True, help="Also delete PTRs that name only NAME.")
@click.option("--timeout", type=click.FloatRange(0.1), help="Propagation timeout in seconds.")
@json_option
@operation_options("dns.delete", destructive=True)
@pass_ctx
def delete(ctx: Context, name: str, rdtype: str | None, zone: str | None, with_ptr: bool,
           timeout: float | None) -> None:
    """Delete NAME's records (all of them, or one --type), verified on every server.

    \b
    Example:
      debvisor dns delete vm-name --type A --yes
      debvisor dns delete vm-name --with-ptr --dry-run
      debvisor dns delete --rollback --yes
    """
    from . import plan

    cfg = load_config(ctx)
    _execute(ctx, plan.plan_delete(cfg, name, rdtype, zone, with_ptr=with_ptr), timeout)


@dns_group.command("show")
@click.argument("name")
@click.option("--type", "rdtype", type=_TYPE, help="Only this type (default: every type).")
@click.option("--zone", help="Zone of NAME.")
@json_option
@pass_ctx
def show(ctx: Context, name: str, rdtype: str | None, zone: str | None) -> None:
    """Show NAME's answer and the zone serial from every server, flagging disagreement.

    \b
    Example:
      debvisor dns show vm-name
      debvisor dns show 10.77.0.53 --type PTR --json
    """
    from . import checks
    from .records import resolve

    cfg = load_config(ctx)
    z, fqdn = resolve(cfg, name, zone, rdtype.upper() if rdtype else None)
    data = checks.show(cfg, z, fqdn, rdtype.upper() if rdtype else None)
    ctx.emit(data, lambda d: print(checks.show_text(d)))
    if not data["agree"]:
        log.warn(f"the servers of {z.name} disagree about {fqdn}")


@dns_group.command("check")
@click.argument("zone", required=False)
@json_option
@pass_ctx
def check(ctx: Context, zone: str | None) -> None:
    """Check zones: servers answer, serials agree, TSIG works, DNSSEC valid and not expiring.

    Exit status 1 when a zone is critical.

    \b
    Example:
      debvisor dns check
      debvisor dns check lab.debvisor.test --json
    """
    from . import checks

    cfg = load_config(ctx)
    zones = [cfg.zone(zone)] if zone else list(cfg.zones.values())
    results = [checks.check_zone(cfg, z) for z in zones]
    status = max((r["status"] for r in results), key=checks.LEVELS.__getitem__, default="ok")
    ctx.emit({"status": status, "zones": results}, lambda d: print(checks.check_text(d["zones"])))
    if status == "crit":
        raise DebvisorError(f"DNS check: {sum(r['status'] == 'crit' for r in results)} zone(s) "
                            "critical")
