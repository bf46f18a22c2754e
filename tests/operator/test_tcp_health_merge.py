"""TCP health in the operator's merge: per-row figures from the socket's node, summed totals."""

from __future__ import annotations

from orb8_common.models import NodeEntry
from orb8_operator.status import merge_flows, trace_status

from .factories import flow, node_entry


def _with_tcp(entry: NodeEntry, **totals: float) -> NodeEntry:
    return entry.model_copy(update=totals)


def test_a_cross_node_flow_keeps_the_health_of_the_node_that_holds_the_socket() -> None:
    # node-a hosts the client socket (it has the health); node-b saw the same
    # packets arrive with more bytes counted, and no socket of its own
    sender = flow("10.0.0.1", "10.0.1.1", nbytes=100, node="node-a").model_copy(
        update={"retransmits": 4, "resets_sent": 0, "resets_received": 1,
                "connect_latency_ms": 12.5}
    )  # fmt: skip
    receiver = flow("10.0.0.1", "10.0.1.1", nbytes=120, node="node-b").model_copy(
        update={"retransmits": 0, "resets_sent": 0, "resets_received": 0}
    )
    merged = merge_flows(
        nodes=[node_entry("node-a", flows=[sender]), node_entry("node-b", flows=[receiver])],
        top_n=10,
    )
    (row,) = merged.flows
    assert row.node == "node-b" and row.bytes == 120  # the byte rule is unchanged
    assert (row.retransmits, row.resets_received, row.connect_latency_ms) == (4, 1, 12.5)


def test_rows_without_health_stay_without_it() -> None:
    udp = flow("10.0.0.1", "10.0.1.1", proto="UDP")
    merged = merge_flows(nodes=[node_entry("node-a", flows=[udp]),
                                node_entry("node-b", flows=[udp])], top_n=10)  # fmt: skip
    assert merged.flows[0].retransmits is None
    assert merged.flows[0].connect_latency_ms is None


def test_summary_sums_node_totals_and_averages_connect_latency() -> None:
    a = _with_tcp(node_entry("node-a"), retransmits=3, resets_sent=1, resets_received=2,
                  connects=2, connect_latency_sum_ms=30.0)  # fmt: skip
    b = _with_tcp(node_entry("node-b"), retransmits=5, resets_sent=0, resets_received=1,
                  connects=1, connect_latency_sum_ms=3.0)  # fmt: skip
    summary = trace_status(nodes=[a, b], top_flows=10, max_alerts=10, matched_pods=2).summary
    assert (summary.retransmits, summary.resets_sent, summary.resets_received) == (8, 1, 3)
    assert summary.connects == 3
    assert summary.connect_latency_ms == 11.0


def test_no_connects_means_no_latency() -> None:
    summary = trace_status(nodes=[node_entry("node-a")], top_flows=10, max_alerts=10,
                           matched_pods=1).summary  # fmt: skip
    assert summary.connects == 0 and summary.connect_latency_ms is None
