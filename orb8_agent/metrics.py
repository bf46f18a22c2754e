"""The agent's Prometheus metrics, read from the agent's state at scrape time.

Labels are bounded by the number of sessions, never by pods or flows: a
per-pod label on a high-rate metric is how metrics stores get blown up.
Series of a finished session disappear with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from orb8_agent.control.agent import NodeAgent

SESSION_LABELS = ["namespace", "session"]


class AgentCollector(Collector):
    def __init__(self, *, agent: NodeAgent) -> None:
        self._agent = agent

    def collect(self) -> Iterator[Metric]:
        flow_bytes = CounterMetricFamily(
            "orb8_flow_bytes", "Bytes the flow probe counted for a session on this node",
            labels=SESSION_LABELS,
        )  # fmt: skip
        flow_packets = CounterMetricFamily(
            "orb8_flow_packets", "Packets the flow probe counted for a session on this node",
            labels=SESSION_LABELS,
        )  # fmt: skip
        alerts = CounterMetricFamily(
            "orb8_syscall_alerts", "Alert-list syscalls seen for a session on this node",
            labels=SESSION_LABELS,
        )  # fmt: skip
        for state in self._agent.sessions():
            labels = [state.target.namespace, state.target.name]
            if state.flows is not None:
                flow_bytes.add_metric(labels, state.flows.bytes)
                flow_packets.add_metric(labels, state.flows.packets)
            if state.alerts is not None:
                alerts.add_metric(labels, state.alerts.count)
        yield flow_bytes
        yield flow_packets
        yield alerts
        yield GaugeMetricFamily(
            "orb8_active_sessions", "Sessions this node is working on",
            value=len(self._agent.sessions()),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "orb8_attached_interfaces", "Host veths the flow probe is attached to",
            value=len(self._agent.attached_interfaces),
        )  # fmt: skip
        yield CounterMetricFamily(
            "orb8_dropped_events", "Events the kernel side dropped (rate cap or full ring buffer)",
            value=self._agent.dropped_events(),
        )  # fmt: skip


def build_registry(*, agent: NodeAgent) -> tuple[CollectorRegistry, Counter]:
    """A registry with the agent's collector and a counter of status writes by result."""
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent=agent))
    status_writes = Counter(
        "orb8_status_writes", "Status writes to the Kubernetes API by result", ["result"],
        registry=registry,
    )  # fmt: skip
    return registry, status_writes
