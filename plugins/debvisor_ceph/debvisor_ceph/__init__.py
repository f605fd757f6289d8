"""DebVisor Ceph plugin: cluster operations over python-rados, plus its lab cluster."""

from __future__ import annotations
