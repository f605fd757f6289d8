"""A throw-away PKI for the lab's TLS, made with the openssl CLI.

QEMU encrypts a migration stream (``VIR_MIGRATE_TLS``, `hv migrate --tls`) with the files of
qemu.conf's ``migrate_tls_x509_cert_dir``: ``ca-cert.pem``, ``server-cert.pem``,
``server-key.pem``, ``client-cert.pem`` and ``client-key.pem``. Both lab nodes share one
directory: the server certificate names both nodes' addresses (QEMU and libvirt check the
address of the URI against it) and the client certificate is what a client presents.
libvirtd's TLS listener (``qemu+tls://``) uses the same CA and server files; a libvirt
client finds its files through the URI's ``pkipath``, named ``cacert.pem``,
``clientcert.pem`` and ``clientkey.pem`` (:func:`libvirt_client_dir`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")
DAYS = "3"


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,  # noqa: S603
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {res.stderr.strip()}")


def _issue(d: Path, role: str, ext: list[str]) -> None:
    """A key and a certificate for ``role`` (server, client) signed by the lab CA."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{role}-key.pem", "-out", f"{role}.csr",
             "-subj", f"/O=DebVisor lab/CN=debvisor-lab-{role}", cwd=d)
    (d / f"{role}.ext").write_text("".join(f"{e}\n" for e in ext))
    _openssl("x509", "-req", "-in", f"{role}.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
             "-CAcreateserial", "-days", DAYS, "-out", f"{role}-cert.pem", "-extfile", f"{role}.ext", cwd=d)
    (d / f"{role}.csr").unlink()
    (d / f"{role}.ext").unlink()


def qemu_tls_dir(d: Path, nodes: dict[str, str]) -> Path:
    """Create (once) the CA, server and client files in ``d`` for ``nodes`` (name → address)."""
    if all((d / f).exists() for f in FILES):
        return d
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca-cert.pem",
             "-days", DAYS, "-subj", "/O=DebVisor lab/CN=DebVisor lab CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    san = ",".join([*(f"IP:{a}" for a in nodes.values()), *(f"DNS:{n}" for n in nodes)])
    common = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
    _issue(d, "server", [*common, "extendedKeyUsage=serverAuth", f"subjectAltName={san}"])
    _issue(d, "client", [*common, "extendedKeyUsage=clientAuth"])
    for f in d.iterdir():
        f.chmod(0o600)
    return d


def libvirt_client_dir(qemu_dir: Path, d: Path) -> Path:
    """A ``pkipath`` directory for libvirt clients, linking the lab's CA and client files."""
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    for name, src in (("cacert.pem", "ca-cert.pem"), ("clientcert.pem", "client-cert.pem"),
                      ("clientkey.pem", "client-key.pem")):
        link = d / name
        if not link.exists():
            link.symlink_to(qemu_dir / src)
    return d
