"""DebVisor Kubernetes plugin (`debvisor k8s`, alias `k8sctl`): nodes, workloads, logs,
cordon, uncordon and PDB-aware drain on the official ``kubernetes`` client."""
