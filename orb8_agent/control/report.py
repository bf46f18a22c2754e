"""Build this node's entry of a session's ``status.nodes`` (see docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orb8_agent.control.alerts import SessionAlerts, severity_of
from orb8_agent.control.flows import FlowKey, FlowStats, SessionFlows

PROTOCOL_PORTLESS = frozenset({"ICMP", "ICMPv6"})


def rfc3339(*, at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PodName:
    namespace: str
    name: str


def _endpoint(*, ip: str, port: int, protocol: str, pods: Mapping[str, PodName]) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"ip": ip}
    if protocol not in PROTOCOL_PORTLESS:
        endpoint["port"] = port
    pod = pods.get(ip)
    if pod is not None:
        endpoint["namespace"] = pod.namespace
        endpoint["pod"] = pod.name
    return endpoint


def flow_row(
    *, key: FlowKey, stats: FlowStats, node: str, pods_by_ip: Mapping[str, PodName]
) -> dict[str, Any]:
    src_ip, src_port, dst_ip, dst_port, protocol = key
    return {
        "source": _endpoint(ip=src_ip, port=src_port, protocol=protocol, pods=pods_by_ip),
        "destination": _endpoint(ip=dst_ip, port=dst_port, protocol=protocol, pods=pods_by_ip),
        "protocol": protocol,
        "bytes": stats.bytes,
        "packets": stats.packets,
        "firstSeen": rfc3339(at=stats.first_seen),
        "lastSeen": rfc3339(at=stats.last_seen),
        "node": node,
    }


def trace_node_entry(
    *,
    node: str,
    state: str,
    probes: Sequence[str],
    message: str,
    now: float,
    flows: SessionFlows | None,
    top_flows: int,
    alerts: SessionAlerts | None,
    pods_by_ip: Mapping[str, PodName],
    dropped_events: int,
) -> dict[str, Any]:
    """The bounded ``status.nodes[]`` entry this agent applies for one TraceSession."""
    entry: dict[str, Any] = {
        "node": node,
        "state": state,
        "probes": sorted(probes),
        "message": message,
        "lastReportTime": rfc3339(at=now),
        "flowCount": flows.flow_count if flows else 0,
        "bytes": flows.bytes if flows else 0,
        "packets": flows.packets if flows else 0,
        "alertCount": alerts.count if alerts else 0,
        "droppedEvents": dropped_events + (alerts.suppressed if alerts else 0),
        "flows": [
            flow_row(key=key, stats=stats, node=node, pods_by_ip=pods_by_ip)
            for key, stats in (flows.top(limit=top_flows) if flows else [])
        ],
        "alerts": [
            {
                "namespace": row.ref.namespace,
                "pod": row.ref.pod,
                "container": row.ref.container,
                "node": node,
                "syscall": row.syscall,
                "count": row.count,
                "severity": severity_of(syscall=row.syscall),
                "reason": f"{row.syscall} is on the session's alert list",
                "firstSeen": rfc3339(at=row.first_seen),
                "lastSeen": rfc3339(at=row.last_seen),
                "process": {"pid": row.pid, "comm": row.comm},
            }
            for row in (alerts.rows() if alerts else [])
        ],
    }
    return entry
