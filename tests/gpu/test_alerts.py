"""Idle and memory alerts over a sequence of scrapes, with an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orb8_agent.gpu.alerts import AlertPolicy, AlertState, AlertTracker, evaluate_alerts
from orb8_agent.gpu.model import AlertKind, GpuPodRow, GpuUse, Sharing

T0 = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
GIB = 2**30
POLICY = AlertPolicy(
    idle_utilization_percent=5, idle_for=timedelta(minutes=10), memory_used_percent=90
)


def row(
    util: float | None, used_gib: int = 10, pod: str = "trainer-0", uuid: str = "GPU-a"
) -> GpuPodRow:
    g = GpuUse(
        uuid=uuid,
        index=0,
        model="H100",
        sharing=Sharing.EXCLUSIVE,
        utilization_percent=util,
        memory_used_bytes=used_gib * GIB,
        memory_total_bytes=80 * GIB,
        last_updated=T0,
    )
    return GpuPodRow(namespace="ml", pod=pod, container="main", node="gpu-node-1", gpus=(g,))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_idle_fires_only_after_the_duration_and_keeps_its_start() -> None:
    t = AlertTracker(policy=POLICY)
    assert t.update(rows=[row(2.0)], now=at(0)) == []
    assert t.update(rows=[row(4.0)], now=at(5)) == []
    (a,) = t.update(rows=[row(1.5)], now=at(10))
    assert (a.kind, a.namespace, a.pod, a.container, a.node, a.gpu) == (
        AlertKind.IDLE,
        "ml",
        "trainer-0",
        "main",
        "gpu-node-1",
        "GPU-a",
    )
    assert (a.first_seen, a.last_seen, a.value) == (at(0), at(10), 1.5)
    assert a.message == "GPU utilization 1.5% has been at or below 5% for 10m"
    assert a.to_status()["firstSeen"] == "2026-11-29T05:00:00Z"
    assert a.to_status()["kind"] == "Idle"


def test_a_busy_scrape_resets_the_idle_clock() -> None:
    t = AlertTracker(policy=POLICY)
    t.update(rows=[row(0.0)], now=at(0))
    t.update(rows=[row(50.0)], now=at(6))
    assert t.update(rows=[row(0.0)], now=at(11)) == []
    (a,) = t.update(rows=[row(0.0)], now=at(21))
    assert a.first_seen == at(11)


def test_a_missed_scrape_neither_resets_nor_reports() -> None:
    t = AlertTracker(policy=POLICY)
    t.update(rows=[row(0.0)], now=at(0))
    assert t.update(rows=[], now=at(4)) == []  # exporter down: no reading, no alert
    (a,) = t.update(rows=[row(0.0)], now=at(10))
    assert a.first_seen == at(0)
    # Unknown utilization is not idleness either.
    assert t.update(rows=[row(None)], now=at(13)) == []


def test_streaks_are_forgotten_after_a_long_absence() -> None:
    t = AlertTracker(policy=POLICY)
    t.update(rows=[row(0.0)], now=at(0))
    t.update(rows=[], now=at(30))
    assert t.tracked == 0
    assert t.update(rows=[row(0.0)], now=at(31)) == []


def test_memory_high_fires_immediately() -> None:
    alerts, _ = evaluate_alerts(
        rows=[row(80.0, used_gib=76)], policy=POLICY, state=AlertState.empty(), now=T0
    )
    (a,) = alerts
    assert a.kind is AlertKind.MEMORY_HIGH
    assert a.value == 95.0
    assert a.message == "GPU memory 95.0% used, above 90%"
    alerts, _ = evaluate_alerts(
        rows=[row(80.0, used_gib=72)], policy=POLICY, state=AlertState.empty(), now=T0
    )
    assert alerts == []  # exactly 90% is not above 90%


def test_disabled_alerts_never_fire() -> None:
    alerts, state = evaluate_alerts(
        rows=[row(0.0, used_gib=80)], policy=AlertPolicy(), state=AlertState.empty(), now=T0
    )
    assert alerts == [] and state.streaks == {}


def test_alerts_are_capped_oldest_first() -> None:
    policy = AlertPolicy(memory_used_percent=50, max_alerts=3)
    state = AlertState.empty()
    rows = [row(50.0, used_gib=70, pod=f"p{i}") for i in range(10)]
    _, state = evaluate_alerts(rows=rows[5:], policy=policy, state=state, now=at(0))
    alerts, state = evaluate_alerts(rows=rows, policy=policy, state=state, now=at(1))
    assert [a.pod for a in alerts] == ["p5", "p6", "p7"]
    assert len(state.streaks) == 10


def test_changing_the_policy_restarts_streaks() -> None:
    t = AlertTracker(policy=POLICY)
    t.update(rows=[row(0.0)], now=at(0))
    t.set_policy(policy=AlertPolicy(idle_utilization_percent=10, idle_for=timedelta(minutes=10)))
    assert t.update(rows=[row(0.0)], now=at(10)) == []
    assert len(t.update(rows=[row(0.0)], now=at(20))) == 1
