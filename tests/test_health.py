"""`debvisor health`: concurrency, timeouts, exit codes, JSON shape, diagnostics."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from debvisor_core.testing import Runner, StateDir


def test_crit_timeout_and_raise(dv: Runner, site_plugins: Path) -> None:
    res = dv("health", "--json")
    assert res.code == 1
    doc = res.json
    assert set(doc) == {"status", "host", "time", "duration_ms", "counts", "checks"}
    assert doc["status"] == "crit"
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["slow.hang"]["status"] == "crit"
    assert checks["slow.hang"]["summary"] == "timed out after 0.5s"
    assert checks["slow.raise"]["summary"] == "check failed: RuntimeError: check exploded"
    assert checks["slow.warn"]["status"] == "warn" and checks["slow.warn"]["details"] == {"level": 1}
    assert checks["core.state-dir"]["status"] == "ok" and checks["core.state-dir"]["plugin"] == "core"
    assert checks["example.index"]["plugin"] == "example"
    for c in doc["checks"]:
        assert set(c) == {"name", "plugin", "status", "summary", "details", "duration_ms"}
    assert doc["counts"]["crit"] == sum(1 for c in doc["checks"] if c["status"] == "crit") >= 2
    assert sum(doc["counts"].values()) == len(doc["checks"])
    # the 30 s check did not hold the run up: checks run concurrently with timeouts
    assert doc["duration_ms"] < 10_000


def test_warn_exit_codes_and_strict(dv: Runner, site_plugins: Path) -> None:
    env = {"DV_SLOW_MODE": "warn"}
    res = dv("health", "--only", "slow.", env=env)
    assert res.code == 0 and "overall: WARN" in res.stdout and "WARN    slow.warn" in res.stdout
    assert dv("health", "--only", "slow.", "--strict", env=env).code == 1
    res = dv("health", "--only", "core.", "--strict")
    assert res.code == 0 and "slow." not in res.stdout


def test_diagnostics_bundle(dv: Runner, dv_state: StateDir, site_plugins: Path, tmp_path: Path) -> None:
    dv_state.config({"dns": {"tsig_secret": "c2VjcmV0", "tsig_key_file": "/etc/k"},
                     "api": {"password": "hunter2", "port": 50051}})
    assert dv("maintenance", "enable").code == 0
    out = tmp_path / "diag.tar.gz"
    res = dv("health", "--only", "core.", "--collect-diagnostics", str(out),
             env={"DV_SLOW_MODE": "warn"})
    assert res.code == 0 and out.exists(), res
    with tarfile.open(out) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers()}
        read = lambda n: tar.extractfile(f"debvisor-diagnostics/{n}").read().decode()  # noqa: E731
        assert {"versions.json", "config.json", "audit-recent.jsonl", "health.json", "operations.json",
                "slow/note.txt", "commands/slow-uname.txt"} <= names
        cfg = read("config.json")
        assert "hunter2" not in cfg and "c2VjcmV0" not in cfg
        conf = json.loads(cfg)["config"]
        assert conf["api"] == {"password": "***", "port": 50051}
        assert conf["dns"]["tsig_key_file"] == "/etc/k"
        assert json.loads(read("versions.json"))["debvisor-core"]
        assert '"enabled"' in read("audit-recent.jsonl")
        assert "Linux" in read("commands/slow-uname.txt")
    assert out.stat().st_mode & 0o777 == 0o600  # holds the audit log: owner-only
    res = dv("health", "--collect-diagnostics", str(tmp_path / "nodir" / "x.tar.gz"))
    assert res.code == 2 and "does not exist" in res.stderr
    assert dv("health", "--collect-diagnostics", str(tmp_path / "x.zip")).code == 2
