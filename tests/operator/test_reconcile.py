from __future__ import annotations

from typing import Any

import pytest

from orb8_common.models import DnsSummary, NodeEntry, format_time, to_wire
from orb8_operator.reconcile import changed_fields, reconcile_session

from .factories import at, flow, pod

PODS = [
    pod("checkout-1", node="node-a", labels={"app": "checkout"}, ip="10.0.1.1"),
    pod("checkout-2", node="node-b", labels={"app": "checkout"}, ip="10.0.2.1"),
    pod("cart-1", node="node-b", labels={"app": "cart"}, ip="10.0.2.2"),
]


def body(spec: Any, status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": "uid-ts",
            "namespace": "shop",
            "name": "checkout-debug",
            "generation": generation,
        },
        "spec": spec,
        "status": status or {},
    }


SPEC = {
    "selector": {"podSelector": {"matchLabels": {"app": "checkout"}}},
    "probes": {"network": {"enabled": True, "topFlows": 1}},
    "duration": "10m",
    "ttlSecondsAfterFinished": 60,
}


def test_first_pass_is_pending_with_targets_on_two_nodes() -> None:
    out = reconcile_session(
        kind="TraceSession", body=body(SPEC), pods=PODS, node_labels={}, now=at(0)
    )
    assert out.spec_error is None
    assert out.status["phase"] == "Pending"
    assert out.status["matchedPods"] == 2
    assert out.status["startTime"] == "2026-11-29T05:00:00Z"
    assert out.status["completionTime"] is None
    assert out.status["summary"] == {
        "flows": 0,
        "bytes": 0,
        "packets": 0,
        "alerts": 0,
        "nodes": 0,
        "pods": 2,
        "retransmits": 0,
        "resetsSent": 0,
        "resetsReceived": 0,
        "connects": 0,
        "unfilteredPods": 0,
    }
    assert out.status["nodes"] == []  # no node has reported yet
    assert out.active is not None
    assert {n: [p.name for p in ps] for n, ps in out.active.targets.items()} == {
        "node-a": ["checkout-1"],
        "node-b": ["checkout-2"],
    }
    assert [e.reason for e in out.events] == ["Accepted"]
    assert out.next_check_in == 15.0
    assert not out.delete


def test_running_merges_node_reports() -> None:
    nodes = [
        {
            "node": "node-a",
            "state": "Running",
            "flows": [to_wire(flow("10.0.1.1", "10.0.2.2", nbytes=500, sport=40000, dport=8080))],
            "flowCount": 1,
            "bytes": 500,
            "packets": 1,
        },
        {
            "node": "node-b",
            "state": "Running",
            "flows": [
                to_wire(
                    flow("10.0.1.1", "10.0.2.2", nbytes=450, node="node-b", sport=40000, dport=8080)
                )
            ],
            "flowCount": 3,
            "bytes": 700,
            "packets": 3,
        },
        {"node": "node-c", "state": "Bogus"},
    ]
    status = {"phase": "Pending", "startTime": format_time(at(0)), "nodes": nodes}
    out = reconcile_session(
        kind="TraceSession", body=body(SPEC, status), pods=PODS, node_labels={}, now=at(20)
    )
    assert out.status["phase"] == "Running"
    assert out.status["summary"]["flows"] == 3
    assert out.status["summary"]["bytes"] == 750
    assert out.status["summary"]["nodes"] == 2
    assert len(out.status["flows"]) == 1 and out.status["flows"][0]["bytes"] == 500
    assert len(out.problems) == 1 and "node-c" in out.problems[0]
    assert [e.reason for e in out.events] == ["Running"]


def test_completion_then_ttl_deletion() -> None:
    status = {"phase": "Running", "startTime": format_time(at(0))}
    done = reconcile_session(
        kind="TraceSession", body=body(SPEC, status), pods=PODS, node_labels={}, now=at(600)
    )
    assert done.status["phase"] == "Completed"
    assert done.status["completionTime"] == format_time(at(600))
    assert done.active is None
    assert not done.delete
    assert done.next_check_in == 60.0
    later = reconcile_session(
        kind="TraceSession", body=body(SPEC, done.status), pods=PODS, node_labels={}, now=at(660)
    )
    assert later.delete
    assert later.events == ()


def test_invalid_spec_fails_without_targets() -> None:
    bad = {**SPEC, "duration": "10"}
    out = reconcile_session(
        kind="TraceSession", body=body(bad), pods=PODS, node_labels={}, now=at(0)
    )
    assert out.spec_error is not None and out.spec_error.startswith("spec.duration:")
    assert out.status["phase"] == "Failed"
    assert out.active is None
    assert out.status["conditions"][0]["reason"] == "InvalidSpec"
    # The raw TTL still applies to a Failed session.
    assert reconcile_session(
        kind="TraceSession", body=body(bad, out.status), pods=PODS, node_labels={}, now=at(60)
    ).delete


def test_gpu_session() -> None:
    spec = {"source": {"dcgmExporter": {}}, "alerts": {"memoryUsedPercent": 90}}
    gpu_pod = pod("trainer-0", namespace="shop", node="gpu-1")
    row = {
        "namespace": "shop",
        "pod": "trainer-0",
        "container": "main",
        "gpus": [
            {
                "uuid": "GPU-1",
                "utilizationPercent": 87.0,
                "memoryUsedBytes": 95,
                "memoryTotalBytes": 100,
            }
        ],
    }
    alert = {
        "namespace": "shop",
        "pod": "trainer-0",
        "container": "main",
        "gpu": "GPU-1",
        "kind": "MemoryHigh",
        "value": 95.0,
    }
    status = {
        "nodes": [
            {
                "node": "gpu-1",
                "state": "Running",
                "source": "dcgmExporter",
                "pods": [row],
                "alerts": [alert],
            }
        ]
    }
    out = reconcile_session(
        kind="GpuTelemetry", body=body(spec, status), pods=[gpu_pod], node_labels={}, now=at(0)
    )
    assert out.status["phase"] == "Running"
    assert out.status["summary"] == {
        "gpus": 1,
        "pods": 1,
        "avgUtilization": 87.0,
        "memoryUsedBytes": 95,
    }
    assert out.status["pods"][0]["node"] == "gpu-1"
    assert out.status["alerts"] == [{**alert, "node": "gpu-1", "message": ""}]
    assert "flows" not in out.status
    assert out.active is not None and out.active.kind == "GpuTelemetry"


def test_fresh_reports_merge_into_compact_nodes_and_bounded_lists() -> None:
    flows = tuple(flow("10.0.1.1", "10.0.2.2", sport=i, nbytes=i, node="node-a")
                  for i in range(1, 400))  # fmt: skip
    report = NodeEntry(node="node-a", state="Running", last_report_time=at(0), flow_count=399,
                       bytes=sum(f.bytes for f in flows), packets=399, flows=flows)  # fmt: skip
    out = reconcile_session(
        kind="TraceSession", body=body(SPEC), pods=PODS, node_labels={}, now=at(0),
        budget=30_000, reports={"node-a": report},
    )  # fmt: skip
    assert out.size <= 30_000
    (node,) = out.status["nodes"]
    # The per-node summary keeps state and totals, never the node's rows.
    assert node["bytes"] == report.bytes and node["flowCount"] == 399
    assert "flows" not in node and "alerts" not in node
    assert out.status["summary"]["bytes"] == report.bytes
    assert len(out.status["flows"]) == 1  # the spec's topFlows


def test_a_node_that_stops_reporting_keeps_its_totals_and_rows() -> None:
    a = NodeEntry(node="node-a", state="Running", last_report_time=at(0), flow_count=1,
                  bytes=500, packets=5,
                  flows=(flow("10.0.1.1", "10.0.9.9", nbytes=500, node="node-a"),))  # fmt: skip
    b = NodeEntry(node="node-b", state="Running", last_report_time=at(0), flow_count=1,
                  bytes=300, packets=3,
                  flows=(flow("10.0.2.1", "10.0.9.9", nbytes=300, node="node-b"),))  # fmt: skip
    spec = {**SPEC, "probes": {"network": {"enabled": True, "topFlows": 5}}}
    first = reconcile_session(
        kind="TraceSession", body=body(spec), pods=PODS, node_labels={}, now=at(0),
        reports={"node-a": a, "node-b": b},
    )  # fmt: skip
    assert first.status["summary"]["bytes"] == 800
    # node-a's pods leave: its agent no longer reports this session.
    moved = [p for p in PODS if p.node != "node-a"]
    later = reconcile_session(
        kind="TraceSession", body=body(spec, first.status), pods=moved, node_labels={},
        now=at(15), reports={"node-b": b.model_copy(update={"bytes": 400, "packets": 4})},
    )  # fmt: skip
    assert later.status["summary"]["bytes"] == 900  # never backwards
    states = {n["node"]: n["state"] for n in later.status["nodes"]}
    assert states == {"node-a": "Stopped", "node-b": "Running"}
    assert {f["node"] for f in later.status["flows"]} == {"node-a", "node-b"}


def test_changed_fields_skips_what_is_already_stored() -> None:
    out = reconcile_session(
        kind="TraceSession", body=body(SPEC), pods=PODS, node_labels={}, now=at(0)
    )
    first = changed_fields(current={}, patch=out.status)
    assert "completionTime" not in first  # None over nothing changes nothing
    assert first["phase"] == "Pending"
    again = reconcile_session(
        kind="TraceSession", body=body(SPEC, first), pods=PODS, node_labels={}, now=at(5)
    )
    assert changed_fields(current=first, patch=again.status) == {}
    stored = {**first, "completionTime": "2026-11-29T04:00:00Z"}
    assert changed_fields(current=stored, patch=again.status) == {"completionTime": None}


def test_completed_session_keeps_its_matched_pods_without_resolving() -> None:
    status = {"phase": "Completed", "matchedPods": 7, "completionTime": format_time(at(5))}
    out = reconcile_session(
        kind="TraceSession", body=body(SPEC, status), pods=PODS, node_labels={}, now=at(10)
    )
    assert out.status["matchedPods"] == 7
    assert out.active is None


@pytest.mark.parametrize("stored", ["7", True, None])
def test_completed_session_counts_again_when_matched_pods_is_not_a_count(stored: Any) -> None:
    status = {"phase": "Completed", "matchedPods": stored, "completionTime": format_time(at(5))}
    out = reconcile_session(
        kind="TraceSession", body=body(SPEC, status), pods=PODS, node_labels={}, now=at(10)
    )
    assert out.status["matchedPods"] == 2  # the two checkout pods, counted from the index
    assert out.status["phase"] == "Completed" and out.active is None


def test_a_malformed_condition_is_skipped_and_the_others_keep_their_times() -> None:
    first = reconcile_session(
        kind="TraceSession", body=body(SPEC), pods=PODS, node_labels={}, now=at(0)
    ).status
    junk = {**first, "conditions": [{"type": "Ready", "status": "Maybe"}, *first["conditions"]]}
    again = reconcile_session(
        kind="TraceSession", body=body(SPEC, junk), pods=PODS, node_labels={}, now=at(30)
    )
    # lastTransitionTime stays at(0): the good conditions were read, not started afresh
    assert again.status["conditions"] == first["conditions"]
    assert again.status["startTime"] == first["startTime"] == format_time(at(0))


def test_changed_fields_removes_a_summary_reading_that_became_unknown() -> None:
    """A merge patch of a map only touches the keys it names: a reading that is
    no longer known must be sent as None, or the last value stays stored."""
    stored = {"summary": {"gpus": 2, "pods": 2, "memoryUsedBytes": 1024, "avgUtilization": 5.0}}
    patch = {"summary": {"gpus": 2, "pods": 2, "memoryUsedBytes": None, "avgUtilization": None}}
    assert changed_fields(current=stored, patch=patch) == patch
    after = {"summary": {"gpus": 2, "pods": 2}}
    assert changed_fields(current=after, patch=patch) == {}


def test_gpu_summary_patch_names_unknown_readings_as_none() -> None:
    gpu_body = {
        "metadata": {"uid": "u-gpu", "namespace": "ml", "name": "g", "generation": 1},
        "spec": {"selector": {"podSelector": {}}},
        "status": {
            "nodes": [
                {
                    "node": "n1",
                    "state": "Degraded",
                    "pods": [
                        {
                            "namespace": "ml",
                            "pod": "p",
                            "gpus": [{"uuid": "GPU-1", "sharing": "exclusive"}],
                        }
                    ],
                }
            ]
        },
    }
    out = reconcile_session(
        kind="GpuTelemetry", body=gpu_body, pods=PODS, node_labels={}, now=at(0)
    )
    summary = out.status["summary"]
    assert summary["gpus"] == 1
    assert summary["memoryUsedBytes"] is None and summary["avgUtilization"] is None


def test_dns_errors_column_is_zero_with_the_probe_running_and_empty_without_it() -> None:
    """.status.dns.errors (DNS-ERRORS) once a node's DNS probe reports, before any query."""
    dns_spec = {**SPEC, "probes": {"dns": {"enabled": True}}}
    report = NodeEntry(node="node-a", state="Running", last_report_time=at(0), probes=("dns",),
                       dns=DnsSummary())  # fmt: skip
    out = reconcile_session(
        kind="TraceSession", body=body(dns_spec), pods=PODS, node_labels={}, now=at(0),
        reports={"node-a": report},
    )  # fmt: skip
    assert out.status["dns"]["errors"] == 0
    # The node's share is there (its probe runs); its zero counters are left out.
    assert out.status["nodes"][0]["dns"] == {}
    assert NodeEntry.model_validate(out.status["nodes"][0]).dns == DnsSummary()
    # no DNS probe asked for: the agents send no share and the column stays empty
    plain = NodeEntry(node="node-a", state="Running", last_report_time=at(0), probes=("flows",))
    out = reconcile_session(
        kind="TraceSession", body=body(SPEC), pods=PODS, node_labels={}, now=at(0),
        reports={"node-a": plain},
    )  # fmt: skip
    assert "dns" not in out.status


def test_the_next_look_catches_a_reporting_round_turning_stale() -> None:
    """With no periodic look for an hour, a session is still looked at once its nodes'
    reports turn stale (4 intervals), one interval after the first of them, so a
    round of reports spread over an interval turns stale in one look."""
    reports = {
        "node-a": NodeEntry(node="node-a", state="Running", last_report_time=at(0)),
        "node-b": NodeEntry(node="node-b", state="Running", last_report_time=at(9)),
    }
    status = {"phase": "Running", "startTime": format_time(at(0))}
    live = reconcile_session(
        kind="TraceSession", body=body({**SPEC, "duration": "2h"}, status), pods=PODS,
        node_labels={}, now=at(10), reports=reports, look_every=3600,
    )  # fmt: skip
    assert live.next_check_in == pytest.approx(60 + 15 - 10)  # node-a stale at 60, + 1 interval
    assert live.status["conditions"][0]["reason"] == "AgentsReporting"
    looked = reconcile_session(
        kind="TraceSession", body=body({**SPEC, "duration": "2h"}, live.status), pods=PODS,
        node_labels={}, now=at(75), reports=reports, look_every=3600,
    )  # fmt: skip
    ready = {c["type"]: c for c in looked.status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "NoHealthyNodes")  # both at once
    assert looked.next_check_in == 3600  # nothing left to turn stale: only the safety net
