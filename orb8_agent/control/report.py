"""Build this node's share of a TraceSession (a :class:`NodeEntry`, see docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from orb8_agent.control.alerts import SessionAlerts
from orb8_agent.control.flows import FlowKey, FlowStats, SessionFlows, TcpTotals
from orb8_common.models import (
    Alert,
    AlertProcess,
    Flow,
    FlowEndpoint,
    NodeEntry,
    NodeState,
    Protocol,
    format_epoch,
)

PROTOCOL_PORTLESS = frozenset({"ICMP", "ICMPv6"})


@dataclass(frozen=True)
class PodName:
    namespace: str
    name: str


def _endpoint(*, ip: str, port: int, protocol: str, pods: Mapping[str, PodName]) -> FlowEndpoint:
    pod = pods.get(ip)
    return FlowEndpoint(
        ip=ip,
        port=None if protocol in PROTOCOL_PORTLESS else port,
        namespace=pod.namespace if pod else "",
        pod=pod.name if pod else "",
    )


def flow_row(
    *, key: FlowKey, stats: FlowStats, node: str, pods_by_ip: Mapping[str, PodName],
    tcp_health: bool = False,
) -> Flow:  # fmt: skip
    src_ip, src_port, dst_ip, dst_port, protocol = key
    health: dict[str, Any] = {}
    if tcp_health and protocol == "TCP":
        latency = stats.connect_latency_ms
        health = {
            "retransmits": stats.retransmits,
            "resets_sent": stats.resets_sent,
            "resets_received": stats.resets_received,
            "connect_latency_ms": None if latency is None else round(latency, 3),
        }
    source = _endpoint(ip=src_ip, port=src_port, protocol=protocol, pods=pods_by_ip)
    destination = _endpoint(ip=dst_ip, port=dst_port, protocol=protocol, pods=pods_by_ip)
    if stats.host_pod is not None:
        # a hostNetwork pod's end carries the node's IP; the cgroup named the pod
        namespace, name, side = stats.host_pod
        named = {"namespace": namespace, "pod": name}
        if side == "source":
            source = source.model_copy(update=named)
        else:
            destination = destination.model_copy(update=named)
    backend = None
    if stats.backend is not None:
        owner = pods_by_ip.get(stats.backend.ip)
        backend = FlowEndpoint(
            ip=stats.backend.ip,
            port=stats.backend.port,
            namespace=owner.namespace if owner else stats.backend.namespace,
            pod=owner.name if owner else stats.backend.pod,
        )
    return Flow(
        source=source,
        destination=destination,
        service=stats.service,
        backend=backend,
        protocol=cast(Protocol, protocol),  # the router passes only the spec's protocols
        bytes=stats.bytes,
        packets=stats.packets,
        first_seen=_at(stats.first_seen),
        last_seen=_at(stats.last_seen),
        node=node,
        **health,
    )


def trace_node_entry(
    *,
    node: str,
    state: NodeState,
    probes: Sequence[str],
    message: str,
    now: float,
    flows: SessionFlows | None,
    top_flows: int,
    alerts: SessionAlerts | None,
    max_alerts: int,
    pods_by_ip: Mapping[str, PodName],
    dropped_events: int,
    tcp_health: bool = False,
    unfiltered_pods: int = 0,
) -> NodeEntry:
    """This node's bounded entry for one TraceSession: totals, top flows, alerts."""
    alert_rows = alerts.rows() if alerts else []
    return NodeEntry.model_validate(
        {
            "node": node,
            "state": state,
            "probes": sorted(probes),
            "message": message,
            "lastReportTime": format_epoch(now),
            "flowCount": flows.flow_count if flows else 0,
            "bytes": flows.bytes if flows else 0,
            "packets": flows.packets if flows else 0,
            "alertCount": alerts.count if alerts else 0,
            "droppedEvents": dropped_events + (alerts.suppressed if alerts else 0),
            "unfilteredPods": unfiltered_pods,
            **(_tcp_totals(flows.tcp) if flows else {}),
            "flows": [
                flow_row(
                    key=key, stats=stats, node=node, pods_by_ip=pods_by_ip, tcp_health=tcp_health
                )
                for key, stats in (flows.top(limit=top_flows) if flows else [])
            ],
            "alerts": [
                Alert(
                    namespace=row.ref.namespace,
                    pod=row.ref.pod,
                    container=row.ref.container,
                    node=node,
                    syscall=row.syscall,
                    count=row.count,
                    severity=row.row_severity,
                    reason=row.row_reason,
                    first_seen=_at(row.first_seen),
                    last_seen=_at(row.last_seen),
                    process=AlertProcess(pid=row.pid, comm=row.comm) if row.pid else None,
                    rate_per_second=row.rate,
                    learned_rate_per_second=row.learned_rate,
                )
                for row in alert_rows[:max_alerts]
            ],
        }
    )


def _tcp_totals(tcp: TcpTotals) -> dict[str, Any]:
    return {
        "retransmits": tcp.retransmits,
        "resetsSent": tcp.resets_sent,
        "resetsReceived": tcp.resets_received,
        "connects": tcp.connects,
        "connectLatencySumMs": round(tcp.connect_ms_total, 3),
    }


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
