"""Who is asking the token service: the credentials Podvisor already issues, checked again here.

`podvisor up` writes an admin bearer token to ``DATA/pki/admin-token`` and the API server's static
tokens to ``DATA/pki/tokens.csv`` (``token,user,uid,"group1,group2"``, kube-apiserver's token-file
format). A registry client logs in with any user name and one of those tokens as the password (as
``docker login`` does with an access token); the identity is the token's user, never the typed name,
except that the user name ``admin`` with the admin token is the administrator. The files are re-read
when they change, so tokens issued later work without restarting the registry.
"""

from __future__ import annotations

import base64
import csv
import hmac
import io
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Identity", "TokenFileAuthenticator", "ADMIN_GROUP"]

ADMIN_GROUP = "system:masters"


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""

    @property
    def is_admin(self) -> bool:
        return self.user == "admin" or ADMIN_GROUP in self.groups


@dataclass
class _Cache:
    stamp: tuple[float, float] = (-1.0, -1.0)
    tokens: dict[str, Identity] = field(default_factory=dict)


class TokenFileAuthenticator:
    """Checks Basic or Bearer credentials against the data dir's admin token and token file."""

    def __init__(self, pki_dir: Path) -> None:
        self.admin_token_path = pki_dir / "admin-token"
        self.tokens_path = pki_dir / "tokens.csv"
        self._cache = _Cache()

    def authenticate(self, authorization: str | None) -> Identity | None:
        """The identity behind an ``Authorization`` header value, or None (anonymous or wrong)."""
        if not authorization:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            return self._lookup(value)
        if scheme.lower() != "basic":
            return None
        try:
            _user, _, secret = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return self._lookup(secret)

    def _lookup(self, secret: str) -> Identity | None:
        if not secret:
            return None
        tokens = self._tokens()
        for token, ident in tokens.items():
            if hmac.compare_digest(token.encode(), secret.encode()):
                return ident
        return None

    def _tokens(self) -> dict[str, Identity]:
        stamp = (_mtime(self.admin_token_path), _mtime(self.tokens_path))
        if stamp == self._cache.stamp:
            return self._cache.tokens
        tokens: dict[str, Identity] = {}
        if self.tokens_path.exists():
            for row in csv.reader(io.StringIO(self.tokens_path.read_text())):
                if len(row) < 2 or not row[0].strip() or row[0].lstrip().startswith("#"):
                    continue
                groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
                tokens[row[0].strip()] = Identity(user=row[1].strip(), uid=row[2].strip() if len(row) > 2 else "",
                                                  groups=groups)
        if self.admin_token_path.exists():
            admin = self.admin_token_path.read_text().strip()
            if admin:
                prior = tokens.get(admin)
                groups = prior.groups if prior else ()
                if ADMIN_GROUP not in groups:
                    groups = (*groups, ADMIN_GROUP)
                tokens[admin] = Identity(user=prior.user if prior else "admin", uid=prior.uid if prior else "",
                                         groups=groups)
        self._cache = _Cache(stamp, tokens)
        return tokens


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns / 1e9
    except FileNotFoundError:
        return 0.0
