"""Local tickets: how a caller proves it may drive this host's VMs.

A secret (32 random bytes, hex) lives in ``DATA/hostd/secret``, mode 0600 and owned by root: being able
to read it is the credential, as with a local hypervisor's ticket files. ``POST /session`` exchanges it
for a session ticket valid `TICKET_TTL` seconds; every other request carries ``Authorization: Bearer
<ticket>``. Tickets live only in hostd's memory (a restart invalidates them; clients log in again on
401). Only a hash of each ticket is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["TicketAuthority", "ensure_secret", "read_secret", "TICKET_TTL"]

TICKET_TTL = 600.0


def ensure_secret(path: Path) -> str:
    """The host secret, made (0600) if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        value = secrets.token_hex(32)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        os.replace(tmp, path)
    os.chmod(path, 0o600)
    return read_secret(path)


def read_secret(path: Path) -> str:
    return path.read_text().strip()


class TicketAuthority:
    def __init__(self, secret: str, *, ttl: float = TICKET_TTL, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret.encode()
        self.ttl = ttl
        self._clock = clock
        self._tickets: dict[str, float] = {}  # sha256(ticket) -> expiry

    def login(self, presented: str, *, ttl: float | None = None) -> tuple[str, float] | None:
        """A new ticket and its expiry for the right secret, else None."""
        if not hmac.compare_digest(presented.strip().encode(), self._secret):
            return None
        now = self._clock()
        self._tickets = {h: exp for h, exp in self._tickets.items() if exp > now}
        ticket = secrets.token_urlsafe(32)
        expires = now + min(ttl or self.ttl, self.ttl)
        self._tickets[self._hash(ticket)] = expires
        return ticket, expires

    def check(self, ticket: str) -> bool:
        expires = self._tickets.get(self._hash(ticket))
        return expires is not None and expires > self._clock()

    def logout(self, ticket: str) -> None:
        self._tickets.pop(self._hash(ticket), None)

    @staticmethod
    def _hash(ticket: str) -> str:
        return hashlib.sha256(ticket.encode()).hexdigest()
