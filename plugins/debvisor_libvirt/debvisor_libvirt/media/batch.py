"""`hv iso build --batch FILE`: one row per VM, CSV or YAML.

Columns/keys: output, hostname, instance-id, user-data, meta-data, network-config,
vendor-data, template, ssh-key (several separated by `;`), and template variables
as `set.NAME` columns (CSV) or a `set:` mapping (YAML). File paths are relative to
the batch file and must stay inside its directory; outputs are relative to `-o DIR`
(default: the batch file's directory), must stay inside it, and default to
HOSTNAME.iso. A batch file from someone else can neither write nor read elsewhere.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from debvisor_core.errors import BadInput

from .seed import SeedSpec

COLUMNS = {"output", "hostname", "instance-id", "user-data", "meta-data", "network-config",
           "vendor-data", "template", "ssh-key", "set"}


def read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read the batch file {path}: {exc.strerror}") from None
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise BadInput(f"{path}: YAML syntax error: {exc}".replace("\n", " ")) from None
        if isinstance(data, dict) and isinstance(data.get("vms"), list):
            data = data["vms"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise BadInput(f"{path}: a YAML batch is a list of mappings (one per VM), or vms: [...]")
        return data
    rows = []
    for row in csv.DictReader(text.splitlines()):
        sets = {k[4:]: v for k, v in row.items() if k and k.startswith("set.") and v}
        plain: dict[str, Any] = {k: v for k, v in row.items() if k and not k.startswith("set.") and v}
        if sets:
            plain["set"] = sets
        rows.append(plain)
    return rows


def inside(root: Path, value: str, label: str, what: str) -> str:
    """``root / value``, refused (one sentence naming the row) unless it stays inside ``root``:
    relative, no `..`, and no symlinked directory leading out."""
    rel = Path(value)
    if not value or rel.is_absolute() or ".." in rel.parts or "\0" in value:
        raise BadInput(f"{label}: {what} {value!r} must be a path relative to {root}, without '..'")
    full = root / rel
    top = root.resolve()
    where = full.resolve() if what != "output" else full.parent.resolve() / full.name
    if where != top and top not in where.parents:
        raise BadInput(f"{label}: {what} {value!r} leads outside {root} (through a symlink)")
    return str(full)


def specs(path: Path, out_dir: Path) -> list[SeedSpec]:
    base = path.parent
    result = []
    seen: dict[str, int] = {}
    rows = read_rows(path)
    if not rows:
        raise BadInput(f"{path} has no rows")
    for i, row in enumerate(rows, start=1):
        label = f"{path.name} row {i}"
        unknown = sorted(set(row) - COLUMNS)
        if unknown:
            raise BadInput(f"{label}: unknown column {', '.join(unknown)}; use {', '.join(sorted(COLUMNS))} "
                           "and set.NAME")

        def rel(key: str, row: dict[str, Any] = row, label: str = label) -> str | None:
            v = row.get(key)
            return inside(base, str(v), label, key) if v else None

        name = row.get("output") or (f"{row['hostname']}.iso" if row.get("hostname") else None)
        if not name:
            raise BadInput(f"{label}: needs an output or a hostname")
        output = inside(out_dir, str(name), label, "output")
        if output in seen:
            raise BadInput(f"{label}: output {name} is also written by row {seen[output]}")
        seen[output] = i
        keys = [inside(base, k.strip(), label, "ssh-key")
                for k in str(row.get("ssh-key") or "").split(";") if k.strip()]
        sets = row.get("set") or {}
        if not isinstance(sets, dict):
            raise BadInput(f"{label}: set must be a mapping of template variables")
        result.append(SeedSpec(
            output=output, user_data=rel("user-data"), meta_data=rel("meta-data"),
            hostname=str(row["hostname"]) if row.get("hostname") else None,
            instance_id=str(row["instance-id"]) if row.get("instance-id") else None,
            network_config=rel("network-config"), vendor_data=rel("vendor-data"),
            template=row.get("template"), sets={str(k): str(v) for k, v in sets.items()},
            ssh_keys=keys, label=label))
    return result
