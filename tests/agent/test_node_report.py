"""The agent's whole report is bounded where it is built."""

from __future__ import annotations

from collections.abc import Callable

from orb8_agent.control.node_report import fit_reports, wire_size
from orb8_common.models import Flow, FlowEndpoint, NodeEntry, SessionReport

Build = Callable[[float], list[SessionReport]]


def _flow(i: int, flows: int) -> Flow:
    return Flow(
        source=FlowEndpoint(namespace="shop", pod=f"pod-{i}", ip="10.0.0.1", port=40000 + i),
        destination=FlowEndpoint(ip="10.96.0.1", port=443),
        protocol="TCP",
        bytes=1000 * (flows - i),
        packets=10,
        node="node-a",
    )


def _builder(*, sessions: int, flows: int) -> tuple[Build, list[float]]:
    """A build(scale) like the agent's: each session lists int(flows * scale) flows."""
    rows = tuple(_flow(i, flows) for i in range(flows))
    asked: list[float] = []

    def build(scale: float) -> list[SessionReport]:
        asked.append(scale)
        keep = rows[: int(flows * scale)]
        entry = NodeEntry(
            node="node-a", state="Running", bytes=10**9, packets=10**6, flow_count=flows,
            flows=keep,
        )  # fmt: skip
        return [
            SessionReport(
                uid=f"uid-{s}", kind="TraceSession", namespace="shop", name=f"s-{s}", trace=entry
            )
            for s in range(sessions)
        ]

    return build, asked


def test_a_report_that_fits_is_written_as_built() -> None:
    build, asked = _builder(sessions=3, flows=5)
    wire, scale = fit_reports(build=build, budget=256 * 1024)
    assert scale == 1.0 and asked == [1.0]
    assert [len(w["trace"]["flows"]) for w in wire] == [5, 5, 5]  # type: ignore[index]


def test_an_oversized_report_shrinks_every_list_by_one_factor_and_keeps_totals() -> None:
    build, asked = _builder(sessions=200, flows=50)
    budget = 200 * 1024
    assert wire_size(value=[r.model_dump(mode="json") for r in build(1.0)]) > budget
    wire, scale = fit_reports(build=build, budget=budget)
    assert wire_size(value=wire) <= budget
    assert 0 < scale < 1 and len(asked) > 2
    lengths = {len(w["trace"]["flows"]) for w in wire}  # type: ignore[index]
    assert len(lengths) == 1 and 0 < lengths.pop() < 50  # the same cut for every session
    assert all(w["trace"]["bytes"] == 10**9 for w in wire)  # type: ignore[index]
