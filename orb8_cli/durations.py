"""Durations typed on the command line: Go-style ("10s", "1m30s"), a bare number of
seconds, or days ("1d"). Errors are usage errors (exit code 2)."""

from __future__ import annotations

import re

from orb8_common.durations import InvalidDurationError as SpecDurationError
from orb8_common.durations import parse_duration as parse_go_duration
from orb8_common.errors import UsageError

_BARE_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DAYS = re.compile(r"(\d+(?:\.\d+)?)d(.*)")
_DANGLING_DOT = re.compile(r"\.(?!\d)|(?<!\d)\.")


class InvalidDurationError(UsageError, ValueError):
    """A command-line duration that does not parse."""


def parse_cli_duration(text: str, *, allow_zero: bool = True) -> float:
    """Seconds in ``text``; negative values never parse, zero only when ``allow_zero``."""
    stripped = text.strip().lower()
    if stripped.startswith("-") and len(stripped) > 1:
        raise InvalidDurationError(f"duration {text!r} must not be negative")
    if not stripped or stripped.startswith(("-", "+")) or _DANGLING_DOT.search(stripped):
        raise InvalidDurationError(f"invalid duration {text!r}; use forms like 10s, 1m30s, 500ms")
    if _BARE_NUMBER.fullmatch(stripped):
        seconds = float(stripped)
    else:
        days = _DAYS.fullmatch(stripped)
        extra = float(days[1]) * 86400 if days else 0.0
        rest = days[2] if days else stripped
        try:
            seconds = extra + (parse_go_duration(rest) if rest else 0.0)
        except SpecDurationError:
            raise InvalidDurationError(
                f"invalid duration {text!r}; use forms like 10s, 1m30s, 500ms"
            ) from None
    if seconds == 0 and not allow_zero:
        raise InvalidDurationError(f"duration {text!r} must be greater than zero")
    return seconds
