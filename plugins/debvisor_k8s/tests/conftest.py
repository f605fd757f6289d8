"""Fixtures of the k8s plugin tests: the Kubernetes API emulator and the real kubectl binaries.

- ``k8s_tls`` (session): the emulator's CA and server certificate, made once with openssl.
- ``k8s_api``: a running :class:`k8s_emulator.Emulator` with empty state (namespaces
  ``default`` and ``kube-system`` only), stopped after the test (which also kills the
  container processes attach/exec started: /bin/busybox, package busybox-static);
  ``k8s_api.kubeconfig`` is the kubeconfig to hand to kubectl or the plugin.
- ``kubectl_bins`` (session): the oldest and newest versioned kubectl found (the
  google-cloud-cli package ships ``kubectl.1.27`` ... ``kubectl.1.33`` side by side).
- ``kubectl_bin``: one of those; a test that asks for it runs once per binary (ids
  ``kubectl-1.27``, ``kubectl-1.33``; every version found with DEBVISOR_KUBECTL_ALL=1).
  No kubectl found is a failure, never a skip.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from k8s_emulator import Emulator, TlsFiles, make_tls

KUBECTL_DIRS_ENV = "DEBVISOR_KUBECTL_DIRS"  # extra dirs to search, os.pathsep-separated
KUBECTL_ALL_ENV = "DEBVISOR_KUBECTL_ALL"  # "1": referee with every version found, not just two
_SDK_BIN = Path("/usr/lib/google-cloud-sdk/bin")
_VERSIONED = re.compile(r"^kubectl\.1\.(\d+)$")


def find_kubectls() -> dict[str, Path]:
    """Every versioned kubectl found, ``{"1.27": path, ...}``, oldest first."""
    dirs = [Path(d) for d in os.environ.get(KUBECTL_DIRS_ENV, "").split(os.pathsep) if d]
    dirs.append(_SDK_BIN)
    for prog in ("kubectl", "gcloud"):
        found = shutil.which(prog)
        if found:
            dirs.append(Path(os.path.realpath(found)).parent)
    by_minor: dict[int, Path] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for f in d.iterdir():
            m = _VERSIONED.match(f.name)
            if m and os.access(f, os.X_OK) and int(m.group(1)) not in by_minor:
                by_minor[int(m.group(1))] = f
    return {f"1.{minor}": by_minor[minor] for minor in sorted(by_minor)}


def referee_kubectls() -> dict[str, Path]:
    """The oldest and the newest versioned kubectl (one entry when only one is found); every
    version found when $DEBVISOR_KUBECTL_ALL is 1."""
    found = find_kubectls()
    if not found or os.environ.get(KUBECTL_ALL_ENV) == "1":
        return found
    versions = list(found)
    return {v: found[v] for v in dict.fromkeys((versions[0], versions[-1]))}


def _missing_message() -> str:
    extra = os.environ.get(KUBECTL_DIRS_ENV, "")
    return (f"no versioned kubectl (kubectl.1.NN) found in {_SDK_BIN}, next to `kubectl`/`gcloud` on PATH"
            f"{' or in ' + extra if extra else ''}: install the google-cloud-cli package (it ships kubectl "
            f"1.27 ... 1.33) or point {KUBECTL_DIRS_ENV} at a directory of kubectl.1.NN binaries")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kubectl_bin" not in metafunc.fixturenames:
        return
    bins = referee_kubectls()
    if bins:
        metafunc.parametrize("kubectl_bin", list(bins.values()), ids=[f"kubectl-{v}" for v in bins],
                             indirect=True)
    else:  # one failing case, not a skip
        metafunc.parametrize("kubectl_bin", [None], ids=["kubectl-missing"], indirect=True)


@pytest.fixture
def kubectl_bin(request: pytest.FixtureRequest) -> Path:
    """The kubectl binary of this parametrized run."""
    if request.param is None:
        pytest.fail(_missing_message())
    return Path(request.param)


@pytest.fixture(scope="session")
def kubectl_bins() -> tuple[Path, Path]:
    """(oldest, newest) versioned kubectl; the same path twice when only one is installed."""
    bins = list(referee_kubectls().values())
    if not bins:
        pytest.fail(_missing_message())
    return bins[0], bins[-1]


@pytest.fixture(scope="session")
def k8s_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """The emulator's CA and server certificate, made once per session."""
    if shutil.which("openssl") is None:
        pytest.fail("the k8s emulator needs the `openssl` command (package openssl) to make its certificates")
    return make_tls(tmp_path_factory.mktemp("k8s-emulator-tls"))


@pytest.fixture
def k8s_api(k8s_tls: TlsFiles, tmp_path: Path) -> Iterator[Emulator]:
    """A running API emulator with empty state; stopped after the test. An internal error of
    the emulator (a bug in it, answered with HTTP 500) fails the test."""
    emu = Emulator(k8s_tls, tmp_path / "k8s-emulator").start()
    try:
        yield emu
    finally:
        emu.stop()
    assert not emu.errors, "the k8s emulator failed internally:\n" + "\n".join(emu.errors)
