"""The status line and count for pods whose kernel flow filter was refused (pure builders)."""

from __future__ import annotations

from orb8_agent.control.flowfilters import UNAPPLIED_NAMED, unapplied_problem
from orb8_agent.control.report import trace_node_entry
from orb8_common.models import AgentPod, FlowFilter, NodeEntry, to_wire

FULL = "BPF map flow_filter_ports is full"


def _pods(count: int) -> list[AgentPod]:
    return [AgentPod(uid=f"u{i}", namespace="shop", name=f"pod-{i}") for i in range(count)]


def test_one_refused_pod_is_named_with_the_reason() -> None:
    count, line = unapplied_problem(
        filter_=FlowFilter(ports=(53,)), pods=_pods(3), unapplied={"u1": FULL, "other": FULL}
    )
    assert count == 1
    assert line == (
        "kernel flow filter not applied on shop/pod-1 (BPF map flow_filter_ports is full): "
        "counting all packets there, rows still filtered"
    )


def test_many_refused_pods_name_a_few_and_count_the_rest() -> None:
    pods = _pods(UNAPPLIED_NAMED + 4)
    unapplied = {p.uid: FULL for p in pods}
    unapplied["u0"] = "writing BPF map flow_filter_cidr4 failed: EPERM"
    count, line = unapplied_problem(
        filter_=FlowFilter(cidrs=("10.0.0.0/8",)), pods=pods, unapplied=unapplied
    )
    assert count == UNAPPLIED_NAMED + 4
    assert "shop/pod-0, shop/pod-1, shop/pod-2 (+4 more)" in line
    # each distinct reason once
    assert f"({FULL}; writing BPF map flow_filter_cidr4 failed: EPERM)" in line


def test_nothing_to_say_without_a_filter_or_without_refused_pods() -> None:
    # a session that does not filter asked the kernel for nothing: nothing is missing
    assert unapplied_problem(filter_=FlowFilter(), pods=_pods(2), unapplied={"u0": FULL}) == (0, "")
    assert unapplied_problem(filter_=FlowFilter(ports=(80,)), pods=_pods(2), unapplied={}) == (
        0, "",
    )  # fmt: skip


def test_node_entry_carries_the_count_on_the_wire() -> None:
    entry = trace_node_entry(
        node="n", state="Degraded", probes=["flows"], message="m", now=1.0, flows=None,
        top_flows=0, alerts=None, max_alerts=0, pods_by_ip={}, dropped_events=0,
        unfiltered_pods=2,
    )  # fmt: skip
    wire = to_wire(entry)
    assert wire["unfilteredPods"] == 2
    assert NodeEntry.model_validate(wire).unfiltered_pods == 2
