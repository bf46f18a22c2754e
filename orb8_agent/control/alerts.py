"""Per-session syscall alerts on one node.

Alert-list syscalls arrive as ring-buffer events (with the process); they
raise an alert unless they belong to the container's baseline. With a
learning period the session also keeps a learned baseline per container
(:mod:`orb8_agent.control.baseline`), fed with the probe's per-syscall
counts: after learning, syscalls outside it and rate spikes raise alerts
too. Without a :class:`Baselines` (the older form, kept for callers that
pass ``learning_until`` alone) every alert-list (container, syscall) seen
before ``learning_until`` is normal for that container.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from orb8_agent.control.baseline import NOT_SEEN, RATE_SPIKE, Baselines, ContainerKey, Finding
from orb8_agent.dataplane.models import Alert
from orb8_common.models import Alert as AlertRowModel
from orb8_common.models import Severity

SEVERITY_BY_SYSCALL: dict[str, Severity] = {
    **dict.fromkeys(
        ("init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load"),
        "Critical",
    ),
    **dict.fromkeys(
        (
            "ptrace", "mount", "umount2", "setns", "unshare", "open_by_handle_at", "pivot_root",
            "bpf", "process_vm_writev", "userfaultfd", "perf_event_open",
        ),
        "High",
    ),
    **dict.fromkeys(("syslog", "swapon", "reboot", "keyctl"), "Medium"),
}  # fmt: skip
SEVERITY_RANK = {"Critical": 0, "High": 1, "Medium": 2, "Low": 3}


def severity_of(*, syscall: str) -> Severity:
    return SEVERITY_BY_SYSCALL.get(syscall, "Low")


AlertKey = tuple[str, str, str, str]  # namespace, pod, container, syscall


@dataclass(frozen=True)
class ContainerRef:
    namespace: str
    pod: str
    pod_uid: str
    container: str


ALERT_LIST_REASON = "{syscall} is on the session's alert list"


@dataclass
class AlertRow:
    ref: ContainerRef
    syscall: str
    count: int
    first_seen: float
    last_seen: float
    pid: int
    comm: str
    reason: str = ""
    severity: Severity | None = None  # None: the alert list's table
    rate: float | None = None  # rate spikes: the highest window rate, calls/s
    learned_rate: float | None = None  # rate spikes: the learned peak rate, calls/s

    @property
    def row_severity(self) -> Severity:
        return self.severity or severity_of(syscall=self.syscall)

    @property
    def row_reason(self) -> str:
        return self.reason or ALERT_LIST_REASON.format(syscall=self.syscall)


class SessionAlerts:
    """Aggregated alerts of one session on this node, capped at ``max_alerts`` rows."""

    def __init__(
        self, *, alert_on: Collection[str], learning_until: float, max_alerts: int,
        baselines: Baselines | None = None,
    ) -> None:  # fmt: skip
        self._alert_on = frozenset(alert_on)
        self._learning_until = learning_until
        self._max_alerts = max_alerts
        self.baselines = baselines
        self._baseline: set[AlertKey] = set()
        self._rows: dict[AlertKey, AlertRow] = {}
        self._earlier = 0  # alerts counted before a restart that are not among the rows
        self.suppressed = 0  # alerts dropped because the cap was reached
        self.windows_learned = 0  # container windows the baseline learned from
        self.windows_judged = 0  # container windows judged against the baseline
        # (container, reason) of each baseline finding raised, for metrics; the caller drains it
        self.baseline_alerts: list[tuple[ContainerRef, str]] = []

    def restore(self, *, alert_count: int, rows: Iterable[AlertRowModel]) -> None:
        """Continue from a previous report of this session (after an agent restart)."""
        for row in rows:
            ref = ContainerRef(row.namespace, row.pod, "", row.container)
            first = row.first_seen.timestamp() if row.first_seen else 0.0
            last = row.last_seen.timestamp() if row.last_seen else first
            process = row.process
            baseline_row = row.reason in (NOT_SEEN, RATE_SPIKE)
            self._rows[(row.namespace, row.pod, row.container, row.syscall)] = AlertRow(
                ref, row.syscall, row.count, first, last,
                process.pid if process else 0, process.comm if process else "",
                reason=row.reason if baseline_row else "",
                severity=row.severity if baseline_row else None,
                rate=row.rate_per_second, learned_rate=row.learned_rate_per_second,
            )  # fmt: skip
        self._earlier = max(0, alert_count - sum(r.count for r in self._rows.values()))

    def carry_over(self, old: SessionAlerts) -> None:
        """Keep the alerts already raised when the session's spec changes."""
        self._rows = dict(old._rows)
        self._earlier = old._earlier
        self.suppressed = old.suppressed
        self._baseline = set(old._baseline)
        if self.baselines is not None and old.baselines is not None:
            self.baselines.carry_over(old.baselines)

    def add(self, *, ref: ContainerRef, event: Alert, now: float) -> None:
        """An alert-list event from the ring buffer."""
        key = (ref.namespace, ref.pod, ref.container, event.name)
        if self.baselines is not None:
            if self.baselines.note(key=key[:3], syscall=event.name, now=now):
                return
        elif now < self._learning_until:
            self._baseline.add(key)
            return
        if event.name not in self._alert_on or key in self._baseline:
            return
        row = self._row(key=key, ref=ref, now=now)
        if row is None:
            return
        row.count += 1
        row.last_seen = now
        row.pid, row.comm = event.tgid, event.comm
        row.reason, row.severity, row.rate, row.learned_rate = "", None, None, None

    def add_counts(self, *, ref: ContainerRef, counts: Iterable[tuple[str, int]]) -> None:
        """One drain of the probe's per-syscall counts of ``ref``'s container."""
        if self.baselines is not None:
            self.baselines.add(key=(ref.namespace, ref.pod, ref.container), counts=counts)

    def close_window(self, *, refs: Mapping[ContainerKey, ContainerRef], now: float) -> int:
        """Close the baseline window if due; turn its findings into alerts. Returns them."""
        if self.baselines is None:
            return 0
        result = self.baselines.close_due(now=now)
        if result is None:
            return 0
        self.windows_learned += result.learned
        self.windows_judged += result.judged
        raised = 0
        for container, finding in result.findings:
            ref = refs.get(container)
            if ref is None:
                continue
            if finding.reason == NOT_SEEN and finding.syscall in self._alert_on:
                continue  # the alert list's own event (with its process) reports it
            self._raise(ref=ref, finding=finding, now=now)
            raised += 1
            self.baseline_alerts.append((ref, finding.reason))
        return raised

    def _raise(self, *, ref: ContainerRef, finding: Finding, now: float) -> None:
        key = (ref.namespace, ref.pod, ref.container, finding.syscall)
        row = self._row(key=key, ref=ref, now=now)
        if row is None:
            return
        if row.reason != finding.reason:
            row.rate = row.learned_rate = None
        # Calls for a syscall outside the baseline (like the alert list); windows for a spike,
        # whose size is in its rates: a burst of a million calls is one alert, not a million.
        row.count += finding.count if finding.reason == NOT_SEEN else 1
        row.last_seen = now
        row.reason = finding.reason
        if row.severity is None or SEVERITY_RANK[finding.severity] < SEVERITY_RANK[row.severity]:
            row.severity = finding.severity
        if finding.reason == RATE_SPIKE:
            row.rate = max(row.rate or 0.0, round(finding.rate, 3))
            row.learned_rate = round(finding.learned_rate, 3)

    def _row(self, *, key: AlertKey, ref: ContainerRef, now: float) -> AlertRow | None:
        row = self._rows.get(key)
        if row is None:
            if len(self._rows) >= self._max_alerts:
                self.suppressed += 1
                return None
            row = self._rows[key] = AlertRow(ref, key[3], 0, now, now, 0, "")
        return row

    @property
    def count(self) -> int:
        return self._earlier + sum(row.count for row in self._rows.values())

    def rows(self) -> list[AlertRow]:
        return sorted(
            self._rows.values(),
            key=lambda r: (SEVERITY_RANK[r.row_severity], -r.count, r.syscall),
        )
