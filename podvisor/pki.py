"""The cluster's certificates and credentials, made once per data dir and reused on every start.

Layout under ``DIR/pki/``: ``ca.crt``/``ca.key`` (the cluster CA, 10 years), ``apiserver.crt``/``.key``
(serving certificate with SANs for every address a client may use: kubectl refuses a CN-only
certificate), ``admin.crt``/``.key`` (client certificate, CN ``podvisor-admin``, O ``system:masters``:
the admin kubeconfig authenticates with it), ``admin-token`` (a bearer token for the same user, for
clients that cannot present certificates, e.g. the registry's token service), ``tokens.csv`` (the
static token file the API server reads) and ``sa.key``/``sa.pub`` (the service-account signing key,
EC P-256: the API server signs TokenRequest tokens with it and verifies presented ones against the
public half; as kube's ``--service-account-signing-key-file``/``--service-account-key-file``). Keys are 0600. The serving certificate is re-issued when a
new SAN is needed (another ``--listen`` address); the CA and the credentials never change, so old
kubeconfigs keep working.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ClusterPKI", "ensure_cluster_pki", "issue_node_serving_cert", "self_signed_ca", "key_pem", "write_private",
           "ADMIN_USER", "ADMIN_GROUP"]

ADMIN_USER = "podvisor-admin"
ADMIN_GROUP = "system:masters"


@dataclass(frozen=True, slots=True)
class ClusterPKI:
    dir: Path
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    admin_token_file: Path
    token_file: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path
    service_account_key: Path
    service_account_pub: Path

    @property
    def admin_token(self) -> str:
        return self.admin_token_file.read_text().strip()


def ensure_cluster_pki(data_dir: Path, *, sans: list[str]) -> ClusterPKI:
    """Create what is missing under ``data_dir/pki``; return the paths."""
    d = data_dir / "pki"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    pki = ClusterPKI(
        dir=d,
        ca_cert=d / "ca.crt",
        ca_key=d / "ca.key",
        serving_cert=d / "apiserver.crt",
        serving_key=d / "apiserver.key",
        admin_cert=d / "admin.crt",
        admin_key=d / "admin.key",
        admin_token_file=d / "admin-token",
        token_file=d / "tokens.csv",
        kubelet_client_cert=d / "apiserver-kubelet-client.crt",
        kubelet_client_key=d / "apiserver-kubelet-client.key",
        service_account_key=d / "sa.key",
        service_account_pub=d / "sa.pub",
    )
    if not (pki.ca_cert.exists() and pki.ca_key.exists()):
        key, cert = self_signed_ca("podvisor-ca")
        _write_key(pki.ca_key, key)
        _write_cert(pki.ca_cert, cert)
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())

    wanted = _normalise_sans(sans)
    if not pki.serving_cert.exists() or not wanted <= _cert_sans(pki.serving_cert):
        wanted |= _cert_sans(pki.serving_cert) if pki.serving_cert.exists() else set()
        _issue(pki.serving_cert, pki.serving_key, ca_cert, ca_key, cn="podvisor-apiserver", org=None,
               usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=wanted)
    if not pki.admin_cert.exists():
        _issue(pki.admin_cert, pki.admin_key, ca_cert, ca_key, cn=ADMIN_USER, org=ADMIN_GROUP,
               usage=ExtendedKeyUsageOID.CLIENT_AUTH, sans=set())
    if not pki.kubelet_client_cert.exists():
        _issue(pki.kubelet_client_cert, pki.kubelet_client_key, ca_cert, ca_key, cn="podvisor-apiserver",
               org=ADMIN_GROUP, usage=ExtendedKeyUsageOID.CLIENT_AUTH, sans=set())
    if not pki.admin_token_file.exists():
        _write_private(pki.admin_token_file, secrets.token_urlsafe(32) + "\n")
    if not pki.token_file.exists():
        _write_private(pki.token_file, f'{pki.admin_token},{ADMIN_USER},{ADMIN_USER},"{ADMIN_GROUP}"\n')
    if not pki.service_account_key.exists():
        _write_key(pki.service_account_key, ec.generate_private_key(ec.SECP256R1()))
        pki.service_account_pub.unlink(missing_ok=True)  # a new key: its public half follows
    if not pki.service_account_pub.exists():
        sa_key = serialization.load_pem_private_key(pki.service_account_key.read_bytes(), password=None)
        pub = sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        _write_cert(pki.service_account_pub, pub)
    return pki


def self_signed_ca(
    common_name: str, *, sans: tuple[str, ...] = (), path_length: int | None = None, days: int = 3650,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new P-256 key and a self-signed CA certificate for it: the root of the cluster CA, and the
    single-purpose roots hostd (its serving certificate, pinned by clients) and the registry's token
    signer use. ``sans`` (IP addresses or DNS names) make it usable as a serving certificate too."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _builder(name, name, key, days=days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(_general_names(set(sans))), critical=False)
    return key, builder.sign(key, hashes.SHA256())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def write_private(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write atomically (temp file, fsync, rename) with ``mode`` from the first byte on."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _general_names(sans: set[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for s in sorted(sans):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(s)))
        except ValueError:
            names.append(x509.DNSName(s))
    return names


def issue_node_serving_cert(pki: ClusterPKI, node_name: str, *, sans: list[str]) -> tuple[Path, Path]:
    """The serving certificate of a node agent's HTTPS endpoint (logs/exec/port-forward), signed by
    the cluster CA so the API server verifies it; made once per node and reused."""
    cert_path = pki.dir / f"node-{node_name}.crt"
    key_path = pki.dir / f"node-{node_name}.key"
    wanted = _normalise_sans(sans) | {node_name}
    if not cert_path.exists() or not wanted <= _cert_sans(cert_path):
        ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        _issue(cert_path, key_path, ca_cert, ca_key, cn=f"system:node:{node_name}", org="system:nodes",
               usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=wanted)
    return cert_path, key_path


def _normalise_sans(sans: list[str]) -> set[str]:
    out = {"127.0.0.1", "localhost", "::1", socket.gethostname()}
    for s in sans:
        if s and s not in ("0.0.0.0", "::"):
            out.add(s)
    return out


def _cert_sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


def _issue(
    cert_path: Path, key_path: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *,
    cn: str, org: str | None, usage: x509.ObjectIdentifier, sans: set[str],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    builder = _builder(x509.Name(attrs), ca_cert.subject, key, days=3650)
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(_general_names(sans)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, *, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_private(path, pem.decode())


def _write_cert(path: Path, cert: x509.Certificate | bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, path)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
