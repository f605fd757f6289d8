"""The ``grpc`` transport of ``RemoteAction``: a node's rpcd instead of ssh.

``[cluster.nodes.NODE] transport = "grpc"`` (``address``, else ``[rpcd.nodes.NODE]
address``, else ``NODE:7443``); the caller's certificate and keys come from
``[rpcd.client]``. The step's three commands map onto the node's API: ``actions run
ACTION -`` (``Invoke``, with the step's ``--origin``, journalled with the node's
operation), ``ops rollback ID`` (``Invoke`` of ``ops.rollback``) and ``ops list --origin O``
(``Call`` of ``ops.list``: a query, one unary call); ``RebootAndVerify``'s two map too:
``upgrade status [--for-operation T]`` (``Call``) and ``--yes upgrade reboot
[--for-operation T]`` (``Invoke``). The node's events come back as the JSON result,
``[ERROR]`` lines and the exit code the ssh and local transports return — 255 when the
node was lost (UNAVAILABLE: unreachable, or gone down for its reboot), as ssh says it.
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
        lead_yes = rest[:1] == ["--yes"]  # `--yes upgrade reboot`: the reboot step's form
        if lead_yes:
            rest = rest[1:]
        if rest[:2] in (["upgrade", "status"], ["upgrade", "reboot"]):  # the reboot step's
            tag = _value(rest, "--for-operation")
            params = json.dumps(({"for_operation": tag} if tag is not None else {})
                                | ({"if_needed": True} if "--if-needed" in rest else {}))
            action, yes, origin = f"upgrade.{rest[1]}", lead_yes, ""
            query = rest[1] == "status"
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
                if ev.get("rpc_status") == "UNAVAILABLE":
                    code = 255  # the node was lost (ssh's code for it): a reboot, or unreachable
        out = json.dumps(result) if result is not None else ""
        return code, out, "\n".join(errors)
