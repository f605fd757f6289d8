"""The cluster-wide operation lock (``debvisor_cluster_lock``): an exclusive RADOS lock
with a lease on one object per lock name in the `[ceph] lock_pool` pool.

The engine takes the node-local flock first, then enters :class:`RadosLock`. The lock
is taken with a lease (``lock_lease`` seconds) that a background thread renews every
third of the lease from the moment the first name is held, so a SIGKILLed or powered-off
node's lock expires by itself. :meth:`RadosLock.lost` is the fence the engine checks before
each step and before "finished": a lease that ran out (on this node's monotonic clock), a
renewal the cluster refused, or a lock the cluster no longer lists as ours fails the
operation, which then rolls back. A busy lock is retried until ``lock_wait`` runs out,
then the operation is refused (exit 3) naming the holder: its node, pid, operator and
operation, read back with the ``lock`` object class's ``get_info`` method (python-rados
has no ``list_lockers``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from debvisor_core import log
from debvisor_core.context import Context
from debvisor_core.errors import PreflightRefused
from debvisor_core.settings import Section

from .client import Settings

if TYPE_CHECKING:
    from debvisor_core.engine import Operation

LOCK_NAME = "debvisor"  # the cls_lock lock name on every lock object
OBJ_PREFIX = "lock."  # object name = prefix + DebVisor lock name
LOCK_FLAG_MAY_RENEW = 1  # cls_lock: re-locking with our own cookie extends the lease
LOCK_FLAG_MUST_RENEW = 2  # cls_lock: ... and fails (ENOENT) when we no longer hold it
POLL = 0.2  # seconds between attempts while the lock is busy


@dataclass
class LockSettings:
    """`[ceph] cluster_lock`, `lock_pool`, `lock_lease` and `lock_wait`."""

    enabled: bool = False
    pool: str = "debvisor"
    lease: int = 60
    wait: float = 30.0
    node: str = ""

    @classmethod
    def from_ctx(cls, ctx: Context) -> LockSettings:
        sec = Section.of(ctx, "ceph")
        enabled = sec.boolean("cluster_lock", False)
        pool = sec.string("lock_pool", "debvisor") or "debvisor"
        if "lock_pool" in sec.data and not sec.data["lock_pool"]:
            raise sec.error("lock_pool", "must be a pool name, not ''")
        lease = int(sec.number("lock_lease", 60, minimum=1, integer=True, unit="seconds"))
        wait = sec.number("lock_wait", float(os.environ.get("DEBVISOR_LOCK_WAIT", "30")),
                          minimum=0, unit="seconds")
        node = sec.string("host") or socket.gethostname().split(".")[0]
        return cls(enabled, pool, lease, float(wait), node)


@dataclass
class Holder:
    """One locker of a lock object, as ``lock get_info`` reports it."""

    entity: str  # e.g. client.4127
    cookie: str
    description: str
    expires: float  # epoch seconds (0: no lease)
    addr: str

    def info(self) -> dict[str, Any]:
        """The JSON description DebVisor wrote, or ``{"description": raw}`` for a foreign lock."""
        try:
            d = json.loads(self.description)
        except ValueError:
            d = None
        return d if isinstance(d, dict) else {"description": self.description}

    def summary(self, now: float | None = None) -> str:
        """One line: node, pid, operator, operation, since, lease left, RADOS client."""
        d = self.info()
        parts = []
        if "pid" in d:
            parts.append(f"pid {d['pid']}")
        if d.get("user"):
            parts.append(str(d["user"]))
        if d.get("op"):
            parts.append(f"operation {d.get('id') or '?'} {d['op']}: {d.get('title', '')}".rstrip(": "))
        if d.get("since"):
            parts.append("since " + time.strftime("%H:%M:%S", time.localtime(float(d["since"]))))
        if "description" in d:
            parts.append(repr(d["description"]))
        if self.expires:
            left = self.expires - (now or time.time())
            parts.append(f"lease ends in {max(left, 0):.0f}s")
        parts.append(f"{self.entity} at {self.addr}")
        node = d.get("node")
        return (f"node {node} " if node else "") + "(" + ", ".join(parts) + ")"


class _Reader:
    """Little-endian reader for Ceph's encoding (versioned structs, strings, maps)."""

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ValueError("truncated lock info")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def s64(self) -> int:
        return int(struct.unpack("<q", self.take(8))[0])

    def string(self) -> str:
        return self.take(self.u32()).decode(errors="replace")

    def start(self) -> int:
        """ENCODE_START header (version, compat, length); returns the struct's end."""
        self.take(2)
        n = self.u32()
        return self.pos + n


ENTITY_TYPES = {1: "mon", 2: "mds", 4: "osd", 8: "client", 16: "mgr"}


def _addr(r: _Reader) -> str:
    """entity_addr_t: the new (marker 1) or legacy (marker 0) encoding, as ip:port/nonce."""
    if r.u8() == 0:
        r.take(3)
        nonce = r.u32()
        sa = r.take(128)
    else:
        end = r.start()
        r.u32()  # type
        nonce = r.u32()
        sa = r.take(r.u32())
        r.pos = end
    if len(sa) >= 8 and int.from_bytes(sa[0:2], "little") == socket.AF_INET:
        ip = socket.inet_ntoa(sa[4:8])
        return f"{ip}:{int.from_bytes(sa[2:4], 'big')}/{nonce}"
    if len(sa) >= 24 and int.from_bytes(sa[0:2], "little") == socket.AF_INET6:
        ip = socket.inet_ntop(socket.AF_INET6, sa[8:24])
        return f"[{ip}]:{int.from_bytes(sa[2:4], 'big')}/{nonce}"
    return f"-/{nonce}"


def decode_lockers(buf: bytes) -> list[Holder]:
    """Decode a ``cls_lock_get_info_reply`` (``lock``/``get_info`` output)."""
    r = _Reader(buf)
    r.start()
    holders = []
    for _ in range(r.u32()):
        end = r.start()  # locker_id_t
        etype, num = r.u8(), r.s64()
        cookie = r.string()
        r.pos = end
        end = r.start()  # locker_info_t
        sec, nsec = r.u32(), r.u32()
        addr = _addr(r)
        desc = r.string()
        r.pos = end
        holders.append(Holder(f"{ENTITY_TYPES.get(etype, str(etype))}.{num}", cookie, desc,
                              sec + nsec / 1e9, addr))
    return holders


def _get_info_request(name: str) -> bytes:
    raw = name.encode()
    payload = struct.pack("<I", len(raw)) + raw
    return struct.pack("<BBI", 1, 1, len(payload)) + payload


def lockers(ioctx: Any, obj: str) -> list[Holder]:
    """Who holds the DebVisor lock on ``obj`` now (expired leases are not reported)."""
    import rados

    try:
        _ret, out = ioctx.execute(obj, "lock", "get_info", _get_info_request(LOCK_NAME), 65536)
    except rados.ObjectNotFound:
        return []
    return decode_lockers(bytes(out))


class RadosLock:
    """Exclusive RADOS locks on ``lock.NAME`` for every name (sorted), with a renewed lease."""

    def __init__(self, ctx: Context, op: Operation, names: list[str], s: LockSettings) -> None:
        self.ctx, self.op, self.s = ctx, op, s
        self.names = sorted(set(names))
        self.cookie = f"{s.node}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.desc = json.dumps({
            "node": s.node, "pid": os.getpid(), "user": _operator(), "op": op.kind,
            "id": op.id, "title": op.title, "since": round(time.time(), 3),
        }, separators=(",", ":"))
        self.held: list[str] = []
        self.handle: Any = None
        self.ioctx: Any = None
        self.acquired_ms = 0.0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._mutex = threading.Lock()  # held/_valid_until/_lost, shared with the renewer
        self._valid_until: dict[str, float] = {}  # name → monotonic end of the lease we hold
        self._lost: dict[str, str] = {}  # name → why it was lost (one sentence)
        self._verified = 0.0  # monotonic time of lost()'s last check with the cluster
        self.checks = 0  # lost()'s checks with the cluster (for tests and the bench)

    # --- enter / exit -----------------------------------------------------------------

    def __enter__(self) -> RadosLock:
        from .client import require_rados

        rados = require_rados()
        t0 = time.monotonic()
        try:
            self._connect()
            deadline = time.monotonic() + self.s.wait
            for name in self.names:
                self._acquire(name, deadline)
                if self._renewer is None:  # renew the first name while waiting for the next
                    self._renewer = threading.Thread(target=self._renew, name="ceph-lock-renew",
                                                     daemon=True)
                    self._renewer.start()
        except rados.Error as exc:
            self._release()
            raise PreflightRefused(f"cannot take the Ceph cluster lock (pool {self.s.pool}): {exc}; "
                                   "nothing was changed") from None
        except BaseException:
            self._release()
            raise
        self.acquired_ms = (time.monotonic() - t0) * 1000
        log.debug(f"cluster lock {', '.join(self.names)} taken in {self.acquired_ms:.0f} ms "
                  f"(pool {self.s.pool}, lease {self.s.lease}s)")
        self._verified = time.monotonic()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._release()

    # --- fencing ----------------------------------------------------------------------

    def lost(self) -> str | None:
        """None while every name is still ours; once one was lost, why (one sentence).

        The engine calls it before each step and before "finished". It reads the renewer's
        record and each lease's end on this node's monotonic clock (a process stopped or
        stalled past its lease has lost the lock even if nobody took it meanwhile: a
        re-lock would not undo what another node may have done in between), and, at most
        once per third of the lease, asks the cluster whether our cookie still holds each
        lock (one ``lock get_info`` per name)."""
        now = time.monotonic()
        with self._mutex:
            for name in self.held:
                if name not in self._lost and now > self._valid_until.get(name, now):
                    self._mark_lost(name, self._expired(name, now))
            if self._lost:
                return next(iter(self._lost.values()))
            due = now - self._verified >= max(self.s.lease / 3, 0.5)
        if not due or self.ioctx is None:
            return None
        import rados

        self._verified = now
        self.checks += 1
        for name in list(self.held):
            try:
                holders = lockers(self.ioctx, OBJ_PREFIX + name)
            except (rados.Error, ValueError) as exc:  # cannot tell: the lease clock decides
                log.warn(f"could not check cluster lock {name!r}: {exc}")
                continue
            if not any(h.cookie == self.cookie for h in holders):
                who = "; ".join(h.summary() for h in holders)
                with self._mutex:
                    self._mark_lost(name, f"cluster lock {name!r} was lost: the cluster no longer "
                                          f"lists this process as its holder (it was broken or "
                                          f"its lease ran out)"
                                          + (f"; it is held by {who}" if who else ""))
        with self._mutex:
            return next(iter(self._lost.values()), None)

    def _others(self, name: str) -> str:
        """Who else holds ``name`` now ('' when nobody, or when the cluster cannot say)."""
        with contextlib.suppress(Exception):
            return "; ".join(h.summary() for h in lockers(self.ioctx, OBJ_PREFIX + name)
                             if h.cookie != self.cookie)
        return ""

    def _expired(self, name: str, now: float) -> str:
        ended = time.time() - (now - self._valid_until[name])
        who = self._others(name)
        return (f"cluster lock {name!r} was lost: its {self.s.lease}s lease ran out at "
                f"{time.strftime('%H:%M:%S', time.localtime(ended))} before it was renewed"
                + (f" and {who} took it" if who else ""))

    def _mark_lost(self, name: str, why: str) -> None:
        """Record (once) that ``name`` is lost; the caller holds ``_mutex``."""
        if name not in self._lost:
            self._lost[name] = why
            log.error(why)

    # --- internals --------------------------------------------------------------------

    def _connect(self) -> None:
        from .client import require_rados

        rados = require_rados()
        c = Settings.from_ctx(self.ctx)
        self.handle = rados.Rados(conffile=c.conf, name=c.client if c.client.startswith("client.")
                                  else f"client.{c.client}",
                                  conf={"keyring": c.keyring, "client_mount_timeout": str(c.timeout),
                                        "rados_osd_op_timeout": str(c.timeout),
                                        "rados_mon_op_timeout": str(c.timeout)})
        self.handle.connect(timeout=c.timeout)
        self._ensure_pool(rados, c.timeout)
        self.ioctx = self.handle.open_ioctx(self.s.pool)

    def _ensure_pool(self, rados: Any, timeout: int) -> None:
        if self.handle.pool_exists(self.s.pool):
            return
        log.info(f"creating the Ceph pool {self.s.pool!r} for DebVisor's cluster locks")
        for cmd in ({"prefix": "osd pool create", "pool": self.s.pool},
                    {"prefix": "osd pool application enable", "pool": self.s.pool, "app": "debvisor"}):
            ret, _out, err = self.handle.mon_command(json.dumps(cmd), b"", timeout=timeout)
            if ret != 0:
                raise rados.Error(f"{cmd['prefix']} {self.s.pool} failed ({ret}): {err.strip()}")

    def _acquire(self, name: str, deadline: float) -> None:
        import rados

        obj = OBJ_PREFIX + name
        told = False
        while True:
            start = time.monotonic()  # the lease runs from before the request
            try:
                self.ioctx.lock_exclusive(obj, LOCK_NAME, self.cookie, self.desc, self.s.lease)
                with self._mutex:
                    self._valid_until[name] = start + self.s.lease
                    self.held.append(name)
                return
            except rados.ObjectBusy:
                pass
            holders = lockers(self.ioctx, obj)
            who = "; ".join(h.summary() for h in holders) or "a holder that just left"
            if not holders and time.monotonic() < deadline:
                # released (or its lease ran out) between the two calls: retry soon, not at once
                time.sleep(min(POLL / 4, max(deadline - time.monotonic(), 0)))
                continue
            if time.monotonic() >= deadline:
                raise PreflightRefused(
                    f"cluster lock {name!r} is held by {who}; another operation is running on the "
                    f"cluster (waited {self.s.wait:g}s); nothing was changed")
            if not told:
                log.info(f"waiting up to {self.s.wait:g}s for cluster lock {name!r} held by {who}")
                told = True
            time.sleep(POLL)

    def _renew(self) -> None:
        import rados

        period = max(self.s.lease / 3, 0.5)
        while not self._stop.wait(period):
            for name in list(self.held):
                start = time.monotonic()
                with self._mutex:
                    if name in self._lost:
                        continue
                    ends = self._valid_until[name]
                    if start > ends:  # stalled past the lease: never re-take
                        self._mark_lost(name, self._expired(name, start))
                        continue
                try:  # MUST_RENEW: never re-take a lock that was broken or taken and released
                    self.ioctx.lock_exclusive(OBJ_PREFIX + name, LOCK_NAME, self.cookie, self.desc,
                                              self.s.lease, LOCK_FLAG_MUST_RENEW)
                    with self._mutex:
                        if time.monotonic() > ends:  # the cluster may have seen it after the end
                            self._mark_lost(name, self._expired(name, time.monotonic()))
                        else:
                            self._valid_until[name] = start + self.s.lease
                except (rados.ObjectBusy, rados.ObjectNotFound):
                    who = self._others(name)
                    with self._mutex:
                        self._mark_lost(name, f"cluster lock {name!r} was lost: it was broken or its "
                                              f"lease ran out" + (f", and {who} took it" if who else ""))
                except rados.Error as exc:
                    log.warn(f"could not renew cluster lock {name!r}: {exc}")

    def _release(self) -> None:
        import rados

        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        for name in reversed(self.held):
            try:
                self.ioctx.unlock(OBJ_PREFIX + name, LOCK_NAME, self.cookie)
            except rados.Error as exc:  # expired and taken, or mons gone: the lease ends it
                if name in self._lost:  # already reported as lost: nothing of ours to release
                    log.debug(f"cluster lock {name!r} was lost before its release: {exc}")
                else:
                    log.warn(f"could not release cluster lock {name!r}: {exc}")
        self.held = []
        if self.ioctx is not None:
            self.ioctx.close()
            self.ioctx = None
        if self.handle is not None:
            self.handle.shutdown()
            self.handle = None


def _operator() -> str:
    from debvisor_core.identity import operator

    return operator()


def cluster_lock(ctx: Context, op: Operation, names: list[str]) -> RadosLock | None:
    """The hook's body: a :class:`RadosLock` when `[ceph] cluster_lock = true`, else None."""
    s = LockSettings.from_ctx(ctx)
    if not s.enabled:
        return None
    conf = Settings.from_ctx(ctx).conf
    if not Settings.from_ctx(ctx).configured():
        log.warn(f"[ceph] cluster_lock is on but {conf} does not exist: only the node-local lock "
                 "is held")
        return None
    return RadosLock(ctx, op, names, s)


# -- administration: `debvisor cluster lock status|break` -------------------------------------
def _break_request(name: str, entity: str, cookie: str) -> bytes:
    """``cls_lock_break_op``: the lock name, the locker (entity_name_t) and its cookie."""
    kind, _, num = entity.partition(".")
    types = {v: k for k, v in ENTITY_TYPES.items()}
    if kind not in types or not num.lstrip("-").isdigit():
        raise ValueError(f"not a RADOS entity: {entity!r}")

    def text(s: str) -> bytes:
        raw = s.encode()
        return struct.pack("<I", len(raw)) + raw

    payload = text(name) + struct.pack("<Bq", types[kind], int(num)) + text(cookie)
    return struct.pack("<BBI", 1, 1, len(payload)) + payload


def _holder_dict(h: Holder, now: float) -> dict[str, Any]:
    d = h.info()
    return {"summary": h.summary(now), "node": d.get("node"), "pid": d.get("pid"),
            "user": d.get("user"), "operation": d.get("id"), "kind": d.get("op"),
            "title": d.get("title"), "since": d.get("since"),
            "lease_left_s": round(max(h.expires - now, 0), 1) if h.expires else None,
            "entity": h.entity, "cookie": h.cookie, "addr": h.addr}


@dataclass
class RadosLockAdmin:
    """The RADOS locks in ``[ceph] lock_pool``: who holds which, and breaking one."""

    ctx: Context
    s: LockSettings

    @contextlib.contextmanager
    def _pool(self) -> Any:
        from .client import session

        with session(self.ctx) as c:
            if not c.handle.pool_exists(self.s.pool):
                yield None
                return
            io = c.handle.open_ioctx(self.s.pool)
            try:
                yield io
            finally:
                io.close()

    def status(self) -> list[dict[str, Any]]:
        now = time.time()
        with self._pool() as io:
            if io is None:
                return []
            objs = sorted(o.key for o in io.list_objects() if o.key.startswith(OBJ_PREFIX))
            return [{"name": o[len(OBJ_PREFIX):], "scope": "cluster",
                     "holders": [_holder_dict(h, now) for h in lockers(io, o)]} for o in objs]

    def break_lock(self, name: str) -> list[dict[str, Any]]:
        import rados

        now = time.time()
        with self._pool() as io:
            if io is None:
                return []
            obj = OBJ_PREFIX + name
            broken = []
            for h in lockers(io, obj):
                try:
                    io.execute(obj, "lock", "break_lock", _break_request(LOCK_NAME, h.entity,
                                                                          h.cookie))
                except rados.ObjectNotFound:  # gone meanwhile (released, expired)
                    continue
                broken.append(_holder_dict(h, now))
            return broken


def lock_admin(ctx: Context) -> RadosLockAdmin | None:
    """The hook's body: the admin when `[ceph] cluster_lock = true` and Ceph is configured."""
    s = LockSettings.from_ctx(ctx)
    if not s.enabled or not Settings.from_ctx(ctx).configured():
        return None
    return RadosLockAdmin(ctx, s)
