"""DebVisor example site plugin (see docs/plugins.md)."""
