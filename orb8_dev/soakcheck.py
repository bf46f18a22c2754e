"""The soak's verdict: did memory, BPF maps or the session object grow?

Pure functions over the samples tests/e2e/test_soak.py takes, so the check
itself is tested (tests/e2e/test_soakcheck.py) with a leaking series and a
flat, noisy one. ``problems`` returns one line per measure that grew, or an
empty list for a flat run:

- a measure (RSS, memlock, the session object's size) is flat when the last
  third's mean is within ``GROWTH`` (10%) plus a slack for allocator noise of
  the first third's mean;
- a BPF map is flat when no sample of the last third holds more than
  ``GROWTH`` times (plus 64) the first third's peak, or than ``expected``
  where a map legitimately fills up to a known size (the flow map holds at
  most both veths' entries of every flow between two drains).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["GROWTH", "MIB", "RSS_SLACK", "Sample", "grew", "map_grew", "mean", "problems", "thirds"]

MIB = 1 << 20
GROWTH = 1.10
RSS_SLACK = 4 * MIB
MAP_SLACK = 64


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since sampling started
    agent_rss: int
    operator_rss: int
    maps: Mapping[str, int]  # counted map name → entries
    memlock: int  # bytes of every map the agent holds
    status_bytes: int
    active_flows: float
    alert_count: int


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def thirds(samples: Sequence[Sample]) -> tuple[Sequence[Sample], Sequence[Sample]]:
    """The first and the last third of the run (equal sizes)."""
    n = len(samples) // 3
    return samples[:n], samples[len(samples) - n :]


def grew(*, name: str, first: Sequence[float], last: Sequence[float], slack: float) -> str:
    """'' when the mean of ``last`` stayed within GROWTH (plus ``slack``) of ``first``'s."""
    limit = mean(first) * GROWTH + slack
    if mean(last) <= limit:
        return ""
    return f"{name} grew: first third mean {mean(first):.0f}, last {mean(last):.0f} > {limit:.0f}"


def map_grew(*, name: str, first: Sequence[int], last: Sequence[int], expected: int = 0) -> str:
    """'' when no entry count of ``last`` exceeds the first third's peak (or ``expected``)."""
    limit = max([*first, expected]) * GROWTH + MAP_SLACK
    over = [n for n in last if n > limit]
    if not over:
        return ""
    return f"BPF map {name} grew: {over} entries > {limit:.0f}"


def problems(
    *, samples: Sequence[Sample], flows: int, expected_maps: Mapping[str, int] | None = None
) -> list[str]:
    """Why the run is not flat (or the load did not hold); empty for a good run.

    ``flows``: the active flows the load keeps up, every sample must show them.
    ``expected_maps``: map name → entries it may hold whatever the first third
    showed (the flow map: two per flow).
    """
    first, last = thirds(samples)
    if len(first) < 2:
        return [f"too few samples: {len(samples)}"]
    out = []
    short = [s for s in samples if s.active_flows < flows]
    if short:
        out.append(
            f"fewer than {flows} flows active in {len(short)} of {len(samples)} samples "
            f"(first at {short[0].at:.0f} s: {short[0].active_flows:.0f})"
        )
    middle = samples[len(samples) // 2]
    if not (
        mean([s.alert_count for s in last]) > mean([s.alert_count for s in first])
        and samples[-1].alert_count > middle.alert_count
    ):
        out.append("the alert count stopped rising")
    out += [
        grew(name="agent RSS", first=[s.agent_rss for s in first],
             last=[s.agent_rss for s in last], slack=RSS_SLACK),
        grew(name="operator RSS", first=[s.operator_rss for s in first],
             last=[s.operator_rss for s in last], slack=RSS_SLACK),
        grew(name="agent BPF map memlock", first=[s.memlock for s in first],
             last=[s.memlock for s in last], slack=MIB),
        grew(name="session object size", first=[s.status_bytes for s in first],
             last=[s.status_bytes for s in last], slack=4096),
    ]  # fmt: skip
    expected = expected_maps or {}
    for name in sorted(set().union(*(s.maps for s in samples))):
        out.append(
            map_grew(
                name=name,
                first=[s.maps.get(name, 0) for s in first],
                last=[s.maps.get(name, 0) for s in last],
                expected=expected.get(name, 0),
            )
        )
    return [p for p in out if p]
