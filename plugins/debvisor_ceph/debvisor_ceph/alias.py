"""`cephctl`: the operators' alias for `debvisor ceph`."""

from __future__ import annotations


def main() -> None:
    """Run `debvisor ceph ARGS…` under the name `cephctl`."""
    from debvisor_core.entry import alias

    alias("ceph", "cephctl")
