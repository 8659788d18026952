"""Service account tokens: the JWTs the API server signs for a ServiceAccount and later accepts as it.

Why a module of its own: the TokenRequest subresource (registry layer) writes this format and the
authenticator (HTTP layer) reads it; keeping the format here means neither imports the other, and
nothing here does I/O, so both sides can be tested without a server.

The format is Kubernetes' own, so that tools which decode service account tokens read ours:

* header ``{"alg": "ES256" | "RS256", "kid": <key id>, "typ": "JWT"}``; the key id is the unpadded
  base64url SHA-256 of the public key's DER ``SubjectPublicKeyInfo``, as kube derives it;
* claims ``iss``, ``sub`` (``system:serviceaccount:<ns>:<name>``), ``aud`` (a list), ``exp``, ``iat``,
  ``nbf``, ``jti`` and the private ``kubernetes.io`` claim: ``namespace``, ``serviceaccount{name,uid}``
  and, for a bound token, ``pod{name,uid}`` (with ``node{name,uid}`` when the pod is scheduled) or
  ``secret{name,uid}``.

`TokenVerifier.verify` answers three ways, as one authenticator in kube's union does: None for a
bearer token that is not ours at all (not a JWT, or another issuer: another authenticator may know
it), `InvalidToken` for one of ours that fails (bad signature, expired, wrong audience), else the
claims. Whether the account (and the bound object) still exist is the caller's check: it needs the
cluster's state. Times get go-jose's 60 s leeway, as kube's validator does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

__all__ = [
    "DEFAULT_ISSUER",
    "DEFAULT_AUDIENCES",
    "DEFAULT_EXPIRATION_SECONDS",
    "MIN_EXPIRATION_SECONDS",
    "MAX_EXPIRATION_SECONDS",
    "LEEWAY_SECONDS",
    "SERVICE_ACCOUNT_PREFIX",
    "SERVICE_ACCOUNTS_GROUP",
    "InvalidToken",
    "ObjectRef",
    "PublicKey",
    "SigningKey",
    "TokenClaims",
    "TokenIssuer",
    "TokenVerifier",
    "key_id",
    "load_public_keys",
    "service_account_username",
]

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# what a token is for when its request names no audience, and what the API server accepts
DEFAULT_AUDIENCES: tuple[str, ...] = (DEFAULT_ISSUER, "podvisor")
DEFAULT_EXPIRATION_SECONDS = 3600
MIN_EXPIRATION_SECONDS = 600
MAX_EXPIRATION_SECONDS = 1 << 32
LEEWAY_SECONDS = 60
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public_key: PublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64(hashlib.sha256(der).digest())


def _alg(key: PublicKey | _PrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"service account keys on curve {key.curve.name} are not supported (want P-256)")
        return "ES256"
    return "RS256"


class SigningKey:
    """A private key that signs tokens: EC P-256 (ES256, what `podvisor up` makes) or RSA (RS256)."""

    def __init__(self, private_key: _PrivateKey) -> None:
        self._key = private_key
        self.alg = _alg(private_key)
        self.public_key: PublicKey = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{path}: not an EC or RSA private key")
        return cls(key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": self.alg, "kid": self.key_id, "typ": "JWT"}
        signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + _b64(json.dumps(claims, separators=(",", ":")).encode()))
        data = signing_input.encode("ascii")
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            sig = self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64(sig)


def load_public_keys(paths: Iterable[Path]) -> list[PublicKey]:
    """The verification keys in ``paths``; each file may hold PEM public keys, a private key (its
    public half is used) or certificates, like kube's ``--service-account-key-file``."""
    out: list[PublicKey] = []
    for path in paths:
        found = 0
        for m in _PEM_BLOCK.finditer(path.read_bytes()):
            label, pem = m.group(1), m.group(0)
            key: Any
            if label.endswith(b"PRIVATE KEY"):
                key = serialization.load_pem_private_key(pem, password=None).public_key()
            elif label == b"CERTIFICATE":
                key = x509.load_pem_x509_certificate(pem).public_key()
            elif label.endswith(b"PUBLIC KEY"):
                key = serialization.load_pem_public_key(pem)
            else:
                continue
            if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
                out.append(key)
                found += 1
        if not found:
            raise ValueError(f"{path}: no EC or RSA key found")
    return out


@dataclass(frozen=True, slots=True)
class ObjectRef:
    name: str
    uid: str

    def to_claim(self) -> dict[str, str]:
        return {"name": self.name, "uid": self.uid}


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a token says, once its signature and times checked out."""

    issuer: str
    namespace: str
    service_account: ObjectRef
    audiences: tuple[str, ...]
    issued_at: int
    not_before: int
    expires_at: int
    token_id: str = ""
    pod: ObjectRef | None = None
    secret: ObjectRef | None = None
    node: ObjectRef | None = None

    @property
    def username(self) -> str:
        return service_account_username(self.namespace, self.service_account.name)

    def to_jwt_claims(self) -> dict[str, Any]:
        k8s: dict[str, Any] = {"namespace": self.namespace, "serviceaccount": self.service_account.to_claim()}
        if self.pod is not None:
            k8s["pod"] = self.pod.to_claim()
            if self.node is not None:
                k8s["node"] = self.node.to_claim()
        elif self.secret is not None:
            k8s["secret"] = self.secret.to_claim()
        claims: dict[str, Any] = {
            "aud": list(self.audiences), "exp": self.expires_at, "iat": self.issued_at, "iss": self.issuer,
            "kubernetes.io": k8s, "nbf": self.not_before, "sub": self.username,
        }
        if self.token_id:
            claims["jti"] = self.token_id
        return claims


class InvalidToken(Exception):
    """A token of ours that does not authenticate; the message says why (for the server's log only:
    clients hear a plain 401)."""


class TokenIssuer:
    """Signs service account tokens for one issuer. ``audiences`` are the API server's own: what a
    TokenRequest without audiences gets."""

    def __init__(self, key: SigningKey, *, issuer: str = DEFAULT_ISSUER,
                 audiences: Sequence[str] = DEFAULT_AUDIENCES) -> None:
        if not audiences:
            raise ValueError("the API server needs at least one audience")
        self.key = key
        self.issuer = issuer
        self.audiences = tuple(audiences)

    @classmethod
    def from_key_file(cls, path: Path, **kw: Any) -> TokenIssuer:
        return cls(SigningKey.load(path), **kw)

    def issue(
        self,
        *,
        namespace: str,
        service_account: ObjectRef,
        audiences: Sequence[str],
        expiration_seconds: int,
        now: float,
        pod: ObjectRef | None = None,
        secret: ObjectRef | None = None,
        node: ObjectRef | None = None,
    ) -> tuple[str, TokenClaims]:
        """A signed token and its claims; ``now`` is a Unix time (the issue time, in whole seconds)."""
        issued = int(now)
        claims = TokenClaims(
            issuer=self.issuer, namespace=namespace, service_account=service_account,
            audiences=tuple(audiences) or self.audiences, issued_at=issued, not_before=issued,
            expires_at=issued + int(expiration_seconds), token_id=str(uuid.uuid4()),
            pod=pod, secret=secret if pod is None else None, node=node if pod is not None else None,
        )
        return self.key.sign(claims.to_jwt_claims()), claims


def _ref(value: Any) -> ObjectRef | None:
    if not isinstance(value, dict):
        return None
    return ObjectRef(name=str(value.get("name") or ""), uid=str(value.get("uid") or ""))


class TokenVerifier:
    """Checks tokens from ``issuers`` against ``keys`` (any of them may have signed), their times and
    that they are meant for one of ``audiences`` (the API server's)."""

    def __init__(self, keys: Sequence[PublicKey], *, issuers: Sequence[str] = (DEFAULT_ISSUER,),
                 audiences: Sequence[str] = DEFAULT_AUDIENCES, leeway: int = LEEWAY_SECONDS) -> None:
        if not keys:
            raise ValueError("a token verifier needs at least one key")
        self.keys = list(keys)
        self._by_kid = {key_id(k): k for k in self.keys}
        self.issuers = frozenset(issuers)
        self.audiences = frozenset(audiences)
        self.leeway = leeway

    def verify(self, token: str, *, now: float) -> TokenClaims | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = json.loads(_unb64(parts[0]))
            payload = json.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except (ValueError, binascii.Error):
            return None
        if not isinstance(header, dict) or not isinstance(payload, dict):
            return None
        if payload.get("iss") not in self.issuers:
            return None  # someone else's token (or not a service account token at all)
        self._check_signature(header, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)
        return self._check_claims(payload, now)

    def _check_signature(self, header: dict[str, Any], data: bytes, signature: bytes) -> None:
        alg = header.get("alg")
        kid = header.get("kid")
        candidates = [self._by_kid[kid]] if isinstance(kid, str) and kid in self._by_kid else self.keys
        for key in candidates:
            if _alg(key) != alg:
                continue
            try:
                if isinstance(key, ec.EllipticCurvePublicKey):
                    if len(signature) != 64:
                        continue
                    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                               int.from_bytes(signature[32:], "big"))
                    key.verify(der, data, ec.ECDSA(hashes.SHA256()))
                else:
                    key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                continue
            return
        raise InvalidToken("token signature does not verify with any service account key")

    def _check_claims(self, payload: dict[str, Any], now: float) -> TokenClaims:
        try:
            exp, nbf = int(payload["exp"]), int(payload.get("nbf", payload.get("iat", 0)))
            iat = int(payload.get("iat", nbf))
        except (KeyError, TypeError, ValueError):
            raise InvalidToken("token has no valid expiry") from None
        if now > exp + self.leeway:
            raise InvalidToken("service account token has expired")
        if now < nbf - self.leeway:
            raise InvalidToken("service account token is not valid yet")
        aud = payload.get("aud")
        audiences = (aud,) if isinstance(aud, str) else tuple(str(a) for a in aud or () if isinstance(a, str))
        if not self.audiences.intersection(audiences):
            raise InvalidToken(f"token audiences {list(audiences)} are not the API server's")
        k8s = payload.get("kubernetes.io")
        if not isinstance(k8s, dict):
            raise InvalidToken("token has no kubernetes.io claim")
        sa = _ref(k8s.get("serviceaccount"))
        namespace = str(k8s.get("namespace") or "")
        if sa is None or not sa.name or not sa.uid or not namespace:
            raise InvalidToken("token does not name a service account")
        if payload.get("sub") != service_account_username(namespace, sa.name):
            raise InvalidToken("token subject does not match its service account claim")
        return TokenClaims(
            issuer=str(payload["iss"]), namespace=namespace, service_account=sa, audiences=audiences,
            issued_at=iat, not_before=nbf, expires_at=exp, token_id=str(payload.get("jti") or ""),
            pod=_ref(k8s.get("pod")), secret=_ref(k8s.get("secret")), node=_ref(k8s.get("node")),
        )
