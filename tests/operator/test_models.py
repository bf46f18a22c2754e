from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from orb8_common.errors import InvalidSpecError
from orb8_common.models import (
    DANGEROUS_SYSCALLS,
    Condition,
    Flow,
    NodeAgentConfigSpec,
    SessionStatusHead,
    parse_gpu_telemetry_spec,
    parse_trace_session_spec,
    read_status_head,
    to_wire,
)

NET: dict[str, Any] = {"probes": {"network": {"enabled": True}}}


def test_trace_session_defaults() -> None:
    spec = parse_trace_session_spec(NET)
    net, sys = spec.probes.network, spec.probes.syscalls
    assert net.directions == ("ingress", "egress")
    assert net.protocols == ("TCP", "UDP", "ICMP", "ICMPv6")
    assert net.top_flows == 50
    assert sys.enabled is False
    assert sys.alert_on == DANGEROUS_SYSCALLS
    assert len(DANGEROUS_SYSCALLS) == 20 and "ptrace" in DANGEROUS_SYSCALLS
    assert sys.max_alerts == 100
    assert spec.report_interval_seconds == 15.0
    assert spec.duration_seconds is None
    assert spec.ttl_seconds_after_finished is None
    assert spec.selector.namespaces == ()
    assert spec.selector.pod_selector is None


def test_trace_session_accepts_camel_case_and_round_trips() -> None:
    raw = {
        "selector": {
            "podSelector": {
                "matchLabels": {"app": "checkout"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}],
            },
            "namespaces": ["shop", "cart"],
            "nodeSelector": {"zone": "a"},
        },
        "probes": {
            "network": {"enabled": True, "directions": ["egress"], "topFlows": 10},
            "syscalls": {
                "enabled": True,
                "alertOn": ["ptrace", "mount"],
                "learningPeriod": "1m",
                "maxAlerts": 5,
            },
        },
        "duration": "1h30m",
        "reportInterval": "5s",
        "ttlSecondsAfterFinished": 600,
    }
    spec = parse_trace_session_spec(raw)
    assert spec.duration_seconds == 5400.0
    assert spec.probes.syscalls.learning_period_seconds == 60.0
    wire = to_wire(spec)
    assert wire["probes"]["network"]["topFlows"] == 10
    assert wire["probes"]["syscalls"]["alertOn"] == ["ptrace", "mount"]
    assert wire["ttlSecondsAfterFinished"] == 600
    assert parse_trace_session_spec(wire) == spec


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "spec.probes: enable at least one of network, syscalls, dns"),
        (None, "spec.probes: enable at least one of network, syscalls, dns"),
        ("nope", "spec: Input should be a valid dictionary"),
        ({**NET, "duration": "10"}, "spec.duration: invalid duration '10'"),
        ({**NET, "duration": "0s"}, "spec.duration: duration '0s' must be greater than zero"),
        (
            {**NET, "reportInterval": "500ms"},
            "spec.reportInterval: interval '500ms' must be at least 1s",
        ),
        ({"source": 1, **NET, "reportInterval": "-5s"}, "spec.reportInterval: interval '-5s'"),
        ({**NET, "ttlSecondsAfterFinished": -1}, "spec.ttlSecondsAfterFinished: "),
        (
            {"probes": {"network": {"enabled": True, "topFlows": 0}}},
            "spec.probes.network.topFlows: Input should be greater than or equal to 1",
        ),
        (
            {"probes": {"network": {"enabled": True, "protocols": ["SCTP"]}}},
            "spec.probes.network.protocols[0]: Input should be 'TCP'",
        ),
        (
            {"probes": {"network": {"enabled": True, "directions": []}}},
            "spec.probes.network.directions: must list at least one entry",
        ),
        (
            {"probes": {"syscalls": {"enabled": True, "alertOn": ["rm -rf"]}}},
            "spec.probes.syscalls.alertOn[0]: unknown syscall 'rm -rf'",
        ),
        (
            {"probes": {"syscalls": {"enabled": True, "alertOn": ["ptrace", "notasyscall"]}}},
            "spec.probes.syscalls.alertOn[1]: unknown syscall 'notasyscall'",
        ),
        (
            {**NET, "ttlSecondsAfterFinished": 3_000_000_000},
            "spec.ttlSecondsAfterFinished: Input should be less than or equal to 2147483647",
        ),
        (
            {**NET, "duration": "2562047h48m"},
            "spec.duration: invalid duration '2562047h48m': too large",
        ),
        ({**NET, "duration": "8761h"}, "spec.duration: duration '8761h' must be at most 8760h"),
        (
            {"probes": {"syscalls": {"enabled": True, "learningPeriod": "9000h"}}},
            "spec.probes.syscalls.learningPeriod: duration '9000h' must be at most 8760h",
        ),
        (
            {
                **NET,
                "selector": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
            },
            "spec.selector.podSelector.matchExpressions[0]: operator In needs at least one value",
        ),
        (
            {
                **NET,
                "selector": {
                    "podSelector": {
                        "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                    }
                },
            },
            "operator Exists takes no values",
        ),
        (
            {
                **NET,
                "selector": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}},
            },
            "spec.selector.podSelector.matchExpressions[0].operator: Input should be 'In'",
        ),
        *[
            (
                {"probes": {"network": {"enabled": True, "filter": flt}}},
                f"spec.probes.network.filter.{where}: {message}",
            )
            for flt, where, message in [
                ({"ports": [0]}, "ports[0]", "Input should be greater than or equal to 1"),
                ({"ports": [65536]}, "ports[0]", "Input should be less than or equal to 65535"),
                ({"ports": [80, 80]}, "ports", "must not repeat entries"),
                ({"ports": list(range(1, 18))}, "ports", "Tuple should have at most 16"),
                ({"cidrs": ["10.0.0.0"]}, "cidrs[0]", "must be an IPv4 or IPv6 CIDR"),
                ({"cidrs": ["10.0.0.0/33"]}, "cidrs[0]", "must be an IPv4 or IPv6 CIDR"),
                ({"cidrs": ["FD00::/8"]}, "cidrs[0]", "must be an IPv4 or IPv6 CIDR"),
                ({"cidrs": ["::ffff:10.0.0.0/104"]}, "cidrs[0]", "must be an IPv4 or IPv6 CIDR"),
                ({"cidrs": ["10.0.0.1/8"]}, "cidrs[0]", "must be written in canonical form"),
                ({"cidrs": ["fd00:0::/8"]}, "cidrs[0]", "must be written in canonical form"),
                ({"cidrs": ["10.0.0.0/8", "10.0.0.0/8"]}, "cidrs", "must not repeat entries"),
                (
                    {"cidrs": [f"10.{i}.0.0/16" for i in range(17)]},
                    "cidrs",
                    "Tuple should have at most 16",
                ),
            ]
        ],
    ],
)
def test_trace_session_invalid(raw: Any, message: str) -> None:
    with pytest.raises(InvalidSpecError) as info:
        parse_trace_session_spec(raw)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_every_known_syscall_is_accepted_and_the_default_list_is_known() -> None:
    from orb8_common.syscalls import KNOWN_SYSCALLS

    spec = parse_trace_session_spec(
        {"probes": {"syscalls": {"enabled": True, "alertOn": list(KNOWN_SYSCALLS)}}}
    )
    assert spec.probes.syscalls.alert_on == KNOWN_SYSCALLS
    assert set(DANGEROUS_SYSCALLS) <= set(KNOWN_SYSCALLS)
    assert {"ptrace", "openat", "_sysctl", "arch_prctl"} <= set(KNOWN_SYSCALLS)


def test_a_year_is_the_longest_duration() -> None:
    spec = parse_trace_session_spec(
        {**NET, "duration": "8760h", "ttlSecondsAfterFinished": 2**31 - 1}
    )
    assert spec.duration_seconds == 8760 * 3600


def test_gpu_telemetry_sources() -> None:
    auto = parse_gpu_telemetry_spec({})
    assert auto.source.kind == "auto"
    assert to_wire(auto)["source"] == {}
    assert auto.interval_seconds == 15.0
    dcgm = parse_gpu_telemetry_spec({"source": {"dcgmExporter": {}}})
    assert dcgm.source.kind == "dcgmExporter"
    assert to_wire(dcgm)["source"] == {"dcgmExporter": {"port": 9400, "path": "/metrics"}}
    nvml = parse_gpu_telemetry_spec(
        {"source": {"nvml": {}}, "alerts": {"idleUtilizationPercent": 5, "idleFor": "10m"}}
    )
    assert nvml.source.kind == "nvml"
    assert to_wire(nvml)["source"] == {"nvml": {}}
    assert nvml.alerts.idle_for_seconds == 600.0
    # Integers, as the CRD declares them, so NodeAgentConfig writes validate.
    assert to_wire(nvml)["alerts"] == {"idleUtilizationPercent": 5, "idleFor": "10m"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"source": {"nvml": {}, "dcgmExporter": {}}}, "spec.source: set at most one of"),
        ({"source": {"dcgmExporter": {"port": 70000}}}, "spec.source.dcgmExporter.port:"),
        ({"source": {"dcgmExporter": {"path": "metrics"}}}, "path must start with /"),
        ({"interval": "soon"}, "spec.interval: invalid duration 'soon'"),
        ({"alerts": {"memoryUsedPercent": 120}}, "spec.alerts.memoryUsedPercent:"),
        ({"alerts": {"idleUtilizationPercent": 5.5}}, "spec.alerts.idleUtilizationPercent:"),
        ({"alerts": {"idleFor": "0s"}}, "spec.alerts.idleFor: duration '0s' must be greater"),
        ({"ttlSecondsAfterFinished": 2**31}, "spec.ttlSecondsAfterFinished: Input should be less"),
        ({"interval": "8761h"}, "spec.interval: duration '8761h' must be at most 8760h"),
    ],
)
def test_gpu_telemetry_invalid(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpecError, match=message.replace("[", r"\[")):
        parse_gpu_telemetry_spec(raw)


def test_times_serialise_as_rfc3339_utc_seconds() -> None:
    row = Flow.model_validate(
        {
            "source": {"ip": "10.0.0.1", "port": 1},
            "destination": {"ip": "10.0.0.2"},
            "protocol": "ICMP",
            "firstSeen": "2026-11-29T06:00:15.123+01:00",
            "lastSeen": datetime(2026, 11, 29, 5, 0, 16),  # naive: taken as UTC
        }
    )
    wire = to_wire(row)
    assert wire["firstSeen"] == "2026-11-29T05:00:15Z"
    assert wire["lastSeen"] == "2026-11-29T05:00:16Z"
    assert "port" not in wire["destination"]
    assert row.first_seen is not None and row.first_seen.tzinfo == UTC


READY = {
    "type": "Ready",
    "status": "True",
    "reason": "AgentsReporting",
    "message": "",
    "lastTransitionTime": "2026-11-29T05:00:00Z",
    "observedGeneration": 2,
}


def test_condition_and_node_agent_config_wire_shape() -> None:
    cond = Condition(
        type="Ready",
        status="True",
        reason="AgentsReporting",
        last_transition_time=datetime(2026, 11, 29, 5, tzinfo=UTC),
        observed_generation=2,
    )
    assert to_wire(cond) == READY
    nac = NodeAgentConfigSpec.model_validate({"nodeName": "node-a", "sessions": []})
    assert to_wire(nac) == {"nodeName": "node-a", "pods": [], "sessions": []}


def test_node_agent_config_lists_each_session_once() -> None:
    """spec.sessions is an atomic list, so the apiserver no longer refuses a repeated
    uid: the contract does, naming the uid, and the agent ignores such a spec."""
    entry = {"uid": "u1", "kind": "TraceSession", "namespace": "a", "name": "b"}
    other = {**entry, "kind": "GpuTelemetry", "name": "c"}
    with pytest.raises(ValidationError) as err:
        NodeAgentConfigSpec.model_validate({"nodeName": "n", "sessions": [entry, other]})
    assert "session uid 'u1' is listed more than once" in str(err.value)
    ok = NodeAgentConfigSpec.model_validate(
        {"nodeName": "n", "sessions": [entry, {**other, "uid": "u2"}]}
    )
    assert [s.uid for s in ok.sessions] == ["u1", "u2"]


HEAD: dict[str, Any] = {
    "phase": "Completed",
    "observedGeneration": 2,
    "conditions": [READY, {**READY, "type": "Complete", "reason": "DurationElapsed"}],
    "startTime": "2026-11-29T05:00:00Z",
    "completionTime": "2026-11-29T05:10:00Z",
    "matchedPods": 3,
}


def test_status_head_reads_the_operators_fields_and_round_trips() -> None:
    # Other status parts (rows, nodes) belong to other models and are ignored here.
    head, problems = read_status_head(raw={**HEAD, "flows": [], "summary": {"flows": 1}})
    assert problems == ()
    assert head.phase == "Completed" and head.matched_pods == 3
    assert head.observed_generation == 2
    assert head.start_time == datetime(2026, 11, 29, 5, tzinfo=UTC)
    assert [c.type for c in head.conditions] == ["Ready", "Complete"]
    assert to_wire(head) == HEAD


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("phase", "Stopped", "status.phase: Input should be 'Pending', 'Running', 'Completed'"),
        ("phase", 1, "status.phase: Input should be 'Pending', 'Running', 'Completed'"),
        ("observedGeneration", "2", "status.observedGeneration: Input should be a valid integer"),
        ("observedGeneration", -1, "status.observedGeneration: Input should be greater than"),
        ("matchedPods", "5", "status.matchedPods: Input should be a valid integer"),
        ("matchedPods", True, "status.matchedPods: Input should be a valid integer"),
        ("matchedPods", 5.0, "status.matchedPods: Input should be a valid integer"),
        ("startTime", "yesterday", "status.startTime: Input should be a valid datetime"),
        ("completionTime", [], "status.completionTime: Input should be a valid datetime"),
        ("conditions", {"type": "Ready"}, "status.conditions: Input should be a valid list"),
    ],
)
def test_status_head_leaves_out_and_names_a_malformed_field(
    key: str, value: Any, message: str
) -> None:
    head, problems = read_status_head(raw={**HEAD, key: value})
    assert len(problems) == 1 and problems[0].startswith(message), problems
    # that field is unset, every other one is kept as it was
    assert head.model_fields_set == set(SessionStatusHead.model_fields) - {
        name for name, f in SessionStatusHead.model_fields.items() if f.alias == key
    }
    kept = head.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert kept == {k: v for k, v in HEAD.items() if k != key}


def test_status_head_skips_a_bad_condition_and_keeps_the_others() -> None:
    bad = {**READY, "type": "Degraded", "status": "Maybe"}
    raw = {**HEAD, "conditions": [READY, bad, "junk", HEAD["conditions"][1]]}
    head, problems = read_status_head(raw=raw, where="gpu.status")
    assert [c.type for c in head.conditions] == ["Ready", "Complete"]
    assert problems == (
        "gpu.status.conditions[1].status: Input should be 'True', 'False' or 'Unknown'",
        "gpu.status.conditions[2]: Input should be a valid dictionary or instance of Condition",
    )
    assert head.phase == "Completed" and head.matched_pods == 3


def test_status_head_of_an_empty_missing_or_non_object_status() -> None:
    empty = SessionStatusHead()
    assert read_status_head(raw={}) == (empty, ())
    assert read_status_head(raw=None) == (empty, ())
    # null fields are absent fields (a merge patch's null removes one)
    assert read_status_head(raw=dict.fromkeys(HEAD)) == (empty, ())
    assert read_status_head(raw=["phase", "Running"]) == (empty, ("status: not an object",))
    assert read_status_head(raw="Running") == (empty, ("status: not an object",))
