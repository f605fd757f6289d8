"""Check user-data, vendor-data and meta-data the way cloud-init will read them, stricter.

user-data is recognised by its first line: `#cloud-config` (YAML checked against
cloud-init's own JSON schema from Debian's `cloud-init` package), `#!` scripts
(`sh -n`/`bash -n`, Python compiled), `#include`/`#include-once` (URLs),
`#cloud-boothook`, `#cloud-config-archive`, gzip, and MIME multipart (each part
checked as its Content-Type says).
"""

from __future__ import annotations

import email
import gzip
import json
import os
import re
import subprocess
from functools import cache
from typing import Any
from urllib.parse import urlparse

from debvisor_core.netconfig import Report, load, report_errors

CLOUDINIT_SCHEMA_DIR = "/usr/lib/python3/dist-packages/cloudinit/config/schemas"
# Keys cloud-init accepts at the top level without describing them in its schema.
EXTRA_TOP_KEYS = {"merge_how", "merge_type", "_merge_type", "vendor_data", "network"}
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
MIME_TYPES = {
    "text/cloud-config": "cloud-config", "text/x-shellscript": "script",
    "text/x-include-url": "include", "text/x-include-once-url": "include",
    "text/cloud-boothook": "boothook", "text/cloud-config-archive": "archive",
    "text/part-handler": "part-handler", "text/jinja2": "jinja", "text/x-shellscript-per-boot": "script",
    "text/x-shellscript-per-instance": "script", "text/x-shellscript-per-once": "script",
}


def schema_path() -> str:
    return os.environ.get("DEBVISOR_CLOUDINIT_SCHEMA",
                          os.path.join(CLOUDINIT_SCHEMA_DIR, "schema-cloud-config-v1.json"))


@cache
def _cloud_config_validator(path: str) -> tuple[Any, frozenset[str]] | None:
    """cloud-init's schema as a validator plus every top-level key it knows, or None."""
    if not os.path.isfile(path):
        return None
    import jsonschema

    with open(path, encoding="utf-8") as f:
        schema = json.load(f)

    def deprecated(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        if value:
            desc = schema.get("deprecated_description") or schema.get("description", "")
            yield jsonschema.ValidationError(f"deprecated in cloud-init. {desc}".strip())

    cls = jsonschema.validators.extend(jsonschema.Draft4Validator, {"deprecated": deprecated})
    known: set[str] = set()
    defs = schema.get("$defs", {})
    for part in schema.get("allOf", []):
        ref = part.get("$ref", "")
        target = defs.get(ref.rsplit("/", 1)[-1], {}) if ref.startswith("#/$defs/") else part
        known.update(target.get("properties", {}))
        known.update(schema.get("properties", {}))
    return cls(schema), frozenset(known | EXTRA_TOP_KEYS)


def kind_of(text: str) -> str:
    """What cloud-init will take this user-data for."""
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    low = first.lower()
    if not text.strip():
        return "empty"
    if low.startswith("## template:"):
        return "jinja"
    if low.startswith("#cloud-config-archive"):
        return "archive"
    if low.startswith("#cloud-config"):
        return "cloud-config"
    if first.startswith("#!"):
        return "script"
    if low.startswith("#include"):
        return "include"
    if low.startswith("#cloud-boothook"):
        return "boothook"
    if low.startswith("#part-handler"):
        return "part-handler"
    if low.startswith(("content-type:", "mime-version:")):
        return "mime"
    return "unknown"


def check_user_data(raw: bytes, file: str, report: Report, *, depth: int = 0) -> str:
    """Check user-data (or vendor-data); return its kind."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            report.error(file, f"gzip-compressed user-data cannot be decompressed: {exc}")
            return "gzip"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.error(file, f"not UTF-8 text (byte {exc.start})")
        return "binary"
    kind = kind_of(text)
    if kind == "empty":
        return kind
    if kind == "cloud-config":
        check_cloud_config(text, file, report)
    elif kind == "script":
        check_script(text, file, report)
    elif kind == "boothook":
        body = text.split("\n", 1)[1] if "\n" in text else ""
        if body.startswith("#!"):
            check_script(body, file, report, line_offset=1)
    elif kind == "include":
        check_include(text, file, report)
    elif kind == "archive":
        check_archive(text, file, report, depth)
    elif kind == "mime":
        check_mime(text, file, report, depth)
    elif kind == "jinja":
        report.warning(file, "Jinja-templated user-data is rendered by cloud-init at boot; "
                       "only the template header is checked")
    elif kind == "part-handler":
        _check_python(text, file, report)
    else:
        report.error(file, "unrecognised user-data: the first line must be #cloud-config, a #! "
                     "script, #include, #cloud-boothook or a MIME multipart header", 1)
    return kind


def check_cloud_config(text: str, file: str, report: Report) -> None:
    loaded = load(text, file, report)
    if loaded is None:
        return
    data = loaded.data
    if data is None:
        return
    if not isinstance(data, dict):
        report.error(file, f"#cloud-config must be a mapping of keys, not a {type(data).__name__}", 2)
        return
    found = _cloud_config_validator(schema_path())
    if found is None:
        if "cloud-init-schema" not in report.notes:
            report.notes.append("cloud-init-schema")
            report.warning(file, f"cloud-init's JSON schema is missing ({schema_path()}): validation "
                           "is reduced to YAML syntax; install Debian's cloud-init package for full checks")
        return
    validator, known = found
    for key in data:
        if key not in known:
            report.stricter(file, f"unknown top-level key {key!r}: cloud-init ignores it",
                            loaded.line_of([key]))
    report_errors(validator, data, loaded, file, report, echo=False)  # values may be secrets


def check_script(text: str, file: str, report: Report, line_offset: int = 0) -> None:
    first = text.split("\n", 1)[0]
    interp = first[2:].strip().split()
    if not interp:
        report.error(file, "the #! line names no interpreter", 1 + line_offset)
        return
    prog = os.path.basename(interp[1] if os.path.basename(interp[0]) == "env" and len(interp) > 1
                            else interp[0])
    if prog in ("sh", "bash", "dash"):
        shell = "bash" if prog == "bash" else "sh"
        res = subprocess.run([shell, "-n"], input=text, capture_output=True, text=True)  # noqa: S603
        if res.returncode != 0:
            for line in res.stderr.strip().splitlines()[:1]:
                m = re.search(r"line (\d+):\s*(.*)", line)
                if m:
                    report.error(file, f"shell syntax error: {m.group(2)}", int(m.group(1)) + line_offset)
                else:
                    report.error(file, f"shell syntax error: {line}")
    elif prog.startswith("python"):
        _check_python(text, file, report, line_offset)


def _check_python(text: str, file: str, report: Report, line_offset: int = 0) -> None:
    try:
        compile(text, file, "exec")
    except SyntaxError as exc:
        report.error(file, f"Python syntax error: {exc.msg}", (exc.lineno or 0) + line_offset or None)


def check_include(text: str, file: str, report: Report) -> None:
    urls = 0
    for n, line in enumerate(text.splitlines()[1:], start=2):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        u = urlparse(line)
        if u.scheme not in ("http", "https") or not u.netloc:
            report.error(file, "#include line is not an http(s) URL", n)
        urls += 1
    if urls == 0:
        report.error(file, "#include lists no URL", 1)


def check_archive(text: str, file: str, report: Report, depth: int) -> None:
    loaded = load(text, file, report)
    if loaded is None:
        return
    if not isinstance(loaded.data, list):
        report.error(file, "#cloud-config-archive must be a list of parts", 2)
        return
    for i, part in enumerate(loaded.data):
        line = loaded.line_of([i])
        if isinstance(part, str):
            part = {"content": part}
        if not isinstance(part, dict) or "content" not in part:
            report.error(file, f"archive part {i} needs a 'content' key", line)
            continue
        _check_part(str(part["content"]), part.get("type"), f"{file}[part {i}]", report, depth)


def check_mime(text: str, file: str, report: Report, depth: int) -> None:
    msg = email.message_from_string(text)
    if not msg.is_multipart():
        body = _payload(msg)
        _check_part(body.decode("utf-8", "replace"), msg.get_content_type(), file, report, depth)
        return
    parts = [p for p in msg.walk() if not p.is_multipart()]
    if not parts:
        report.error(file, "MIME multipart user-data has no parts (check the boundary)")
    for i, part in enumerate(parts):
        name = part.get_filename() or f"part {i + 1}"
        payload = _payload(part)
        if payload[:2] == b"\x1f\x8b":
            payload = gzip.decompress(payload)
        _check_part(payload.decode("utf-8", "replace"), part.get_content_type(), f"{file}[{name}]",
                    report, depth)


def _payload(part: Any) -> bytes:
    body = part.get_payload(decode=True)
    return body if isinstance(body, bytes) else b""


def _check_part(content: str, ctype: str | None, label: str, report: Report, depth: int) -> None:
    if depth > 5:
        report.error(label, "user-data nests parts more than 5 levels deep")
        return
    kind = MIME_TYPES.get(ctype or "") if ctype else None
    if ctype and ctype != "text/plain" and kind is None and not ctype.startswith("multipart/"):
        report.stricter(label, f"unknown MIME type {ctype!r}: cloud-init ignores this part")
        return
    if kind in (None, "cloud-config", "script", "include", "archive", "boothook") or kind == "jinja":
        actual = check_user_data(content.encode(), label, report, depth=depth + 1)
        expected = {"cloud-config": "cloud-config", "script": "script", "include": "include"}.get(kind or "")
        if expected and actual not in (expected, "empty"):
            report.error(label, f"the part is declared {ctype} but its content looks like {actual}")


def check_meta_data(raw: bytes, file: str, report: Report) -> dict[str, Any] | None:
    """meta-data: a YAML/JSON mapping with a non-empty instance-id (and a valid local-hostname)."""
    loaded = load(raw.decode("utf-8", "replace"), file, report)
    if loaded is None:
        return None
    data = loaded.data
    if not isinstance(data, dict):
        report.error(file, "meta-data must be a mapping with at least instance-id", 1)
        return None
    iid = data.get("instance-id")
    if iid is None or str(iid).strip() == "":
        report.error(file, "meta-data must carry an instance-id (cloud-init uses it to tell "
                     "a new instance from a reboot)", loaded.line_of(["instance-id"]) or 1)
    for key in ("local-hostname", "hostname"):
        if key in data and not (isinstance(data[key], str) and HOSTNAME_RE.match(data[key])):
            report.error(file, f"{key}: {data[key]!r} is not a valid host name", loaded.line_of([key]))
    known = {"instance-id", "local-hostname", "hostname", "public-keys", "network-interfaces",
             "dsmode", "local-ipv4", "availability-zone", "region", "cloud-name", "platform"}
    for key in data:
        if key not in known:
            report.stricter(file, f"unknown meta-data key {key!r}", loaded.line_of([key]))
    return data

