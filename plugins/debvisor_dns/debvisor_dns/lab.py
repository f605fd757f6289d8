"""Lab service ``dns``: a BIND9 primary and secondary on 127.0.0.1 for the DNS plugin's tests.

The primary serves ``lab.debvisor.test.`` and ``0.77.10.in-addr.arpa.``, signs them inline
(``dnssec-policy default``) and accepts RFC 2136 updates signed with the TSIG key in
``tsig.key``. The secondary transfers both (signed) zones with that key and refuses
updates. Ports are picked once and kept in ``ports.json`` so restarts reuse them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype

from debvisor_core.lab import LabContext, LabService
from debvisor_core.lab.process import (
    LabError,
    alive,
    free_port,
    port_open,
    read_pid,
    spawn,
    stop,
    stop_pidfile,
    wait_for,
)

from .tsigkey import TsigKey, read_tsig_keyfile, write_tsig_keyfile

HOST = "127.0.0.1"
ZONE = "lab.debvisor.test"
REVERSE_ZONE = "0.77.10.in-addr.arpa"
ZONES = (ZONE, REVERSE_ZONE)
KEY_NAME = "debvisor-lab"
UNKNOWN_KEY_NAME = "debvisor-lab-unknown"
ALGORITHM = "hmac-sha256"
DEFAULT_TTL = 300
ROLES = ("primary", "secondary")
START_TIMEOUT = 30.0

#: refresh and retry 2 s (the secondary allows that: min-refresh-time), so a NOTIFY the
#: secondary never gets costs 2 s, not the SOA timer — a real secondary's refresh catches
#: up on a lost NOTIFY the same way. Seen once in CI: the primary logged "sending notifies
#: (serial 47)", the secondary received none, and none came again until the next update's
#: 10 s later (the propagation step's timeout had rolled the change back by then). With
#: the NOTIFY dropped (iptables) the secondary caught up in 1.2 s, against 4.6 s for the
#: primary's retry before.
_SOA = f"""$TTL {DEFAULT_TTL}
@\tIN SOA ns1.{ZONE}. hostmaster.{ZONE}. ( 1 2 2 86400 60 )
\tIN NS ns1.{ZONE}.
"""
_ZONE_DATA = {
    ZONE: _SOA + "ns1\tIN A 10.77.0.53\n",
    REVERSE_ZONE: _SOA + f"53\tIN PTR ns1.{ZONE}.\n",
}


def services() -> list[LabService]:
    """The DNS plugin's lab services."""
    return [
        LabService(
            name="dns",
            start=start,
            stop=stop_service,
            status=status,
            needs=["named"],
            root=True,
            description="BIND9 primary (TSIG updates, inline DNSSEC) and refusing secondary",
        )
    ]


# --- paths and state -------------------------------------------------------------------


def _conf(d: Path, role: str) -> Path:
    return d / role / "named.conf"


def _pidfile(d: Path, role: str) -> Path:
    return d / role / "named.pid"


def _log(d: Path, role: str) -> Path:
    return d / role / "named.log"


def _key_files(d: Path) -> dict[str, Path]:
    return {
        "good": d / "tsig.key",
        "wrong": d / "tsig-wrong.key",
        "unknown": d / "tsig-unknown.key",
    }


def _udp_tcp_free(port: int) -> bool:
    """True if ``port`` can be bound on HOST for both TCP and UDP right now."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


def _pick_port(taken: set[int]) -> int:
    for _ in range(50):
        port = free_port(HOST)
        if port not in taken and _udp_tcp_free(port):
            return port
    raise LabError("dns: could not find a free TCP+UDP port on 127.0.0.1")


def _ports(d: Path, *, choose: bool) -> dict[str, int]:
    """The recorded ports; with ``choose``, replace any that are no longer free and save."""
    path = d / "ports.json"
    try:
        ports = {r: int(p) for r, p in json.loads(path.read_text()).items() if r in ROLES}
    except (OSError, ValueError, AttributeError):
        ports = {}
    if choose:
        for role in ROLES:
            port = ports.get(role)
            others = {p for r, p in ports.items() if r != role}
            if port is None or port in others or not _udp_tcp_free(port):
                ports[role] = _pick_port(others)
        path.write_text(json.dumps(ports, indent=2) + "\n")
    return ports


def _secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _ensure_keys(d: Path) -> TsigKey:
    """Create the good, wrong (same name) and unknown (other name) key files once."""
    files = _key_files(d)
    if not files["good"].exists():
        write_tsig_keyfile(files["good"], TsigKey(KEY_NAME, ALGORITHM, _secret()))
    key = read_tsig_keyfile(files["good"])
    if not files["wrong"].exists():
        write_tsig_keyfile(files["wrong"], TsigKey(key.name, key.algorithm, _secret()))
    if not files["unknown"].exists():
        write_tsig_keyfile(files["unknown"], TsigKey(UNKNOWN_KEY_NAME, ALGORITHM, _secret()))
    return key


# --- named.conf ------------------------------------------------------------------------


def _options(d: Path, role: str, port: int, extra: str) -> str:
    rd = d / role
    return f"""include "{_key_files(d)["good"]}";
options {{
\tdirectory "{rd}";
\tpid-file none;
\tlock-file none;
\tsession-keyfile "{rd}/session.key";
\tmanaged-keys-directory "{rd}";
\tkey-directory "{rd}/keys";
\tlisten-on port {port} {{ {HOST}; }};
\tlisten-on-v6 {{ none; }};
\trecursion no;
\tdnssec-validation no;
\tallow-query {{ any; }};
{extra}}};
controls {{ }};
"""


def _primary_conf(d: Path, ports: dict[str, int], key: TsigKey) -> str:
    text = _options(
        d,
        "primary",
        ports["primary"],
        f"""\tnotify explicit;
\tnotify-delay 0;
\tnotify-rate 1000;
\tstartup-notify-rate 1000;
\tmax-ixfr-ratio unlimited;
\talso-notify {{ {HOST} port {ports["secondary"]}; }};
\tallow-transfer {{ key "{key.name}"; }};
""",
    )
    for zone in ZONES:
        text += f"""zone "{zone}" {{
\ttype primary;
\tfile "{zone}.db";
\tallow-update {{ key "{key.name}"; }};
\tdnssec-policy default;
\tinline-signing yes;
}};
"""
    return text


def _secondary_conf(d: Path, ports: dict[str, int], key: TsigKey) -> str:
    text = _options(
        d,
        "secondary",
        ports["secondary"],
        """\tnotify no;
\tserial-query-rate 1000;
\tmin-refresh-time 2;
\tmin-retry-time 2;
\tallow-transfer { none; };
\tallow-update { none; };
\tallow-update-forwarding { none; };
\tmax-ixfr-ratio unlimited;
""",
    )
    for zone in ZONES:
        text += f"""zone "{zone}" {{
\ttype secondary;
\tfile "{zone}.db";
\tmasterfile-format text;
\tprimaries {{ {HOST} port {ports["primary"]} key "{key.name}"; }};
}};
"""
    return text


def _write_configs(d: Path, ports: dict[str, int], key: TsigKey) -> None:
    for role in ROLES:
        (d / role / "keys").mkdir(parents=True, exist_ok=True)
        os.chmod(d / role, 0o700)
    _conf(d, "primary").write_text(_primary_conf(d, ports, key))
    _conf(d, "secondary").write_text(_secondary_conf(d, ports, key))
    for zone, data in _ZONE_DATA.items():
        zf = d / "primary" / f"{zone}.db"
        if not zf.exists():  # keep updates (journals) across restarts
            zf.write_text(data)


# --- queries ---------------------------------------------------------------------------


def _query(port: int, zone: str, rdtype: str, timeout: float = 0.5) -> dns.message.Message | None:
    """An authoritative answer for ``zone``/``rdtype`` from HOST:port, or None."""
    q = dns.message.make_query(zone + ".", rdtype)
    try:
        r = dns.query.tcp(q, HOST, port=port, timeout=timeout)  # refused fast while starting
    except (OSError, dns.exception.DNSException):
        return None
    if r.rcode() != dns.rcode.NOERROR or not r.flags & dns.flags.AA or not r.answer:
        return None
    return r


def answers(server: str, name: str, rdtype: str) -> list[str]:
    """The ``rdtype`` records ``server`` ("HOST:PORT") answers for ``name``, sorted (empty
    when it has none): what a test checks a change against."""
    host, port = server.rsplit(":", 1)
    resp = dns.query.udp(dns.message.make_query(name, rdtype), host, port=int(port), timeout=3)
    if resp.rcode() != dns.rcode.NOERROR:
        return []
    want = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in resp.answer if rrset.rdtype == want for rd in rrset)


def soa_serial(port: int, zone: str) -> int | None:
    """The SOA serial HOST:port serves for ``zone`` (None if it does not answer for it)."""
    r = _query(port, zone, "SOA")
    if r is None:
        return None
    for rrset in r.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def _primary_ready(port: int) -> bool:
    return all(_query(port, z, "DNSKEY") is not None for z in ZONES)


def _notify(port: int, zone: str) -> None:
    """Send a NOTIFY for ``zone`` to HOST:port (from 127.0.0.1, which it takes as the primary)."""
    m = dns.message.make_query(zone + ".", "SOA")
    m.set_opcode(dns.opcode.NOTIFY)
    m.flags = (m.flags | dns.flags.AA) & ~dns.flags.RD
    with contextlib.suppress(OSError, dns.exception.DNSException):
        dns.query.udp(m, HOST, port=port, timeout=0.5)


def _secondary_ready(ports: dict[str, int]) -> bool:
    """True once the secondary serves every zone at the primary's serial.

    The primary's start-up NOTIFY may have gone out before the secondary listened, so a
    lagging zone gets a NOTIFY from here instead of waiting for the SOA refresh timer.
    """
    ready = True
    for zone in ZONES:
        serial = soa_serial(ports["secondary"], zone)
        if serial is None or serial != soa_serial(ports["primary"], zone):
            ready = False
            if serial is not None:
                _notify(ports["secondary"], zone)
    return ready


# --- processes -------------------------------------------------------------------------


def _strays(d: Path, role: str) -> list[int]:
    """Pids of named processes running with this service's config (lost pid file)."""
    conf = str(_conf(d, role)).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"named") and conf in argv and alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids


def _stop_role(d: Path, role: str) -> None:
    stop_pidfile(_pidfile(d, role))
    for pid in _strays(d, role):
        stop(pid)


def _spawn(d: Path, role: str, port: int) -> int:
    argv = ["named", "-g", "-4", "-c", str(_conf(d, role)), "-p", str(port)]
    return spawn(argv, pidfile=_pidfile(d, role), log=_log(d, role), cwd=d / role)


def _running(d: Path, ports: dict[str, int]) -> dict[str, bool]:
    return {
        role: read_pid(_pidfile(d, role)) is not None
        and role in ports
        and port_open(HOST, ports[role], timeout=0.3)
        for role in ROLES
    }


def _addr(port: int) -> str:
    return f"{HOST}:{port}"


def _fragment(d: Path, ports: dict[str, int]) -> dict[str, Any]:
    files = _key_files(d)
    primary, secondary = _addr(ports["primary"]), _addr(ports["secondary"])
    zone_cfg = {"primaries": [primary], "servers": [primary, secondary]}
    return {
        "dns": {
            "default_ttl": DEFAULT_TTL,
            "tsig_key_file": str(files["good"]),
            "zones": {zone: dict(zone_cfg) for zone in ZONES},
            "lab": {
                "primary": primary,
                "secondary": secondary,
                "wrong_key_file": str(files["wrong"]),
                "unknown_key_file": str(files["unknown"]),
            },
        }
    }


# --- the service -----------------------------------------------------------------------


def start(lctx: LabContext) -> dict[str, Any]:
    """Start (or keep) the primary and the secondary; return the ``dns`` config fragment."""
    d = lctx.dir
    d.mkdir(parents=True, exist_ok=True)
    key = _ensure_keys(d)
    ports = _ports(d, choose=False)
    if all(_running(d, ports).values()):
        return _fragment(d, ports)
    for role in reversed(ROLES):  # a half-running pair: restart both on fresh config
        _stop_role(d, role)
    ports = _ports(d, choose=True)
    _write_configs(d, ports, key)
    try:
        pid = _spawn(d, "primary", ports["primary"])
        wait_for(
            lambda: _primary_ready(ports["primary"]),
            timeout=START_TIMEOUT,
            what="dns primary (named)",
            log=_log(d, "primary"),
            pid=pid,
        )
        pid = _spawn(d, "secondary", ports["secondary"])
        wait_for(
            lambda: _secondary_ready(ports),
            timeout=START_TIMEOUT,
            what="dns secondary (named)",
            log=_log(d, "secondary"),
            pid=pid,
        )
    except BaseException:
        stop_service(lctx)
        raise
    return _fragment(d, ports)


def stop_service(lctx: LabContext) -> None:
    """Stop both named processes (secondary first); keep zones, keys and ports for a restart."""
    for role in reversed(ROLES):
        _stop_role(lctx.dir, role)


def status(lctx: LabContext) -> dict[str, Any]:
    """``running`` plus each server's address, pid and state."""
    d = lctx.dir
    ports = _ports(d, choose=False)
    up = _running(d, ports)
    out: dict[str, Any] = {"running": all(up.values())}
    for role in ROLES:
        out[role] = {
            "address": _addr(ports[role]) if role in ports else None,
            "pid": read_pid(_pidfile(d, role)),
            "running": up[role],
        }
    return out
