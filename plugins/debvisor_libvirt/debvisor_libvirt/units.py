"""Parsing operator-typed quantities: bandwidths, durations. Errors are one clear sentence.

Limits: a bandwidth is at most 1 Tbit/s (:data:`MAX_BANDWIDTH_BPS`, 125 GB/s, about
119,209 MiB/s: far above any real link, and well inside libvirt's MiB/s ``unsigned
long``); a duration (``--max-downtime``, ``--timeout``) is at most 24 h
(:data:`MAX_DURATION_S`).
"""

from __future__ import annotations

import re

from debvisor_core.errors import BadInput

MIB = 1024 * 1024
MAX_BANDWIDTH_BPS = 1e12 / 8  # 1 Tbit/s in bytes per second
MAX_DURATION_S = 24 * 3600.0

# unit -> bytes per second
_BANDWIDTH_UNITS = {
    "bps": 1 / 8, "kbps": 1e3 / 8, "mbps": 1e6 / 8, "gbps": 1e9 / 8,
    "b/s": 1, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9,
    "kib/s": 1024, "mib/s": MIB, "gib/s": 1024 * MIB,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}
_NUMBER = r"(\d+(?:\.\d+)?)"


def parse_bandwidth(text: str) -> float:
    """``100Mbps``, ``1Gbps``, ``50MiB/s``, ``12MB/s`` -> bytes per second (> 0)."""
    m = re.fullmatch(_NUMBER + r"\s*([A-Za-z/]+)", text.strip())
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _BANDWIDTH_UNITS:
        raise BadInput(
            f"bad bandwidth {text!r}: use a number with a unit, e.g. 100Mbps, 1Gbps or 50MiB/s"
        )
    value = float(m.group(1)) * _BANDWIDTH_UNITS[unit]
    if value <= 0:
        raise BadInput(f"bad bandwidth {text!r}: it must be more than zero")
    if value > MAX_BANDWIDTH_BPS:
        raise BadInput(f"bad bandwidth {text!r}: it must be at most 1000Gbps (1 Tbit/s)")
    return value


def bandwidth_mib(bytes_per_s: float) -> int:
    """libvirt takes migration bandwidth in whole MiB/s: round to nearest, at least 1."""
    return max(1, round(bytes_per_s / MIB))


def parse_duration(text: str, *, default_unit: str, what: str,
                   maximum: float = MAX_DURATION_S) -> float:
    """``300ms``, ``10m``, ``30s``, ``1h`` (a bare number uses ``default_unit``) -> seconds
    in (0, ``maximum``]."""
    m = re.fullmatch(_NUMBER + r"\s*([a-z]*)", text.strip().lower())
    unit = (m.group(2) or default_unit) if m else ""
    if not m or unit not in _DURATION_UNITS:
        raise BadInput(f"bad {what} {text!r}: use a number with a unit, e.g. 300ms, 30s or 10m")
    seconds = float(m.group(1)) * _DURATION_UNITS[unit]
    if seconds <= 0:
        raise BadInput(f"bad {what} {text!r}: it must be more than zero")
    if seconds > maximum:
        raise BadInput(f"bad {what} {text!r}: it must be at most {_fmt_seconds(maximum)}")
    return seconds


def _fmt_seconds(s: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if s >= size and s % size == 0:
            return f"{s / size:g}{unit}"
    return f"{s:g}s"


def human_rate(bytes_per_s: float) -> str:
    """Bytes per second as MiB/s and Mbit/s."""
    return f"{bytes_per_s / MIB:.1f} MiB/s ({bytes_per_s * 8 / 1e6:.0f} Mbit/s)"
