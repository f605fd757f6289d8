"""Operator-typed quantities: sane upper limits (1 Tbit/s, 24 h), one sentence, exit 2."""

from __future__ import annotations

from typing import Any

import pytest
from debvisor_libvirt.units import (
    MAX_BANDWIDTH_BPS,
    bandwidth_mib,
    parse_bandwidth,
    parse_duration,
)

from debvisor_core.errors import BadInput


def test_limits_are_accepted_up_to_the_cap() -> None:
    assert parse_bandwidth("1000Gbps") == MAX_BANDWIDTH_BPS == 125e9
    assert bandwidth_mib(parse_bandwidth("1000Gbps")) == 119209  # fits libvirt's unsigned long
    assert parse_duration("24h", default_unit="s", what="timeout") == 86400
    assert parse_duration("1440m", default_unit="s", what="timeout") == 86400
    assert parse_duration("86400000", default_unit="ms", what="max downtime") == 86400


@pytest.mark.parametrize(("text", "message"), [
    ("1001Gbps", "bad bandwidth '1001Gbps': it must be at most 1000Gbps (1 Tbit/s)"),
    ("126GB/s", "bad bandwidth '126GB/s': it must be at most 1000Gbps (1 Tbit/s)"),
    ("99999999999999999999999999MiB/s", "bad bandwidth '99999999999999999999999999MiB/s': "
                                        "it must be at most 1000Gbps (1 Tbit/s)"),
])
def test_bandwidth_above_the_cap_is_refused(text: str, message: str) -> None:
    with pytest.raises(BadInput) as err:
        parse_bandwidth(text)
    assert err.value.message == message


@pytest.mark.parametrize(("text", "unit"), [("24.5h", "s"), ("1441m", "s"), ("86401", "s"),
                                            ("86400001", "ms")])
def test_duration_above_the_cap_is_refused(text: str, unit: str) -> None:
    with pytest.raises(BadInput) as err:
        parse_duration(text, default_unit=unit, what="timeout")
    assert err.value.message == f"bad timeout {text!r}: it must be at most 24h"


@pytest.mark.parametrize(("args", "message"), [
    (["--bandwidth", "5000Gbps"],
     "[ERROR] bad bandwidth '5000Gbps': it must be at most 1000Gbps (1 Tbit/s)"),
    (["--max-downtime", "25h"], "[ERROR] bad max downtime '25h': it must be at most 24h"),
    (["--timeout", "2000m"], "[ERROR] bad timeout '2000m': it must be at most 24h"),
])
def test_migrate_refuses_values_above_the_caps(dv: Any, args: list[str], message: str) -> None:
    res = dv("hv", "migrate", "test", "local", *args)
    assert res.code == 2, res
    assert res.stderr.strip().splitlines() == [message]
