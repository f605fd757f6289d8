"""The cluster CA of debvisor-rpcd (``debvisor rpcd ca init|issue``), with ``cryptography``.

A directory holds ``ca.pem`` and ``ca.key`` (0600); ``issue NAME`` writes ``NAME.pem`` and
``NAME.key`` (0600) beside them. Node and user certificates carry the name as their
subject CN (what rpcd's RBAC calls the identity) and the kind (``node``, ``user``,
``proxy``) as the OU; a server certificate also names its DNS names and addresses.
Keys are ECDSA P-256: small, and fast to verify on every TLS handshake.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..secrets import read_secret, write_secret

KINDS = ("node", "user", "proxy")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.@-]{0,62}")


def _crypto() -> Any:
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - the rpcd extra brings it
        raise BadInput("the cryptography package is missing: install debvisor-core[rpcd]") from None
    return x509


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise BadInput(f"{name[:70]!r} is not a certificate name: lower-case letters, digits "
                       "and . _ @ -, at most 63 characters")
    return name


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _write_cert(path: Path, cert: Any) -> None:
    """Replace a certificate file atomically: rpcd re-reads certificates on SIGHUP and must
    never see half of one."""
    from ..statefile import atomic_write

    with atomic_write(path, 0o644) as f:
        f.write(_cert_pem(cert))


def init(directory: Path, *, days: int = 3650, name: str = "DebVisor cluster CA") -> dict[str, Any]:
    """Create the CA in ``directory`` (refused when one exists: never overwrite a CA)."""
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if (directory / "ca.pem").exists() or (directory / "ca.key").exists():
        raise BadInput(f"a CA exists in {directory} already; refusing to replace it")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DebVisor"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    write_secret(directory / "ca.key", _key_pem(key), "CA key")
    _write_cert(directory / "ca.pem", cert)
    return {"ca": str(directory / "ca.pem"), "key": str(directory / "ca.key"),
            "not_after": cert.not_valid_after_utc.isoformat()}


def issue(directory: Path, name: str, *, kind: str = "node", server: bool = False,
          dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), days: int = 365,
          out: Path | None = None, not_before: dt.datetime | None = None) -> dict[str, Any]:
    """Issue ``NAME.pem``/``NAME.key`` from the CA in ``directory`` (into ``out``)."""
    x509 = _crypto()
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    check_name(name)
    if kind not in KINDS:
        raise BadInput(f"kind must be one of {', '.join(KINDS)}")
    if not (directory / "ca.pem").exists():
        raise BadInput(f"no CA in {directory}; create it with `debvisor rpcd ca init`")
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key(read_secret(directory / "ca.key", "CA key"), None)
    addresses = []
    for a in ips:
        try:
            addresses.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            raise BadInput(f"{a!r} is not an IP address") from None
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or (_now() - dt.timedelta(minutes=5))
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DebVisor"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    sans = [x509.DNSName(d) for d in dns] + addresses
    if server and not sans:
        sans = [x509.DNSName(name)]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    dest = out or directory
    write_secret(dest / f"{name}.key", _key_pem(key), f"{name} key")
    _write_cert(dest / f"{name}.pem", cert)
    return {"name": name, "kind": kind, "cert": str(dest / f"{name}.pem"),
            "key": str(dest / f"{name}.key"), "ca": str(directory / "ca.pem"),
            "server": server, "not_after": cert.not_valid_after_utc.isoformat()}
