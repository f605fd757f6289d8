"""Test plugins for DebVisor's own suite."""
