"""DebVisor network plugin: node networking on netlink, applied safely."""
