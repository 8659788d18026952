"""Unique values out of a range (Service cluster IPs, node ports), kept in storage.

Each allocated value is one storage key, created with the storage's atomic create: two API servers (or
two concurrent requests) can never hand out the same value, and allocations survive restarts with the
rest of the cluster state. Picking starts at a random offset and walks the range, skipping values already
taken; a lost race on one value simply moves on to the next.
"""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import Callable

from podvisor.storage import interface as st

__all__ = ["RangeAllocator", "ip_range", "port_range", "RangeFullError", "AlreadyAllocatedError", "OutOfRangeError"]


class RangeFullError(Exception):
    pass


class AlreadyAllocatedError(Exception):
    pass


class OutOfRangeError(Exception):
    pass


class RangeAllocator:
    """``size`` values; ``value(i)`` is the i-th, ``index(value)`` its position or None outside."""

    def __init__(
        self,
        storage: st.Storage,
        prefix: str,
        *,
        size: int,
        value: Callable[[int], str],
        index: Callable[[str], int | None],
        description: str,
        reserved: int = 0,
    ) -> None:
        self.storage = storage
        self.prefix = prefix
        self.size = size
        self.value = value
        self.index = index
        self.description = description
        self.reserved = reserved  # the first values are only handed out when asked for by value

    def _key(self, value: str) -> str:
        return self.prefix + value

    async def used(self) -> set[str]:
        out: set[str] = set()
        start: str | None = None
        while True:
            page = await self.storage.list(self.prefix, start_after=start, limit=1000)
            out.update(kv.key[len(self.prefix):] for kv in page.items)
            if not page.more or not page.items:
                return out
            start = page.items[-1].key

    async def allocate(self, owner: str, *, dry_run: bool = False) -> str:
        """Any free value. Raises `RangeFullError`."""
        used = await self.used()
        span = self.size - self.reserved
        if span <= 0:
            raise RangeFullError(self.description)
        offset = random.randrange(span)
        for step in range(span):
            candidate = self.value(self.reserved + (offset + step) % span)
            if candidate in used:
                continue
            if dry_run:
                return candidate
            try:
                await self.storage.create(self._key(candidate), json.dumps({"owner": owner}).encode())
            except st.KeyExistsError:
                continue
            return candidate
        raise RangeFullError(self.description)

    async def allocate_value(self, value: str, owner: str, *, dry_run: bool = False) -> None:
        """Exactly ``value``. Raises `OutOfRangeError` or `AlreadyAllocatedError`."""
        if self.index(value) is None:
            raise OutOfRangeError(value)
        if dry_run:
            try:
                await self.storage.get(self._key(value))
            except st.KeyNotFoundError:
                return
            raise AlreadyAllocatedError(value)
        try:
            await self.storage.create(self._key(value), json.dumps({"owner": owner}).encode())
        except st.KeyExistsError:
            raise AlreadyAllocatedError(value) from None

    async def release(self, value: str) -> None:
        try:
            await self.storage.delete(self._key(value))
        except st.KeyNotFoundError:
            pass

    def contains(self, value: str) -> bool:
        return self.index(value) is not None


def ip_range(storage: st.Storage, cidr: str) -> RangeAllocator:
    """Host addresses of ``cidr`` (network and broadcast excluded); the first is reserved for the
    ``kubernetes`` Service and handed out only on request."""
    net = ipaddress.ip_network(cidr, strict=False)
    first = int(net.network_address) + 1
    size = max(net.num_addresses - 2, 0)
    cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address

    def value(i: int) -> str:
        return str(cls(first + i))

    def index(text: str) -> int | None:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return None
        i = int(addr) - first
        return i if addr.version == net.version and 0 <= i < size else None

    return RangeAllocator(
        storage, "/registry/ranges/serviceips/", size=size, value=value, index=index,
        description=f"service IP range {cidr}", reserved=1,
    )


def port_range(storage: st.Storage, low: int, high: int) -> RangeAllocator:
    def value(i: int) -> str:
        return str(low + i)

    def index(text: str) -> int | None:
        try:
            port = int(text)
        except ValueError:
            return None
        return port - low if low <= port <= high else None

    return RangeAllocator(
        storage, "/registry/ranges/servicenodeports/", size=high - low + 1, value=value, index=index,
        description=f"node port range {low}-{high}",
    )
