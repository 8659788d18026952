"""Kubernetes resource quantities ("100m", "1Gi", "1e3", "0.5", "2k") as exact numbers.

Placement decisions must not drift with float rounding: "0.1" CPU three times is exactly 300m. So a
quantity is parsed into a ``Fraction`` and converted the way Kubernetes converts: whole units round
*up* (``Value()``: 1.5 bytes is 2) and milli-units round up (``MilliValue()``: 0.0001 CPU is 1m).

Grammar (from the Quantity documentation): an optional sign, digits with an optional fraction, then
one suffix: a binary SI suffix (Ki Mi Gi Ti Pi Ei), a decimal SI suffix (n u m "" k M G T P E) or a
decimal exponent (e/E and a signed integer).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["parse_quantity", "quantity_value", "quantity_milli", "format_bytes"]

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
}
_RE = re.compile(r"^([+-]?)(\d+(?:\.\d*)?|\.\d+)(.*)$")
_EXP = re.compile(r"^[eE]([+-]?\d+)$")


def parse_quantity(value: str | int | float) -> Fraction:
    """The exact value of a quantity; ``ValueError`` for anything Kubernetes would refuse."""
    if isinstance(value, bool):
        raise ValueError(f"quantities must match the regular expression, got {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"invalid quantity {value!r}")
        return Fraction(str(value))
    text = str(value).strip()
    m = _RE.match(text)
    if not m:
        raise ValueError(f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {value!r}")
    sign, number, suffix = m.groups()
    base = Fraction(number)
    if suffix in _BINARY:
        mult: Fraction = Fraction(_BINARY[suffix])
    elif suffix in _DECIMAL:
        mult = _DECIMAL[suffix]
    else:
        e = _EXP.match(suffix)
        if not e:
            raise ValueError(f"unable to parse quantity's suffix in {value!r}")
        mult = Fraction(10) ** int(e.group(1))
    out = base * mult
    return -out if sign == "-" else out


def quantity_value(value: str | int | float) -> int:
    """Whole units, rounded up (bytes of memory, pods, ...)."""
    return math.ceil(parse_quantity(value))


def quantity_milli(value: str | int | float) -> int:
    """Milli-units, rounded up (CPU in millicores)."""
    return math.ceil(parse_quantity(value) * 1000)


def format_bytes(n: int) -> str:
    """A short human form for messages: 64Mi, 1536Ki, 100."""
    for suffix, mult in (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n and n % mult == 0:
            return f"{n // mult}{suffix}"
    return str(n)
