"""Per-session syscall alerts on one node.

During a session's learning period every (container, syscall) seen is
recorded as normal for that container; afterwards only syscalls on the
alert list and outside that baseline raise alerts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

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


@dataclass
class AlertRow:
    ref: ContainerRef
    syscall: str
    count: int
    first_seen: float
    last_seen: float
    pid: int
    comm: str


class SessionAlerts:
    """Aggregated alerts of one session on this node, capped at ``max_alerts`` rows."""

    def __init__(
        self, *, alert_on: Collection[str], learning_until: float, max_alerts: int
    ) -> None:
        self._alert_on = frozenset(alert_on)
        self._learning_until = learning_until
        self._max_alerts = max_alerts
        self._baseline: set[AlertKey] = set()
        self._rows: dict[AlertKey, AlertRow] = {}
        self._earlier = 0  # alerts counted before a restart that are not among the rows
        self.suppressed = 0  # alerts dropped because the cap was reached

    def restore(self, *, alert_count: int, rows: Iterable[AlertRowModel]) -> None:
        """Continue from a previous report of this session (after an agent restart)."""
        for row in rows:
            ref = ContainerRef(row.namespace, row.pod, "", row.container)
            first = row.first_seen.timestamp() if row.first_seen else 0.0
            last = row.last_seen.timestamp() if row.last_seen else first
            process = row.process
            self._rows[(row.namespace, row.pod, row.container, row.syscall)] = AlertRow(
                ref, row.syscall, row.count, first, last,
                process.pid if process else 0, process.comm if process else "",
            )  # fmt: skip
        self._earlier = max(0, alert_count - sum(r.count for r in self._rows.values()))

    def carry_over(self, old: SessionAlerts) -> None:
        """Keep the alerts already raised when the session's spec changes."""
        self._rows = dict(old._rows)
        self._earlier = old._earlier
        self.suppressed = old.suppressed

    def add(self, *, ref: ContainerRef, event: Alert, now: float) -> None:
        key = (ref.namespace, ref.pod, ref.container, event.name)
        if now < self._learning_until:
            self._baseline.add(key)
            return
        if event.name not in self._alert_on or key in self._baseline:
            return
        row = self._rows.get(key)
        if row is None:
            if len(self._rows) >= self._max_alerts:
                self.suppressed += 1
                return
            row = self._rows[key] = AlertRow(ref, event.name, 0, now, now, event.tgid, event.comm)
        row.count += 1
        row.last_seen = now
        row.pid, row.comm = event.tgid, event.comm

    @property
    def count(self) -> int:
        return self._earlier + sum(row.count for row in self._rows.values())

    def rows(self) -> list[AlertRow]:
        return sorted(
            self._rows.values(),
            key=lambda r: (SEVERITY_RANK[severity_of(syscall=r.syscall)], -r.count, r.syscall),
        )
