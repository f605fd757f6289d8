"""List installed plugins without importing them.

Entry points of the group ``debvisor.plugins`` are read once with importlib.metadata
and cached (name, module, distribution, version, summary) in a small tab-separated
file keyed by the mtimes of ``sys.path``: installing or removing a distribution
changes its site-packages directory and so the key. A cache hit costs a few
``stat`` calls and no ``importlib.metadata`` import (which alone costs about 3×
``python -c pass``), which keeps ``debvisor --help`` fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

from . import ENTRY_POINT_GROUP


class PluginEntry(NamedTuple):
    """An installed plugin as its entry point declares it."""

    name: str
    module: str
    dist: str
    version: str
    summary: str


def _cache_file() -> Path | None:
    """One cache file per interpreter and path set (two venvs, or a test that adds site
    plugins to PYTHONPATH, never overwrite each other's entry); mtimes decide validity."""
    import zlib

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if base.startswith("~"):
        return None
    paths = "\0".join([sys.executable, *sys.path[1:]])
    return Path(base, "debvisor", f"plugins-{zlib.crc32(paths.encode()):08x}.tsv")


def _fingerprint() -> str:
    """The interpreter and each sys.path entry with its mtime, as one line.

    sys.path[0] is the script's directory or the cwd: it is left out, so that the
    cache survives `python -m`, `python -c` and a change of directory."""
    parts = [sys.executable]
    for entry in sys.path[1:]:
        try:
            mtime = os.stat(entry or ".").st_mtime_ns
        except OSError:
            mtime = -1
        parts.append(f"{entry}={mtime}")
    return repr("\0".join(parts))


def installation_key(*more: str) -> str:
    """What the installed commands depend on: discovery's fingerprint (interpreter, every
    ``sys.path`` entry's mtime), the plugin selection, and ``more``."""
    env = "\0".join(f"{v}={os.environ.get(v, '')}" for v in
                    ("DEBVISOR_PLUGINS", "DEBVISOR_DISABLE_PLUGINS"))
    return repr("\0".join((_fingerprint(), env, *more)))


def cache_file(kind: str, words: list[str], suffix: str) -> Path | None:
    """The cache file of ``kind`` (help, query) for ``words``, beside discovery's."""
    import zlib

    plugins = _cache_file()
    if plugins is None:
        return None
    tag = zlib.crc32(" ".join(words).encode())
    return plugins.with_name(plugins.name.replace("plugins-", f"{kind}-").replace(".tsv", "")
                             + f"-{tag:08x}{suffix}")


def module_sources() -> str:
    """Every loaded debvisor module's file with its mtime (what :func:`sources_ok` checks)."""
    files = sorted({str(m.__file__) for name, m in list(sys.modules.items())
                    if name.split(".")[0].startswith("debvisor") and getattr(m, "__file__", None)})
    return "\t".join(f"{f}={os.stat(f).st_mtime_ns}" for f in files)


def store(path: Path, text: str) -> None:
    """Write a cache file atomically; a cache that cannot be written is no error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f"{path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        pass


def sources_ok(line: str) -> bool:
    """Whether every file of a :func:`module_sources` line still has its mtime."""
    for item in line.split("\t"):
        path, _, mtime = item.rpartition("=")
        try:
            if str(os.stat(path).st_mtime_ns) != mtime:
                return False
        except OSError:
            return False
    return True


def _scan() -> list[PluginEntry]:
    from importlib.metadata import entry_points

    found: dict[str, PluginEntry] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        meta = dist.metadata if dist is not None else None
        found.setdefault(
            ep.name,
            PluginEntry(
                name=ep.name,
                module=ep.value,
                dist=(meta["Name"] if meta else "") or "",
                version=(dist.version if dist is not None else "") or "",
                summary=((meta["Summary"] if meta else "") or "").replace("\t", " "),
            ),
        )
    return sorted(found.values(), key=lambda e: e.name)


def installed() -> list[PluginEntry]:
    """Every installed plugin (cached; see the module docstring)."""
    key = _fingerprint()
    cache = _cache_file()
    if cache is not None:
        try:
            lines = cache.read_text().splitlines()
            if lines and lines[0] == key:
                return [PluginEntry(*line.split("\t")) for line in lines[1:] if line]
        except (OSError, TypeError):
            pass
    entries = _scan()
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = cache.with_name(f"{cache.name}.{os.getpid()}")
            body = "".join(
                "\t".join((e.name, e.module, e.dist, e.version, e.summary)) + "\n" for e in entries
            )
            tmp.write_text(f"{key}\n{body}")
            os.replace(tmp, cache)
        except OSError:
            pass
    return entries


def selection() -> tuple[set[str] | None, set[str]]:
    """(allowlist or None, blocklist) from DEBVISOR_PLUGINS / DEBVISOR_DISABLE_PLUGINS."""

    def names(var: str) -> set[str]:
        return {n.strip() for n in os.environ.get(var, "").split(",") if n.strip()}

    allow = names("DEBVISOR_PLUGINS") if "DEBVISOR_PLUGINS" in os.environ else None
    return allow, names("DEBVISOR_DISABLE_PLUGINS")


def blocked_reason(name: str) -> str | None:
    """Why plugin ``name`` is not to be loaded, or None if it may load."""
    allow, deny = selection()
    if name in deny:
        return "disabled by DEBVISOR_DISABLE_PLUGINS"
    if allow is not None and name not in allow:
        return "not in DEBVISOR_PLUGINS"
    return None


# Core features written as plugins (debvisor_core.builtin): read by `debvisor --help`,
# so this names modules without importing them.
#: word -> (module, one-line help)
BUILTIN_COMMANDS: dict[str, tuple[str, str]] = {
    "actions": ("debvisor_core.builtin.actions_cmd",
                "List, describe and run the declared actions (JSON in, JSON out)."),
    "audit": ("debvisor_core.builtin.audit_cmd", "Show and verify the tamper-evident audit log."),
    "cluster": ("debvisor_core.builtin.cluster_cmd", "Cluster-wide state: operation locks."),
    "firstboot": ("debvisor_core.builtin.firstboot_cmd",
                  "Run the first-boot modules once, and show their report."),
    "health": ("debvisor_core.builtin.health_cmd", "Run every plugin's health checks."),
    "join": ("debvisor_core.builtin.join_cmd",
             "Join this node to the cluster's services (Ceph, Kubernetes) as one operation."),
    "lab": ("debvisor_core.builtin.lab_cmd", "Start, stop and inspect the lab of real services."),
    "maintenance": ("debvisor_core.builtin.maintenance", "Enable, disable or show maintenance mode."),
    "ops": ("debvisor_core.builtin.ops_cmd", "List, show, roll back and resume operations."),
    "panel": ("debvisor_core.panel.cli",
              "The web UI (debvisor-panel): pages over this node's rpcd, HTTPS only."),
    "plugins": ("debvisor_core.builtin.plugins_cmd", "List installed plugins and their status."),
    "upgrade": ("debvisor_core.builtin.upgrade_cmd",
                "Pre-upgrade checks of this node and the package changes apt predicts."),
    "rpcd": ("debvisor_core.rpcd.cli", "The node's gRPC API daemon: serve, CA, API keys, calls."),
}

#: hook-only built-in plugins, always registered
BUILTIN_HOOKS: dict[str, str] = {
    "core": "debvisor_core.builtin.core",
    "syslog": "debvisor_core.builtin.syslog_sink",
}
