"""Go-style durations ("90s", "1h30m", "500ms"), as Kubernetes users write them.

The CLI also accepts a bare number of seconds and a ``d`` (day) unit.
"""

from __future__ import annotations

import re

from orb8_common.errors import UsageError

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_BARE_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class InvalidDurationError(UsageError, ValueError):
    """A duration string that does not parse (both a UsageError and a ValueError)."""


def parse_duration(text: str, *, allow_zero: bool = True) -> float:
    """Seconds in ``text``: one or more ``<number><unit>`` parts, or a bare number of seconds.

    Negative values never parse; zero parses only when ``allow_zero`` is true.
    """
    stripped = text.strip().lower()
    if not stripped:
        raise InvalidDurationError("empty duration")
    if _BARE_NUMBER.fullmatch(stripped):
        seconds = float(stripped)
    else:
        seconds = 0.0
        position = 0
        for match in _PART.finditer(stripped):
            if match.start() != position:
                break
            seconds += float(match[1]) * _UNIT_SECONDS[match[2]]
            position = match.end()
        if position != len(stripped):
            raise InvalidDurationError(
                f"invalid duration {text!r}; use forms like 10s, 1m30s, 500ms"
            )
    if seconds == 0 and not allow_zero:
        raise InvalidDurationError(f"duration {text!r} must be greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest Go-style spelling of a duration ("1h30m", "250ms")."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = (
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    )
    return "".join(parts) or "0s"
