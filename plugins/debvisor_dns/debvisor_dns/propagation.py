"""Propagation proof: poll every authoritative server until it serves the change.

A server has the change when its SOA serial is not older (RFC 1982) than the one
the primary had right after the UPDATE, and every changed RRset (values and TTL)
is what we wrote. Once the serial is there, the changed RRsets are asked all at once,
pipelined on one UDP socket (``wire.exchange_wire``); a later poll asks only for the
ones the server did not serve yet. Polls back off exponentially (1 ms, x1.5, up to
50 ms; tenacity) up to the timeout: no fixed sleeps. In a signed zone every answer is
DNSSEC-validated while polling, so a tampered answer fails at once instead of looking
"not yet there"; an answer identical to one already validated is not validated twice
(see :func:`served`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dns.exception
import dns.message

from debvisor_core import log
from debvisor_core.errors import StepFailed

from . import dnssec, wire
from .config import DnsConfig, Server, ZoneConfig
from .records import key, same, show_state

MIN_WAIT, MAX_WAIT, GROWTH = 0.001, 0.05, 1.5
MAX_ANSWERS = 100_000  # answers remembered per zone key set (see served)


class PropagationTimeout(StepFailed):
    """Some server did not serve the change before the timeout."""


def policy_text(timeout: float) -> str:
    return (f"poll after {MIN_WAIT * 1000:.0f} ms, each wait x{GROWTH} up to "
            f"{MAX_WAIT * 1000:.0f} ms, "
            f"give up after {timeout:g} s")


def served(server: Server, keys: dnssec.ZoneKeys, ch: dict[str, Any], q: dns.message.Message,
           answer: bytes) -> dict[str, Any]:
    """The state of ``ch``'s RRset in ``answer`` (the wire of ``server``'s answer to ``q``),
    DNSSEC-validated in a signed zone (Bogus raises).

    An answer byte for byte the same (its id aside) as one already parsed and validated for
    the same question, the secondary serving what the primary served, is that answer: it
    is not parsed and validated again, while every RRSIG in it is still inside its validity
    period (otherwise it is checked anew).
    """
    k = (ch["name"], ch["type"], answer[2:])
    seen = keys.answers.get(k)
    if seen is not None and seen[1] <= time.time() <= seen[2]:
        return seen[0]
    r = wire.answer(answer, q)
    got = wire.rrset_state(r, ch["name"], ch["type"])
    if keys.signed:
        dnssec.validate_answer(keys, r, ch["name"], ch["type"], str(server))
    if len(keys.answers) >= MAX_ANSWERS:  # a long-lived process: keep memory bounded
        keys.answers.clear()
    keys.answers[k] = (got, *dnssec.sig_window(r))
    return got


def _check_server(server: Server, zone: ZoneConfig,
                  pending: dict[str, tuple[dict[str, Any], dns.message.Message]],
                  keys: dnssec.ZoneKeys, target: int | None, timeout: float,
                  status: dict[str, Any]) -> bool:
    """One poll of one server: True when it serves every change (Bogus raises).

    ``pending`` holds the changes (and the query for each) this server has not been seen
    serving yet: once the SOA serial is at the target they are all asked at once
    (pipelined on one socket, every answer DNSSEC-validated), and each one it serves is
    dropped from ``pending``, so a later poll asks only for the rest.
    """
    r = wire.query(server, zone.name, "SOA", timeout=timeout, dnssec=keys.signed)
    serial = wire.soa_serial(r, zone.name)
    status["serial"] = serial
    if serial is None:
        status["why"] = "does not answer for the zone"
        return False
    if keys.signed:
        dnssec.validate_answer(keys, r, zone.name, "SOA", str(server))
    if target is not None and wire.serial_lt(serial, target):
        status["why"] = f"serves serial {serial} (want {target} or newer)"
        return False
    verdict = "valid" if keys.signed else "unsigned"
    todo = list(pending.items())
    answers = wire.exchange_wire(server, [q for _, (_, q) in todo], timeout=timeout)
    behind = None
    for (k, (ch, q)), answer in zip(todo, answers, strict=True):
        got = served(server, keys, ch, q, answer)
        if same(got, ch["new"]):
            del pending[k]
        elif behind is None:
            behind = (f"serves {ch['name']} {ch['type']} {show_state(got)}, not "
                      f"{show_state(ch['new'])}")
    if behind is not None:
        status["why"] = behind if len(pending) == 1 else f"{behind} (and {len(pending) - 1} more)"
        return False
    status["dnssec"] = verdict
    status.pop("why", None)
    return True


def poll_server(server: Server, zone: ZoneConfig, changes: list[dict[str, Any]],
          keys: dnssec.ZoneKeys, target: int | None, cfg: DnsConfig, t0: float,
          deadline: float) -> dict[str, Any]:
    """Poll one server until it serves ``changes`` or ``deadline``; its status dict."""
    from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_exponential

    status: dict[str, Any] = {"zone": zone.name, "server": str(server)}
    pending = {key(ch): (ch, wire.make_query(ch["name"], ch["type"], dnssec=keys.signed))
               for ch in changes}

    def once() -> bool:
        left = max(0.05, deadline - time.monotonic())
        try:
            return _check_server(server, zone, pending, keys, target, min(cfg.timeout, left),
                                 status)
        except (dns.exception.Timeout, OSError) as exc:
            status["why"] = "timed out" if isinstance(exc, dns.exception.Timeout) else (
                getattr(exc, "strerror", None) or type(exc).__name__)
            return False

    retrying = Retrying(
        retry=retry_if_result(lambda ok: not ok),
        wait=wait_exponential(multiplier=MIN_WAIT, min=MIN_WAIT, max=MAX_WAIT, exp_base=GROWTH),
        stop=stop_after_delay(max(0.0, deadline - time.monotonic())),
    )
    try:
        retrying(once)
    except RetryError:
        status["ok"] = False
        return status
    status["polls"] = retrying.statistics.get("attempt_number", 1)
    status["ok"] = True
    status["ms"] = round((time.monotonic() - t0) * 1000, 1)
    return status


def _already(proven: dict[tuple[str, str], dict[str, Any]] | None, zone: str, server: Server,
             changes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The status of a poll that already proved ``server`` serves all of ``changes``."""
    seen = (proven or {}).get((zone, str(server)))
    if seen and {key(ch) for ch in changes} <= set(seen["changes"]):
        return dict(seen["status"])
    return None


def await_all(cfg: DnsConfig, changes: list[dict[str, Any]], *, t0: float | None = None,
              targets: dict[str, int] | None = None, timeout: float | None = None,
              proven: dict[tuple[str, str], dict[str, Any]] | None = None
              ) -> list[dict[str, Any]]:
    """Wait until every server of every zone touched serves ``changes``; per-server results.

    Each server is polled by SOA serial until it reaches the zone's target, then asked once
    for every changed RRset. ``proven`` maps (zone, server) to a poll of this operation that
    already proved that server serves those changes (the primary, by the UPDATE's verify):
    it is not asked again.

    Raises :class:`dnssec.Bogus` at the first bogus answer and
    :class:`PropagationTimeout` when a server is still behind at the timeout.
    """
    timeout = timeout or cfg.propagation_timeout
    t0 = t0 if t0 is not None else time.monotonic()
    deadline = time.monotonic() + timeout
    log.debug(f"propagation retry policy: {policy_text(timeout)}")
    by_zone: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ch in changes:
        by_zone[ch["zone"]].append(ch)
    jobs = []
    done: list[dict[str, Any]] = []
    for zname, zchanges in by_zone.items():
        zone = cfg.zone(zname)
        keys = dnssec.zone_keys(zone, cfg.key(zone).dns_key(), timeout=cfg.timeout,
                                mode=cfg.dnssec)
        target = (targets or {}).get(zone.name)
        for server in dict.fromkeys(zone.all_servers):
            seen = _already(proven, zone.name, server, zchanges)
            if seen is not None:
                done.append(seen)
            else:
                jobs.append((server, zone, zchanges, keys, target))
    with ThreadPoolExecutor(max_workers=min(16, len(jobs) or 1)) as pool:
        futures = [pool.submit(poll_server, *job, cfg, t0, deadline) for job in jobs]
        results = done + [f.result() for f in futures]  # a Bogus answer raises here
    late = [r for r in results if not r["ok"]]
    for r in results:
        if r["ok"]:
            log.info(f"{r['server']} serves the change after {r['ms']:.0f} ms "
                     f"(serial {r['serial']}, DNSSEC {r['dnssec']})")
    if late:
        detail = "; ".join(f"{r['server']} {r.get('why', 'no answer')}" for r in late)
        raise PropagationTimeout(f"not every authoritative server serves the change after "
                                 f"{timeout:g} s: {detail}")
    return results


def current_serial(zone: ZoneConfig, server: Server, timeout: float) -> int | None:
    r = wire.query(server, zone.name, "SOA", timeout=timeout)
    return wire.soa_serial(r, zone.name)

