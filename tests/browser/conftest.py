"""Real-browser tests: pytest-playwright driving Debian's chromium (never `playwright install`).

Every test under tests/browser/ gets the ``browser`` marker (``-m browser`` / ``-m "not browser"``)
and is skipped, with the reason, when Debian's chromium is not at /usr/bin/chromium (override with
$DEBVISOR_CHROMIUM). As root, Chromium needs ``--no-sandbox``.

TLS: the tests never use ``--ignore-certificate-errors`` (it accepts any certificate). The
``trusted_context`` fixture launches a browser with
``--ignore-certificate-errors-spki-list=<base64 sha256 of one SubjectPublicKeyInfo>``: Chromium
(services/network/ignore_errors_cert_verifier.cc) then accepts a TLS chain *served by the server*
that contains that key, and only that one. It skips every other check for such a chain (name, dates,
issuer), so pin a key made for the test, and pin the server's own certificate: a CA's key matches
only if the server sends the CA certificate in its chain. Chromium honours the flag only together
with ``--user-data-dir``, which Playwright always passes. Fallback if a test really cannot pin:
``browser.new_context(ignore_https_errors=True)``, which accepts any certificate.

Fixtures: ``browser`` (fails loudly with Playwright's and Chromium's versions if the launch fails),
``chromium_version``, ``playwright_version``, ``spki_pin``, ``make_cert`` (``server_cert``: one
for the session), ``https_server`` (``module_https_server``), ``trusted_context``
(``module_context``: the same, shared by a module's tests), ``shot`` (PNG screenshots under
$DEBVISOR_ARTIFACTS, default <repo>/artifacts/screenshots), and the lab's panel with the
suite's one console guest, ``plab`` and ``guest`` (panellab.py).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CHROMIUM = Path(os.environ.get("DEBVISOR_CHROMIUM", "/usr/bin/chromium"))
PANEL_EXTRA = "uvicorn and starlette are in the panel extra: pip install -e '.[panel]'"
LAUNCH_ARGS = ["--no-sandbox"]  # root (CI too) has no sandbox; Playwright also adds it by default


# ---------------------------------------------------------------------------------------------
# marker, header, versions


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives Debian's chromium through Playwright (skipped without /usr/bin/chromium)"
    )


@pytest.hookimpl(trylast=True)  # after pytest's own fixture-scope reordering
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the browser tests, and run them after every other test of the session: the
    sync Playwright API keeps an asyncio loop running in the main thread until the session
    ends, and every later `asyncio.run` (textual's pilot, pyroute2's IPRoute, the console
    proxy tests) would fail with "cannot be called from a running event loop"."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.browser)
    items.sort(key=lambda item: HERE in item.path.parents)  # stable: only moves these last


@cache
def debian_chromium_version() -> str:
    """'156.0.8078.114', from `chromium --version` (empty if it is missing or does not answer)."""
    if not CHROMIUM.exists():
        return ""
    try:
        out = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    m = re.search(r"\b(\d+\.\d+\.\d+\.\d+)\b", out)
    return m.group(1) if m else ""


@cache
def playwright_versions() -> tuple[str, str]:
    """(Playwright's version, the Chromium build it bundles and documents)."""
    import playwright

    bundled = "?"
    browsers = Path(playwright.__file__).parent / "driver" / "package" / "browsers.json"
    try:
        for b in json.loads(browsers.read_text())["browsers"]:
            if b["name"] == "chromium":
                bundled = b["browserVersion"]
    except (OSError, ValueError, KeyError):
        pass
    return dist_version("playwright"), bundled


def versions_line() -> str:
    pw, bundled = playwright_versions()
    return (f"playwright {pw} (bundles chromium {bundled}, not installed here), "
            f"Debian chromium {debian_chromium_version() or '(no version from --version)'} at {CHROMIUM}")


def pytest_report_header(config: pytest.Config) -> str:
    return "browser tests: " + versions_line()


# ---------------------------------------------------------------------------------------------
# launching Debian's chromium


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM}: `apt-get install chromium` "
                    "(never `playwright install`)")
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium_version(chromium_executable: Path) -> str:
    """Debian's chromium version, from `chromium --version`."""
    return debian_chromium_version()


@pytest.fixture(scope="session")
def playwright_version() -> tuple[str, str]:
    """(Playwright's version, the Chromium build it bundles: not the one these tests run)."""
    return playwright_versions()


@pytest.fixture(scope="session")
def browser_type_launch_args(
    browser_type_launch_args: dict[str, Any], browser_name: str, chromium_executable: Path
) -> dict[str, Any]:
    if browser_name != "chromium":
        pytest.skip(f"only Debian's chromium is installed here, not {browser_name}")
    return {**browser_type_launch_args, "executable_path": str(chromium_executable),
            "args": list(LAUNCH_ARGS)}


@pytest.fixture(scope="session")
def base_url(pytestconfig: pytest.Config) -> str | None:
    # the same as pytest-playwright 0.10's own fallback, which pytest 9 warns about (a session fixture
    # defined as an instance method, PytestRemovedIn10Warning)
    return pytestconfig.getoption("--base-url") or pytestconfig.getini("base_url") or None


def _launch(browser_type: Any, launch_args: dict[str, Any]) -> Any:
    from playwright.sync_api import Error

    try:
        return browser_type.launch(**launch_args)
    except Error as e:
        pytest.fail(f"launching Debian's chromium failed: {versions_line()}; launch args {launch_args}\n{e}",
                    pytrace=False)


@pytest.fixture(scope="session")
def browser(browser_type: Any, browser_type_launch_args: dict[str, Any]) -> Iterator[Any]:
    b = _launch(browser_type, browser_type_launch_args)
    yield b
    b.close()


# ---------------------------------------------------------------------------------------------
# TLS: certificates, an HTTPS server, and a browser that trusts exactly one key


def spki_pin_of(cert_pem: bytes) -> str:
    """base64(sha256(SubjectPublicKeyInfo)) of the one certificate in cert_pem: the form
    --ignore-certificate-errors-spki-list takes (the key info, not the whole certificate)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    certs = x509.load_pem_x509_certificates(cert_pem)
    if len(certs) != 1:
        raise ValueError(f"pin exactly one certificate, this PEM holds {len(certs)}")
    spki = certs[0].public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="session")
def spki_pin() -> Callable[[bytes], str]:
    return spki_pin_of


@dataclass(frozen=True)
class CertPair:
    cert: Path  # this certificate alone (PEM)
    key: Path  # its private key (PKCS#8 PEM)
    chain: Path  # this certificate followed by its issuers: what a server sends to include them


def new_cert(directory: Path, name: str = "server", ca: bool = False,
             issuer: CertPair | None = None) -> CertPair:
    """A fresh P-256 certificate for localhost / 127.0.0.1, valid for a day, as PEM files in
    ``directory``; self-signed unless ``issuer`` (a CertPair made with ca=True) signs it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"debvisor-test-{name}")])
    now = datetime.datetime.now(datetime.UTC)
    if issuer is None:
        issuer_name, signing_key, issuer_chain = subject, key, b""
    else:
        issuer_name = x509.load_pem_x509_certificate(issuer.cert.read_bytes()).subject
        loaded = serialization.load_pem_private_key(issuer.key.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        signing_key, issuer_chain = loaded, issuer.chain.read_bytes()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                        critical=False)
    cert_pem = builder.sign(signing_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    pair = CertPair(directory / f"{name}.pem", directory / f"{name}.key",
                    directory / f"{name}-chain.pem")
    pair.cert.write_bytes(cert_pem)
    pair.chain.write_bytes(cert_pem + issuer_chain)
    pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    pair.key.chmod(0o600)
    return pair


@pytest.fixture
def make_cert(tmp_path: Path) -> Callable[..., CertPair]:
    """make_cert(name="server", ca=False, issuer=None) -> CertPair: :func:`new_cert` under
    tmp_path."""

    def make(name: str = "server", ca: bool = False, issuer: CertPair | None = None) -> CertPair:
        return new_cert(tmp_path, name, ca, issuer)

    return make


@pytest.fixture(scope="session")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    """One server certificate (localhost, 127.0.0.1) for the session's in-process panels and
    pages: the browser that pins it is launched once."""
    return new_cert(tmp_path_factory.mktemp("server-cert"), "panel")


def serve_https(app: Any, pair: CertPair, send_chain: bool = False,
                port: int = 0) -> tuple[str, Callable[[], None]]:
    """uvicorn serving ``app`` over TLS (the certificate alone, or with its issuers) from a
    thread of this process on 127.0.0.1 (``port``, default any free one); (its URL, stop)."""
    uvicorn = pytest.importorskip("uvicorn", reason=PANEL_EXTRA)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    certfile = pair.chain if send_chain else pair.cert
    config = uvicorn.Config(app, ssl_certfile=str(certfile), ssl_keyfile=str(pair.key),
                            log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"https-{port}")
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(15)

    return f"https://127.0.0.1:{port}", stop


@pytest.fixture
def https_server() -> Iterator[Callable[..., str]]:
    """https_server(asgi_app, cert_pair, send_chain=False) -> "https://127.0.0.1:<port>":
    :func:`serve_https`, stopped at the end of the test."""
    stops: list[Callable[[], None]] = []

    def serve(app: Any, pair: CertPair, send_chain: bool = False) -> str:
        url, stop = serve_https(app, pair, send_chain)
        stops.append(stop)
        return url

    yield serve
    for stop in stops:
        stop()


@pytest.fixture(scope="module")
def module_https_server() -> Iterator[Callable[..., str]]:
    """Like ``https_server`` (with ``port``: a given one), stopped after the module."""
    stops: list[Callable[[], None]] = []

    def serve(app: Any, pair: CertPair, send_chain: bool = False, port: int = 0) -> str:
        url, stop = serve_https(app, pair, send_chain, port)
        stops.append(stop)
        return url

    yield serve
    for stop in stops:
        stop()


@pytest.fixture(scope="session")
def _pinned_browsers(browser_type: Any, browser_type_launch_args: dict[str, Any]) -> Iterator[dict[str, Any]]:
    browsers: dict[str, Any] = {}
    yield browsers
    for b in browsers.values():
        b.close()


def _pinned_browser(browsers: dict[str, Any], browser_type: Any, launch_args: dict[str, Any],
                    cert_pem_path: str | os.PathLike[str]) -> Any:
    """The chromium that trusts exactly that certificate's key (launched once per pin)."""
    pin = spki_pin_of(Path(cert_pem_path).read_bytes())
    b = browsers.get(pin)
    if b is None:
        args = [*launch_args.get("args", []), f"--ignore-certificate-errors-spki-list={pin}"]
        b = browsers[pin] = _launch(browser_type, {**launch_args, "args": args})
    return b


@pytest.fixture
def trusted_context(
    _pinned_browsers: dict[str, Any],
    browser_type: Any,
    browser_type_launch_args: dict[str, Any],
    browser_context_args: dict[str, Any],
) -> Iterator[Callable[..., Any]]:
    """trusted_context(cert_pem_path, **new_context_args) -> BrowserContext of a chromium that
    trusts exactly that one certificate's key (one browser per pin, shared by the session;
    the contexts are closed at the end of the test)."""
    contexts: list[Any] = []

    def make(cert_pem_path: str | os.PathLike[str], **context_args: Any) -> Any:
        b = _pinned_browser(_pinned_browsers, browser_type, browser_type_launch_args,
                            cert_pem_path)
        ctx = b.new_context(**{**browser_context_args, **context_args})
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture(scope="module")
def module_context(
    _pinned_browsers: dict[str, Any],
    browser_type: Any,
    browser_type_launch_args: dict[str, Any],
    browser_context_args: dict[str, Any],
) -> Iterator[Callable[..., Any]]:
    """Like ``trusted_context``, for a context several tests of a module share (e.g. one
    login for the tests that do not depend on a fresh session); closed after the module."""
    contexts: list[Any] = []

    def make(cert_pem_path: str | os.PathLike[str], **context_args: Any) -> Any:
        b = _pinned_browser(_pinned_browsers, browser_type, browser_type_launch_args,
                            cert_pem_path)
        ctx = b.new_context(**{**browser_context_args, **context_args})
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()


# ---------------------------------------------------------------------------------------------
# screenshots


def artifacts_dir() -> Path:
    return Path(os.environ.get("DEBVISOR_ARTIFACTS") or ROOT / "artifacts" / "screenshots")


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[..., Path]:
    """shot(page, name, **screenshot_args) -> Path of <test name>--<name>.png under
    $DEBVISOR_ARTIFACTS (default <repo>/artifacts/screenshots, git-ignored)."""

    def safe(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")[:120]

    def take(page: Any, name: str, **kwargs: Any) -> Path:
        out = artifacts_dir()
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{safe(request.node.name)}--{safe(name)}.png"
        page.screenshot(path=str(path), **kwargs)
        return path

    return take


# ---------------------------------------------------------------------------------------------
# the lab's panel and the one console guest (panellab.py), shared by the session's tests


@pytest.fixture(scope="session")
def plab(dv_lab: Any) -> Any:
    """The lab's panel (`debvisor lab up libvirt rpcd panel`): a :class:`panellab.PanelLab`."""
    pytest.importorskip("debvisor_libvirt", reason="the hv plugin runs the console's guest")
    import panellab

    return panellab.open_plab(dv_lab)


@pytest.fixture(scope="session")
def guest(plab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The console guest (:class:`panellab.Guest`), started, booting in the background:
    call ``.ready()`` where it must have booted. The migration test moves it to node2."""
    import panellab

    g = panellab.start_guest(plab, tmp_path_factory.mktemp("qemu"))
    try:
        yield g
    finally:
        for name in (panellab.VM, panellab.SPARE):
            plab.remove(name)
