"""GPU alerts: idle for too long, memory too full.

``evaluate_alerts`` is pure: rows, the policy, the previous state and the
clock go in; alerts and the next state come out. ``AlertTracker`` just keeps
that state between scrapes. Both the state and the alert list are bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from orb8_agent.gpu.model import AlertKind, GpuAlert, GpuPodRow

MAX_TRACKED = 4096
DEFAULT_MAX_ALERTS = 100
# A GPU missing from the rows (a failed scrape, a restarted pod) keeps its
# idle streak this long before it is forgotten.
DEFAULT_FORGET_AFTER = timedelta(minutes=5)

AlertKey = tuple[str, str, str, str, AlertKind]  # namespace, pod, container, gpu, kind


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    idle_utilization_percent: float | None = None  # alert at or below this ...
    idle_for: timedelta = timedelta(minutes=10)  # ... for this long
    memory_used_percent: float | None = None  # alert above this
    max_alerts: int = DEFAULT_MAX_ALERTS


@dataclass(frozen=True, slots=True)
class _Streak:
    first_seen: datetime
    last_seen: datetime
    value: float


@dataclass(frozen=True, slots=True)
class AlertState:
    streaks: dict[AlertKey, _Streak]

    @staticmethod
    def empty() -> AlertState:
        return AlertState(streaks={})


def _fmt_duration(d: timedelta) -> str:
    s = int(d.total_seconds())
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec or not s else "")
    return out


def evaluate_alerts(
    *,
    rows: Sequence[GpuPodRow],
    policy: AlertPolicy,
    state: AlertState,
    now: datetime,
    forget_after: timedelta = DEFAULT_FORGET_AFTER,
) -> tuple[list[GpuAlert], AlertState]:
    streaks: dict[AlertKey, _Streak] = {}
    seen: set[AlertKey] = set()
    node_of: dict[tuple[str, str, str], str] = {}

    def observe(key: AlertKey, active: bool, value: float) -> None:
        seen.add(key)
        if not active:
            return
        prev = state.streaks.get(key)
        first = prev.first_seen if prev is not None else now
        streaks[key] = _Streak(first_seen=first, last_seen=now, value=value)

    for row in rows:
        node_of[(row.namespace, row.pod, row.container)] = row.node
        for g in row.gpus:
            base = (row.namespace, row.pod, row.container, g.uuid)
            if policy.idle_utilization_percent is not None and g.utilization_percent is not None:
                observe(
                    (*base, AlertKind.IDLE),
                    g.utilization_percent <= policy.idle_utilization_percent,
                    g.utilization_percent,
                )
            if (
                policy.memory_used_percent is not None
                and g.memory_used_bytes is not None
                and g.memory_total_bytes
            ):
                pct = 100.0 * g.memory_used_bytes / g.memory_total_bytes
                observe((*base, AlertKind.MEMORY_HIGH), pct > policy.memory_used_percent, pct)

    # Streaks without a reading this time survive a while (a failed scrape
    # must not reset a 10-minute idle clock) but never count as seen now.
    for key, old in state.streaks.items():
        if key not in seen and now - old.last_seen < forget_after:
            streaks[key] = old
    if len(streaks) > MAX_TRACKED:
        keep = sorted(streaks.items(), key=lambda kv: kv[1].last_seen, reverse=True)[:MAX_TRACKED]
        streaks = dict(keep)

    alerts: list[GpuAlert] = []
    for key, s in streaks.items():
        if s.last_seen != now:
            continue
        ns, pod, container, gpu, kind = key
        if kind is AlertKind.IDLE:
            if now - s.first_seen < policy.idle_for:
                continue
            message = (
                f"GPU utilization {s.value:.1f}% has been at or below "
                f"{policy.idle_utilization_percent:g}% for {_fmt_duration(now - s.first_seen)}"
            )
        else:
            message = f"GPU memory {s.value:.1f}% used, above {policy.memory_used_percent:g}%"
        alerts.append(
            GpuAlert(
                namespace=ns,
                pod=pod,
                container=container,
                node=node_of.get((ns, pod, container), ""),
                gpu=gpu,
                kind=kind,
                message=message,
                first_seen=s.first_seen,
                last_seen=s.last_seen,
                value=s.value,
            )
        )
    # Longest-standing first, so a cap keeps the oldest problems.
    alerts.sort(key=lambda a: (a.first_seen, a.namespace, a.pod, a.container, a.gpu, a.kind.value))
    return alerts[: max(policy.max_alerts, 0)], AlertState(streaks=streaks)


class AlertTracker:
    """Holds AlertState between scrapes of one session."""

    def __init__(self, *, policy: AlertPolicy) -> None:
        self.policy = policy
        self._state = AlertState.empty()

    def set_policy(self, *, policy: AlertPolicy) -> None:
        if policy != self.policy:
            self.policy = policy
            self._state = AlertState.empty()

    def update(self, *, rows: Sequence[GpuPodRow], now: datetime) -> list[GpuAlert]:
        alerts, self._state = evaluate_alerts(
            rows=rows, policy=self.policy, state=self._state, now=now
        )
        return alerts

    @property
    def tracked(self) -> int:
        return len(self._state.streaks)


__all__ = ["AlertPolicy", "AlertState", "AlertTracker", "evaluate_alerts"]
