"""The DNS plugin's steps: UPDATE a zone's RRsets, wait for propagation, wait out a TTL.

Steps report what they did into the operation's result (``op.result["dns"]``,
which the audit event carries) as they happen. A resumed operation's UPDATEs applied in
an earlier run report their change, attempts and primary from their journalled records
(:meth:`UpdateRRsets.add_result`); the serial a primary served a change at comes from
the verify of the run that verified it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from debvisor_core import log
from debvisor_core.context import Context
from debvisor_core.engine import Step
from debvisor_core.errors import StepFailed

from . import config as dnsconfig
from .records import describe_change, key, same, show_state, state


class DnsStep(Step):
    """Base class: reports old/new values, primaries and timings into the running
    operation's result (``ctx.operation.result["dns"]``)."""

    def report(self, ctx: Context) -> dict[str, Any]:
        op = ctx.operation
        result: dict[str, Any] = op.result if op is not None else self.__dict__.setdefault("_result", {})
        out: dict[str, Any] = result.setdefault("dns", {})
        return out

    def timing(self, ctx: Context) -> dict[str, Any]:
        """Monotonic timestamps shared by this operation's DNS steps (not reported)."""
        op = ctx.operation
        scratch: dict[str, Any] = op.scratch if op is not None else self.__dict__.setdefault("_scratch", {})
        out: dict[str, Any] = scratch.setdefault("dns-timing", {})
        return out


def _journalled_state(v: Any) -> dict[str, Any] | None:
    """An RRset state read back from a journal (a file: data), or None if it is not one."""
    if not isinstance(v, dict) or not isinstance(v.get("values"), list) or \
            not all(isinstance(x, str) for x in v["values"]) or \
            not (v.get("ttl") is None or type(v.get("ttl")) is int):
        return None
    return state(v.get("ttl"), v["values"])


#: an attempt's fields as ``wire.send_update`` records them
_ATTEMPT: dict[str, tuple[type, ...]] = {"server": (str,), "result": (str,), "ms": (int, float)}


def _journalled_attempts(v: Any) -> list[dict[str, Any]]:
    """The well-formed attempts of a journalled list (at most 64), with their fields only."""
    if not isinstance(v, list):
        return []
    return [{k: a[k] for k in _ATTEMPT} for a in v[:64] if isinstance(a, dict)
            and all(type(a.get(k)) in types for k, types in _ATTEMPT.items())]


def _summary(changes: list[dict[str, Any]], zone: str | None, limit: int = 3) -> str:
    parts = [describe_change(c, zone) for c in changes[:limit]]
    if len(changes) > limit:
        parts.append(f"and {len(changes) - limit} more")
    return "; ".join(parts)


@dataclass
class UpdateRRsets(DnsStep):
    """One TSIG-signed UPDATE of one zone, with prerequisites; undo restores the prior RRsets."""

    TYPE = "dns.update"
    NAME = "DnsUpdate"

    zone: str
    changes: list[dict[str, Any]]
    purpose: str = ""

    def describe(self, ctx: Context) -> str:
        lead = f"{self.purpose}: " if self.purpose else ""
        return f"{lead}UPDATE {self.zone.rstrip('.')}: {_summary(self.changes, self.zone)}"

    def _setup(self, ctx: Context) -> tuple[dnsconfig.DnsConfig, dnsconfig.ZoneConfig, Any]:
        cfg = dnsconfig.load(ctx)
        zone = cfg.zone(self.zone)
        return cfg, zone, cfg.key(zone)

    def check(self, ctx: Context) -> None:
        from . import dnssec, wire
        from .records import valid_rdata

        cfg, zone, tkey = self._setup(ctx)
        for ch in self.changes:
            if not (ch["name"] == zone.name or ch["name"].endswith("." + zone.name)):
                raise StepFailed(f"{ch['name']} is outside zone {zone.name}")
            for v in ch["new"]["values"]:
                if not valid_rdata(ch["type"], v):
                    raise StepFailed(f"{v!r} is not a valid {ch['type']} value")
        wire.prove_key(zone, tkey.dns_key(), timeout=cfg.timeout)
        dnssec.zone_keys(zone, tkey.dns_key(), timeout=cfg.timeout, mode=cfg.dnssec)

    def snapshot(self, ctx: Context) -> dict[str, Any]:
        from . import wire

        cfg, zone, tkey = self._setup(ctx)
        dkey = tkey.dns_key()  # TCP + TSIG: the undo writes these values back with our key
        # one TCP connection, every read (and the SOA) pipelined on it, each signed
        answers = wire.read_signed_many(
            zone, [*((ch["name"], ch["type"]) for ch in self.changes), (zone.name, "SOA")],
            timeout=cfg.timeout, key=dkey)
        before = {key(ch): wire.rrset_state(r, ch["name"], ch["type"])
                  for ch, r in zip(self.changes, answers[:-1], strict=True)}
        return {"before": before, "serial": wire.soa_serial(answers[-1], zone.name)}

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from . import wire

        cfg, zone, tkey = self._setup(ctx)
        prereq = {key(ch): ch["old"] if ch["old"] is not None else prior["before"][key(ch)]
                  for ch in self.changes}
        todo = [ch for ch in self.changes if not same(prereq[key(ch)], ch["new"])]
        if not todo:
            log.info(f"{self.zone}: already as wanted; no UPDATE sent")
            self._report(ctx, prior["before"], [], None)
            return {"noop": True}
        dkey = tkey.dns_key()
        out = wire.UpdateOutcome(None, "")  # its attempts, even when sending raises
        try:
            wire.send_update(zone, lambda: wire.make_update(zone.name, dkey, todo, prereq),
                             timeout=cfg.update_timeout, key_name=tkey.name, out=out)
            if out.rcode != "NOERROR":
                self._prereq_failed(cfg, zone, todo, out)
        except BaseException:
            self._report(ctx, prior["before"], out.attempts, None)
            raise
        assert out.server is not None
        log.info(f"primary {out.server} took the UPDATE of {self.zone.rstrip('.')} "
                 f"({len(todo)} RRset{'s' if len(todo) != 1 else ''})")
        self._report(ctx, prior["before"], out.attempts, str(out.server))
        self.timing(ctx).setdefault("t_update", out.sent_at)
        return {"primary": str(out.server), "sent": [key(ch) for ch in todo],
                "attempts": out.attempts}

    def add_result(self, ctx: Context, record: dict[str, Any]) -> None:
        """The change (old → new), the primaries tried and the one that took it — already
        reported when this run applied the step (as it happened, failed or not), else (a
        resumed operation) from the record; and, for a resumed operation's propagation
        step, the serial the zone must reach (one past the snapshot's: no verify of this
        run saw the primary's)."""
        # the record comes from the journal (on resume): only what has the right shape
        primary = record.get("primary")
        primary = primary if isinstance(primary, str) and 0 < len(primary) <= 300 else None
        if not self.__dict__.get("_reported"):
            before = record.get("before")
            before = {k: _journalled_state(v) for k, v in before.items()} \
                if isinstance(before, dict) else {}
            self._report(ctx, before, _journalled_attempts(record.get("attempts")), primary)
        serial = record.get("serial")
        if primary and type(serial) is int and 0 <= serial < 2**32:
            floors = self.timing(ctx).setdefault("serial_floors", {})
            floors[self.zone] = (serial + 1) % 2**32

    def _report(self, ctx: Context, before: dict[str, Any], attempts: list[dict[str, Any]],
                primary: str | None) -> None:
        self.__dict__["_reported"] = True  # once per run (the step object is this run's)
        rep = self.report(ctx)
        rep.setdefault("changes", []).extend(
            {"zone": self.zone, "name": ch["name"], "type": ch["type"],
             "old": before.get(key(ch)), "new": ch["new"]} for ch in self.changes)
        if attempts:
            rep.setdefault("attempts", []).extend(attempts)
        if primary:
            rep.setdefault("primaries", {})[self.zone] = primary

    def _prereq_failed(self, cfg: dnsconfig.DnsConfig, zone: dnsconfig.ZoneConfig,
                       todo: list[dict[str, Any]], out: Any) -> None:
        from . import wire

        dkey = cfg.key(zone).dns_key()
        answers = wire.read_signed_many(zone, [(ch["name"], ch["type"]) for ch in todo],
                                        timeout=cfg.timeout, key=dkey)
        now = {key(ch): wire.rrset_state(r, ch["name"], ch["type"])
               for ch, r in zip(todo, answers, strict=True)}
        timed_out = any(a["result"] == "timed out" for a in out.attempts)
        if timed_out and all(same(now[key(ch)], ch["new"]) for ch in todo):
            log.warn("an earlier primary timed out but had applied the UPDATE; accepting it")
            out.sent_at = time.monotonic()  # when it was seen applied (its timings start here)
            return
        moved = [f"{ch['name']} {ch['type']} is now {show_state(now[key(ch)])}" for ch in todo]
        raise wire.PrerequisiteFailed(
            f"the records changed since they were read ({out.rcode} from {out.server}): "
            f"{'; '.join(moved[:3])}; nothing was overwritten — run the command again to "
            "plan against the current records")

    def verify(self, ctx: Context, record: dict[str, Any]) -> None:
        """The primary that took the UPDATE serves it (inline signing lags a few ms)."""
        from . import dnssec, propagation

        if record.get("noop"):
            return
        cfg, zone, tkey = self._setup(ctx)
        sent = set(record.get("sent", []))
        changes = [{**ch, "zone": self.zone} for ch in self.changes if key(ch) in sent]
        server = dnsconfig.parse_server(record["primary"], "primary")
        serial = record.get("serial")
        target = (serial + 1) % 2**32 if serial is not None else None
        keys = dnssec.zone_keys(zone, tkey.dns_key(), timeout=cfg.timeout, mode=cfg.dnssec)
        t0 = time.monotonic()
        status = propagation.poll_server(server, zone, changes, keys, target, cfg,
                                         self.timing(ctx).get("t_update", t0),
                                         t0 + min(cfg.propagation_timeout, 10.0))
        if not status["ok"]:
            raise StepFailed(f"{server} answered NOERROR but does not serve the change: "
                             f"{status.get('why', 'no answer')}")
        self.report(ctx).setdefault("serials", {})[self.zone] = status["serial"]
        # the propagation step need not ask this server again for these changes
        proven = self.timing(ctx).setdefault("proven", {})
        proven[(self.zone, str(server))] = {"status": status, "changes": sent}

    def undo(self, ctx: Context, record: dict[str, Any]) -> None:
        """Put back the exact RRsets of the snapshot, unless someone changed them since."""
        from . import propagation, wire

        cfg, zone, tkey = self._setup(ctx)
        dkey = tkey.dns_key()
        before = record.get("before", {})
        restore, conflicts = [], []
        mine = [ch for ch in self.changes if key(ch) in before]
        answers = wire.read_signed_many(zone, [(ch["name"], ch["type"]) for ch in mine],
                                        timeout=cfg.timeout, key=dkey) if mine else []
        for ch, r in zip(mine, answers, strict=True):
            now = wire.rrset_state(r, ch["name"], ch["type"])
            if same(now, before[key(ch)]):
                continue
            if same(now, ch["new"]):
                restore.append({"zone": self.zone, "name": ch["name"], "type": ch["type"],
                                "old": ch["new"], "new": before[key(ch)]})
            else:
                conflicts.append(f"{ch['name']} {ch['type']} is {show_state(now)}")
        if conflicts:
            raise StepFailed("not restoring: changed by someone else since this operation: "
                             + "; ".join(conflicts))
        if not restore:
            return
        prereq = {key(ch): ch["old"] for ch in restore}
        out = wire.send_update(zone, lambda: wire.make_update(zone.name, dkey, restore, prereq),
                               timeout=cfg.update_timeout, key_name=tkey.name)
        if out.rcode != "NOERROR":
            raise StepFailed(f"not restoring {self.zone}: the records changed while undoing "
                             f"({out.rcode} from {out.server})")
        log.info(f"primary {out.server} restored {len(restore)} RRset(s) of "
                 f"{self.zone.rstrip('.')}: {_summary(restore, self.zone)}")
        try:
            propagation.await_all(cfg, restore, t0=out.sent_at)
        except propagation.PropagationTimeout as exc:
            # Not "rolled back" while some server still serves the new value: the engine
            # reports rollback-incomplete (exit 5) and the operator checks that server.
            raise StepFailed(f"restored {self.zone.rstrip('.')} on primary {out.server}, but "
                             f"{exc.message}") from None


@dataclass
class AwaitPropagation(DnsStep):
    """Poll every authoritative server until all serve the changes (DNSSEC-validated)."""

    TYPE = "dns.propagation"
    NAME = "DnsPropagation"

    changes: list[dict[str, Any]]
    timeout: float | None = None

    def describe(self, ctx: Context) -> str:
        zones = sorted({c["zone"].rstrip(".") for c in self.changes})
        n = len(self.changes)
        return (f"wait until every authoritative server of {', '.join(zones)} serves the "
                f"{n} change{'s' if n != 1 else ''} (SOA serial and records, DNSSEC-validated)")

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from . import propagation

        cfg = dnsconfig.load(ctx)
        rep = self.report(ctx)
        timing = self.timing(ctx)
        # the serial each primary served the change at, else (a resumed operation whose
        # UPDATE was verified in an earlier run) one past the serial before it
        targets = {**timing.pop("serial_floors", {}), **(rep.get("serials") or {})}
        results = propagation.await_all(cfg, self.changes, t0=timing.pop("t_update", None),
                                        targets=targets, timeout=self.timeout,
                                        proven=timing.pop("proven", None))
        rep.setdefault("propagation", []).extend(
            {k: r.get(k) for k in ("zone", "server", "ms", "serial", "dnssec")} for r in results)
        return {}


@dataclass
class WaitOutTtl(DnsStep):
    """Wait the old TTL out, so no cache holds the old TTL when the value changes."""

    TYPE = "dns.wait-ttl"
    NAME = "DnsWaitTtl"

    seconds: int
    names: list[str]

    def describe(self, ctx: Context) -> str:
        return (f"wait {self.seconds} s (the old TTL of {', '.join(self.names)}) so caches "
                "expire it before the value changes")

    def apply(self, ctx: Context, prior: dict[str, Any]) -> dict[str, Any]:
        from debvisor_core.output import Progress

        log.info(f"waiting {self.seconds} s for the old TTL of {', '.join(self.names)} to expire "
                 "in resolver caches")
        t0 = time.monotonic()
        deadline = t0 + self.seconds
        with Progress("waiting out the old TTL", unit="seconds", every=10) as bar:
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, 0.5))
                bar.update(time.monotonic() - t0, self.seconds)
        self.report(ctx)["waited_ttl_s"] = self.seconds
        return {}


@dataclass
class VmRecord(UpdateRRsets):
    """A VM's A/AAAA (and PTR) record, contributed to `hv register` / `hv unregister`."""

    TYPE = "dns.vm-record"
    NAME = "DnsVmRecord"
    ORDER = 90


@dataclass
class VmPropagation(AwaitPropagation):
    """Propagation of a VM's record, inside the hv operation."""

    TYPE = "dns.vm-propagation"
    NAME = "DnsVmPropagation"
    ORDER = 91
