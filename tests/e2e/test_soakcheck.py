"""The soak's flatness check can fail: it catches leaks and passes a flat, noisy run.

The series are shaped like a real 600 s soak (61 samples every 10 s; the
figures of docs/reliability.md's soak row: agent ~138 MiB, operator ~111 MiB,
flows4 up to 20,002 entries) with seeded noise, so each case is the same
every run.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from orb8_dev import soakcheck
from orb8_dev.soakcheck import MIB, Sample

FLOWS = 10_000
N = 61
DRAINED = {"flows4": 2 * FLOWS, "flows6": 2 * FLOWS}


def _series(
    *, seed: int = 7, agent_rss: Callable[[int], float] = lambda i: 0.0,
    operator_rss: Callable[[int], float] = lambda i: 0.0,
    counts: Callable[[int], float] = lambda i: 0.0, status: Callable[[int], float] = lambda i: 0.0,
    memlock: Callable[[int], float] = lambda i: 0.0,
) -> list[Sample]:  # fmt: skip
    """A flat, noisy run, plus the given growth (a function of the sample index)."""
    rng = random.Random(seed)
    out = []
    for i in range(N):
        out.append(
            Sample(
                at=10.0 * i,
                # allocator noise: a few MiB either way, sample to sample
                agent_rss=int(138 * MIB + rng.uniform(-3, 3) * MIB + agent_rss(i)),
                operator_rss=int(111 * MIB + rng.uniform(-2, 2) * MIB + operator_rss(i)),
                maps={
                    # drained every report: anywhere between a few and both veths' entries
                    "flows4": rng.randint(FLOWS, 2 * FLOWS + 2),
                    "syscall_counts": rng.randint(20, 34) + int(counts(i)),
                    "watched_cgroups": 2,
                },
                memlock=int(59.6 * MIB + memlock(i)),
                status_bytes=int(40_000 + rng.randint(-2000, 2000) + status(i)),
                active_flows=FLOWS + rng.randint(0, 4),
                alert_count=100 + 50 * i,
            )
        )
    return out


def _problems(samples: list[Sample]) -> list[str]:
    return soakcheck.problems(samples=samples, flows=FLOWS, expected_maps=DRAINED)


def test_a_flat_noisy_run_passes() -> None:
    for seed in range(20):
        assert _problems(_series(seed=seed)) == [], seed


def test_a_flat_run_whose_first_third_never_filled_the_flow_map_passes() -> None:
    # The flow map may fill to two entries per flow at any time, not only after the first third.
    samples = _series()
    first, _ = soakcheck.thirds(samples)
    low = [
        Sample(**{**s.__dict__, "maps": {**s.maps, "flows4": FLOWS}}) if s in first else s
        for s in samples
    ]
    assert _problems(low) == []


def test_an_agent_leaking_half_a_mib_a_sample_fails_naming_it() -> None:
    # 0.5 MiB per 10 s: 30 MiB over the run, hidden sample to sample by ±3 MiB of noise.
    problems = _problems(_series(agent_rss=lambda i: 0.5 * MIB * i))
    assert len(problems) == 1 and problems[0].startswith("agent RSS grew"), problems


def test_an_operator_leak_fails_naming_it() -> None:
    problems = _problems(_series(operator_rss=lambda i: 0.4 * MIB * i))
    assert len(problems) == 1 and problems[0].startswith("operator RSS grew"), problems


def test_a_growing_bpf_map_fails_naming_it() -> None:
    # A map that should hold one entry per (cgroup, syscall) keeps 5 stale keys a sample.
    problems = _problems(_series(counts=lambda i: 5 * i))
    assert len(problems) == 1 and problems[0].startswith("BPF map syscall_counts grew"), problems


def test_a_flow_map_past_two_entries_per_flow_fails() -> None:
    samples = _series()
    leaking = [
        Sample(**{**s.__dict__, "maps": {**s.maps, "flows4": 2 * FLOWS + 200 * i}})
        for i, s in enumerate(samples)
    ]
    problems = _problems(leaking)
    assert len(problems) == 1 and problems[0].startswith("BPF map flows4 grew"), problems


def test_a_growing_session_object_and_memlock_fail() -> None:
    problems = _problems(_series(status=lambda i: 200 * i, memlock=lambda i: 0.2 * MIB * i))
    assert [p.split(" grew")[0] for p in problems] == [
        "agent BPF map memlock",
        "session object size",
    ]


def test_a_load_that_stopped_fails_too() -> None:
    samples = _series()
    stalled = [
        Sample(**{**s.__dict__, "active_flows": 9_000.0 if i > 40 else s.active_flows,
                  "alert_count": min(s.alert_count, 1_000)})
        for i, s in enumerate(samples)
    ]  # fmt: skip
    problems = _problems(stalled)
    assert [p.split(" ")[0] for p in problems] == ["fewer", "the"], problems
    assert soakcheck.problems(samples=samples[:5], flows=FLOWS) == ["too few samples: 5"]
