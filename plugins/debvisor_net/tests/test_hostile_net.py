"""Hostile input to `net diff`/`net apply`: files that are not files, bytes that are not
text, YAML that is not a desired state. One sentence and exit 2 each, nothing changed, no
hang (a FIFO would block a plain read forever)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.root]


@pytest.fixture
def run(dv: Any, dv_state: Any, tmp_path: Path) -> Any:
    dv_state.config({"net": {"interfaces_file": str(tmp_path / "interfaces")}})

    def go(*args: str) -> Any:
        return dv("net", *args, timeout=30)

    return go


def _fifo(tmp_path: Path) -> Path:
    p = tmp_path / "net.yaml"
    os.mkfifo(p)
    return p


@pytest.mark.parametrize(("make", "message"), [
    (_fifo, "is not a regular file"),
    (lambda t: t, "Is a directory"),
    (lambda t: t / "missing.yaml", "No such file or directory"),
    (lambda t: _write(t, b"\xff\xfe\x00network: [\x80"), "net.yaml"),
    (lambda t: _write(t, b"- just\n- a list\n"), "version"),
    (lambda t: _write(t, b"network: {version: 1, config: []}"), "takes version 2"),
    (lambda t: _write(t, b"network: {version: 2, bonds: {bond0: {interfaces: [eth0], "
                         b"parameters: {mode: fastest}}}, ethernets: {eth0: {}}}"),
     "mode"),
])
@pytest.mark.parametrize("verb", ["diff", "apply"])
def test_bad_files_are_one_sentence(run: Any, tmp_path: Path, make: Any, message: str,
                                    verb: str) -> None:
    path = make(tmp_path)
    res = run(verb, str(path), *(["--yes"] if verb == "apply" else []))
    assert res.code == 2, res
    assert message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "interfaces").exists()


def _write(tmp_path: Path, raw: bytes) -> Path:
    p = tmp_path / "net.yaml"
    p.write_bytes(raw)
    return p


def test_a_probe_that_is_not_an_address_is_refused(run: Any, tmp_path: Path) -> None:
    p = _write(tmp_path, b"network: {version: 2, ethernets: {lo: {}}}")
    res = run("apply", str(p), "--probe", "tcp:$(reboot):22", "--dry-run")
    assert res.code == 2 and "bad probe" in res.stderr, res
