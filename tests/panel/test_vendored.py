"""The panel's vendored JavaScript is exactly what scripts/vendor-panel took from npm.

VENDORED.json (written by the script) records each npm tarball's sha512 integrity and the sha256 of
every file copied out of it. Offline, these tests recompute the sha256s (a changed, added or missing
file fails) and check the pinned versions; with npm on PATH, the script's --check re-packs the
tarballs from the registry and re-verifies the sha512 integrity strings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "debvisor_core" / "panel" / "static" / "vendor"
MANIFEST = VENDOR / "VENDORED.json"
SCRIPT = ROOT / "scripts" / "vendor-panel"

PINNED = {"htmx.org": "2.0.11", "htmx-ext-sse": "2.2.4", "@novnc/novnc": "1.7.0"}


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def test_every_vendored_file_matches_its_recorded_sha256() -> None:
    recorded = {f["path"]: f for p in _manifest()["packages"] for f in p["files"]}
    on_disk = {
        p.relative_to(VENDOR).as_posix()
        for p in VENDOR.rglob("*")
        if p.is_file() and p != MANIFEST
    }
    problems = [f"missing: {path}" for path in sorted(recorded.keys() - on_disk)]
    problems += [f"not in VENDORED.json: {path}" for path in sorted(on_disk - recorded.keys())]
    for path in sorted(recorded.keys() & on_disk):
        data = (VENDOR / path).read_bytes()
        if hashlib.sha256(data).hexdigest() != recorded[path]["sha256"]:
            problems.append(f"changed: {path} (sha256 {hashlib.sha256(data).hexdigest()})")
        elif len(data) != recorded[path]["bytes"]:
            problems.append(f"size differs: {path}")
    assert not problems, "vendored files differ from VENDORED.json (re-run scripts/vendor-panel):\n" + (
        "\n".join(problems)
    )


def test_manifest_pins_the_advised_versions_with_sha512_integrity() -> None:
    packages = _manifest()["packages"]
    assert {p["name"]: p["version"] for p in packages} == PINNED
    for p in packages:
        assert p["license"], p["name"]
        algo, _, b64 = p["integrity"].partition("-")
        assert algo == "sha512" and len(base64.b64decode(b64, validate=True)) == 64, p
        assert p["files"], p["name"]
    # the script re-vendors the same versions the manifest records
    specs = re.search(r"^PACKAGES=\((.*)\)$", SCRIPT.read_text(), re.M)
    assert specs is not None
    assert specs.group(1).split() == [f"{n}@{v}" for n, v in PINNED.items()]


def test_htmx_min_js_is_2_0_11() -> None:
    text = (VENDOR / "htmx.min.js").read_text()
    found = re.findall(r'version:\s*"([^"]+)"', text)
    assert found == ["2.0.11"], found


def test_novnc_core_and_vendor_are_complete_es_modules() -> None:
    # every relative import inside noVNC resolves to a vendored file (core/ and vendor/ side by side)
    novnc = VENDOR / "novnc"
    missing = []
    for js in (novnc / "core").rglob("*.js"):
        for target in re.findall(r"""\bfrom\s+['"](\.{1,2}/[^'"]+)['"]""", js.read_text()):
            if not (js.parent / target).resolve().is_file():
                missing.append(f"{js.relative_to(novnc)} -> {target}")
    assert (novnc / "core" / "rfb.js").is_file()
    assert not missing, missing


def test_vendor_script_check_reverifies_the_npm_integrity() -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: the sha512 of the npm tarballs cannot be re-verified")
    res = subprocess.run([str(SCRIPT), "--check"], capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    if res.returncode != 0 and re.search(r"ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNREFUSED|ECONNRESET", out):
        pytest.skip(f"npm registry unreachable: {out[-400:]}")
    assert res.returncode == 0, out
    assert "matches npm" in out
