"""The ``grpc`` transport of ``RemoteAction``: a node's rpcd instead of ssh.

``[cluster.nodes.NODE] transport = "grpc"`` (``address``, else ``[rpcd.nodes.NODE]
address``, else ``NODE:7443``); the caller's certificate and keys come from
``[rpcd.client]``. The step's commands map onto the node's API: ``actions run
ACTION -`` (``Invoke``, with the step's ``--origin``, journalled with the node's
operation), ``ops rollback ID`` (``Invoke`` of ``ops.rollback``) and ``ops list --origin O``
(``Call`` of ``ops.list``: a query, one unary call); ``RebootAndVerify``'s two too:
``upgrade status [--for-operation T]`` (``Call``) and ``--yes upgrade reboot
[--for-operation T] [--if-needed]`` (``Invoke``); anything else is exit 2. A step's
``--force-maintenance`` is ``Invoke``'s ``force_maintenance`` (the caller needs
``maintenance.disable`` there). The node's events come back as the JSON result,
``[ERROR]`` lines and the exit code the ssh and local transports return — 255, as ssh
says it, when a call the node had admitted was cut (UNAVAILABLE, or its deadline): the
node went away running it, as for a reboot; a refused call keeps its own code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..context import Context
    from .client import Client


def _value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args[:-1] else None


def _upgrade_options(args: list[str], reboot: bool) -> dict[str, Any] | None:
    """``upgrade status``'s or ``upgrade reboot``'s options as the action's parameters, or
    None for anything else (what ssh's debvisor would refuse as a usage error)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        if args[i] == "--for-operation" and i + 1 < len(args) and not args[i + 1].startswith("-"):
            out["for_operation"] = args[i + 1]
            i += 2
        elif args[i] == "--if-needed" and reboot:
            out["if_needed"] = True
            i += 1
        else:
            return None
    return out


@dataclass
class GrpcTransport:
    node: str
    client: Client

    @classmethod
    def for_node(cls, ctx: Context, node: str, conf: dict[str, Any]) -> GrpcTransport:
        from .client import Client, node_address

        address = str(conf.get("address") or node_address(ctx, node))
        return cls(node, Client.from_config(ctx.section("rpcd").get("client") or {},
                                            address=address))

    def run(self, args: list[str], stdin: str | None, timeout: float) -> tuple[int, str, str]:
        origin = _value(args, "--origin") or ""
        rest = [a for a in args if a != "--json"]
        if "--origin" in rest[:2]:
            rest = rest[2:]
        query = False
        reboot = rest[:3] == ["--yes", "upgrade", "reboot"]  # the reboot step's two commands
        opts = _upgrade_options(rest[3:], True) if reboot else \
            _upgrade_options(rest[2:], False) if rest[:2] == ["upgrade", "status"] else None
        if opts is not None:
            action = "upgrade.reboot" if reboot else "upgrade.status"
            params, yes, origin, query = json.dumps(opts), reboot, "", not reboot
        elif rest[:2] == ["actions", "run"] and len(rest) >= 3:
            action, params, yes = rest[2], stdin or "{}", "--yes" in rest
        elif rest[:2] == ["ops", "rollback"] and len(rest) >= 3:
            action, params, yes = "ops.rollback", json.dumps({"id": rest[2]}), True
            origin = ""
        elif rest[:2] == ["ops", "list"]:
            limit = _value(rest, "--limit")
            action, yes, origin_filter = "ops.list", False, _value(rest, "--origin")
            params = json.dumps({"origin": origin_filter,
                                 "limit": int(limit) if limit and limit.isdigit() else None})
            origin, query = "", True
        else:
            return 2, "", f"[ERROR] the grpc transport cannot run `{' '.join(rest)[:80]}`"
        result: Any = None
        errors: list[str] = []
        code = 0
        events = self.client.call(action, params, timeout=timeout, origin=origin) if query \
            else self.client.invoke(action, params, yes=yes, timeout=timeout, origin=origin,
                                    force_maintenance="--force-maintenance" in rest)
        for ev in events:
            kind = ev.get("event")
            if kind == "result":
                result = ev.get("result")
            elif kind == "log" and ev.get("level") == "error":
                errors.append(f"[ERROR] {ev.get('message')}")
            elif kind == "exit":
                code = int(ev.get("code") or 0)
                if ev.get("admitted") and ev.get("rpc_status") in ("UNAVAILABLE",
                                                                   "DEADLINE_EXCEEDED"):
                    code = 255  # the node was lost running it (ssh's code): say a reboot
        out = json.dumps(result) if result is not None else ""
        return code, out, "\n".join(errors)
