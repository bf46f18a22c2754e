"""Per-session syscall alerts on one node.

During a session's learning period every (container, syscall) seen is
recorded as normal for that container; afterwards only syscalls on the
alert list and outside that baseline raise alerts.
"""

from __future__ import annotations

from dataclasses import dataclass

from orb8_agent.dataplane.models import Alert

SEVERITY_BY_SYSCALL = {
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


def severity_of(*, syscall: str) -> str:
    return SEVERITY_BY_SYSCALL.get(syscall, "Low")


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

    def __init__(self, *, alert_on: frozenset[str], learning_until: float, max_alerts: int) -> None:
        self._alert_on = alert_on
        self._learning_until = learning_until
        self._max_alerts = max_alerts
        self._baseline: set[tuple[str, str, str]] = set()
        self._rows: dict[tuple[str, str, str], AlertRow] = {}
        self.suppressed = 0  # alerts dropped because the cap was reached

    def add(self, *, ref: ContainerRef, event: Alert, now: float) -> None:
        key = (ref.pod_uid, ref.container, event.name)
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
        return sum(row.count for row in self._rows.values())

    def rows(self) -> list[AlertRow]:
        return sorted(
            self._rows.values(),
            key=lambda r: (SEVERITY_RANK[severity_of(syscall=r.syscall)], -r.count, r.syscall),
        )
