"""Per-round ratios and their summaries for `make bench`."""

from __future__ import annotations

import math
import statistics
from typing import Any

# two-sided 95% Student t quantiles by degrees of freedom; 1.96 beyond the table
_T95 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
    16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042,
}  # fmt: skip


def t95(*, dof: int) -> float:
    if dof in _T95:
        return _T95[dof]
    below = [d for d in _T95 if d < dof]
    return _T95[max(below)] if dof <= 30 and below else 1.96


def ratios(*, num: list[float], den: list[float]) -> list[float]:
    """Ratio of two variants measured in the same round, round by round."""
    return [a / b for a, b in zip(num, den, strict=True) if b > 0]


def summary(*, values: list[float]) -> dict[str, Any]:
    """Median, min, max, and the mean's 95% t interval (rounds taken as independent)."""
    if not values:
        return {"n": 0}
    out: dict[str, Any] = {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
    }
    if len(values) >= 2:
        half = t95(dof=len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    return out
