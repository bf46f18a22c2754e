"""A session whose spec the agent refuses gets a Failed node entry naming the field.

The entry is built with the contract models and read back the way the
operator reads NodeAgentConfig status; its lifecycle then turns the session
Degraded with the node's message, as for any other node that cannot serve.
(tests/e2e/test_unreadable_spec.py shows the agent writing it for real.)
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orb8_agent.control.settings import Unreadable, unreadable_report
from orb8_common.errors import InvalidSpecError
from orb8_common.models import (
    AgentSession,
    NodeAgentConfigStatus,
    parse_gpu_telemetry_spec,
    parse_trace_session_spec,
    to_wire,
)
from orb8_operator.lifecycle import evaluate

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


def _refusal(kind: str, spec: object) -> str:
    parse = parse_trace_session_spec if kind == "TraceSession" else parse_gpu_telemetry_spec
    with pytest.raises(InvalidSpecError) as err:
        parse(spec)
    return str(err.value)


@pytest.mark.parametrize(
    ("kind", "spec", "field"),
    [
        ("GpuTelemetry", {"interval": "1d"}, "spec.interval"),
        ("GpuTelemetry", {"source": {"dcgmExporter": {"port": 0}}},
         "spec.source.dcgmExporter.port"),
        ("GpuTelemetry", {"alerts": {"memoryUsedPercent": 101}}, "spec.alerts.memoryUsedPercent"),
        ("TraceSession", {"probes": {"network": {"enabled": True, "topFlows": -1}}},
         "spec.probes.network.topFlows"),
    ],
)  # fmt: skip
def test_the_entry_is_failed_names_the_field_and_reads_back(
    kind: str, spec: object, field: str
) -> None:
    session = AgentSession(uid="u1", kind=kind, namespace="ml", name="s", generation=3)  # type: ignore[arg-type]
    error = _refusal(kind, spec)
    report = unreadable_report(
        node="node-a", unreadable=Unreadable(session, 3, error), now=NOW.timestamp()
    )
    status = NodeAgentConfigStatus.model_validate({"reports": [to_wire(report)]})
    (back,) = status.reports
    entry = back.entry
    assert entry is not None and back.kind == kind and back.generation == 3
    assert (back.trace is None) == (kind == "GpuTelemetry")
    assert entry.state == "Failed" and entry.node == "node-a"
    assert field in entry.message and "\n" not in entry.message, entry.message
    assert entry.last_report_time == NOW

    life = evaluate(
        generation=3, spec_error=None, duration_seconds=None, now=NOW,
        previous_phase="Running", start_time=NOW, completion_time=None, conditions=(),
        nodes=[entry], matched_pods=1, stale_after=30,
    )  # fmt: skip
    degraded = {c.type: c for c in life.conditions}["Degraded"]
    assert degraded.status == "True" and field in degraded.message, degraded


def test_a_long_refusal_stays_one_bounded_line() -> None:
    session = AgentSession(uid="u1", kind="GpuTelemetry", namespace="ml", name="s")
    report = unreadable_report(
        node="node-a", unreadable=Unreadable(session, 1, "spec.interval: " + "x" * 5000), now=0
    )
    assert report.gpu is not None and len(report.gpu.message) == 1024
    assert report.gpu.message.startswith("spec not served by this agent: spec.interval: ")
