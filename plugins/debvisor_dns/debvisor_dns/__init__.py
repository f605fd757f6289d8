"""DebVisor DNS plugin: RFC 2136 updates signed with TSIG, and its lab service (BIND9)."""

from __future__ import annotations

__all__: list[str] = []
