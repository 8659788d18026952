"""The admin kubeconfig and its merge into the user's ~/.kube/config (kind's behaviour)."""

from __future__ import annotations

import ssl
from pathlib import Path

import yaml
from cryptography import x509

from podvisor.kubeconfig import build_kubeconfig, merge_into_user_kubeconfig
from podvisor.pki import ADMIN_USER, ensure_cluster_pki


def test_pki_is_made_once_and_serving_cert_has_sans(tmp_path: Path) -> None:
    pki = ensure_cluster_pki(tmp_path, sans=["10.1.2.3"])
    ca_before = pki.ca_cert.read_bytes()
    token = pki.admin_token
    cert = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
    assert {"127.0.0.1", "10.1.2.3"} <= ips
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    # a second start reuses the CA and the credentials; a new SAN re-issues only the serving cert
    again = ensure_cluster_pki(tmp_path, sans=["10.9.9.9"])
    assert again.ca_cert.read_bytes() == ca_before and again.admin_token == token
    cert2 = x509.load_pem_x509_certificate(again.serving_cert.read_bytes())
    ips2 = {str(i) for i in cert2.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)}
    assert {"10.1.2.3", "10.9.9.9"} <= ips2
    assert (pki.admin_key.stat().st_mode & 0o777) == 0o600
    admin = x509.load_pem_x509_certificate(pki.admin_cert.read_bytes())
    assert admin.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == ADMIN_USER
    # the serving certificate verifies against the CA for 127.0.0.1
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_merge_keeps_other_contexts(tmp_path: Path) -> None:
    pki = ensure_cluster_pki(tmp_path / "d", sans=[])
    target = tmp_path / "kube" / "config"
    target.parent.mkdir()
    target.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "other", "cluster": {"server": "https://other:6443"}},
                     {"name": "podvisor", "cluster": {"server": "https://old:1"}}],
        "users": [{"name": "other", "user": {"token": "t"}}],
        "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
    }))
    merge_into_user_kubeconfig(build_kubeconfig("https://127.0.0.1:6443", pki), target)
    merged = yaml.safe_load(target.read_text())
    assert merged["current-context"] == "podvisor"
    assert [c["name"] for c in merged["clusters"]] == ["other", "podvisor"]
    assert merged["clusters"][1]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert "certificate-authority-data" in merged["clusters"][1]["cluster"]
    assert "insecure-skip-tls-verify" not in merged["clusters"][1]["cluster"]
    assert {u["name"] for u in merged["users"]} == {"other", "podvisor"}
    assert {c["name"] for c in merged["contexts"]} == {"other", "podvisor"}
