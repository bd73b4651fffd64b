"""Kubernetes byte quantities: ``"64Gi"``, ``"1Ti"``, ``"500M"``, ``1073741824``.

Why not a general Kubernetes quantity parser: a pool's capacity and region size are byte counts
that end up as file sizes and mmap offsets, so only whole, positive byte counts make sense.
Milli-units (``"500m"``), exponents (``"1e9"``) and negative values are valid Kubernetes
quantities but meaningless here; they are refused with a message naming the field instead of
being silently rounded. Cost: pure string work, no allocation beyond the result.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

BINARY_SUFFIXES: dict[str, int] = {
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "Ei": 1 << 60,
}
DECIMAL_SUFFIXES: dict[str, int] = {
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_SUFFIXES = {**BINARY_SUFFIXES, **DECIMAL_SUFFIXES, "": 1}

#: The pattern the CRD schema enforces for string quantities (a subset of Kubernetes' own:
#: no sign, no milli-units, no exponents). Kept here so the schema and the parser cannot drift.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)


class QuantityError(ValueError):
    """A value that is not a whole, positive number of bytes; the message names the field."""


def parse_bytes(value: object, field: str = "") -> int:
    """Return ``value`` as a whole number of bytes, or raise :class:`QuantityError` naming ``field``.

    Accepts non-negative integers and strings such as ``"64Gi"``, ``"1.5Gi"`` (must resolve to a whole
    byte count), ``"500M"``, ``"1073741824"``. Zero is accepted here; callers that need a positive
    size check that themselves (the models do). With ``field=""`` messages carry no prefix (pydantic
    adds the location itself).
    """
    prefix = f"{field}: " if field else ""
    if isinstance(value, bool):  # bool is an int subclass: True is not "1 byte"
        raise QuantityError(f"{prefix}expected a quantity such as '64Gi' or an integer, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise QuantityError(f"{prefix}must not be negative, got {value}")
        return value
    if isinstance(value, float):
        if value.is_integer() and value >= 0:
            return int(value)
        raise QuantityError(f"{prefix}must be a whole, non-negative number of bytes, got {value!r}")
    if not isinstance(value, str):
        raise QuantityError(
            f"{prefix}expected a quantity such as '64Gi' or an integer, got {type(value).__name__}"
        )
    text = value.strip()
    match = _QUANTITY_RE.match(text)
    if match is None:
        raise QuantityError(
            f"{prefix}{value!r} is not a byte quantity (use an integer or a number with one of the "
            f"suffixes {', '.join(s for s in _SUFFIXES if s)}, e.g. '64Gi')"
        )
    suffix = match.group(2) or ""
    number_text = text[: len(text) - len(suffix)]
    try:
        number = Decimal(number_text)
    except InvalidOperation as exc:  # unreachable given the regex; kept for safety
        raise QuantityError(f"{prefix}{value!r} is not a number") from exc
    total = number * _SUFFIXES[suffix]
    if total != total.to_integral_value():
        raise QuantityError(f"{prefix}{value!r} is not a whole number of bytes ({total} bytes)")
    return int(total)


def format_bytes(size: int) -> str:
    """Render a byte count as the shortest exact Kubernetes quantity: ``68719476736`` → ``"64Gi"``.

    Exact (``"1536Mi"`` rather than a rounded ``"1.5Gi"``) so that what ``kubectl`` prints can be
    pasted back into a spec. Zero and sizes that are not a multiple of 1Ki stay plain integers.
    """
    if size < 0:
        raise ValueError(f"size must not be negative, got {size}")
    if size == 0:
        return "0"
    for suffix, unit in reversed(BINARY_SUFFIXES.items()):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)
