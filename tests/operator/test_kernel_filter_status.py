"""A node's refused kernel flow filter in the session's summary and Degraded condition."""

from __future__ import annotations

from orb8_common.models import to_wire
from orb8_operator.lifecycle import evaluate
from orb8_operator.nodes import node_summaries
from orb8_operator.status import trace_status

from .factories import at, node_entry

LINE = (
    "kernel flow filter not applied on shop/web-1 (BPF map flow_filter_ports is full): "
    "counting all packets there, rows still filtered"
)


def test_summary_adds_unfiltered_pods_of_active_nodes() -> None:
    nodes = [
        node_entry("a", state="Degraded", message=LINE).model_copy(update={"unfiltered_pods": 1}),
        node_entry("b").model_copy(update={"unfiltered_pods": 2}),
        # a node that stopped serving the session no longer counts anything for it
        node_entry("c", state="Stopped").model_copy(update={"unfiltered_pods": 5}),
        node_entry("d"),
    ]
    summary = trace_status(nodes=nodes, top_flows=10, max_alerts=10, matched_pods=4).summary
    assert summary.unfiltered_pods == 3
    assert to_wire(summary)["unfilteredPods"] == 3
    assert [s.get("unfilteredPods", 0) for s in node_summaries(entries=nodes)] == [1, 2, 5, 0]


def test_degraded_condition_says_which_pod_counts_everything() -> None:
    nodes = [
        node_entry("a"),
        node_entry("b", state="Degraded", message=LINE).model_copy(update={"unfiltered_pods": 1}),
    ]
    result = evaluate(
        generation=1, spec_error=None, duration_seconds=None, now=at(0), previous_phase="Running",
        start_time=at(0), completion_time=None, conditions=(), nodes=nodes, matched_pods=2,
    )  # fmt: skip
    assert result.phase == "Running"
    degraded = next(c for c in result.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "NodesDegraded")
    assert degraded.message == f"b: Degraded ({LINE})"
    ready = next(c for c in result.conditions if c.type == "Ready")
    assert ready.status == "True"
