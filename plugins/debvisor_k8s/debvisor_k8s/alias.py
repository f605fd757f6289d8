"""`k8sctl`: the operators' alias for `debvisor k8s`."""

from __future__ import annotations


def main() -> None:
    """Run `debvisor k8s ARGS…` under the name `k8sctl`."""
    from debvisor_core.entry import alias

    alias("k8s", "k8sctl")
