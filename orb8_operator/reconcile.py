"""One reconcile step of a session, as a pure function of its object, the pod
index and the clock. The kopf handlers only carry out what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orb8_common.errors import InvalidSpecError
from orb8_common.models import (
    GpuNodeEntry,
    GpuTelemetrySpec,
    NodeEntry,
    SessionKind,
    TraceSessionSpec,
    format_time,
    parse_gpu_telemetry_spec,
    parse_trace_session_spec,
    read_status_head,
    to_wire,
)
from orb8_operator.dns import merge_dns
from orb8_operator.lifecycle import (
    ACTIVE_PHASES,
    KubeEvent,
    evaluate,
    next_check_in,
    should_delete,
)
from orb8_operator.nodeconfig import ActiveSession
from orb8_operator.nodes import node_entries, node_summaries
from orb8_operator.pods import PodEntry
from orb8_operator.resolve import count_pods, resolve_targets
from orb8_operator.selectors import (
    CrossNamespacePolicy,
    configured_policy,
    refusal_message,
    resolve_namespaces,
)
from orb8_operator.status import STATUS_BUDGET_BYTES, bound_status, gpu_status, trace_status

__all__ = [
    "DEFAULT_INTERVAL_SECONDS",
    "SessionOutcome",
    "changed_fields",
    "next_stale_look",
    "parse_spec",
    "reconcile_session",
    "slim_body",
]

DEFAULT_INTERVAL_SECONDS = 15.0
# A node that has missed this many report intervals counts as degraded.
STALE_REPORTS = 4


@dataclass(frozen=True)
class SessionOutcome:
    uid: str
    kind: SessionKind
    namespace: str
    name: str
    # Merge patch for .status (the operator writes all of it, nodes included).
    status: dict[str, Any]
    events: tuple[KubeEvent, ...]
    active: ActiveSession | None  # what the agents should serve; None when finished
    delete: bool  # the TTL after finishing has expired
    next_check_in: float | None  # seconds; None when nothing will change by itself
    spec_error: str | None
    problems: tuple[str, ...]  # malformed node reports that were skipped
    size: int  # estimated JSON size of the status after the patch
    node_states: Mapping[str, str] = field(default_factory=dict)  # node → state as merged


def parse_spec(*, kind: SessionKind, raw: Any) -> TraceSessionSpec | GpuTelemetrySpec:
    """Parse a session's spec; raises InvalidSpecError."""
    if kind == "TraceSession":
        return parse_trace_session_spec(raw)
    return parse_gpu_telemetry_spec(raw)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _merged(
    spec: TraceSessionSpec | GpuTelemetrySpec | None,
    nodes: Sequence[NodeEntry | GpuNodeEntry],
    matched: int,
    pods: Iterable[PodEntry],
    owner_of: Callable[[str], tuple[str, str] | None] | None,
) -> dict[str, Any]:
    """summary and the merged lists; nothing for an unreadable spec."""
    if isinstance(spec, TraceSessionSpec):
        trace = trace_status(
            nodes=[n for n in nodes if isinstance(n, NodeEntry)],
            top_flows=spec.probes.network.top_flows,
            max_alerts=spec.probes.syscalls.max_alerts,
            matched_pods=matched,
            pods=pods,
            owner_of=owner_of,
        )
        dns = merge_dns(
            nodes=[n for n in nodes if isinstance(n, NodeEntry)],
            top_names=spec.probes.dns.top_names,
        )
        return {
            "summary": to_wire(trace.summary),
            "flows": [to_wire(f) for f in trace.flows],
            "alerts": [to_wire(a) for a in trace.alerts],
            **({"dns": to_wire(dns)} if dns is not None else {}),
        }
    if isinstance(spec, GpuTelemetrySpec):
        gpu = gpu_status(nodes=[n for n in nodes if isinstance(n, GpuNodeEntry)])
        return {
            # Every field, None included: a merge patch removes a reading that
            # became unknown instead of leaving the last one in place.
            "summary": gpu.summary.model_dump(mode="json", by_alias=True),
            "pods": [to_wire(p) for p in gpu.pods],
            "alerts": [to_wire(a) for a in gpu.alerts],
        }
    return {}


def next_stale_look(
    *, nodes: Sequence[NodeEntry | GpuNodeEntry], now: datetime, interval: float,
    stale_after: float,
) -> datetime | None:  # fmt: skip
    """When to look again so that the next node report to turn stale is noticed.

    A report turns stale ``stale_after`` seconds after it was written; the
    look comes one interval after the earliest such moment, so the nodes of
    one reporting round (spread over an interval) turn stale in one look and
    one status write, not one each. None when no running node can turn stale.
    """
    deadlines = [
        n.last_report_time + timedelta(seconds=stale_after)
        for n in nodes
        if n.state in ("Running", "Degraded") and n.last_report_time is not None
    ]
    upcoming = [d for d in deadlines if d > now]
    if not upcoming:
        return None
    return min(upcoming) + timedelta(seconds=interval)


def _interval(spec: TraceSessionSpec | GpuTelemetrySpec | None) -> float:
    if isinstance(spec, TraceSessionSpec):
        return spec.report_interval_seconds
    if isinstance(spec, GpuTelemetrySpec):
        return spec.interval_seconds
    return DEFAULT_INTERVAL_SECONDS


def _ttl(spec: TraceSessionSpec | GpuTelemetrySpec | None, raw_spec: Any) -> int | None:
    if spec is not None:
        return spec.ttl_seconds_after_finished
    # A Failed spec still honours a sane raw ttlSecondsAfterFinished.
    raw = _map(raw_spec).get("ttlSecondsAfterFinished")
    return raw if type(raw) is int and raw >= 0 else None


def reconcile_session(
    *,
    kind: SessionKind,
    body: Mapping[str, Any],
    pods: Iterable[PodEntry],
    node_labels: Mapping[str, Mapping[str, str]],
    now: datetime,
    budget: int = STATUS_BUDGET_BYTES,
    all_pods: Iterable[PodEntry] | None = None,
    cross_namespace: CrossNamespacePolicy | None = None,
    reports: Mapping[str, NodeEntry | GpuNodeEntry] | None = None,
    targets: Mapping[str, tuple[PodEntry, ...]] | None = None,
    look_every: float | None = None,
    owner_of: Callable[[str], tuple[str, str] | None] | None = None,
) -> SessionOutcome:
    """Everything the operator should do for one session at ``now``.

    ``pods`` must hold at least the pods of the session's namespaces;
    ``all_pods`` (default: ``pods``) is walked only to name flow ends that the
    agents left unnamed, and not at all when ``owner_of`` (ip → (namespace,
    pod)) is given. ``cross_namespace`` (default: the operator's
    ``--allow-cross-namespace`` rules) says which other namespaces a session
    may select; a refused selection fails the session with reason
    ``CrossNamespaceNotAllowed``. ``reports``: node → the agents' latest share
    of this session (from their NodeAgentConfigs). ``targets``: the session's
    target pods by node when the caller already resolved them for this spec.
    """
    pods = tuple(pods)
    meta, status = _map(body.get("metadata")), _map(body.get("status"))
    uid = str(meta.get("uid", ""))
    namespace = str(meta.get("namespace", ""))
    name = str(meta.get("name", ""))
    generation = int(meta.get("generation") or 0)

    spec: TraceSessionSpec | GpuTelemetrySpec | None = None
    spec_error: str | None = None
    spec_error_reason = "InvalidSpec"
    try:
        spec = parse_spec(kind=kind, raw=body.get("spec"))
    except InvalidSpecError as err:
        spec_error = str(err)
    if spec is not None:
        policy = cross_namespace if cross_namespace is not None else configured_policy()
        refused = policy.refused(
            session_namespace=namespace,
            selected=resolve_namespaces(selector=spec.selector, session_namespace=namespace),
        )
        if refused:
            # Selecting another tenant's pods needs the operator's consent: nothing is traced.
            spec_error = refusal_message(session_namespace=namespace, refused=refused)
            spec_error_reason = "CrossNamespaceNotAllowed"

    # What the operator wrote last; a field that does not parse counts as unset.
    head, _ = read_status_head(raw=status)
    phase = head.phase
    given, targets = targets, {}
    if phase == "Completed" and head.matched_pods is not None:
        matched = head.matched_pods  # final: no need to walk the pod index again
    else:
        if spec is None or spec_error is not None:
            given = {}  # nothing is traced for an invalid or refused spec
        elif given is None:
            given = resolve_targets(
                selector=spec.selector,
                session_namespace=namespace,
                pods=pods,
                node_labels=node_labels,
            )
        targets = given
        matched = count_pods(targets=targets)
    # No node serves a finished session: what they reported last is final (Stopped).
    finished = phase is not None and phase not in ACTIVE_PHASES
    targeted = set() if finished else {n for n, t in targets.items() if n and t}
    nodes, problems = node_entries(
        kind=kind, status=status, reports=reports or {}, targeted=targeted
    )
    duration = spec.duration_seconds if spec is not None else None

    stale_after = STALE_REPORTS * _interval(spec)
    life = evaluate(
        generation=generation,
        spec_error=spec_error,
        spec_error_reason=spec_error_reason,
        duration_seconds=duration,
        now=now,
        previous_phase=phase,
        start_time=head.start_time,
        completion_time=head.completion_time,
        conditions=head.conditions,
        nodes=nodes,
        matched_pods=matched,
        stale_after=stale_after,
    )
    patch: dict[str, Any] = {
        "phase": life.phase,
        "observedGeneration": generation,
        "conditions": [to_wire(c) for c in life.conditions],
        "startTime": format_time(life.start_time) if life.start_time else None,
        "completionTime": format_time(life.completion_time) if life.completion_time else None,
        "matchedPods": matched,
        **_merged(spec, nodes, matched, pods if all_pods is None else all_pods, owner_of),
        "nodes": node_summaries(entries=nodes),
    }
    # The summaries carry no lists, so only the merged top-N lists can be shortened.
    bounded = bound_status(status=patch, budget=budget)
    patch = bounded.status

    active = None
    if spec is not None and spec_error is None and life.active:
        active = ActiveSession(
            uid=uid,
            kind=kind,
            namespace=namespace,
            name=name,
            generation=generation,
            spec=spec,
            targets=targets,
        )
    ttl = _ttl(spec, body.get("spec"))
    return SessionOutcome(
        uid=uid,
        kind=kind,
        namespace=namespace,
        name=name,
        status=patch,
        events=life.events,
        active=active,
        delete=not life.active
        and should_delete(now=now, completion_time=life.completion_time, ttl_seconds=ttl),
        next_check_in=next_check_in(
            now=now,
            phase=life.phase,
            start_time=life.start_time,
            duration_seconds=duration,
            completion_time=life.completion_time,
            ttl_seconds=ttl,
            interval=_interval(spec) if look_every is None else look_every,
            stale_at=next_stale_look(
                nodes=nodes, now=now, interval=_interval(spec), stale_after=stale_after
            ),
        ),
        spec_error=spec_error,
        problems=problems,
        size=bounded.size,
        node_states={n.node: n.state for n in nodes},
    )


def slim_body(*, body: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator keeps of a session between reconciles: identity, spec, status.

    managedFields and annotations (kopf's, kubectl's last-applied copy) can be
    larger than the rest and are never read.
    """
    meta = _map(body.get("metadata"))
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in _KEPT_METADATA if k in meta},
        "spec": body.get("spec"),
        "status": body.get("status"),
    }


_KEPT_METADATA = ("uid", "namespace", "name", "generation", "deletionTimestamp")


def changed_fields(*, current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a status patch that changes something, so idle ticks write nothing.

    A None in ``patch`` removes a field, which only matters when it is set;
    nested maps are compared the way a JSON merge patch applies them.
    """
    return {key: value for key, value in patch.items() if not _applied(current.get(key), value)}


def _applied(current: Any, value: Any) -> bool:
    """Merging ``value`` into ``current`` (RFC 7386) would change nothing."""
    if value is None:
        return current is None
    if isinstance(value, Mapping):
        if not isinstance(current, Mapping):
            return False
        return all(_applied(current.get(k), v) for k, v in value.items())
    return bool(current == value)
