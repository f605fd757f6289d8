"""One NoCloud seed: gather the files from the operator's options, validate them all."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debvisor_core.errors import BadInput
from debvisor_core.netconfig import Report, check_network_config

from . import templates
from .validate import HOSTNAME_RE, check_meta_data, check_user_data

MiB = 1 << 20
HARD_LIMIT = 16 * MiB  # a NoCloud seed this large is a mistake (cloud-init reads it all into memory)
DEFAULT_WARN = 1 * MiB
SSH_KEY_RE = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|"
                        r"sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( .*)?$")


@dataclass
class SeedSpec:
    """What one `hv iso build` (or one batch row) asks for; paths as given."""

    output: str
    user_data: str | None = None
    meta_data: str | None = None
    hostname: str | None = None
    instance_id: str | None = None
    network_config: str | None = None
    vendor_data: str | None = None
    template: str | None = None
    sets: dict[str, str] = field(default_factory=dict)
    ssh_keys: list[str] = field(default_factory=list)
    label: str = "command line"

    def check_options(self) -> None:
        if self.user_data and self.template:
            raise BadInput(f"{self.label}: use either --user-data or --template, not both")
        if self.sets and not self.template:
            raise BadInput(f"{self.label}: --set needs --template")
        if self.meta_data and (self.hostname or self.instance_id):
            raise BadInput(f"{self.label}: use either --meta-data or --hostname/--instance-id, not both")
        if not self.meta_data and not self.instance_id and not self.hostname:
            raise BadInput(f"{self.label}: give --meta-data FILE or --instance-id ID (and --hostname H)")
        if self.hostname and not HOSTNAME_RE.match(self.hostname):
            raise BadInput(f"{self.label}: {self.hostname!r} is not a valid host name")


def _read(path: str, what: str, report: Report) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        report.error(path, f"cannot read the {what} file: {exc.strerror}")
        return None


def assemble(spec: SeedSpec, report: Report) -> dict[str, bytes]:
    """The seed's files, validated into ``report`` (nothing is written here)."""
    import yaml

    spec.check_options()
    files: dict[str, bytes] = {}
    if spec.template:
        values = dict(spec.sets)
        tvars = templates.describe(spec.template)["vars"]
        if "hostname" in tvars and "hostname" not in values and spec.hostname:
            values["hostname"] = spec.hostname
        files["user-data"] = templates.render(spec.template, values).encode()
        ud_label = f"template {spec.template}"
    elif spec.user_data:
        data = _read(spec.user_data, "user-data", report)
        files["user-data"] = data if data is not None else b""
        ud_label = spec.user_data
    else:
        files["user-data"] = b"#cloud-config\n"
        ud_label = "user-data"
    check_user_data(files["user-data"], ud_label, report)

    keys = []
    for key_file in spec.ssh_keys:
        raw = _read(key_file, "SSH public key", report)
        for n, line in enumerate((raw or b"").decode("utf-8", "replace").splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not SSH_KEY_RE.match(line):
                report.error(key_file, "not an SSH public key (a private key or a wrong file?)", n)
            keys.append(line)
        if raw is not None and not keys:
            report.error(key_file, "holds no SSH public key")

    if spec.meta_data:
        raw = _read(spec.meta_data, "meta-data", report)
        if raw is not None:
            meta = check_meta_data(raw, spec.meta_data, report)
            if keys and meta is not None:
                meta["public-keys"] = [*_as_list(meta.get("public-keys")), *keys]
                raw = yaml.safe_dump(meta, sort_keys=False).encode()
            files["meta-data"] = raw
    else:
        iid = spec.instance_id or f"iid-{spec.hostname}"
        meta = {"instance-id": iid}
        if spec.hostname:
            meta["local-hostname"] = spec.hostname
        if keys:
            meta["public-keys"] = keys
        files["meta-data"] = yaml.safe_dump(meta, sort_keys=False).encode()

    for opt, name in ((spec.network_config, "network-config"), (spec.vendor_data, "vendor-data")):
        if not opt:
            continue
        raw = _read(opt, name, report)
        if raw is None:
            continue
        if name == "network-config":
            check_network_config(raw, opt, report)
        else:
            check_user_data(raw, opt, report)
        files[name] = raw
    return files


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, list) else [v]


def check_size(files: dict[str, bytes], warn_size: int, report: Report, label: str) -> int:
    total = sum(len(b) for b in files.values())
    if total > HARD_LIMIT:
        report.error(label, f"the seed holds {total} bytes, above the hard limit of {HARD_LIMIT} bytes")
    elif total > warn_size:
        report.warning(label, f"the seed holds {total} bytes, above the warning size of {warn_size} "
                       "bytes (--warn-size or [hv] iso_warn_size)")
    return total


def describe_files(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in files.items()]
