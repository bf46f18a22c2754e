"""Merge the agents' ``status.nodes[]`` entries into the operator-owned,
cluster-wide status fields, and keep the whole status bounded.

Flow dedupe rule: a flow between pods on two nodes is seen by both nodes'
agents (egress at the source, ingress at the destination). Observations with
the same 5-tuple (protocol, source ip/port, destination ip/port) are one flow.
The observation with the most bytes (then packets, then the smallest node
name) is counted; the others are subtracted from the summary. Both ends count
the same packets, so the larger count is the one that lost fewer. The merged
row takes the earliest firstSeen, the latest lastSeen, and fills a missing
pod name on either endpoint from the other observation.

Summary totals start from each node's own totals (which cover flows outside
its top-N list) and subtract the duplicates visible in the lists, so they are
exact whenever the nodes list all their flows.

TCP health on a flow row (retransmits, resets, connect latency) is what the
source's socket did, seen only on the node that hosts that socket; the other
node's observation of the same 5-tuple carries none (or zeros). The merged
row takes the largest of each figure, and the summary sums the nodes' TCP
totals, which never count one socket twice.

Alerts merge by (namespace, pod, container, syscall): counts add up,
firstSeen is the earliest, lastSeen the latest, severity the highest; the
list is sorted by severity, then count, and capped at maxAlerts.

Bounding rule: the status JSON must stay under ``STATUS_BUDGET_BYTES``
(256 KiB). While it is over, the longest per-node list (flows, alerts, GPU
pods) is halved, keeping its most important rows; only when no per-node list
is left does the longest top-level list get halved.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from orb8_common.models import (
    Alert,
    Flow,
    FlowEndpoint,
    GpuAlert,
    GpuDevice,
    GpuNodeEntry,
    GpuPodRow,
    GpuSummary,
    NodeEntry,
    TraceSummary,
)
from orb8_operator.pods import PodEntry

__all__ = [
    "MAX_LIST_ITEMS",
    "SEVERITY_RANK",
    "STATUS_BUDGET_BYTES",
    "AlertMerge",
    "BoundedStatus",
    "FlowMerge",
    "GpuMerge",
    "TraceMerge",
    "bound_status",
    "flow_key",
    "gpu_status",
    "gpu_summary",
    "json_size",
    "merge_alerts",
    "merge_flows",
    "merge_gpu_alerts",
    "merge_gpu_pods",
    "name_endpoints",
    "parse_node_entries",
    "trace_status",
]

STATUS_BUDGET_BYTES = 256 * 1024
# The CRDs' maxItems for the merged top-level lists.
MAX_LIST_ITEMS = 1000
SEVERITY_RANK: Mapping[str, int] = {"Low": 0, "Medium": 1, "High": 2, "Critical": 3}

FlowKey = tuple[str, str, int, str, int]


# --- node entries ----------------------------------------------------------------


E = TypeVar("E", NodeEntry, GpuNodeEntry)


def parse_node_entries(
    *, raw: Iterable[Any], model: type[E]
) -> tuple[tuple[E, ...], tuple[str, ...]]:
    """Parse ``status.nodes`` into ``model`` rows; malformed entries are skipped and described.

    One agent's bad write must not stop the merge of the others. When a node
    appears twice the entry with the later lastReportTime wins.
    """
    entries: dict[str, E] = {}
    problems: list[str] = []
    for index, item in enumerate(raw):
        try:
            entry = model.model_validate(item)
        except ValidationError as err:
            name = item.get("node") if isinstance(item, Mapping) else None
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            problems.append(f"status.nodes[{index}] ({name or '?'}): {where}: {first['msg']}")
            continue
        old = entries.get(entry.node)
        if old is None or _later(entry.last_report_time, old.last_report_time):
            entries[entry.node] = entry
    return tuple(entries[n] for n in sorted(entries)), tuple(problems)


def _later(a: datetime | None, b: datetime | None) -> bool:
    if a is None:
        return False
    return b is None or a >= b


def _min_time(values: Iterable[datetime | None]) -> datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _max_time(values: Iterable[datetime | None]) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


# --- flows -----------------------------------------------------------------------


def flow_key(*, flow: Flow) -> FlowKey:
    """The 5-tuple; a missing port (ICMP) is -1."""
    src, dst = flow.source, flow.destination
    return (
        flow.protocol,
        src.ip,
        -1 if src.port is None else src.port,
        dst.ip,
        -1 if dst.port is None else dst.port,
    )


def _flow_rank(flow: Flow) -> tuple[int, int, str]:
    return (-flow.bytes, -flow.packets, flow.node)


def _fill(endpoint: FlowEndpoint, others: Iterable[FlowEndpoint]) -> FlowEndpoint:
    if endpoint.pod:
        return endpoint
    for other in others:
        if other.pod:
            return endpoint.model_copy(update={"namespace": other.namespace, "pod": other.pod})
    return endpoint


_TCP_FIELDS = ("retransmits", "resets_sent", "resets_received", "connect_latency_ms")


def _tcp_health(group: Sequence[Flow]) -> dict[str, Any]:
    """Each TCP health figure from the observation that has it (the socket's node)."""
    out: dict[str, Any] = {}
    for name in _TCP_FIELDS:
        values = [getattr(f, name) for f in group if getattr(f, name) is not None]
        if values:
            out[name] = max(values)
    return out


@dataclass(frozen=True)
class FlowMerge:
    flows: tuple[Flow, ...]  # top-N unique flows, by bytes descending
    unique: int  # unique flows among all listed observations
    duplicates: int  # observations dropped as duplicates
    duplicate_bytes: int
    duplicate_packets: int


def merge_flows(*, nodes: Iterable[NodeEntry], top_n: int) -> FlowMerge:
    """Cluster-wide top-N flows with cross-node duplicates counted once."""
    groups: dict[FlowKey, list[Flow]] = {}
    for entry in nodes:
        for flow in entry.flows:
            if not flow.node:
                flow = flow.model_copy(update={"node": entry.node})
            groups.setdefault(flow_key(flow=flow), []).append(flow)
    merged: list[Flow] = []
    dup = dup_bytes = dup_packets = 0
    for key in sorted(groups):
        group = sorted(groups[key], key=_flow_rank)
        best, rest = group[0], group[1:]
        dup += len(rest)
        dup_bytes += sum(f.bytes for f in rest)
        dup_packets += sum(f.packets for f in rest)
        if rest:
            best = best.model_copy(
                update={
                    "first_seen": _min_time(f.first_seen for f in group),
                    "last_seen": _max_time(f.last_seen for f in group),
                    "source": _fill(best.source, (f.source for f in rest)),
                    "destination": _fill(best.destination, (f.destination for f in rest)),
                    **_tcp_health(group),
                }
            )
        merged.append(best)
    merged.sort(key=lambda f: (-f.bytes, -f.packets, flow_key(flow=f), f.node))
    return FlowMerge(
        flows=tuple(merged[: max(top_n, 0)]),
        unique=len(merged),
        duplicates=dup,
        duplicate_bytes=dup_bytes,
        duplicate_packets=dup_packets,
    )


# --- alerts ----------------------------------------------------------------------


AlertKey = tuple[str, str, str, str]


def _alert_key(alert: Alert) -> AlertKey:
    return (alert.namespace, alert.pod, alert.container, alert.syscall)


def _alert_order(alert: Alert) -> tuple[int, int, AlertKey]:
    return (-SEVERITY_RANK[alert.severity], -alert.count, _alert_key(alert))


@dataclass(frozen=True)
class AlertMerge:
    alerts: tuple[Alert, ...]  # capped, by severity then count
    unique: int
    duplicates: int


def merge_alerts(*, nodes: Iterable[NodeEntry], max_alerts: int) -> AlertMerge:
    groups: dict[AlertKey, list[Alert]] = {}
    for entry in nodes:
        for alert in entry.alerts:
            if not alert.node:
                alert = alert.model_copy(update={"node": entry.node})
            groups.setdefault(_alert_key(alert), []).append(alert)
    merged: list[Alert] = []
    dup = 0
    for group in groups.values():
        dup += len(group) - 1
        # The newest observation supplies node, process and reason.
        latest = max(group, key=lambda a: (a.last_seen is not None, a.last_seen, a.node))
        merged.append(
            latest.model_copy(
                update={
                    "count": sum(a.count for a in group),
                    "severity": max((a.severity for a in group), key=SEVERITY_RANK.__getitem__),
                    "first_seen": _min_time(a.first_seen for a in group),
                    "last_seen": _max_time(a.last_seen for a in group),
                }
            )
        )
    merged.sort(key=_alert_order)
    return AlertMerge(
        alerts=tuple(merged[: max(max_alerts, 0)]), unique=len(merged), duplicates=dup
    )


# --- TraceSession status ------------------------------------------------------------


@dataclass(frozen=True)
class TraceMerge:
    summary: TraceSummary
    flows: tuple[Flow, ...]
    alerts: tuple[Alert, ...]


def name_endpoints(
    *, flows: Sequence[Flow], pods: Iterable[PodEntry] = (),
    owner_of: Callable[[str], tuple[str, str] | None] | None = None,
) -> tuple[Flow, ...]:  # fmt: skip
    """Name flow ends that no agent could name, from the cluster-wide pod index.

    An agent knows only the pods on its own node; the other end of a flow to
    an unselected pod, or to a pod on a node without an agent, arrives with an
    IP alone. hostNetwork pods share their node's IP, so they never name an IP.
    ``owner_of`` (ip → (namespace, pod), e.g. :meth:`PodCache.owner_of`) is
    asked instead of walking ``pods`` when given.
    """
    unnamed = {
        e.ip
        for f in flows
        for e in (f.source, f.destination, f.backend)
        if e is not None and not e.pod and e.ip
    }
    if not unnamed:
        return tuple(flows)
    if owner_of is not None:
        owners = {ip: owner for ip in unnamed if (owner := owner_of(ip)) is not None}
    else:
        owners = {
            ip: (pod.namespace, pod.name)
            for pod in pods if not pod.host_network for ip in pod.ips if ip in unnamed
        }  # fmt: skip
    if not owners:
        return tuple(flows)

    def named(endpoint: FlowEndpoint) -> FlowEndpoint:
        owner = None if endpoint.pod else owners.get(endpoint.ip)
        if owner is None:
            return endpoint
        return endpoint.model_copy(update={"namespace": owner[0], "pod": owner[1]})

    return tuple(
        flow.model_copy(
            update={
                "source": named(flow.source),
                "destination": named(flow.destination),
                "backend": named(flow.backend) if flow.backend is not None else None,
            }
        )
        for flow in flows
    )


def trace_status(
    *, nodes: Sequence[NodeEntry], top_flows: int, max_alerts: int, matched_pods: int,
    pods: Iterable[PodEntry] = (),
    owner_of: Callable[[str], tuple[str, str] | None] | None = None,
) -> TraceMerge:  # fmt: skip
    """summary, flows and alerts of a TraceSession from its node entries."""
    flows = merge_flows(nodes=nodes, top_n=top_flows)
    alerts = merge_alerts(nodes=nodes, max_alerts=max_alerts)
    # A node's totals never count less than the rows it listed.
    node_flows = sum(max(n.flow_count, len(n.flows)) for n in nodes)
    node_bytes = sum(max(n.bytes, sum(f.bytes for f in n.flows)) for n in nodes)
    node_packets = sum(max(n.packets, sum(f.packets for f in n.flows)) for n in nodes)
    node_alerts = sum(max(n.alert_count, len(n.alerts)) for n in nodes)
    connects = sum(n.connects for n in nodes)
    connect_ms = sum(n.connect_latency_sum_ms for n in nodes)
    summary = TraceSummary(
        flows=node_flows - flows.duplicates,
        bytes=node_bytes - flows.duplicate_bytes,
        packets=node_packets - flows.duplicate_packets,
        alerts=node_alerts - alerts.duplicates,
        nodes=len(nodes),
        pods=matched_pods,
        retransmits=sum(n.retransmits for n in nodes),
        resets_sent=sum(n.resets_sent for n in nodes),
        resets_received=sum(n.resets_received for n in nodes),
        connects=connects,
        connect_latency_ms=round(connect_ms / connects, 3) if connects else None,
        unfiltered_pods=sum(n.unfiltered_pods for n in nodes if n.state != "Stopped"),
    )
    named = name_endpoints(flows=flows.flows, pods=pods, owner_of=owner_of)
    return TraceMerge(summary=summary, flows=named, alerts=alerts.alerts)


# --- GpuTelemetry status ------------------------------------------------------------


GpuRowKey = tuple[str, str, str]


def _device_time(device: GpuDevice) -> tuple[bool, datetime | None]:
    return (device.last_updated is not None, device.last_updated)


def merge_gpu_pods(
    *, nodes: Iterable[GpuNodeEntry], limit: int = MAX_LIST_ITEMS
) -> tuple[GpuPodRow, ...]:
    """One row per (namespace, pod, container), GPUs unioned by uuid (newest reading wins)."""
    rows: dict[GpuRowKey, GpuPodRow] = {}
    for entry in nodes:
        for row in entry.pods:
            if not row.node:
                row = row.model_copy(update={"node": entry.node})
            key = (row.namespace, row.pod, row.container)
            old = rows.get(key)
            if old is None:
                rows[key] = row
                continue
            devices = {d.uuid: d for d in old.gpus}
            for device in row.gpus:
                prev = devices.get(device.uuid)
                if prev is None or _device_time(device) >= _device_time(prev):
                    devices[device.uuid] = device
            rows[key] = old.model_copy(update={"gpus": tuple(devices.values())})
    ordered = [
        row.model_copy(update={"gpus": tuple(sorted(row.gpus, key=lambda d: d.uuid))})
        for _, row in sorted(rows.items())
    ]
    return tuple(ordered[: max(limit, 0)])


def _distinct_devices(pods: Iterable[GpuPodRow]) -> dict[tuple[str, str], GpuDevice]:
    # A time-sliced GPU appears under each pod sharing it; count it once per node.
    devices: dict[tuple[str, str], GpuDevice] = {}
    for row in pods:
        for device in row.gpus:
            key = (row.node, device.uuid)
            prev = devices.get(key)
            if prev is None or _device_time(device) >= _device_time(prev):
                devices[key] = device
    return devices


def gpu_summary(*, pods: Iterable[GpuPodRow]) -> GpuSummary:
    """GPU and pod counts, mean utilization and memory used over distinct GPUs."""
    rows = list(pods)
    devices = _distinct_devices(rows)
    utils = [d.utilization_percent for d in devices.values() if d.utilization_percent is not None]
    memory = [d.memory_used_bytes for d in devices.values() if d.memory_used_bytes is not None]
    return GpuSummary(
        gpus=len(devices),
        pods=len({(r.namespace, r.pod) for r in rows}),
        avg_utilization=round(sum(utils) / len(utils), 2) if utils else None,
        memory_used_bytes=sum(memory) if memory else None,
    )


GpuAlertKey = tuple[str, str, str, str, str]


def _gpu_alert_key(alert: GpuAlert) -> GpuAlertKey:
    return (alert.namespace, alert.pod, alert.container, alert.gpu, alert.kind)


def merge_gpu_alerts(
    *, nodes: Iterable[GpuNodeEntry], limit: int = MAX_LIST_ITEMS
) -> tuple[GpuAlert, ...]:
    """The agents' GPU alerts, one per (pod, container, GPU, kind).

    The newest observation supplies value and message; firstSeen is the
    earliest, lastSeen the latest. MemoryHigh sorts before Idle, then by pod.
    """
    groups: dict[GpuAlertKey, list[GpuAlert]] = {}
    for entry in nodes:
        for alert in entry.alerts:
            if not alert.node:
                alert = alert.model_copy(update={"node": entry.node})
            groups.setdefault(_gpu_alert_key(alert), []).append(alert)
    merged = []
    for group in groups.values():
        latest = max(group, key=lambda a: (a.last_seen is not None, a.last_seen, a.node))
        merged.append(
            latest.model_copy(
                update={
                    "first_seen": _min_time(a.first_seen for a in group),
                    "last_seen": _max_time(a.last_seen for a in group),
                }
            )
        )
    merged.sort(key=lambda a: (a.kind != "MemoryHigh", _gpu_alert_key(a)))
    return tuple(merged[: max(limit, 0)])


@dataclass(frozen=True)
class GpuMerge:
    summary: GpuSummary
    pods: tuple[GpuPodRow, ...]
    alerts: tuple[GpuAlert, ...]


def gpu_status(*, nodes: Sequence[GpuNodeEntry]) -> GpuMerge:
    """summary, pods and alerts of a GpuTelemetry from its node entries."""
    all_pods = merge_gpu_pods(nodes=nodes, limit=10**9)
    return GpuMerge(
        summary=gpu_summary(pods=all_pods),
        pods=all_pods[:MAX_LIST_ITEMS],
        alerts=merge_gpu_alerts(nodes=nodes),
    )


# --- bounding --------------------------------------------------------------------


def json_size(*, value: Any) -> int:
    """Bytes of the compact JSON encoding, close to what etcd stores."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


@dataclass(frozen=True)
class BoundedStatus:
    status: dict[str, Any]
    size: int
    nodes_trimmed: bool  # per-node lists were cut: the caller must write status.nodes too
    lists_trimmed: bool  # top-level flows/alerts/pods were cut below their caps


_LIST_FIELDS = ("flows", "alerts", "pods")


def _sort_rows(field: str, rows: list[Any]) -> list[Any]:
    # Keep the most important rows first before cutting a per-node list.
    if field == "flows":
        return sorted(rows, key=lambda r: -int(r.get("bytes", 0)) if isinstance(r, dict) else 0)
    if field == "alerts":
        return sorted(
            rows,
            key=lambda r: (
                (-SEVERITY_RANK.get(str(r.get("severity")), 0), -int(r.get("count", 0)))
                if isinstance(r, dict)
                else (0, 0)
            ),
        )
    return rows


def bound_status(*, status: Mapping[str, Any], budget: int = STATUS_BUDGET_BYTES) -> BoundedStatus:
    """Shrink a wire-format status until its JSON fits ``budget`` (see module docs).

    The input is not modified: lists are replaced, never cut in place. The
    size is kept up to date incrementally (replacing one list changes the
    document by exactly the difference of the two lists' encodings), and the
    longest list comes off a heap, so a big status costs a few encodings,
    not one per cut.
    """
    out: dict[str, Any] = dict(status)
    nodes = out.get("nodes")
    entries: list[Any] = []
    if isinstance(nodes, list):
        entries = [dict(e) if isinstance(e, Mapping) else e for e in nodes]
        out["nodes"] = entries
    size = json_size(value=out)
    nodes_trimmed = lists_trimmed = False
    if size <= budget:
        return BoundedStatus(status=out, size=size, nodes_trimmed=False, lists_trimmed=False)

    def lists(owners: Iterable[tuple[int, Any]]) -> list[tuple[int, int, str]]:
        heap = [
            (-len(owner[name]), index, name)
            for index, owner in owners
            if isinstance(owner, dict)
            for name in _LIST_FIELDS
            if isinstance(owner.get(name), list) and owner[name]
        ]
        heapq.heapify(heap)
        return heap

    # Per-node lists first (cut after sorting by importance), then the merged ones.
    for owners, per_node in ((list(enumerate(entries)), True), ([(0, out)], False)):
        heap = lists(owners)
        while size > budget and heap:
            _, index, name = heapq.heappop(heap)
            owner = entries[index] if per_node else out
            old = owner[name]
            rows = _sort_rows(name, old) if per_node else old
            new = rows[: len(rows) // 2]
            size += json_size(value=new) - json_size(value=old)
            owner[name] = new
            if new:
                heapq.heappush(heap, (-len(new), index, name))
            nodes_trimmed = nodes_trimmed or per_node
            lists_trimmed = lists_trimmed or not per_node
    return BoundedStatus(
        status=out, size=size, nodes_trimmed=nodes_trimmed, lists_trimmed=lists_trimmed
    )
