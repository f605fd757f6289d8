"""An anchor of this node's audit chain outside the node: the newest record's ``seq`` and
``hash`` in the omap of the object ``audit.head`` in the `[ceph] lock_pool` pool, one key
per node (``[ceph] host``), when `[ceph] audit_anchor = true`.

:func:`anchor` is an audit sink (``debvisor_audit``): it is called with every chained
record after the core wrote it to the local log. The anchor only moves forward (a guarded
omap write: the stored value must sort before the new one), so a node whose local log was
truncated, rewritten or replaced by a fresh chain cannot quietly lower it. :func:`check`
compares a local log with the anchor: a log shorter than the anchored ``seq``, or whose
record at that ``seq`` has another hash, was cut or rewritten.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debvisor_core.context import Context
from debvisor_core.settings import Section

from .client import Settings

OBJ = "audit.head"
SEQ_WIDTH = 20  # values are "<seq, zero-padded> <json>", so byte order is seq order


@dataclass
class AnchorSettings:
    """`[ceph] audit_anchor`, `lock_pool` and `host`."""

    enabled: bool
    pool: str
    node: str

    @classmethod
    def from_ctx(cls, ctx: Context) -> AnchorSettings:
        sec = Section.of(ctx, "ceph")
        return cls(sec.boolean("audit_anchor", False), sec.string("lock_pool", "debvisor") or "debvisor",
                   sec.string("host") or socket.gethostname().split(".")[0])


def encode(seq: int, digest: str, time: str = "") -> bytes:
    body = json.dumps({"seq": seq, "hash": digest, "time": time}, separators=(",", ":"))
    return f"{seq:0{SEQ_WIDTH}d} {body}".encode()


def decode(raw: bytes) -> dict[str, Any] | None:
    try:
        seq, _, body = raw.decode().partition(" ")
        d = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    if not (isinstance(d, dict) and seq.isdigit() and d.get("seq") == int(seq)
            and isinstance(d.get("hash"), str)):
        return None
    return d


def _ioctx(ctx: Context, pool: str) -> tuple[Any, Any]:
    from .client import require_rados

    rados = require_rados()
    c = Settings.from_ctx(ctx)
    handle = rados.Rados(conffile=c.conf, name=c.client if c.client.startswith("client.")
                         else f"client.{c.client}",
                         conf={"keyring": c.keyring, "client_mount_timeout": str(c.timeout),
                               "rados_osd_op_timeout": str(c.timeout),
                               "rados_mon_op_timeout": str(c.timeout)})
    handle.connect(timeout=c.timeout)
    try:
        if not handle.pool_exists(pool):  # as the cluster lock does (see clusterlock.py)
            for cmd in ({"prefix": "osd pool create", "pool": pool},
                        {"prefix": "osd pool application enable", "pool": pool, "app": "debvisor"}):
                ret, _out, err = handle.mon_command(json.dumps(cmd), b"", timeout=c.timeout)
                if ret != 0:
                    raise rados.Error(f"{cmd['prefix']} {pool} failed ({ret}): {err.strip()}")
        return handle, handle.open_ioctx(pool)
    except Exception:
        handle.shutdown()
        raise


def _read(ioctx: Any, node: str) -> bytes | None:
    import rados

    try:
        with rados.ReadOpCtx() as op:
            it, _ret = ioctx.get_omap_vals_by_keys(op, (node,))
            ioctx.operate_read_op(op, OBJ)
            vals = dict(it)
    except rados.ObjectNotFound:
        return None
    raw = vals.get(node)
    return bytes(raw) if raw is not None else None


def anchor(ctx: Context, event: dict[str, Any]) -> bool:
    """Move this node's anchor to ``event`` (a chained audit record); False when it is off,
    when ``event`` is not newer than the anchor, or when this node has no Ceph config.
    Raises on cluster errors (the core then warns: other sinks never block an operation)."""
    s = AnchorSettings.from_ctx(ctx)
    if not s.enabled or not Settings.from_ctx(ctx).configured():
        return False
    seq, digest = event.get("seq"), event.get("hash")
    if not isinstance(seq, int) or not isinstance(digest, str):
        return False
    import rados

    new = encode(seq, digest, str(event.get("time") or ""))
    handle, ioctx = _ioctx(ctx, s.pool)
    try:
        old = _read(ioctx, s.node)
        if old is not None and old >= new:
            return False
        with rados.WriteOpCtx() as op:
            if old is not None:  # only forward, even against a concurrent writer
                op.omap_cmp(s.node, new.decode(), rados.LIBRADOS_CMPXATTR_OP_LT)
            ioctx.set_omap(op, (s.node,), (new,))
            try:
                ioctx.operate_write_op(op, OBJ)
            except rados.Error as exc:
                if getattr(exc, "errno", None) == 125:  # ECANCELED: a newer anchor is there
                    return False
                raise
        return True
    finally:
        ioctx.close()
        handle.shutdown()


def anchored(ctx: Context, node: str | None = None) -> dict[str, Any] | None:
    """The anchor of ``node`` (default: this one): ``{"seq", "hash", "time"}`` or None."""
    s = AnchorSettings.from_ctx(ctx)
    handle, ioctx = _ioctx(ctx, s.pool)
    try:
        raw = _read(ioctx, node or s.node)
    finally:
        ioctx.close()
        handle.shutdown()
    return decode(raw) if raw is not None else None


def check(log: Path, anchor_rec: dict[str, Any] | None) -> str | None:
    """Why the local audit log ``log`` disagrees with its anchor (one sentence), or None."""
    if anchor_rec is None:
        return None
    seq, digest = int(anchor_rec["seq"]), str(anchor_rec["hash"])
    count = 0
    try:
        with open(log, "rb") as f:
            for line in f:
                count += 1
                if count == seq:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        rec = None
                    got = rec.get("hash") if isinstance(rec, dict) else None
                    if rec is None or rec.get("seq") != seq or got != digest:
                        return (f"audit record {seq} of {log} is not the one anchored in the "
                                f"cluster (hash {str(got)[:12]}…, anchored {digest[:12]}…): the log "
                                "was rewritten")
                    return None
    except FileNotFoundError:
        pass
    return (f"{log} has {count} audit records but the cluster anchored record {seq} "
            f"(hash {digest[:12]}…): records were deleted or the log was replaced")


# -- cluster-wide maintenance (`[ceph] cluster_state = true`) ----------------------------------
MAINTENANCE_OBJ = "maintenance"


@dataclass
class RadosMaintenance:
    """Each node's maintenance record in the omap of ``maintenance`` in `[ceph] lock_pool`
    (one key per node, the JSON record as value): what `debvisor maintenance` reads on every
    node, so maintenance set from one node holds on another."""

    ctx: Context
    pool: str

    def _io(self) -> tuple[Any, Any]:
        return _ioctx(self.ctx, self.pool)

    def all(self) -> dict[str, Any]:
        import rados

        handle, ioctx = self._io()
        try:
            with rados.ReadOpCtx() as op:
                it, _ret = ioctx.get_omap_vals(op, "", "", 10000)
                ioctx.operate_read_op(op, MAINTENANCE_OBJ)
                vals = dict(it)
        except rados.ObjectNotFound:
            return {}
        finally:
            ioctx.close()
            handle.shutdown()
        out = {}
        for k, v in vals.items():
            try:
                out[str(k)] = json.loads(bytes(v))
            except ValueError:
                continue
        return out

    def get(self, node: str) -> dict[str, Any] | None:
        rec = self.all().get(node)
        return rec if isinstance(rec, dict) else None

    def put(self, node: str, record: dict[str, Any] | None) -> None:
        import rados

        handle, ioctx = self._io()
        try:
            with rados.WriteOpCtx() as op:
                if record is None:
                    ioctx.remove_omap_keys(op, (node,))
                else:
                    ioctx.set_omap(op, (node,), (json.dumps(record).encode(),))
                try:
                    ioctx.operate_write_op(op, MAINTENANCE_OBJ)
                except rados.ObjectNotFound:
                    if record is not None:
                        raise
        finally:
            ioctx.close()
            handle.shutdown()


def maintenance_store(ctx: Context) -> RadosMaintenance | None:
    """The hook's body: the store when `[ceph] cluster_state = true` and Ceph is configured."""
    sec = Section.of(ctx, "ceph")
    if not sec.boolean("cluster_state", False) or not Settings.from_ctx(ctx).configured():
        return None
    return RadosMaintenance(ctx, sec.string("lock_pool", "debvisor") or "debvisor")
