from __future__ import annotations

from typing import Any

from orb8_common.models import GpuNodeEntry, NodeEntry, format_time, to_wire
from orb8_operator.status import (
    STATUS_BUDGET_BYTES,
    bound_status,
    flow_key,
    gpu_status,
    json_size,
    merge_alerts,
    merge_flows,
    merge_gpu_alerts,
    merge_gpu_pods,
    parse_node_entries,
    trace_status,
)

from .factories import alert, at, flow, node_entry


def test_cross_node_flow_counted_once_in_summary() -> None:
    # checkout (node-a) → cart (node-b): both agents see the same 5-tuple.
    egress = flow(
        "10.0.1.1",
        "10.0.2.1",
        nbytes=1000,
        packets=10,
        node="node-a",
        src_pod="checkout",
        first=2,
        last=20,
    )
    ingress = flow(
        "10.0.1.1",
        "10.0.2.1",
        nbytes=990,
        packets=10,
        node="node-b",
        dst_pod="cart",
        first=1,
        last=19,
    )
    other = flow(
        "10.0.1.1",
        "8.8.8.8",
        sport=5353,
        dport=53,
        proto="UDP",
        nbytes=50,
        node="node-a",
        src_pod="checkout",
    )
    nodes = [
        node_entry("node-a", flows=[egress, other]),
        node_entry("node-b", flows=[ingress]),
    ]
    merged = trace_status(nodes=nodes, top_flows=50, max_alerts=100, matched_pods=2)
    assert merged.summary.flows == 2
    assert merged.summary.bytes == 1050
    assert merged.summary.packets == 11
    assert merged.summary.nodes == 2
    assert merged.summary.pods == 2
    top = merged.flows[0]
    # Counted from the observation with more bytes, times widened, both pod names known.
    assert (top.node, top.bytes) == ("node-a", 1000)
    assert top.first_seen == at(1) and top.last_seen == at(20)
    assert (top.source.pod, top.destination.pod) == ("checkout", "cart")
    assert [f.bytes for f in merged.flows] == [1000, 50]


def test_summary_uses_node_totals_beyond_the_listed_flows() -> None:
    a = node_entry(
        "node-a",
        flows=[flow("1.1.1.1", "2.2.2.2", nbytes=500)],
        flow_count=40,
        nbytes=9000,
        packets=90,
    )
    b = node_entry(
        "node-b",
        flows=[flow("1.1.1.1", "2.2.2.2", nbytes=400, node="node-b")],
        flow_count=7,
        nbytes=1000,
        packets=12,
    )
    merged = trace_status(nodes=[a, b], top_flows=50, max_alerts=100, matched_pods=0)
    assert merged.summary.flows == 46
    assert merged.summary.bytes == 9600
    assert merged.summary.packets == 101


def test_top_n_sorted_and_capped() -> None:
    flows = [flow("10.0.0.1", "10.0.0.2", sport=1000 + i, nbytes=i * 10) for i in range(1, 21)]
    merged = merge_flows(nodes=[node_entry("node-a", flows=flows)], top_n=5)
    assert [f.bytes for f in merged.flows] == [200, 190, 180, 170, 160]
    assert merged.unique == 20 and merged.duplicates == 0


def test_icmp_flows_without_ports_and_protocol_in_key() -> None:
    icmp = flow("10.0.0.1", "10.0.0.2", sport=None, dport=None, proto="ICMP")
    tcp = flow("10.0.0.1", "10.0.0.2", sport=None, dport=None, proto="TCP")
    assert flow_key(flow=icmp) == ("ICMP", "10.0.0.1", -1, "10.0.0.2", -1)
    merged = merge_flows(nodes=[node_entry("node-a", flows=[icmp, tcp])], top_n=10)
    assert merged.unique == 2


def test_alerts_merge_sum_sort_and_cap() -> None:
    a = node_entry(
        "node-a",
        alerts=[
            alert("web-1", "ptrace", count=3, first=5, last=10),
            alert("web-1", "mount", count=1, severity="Critical"),
            alert("web-1", "bpf", count=9, severity="Medium"),
        ],
    )
    # The same (pod, container, syscall) again, e.g. reported after a restart of the agent.
    b = node_entry(
        "node-b",
        alerts=[
            alert("web-1", "ptrace", count=2, first=1, last=30, node="node-b", severity="Critical")
        ],
    )
    merged = merge_alerts(nodes=[a, b], max_alerts=10)
    assert [(x.syscall, x.count, x.severity) for x in merged.alerts] == [
        ("ptrace", 5, "Critical"),
        ("mount", 1, "Critical"),
        ("bpf", 9, "Medium"),
    ]
    ptrace = merged.alerts[0]
    assert ptrace.first_seen == at(1) and ptrace.last_seen == at(30)
    assert ptrace.node == "node-b"  # from the newest observation
    assert merged.duplicates == 1
    capped = merge_alerts(nodes=[a, b], max_alerts=2)
    assert [x.syscall for x in capped.alerts] == ["ptrace", "mount"]
    summary = trace_status(nodes=[a, b], top_flows=1, max_alerts=2, matched_pods=1).summary
    assert summary.alerts == 3


def test_parse_node_entries_skips_bad_and_keeps_newest() -> None:
    raw: list[Any] = [
        {"node": "node-b", "state": "Running", "lastReportTime": "2026-11-29T05:00:00Z"},
        {"node": "node-a", "state": "Exploded"},
        {"node": "node-b", "state": "Degraded", "lastReportTime": "2026-11-29T05:00:30Z"},
        "not a dict",
    ]
    entries, problems = parse_node_entries(raw=raw, model=NodeEntry)
    assert [(e.node, e.state) for e in entries] == [("node-b", "Degraded")]
    assert len(problems) == 2
    assert problems[0].startswith("status.nodes[1] (node-a): state:")
    assert problems[1].startswith("status.nodes[3] (?)")


def _gpu_node(
    node: str, rows: list[dict[str, Any]], alerts: list[dict[str, Any]] | None = None
) -> GpuNodeEntry:
    return GpuNodeEntry.model_validate(
        {"node": node, "state": "Running", "source": "nvml", "pods": rows, "alerts": alerts or []}
    )


def _gpu(uuid: str, util: float, used: int, total: int = 100, t: float = 0) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "utilizationPercent": util,
        "memoryUsedBytes": used,
        "memoryTotalBytes": total,
        "lastUpdated": format_time(at(t)),
    }


def test_gpu_merge_counts_shared_devices_once() -> None:
    # Two pods time-share GPU-1 on node-g; a third pod owns GPU-2.
    g = _gpu_node(
        "node-g",
        [
            {"namespace": "ml", "pod": "a", "container": "main", "gpus": [_gpu("GPU-1", 80, 40)]},
            {"namespace": "ml", "pod": "b", "container": "main", "gpus": [_gpu("GPU-1", 80, 40)]},
            {"namespace": "ml", "pod": "c", "container": "main", "gpus": [_gpu("GPU-2", 20, 10)]},
        ],
    )
    merged = gpu_status(nodes=[g])
    assert [(r.pod, r.node) for r in merged.pods] == [
        ("a", "node-g"),
        ("b", "node-g"),
        ("c", "node-g"),
    ]
    assert to_wire(merged.summary) == {
        "gpus": 2,
        "pods": 3,
        "avgUtilization": 50.0,
        "memoryUsedBytes": 50,
    }
    assert merged.alerts == ()


def test_gpu_rows_union_devices_newest_reading_wins() -> None:
    old = _gpu_node("node-g", [{"namespace": "ml", "pod": "a", "gpus": [_gpu("GPU-1", 10, 1)]}])
    new = _gpu_node(
        "node-h",
        [
            {
                "namespace": "ml",
                "pod": "a",
                "gpus": [_gpu("GPU-1", 90, 9, t=30), _gpu("GPU-0", 5, 1)],
            }
        ],
    )
    (row,) = merge_gpu_pods(nodes=[old, new])
    assert [(d.uuid, d.utilization_percent) for d in row.gpus] == [("GPU-0", 5), ("GPU-1", 90)]


def _gpu_alert(kind: str, pod: str, first: float, last: float, value: float) -> dict[str, Any]:
    return {
        "namespace": "ml",
        "pod": pod,
        "container": "main",
        "gpu": "GPU-1",
        "kind": kind,
        "message": f"{kind} {value}",
        "value": value,
        "firstSeen": format_time(at(first)),
        "lastSeen": format_time(at(last)),
    }


def test_gpu_alerts_merge_by_pod_gpu_and_kind() -> None:
    a = _gpu_node(
        "node-g",
        [],
        [_gpu_alert("Idle", "x", 0, 10, 1.0), _gpu_alert("MemoryHigh", "y", 5, 6, 95.0)],
    )
    b = _gpu_node("node-h", [], [_gpu_alert("Idle", "x", 3, 20, 2.0)])
    merged = merge_gpu_alerts(nodes=[a, b])
    assert [(m.kind, m.pod) for m in merged] == [("MemoryHigh", "y"), ("Idle", "x")]
    idle = merged[1]
    assert (idle.first_seen, idle.last_seen, idle.value, idle.node) == (
        at(0),
        at(20),
        2.0,
        "node-h",
    )
    assert merge_gpu_alerts(nodes=[a, b], limit=1) == merged[:1]


def test_bound_status_leaves_small_status_alone() -> None:
    status = {"phase": "Running", "nodes": [{"node": "a", "flows": [{"bytes": 1}]}]}
    bounded = bound_status(status=status)
    assert bounded.status == status
    assert not bounded.nodes_trimmed and not bounded.lists_trimmed
    assert bounded.size == json_size(value=status)


def test_bound_status_trims_per_node_lists_first() -> None:
    big_flows = [
        to_wire(flow("10.0.0.1", "10.0.0.2", sport=i, nbytes=i, node="node-a"))
        for i in range(1, 1001)
    ]
    status: dict[str, Any] = {
        "phase": "Running",
        "flows": big_flows[-50:],
        "nodes": [
            {"node": "node-a", "flows": big_flows},
            {"node": "node-b", "flows": big_flows[:600]},
        ],
    }
    assert json_size(value=status) > 256 * 1024
    bounded = bound_status(status=status)
    assert bounded.size <= STATUS_BUDGET_BYTES
    assert bounded.size == json_size(value=bounded.status)
    assert bounded.nodes_trimmed and not bounded.lists_trimmed
    assert len(bounded.status["flows"]) == 50  # the merged top list is untouched
    kept = bounded.status["nodes"][0]["flows"]
    assert 0 < len(kept) < 1000
    # The biggest flows survive the cut.
    assert kept[0]["bytes"] == 1000
    assert min(f["bytes"] for f in kept) > 1000 - len(kept) - 1
    assert len(status["nodes"][0]["flows"]) == 1000  # input not modified


def test_bound_status_cuts_top_level_lists_when_nodes_are_empty() -> None:
    status = {"flows": [{"pad": "x" * 1000} for _ in range(100)], "nodes": [{"node": "a"}]}
    bounded = bound_status(status=status, budget=20_000)
    assert bounded.size <= 20_000
    assert bounded.lists_trimmed and not bounded.nodes_trimmed
    unshrinkable = bound_status(status={"message": "x" * 100}, budget=10)
    assert unshrinkable.size > 10  # nothing to cut: reported, not looped on
