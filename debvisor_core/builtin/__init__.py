"""Core features written as plugins. This table is read by `debvisor --help`, so it
names modules without importing them."""

from __future__ import annotations

#: word -> (module, one-line help)
BUILTIN_COMMANDS: dict[str, tuple[str, str]] = {
    "actions": ("debvisor_core.builtin.actions_cmd",
                "List, describe and run the declared actions (JSON in, JSON out)."),
    "audit": ("debvisor_core.builtin.audit_cmd", "Show and verify the tamper-evident audit log."),
    "health": ("debvisor_core.builtin.health_cmd", "Run every plugin's health checks."),
    "lab": ("debvisor_core.builtin.lab_cmd", "Start, stop and inspect the lab of real services."),
    "maintenance": ("debvisor_core.builtin.maintenance", "Enable, disable or show maintenance mode."),
    "ops": ("debvisor_core.builtin.ops_cmd", "List, show, roll back and resume operations."),
    "plugins": ("debvisor_core.builtin.plugins_cmd", "List installed plugins and their status."),
}

#: hook-only built-in plugins, always registered
BUILTIN_HOOKS: dict[str, str] = {
    "core": "debvisor_core.builtin.core",
    "syslog": "debvisor_core.builtin.syslog_sink",
}
