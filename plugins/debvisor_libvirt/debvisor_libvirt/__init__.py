"""DebVisor hypervisor plugin: libvirt/QEMU nodes, guests and live migration."""
