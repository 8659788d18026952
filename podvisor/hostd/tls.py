"""hostd's TLS certificate: self-signed for 127.0.0.1/localhost, made once, pinned by clients.

Clients do not trust a CA; they load exactly this certificate (``DATA/hostd/tls/hostd.crt``) as
their only trust anchor, so a process that grabs the port cannot pass for hostd.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from podvisor.pki import key_pem, self_signed_ca, write_private

__all__ = ["ensure_certificate", "server_context", "client_context"]


def ensure_certificate(tls_dir: Path, *, host_name: str = "hostd") -> tuple[Path, Path]:
    cert_path, key_path = tls_dir / "hostd.crt", tls_dir / "hostd.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    tls_dir.mkdir(parents=True, exist_ok=True)
    key, cert = self_signed_ca(f"podvisor hostd {host_name}", sans=("127.0.0.1", "localhost"), path_length=0)
    write_private(key_path, key_pem(key))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def client_context(cert: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = True
    return ctx
