"""Go-style durations ("90s", "1h30m", "250ms", "1.5h") as used in orb8 specs.

The grammar follows Go's ``time.ParseDuration``: an optional sign, then one or
more ``<decimal><unit>`` parts with units ns, us, µs, μs, ms, s, m, h. A bare
"0" is allowed. Parsing works in integer nanoseconds so that
``parse_duration(format_duration(x))`` round-trips exactly at ns resolution.
"""

from __future__ import annotations

import re

from orb8_common.errors import InvalidSpecError

__all__ = [
    "MAX_SPEC_DURATION",
    "MAX_SPEC_DURATION_SECONDS",
    "InvalidDurationError",
    "format_duration",
    "parse_duration",
    "parse_duration_ns",
]

NS_PER_SECOND = 1_000_000_000
# Go's Duration is an int64 of nanoseconds; we refuse what Go would refuse.
MAX_NS = 2**63 - 1
# The longest duration a spec may hold (admission and the models agree): a year.
MAX_SPEC_DURATION = "8760h"
MAX_SPEC_DURATION_SECONDS = 8760 * 3600

_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": NS_PER_SECOND,
    "m": 60 * NS_PER_SECOND,
    "h": 3600 * NS_PER_SECOND,
}

_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


class InvalidDurationError(InvalidSpecError, ValueError):
    """A duration string does not follow Go's duration syntax.

    It is also a ``ValueError`` so that pydantic validators report it with the
    field's location.
    """


def parse_duration_ns(text: str) -> int:
    """Parse a Go-style duration into integer nanoseconds."""
    if not isinstance(text, str):
        raise InvalidDurationError(f"duration must be a string, got {type(text).__name__}")
    s = text
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise InvalidDurationError(f"invalid duration {text!r}: empty")
    total = 0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise InvalidDurationError(
                f"invalid duration {text!r}: expected <number><unit> with unit one of "
                "ns, us, ms, s, m, h"
            )
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise InvalidDurationError(f"invalid duration {text!r}: missing number before {unit}")
        scale = _UNITS[unit]
        value = int(whole or "0") * scale
        if frac:
            value += int(frac) * scale // (10 ** len(frac))
        total += value
        if total > MAX_NS:
            raise InvalidDurationError(f"invalid duration {text!r}: too large")
        pos = m.end()
    return sign * total


def parse_duration(text: str) -> float:
    """Parse a Go-style duration into seconds."""
    return parse_duration_ns(text) / NS_PER_SECOND


def _trim(whole: int, frac: int, digits: int) -> str:
    """Render ``whole.frac`` with ``digits`` fractional digits, trailing zeros trimmed."""
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


def format_duration(seconds: float) -> str:
    """Render seconds as a compact Go-style duration: 5400 -> "1h30m", 0.25 -> "250ms"."""
    ns = round(seconds * NS_PER_SECOND)
    if ns == 0:
        return "0s"
    if ns < 0:
        return "-" + format_duration(-seconds)
    if ns < NS_PER_SECOND:
        for unit, scale, digits in (("ms", 1_000_000, 6), ("us", 1_000, 3)):
            if ns >= scale:
                return _trim(ns // scale, ns % scale, digits) + unit
        return f"{ns}ns"
    hours, rest = divmod(ns, 3600 * NS_PER_SECOND)
    minutes, rest = divmod(rest, 60 * NS_PER_SECOND)
    secs, frac = divmod(rest, NS_PER_SECOND)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if secs or frac:
        out += _trim(secs, frac, 9) + "s"
    return out
