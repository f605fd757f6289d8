"""Shared fixtures for the core's tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# This process holds gRPC channels (the rpcd tests) and forks `debvisor` runs: without this,
# grpc's fork handlers can kill a child before exec (SIGABRT, "epoll_wait error: Bad file
# descriptor", grpc/grpc#43055; seen once in CI). Set before any test module imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


@pytest.fixture(scope="session")
def site_plugins_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs' example plugin and the misbehaving test plugins, installed with pip
    into a directory of their own (the venv stays untouched)."""
    target = tmp_path_factory.mktemp("site-plugins")
    for src in (ROOT / "docs" / "example-plugin", ROOT / "tests" / "testplugins"):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "--target", str(target), str(src)],
            check=True, capture_output=True,
        )
    return target


@pytest.fixture
def site_plugins(site_plugins_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the site plugins visible to `debvisor` runs of this test."""
    monkeypatch.setenv("PYTHONPATH", str(site_plugins_dir))
    return site_plugins_dir
