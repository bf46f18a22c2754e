from __future__ import annotations

from collections.abc import Sequence

import pytest

from orb8_common.models import Condition, NodeEntry, format_time
from orb8_operator.lifecycle import (
    KubeEvent,
    Lifecycle,
    evaluate,
    next_check_in,
    set_condition,
    should_delete,
    ttl_expiry,
)

from .factories import at, node_entry


def step(
    now: float,
    *,
    prev: Lifecycle | None = None,
    nodes: Sequence[NodeEntry] = (),
    matched: int = 2,
    duration: float | None = 600,
    error: str | None = None,
    generation: int = 1,
) -> Lifecycle:
    return evaluate(
        generation=generation,
        spec_error=error,
        duration_seconds=duration,
        now=at(now),
        previous_phase=prev.phase if prev else None,
        start_time=prev.start_time if prev else None,
        completion_time=prev.completion_time if prev else None,
        conditions=prev.conditions if prev else (),
        nodes=nodes,
        matched_pods=matched,
    )


def cond(result: Lifecycle, type: str) -> Condition:
    return next(c for c in result.conditions if c.type == type)


def test_pending_running_completed() -> None:
    pending = step(0, nodes=[node_entry("node-a", state="Pending")])
    assert pending.phase == "Pending"
    assert pending.active
    assert pending.start_time == at(0)
    assert pending.completion_time is None
    assert [c.type for c in pending.conditions] == ["Ready", "Degraded", "Complete"]
    ready = cond(pending, "Ready")
    assert (ready.status, ready.reason) == ("False", "WaitingForAgents")
    assert cond(pending, "Complete").message == "runs until 2026-11-29T05:10:00Z"
    assert pending.events == (KubeEvent("Normal", "Accepted", "2 pods match the selector"),)

    running = step(15, prev=pending, nodes=[node_entry("node-a"), node_entry("node-b")])
    assert running.phase == "Running"
    assert running.start_time == at(0)
    ready = cond(running, "Ready")
    assert (ready.status, ready.reason, ready.message) == (
        "True",
        "AgentsReporting",
        "2/2 nodes reporting",
    )
    assert ready.last_transition_time == at(15)
    assert cond(running, "Degraded").last_transition_time == at(0)  # still False
    assert running.events == (KubeEvent("Normal", "Running", "agents on 2 nodes reporting"),)

    still = step(300, prev=running, nodes=[node_entry("node-a"), node_entry("node-b")])
    assert still.phase == "Running" and still.events == ()
    assert cond(still, "Ready").last_transition_time == at(15)

    done = step(600, prev=still, nodes=[node_entry("node-a")])
    assert done.phase == "Completed"
    assert not done.active
    assert done.completion_time == at(600)
    complete = cond(done, "Complete")
    assert (complete.status, complete.reason, complete.message) == (
        "True",
        "DurationElapsed",
        "duration 10m elapsed",
    )
    assert complete.last_transition_time == at(600)
    assert cond(done, "Ready").status == "False"
    assert done.events == (KubeEvent("Normal", "Completed", "duration 10m elapsed"),)

    # Completed is final: nothing changes and nothing is emitted again.
    after = step(900, prev=done, nodes=[node_entry("node-a")])
    assert (after.phase, after.completion_time, after.events) == ("Completed", at(600), ())
    assert after.conditions == done.conditions


def test_no_matching_pods_and_no_duration() -> None:
    first = step(0, matched=0, duration=None)
    assert first.phase == "Pending"
    assert cond(first, "Ready").reason == "NoMatchingPods"
    assert cond(first, "Complete").message == "runs until deleted"
    later = step(10**6, prev=first, matched=0, duration=None)
    assert later.phase == "Pending" and later.events == ()


def test_duration_bounds_a_session_that_never_ran() -> None:
    first = step(0, matched=0, duration=60)
    assert step(60, prev=first, matched=0, duration=60).phase == "Completed"


def test_degraded_keeps_running_and_lists_nodes() -> None:
    running = step(0, nodes=[node_entry("node-a"), node_entry("node-b")])
    bad_nodes = [
        node_entry("node-a"),
        node_entry("node-b", state="Degraded", message="syscalls probe not loadable"),
        node_entry("node-c", state="Failed"),
    ]
    degraded = step(15, prev=running, nodes=bad_nodes)
    assert degraded.phase == "Running"
    d = cond(degraded, "Degraded")
    assert (d.status, d.reason) == ("True", "NodesDegraded")
    assert d.message == "node-b: Degraded (syscalls probe not loadable); node-c: Failed"
    assert cond(degraded, "Ready").message == "2/3 nodes reporting"
    assert degraded.events == (KubeEvent("Warning", "Degraded", d.message),)
    again = step(30, prev=degraded, nodes=bad_nodes)
    assert again.events == ()
    assert cond(again, "Degraded").last_transition_time == at(15)
    healed = step(45, prev=again, nodes=[node_entry("node-a")])
    assert cond(healed, "Degraded").status == "False"
    assert healed.events == (KubeEvent("Normal", "Recovered", "all nodes report healthy"),)


def test_all_nodes_failed_is_running_but_not_ready() -> None:
    result = step(0, nodes=[node_entry("node-a", state="Failed", message="no BTF")])
    assert result.phase == "Running"
    assert cond(result, "Ready").reason == "NoHealthyNodes"
    assert cond(result, "Degraded").status == "True"


def test_invalid_spec_fails_and_a_fixed_generation_recovers() -> None:
    failed = step(0, error="spec.duration: invalid duration '10'")
    assert failed.phase == "Failed"
    assert not failed.active
    assert failed.completion_time == at(0)
    ready = cond(failed, "Ready")
    assert (ready.status, ready.reason, ready.message) == (
        "False",
        "InvalidSpec",
        "spec.duration: invalid duration '10'",
    )
    assert cond(failed, "Complete").status == "False"
    assert failed.events == (
        KubeEvent("Warning", "InvalidSpec", "spec.duration: invalid duration '10'"),
    )
    assert step(5, prev=failed, error="still bad").events == ()
    fixed = step(10, prev=failed, generation=2)
    assert fixed.phase == "Pending"
    assert fixed.completion_time is None
    assert fixed.start_time == at(10)
    assert all(c.observed_generation == 2 for c in fixed.conditions)
    assert fixed.events[0].reason == "Accepted"


def test_set_condition_keeps_transition_time_and_other_types() -> None:
    foreign = Condition(type="Custom", status="True", reason="X", last_transition_time=at(0))
    first = set_condition(
        conditions=[foreign],
        type="Ready",
        status="False",
        reason="A",
        message="",
        now=at(1),
        generation=1,
    )
    assert [c.type for c in first] == ["Ready", "Custom"]
    same = set_condition(
        conditions=first,
        type="Ready",
        status="False",
        reason="B",
        message="m",
        now=at(2),
        generation=2,
    )
    ready = same[0]
    assert (ready.reason, ready.message, ready.last_transition_time, ready.observed_generation) == (
        "B",
        "m",
        at(1),
        2,
    )
    flipped = set_condition(
        conditions=same,
        type="Ready",
        status="True",
        reason="C",
        message="",
        now=at(3),
        generation=2,
    )
    assert flipped[0].last_transition_time == at(3)


def test_ttl() -> None:
    assert ttl_expiry(completion_time=None, ttl_seconds=60) is None
    assert ttl_expiry(completion_time=at(100), ttl_seconds=None) is None
    assert ttl_expiry(completion_time=at(100), ttl_seconds=60) == at(160)
    assert not should_delete(now=at(159), completion_time=at(100), ttl_seconds=60)
    assert should_delete(now=at(160), completion_time=at(100), ttl_seconds=60)
    assert should_delete(now=at(100), completion_time=at(100), ttl_seconds=0)
    assert not should_delete(now=at(10**6), completion_time=at(100), ttl_seconds=None)


@pytest.mark.parametrize(
    ("phase", "now", "duration", "completion", "ttl", "expected"),
    [
        ("Running", 0, None, None, None, 15.0),
        ("Running", 590, 600, None, None, 10.0),
        ("Pending", 700, 600, None, None, 0.0),
        ("Completed", 610, 600, 600, 60, 50.0),
        ("Completed", 610, 600, 600, None, None),
        ("Failed", 5, None, 0, 0, 0.0),
    ],
)
def test_next_check_in(
    phase: str,
    now: float,
    duration: float | None,
    completion: float | None,
    ttl: int | None,
    expected: float | None,
) -> None:
    assert (
        next_check_in(
            now=at(now),
            phase=phase,
            start_time=at(0),
            duration_seconds=duration,
            completion_time=None if completion is None else at(completion),
            ttl_seconds=ttl,
            interval=15.0,
        )
        == expected
    )


def test_a_node_that_stops_reporting_degrades_the_session() -> None:
    # node_entry() reports at t=15; with stale_after=60 the report is stale from t=75.
    nodes = [node_entry("node-a"), node_entry("node-b", state="Degraded", message="x")]

    def at_time(now: float) -> Lifecycle:
        return evaluate(
            generation=1,
            spec_error=None,
            duration_seconds=None,
            now=at(now),
            previous_phase="Running",
            start_time=at(0),
            completion_time=None,
            conditions=(),
            nodes=nodes,
            matched_pods=2,
            stale_after=60,
        )

    fresh = at_time(75)
    assert cond(fresh, "Degraded").message == "node-b: Degraded (x)"
    assert cond(fresh, "Ready").message == "2/2 nodes reporting"
    stale = at_time(135)
    # A stale report's own state no longer says anything.
    message = cond(stale, "Degraded").message
    assert message == f"node-a: no report since {format_time(at(15))}; " + (
        f"node-b: no report since {format_time(at(15))}"
    )
    # Unchanged while the nodes stay silent: nothing to write on the next look.
    assert cond(at_time(195), "Degraded").message == message
    ready = cond(stale, "Ready")
    assert (ready.status, ready.reason) == ("False", "NoHealthyNodes")
