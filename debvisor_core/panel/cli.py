"""`debvisor panel`: serve the web UI (debvisor-panel.service).

Importing this module imports none of starlette, uvicorn, jinja2 or grpc (``debvisor
--help`` stays light, and a node without the ``panel`` extra gets one sentence).
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import hookimpl, log
from ..commands import pass_ctx
from ..context import Context
from ..errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    import asyncio


@click.group("panel")
def panel() -> None:
    """The web UI (debvisor-panel): pages over this node's rpcd, HTTPS only.

    \b
    Examples:
      debvisor rpcd ca issue panel --kind proxy
      debvisor panel serve --listen 0.0.0.0:8443
    """


def _missing() -> None:
    try:
        import grpc  # noqa: F401
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise BadInput(f"{exc.name} is not installed: install debvisor-core[panel] to serve "
                       "the panel") from None


_HOST_RE = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")
_TARGET_RE = re.compile(r"/[!-~]{0,2047}")


async def _redirect_listener(addr: str, origin: str | None, https_port: int,
                             fallback: str) -> asyncio.AbstractServer:
    """Plain HTTP that only answers 308 to the same path on HTTPS (no page, no cookie):
    to ``origin`` when set, else to the request's Host on the HTTPS port."""
    import asyncio

    from .settings import split_hostport

    host, port = split_hostport(addr)

    def location(head: bytes) -> str:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        target = parts[1] if len(parts) == 3 and _TARGET_RE.fullmatch(parts[1]) else "/"
        if target.startswith("//"):
            target = "/"
        if origin:
            return origin + target
        hosts = [ln.split(":", 1)[1].strip() for ln in lines[1:] if ln.lower().startswith("host:")]
        m = _HOST_RE.fullmatch(hosts[0]) if len(hosts) == 1 else None
        base = f"https://{m.group(1)}:{https_port}" if m else fallback
        return base + target

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            body = b"Use HTTPS.\n"
            writer.write((f"HTTP/1.1 308 Permanent Redirect\r\nLocation: {location(head)}\r\n"
                          f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                          "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode()
                         + body)
            await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host or None, port, limit=16 * 1024)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _serve(settings: Any) -> None:
    import asyncio

    import uvicorn

    from .app import create_app
    from .settings import split_hostport

    host, port = split_hostport(settings.listen)
    for f, what in ((settings.tls_cert, "tls_cert"), (settings.tls_key, "tls_key")):
        if not f:
            raise BadInput(f"the panel serves HTTPS only: set [panel] {what}")
        if not Path(f).is_file():
            raise BadInput(f"[panel] {what} {f} does not exist")
    app = create_app(settings)
    config = uvicorn.Config(app, host=host, port=port, ssl_certfile=settings.tls_cert,
                            ssl_keyfile=settings.tls_key, server_header=False,
                            proxy_headers=False, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, ws_max_size=1 << 20,
                            limit_concurrency=256)
    server = uvicorn.Server(config)
    redirect: asyncio.AbstractServer | None = None

    async def announce() -> None:
        nonlocal redirect
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        bound = port
        with contextlib.suppress(IndexError, AttributeError, OSError):
            bound = server.servers[0].sockets[0].getsockname()[1]
        url = f"https://{_url_host(host)}:{bound}"
        if settings.redirect_listen:
            redirect = await _redirect_listener(settings.redirect_listen,
                                                settings.public_origin or None, bound, url)
        log.info(f"panel: serving {url} (rpcd {settings.rpcd_address})")
        print(f"READY {url}", flush=True)

    task = asyncio.create_task(announce())
    try:
        await server.serve()
    finally:
        task.cancel()
        if redirect is not None:
            redirect.close()


@panel.command("serve")
@click.option("--listen", metavar="ADDR", help="host:port (default [panel] listen, 127.0.0.1:8443).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="Read [panel] from this file (default: the global --config).")
@pass_ctx
def serve(ctx: Context, listen: str | None, config_file: str | None) -> None:
    """Serve the panel over HTTPS in the foreground until SIGTERM; prints
    ``READY https://HOST:PORT`` once it listens.

    \b
    Config ([panel] in debvisor.toml): listen, tls_cert, tls_key, redirect_listen,
    public_origin, rpcd_address, ca, cert, key (the panel's proxy certificate: rpcd's
    [rpcd] proxies must name it), idle_timeout, absolute_timeout, reauth_max_age.
    \b
    Examples:
      debvisor panel serve
      debvisor panel serve --config /etc/debvisor/debvisor.toml --listen [::]:8443
    """
    _missing()
    from .. import config as _config
    from ..settings import Section
    from .settings import PanelSettings, split_hostport

    if config_file:
        conf = _config.load(Path(config_file), explicit=True)
        section = Section(str(conf.path), "[panel]", conf.section("panel"))
        settings = PanelSettings.from_section(section, conf.section("rpcd"), listen=listen)
    else:
        settings = PanelSettings.from_context(ctx, listen=listen)
    try:
        split_hostport(settings.listen)
        if settings.redirect_listen:
            split_hostport(settings.redirect_listen)
    except ValueError as exc:
        raise BadInput(f"[panel] listen: {exc}") from None
    import asyncio

    try:
        asyncio.run(_serve(settings))
    except KeyboardInterrupt:  # pragma: no cover - uvicorn handles SIGINT itself
        sys.exit(130)


@hookimpl
def debvisor_commands() -> click.Command:
    return panel


@hookimpl
def debvisor_lab_services() -> list[Any]:
    from .lab import service

    return [service()]
