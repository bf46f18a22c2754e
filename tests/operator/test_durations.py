from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orb8_common.durations import (
    InvalidDurationError,
    format_duration,
    parse_duration,
    parse_duration_ns,
)
from orb8_common.errors import InvalidSpecError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("2h45m30.5s", 9930.5),
        ("250ms", 0.25),
        ("1500us", 0.0015),
        ("7\u00b5s", 7e-6),
        ("7\u03bcs", 7e-6),
        ("100ns", 1e-7),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("-1m", -60.0),
        ("+2s", 2.0),
        ("1m1m", 120.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "10", "1d", "h", ".s", "1h 30m", " 1s", "1.2.3s", "+", "-", "1S", "ms", "3e2s", "1hh"],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidDurationError) as info:
        parse_duration(text)
    assert repr(text) in str(info.value)
    # Both an Orb8 spec error and a ValueError (so pydantic reports the field).
    assert isinstance(info.value, InvalidSpecError)
    assert isinstance(info.value, ValueError)


def test_parse_duration_rejects_overflow() -> None:
    with pytest.raises(InvalidDurationError, match="too large"):
        parse_duration("2562048h")  # > 2^63-1 ns, as in Go
    assert parse_duration_ns("2562047h") == 2562047 * 3600 * 10**9


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (5400, "1h30m"),
        (3600, "1h"),
        (90, "1m30s"),
        (3661, "1h1m1s"),
        (3605, "1h5s"),
        (1.5, "1.5s"),
        (0.25, "250ms"),
        (0.0015, "1.5ms"),
        (2e-6, "2us"),
        (5e-9, "5ns"),
        (-60, "-1m"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_parse_round_trip_in_nanoseconds(ns: int) -> None:
    text = format_duration(ns / 1e9)
    assert parse_duration_ns(text) == round(ns / 1e9 * 1e9)
