"""`debvisor rpcd`: run the node's gRPC API, manage its CA and API keys, call a node.

Importing this module imports no grpc (``debvisor rpcd --help`` stays cheap, and a node
without the ``rpcd`` extra gets one sentence instead of a traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from .. import hookimpl, log
from ..actions import Action, Param, attach, parse_duration
from ..commands import pass_ctx
from ..context import Context
from ..errors import BadInput
from ..settings import Section


@click.group("rpcd")
def rpcd() -> None:
    """The node's gRPC API (debvisor.v1): every installed action, over mTLS, with API keys,
    OAuth2 tokens, per-method RBAC, rate limits and a blocking call log.

    \b
    Examples:
      debvisor rpcd ca init
      debvisor rpcd ca issue node1 --server --dns node1.example.net --ip 10.0.0.11
      debvisor rpcd ca issue alice --kind user
      debvisor rpcd key create --owner alice --role viewer --ttl 30d
      debvisor rpcd serve --listen 0.0.0.0:7443
      debvisor rpcd call --address node1:7443 hv.list
    """


def _grpc_missing() -> None:
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise BadInput("grpcio is not installed: install debvisor-core[rpcd] to serve or call "
                       "the API") from None


#: grpc core experiments `rpcd serve` turns off: ``event_engine_listener`` (a connection
#: the server accepts is then served by grpc's classic I/O, polled by the thread that
#: waits on the server's completion queue, not handed between the EventEngine's threads
#: and that one: ~40 µs less CPU and ~30 % more calls/s, docs/rpcd.md "What a call costs")
SERVER_EXPERIMENTS = ("-event_engine_listener",)
#: the grpcio versions known to have them ([from, to)): grpc prints an error line at
#: start for an experiment it no longer knows
_EXPERIMENTS_KNOWN = ((1, 58), (1, 90))


def grpc_for_serving() -> None:
    """Import grpc as `rpcd serve` runs it: with :data:`SERVER_EXPERIMENTS` added to the
    environment's ``GRPC_EXPERIMENTS`` (grpc reads it once, at import) unless that names
    the experiment already, for the grpcio versions known to have it; the environment
    is restored afterwards (the daemon's children run grpc's defaults)."""
    if "grpc" in sys.modules:
        return
    given = os.environ.get("GRPC_EXPERIMENTS")
    try:
        from importlib.metadata import version

        have = tuple(int(x) for x in version("grpcio").split(".")[:2])
    except (ImportError, ValueError):
        have = ()
    low, high = _EXPERIMENTS_KNOWN
    named = {n.strip().lstrip("-") for n in (given or "").split(",")}
    apply = low <= have < high and not named & {x.lstrip("-") for x in SERVER_EXPERIMENTS}
    if apply:
        os.environ["GRPC_EXPERIMENTS"] = ",".join(filter(None, (given, *SERVER_EXPERIMENTS)))
    try:
        _grpc_missing()
    finally:
        if apply:
            if given is None:
                del os.environ["GRPC_EXPERIMENTS"]
            else:
                os.environ["GRPC_EXPERIMENTS"] = given


def pki_dir(ctx: Context, given: str | None = None) -> Path:
    """The CA directory: --dir, ``[rpcd] pki_dir``, else STATE/rpcd/pki."""
    return Path(given or ctx.section("rpcd").get("pki_dir") or ctx.state_dir / "rpcd" / "pki")


@rpcd.command("serve")
@click.option("--listen", metavar="ADDR", help="host:port (default [rpcd] listen, 127.0.0.1:7443).")
@click.option("--metrics-listen", metavar="ADDR", help="Prometheus metrics on this host:port.")
@click.option("--insecure-lab", is_flag=True,
              help="Plain text on a loopback address, for the lab only (no TLS, no certificates).")
@click.option("--call-log", type=click.Path(dir_okay=False),
              help="The call log (default LOG_DIR/rpcd-calls.jsonl).")
@click.option("--exec-socket", metavar="PATH",
              help="Run state changes through the executor on this socket (`rpcd exec-serve`; "
                   "default [rpcd] exec_socket, else as children of the daemon).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="The config file to serve (as the global --config; the actions' runs read it).")
@pass_ctx
def serve(ctx: Context, listen: str | None, metrics_listen: str | None, insecure_lab: bool,
          call_log: str | None, exec_socket: str | None, config_file: str | None) -> None:
    """Serve debvisor.v1 in the foreground (what debvisor-rpcd.service runs) until SIGTERM;
    SIGHUP reloads the certificates without dropping the service.

    \b
    Config ([rpcd] in debvisor.toml): listen, ca, cert, key, metrics_listen, rate, burst,
    default_deadline_s, max_operation_s, max_concurrent, max_message_bytes, jwks_file,
    jwt_issuer, jwt_audience, proxies, [rpcd.identities], [rpcd.roles.NAME].
    Environment: GRPC_EXPERIMENTS, to which it adds -event_engine_listener (grpc's classic
    I/O for accepted connections: ~30 % more calls/s) unless it names that experiment.
    \b
    Examples:
      debvisor rpcd serve --config /etc/debvisor/debvisor.toml
      debvisor rpcd serve --listen [::]:7443 --metrics-listen 127.0.0.1:9443
    """
    _use_config(ctx, config_file)
    grpc_for_serving()
    from .server import Daemon, Settings

    settings = Settings.from_context(ctx, listen=listen, insecure_lab=insecure_lab,
                                     metrics_listen=metrics_listen, call_log=call_log,
                                     exec_socket=exec_socket)
    daemon = Daemon(settings, ctx)

    def ready(port: int) -> None:
        mode = "plain text (lab)" if settings.insecure_lab else "mTLS"
        host = settings.listen.rpartition(":")[0]
        log.info(f"rpcd: serving debvisor.v1 on {host}:{port} ({mode}); call log "
                 f"{daemon.calllog.path}")
        print(f"READY {host}:{port}", flush=True)

    daemon.serve(ready)


def _use_config(ctx: Context, config_file: str | None) -> None:
    """A command's own ``--config``: the same as the global one (read now: one clear
    error if it is bad)."""
    if config_file:
        ctx.config_file = ctx.env.config_file = config_file
        ctx.env.config = None
        ctx.config  # noqa: B018


@rpcd.command("exec-serve")
@click.option("--socket", "path", metavar="PATH",
              help="Listen here (mode 0600) instead of on the socket systemd passes.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="The config file the runs read (as the global --config).")
@pass_ctx
def exec_serve(ctx: Context, path: str | None, config_file: str | None) -> None:
    """Run debvisor-rpcd's state changes outside its sandbox, in the foreground (what
    debvisor-rpcd-exec.service runs, started by its socket): one run per connection, only
    for root, only `actions run ACTION -` and `ops rollback ID`, each audited by the
    engine with the caller rpcd sealed. Until SIGTERM, which stops the runs still going
    as Ctrl-C does (they roll back).

    \b
    Examples:
      debvisor rpcd exec-serve --config /etc/debvisor/debvisor.toml     # from its socket unit
      debvisor rpcd exec-serve --socket /run/debvisor-rpcd/exec.sock    # by hand
      debvisor rpcd serve --exec-socket /run/debvisor-rpcd/exec.sock    # rpcd uses it
    """
    from .executor import serve as serve_exec

    _use_config(ctx, config_file)
    conf = ctx.config_file or os.environ.get("DEBVISOR_CONFIG")

    def ready() -> None:
        print(f"READY {path or 'fd 3'}", flush=True)

    serve_exec(path, conf, ready)


@rpcd.command("call")
@click.argument("action")
@click.argument("params_file", metavar="PARAMS", required=False)
@click.option("--address", metavar="HOST:PORT", help="The node's rpcd (default [rpcd.client] address).")
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--check", is_flag=True, help="Run the preflight checks only.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--timeout", default="1h", show_default=True, help="The call's deadline.")
@pass_ctx
def call(ctx: Context, action: str, params_file: str | None, address: str | None, dry_run: bool,
         check: bool, yes: bool, timeout: str) -> None:
    """Run ACTION on a node through its rpcd, parameters as JSON (file PARAMS or - for stdin);
    the events are printed as they come (JSON lines with --events), the exit code is the
    action's.

    \b
    Client settings ([rpcd.client]): address, ca, cert, key, api_key_file, token_file.
    \b
    Examples:
      debvisor rpcd call --address node1:7443 hv.list
      echo '{"vm": "vm1", "target": "node2"}' | debvisor rpcd call hv.migrate - --yes
    """
    _grpc_missing()
    from .client import Client, stream

    raw = "{}"
    if params_file:
        try:
            raw = sys.stdin.read() if params_file == "-" else Path(params_file).read_text()
        except OSError as exc:
            raise BadInput(f"cannot read {params_file}: {exc.strerror}") from None
    try:
        limit = parse_duration(timeout)
    except ValueError as exc:
        raise BadInput(f"--timeout {timeout!r} {exc}") from None
    client = Client.from_config(ctx.section("rpcd").get("client") or {}, address=address)
    query = not (dry_run or check) and _is_query(ctx, action)  # one unary Call, not a stream
    raise click.exceptions.Exit(stream(ctx, client, action, raw, dry_run=dry_run, check=check,
                                       yes=yes, timeout=limit, query=query))


def _is_query(ctx: Context, path: str) -> bool:
    """Whether the action ``path`` only reads, as this machine's plugins declare it (False
    when it is not installed here: the node's Invoke runs anything)."""
    from ..actions import installed

    action = installed(ctx).get(path)
    return action is not None and not action.changes_state


# -- CA and API keys: declared actions (audited before they change anything) -------------
def _ca_init(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    from . import pki

    d = pki_dir(ctx, p["dir"])
    ctx.audit("ca-init", dir=str(d))
    return pki.init(d, days=int(p["days"]))


def _ca_issue(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    from . import pki

    d = pki_dir(ctx, p["dir"])
    pki.check_name(p["name"])
    ctx.audit("ca-issue", name=p["name"], kind=p["kind"], server=p["server"])
    return pki.issue(d, p["name"], kind=p["kind"], server=p["server"], dns=tuple(p["dns"] or ()),
                     ips=tuple(p["ip"] or ()), days=int(p["days"]),
                     out=Path(p["out"]) if p["out"] else None)


def _key_create(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    from . import apikeys
    from .authz import Policy

    roles = Policy.from_section(Section.of(ctx, "rpcd")).roles
    if p["role"] not in roles:
        raise BadInput(f"no role {p['role']!r}; known: {', '.join(sorted(roles))}")
    ttl = p["ttl"]
    ctx.audit("key-create", owner=p["owner"], role=p["role"], ttl_s=ttl)
    key, rec = apikeys.create(p["owner"], p["role"], ttl, p["note"] or "")
    return {**apikeys.public(rec), "key": key}


def _key_revoke(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    from . import apikeys

    ctx.audit("key-revoke", id=p["id"])
    return apikeys.public(apikeys.revoke(p["id"]))


def _key_list(ctx: Context, p: dict[str, Any]) -> list[dict[str, Any]]:
    from . import apikeys

    return [apikeys.public(r) for r in apikeys.load().values()]


def _render_keys(rows: list[dict[str, Any]]) -> None:
    from ..output import table
    from ..timefmt import iso_utc

    for r in rows:
        r["expires_at"] = iso_utc(r["expires"]) if r.get("expires") else "never"
        r["state"] = "revoked" if r.get("revoked") else "active"
    print(table(rows, [("id", "ID"), ("owner", "OWNER"), ("role", "ROLE"),
                       ("expires_at", "EXPIRES"), ("state", "STATE"), ("note", "NOTE")])
          if rows else "no API keys")


def _user_add(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    from . import users
    from .authz import Policy

    roles = Policy.from_section(Section.of(ctx, "rpcd")).roles
    unknown = [r for r in p["role"] if r not in roles]
    if unknown:
        raise BadInput(f"no role {unknown[0]!r}; known: {', '.join(sorted(roles))}")
    if not users.NAME_RE.fullmatch(p["name"]):
        raise BadInput(f"user name {p['name'][:64]!r}: lower-case letters, digits, '_', '.', '-'")
    ctx.audit("user-add", user=p["name"], roles=p["role"])
    return users.add(p["name"], p["password"], list(p["role"]))


def _user_remove(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    from . import users

    ctx.audit("user-remove", user=p["name"])
    if not users.remove(p["name"]):
        raise BadInput(f"no user {p['name'][:64]!r} (see `debvisor rpcd user list`)")
    return {"name": p["name"], "removed": True}


def _user_list(ctx: Context, p: dict[str, Any]) -> list[dict[str, Any]]:
    from . import users

    return users.listing()


def _render_users(rows: list[dict[str, Any]]) -> None:
    from ..output import table

    print(table([{**r, "roles": ", ".join(r["roles"])} for r in rows],
                [("name", "USER"), ("roles", "ROLES"), ("created", "CREATED")])
          if rows else "no users")


_DIR = Param("dir", "The CA directory (default [rpcd] pki_dir, else STATE/rpcd/pki).",
             type="path", default=None)
ACTIONS = [
    Action("rpcd.ca.init", "Create the cluster CA that issues node and user certificates",
           execute=_ca_init, params=(_DIR, Param("days", "Validity in days.", type="int",
                                                 default=3650, minimum=1)),
           render=lambda r: print(f"CA created: {r['ca']} (key {r['key']}, until {r['not_after']})"),
           result="{ca, key, not_after}", examples=("debvisor rpcd ca init",)),
    Action("rpcd.ca.issue", "Issue a certificate for a node, a user or a proxy from the cluster CA",
           execute=_ca_issue,
           params=(Param("name", "The certificate's name (its CN: the identity RBAC grants roles "
                                 "to).", positional=True),
                   Param("kind", "What it identifies.", type="choice",
                         choices=("node", "user", "proxy"), default="node"),
                   Param("server", "Also a server certificate (rpcd's own).", type="bool",
                         default=False),
                   Param("dns", "A DNS name the server answers to (repeatable).", type="list",
                         default=None),
                   Param("ip", "An address the server answers on (repeatable).", type="list",
                         default=None),
                   Param("days", "Validity in days.", type="int", default=365, minimum=1),
                   Param("out", "Write NAME.pem and NAME.key here (default: the CA directory).",
                         type="path", default=None),
                   _DIR),
           render=lambda r: print(f"issued {r['name']} ({r['kind']}): {r['cert']}, key {r['key']}"),
           result="{name, kind, cert, key, ca, server, not_after}",
           examples=("debvisor rpcd ca issue node1 --server --dns node1 --ip 127.0.0.1",
                     "debvisor rpcd ca issue alice --kind user")),
    Action("rpcd.key.create", "Create an API key for an identity, narrowed to a role; shown once",
           execute=_key_create,
           params=(Param("owner", "The identity the key acts as (a certificate or token name)."),
                   Param("role", "The role the key is narrowed to (viewer, operator, admin or "
                                 "a [rpcd.roles.NAME])."),
                   Param("ttl", "Lifetime, e.g. 30d or 12h.", type="duration", default="30d"),
                   Param("note", "What the key is for.", default=None)),
           render=lambda r: print(f"{r['key']}\n(shown once: store it now; id {r['id']}, role "
                                  f"{r['role']}, owner {r['owner']})"),
           result="{id, owner, role, created, expires, key}",
           examples=("debvisor rpcd key create --owner ci --role viewer --ttl 30d",)),
    Action("rpcd.key.list", "List API keys (never their secrets)", query=_key_list,
           render=_render_keys, result="[{id, owner, role, created, expires, revoked, note}]",
           examples=("debvisor rpcd key list --json",)),
    Action("rpcd.key.revoke", "Revoke an API key at once", execute=_key_revoke,
           params=(Param("id", "The key's id (from `debvisor rpcd key list`).", positional=True),),
           render=lambda r: print(f"revoked {r['id']} ({r['owner']}, {r['role']})"),
           result="{id, owner, role, revoked}", examples=("debvisor rpcd key revoke ab12cd34",)),
    Action("rpcd.user.add", "Add (or replace) a person who logs in with a password (the web "
                            "panel's users)", execute=_user_add,
           description="The password is stored as scrypt in STATE/rpcd/users.json (0600) and "
                       "read from a file or stdin, never the command line. Login gives a "
                       "session token valid 15 min after its last use ([rpcd] session_ttl).",
           params=(Param("name", "The user name.", positional=True),
                   Param("role", "A role (repeatable): viewer, operator, admin or a "
                                 "[rpcd.roles.NAME].", type="list"),
                   Param("password", "The password (at least 12 characters).", secret=True)),
           render=lambda r: print(f"user {r['name']} ({', '.join(r['roles'])}) added"),
           result="{name, roles, created}",
           examples=("debvisor rpcd user add alice --role operator --password-file - < pw",)),
    Action("rpcd.user.list", "List the users who log in with a password (never their hashes)",
           query=_user_list, render=_render_users, result="[{name, roles, created}]",
           examples=("debvisor rpcd user list --json",)),
    Action("rpcd.user.remove", "Remove a user: their sessions end at their next call",
           execute=_user_remove,
           params=(Param("name", "The user name.", positional=True),),
           render=lambda r: print(f"user {r['name']} removed"), result="{name, removed}",
           examples=("debvisor rpcd user remove alice",)),
]


@rpcd.group("ca")
def ca() -> None:
    """The cluster CA: node, user and proxy certificates (their CN is the identity).

    \b
    Examples:
      debvisor rpcd ca init
      debvisor rpcd ca issue node1 --server --dns node1 --ip 10.0.0.11
      debvisor rpcd ca issue panel --kind proxy
    """


@rpcd.group("user")
def user() -> None:
    """People who log in with a password (the web panel's users): add, list, remove.

    \b
    Examples:
      debvisor rpcd user add alice --role operator --password-file - < alice.pw
      debvisor rpcd user list
      debvisor rpcd user remove alice
    """


@rpcd.group("key")
def key() -> None:
    """API keys: an identity's key narrowed to a role, stored as an HMAC, shown once.

    \b
    Examples:
      debvisor rpcd key create --owner ci --role viewer --ttl 30d
      debvisor rpcd key list
      debvisor rpcd key revoke ab12cd34
    """


attach(rpcd, ACTIONS)


@hookimpl
def debvisor_commands() -> click.Command:
    return rpcd


@hookimpl
def debvisor_actions() -> list[Action]:
    return ACTIONS



@hookimpl
def debvisor_lab_services() -> list[Any]:
    from .lab import service

    return [service()]
