"""The committed debvisor.v1 modules are what grpcio-tools makes of the .proto, and
`debvisor rpcd --help` imports no grpc (nodes without the rpcd extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from debvisor_core.testing import imports_of

ROOT = Path(__file__).resolve().parent.parent
V1 = ROOT / "debvisor_core" / "rpcd" / "v1"


def test_generated_modules_match_the_proto(tmp_path: Path) -> None:
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gen-proto"), str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, env={"PYTHONPATH": "", "PATH": "/usr/bin:/bin",
                                                              "PYTHON": sys.executable})
    assert res.returncode == 0, res.stderr
    for name in ("debvisor_pb2.py", "debvisor_pb2.pyi", "debvisor_pb2_grpc.py"):
        made = (tmp_path / "debvisor_core" / "rpcd" / "v1" / name).read_text()
        assert made == (V1 / name).read_text(), f"{name} is stale: run scripts/gen-proto"


def test_rpcd_help_imports_no_grpc() -> None:
    out, modules = imports_of("rpcd", "--help")
    assert "serve" in out
    heavy = {"grpc", "cryptography", "jwt", "prometheus_client", "google"}
    assert not {m for m in modules if m.split(".")[0] in heavy}
