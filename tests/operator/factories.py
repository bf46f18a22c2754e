"""Small builders of Pod bodies, pod entries and status rows for the operator tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orb8_common.models import Alert, Flow, FlowEndpoint, NodeEntry
from orb8_operator.pods import PodEntry, pod_entry_from_body

T0 = datetime(2026, 11, 29, 5, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pod_body(
    name: str,
    *,
    namespace: str = "shop",
    node: str | None = "node-a",
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    ip: str | None = "10.244.1.5",
    host_network: bool = False,
    containers: dict[str, str | None] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{namespace}-{name}",
        "labels": labels or {},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T05:00:00Z"
    spec: dict[str, Any] = {"hostNetwork": host_network}
    if node is not None:
        spec["nodeName"] = node
    status: dict[str, Any] = {"phase": phase}
    if ip is not None:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    conts = containers if containers is not None else {"app": f"containerd://{name}-app"}
    status["containerStatuses"] = [
        {"name": n, **({"containerID": cid} if cid else {})} for n, cid in conts.items()
    ]
    return {"metadata": meta, "spec": spec, "status": status}


def pod(name: str, **kwargs: Any) -> PodEntry:
    entry = pod_entry_from_body(body=pod_body(name, **kwargs))
    assert entry is not None
    return entry


def flow(
    src: str,
    dst: str,
    *,
    sport: int | None = 40000,
    dport: int | None = 8080,
    proto: str = "TCP",
    nbytes: int = 100,
    packets: int = 1,
    node: str = "node-a",
    src_pod: str = "",
    dst_pod: str = "",
    first: float = 0,
    last: float = 10,
) -> Flow:
    return Flow.model_validate(
        {
            "source": FlowEndpoint(
                ip=src, port=sport, pod=src_pod, namespace="shop" if src_pod else ""
            ),
            "destination": FlowEndpoint(
                ip=dst, port=dport, pod=dst_pod, namespace="shop" if dst_pod else ""
            ),
            "protocol": proto,
            "bytes": nbytes,
            "packets": packets,
            "firstSeen": at(first),
            "lastSeen": at(last),
            "node": node,
        }
    )


def alert(
    pod_name: str,
    syscall: str,
    *,
    count: int = 1,
    severity: str = "High",
    node: str = "node-a",
    container: str = "app",
    first: float = 0,
    last: float = 10,
) -> Alert:
    return Alert.model_validate(
        {
            "namespace": "shop",
            "pod": pod_name,
            "container": container,
            "node": node,
            "syscall": syscall,
            "count": count,
            "severity": severity,
            "reason": f"{syscall} is on the alert list",
            "firstSeen": at(first),
            "lastSeen": at(last),
        }
    )


def node_entry(
    node: str,
    *,
    state: str = "Running",
    flows: list[Flow] | None = None,
    alerts: list[Alert] | None = None,
    message: str = "",
    **totals: int,
) -> NodeEntry:
    rows = flows or []
    return NodeEntry.model_validate(
        {
            "node": node,
            "state": state,
            "message": message,
            "flows": rows,
            "alerts": alerts or [],
            "flowCount": totals.get("flow_count", len(rows)),
            "bytes": totals.get("nbytes", sum(f.bytes for f in rows)),
            "packets": totals.get("packets", sum(f.packets for f in rows)),
            "alertCount": totals.get("alert_count", len(alerts or [])),
            "lastReportTime": at(15),
        }
    )
