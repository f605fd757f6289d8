"""``[panel]`` of the config: where the panel listens, its TLS files, the rpcd it talks to
with its proxy certificate, and its session limits.

::

    [panel]
    listen = "0.0.0.0:8443"               # HTTPS, always
    tls_cert = "/etc/debvisor/panel/https.pem"
    tls_key = "/etc/debvisor/panel/https.key"
    redirect_listen = "0.0.0.0:80"        # optional: plain HTTP that only redirects
    public_origin = "https://node1.example.net:8443"   # default: https://<Host header>
    rpcd_address = "127.0.0.1:7443"
    ca = "/etc/debvisor/pki/ca.pem"       # default: [rpcd] ca
    cert = "/etc/debvisor/pki/panel.pem"  # `debvisor rpcd ca issue panel --kind proxy`
    key = "/etc/debvisor/pki/panel.key"
    idle_timeout = 900                    # seconds without activity (a live SSE stream is not)
    absolute_timeout = 28800              # seconds since login, whatever the activity
    # optional: "Log in with SSO" (OpenID Connect, implicit flow with form_post; rpcd's
    # [rpcd] oidc_jwks_file, oidc_issuer and oidc_audience verify the ID token)
    oidc_issuer = "https://id.example.net/realms/ops"
    oidc_client_id = "debvisor-panel"     # = [rpcd] oidc_audience
    oidc_authorization_endpoint = "https://id.example.net/realms/ops/protocol/openid-connect/auth"
    oidc_label = "Log in with SSO"        # the button's text
    oidc_scope = "openid profile"
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..settings import Section

if TYPE_CHECKING:  # pragma: no cover
    from ..context import Context

DEFAULT_LISTEN = "127.0.0.1:8443"


@dataclass(frozen=True)
class PanelSettings:
    """The panel's settings (times in seconds)."""

    listen: str = DEFAULT_LISTEN
    tls_cert: str = ""
    tls_key: str = ""
    redirect_listen: str = ""
    public_origin: str = ""
    rpcd_address: str = "127.0.0.1:7443"
    rpcd_server_name: str = ""
    ca: str = ""
    cert: str = ""
    key: str = ""
    idle_timeout: float = 900.0
    absolute_timeout: float = 8 * 3600.0
    reauth_max_age: float = 300.0
    read_timeout: float = 2.0
    slow_read_timeout: float = 15.0
    heartbeat: float = 15.0
    events_poll: float = 5.0
    events_max: float = 600.0
    max_body_bytes: int = 64 * 1024
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_authorization_endpoint: str = ""
    oidc_label: str = "Log in with SSO"
    oidc_scope: str = "openid profile"

    @classmethod
    def from_section(cls, s: Section, rpcd: dict[str, Any] | None = None,
                     **over: Any) -> PanelSettings:
        """Read ``s`` (the ``[panel]`` table); ``rpcd`` (``[rpcd]``) gives the default CA;
        ``over`` (command-line values) wins when not None."""
        rpcd = rpcd or {}
        vals: dict[str, Any] = {}
        for name in ("listen", "tls_cert", "tls_key", "redirect_listen", "public_origin",
                     "rpcd_address", "rpcd_server_name", "ca", "cert", "key", "oidc_issuer",
                     "oidc_client_id", "oidc_authorization_endpoint", "oidc_label",
                     "oidc_scope"):
            v = s.string(name)
            if v is not None:
                vals[name] = v
        if "ca" not in vals and isinstance(rpcd.get("ca"), str) and rpcd["ca"]:
            vals["ca"] = rpcd["ca"]
        limits = (("idle_timeout", 900.0, 10.0), ("absolute_timeout", 8 * 3600.0, 60.0),
                  ("reauth_max_age", 300.0, 1.0), ("read_timeout", 2.0, 0.1),
                  ("slow_read_timeout", 15.0, 0.1), ("heartbeat", 15.0, 0.01),
                  ("events_poll", 5.0, 0.01), ("events_max", 600.0, 0.01))
        for name, default, minimum in limits:
            vals[name] = float(s.number(name, default, minimum=minimum, unit="seconds"))
        vals["max_body_bytes"] = int(s.number("max_body_bytes", 64 * 1024, minimum=1024,
                                              integer=True, unit="bytes"))
        vals.update({k: v for k, v in over.items() if v is not None})
        out = cls(**vals)
        if out.public_origin:
            try:
                canonical = normalize_origin(out.public_origin)
            except ValueError as exc:
                raise s.error("public_origin", str(exc)) from None
            out = cls(**{**vals, "public_origin": canonical})
        if out.idle_timeout > out.absolute_timeout:
            raise s.error("idle_timeout", "must not be longer than absolute_timeout")
        problem = out.oidc_problem()
        if problem:
            raise s.error(*problem)
        return out

    def oidc_problem(self) -> tuple[str, str] | None:
        """(setting, what is wrong) with the SSO settings, or None."""
        need = ("oidc_issuer", "oidc_client_id", "oidc_authorization_endpoint")
        given = [n for n in need if getattr(self, n)]
        if not given:
            return None
        if len(given) < len(need):
            missing = next(n for n in need if not getattr(self, n))
            return missing, "must be set too: SSO needs oidc_issuer, oidc_client_id and " \
                            "oidc_authorization_endpoint"
        for name in ("oidc_issuer", "oidc_authorization_endpoint"):
            u = urlsplit(getattr(self, name))
            if u.scheme != "https" or not u.hostname or u.fragment:
                return name, "must be an https:// URL"
        if "openid" not in self.oidc_scope.split():
            return "oidc_scope", "must include openid"
        return None

    def idp_origins(self) -> set[str]:
        """The identity provider's origins (its answer is posted from there)."""
        out = set()
        for url in (self.oidc_issuer, self.oidc_authorization_endpoint):
            u = urlsplit(url)
            if u.scheme and u.hostname:
                with contextlib.suppress(ValueError):
                    out.add(normalize_origin(f"{u.scheme}://{u.netloc.rpartition('@')[2]}"))
        return out

    @classmethod
    def from_context(cls, ctx: Context, **over: Any) -> PanelSettings:
        """``[panel]`` of the config in effect."""
        return cls.from_section(Section.of(ctx, "panel"), ctx.section("rpcd"), **over)

    def listen_host_port(self) -> tuple[str, int]:
        return split_hostport(self.listen)


def split_hostport(addr: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` as (host, port); raises ValueError."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise ValueError(f"{addr!r} is not host:port")
    return host.strip("[]"), int(port)


def normalize_origin(value: str) -> str:
    """``scheme://host[:port]`` lower-cased, default ports dropped; raises ValueError."""
    u = urlsplit(value.strip())
    if u.scheme not in ("https", "http") or not u.hostname or u.path not in ("", "/") \
            or u.query or u.fragment or u.username or u.password:
        raise ValueError(f"must be an origin like https://node1.example.net:8443, not {value!r}")
    host = u.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = u.port
    if port is None or (u.scheme, port) in (("https", 443), ("http", 80)):
        return f"{u.scheme}://{host}"
    return f"{u.scheme}://{host}:{port}"
