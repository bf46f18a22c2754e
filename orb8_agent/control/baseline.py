"""A learned syscall baseline per container: which syscalls it makes, and how often.

The syscall probe counts every syscall of a watched cgroup per (cgroup, nr)
in the kernel; the agent drains those counts every tick and feeds them here.
Time is cut into windows of one report interval. During a container's
learning period each closed window adds to what the container is known to
do: the set of syscalls it made and, per syscall, the peak rate (calls per
second over one window). After it, each closed window is judged:

- a syscall the container never made while learning → ``not seen during learning``;
- a known syscall whose count in the window is above
  ``max(spikeFactor x learned peak rate x window seconds, spikeMinCount)``
  → ``rate spike``. The floor keeps low, noisy counts (a syscall learned at
  3 calls a window, now made 40 times) from firing.

The model is pure (:func:`learn`, :func:`judge`, :func:`severity_of_finding`);
:class:`Baselines` only keeps the windows and the per-container state, with
the clock passed in. See docs/syscall-baseline.md for the severity table and
what happens on agent and container restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orb8_common.models import Severity

NOT_SEEN = "not seen during learning"
RATE_SPIKE = "rate spike"

# Syscalls whose first use after learning is worse than Medium (the danger table's severities).
_DANGER: dict[str, Severity] = {
    **dict.fromkeys(
        ("init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load"),
        "Critical",
    ),
    **dict.fromkeys(
        (
            "ptrace", "mount", "umount2", "setns", "unshare", "open_by_handle_at", "pivot_root",
            "bpf", "process_vm_writev", "userfaultfd", "perf_event_open", "execve", "execveat",
        ),
        "High",
    ),
}  # fmt: skip
# A spike this many times over its threshold is Medium instead of Low.
SEVERE_SPIKE = 10.0

ContainerKey = tuple[str, str, str]  # namespace, pod, container name


@dataclass(frozen=True)
class SpikeRule:
    factor: float = 10.0
    min_count: int = 1000


@dataclass(frozen=True)
class Finding:
    """One judged window's verdict on one syscall of one container."""

    syscall: str
    reason: str  # NOT_SEEN or RATE_SPIKE
    count: int  # calls in the window
    rate: float  # calls per second in the window
    learned_rate: float  # the learned peak rate (0 for NOT_SEEN)
    threshold: float  # the count the window had to exceed (0 for NOT_SEEN)
    severity: Severity


def learn(
    *, learned: Mapping[str, float], counts: Mapping[str, int], seconds: float
) -> dict[str, float]:
    """``learned`` (syscall → peak calls/s) after one learning window of ``seconds``."""
    out = dict(learned)
    for name, count in counts.items():
        if count <= 0:
            continue
        rate = count / max(seconds, 1e-9)
        out[name] = max(out.get(name, 0.0), rate)
    return out


def spike_threshold(*, learned_rate: float, seconds: float, rule: SpikeRule) -> float:
    """Calls in a window of ``seconds`` above which a known syscall is a rate spike."""
    return max(rule.factor * learned_rate * seconds, float(rule.min_count))


def severity_of_finding(*, reason: str, syscall: str, count: int, threshold: float) -> Severity:
    """The documented severity table (docs/syscall-baseline.md)."""
    if reason == NOT_SEEN:
        return _DANGER.get(syscall, "Medium")
    return "Medium" if threshold > 0 and count >= SEVERE_SPIKE * threshold else "Low"


def judge(
    *, learned: Mapping[str, float], counts: Mapping[str, int], seconds: float, rule: SpikeRule
) -> list[Finding]:
    """What is unusual in one window's ``counts`` against a learned baseline."""
    findings: list[Finding] = []
    span = max(seconds, 1e-9)
    for name, count in sorted(counts.items()):
        if count <= 0:
            continue
        known = learned.get(name)
        if known is None:
            findings.append(
                Finding(name, NOT_SEEN, count, count / span, 0.0, 0.0,
                        severity_of_finding(reason=NOT_SEEN, syscall=name, count=count,
                                            threshold=0.0))
            )  # fmt: skip
            continue
        threshold = spike_threshold(learned_rate=known, seconds=seconds, rule=rule)
        if count > threshold:
            findings.append(
                Finding(name, RATE_SPIKE, count, count / span, known, threshold,
                        severity_of_finding(reason=RATE_SPIKE, syscall=name, count=count,
                                            threshold=threshold))
            )  # fmt: skip
    return findings


@dataclass
class ContainerBaseline:
    """What one container (by namespace, pod and container name) is known to do."""

    cgroup_id: int
    learning_until: float
    learned: dict[str, float] = field(default_factory=dict)  # syscall → peak calls/s
    pending: dict[str, int] = field(default_factory=dict)  # counts in the open window
    learned_windows: int = 0
    judged_windows: int = 0

    def learning(self, *, now: float) -> bool:
        return now < self.learning_until


@dataclass(frozen=True)
class WindowResult:
    """One closed window of one session: findings per container and what was done."""

    findings: tuple[tuple[ContainerKey, Finding], ...]
    learned: int  # containers whose window was learned
    judged: int  # containers whose window was judged


class Baselines:
    """One session's baselines on one node; windows of ``window`` seconds.

    A container starts learning when it first appears (:meth:`track`); a new
    container id under the same name (a restart) learns again for one more
    ``learning_period``, on top of what it knew, since a restart runs start-up
    code the steady state never showed. Containers that leave are forgotten.
    """

    def __init__(
        self, *, learning_period: float, window: float, rule: SpikeRule, now: float
    ) -> None:
        self.learning_period = learning_period
        self.window = window
        self.rule = rule
        self._window_start = now
        self._containers: dict[ContainerKey, ContainerBaseline] = {}
        self.dirty = False  # learned something, or containers came or went, since the last save

    def carry_over(self, old: Baselines) -> None:
        """Keep what ``old`` learned (a new spec generation of the same session)."""
        self._containers = old._containers
        self._window_start = old._window_start

    def track(self, *, containers: Mapping[ContainerKey, int], now: float) -> None:
        """The session's containers on this node now, with their cgroup ids."""
        for key in [k for k in self._containers if k not in containers]:
            del self._containers[key]
            self.dirty = True
        for key, cgroup_id in containers.items():
            state = self._containers.get(key)
            if state is None:
                self._containers[key] = ContainerBaseline(cgroup_id, now + self.learning_period)
                self.dirty = True
            elif state.cgroup_id != cgroup_id:
                state.cgroup_id = cgroup_id
                state.learning_until = max(state.learning_until, now + self.learning_period)
                self.dirty = True

    def add(self, *, key: ContainerKey, counts: Iterable[tuple[str, int]]) -> None:
        state = self._containers.get(key)
        if state is None:
            return
        for name, count in counts:
            state.pending[name] = state.pending.get(name, 0) + count

    def note(self, *, key: ContainerKey, syscall: str, now: float) -> bool:
        """An alert-list event: True when it belongs to the baseline (learned or learning)."""
        state = self._containers.get(key)
        if state is None:
            return False
        if state.learning(now=now):
            state.learned.setdefault(syscall, 0.0)
            return True
        return syscall in state.learned

    def learning(self, *, key: ContainerKey, now: float) -> bool:
        state = self._containers.get(key)
        return state is None or state.learning(now=now)

    def close_due(self, *, now: float) -> WindowResult | None:
        """Close the open window if it is ``window`` seconds old; None if it is not."""
        seconds = now - self._window_start
        if seconds < self.window:
            return None
        start, self._window_start = self._window_start, now
        findings: list[tuple[ContainerKey, Finding]] = []
        learned = judged = 0
        for key, state in self._containers.items():
            counts, state.pending = state.pending, {}
            if start < state.learning_until:
                state.learned = learn(learned=state.learned, counts=counts, seconds=seconds)
                state.learned_windows += 1
                learned += 1
                self.dirty = True
            else:
                found = judge(learned=state.learned, counts=counts, seconds=seconds, rule=self.rule)
                findings += [(key, f) for f in found]
                state.judged_windows += 1
                judged += 1
        return WindowResult(tuple(findings), learned, judged)

    def containers(self) -> dict[ContainerKey, ContainerBaseline]:
        return dict(self._containers)

    def snapshot(self) -> dict[str, Any]:
        """What was learned, as JSON-ready data (see :meth:`restore`)."""
        return {
            "containers": [
                {
                    "namespace": key[0], "pod": key[1], "container": key[2],
                    "cgroupId": state.cgroup_id, "learningUntil": state.learning_until,
                    "learned": dict(sorted(state.learned.items())),
                    "learnedWindows": state.learned_windows,
                }
                for key, state in sorted(self._containers.items())
            ]
        }  # fmt: skip

    def restore(self, *, snapshot: Mapping[str, Any]) -> None:
        """Continue from a :meth:`snapshot` (after an agent restart); bad entries are skipped.

        A container keeps its baseline, and its learning deadline, while its
        cgroup id is the same; :meth:`track` starts learning again when the
        container was replaced meanwhile.
        """
        for item in snapshot.get("containers") or []:
            try:
                key = (str(item["namespace"]), str(item["pod"]), str(item["container"]))
                self._containers[key] = ContainerBaseline(
                    cgroup_id=int(item["cgroupId"]),
                    learning_until=float(item["learningUntil"]),
                    learned={str(k): float(v) for k, v in dict(item["learned"]).items()},
                    learned_windows=int(item.get("learnedWindows", 0)),
                )
            except (KeyError, TypeError, ValueError):
                continue
