"""Secrets never leak into records (security review M4): argv, audit details and the
diagnostics config keep a keyed digest (or ``***``) instead of the secret."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import stat
from pathlib import Path
from types import ModuleType

import pytest

from debvisor_core.redact import redact_config as redact
from debvisor_core.testing import Runner, StateDir

DIGEST = re.compile(r"secret:hmac:[0-9a-f]{16}")
TICKET = "dvt1.eyJ2bSI6InZtMSIsIm1vZGUiOiJ2aWV3In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.fixture
def rd(dv_state: StateDir) -> ModuleType:
    """``debvisor_core.redact`` (imported here: the other tests here need not have it)."""
    return importlib.import_module("debvisor_core.redact")


@pytest.mark.parametrize(("argv", "secret"), [
    (["--password", "hunter2"], "hunter2"),
    (["--password=hunter2"], "hunter2"),
    (["--passwd", "hunter2"], "hunter2"),
    (["--token", "tok-4711"], "tok-4711"),
    (["--secret=s3cr3t"], "s3cr3t"),
    (["--key", "a2V5LWJ5dGVz"], "a2V5LWJ5dGVz"),
    (["--join-token", "abcdef.0123456789abcdef"], "abcdef.0123456789abcdef"),
    (["--set", "join_token=abcdef.0123456789abcdef"], "abcdef.0123456789abcdef"),
    (["--set=admin_password=hunter2"], "hunter2"),
    (["--set", "pw=hunter2"], "hunter2"),
    (["--set", "ssh_private_key=BEGIN-OPENSSH"], "BEGIN-OPENSSH"),
    (["ticket", "use", TICKET], TICKET),
    (["--ticket=" + TICKET], TICKET),
    (["--vnc-pass", "hunter2"], "hunter2"),  # declared secret by its command
])
def test_scrub_argv_replaces_every_secret(rd: ModuleType, argv: list[str], secret: str) -> None:
    out = rd.scrub_argv(["hvctl", *argv, "vm1"], secret_options=("--vnc-pass",))
    assert secret not in " ".join(out)
    assert len(out) == len(argv) + 2 and out[0] == "hvctl" and out[-1] == "vm1"
    assert DIGEST.search(" ".join(out)), out


def test_scrub_argv_keeps_what_is_not_secret(rd: ModuleType) -> None:
    argv = ["hvctl", "--set", "hostname=web1", "--key-file", "/etc/k",
            "--set", "cephadm_pubkey=ssh-ed25519 AAAA", "--", "--password"]
    assert rd.scrub_argv(argv) == argv


def test_the_digest_is_keyed_stable_and_its_key_root_only(rd: ModuleType, dv_state: StateDir,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    a = rd.secret_digest("hunter2")
    assert DIGEST.fullmatch(a) and a == rd.secret_digest("hunter2") != rd.secret_digest("hunter3")
    assert hashlib.sha256(b"hunter2").hexdigest()[:16] not in a  # not an unkeyed hash
    key = dv_state.path / "keys" / "redact.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    other = tmp_path / "other-state"
    other.mkdir()
    monkeypatch.setenv("DEBVISOR_STATE_DIR", str(other))  # another host, another key
    assert rd.secret_digest("hunter2") != a


def test_config_redact_covers_every_secret_spelling() -> None:
    cfg = {"db": {"passwd": "p1", "pw": "p2", "private_key": "p3", "password": "p4",
                  "uri": "postgres://admin:p5@db.example/x", "key_file": "/etc/k",
                  "name": "zone1", "data_dir": "/srv"},
           "dns": {"tsig": [{"name": "k1", "algorithm": "hmac-sha256", "data": "p6"}]},
           "hv": {"ticket": TICKET}}
    out = redact(cfg)
    text = json.dumps(out)
    for secret in ("p1", "p2", "p3", "p4", "p5", "p6", TICKET):
        assert secret not in text
    assert out["db"]["uri"] == "postgres://admin:***@db.example/x"
    assert (out["db"]["key_file"], out["db"]["name"], out["db"]["data_dir"]) == ("/etc/k", "zone1", "/srv")
    assert out["dns"]["tsig"][0]["name"] == "k1"


def test_a_ticket_on_the_command_line_stays_out_of_audit_and_journal(dv: Runner, dv_state: StateDir,
                                                                     site_plugins: Path) -> None:
    res = dv("example", "note", "add", "n1", TICKET, "--yes")
    assert res.code == 0, res
    audit_log = (dv_state.path / "log" / "audit.jsonl").read_text()
    assert TICKET not in audit_log and DIGEST.search(audit_log)
    created = [json.loads(p.read_text().splitlines()[0]) for p in (dv_state.path / "ops").glob("*.jsonl")]
    assert len(created) == 1 and TICKET not in json.dumps(created[0]["argv"])
    assert created[0]["argv"][-1] == "--yes" and DIGEST.fullmatch(created[0]["argv"][-2])
