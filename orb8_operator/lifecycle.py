"""Phase, conditions, events and TTL of a session, as pure functions of time.

Phases: Pending (accepted, no node reported yet) → Running (some node
reported) → Completed (``duration`` elapsed since ``startTime``). An invalid
spec gives Failed. Completed is final; Failed is left as soon as a new
generation of the spec is valid. ``startTime`` is when the operator first
accepted the session, so ``duration`` also bounds a session that never
matched a pod. Degraded=True when any node reports Degraded or Failed; the
phase stays Running.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from orb8_common.durations import format_duration
from orb8_common.models import (
    Condition,
    ConditionStatus,
    GpuNodeEntry,
    NodeEntry,
    SessionPhase,
    format_time,
)

__all__ = [
    "ACTIVE_PHASES",
    "KubeEvent",
    "Lifecycle",
    "Phase",
    "evaluate",
    "next_check_in",
    "set_condition",
    "should_delete",
    "ttl_expiry",
]

Phase = SessionPhase  # status.phase, defined with the contract
ACTIVE_PHASES: frozenset[str] = frozenset({"Pending", "Running"})
_ORDER = ("Ready", "Degraded", "Complete")


@dataclass(frozen=True)
class KubeEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Lifecycle:
    phase: Phase
    start_time: datetime | None
    completion_time: datetime | None
    conditions: tuple[Condition, ...]
    events: tuple[KubeEvent, ...]

    @property
    def active(self) -> bool:
        """Whether agents should serve the session (it gets NodeAgentConfig entries)."""
        return self.phase in ACTIVE_PHASES


def set_condition(
    *,
    conditions: Sequence[Condition],
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> tuple[Condition, ...]:
    """Upsert one condition; lastTransitionTime changes only when status does."""
    old = next((c for c in conditions if c.type == type), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    rest = [c for c in conditions if c.type != type]
    merged = [*rest, new]
    rank = {t: i for i, t in enumerate(_ORDER)}
    return tuple(sorted(merged, key=lambda c: (rank.get(c.type, len(_ORDER)), c.type)))


def _status_of(conditions: Sequence[Condition], type: str) -> str | None:
    return next((c.status for c in conditions if c.type == type), None)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def evaluate(
    *,
    generation: int,
    spec_error: str | None,
    duration_seconds: float | None,
    now: datetime,
    spec_error_reason: str = "InvalidSpec",
    previous_phase: str | None,
    start_time: datetime | None,
    completion_time: datetime | None,
    conditions: Sequence[Condition],
    nodes: Sequence[NodeEntry | GpuNodeEntry],
    matched_pods: int,
    stale_after: float | None = None,
) -> Lifecycle:
    """The next phase, times, conditions, and the Events for what changed.

    A node whose Running/Degraded report is older than ``stale_after`` seconds
    counts as degraded ("no report for …"): its agent is probably gone.
    """
    events: list[KubeEvent] = []
    conds: tuple[Condition, ...] = tuple(conditions)

    def put(type: str, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(
            conditions=conds,
            type=type,
            status=status,
            reason=reason,
            message=message,
            now=now,
            generation=generation,
        )

    if previous_phase == "Completed":
        return Lifecycle(
            phase="Completed",
            start_time=start_time,
            completion_time=completion_time or now,
            conditions=conds,
            events=(),
        )

    if spec_error is not None:
        reason = spec_error_reason
        put("Ready", "False", reason, spec_error)
        put("Degraded", "False", reason, "")
        put("Complete", "False", reason, spec_error)
        if previous_phase != "Failed":
            events.append(KubeEvent("Warning", reason, spec_error))
        return Lifecycle(
            phase="Failed",
            start_time=start_time,
            completion_time=completion_time or now,
            conditions=conds,
            events=tuple(events),
        )

    start = start_time or now
    if previous_phase in (None, "Failed"):
        events.append(
            KubeEvent("Normal", "Accepted", f"{_plural(matched_pods, 'pod')} match the selector")
        )

    deadline = None if duration_seconds is None else start + timedelta(seconds=duration_seconds)
    if deadline is not None and now >= deadline:
        text = f"duration {format_duration(duration_seconds or 0)} elapsed"
        put("Ready", "False", "Completed", text)
        put("Degraded", "False", "Completed", "")
        put("Complete", "True", "DurationElapsed", text)
        events.append(KubeEvent("Normal", "Completed", text))
        return Lifecycle(
            phase="Completed",
            start_time=start,
            completion_time=now,
            conditions=conds,
            events=tuple(events),
        )

    reported = [n for n in nodes if n.state != "Pending"]
    problems: list[str] = []
    healthy = []
    for n in nodes:
        age = None if n.last_report_time is None else (now - n.last_report_time).total_seconds()
        if n.state in ("Running", "Degraded"):
            if stale_after is not None and age is not None and age > stale_after:
                # The time of the last report, not its age: the message stays the same while
                # the node is silent, so a quiet cluster costs one status write, not one per look.
                since = format_time(n.last_report_time) if n.last_report_time else "?"
                problems.append(f"{n.node}: no report since {since}")
                continue
            healthy.append(n)
        if n.state in ("Degraded", "Failed"):
            problems.append(f"{n.node}: {n.state}" + (f" ({n.message})" if n.message else ""))
    # Running is kept once reached, even if every target pod goes away.
    phase: Phase = "Running" if reported or previous_phase == "Running" else "Pending"

    if phase == "Pending":
        if matched_pods == 0:
            put("Ready", "False", "NoMatchingPods", "no running pod matches the selector")
        else:
            put(
                "Ready",
                "False",
                "WaitingForAgents",
                f"waiting for agents to report on {_plural(len(nodes), 'node')}"
                if nodes
                else f"waiting for agents serving {_plural(matched_pods, 'pod')}",
            )
    elif healthy:
        put("Ready", "True", "AgentsReporting", f"{len(healthy)}/{len(nodes)} nodes reporting")
    else:
        put("Ready", "False", "NoHealthyNodes", "no node is collecting for this session")

    was_degraded = _status_of(conditions, "Degraded") == "True"
    if problems:
        text = "; ".join(problems)
        put("Degraded", "True", "NodesDegraded", text)
        if not was_degraded:
            events.append(KubeEvent("Warning", "Degraded", text))
    else:
        put("Degraded", "False", "AllNodesHealthy", "")
        if was_degraded:
            events.append(KubeEvent("Normal", "Recovered", "all nodes report healthy"))

    if deadline is not None:
        put("Complete", "False", "InProgress", f"runs until {format_time(deadline)}")
    else:
        put("Complete", "False", "InProgress", "runs until deleted")

    if phase == "Running" and previous_phase != "Running":
        events.append(
            KubeEvent("Normal", "Running", f"agents on {_plural(len(reported), 'node')} reporting")
        )
    return Lifecycle(
        phase=phase, start_time=start, completion_time=None, conditions=conds, events=tuple(events)
    )


def ttl_expiry(*, completion_time: datetime | None, ttl_seconds: int | None) -> datetime | None:
    """When a finished session should be deleted; None when it never should."""
    if completion_time is None or ttl_seconds is None:
        return None
    return completion_time + timedelta(seconds=ttl_seconds)


def should_delete(
    *, now: datetime, completion_time: datetime | None, ttl_seconds: int | None
) -> bool:
    expiry = ttl_expiry(completion_time=completion_time, ttl_seconds=ttl_seconds)
    return expiry is not None and now >= expiry


def next_check_in(
    *,
    now: datetime,
    phase: str,
    start_time: datetime | None,
    duration_seconds: float | None,
    completion_time: datetime | None,
    ttl_seconds: int | None,
    interval: float,
    stale_at: datetime | None = None,
) -> float | None:
    """Seconds until the session needs looking at again; None when never.

    Active sessions are looked at every ``interval``, at their deadline or at
    ``stale_at`` (when a node's report will have turned stale), whichever is
    sooner; finished ones only at their TTL expiry.
    """
    if phase in ACTIVE_PHASES:
        wait = interval
        if stale_at is not None:
            wait = min(wait, (stale_at - now).total_seconds())
        if start_time is not None and duration_seconds is not None:
            deadline = start_time + timedelta(seconds=duration_seconds)
            wait = min(wait, (deadline - now).total_seconds())
        return max(wait, 0.0)
    expiry = ttl_expiry(completion_time=completion_time, ttl_seconds=ttl_seconds)
    if expiry is None:
        return None
    return max((expiry - now).total_seconds(), 0.0)
