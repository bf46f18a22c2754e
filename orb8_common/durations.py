"""Parse human durations such as ``10s``, ``1m30s``, ``500ms`` or ``2h``."""

from __future__ import annotations

import re

from orb8_common.errors import UsageError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


class InvalidDurationError(UsageError, ValueError):
    """A duration string that does not parse (both a UsageError and a ValueError)."""


def parse_duration(text: str, *, allow_zero: bool = True) -> float:
    """Seconds in ``text``: one or more ``<number><unit>`` parts, units ms/s/m/h/d.

    A bare number means seconds. Negative values never parse; zero parses
    only when ``allow_zero`` is true.
    """
    s = text.strip().lower()
    if not s:
        raise InvalidDurationError("empty duration")
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        seconds = float(s)
    else:
        pos = 0
        seconds = 0.0
        for m in _PART.finditer(s):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(s):
            raise InvalidDurationError(
                f"invalid duration {text!r}; use forms like 10s, 1m30s, 500ms"
            )
    if seconds == 0 and not allow_zero:
        raise InvalidDurationError(f"duration {text!r} must be greater than zero")
    return seconds
