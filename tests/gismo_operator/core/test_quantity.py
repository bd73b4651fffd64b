"""Byte quantities: what parses, what is refused, and that messages name the field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gismo_operator.core.quantity import QuantityError, format_bytes, parse_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64Gi", 64 << 30),
        ("1Ti", 1 << 40),
        ("1Ki", 1024),
        ("512Mi", 512 << 20),
        ("1.5Gi", 3 << 29),
        ("500M", 500_000_000),
        ("1k", 1000),
        ("1073741824", 1 << 30),
        (" 2Gi ", 2 << 30),
        (4096, 4096),
        (0, 0),
        (2.0, 2),
    ],
)
def test_parses(text: object, expected: int) -> None:
    assert parse_bytes(text, "spec.capacity") == expected


@pytest.mark.parametrize(
    "bad",
    ["64Gx", "64 Gi", "-1Gi", "1e9", "500m", "Gi", "", "0.1", "1.0000001Ki", "ten", -5, 1.5, True, None, [1]],
)
def test_refuses_with_field_name(bad: object) -> None:
    with pytest.raises(QuantityError) as info:
        parse_bytes(bad, "spec.capacity")
    assert str(info.value).startswith("spec.capacity: ")


def test_message_says_what_is_accepted() -> None:
    with pytest.raises(QuantityError, match=r"'64Gx' is not a byte quantity.*e\.g\. '64Gi'"):
        parse_bytes("64Gx", "spec.capacity")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0"),
        (1, "1"),
        (1023, "1023"),
        (1024, "1Ki"),
        (64 << 30, "64Gi"),
        (3 << 29, "1536Mi"),
        (1 << 60, "1Ei"),
    ],
)
def test_format(size: int, text: str) -> None:
    assert format_bytes(size) == text


def test_format_negative_is_an_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_bytes(-1)


@given(st.integers(min_value=0, max_value=1 << 62))
def test_format_round_trips(size: int) -> None:
    assert parse_bytes(format_bytes(size)) == size
