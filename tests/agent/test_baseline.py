"""The learned syscall baseline: the pure model, its windows, and the alerts it raises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orb8_agent.control import baseline_store
from orb8_agent.control.alerts import ContainerRef, SessionAlerts
from orb8_agent.control.baseline import (
    NOT_SEEN,
    RATE_SPIKE,
    Baselines,
    ContainerKey,
    SpikeRule,
    judge,
    learn,
    severity_of_finding,
    spike_threshold,
)
from orb8_agent.control.report import trace_node_entry
from orb8_agent.dataplane.models import Alert
from orb8_common.models import NodeEntry, parse_trace_session_spec, to_wire

RULE = SpikeRule(factor=10, min_count=100)
APP: ContainerKey = ("shop", "web", "app")
REF = ContainerRef("shop", "web", "uid-web", "app")


def test_learn_keeps_every_syscall_and_its_peak_rate() -> None:
    learned = learn(learned={}, counts={"read": 100, "write": 10}, seconds=10)
    learned = learn(learned=learned, counts={"read": 400, "futex": 1, "close": 0}, seconds=20)
    learned = learn(learned=learned, counts={"read": 5}, seconds=1)
    assert learned == {"read": 20.0, "write": 1.0, "futex": 0.05}  # close: zero calls, not learned


def test_threshold_is_factor_times_peak_with_a_floor() -> None:
    assert spike_threshold(learned_rate=50.0, seconds=2, rule=RULE) == 1000.0
    assert spike_threshold(learned_rate=0.1, seconds=2, rule=RULE) == 100.0  # the floor


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (99, []),  # under the floor: a low count that grew is noise
        (100, []),  # the threshold itself is not above it
        (101, [RATE_SPIKE]),
    ],
)
def test_low_counts_never_spike_below_the_floor(count: int, expected: list[str]) -> None:
    learned = {"openat": 0.5}  # 5 per 10 s window: 10x is 50, the floor says 100
    found = judge(learned=learned, counts={"openat": count}, seconds=10, rule=RULE)
    assert [f.reason for f in found] == expected


def test_judge_flags_new_syscalls_and_spikes_only() -> None:
    learned = {"read": 100.0, "write": 10.0}
    found = judge(
        learned=learned,
        counts={"read": 900, "write": 1_500, "ptrace": 1, "getpid": 0},
        seconds=1,
        rule=RULE,
    )
    by_name = {f.syscall: f for f in found}
    assert set(by_name) == {"write", "ptrace"}  # read: 900 <= 10 x 100/s x 1 s
    write = by_name["write"]
    assert (write.reason, write.count, write.threshold, write.learned_rate) == (
        RATE_SPIKE, 1_500, 100.0, 10.0,
    )  # fmt: skip
    assert by_name["ptrace"].reason == NOT_SEEN
    assert by_name["ptrace"].severity == "High"


def test_read_at_nine_times_its_peak_is_normal() -> None:
    found = judge(learned={"read": 1000.0}, counts={"read": 9_000}, seconds=1, rule=RULE)
    assert found == []


@pytest.mark.parametrize(
    ("reason", "syscall", "count", "threshold", "severity"),
    [
        (NOT_SEEN, "getpriority", 1, 0.0, "Medium"),
        (NOT_SEEN, "execve", 1, 0.0, "High"),
        (NOT_SEEN, "ptrace", 1, 0.0, "High"),
        (NOT_SEEN, "init_module", 1, 0.0, "Critical"),
        (RATE_SPIKE, "read", 1_001, 1_000.0, "Low"),
        (RATE_SPIKE, "read", 9_999, 1_000.0, "Low"),
        (RATE_SPIKE, "read", 10_000, 1_000.0, "Medium"),
    ],
)
def test_severity_table(
    reason: str, syscall: str, count: int, threshold: float, severity: str
) -> None:
    assert severity_of_finding(
        reason=reason, syscall=syscall, count=count, threshold=threshold
    ) == severity  # fmt: skip


def _baselines(*, now: float = 0.0, learning: float = 30.0, window: float = 10.0) -> Baselines:
    return Baselines(learning_period=learning, window=window, rule=RULE, now=now)


def test_windows_learn_then_judge() -> None:
    b = _baselines()
    b.track(containers={APP: 7}, now=0.0)
    for start in (0.0, 10.0, 20.0):  # three learning windows
        b.add(key=APP, counts=[("read", 50), ("write", 5)])
        result = b.close_due(now=start + 10)
        assert result is not None and result.learned == 1 and result.findings == ()
    assert b.close_due(now=35.0) is None  # the open window is 5 s old
    b.add(key=APP, counts=[("read", 60), ("write", 1), ("getpriority", 2)])
    result = b.close_due(now=40.0)
    assert result is not None and result.judged == 1
    assert [(k, f.syscall, f.reason) for k, f in result.findings] == [
        (APP, "getpriority", NOT_SEEN)
    ]
    b.add(key=APP, counts=[("read", 600)])  # 10x peak (5/s) x 10 s = 500 < 600
    result = b.close_due(now=50.0)
    assert result is not None
    assert [(f.syscall, f.reason) for _, f in result.findings] == [("read", RATE_SPIKE)]
    learned = b.containers()[APP]
    assert (learned.learned_windows, learned.judged_windows) == (3, 2)


def test_rates_are_per_second_so_a_late_window_is_not_a_spike() -> None:
    b = _baselines(learning=10.0)
    b.track(containers={APP: 7}, now=0.0)
    b.add(key=APP, counts=[("read", 1_000)])
    b.close_due(now=10.0)  # learned 100/s
    b.add(key=APP, counts=[("read", 5_000)])  # a tick stalled: 50 s of calls in one window
    result = b.close_due(now=60.0)
    assert result is not None and result.findings == ()


def test_a_container_that_appears_later_learns_from_its_own_start() -> None:
    b = _baselines(learning=20.0)
    b.track(containers={APP: 7}, now=0.0)
    b.close_due(now=10.0)
    b.close_due(now=20.0)
    late: ContainerKey = ("shop", "web-2", "app")
    b.track(containers={APP: 7, late: 9}, now=25.0)
    b.add(key=late, counts=[("read", 10)])
    b.add(key=APP, counts=[("read", 10)])  # APP learned nothing: read is new for it
    result = b.close_due(now=30.0)
    assert result is not None
    assert [(k, f.reason) for k, f in result.findings] == [(APP, NOT_SEEN)]
    assert b.learning(key=late, now=30.0) and not b.learning(key=APP, now=30.0)


def test_a_restarted_container_learns_again_on_top_of_what_it_knew() -> None:
    b = _baselines(learning=10.0)
    b.track(containers={APP: 7}, now=0.0)
    b.add(key=APP, counts=[("read", 100)])
    b.close_due(now=10.0)
    b.track(containers={APP: 8}, now=12.0)  # new container id: a restart
    assert b.learning(key=APP, now=15.0)
    b.add(key=APP, counts=[("execve", 1), ("read", 10)])  # start-up code
    assert b.close_due(now=20.0) is not None
    b.add(key=APP, counts=[("execve", 1), ("read", 100)])
    result = b.close_due(now=30.0)
    assert result is not None and result.findings == ()
    assert set(b.containers()[APP].learned) == {"read", "execve"}
    b.track(containers={}, now=31.0)  # the pod left: forgotten
    assert b.containers() == {}


def _event(name: str, pid: int = 42) -> Alert:
    return Alert(pid, pid, "sh", 7, 0, name, 0, 0.0)


def _alerts(*, max_alerts: int = 10) -> SessionAlerts:
    alerts = SessionAlerts(
        alert_on={"ptrace", "mount"}, learning_until=30.0, max_alerts=max_alerts,
        baselines=_baselines(),
    )  # fmt: skip
    assert alerts.baselines is not None
    alerts.baselines.track(containers={APP: 7}, now=0.0)
    return alerts


def test_session_alerts_turn_findings_into_rows_with_reasons() -> None:
    alerts = _alerts()
    refs = {APP: REF}
    for t in (10.0, 20.0, 30.0):
        alerts.add_counts(ref=REF, counts=[("read", 100), ("mount", 1)])
        alerts.add(ref=REF, event=_event("mount"), now=t - 5)  # learned: never alerts later
        assert alerts.close_window(refs=refs, now=t) == 0
    alerts.add(ref=REF, event=_event("mount"), now=35.0)
    alerts.add(ref=REF, event=_event("ptrace"), now=35.0)  # alert list, outside the baseline
    alerts.add_counts(ref=REF, counts=[("read", 5_000), ("ptrace", 1), ("getpriority", 3)])
    assert alerts.close_window(refs=refs, now=40.0) == 2  # ptrace is the alert list's own
    rows = {r.syscall: r for r in alerts.rows()}
    assert set(rows) == {"ptrace", "read", "getpriority"}
    assert (rows["ptrace"].row_reason, rows["ptrace"].pid) == ("ptrace is on the session's "
                                                               "alert list", 42)  # fmt: skip
    assert (rows["getpriority"].row_reason, rows["getpriority"].count) == (NOT_SEEN, 3)
    assert rows["getpriority"].row_severity == "Medium"
    read = rows["read"]
    assert (read.row_reason, read.count, read.row_severity) == (RATE_SPIKE, 1, "Low")  # 1 window
    assert (read.rate, read.learned_rate) == (500.0, 10.0)
    assert [reason for _, reason in alerts.baseline_alerts] == [NOT_SEEN, RATE_SPIKE]
    assert (alerts.windows_learned, alerts.windows_judged) == (3, 1)

    entry = trace_node_entry(
        node="node-a", state="Running", probes=["syscalls"], message="", now=1_700_000_000.0,
        flows=None, top_flows=0, alerts=alerts, max_alerts=10, pods_by_ip={}, dropped_events=0,
    )  # fmt: skip
    wire = to_wire(entry)
    by_name = {a["syscall"]: a for a in wire["alerts"]}
    assert by_name["read"]["reason"] == "rate spike"
    assert by_name["read"]["ratePerSecond"] == 500.0
    assert by_name["read"]["learnedRatePerSecond"] == 10.0
    assert by_name["getpriority"]["reason"] == "not seen during learning"
    assert "ratePerSecond" not in by_name["getpriority"]
    assert wire["alerts"][0]["syscall"] == "ptrace"  # High first

    # an agent restart reads the rows back with their reasons and severities
    again = _alerts()
    again.restore(alert_count=entry.alert_count, rows=NodeEntry.model_validate(wire).alerts)
    restored = {r.syscall: r for r in again.rows()}
    assert restored["read"].row_reason == RATE_SPIKE and restored["read"].rate == 500.0
    assert restored["getpriority"].row_severity == "Medium"
    assert restored["ptrace"].row_reason.endswith("alert list")


def test_no_alert_in_steady_state_and_the_cap_holds() -> None:
    alerts = _alerts(max_alerts=1)
    for t in (10.0, 20.0, 30.0):
        alerts.add_counts(ref=REF, counts=[("read", 100), ("futex", 20)])
        alerts.close_window(refs={APP: REF}, now=t)
    for t in range(40, 400, 10):
        alerts.add_counts(ref=REF, counts=[("read", 90 + t % 20), ("futex", 15)])
        assert alerts.close_window(refs={APP: REF}, now=float(t)) == 0
    alerts.add_counts(ref=REF, counts=[("a", 1), ("b", 1)])  # hypothetical names: both new
    alerts.close_window(refs={APP: REF}, now=410.0)
    assert len(alerts.rows()) == 1 and alerts.suppressed == 1


def test_spec_carries_the_thresholds_and_the_learning_period() -> None:
    spec = parse_trace_session_spec(
        {"probes": {"syscalls": {"enabled": True, "learningPeriod": "5m",
                                 "baseline": {"spikeFactor": 20, "spikeMinCount": 50}}}}
    )  # fmt: skip
    syscalls = spec.probes.syscalls
    assert syscalls.learning_period_seconds == 300.0
    assert (syscalls.baseline.spike_factor, syscalls.baseline.spike_min_count) == (20, 50)
    default = parse_trace_session_spec({"probes": {"syscalls": {"enabled": True}}})
    assert default.probes.syscalls.baseline.spike_factor == 10
    assert default.probes.syscalls.learning_period_seconds == 0.0  # no baseline by default


def test_snapshot_restores_what_was_learned_and_the_learning_deadline(tmp_path: Path) -> None:
    b = _baselines(learning=20.0)
    b.track(containers={APP: 7}, now=0.0)
    b.add(key=APP, counts=[("read", 100)])
    b.close_due(now=10.0)
    assert b.dirty
    path = tmp_path / "agent-x" / "baseline.json"
    assert baseline_store.save(path=path, sessions={"uid-1": b.snapshot()})
    [saved] = baseline_store.load(path=path).values()

    again = _baselines(now=100.0, learning=20.0)
    again.restore(snapshot=saved)
    again.track(containers={APP: 7}, now=100.0)  # same container: keeps its baseline
    assert not again.learning(key=APP, now=100.0)
    assert again.containers()[APP].learned == {"read": 10.0}
    again.add(key=APP, counts=[("read", 50), ("getpriority", 1)])
    result = again.close_due(now=110.0)
    assert result is not None and result.learned == 0
    assert [f.syscall for _, f in result.findings] == ["getpriority"]

    mid = _baselines(now=15.0, learning=20.0)
    mid.restore(snapshot=saved)  # restarted while still learning: learns until the old deadline
    mid.track(containers={APP: 7}, now=15.0)
    assert mid.learning(key=APP, now=19.0) and not mid.learning(key=APP, now=20.0)

    replaced = _baselines(now=100.0, learning=20.0)
    replaced.restore(snapshot=saved)
    replaced.track(containers={APP: 8}, now=100.0)  # the container restarted meanwhile
    assert replaced.learning(key=APP, now=119.0)
    assert replaced.containers()[APP].learned == {"read": 10.0}  # on top of what it knew


def test_store_treats_missing_or_bad_files_as_nothing_learned(tmp_path: Path) -> None:
    path = tmp_path / "agent-y" / "baseline.json"
    assert baseline_store.load(path=path) == {}
    path.parent.mkdir()
    path.write_text("{not json")
    assert baseline_store.load(path=path) == {}
    path.write_text(json.dumps({"version": 99, "sessions": {"u": {}}}))
    assert baseline_store.load(path=path) == {}
    b = _baselines()
    b.restore(snapshot={"containers": [{"namespace": "shop"}, "junk"]})  # skipped, no crash
    assert b.containers() == {}
    baseline_store.save(path=path, sessions={"u": {"containers": []}})
    baseline_store.remove(path=path)
    assert not path.exists() and not path.parent.exists()  # the empty agent directory goes too
