"""Connecting to the cluster from the `[ceph]` config table, and fetching JSON dumps.

Every read is a mon or mgr command with ``format=json`` through python-rados;
nothing parses the text output of the ``ceph`` CLI.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debvisor_core.context import Context
from debvisor_core.errors import BadInput
from debvisor_core.secrets import check_owner_only
from debvisor_core.settings import Section

from .fileosd import CephCommandError

DEFAULT_CONF = "/etc/ceph/ceph.conf"
DEFAULT_KEYRING = "/etc/ceph/ceph.client.admin.keyring"
RADOS_MISSING = (
    "python-rados is not importable: install Debian's python3-rados and link it into "
    "DebVisor's venv (see the debvisor-ceph README)"
)


class RadosMissing(BadInput):
    """python-rados (Debian's python3-rados) cannot be imported."""


def require_rados() -> Any:
    """Import and return the ``rados`` module, or raise :class:`RadosMissing` (one line)."""
    try:
        import rados
    except ImportError:
        raise RadosMissing(RADOS_MISSING) from None
    return rados


PROVISIONERS = ("ceph-volume", "ceph-volume-raw", "file")  # how `ceph join` makes OSDs (join.py)


def _provisioner(sec: Section) -> str:
    value = sec.string("provisioner", "ceph-volume") or "ceph-volume"
    if value not in PROVISIONERS:
        raise sec.error("provisioner", f"names an unknown provisioner {value!r}: use one of "
                                       f"{', '.join(PROVISIONERS)}")
    return value


@dataclass
class Settings:
    """The `[ceph]` table: conf, keyring, client name, timeout and the join provisioner."""

    conf: str = DEFAULT_CONF
    keyring: str = DEFAULT_KEYRING
    client: str = "client.admin"
    timeout: int = 10
    provisioner: str = "ceph-volume"
    file_dir: str = ""
    host: str = ""

    @classmethod
    def from_ctx(cls, ctx: Context) -> Settings:
        sec = ctx.section("ceph")
        return cls(
            conf=str(sec.get("conf", DEFAULT_CONF)),
            keyring=str(sec.get("keyring", DEFAULT_KEYRING)),
            client=str(sec.get("client", "client.admin")),
            timeout=int(Section.of(ctx, "ceph").number("timeout", 10, minimum=1, maximum=3600,
                                                       integer=True, unit="seconds")),
            provisioner=_provisioner(Section.of(ctx, "ceph")),
            file_dir=str(sec.get("file_dir", "")),
            host=str(sec.get("host", "")),
        )

    def configured(self) -> bool:
        return Path(self.conf).exists()


class Cluster:
    """A connected cluster: JSON mon/mgr commands over one rados handle."""

    def __init__(self, handle: Any, timeout: int = 10) -> None:
        self.handle = handle
        self.timeout = timeout

    def _run(self, target: str, prefix: str, args: dict[str, Any], *, allow: tuple[int, ...] = (),
             fmt: bool = True, inbuf: bytes = b"") -> tuple[int, Any, str]:
        cmd = {"prefix": prefix, **args}
        if fmt:
            cmd["format"] = "json"
        fn = self.handle.mon_command if target == "mon" else self.handle.mgr_command
        ret, out, err = fn(json.dumps(cmd), inbuf, timeout=self.timeout)
        text = out.decode() if isinstance(out, bytes) else str(out)
        if ret != 0 and ret not in allow:
            raise CephCommandError(f"ceph {prefix} failed ({ret}): {(err or '').strip() or text[:200]}")
        data: Any = text
        if fmt:
            data = json.loads(text) if text.strip() else None
        return ret, data, err or ""

    def mon(self, prefix: str, **args: Any) -> Any:
        """A mon command's decoded JSON result."""
        return self._run("mon", prefix, args)[1]

    def mgr(self, prefix: str, **args: Any) -> Any:
        """A mgr command's decoded JSON result."""
        return self._run("mgr", prefix, args)[1]

    def mon_do(self, prefix: str, **args: Any) -> str:
        """A mon command that changes state; returns its status text."""
        ret, _out, err = self._run("mon", prefix, args, fmt=False)
        return err

    def mgr_raw(self, prefix: str, allow: tuple[int, ...], **args: Any) -> tuple[int, Any, str]:
        """A mgr command whose non-zero codes in ``allow`` still carry a JSON answer."""
        return self._run("mgr", prefix, args, allow=allow)


@contextlib.contextmanager
def session(ctx: Context, *, timeout: int | None = None) -> Iterator[Cluster]:
    """Connect with the `[ceph]` settings; one clear error if rados or the cluster is missing."""
    rados = require_rados()
    s = Settings.from_ctx(ctx)
    if not Path(s.conf).exists():
        raise BadInput(f"Ceph config {s.conf} does not exist: set `conf` in the [ceph] config table")
    if not Path(s.keyring).exists():
        raise BadInput(f"Ceph keyring {s.keyring} does not exist: set `keyring` in the [ceph] config table")
    check_owner_only(Path(s.keyring), "Ceph keyring")
    t = timeout or s.timeout
    handle = rados.Rados(conffile=s.conf, name=s.client if s.client.startswith("client.")
                         else f"client.{s.client}",
                         conf={"keyring": s.keyring, "client_mount_timeout": str(t)})
    try:
        handle.connect(timeout=t)
    except rados.Error as exc:
        handle.shutdown()
        raise CephCommandError(f"cannot reach the Ceph mons ({s.conf}): {exc}") from None
    try:
        yield Cluster(handle, t)
    finally:
        handle.shutdown()
