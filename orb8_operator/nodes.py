"""Each session's per-node state: the agents' fresh reports over what the
session's status already holds.

Agents report into their NodeAgentConfig's status; the operator keeps a
compact ``status.nodes[]`` per session (state, message, lastReportTime and
the node's cumulative totals, without its flow and alert lists). A node
that stopped reporting for a session (its pods left, or its agent is gone)
keeps its last totals there, so the session's summary never goes back, and
its rows are taken from the session's merged lists.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from orb8_common.models import (
    Alert,
    Flow,
    GpuAlert,
    GpuNodeEntry,
    GpuPodRow,
    NodeEntry,
    SessionKind,
)
from orb8_operator.status import parse_node_entries

__all__ = ["SUMMARY_MESSAGE_CHARS", "node_entries", "node_summaries"]

# Messages in the compact per-node list are cut to this; the node's full one is in its report.
SUMMARY_MESSAGE_CHARS = 512
_FLOWS = TypeAdapter(list[Flow])
_ALERTS = TypeAdapter(list[Alert])
_GPU_PODS = TypeAdapter(list[GpuPodRow])
_GPU_ALERTS = TypeAdapter(list[GpuAlert])
_STILL_ACTIVE = ("Pending", "Running", "Degraded")


def _rows(adapter: TypeAdapter[list[Any]], raw: Any) -> list[Any]:
    try:
        return adapter.validate_python(raw if isinstance(raw, list) else [])
    except ValidationError:
        return []


def node_entries(
    *,
    kind: SessionKind,
    status: Mapping[str, Any],
    reports: Mapping[str, NodeEntry | GpuNodeEntry],
    targeted: Collection[str] | None,
) -> tuple[list[NodeEntry | GpuNodeEntry], tuple[str, ...]]:
    """Every node's entry for the merge: fresh reports, else what the status kept.

    ``targeted``: nodes that serve the session now (None: unknown, e.g. a
    finished session). A kept node outside it is marked Stopped.
    """
    raw = status.get("nodes")
    raw_nodes = raw if isinstance(raw, list) else []
    stored: Sequence[NodeEntry | GpuNodeEntry]
    if kind == "TraceSession":
        stored, problems = parse_node_entries(raw=raw_nodes, model=NodeEntry)
        out: list[NodeEntry | GpuNodeEntry] = [
            r for r in reports.values() if isinstance(r, NodeEntry)
        ]
    else:
        stored, problems = parse_node_entries(raw=raw_nodes, model=GpuNodeEntry)
        out = [r for r in reports.values() if isinstance(r, GpuNodeEntry)]
    kept = [e for e in stored if e.node not in reports]
    if kept:
        if kind == "TraceSession":
            flows, alerts = _rows(_FLOWS, status.get("flows")), _rows(_ALERTS, status.get("alerts"))
        else:
            flows = _rows(_GPU_PODS, status.get("pods"))
            alerts = _rows(_GPU_ALERTS, status.get("alerts"))
        for entry in kept:
            # Lists written in an entry itself (by an older operator) are kept as they are.
            update: dict[str, Any] = {}
            if isinstance(entry, NodeEntry) and not entry.flows:
                update["flows"] = tuple(f for f in flows if f.node == entry.node)
            if isinstance(entry, GpuNodeEntry) and not entry.pods:
                update["pods"] = tuple(p for p in flows if p.node == entry.node)
            if not entry.alerts:
                update["alerts"] = tuple(a for a in alerts if a.node == entry.node)
            if targeted is not None and entry.node not in targeted and entry.state in _STILL_ACTIVE:
                update["state"] = "Stopped"
            out.append(entry.model_copy(update=update))
    out.sort(key=lambda e: e.node)
    return out, problems


def node_summaries(*, entries: Sequence[NodeEntry | GpuNodeEntry]) -> list[dict[str, Any]]:
    """The compact ``status.nodes[]``: each node's state and totals, without its row lists.

    Fields at their default (zero counters, an empty message) are left out, as
    Kubernetes' omitempty does: readers parse them back with the same defaults,
    and in a session spread over 50 nodes they were half the bytes of this list,
    which the operator rewrites every report interval.
    """
    out = []
    for entry in entries:
        wire = entry.model_dump(
            mode="json", by_alias=True, exclude_defaults=True,
            exclude={"flows", "alerts", "pods", "message"},
        )  # fmt: skip
        wire = {"node": entry.node, "state": entry.state, **wire}  # always named, for readers
        if entry.message:
            wire["message"] = entry.message[:SUMMARY_MESSAGE_CHARS]
        if isinstance(wire.get("dns"), dict):
            wire["dns"].pop("names", None)  # totals only; the rows are merged into status.dns
        out.append(wire)
    return out
