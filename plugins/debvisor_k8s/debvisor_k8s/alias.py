"""`k8sctl`: the operators' alias for `debvisor k8s`."""

from __future__ import annotations


def main() -> None:
    """Run `debvisor k8s ARGS…` under the name `k8sctl`."""
    from debvisor_core.cli import alias_main

    alias_main("k8s", "k8sctl")
