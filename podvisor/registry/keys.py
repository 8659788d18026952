"""The token service's signing key and the JWTs it signs.

Distribution's ``auth: token`` trusts a token when the JWT header carries an ``x5c`` certificate chain
that verifies against its ``rootcertbundle`` (or a libtrust ``kid`` of a key in that bundle). We make
one ECDSA P-256 key and a self-signed certificate for it on first start, keep both under the data dir
(the key readable by root only), put the certificate in the bundle and in every token's ``x5c``: the
registry then verifies our signature with nothing else configured. ES256 signatures in a JWS are the raw
``r || s`` pair, not DER, so we convert.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from podvisor.pki import key_pem, self_signed_ca, write_private

__all__ = ["SigningKey", "b64url", "b64url_decode"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SigningKey:
    """An EC P-256 key with its self-signed certificate, loaded from or created in ``directory``."""

    KEY_FILE = "token-key.pem"
    CERT_FILE = "token-cert.pem"

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, cert_path: Path) -> None:
        self._key = key
        self.cert = cert
        self.cert_path = cert_path
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")

    @classmethod
    def load_or_create(cls, directory: Path) -> SigningKey:
        directory.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = directory / cls.KEY_FILE, directory / cls.CERT_FILE
        if key_path.exists() and cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return cls(key, cert, cert_path)
        key, cert = self_signed_ca("podvisor registry token signer")
        write_private(key_path, key_pem(key))
        write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return cls(key, cert, cert_path)

    def sign_jwt(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self._x5c]}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + b64url(json.dumps(claims, separators=(",", ":")).encode()))
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def verify_jwt(self, token: str) -> dict[str, Any]:
        """The claims of a token we signed; ``ValueError`` if the signature does not verify."""
        try:
            head, body, sig = token.split(".")
            raw = b64url_decode(sig)
            der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
            self._key.public_key().verify(der, f"{head}.{body}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
            claims: dict[str, Any] = json.loads(b64url_decode(body))
        except Exception as exc:  # noqa: BLE001 - any malformation is one answer: not ours
            raise ValueError("token signature does not verify") from exc
        return claims


