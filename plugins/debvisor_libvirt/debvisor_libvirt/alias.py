"""`hvctl`: the operators' alias for `debvisor hv`."""

from __future__ import annotations


def main() -> None:
    """Run `debvisor hv ARGS…` under the name `hvctl`."""
    from debvisor_core.entry import alias

    alias("hv", "hvctl")
