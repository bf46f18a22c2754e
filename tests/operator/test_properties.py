"""Properties of the status merge that must hold for any node reports."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from orb8_common.models import (
    Alert,
    Flow,
    LabelSelector,
    LabelSelectorRequirement,
    NodeEntry,
    Selector,
    to_wire,
)
from orb8_operator.resolve import resolve_targets
from orb8_operator.selectors import matches_requirement
from orb8_operator.status import (
    SEVERITY_RANK,
    bound_status,
    flow_key,
    json_size,
    merge_alerts,
    trace_status,
)

from .factories import alert, flow, node_entry, pod

NODES = ["node-a", "node-b", "node-c"]

# A small address space so that the same 5-tuple often shows up on several nodes.
flows_st = st.builds(
    lambda src, dst, dport, proto, nbytes, packets, node: flow(
        f"10.0.0.{src}",
        f"10.0.0.{dst}",
        sport=40000,
        dport=dport,
        proto=proto,
        nbytes=nbytes,
        packets=packets,
        node=node,
    ),
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from([53, 80]),
    st.sampled_from(["TCP", "UDP"]),
    st.integers(0, 10**9),
    st.integers(0, 10**6),
    st.sampled_from(NODES),
)


def _nodes(flows: list[Flow], alerts: list[Alert] | None = None) -> list[NodeEntry]:
    by_node: dict[str, list[Flow]] = defaultdict(list)
    for f in flows:
        by_node[f.node].append(f)
    alerts_by_node: dict[str, list[Alert]] = defaultdict(list)
    for a in alerts or []:
        alerts_by_node[a.node].append(a)
    # One agent lists each 5-tuple once.
    return [
        node_entry(
            n,
            flows=list({flow_key(flow=f): f for f in by_node[n]}.values()),
            alerts=alerts_by_node[n],
        )
        for n in NODES
    ]


@settings(max_examples=150, deadline=None)
@given(st.lists(flows_st, max_size=40), st.integers(0, 20))
def test_top_n_sorted_bounded_and_summary_counts_unique_flows(flows: list[Flow], n: int) -> None:
    nodes = _nodes(flows)
    merged = trace_status(nodes=nodes, top_flows=n, max_alerts=10, matched_pods=0)
    assert len(merged.flows) <= n
    sizes = [f.bytes for f in merged.flows]
    assert sizes == sorted(sizes, reverse=True)
    keys = [flow_key(flow=f) for f in merged.flows]
    assert len(keys) == len(set(keys))
    # Each 5-tuple counts once, with its biggest observation.
    best: dict[tuple[object, ...], int] = {}
    for entry in nodes:
        for f in entry.flows:
            key = flow_key(flow=f)
            best[key] = max(best.get(key, 0), f.bytes)
    assert merged.summary.flows == len(best)
    assert merged.summary.bytes == sum(best.values())
    assert [f.bytes for f in merged.flows] == sorted(best.values(), reverse=True)[:n]


alerts_st = st.builds(
    lambda p, sc, count, sev, node: alert(p, sc, count=count, severity=sev, node=node),
    st.sampled_from(["web-1", "web-2"]),
    st.sampled_from(["ptrace", "mount", "bpf"]),
    st.integers(0, 1000),
    st.sampled_from(list(SEVERITY_RANK)),
    st.sampled_from(NODES),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(alerts_st, max_size=30), st.integers(0, 8))
def test_alerts_capped_sorted_and_counts_add_up(alerts: list[Alert], cap: int) -> None:
    nodes = _nodes([], alerts)
    merged = merge_alerts(nodes=nodes, max_alerts=cap)
    assert len(merged.alerts) <= cap
    order = [(-SEVERITY_RANK[a.severity], -a.count) for a in merged.alerts]
    assert order == sorted(order)
    uncapped = merge_alerts(nodes=nodes, max_alerts=10**6)
    assert sum(a.count for a in uncapped.alerts) == sum(a.count for a in alerts)
    assert uncapped.unique + uncapped.duplicates == len(alerts)


@settings(max_examples=40, deadline=None)
@given(st.lists(flows_st, max_size=60), st.integers(2_000, 40_000))
def test_bound_status_fits_whenever_lists_can_shrink(flows: list[Flow], budget: int) -> None:
    status = {
        "phase": "Running",
        "flows": [to_wire(f) for f in flows],
        "nodes": [{"node": n, "flows": [to_wire(f) for f in flows]} for n in NODES],
    }
    bounded = bound_status(status=status, budget=budget)
    assert bounded.size == json_size(value=bounded.status)
    assert bounded.size <= max(
        budget,
        json_size(
            value={**status, "flows": [], "nodes": [{"node": n, "flows": []} for n in NODES]}
        ),
    )


label_values = st.sampled_from(["a", "b", "c"])
label_sets = st.dictionaries(st.sampled_from(["app", "tier", "zone"]), label_values, max_size=3)
requirements = st.builds(
    lambda key, op, values: LabelSelectorRequirement.model_validate(
        {"key": key, "operator": op, "values": values if op in ("In", "NotIn") else []}
    ),
    st.sampled_from(["app", "tier", "zone"]),
    st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
    st.lists(label_values, min_size=1, max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(label_sets, st.sampled_from(NODES), st.booleans()), max_size=12),
    label_sets,
    st.lists(requirements, max_size=3),
)
def test_resolve_partitions_exactly_the_matching_targets(
    specs: list[tuple[dict[str, str], str, bool]],
    match_labels: dict[str, str],
    reqs: list[LabelSelectorRequirement],
) -> None:
    pods = [
        pod(f"p{i}", node=node, labels=labels, phase="Running" if running else "Succeeded")
        for i, (labels, node, running) in enumerate(specs)
    ]
    selector = Selector(
        pod_selector=LabelSelector(match_labels=match_labels, match_expressions=tuple(reqs))
    )
    targets = resolve_targets(
        selector=selector, session_namespace="shop", pods=pods, node_labels={}
    )
    chosen = [p for ps in targets.values() for p in ps]
    assert len(chosen) == len({p.uid for p in chosen})
    for node, group in targets.items():
        assert group and all(p.node == node for p in group)
        assert [p.name for p in group] == sorted(p.name for p in group)
    expected = {
        p.uid
        for p in pods
        if p.phase == "Running"
        and all(p.label_map.get(k) == v for k, v in match_labels.items())
        and all(matches_requirement(requirement=r, labels=p.label_map) for r in reqs)
    }
    assert {p.uid for p in chosen} == expected
