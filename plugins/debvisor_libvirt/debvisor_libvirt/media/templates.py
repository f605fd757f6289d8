"""The cloud-config template library (templates/NAME.yaml).

A template is `#cloud-config` YAML with an `x-template` block (description, vars
with help, optional default and pattern, and ``secret: true`` for values that must
not be given on the command line). `${var}` is replaced inside string values
only, after parsing, so a value can never change the YAML structure.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from debvisor_core.errors import BadInput

VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def names() -> list[str]:
    root = resources.files(__package__).joinpath("templates")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def load(name: str) -> dict[str, Any]:
    import yaml

    if name not in names():
        raise BadInput(f"unknown template {name!r}: use one of {', '.join(names())} "
                       "(debvisor hv iso templates)")
    text = resources.files(__package__).joinpath(f"templates/{name}.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def describe(name: str) -> dict[str, Any]:
    meta = load(name).get("x-template", {})
    return {"name": name, "description": meta.get("description", ""),
            "vars": {k: {"default": v.get("default"), "help": v.get("help", ""),
                         "required": "default" not in v, "secret": bool(v.get("secret")),
                         "pattern": v.get("pattern")}
                     for k, v in meta.get("vars", {}).items()}}


def secret_vars(name: str) -> set[str]:
    """The variables of template ``name`` marked ``secret: true`` (never on the command line)."""
    return {k for k, v in describe(name)["vars"].items() if v["secret"]}


def render(name: str, values: dict[str, str]) -> str:
    """The template filled with ``values`` (defaults for the rest) as #cloud-config text."""
    import yaml

    data = load(name)
    spec = data.pop("x-template", {}).get("vars", {})
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise BadInput(f"template {name} has no variable {', '.join(unknown)}; "
                       f"it takes {', '.join(sorted(spec))}")
    filled = {k: str(v["default"]) for k, v in spec.items() if "default" in v}
    filled.update(values)
    for k, v in values.items():
        pattern = spec[k].get("pattern")
        if pattern and not re.fullmatch(pattern, v):
            shown = "(the secret value)" if spec[k].get("secret") else f"={v!r}"
            raise BadInput(f"template {name}: {k}{shown} does not match {pattern}"
                           + (f" ({spec[k]['format']})" if spec[k].get("format") else ""))
    missing = sorted(set(spec) - set(filled))
    if missing:
        raise BadInput(f"template {name} needs " + ", ".join(
            f"--set-file {m}=FILE" if spec[m].get("secret") else f"--set {m}=…" for m in missing))

    def sub(obj: Any) -> Any:
        if isinstance(obj, str):
            return VAR_RE.sub(lambda m: filled[m.group(1)], obj)
        if isinstance(obj, list):
            return [sub(x) for x in obj]
        if isinstance(obj, dict):
            return {sub(k): sub(v) for k, v in obj.items()}
        return obj

    return "#cloud-config\n" + yaml.safe_dump(sub(data), sort_keys=False, default_flow_style=False)
