"""debvisor-panel: the node's web UI (``debvisor panel serve``, the ``panel`` extra).

A server-rendered Starlette + Jinja2 application (htmx and its SSE extension vendored, no
build step) that is one more client of the node's rpcd and holds no authority of its own:
people log in through rpcd (``Login``), the panel keeps their short-lived user token in a
server-side session and sends it as ``x-user-token`` on every call made through its own
proxy certificate (``[rpcd] proxies = ["panel"]``), so rpcd checks and audits every action
as ``USER via=panel``. Hiding a button is a courtesy; refusing is rpcd's job.

Modules: :mod:`.settings` (``[panel]``), :mod:`.rpc` (the rpcd client), :mod:`.sessions`
(server-side sessions, idle and absolute limits), :mod:`.security` (CSRF, Origin checks,
response headers), :mod:`.app` (routes and pages), :mod:`.cli` (``debvisor panel serve``),
:mod:`.console` (the VNC console's WebSocket proxy, mounted by the app when present),
:mod:`.vms`, :mod:`.cephpage` and :mod:`.dnspage` (pages built from the plugins' declared
actions, :mod:`.plugpages`), :mod:`.live` (live tasks), :mod:`.oidc` (log in with SSO).
Importing this package imports none of starlette, jinja2, uvicorn or grpc.
"""
