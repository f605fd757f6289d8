"""The committed debvisor.v1 modules are what grpcio-tools makes of the .proto, and
`debvisor rpcd --help` imports no grpc (nodes without the rpcd extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    code = ("import sys; from debvisor_core.cli import main\n"
            "try:\n    main(['rpcd', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('grpc', 'cryptography', 'jwt', 'prometheus_client', 'google')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "serve" in res.stdout and res.stdout.strip().splitlines()[-1] == "[]", res.stdout
