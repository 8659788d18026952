"""Key-range helpers shared by the engines.

A prefix scan is a half-open key range ``[prefix, prefix_end)``. Keys compare by code point in
Python and by UTF-8 bytes in SQLite and etcd; the two orders agree, so one helper serves every engine.
"""

from __future__ import annotations

__all__ = ["prefix_end"]

_MAX_CHAR = 0x10FFFF


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``; None when there is
    none (empty prefix, or a prefix made only of the largest code point)."""
    chars = prefix
    while chars:
        last = ord(chars[-1])
        if last < _MAX_CHAR:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # skip surrogates, which cannot be encoded as UTF-8
                nxt = 0xE000
            return chars[:-1] + chr(nxt)
        chars = chars[:-1]
    return None
