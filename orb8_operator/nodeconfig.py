"""Per-node agent configuration: build the desired NodeAgentConfig specs from
all active sessions, and plan the writes that bring the cluster there.

The builder is a pure function of *all* active sessions, so a caller must
have seen every session (e.g. after the initial listing) before it acts on a
plan's deletions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Mapping, Set
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from orb8_common.models import (
    AgentContainer,
    AgentPod,
    AgentSession,
    GpuTelemetrySpec,
    NodeAgentConfigSpec,
    SessionKind,
    TraceSessionSpec,
    to_wire,
)
from orb8_operator.pods import PodEntry
from orb8_operator.resolve import resolve_targets
from orb8_operator.selectors import resolve_namespaces

__all__ = [
    "ActiveSession",
    "NodeConfigPlan",
    "agent_pod",
    "agent_session",
    "build_node_configs",
    "keep_unreconciled",
    "node_config_wires",
    "plan_node_configs",
]


@dataclass(frozen=True)
class ActiveSession:
    """A session the agents should serve now, with its resolved targets."""

    uid: str
    kind: SessionKind
    namespace: str
    name: str
    generation: int
    spec: TraceSessionSpec | GpuTelemetrySpec
    targets: Mapping[str, tuple[PodEntry, ...]]


# Placeholder spec for cached entries: an AgentSession does not carry settings.
_NO_SPEC = TraceSessionSpec.model_validate({"probes": {"network": {"enabled": True}}})


@dataclass(frozen=True)
class NodeConfigPlan:
    """Writes needed: full specs to create or replace, and node names to delete."""

    create: dict[str, dict[str, Any]] = field(default_factory=dict)
    patch: dict[str, dict[str, Any]] = field(default_factory=dict)
    delete: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.create or self.patch or self.delete)


def agent_pod(*, pod: PodEntry) -> AgentPod:
    return AgentPod(
        uid=pod.uid,
        namespace=pod.namespace,
        name=pod.name,
        ips=pod.ips,
        host_network=pod.host_network,
        containers=tuple(AgentContainer(name=n, id=cid) for n, cid in pod.containers),
    )


def agent_session(*, session: ActiveSession, pods: Iterable[PodEntry]) -> AgentSession:
    """The entry one node's agent gets for ``session``: who it is and that node's pods.

    No settings: the agent reads those from the session object (once per
    generation), so a session's settings are stored once, not once per node.
    """
    rows = tuple(agent_pod(pod=p) for p in sorted(pods, key=lambda p: (p.namespace, p.name, p.uid)))
    return AgentSession(
        uid=session.uid,
        kind=session.kind,
        namespace=session.namespace,
        name=session.name,
        generation=session.generation,
        pods=rows,
    )


@functools.lru_cache(maxsize=1 << 16)
def _session_wire(
    uid: str, kind: SessionKind, namespace: str, name: str, generation: int,
    pods: tuple[PodEntry, ...],
) -> dict[str, Any]:  # fmt: skip
    # Shared between calls: callers never modify it.
    session = ActiveSession(uid, kind, namespace, name, generation, _NO_SPEC, {})
    return to_wire(agent_session(session=session, pods=pods))


def node_config_wires(*, sessions: Iterable[ActiveSession]) -> dict[str, dict[str, Any]]:
    """``to_wire`` of :func:`build_node_configs`, with each session's entry per node cached.

    The periodic full comparison rebuilds every node's spec; only sessions or
    pods that changed since are serialised again.
    """
    per_node: dict[str, list[dict[str, Any]]] = {}
    for session in sorted(sessions, key=lambda s: (s.namespace, s.name, s.uid)):
        for node, pods in session.targets.items():
            if node and pods:
                ordered = tuple(sorted(pods, key=lambda p: (p.namespace, p.name, p.uid)))
                entry = _session_wire(
                    session.uid, session.kind, session.namespace, session.name,
                    session.generation, ordered,
                )  # fmt: skip
                per_node.setdefault(node, []).append(entry)
    return {node: {"nodeName": node, "sessions": per_node[node]} for node in sorted(per_node)}


def build_node_configs(*, sessions: Iterable[ActiveSession]) -> dict[str, NodeAgentConfigSpec]:
    """One spec per node that has at least one target pod, in node-name order.

    Sessions are ordered by (namespace, name, uid), pods by (namespace, name,
    uid), so equal inputs always give byte-identical specs.
    """
    per_node: dict[str, list[AgentSession]] = {}
    ordered = sorted(sessions, key=lambda s: (s.namespace, s.name, s.uid))
    for session in ordered:
        for node, pods in session.targets.items():
            if node and pods:
                per_node.setdefault(node, []).append(agent_session(session=session, pods=pods))
    return {
        node: NodeAgentConfigSpec(node_name=node, sessions=tuple(per_node[node]))
        for node in sorted(per_node)
    }


def _normalise(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    # Parse and re-serialise so defaults the apiserver filled in compare equal.
    try:
        return to_wire(NodeAgentConfigSpec.model_validate(raw))
    except ValidationError:
        return None


def plan_node_configs(
    *,
    desired: Mapping[str, NodeAgentConfigSpec] | Mapping[str, dict[str, Any]],
    current: Mapping[str, Mapping[str, Any]],
) -> NodeConfigPlan:
    """Compare desired specs with the existing objects' specs (node → raw spec).

    Nodes missing from ``current`` are created, differing ones replaced
    (``patch`` carries the whole new spec), and existing objects no session
    needs any more are deleted.
    """
    create: dict[str, dict[str, Any]] = {}
    patch: dict[str, dict[str, Any]] = {}
    for node, spec in desired.items():
        wire = to_wire(spec) if isinstance(spec, NodeAgentConfigSpec) else spec
        if node not in current:
            create[node] = wire
        elif current[node] != wire and _normalise(current[node]) != wire:
            patch[node] = wire
    delete = tuple(sorted(node for node in current if node not in desired))
    return NodeConfigPlan(create=create, patch=patch, delete=delete)


def keep_unreconciled(
    *,
    desired: Mapping[str, NodeAgentConfigSpec],
    current: Mapping[str, Mapping[str, Any]],
    keep_uids: Collection[str],
) -> dict[str, NodeAgentConfigSpec]:
    """Carry over stored entries of sessions that exist but have not been reconciled yet.

    Right after the operator starts, only some sessions are known; without
    this, the first sync would strip the others from the agents for a moment.
    """
    known = {s.uid for spec in desired.values() for s in spec.sessions}
    out = dict(desired)
    for node in sorted(current):
        try:
            stored = NodeAgentConfigSpec.model_validate(current[node])
        except ValidationError:
            continue
        carried = [s for s in stored.sessions if s.uid in keep_uids and s.uid not in known]
        if not carried:
            continue
        base = out.get(node)
        sessions = [*(base.sessions if base else ()), *carried]
        sessions.sort(key=lambda s: (s.namespace, s.name, s.uid))
        out[node] = NodeAgentConfigSpec(node_name=node, sessions=tuple(sessions))
    return dict(sorted(out.items()))


def refresh_targets(
    *,
    sessions: Mapping[str, ActiveSession],
    changed_namespaces: Set[str],
    pods_in: Callable[[frozenset[str]], Iterable[PodEntry]],
    node_labels: Mapping[str, Mapping[str, str]],
) -> dict[str, ActiveSession]:
    """Re-resolve the targets of sessions that select from namespaces whose pods changed.

    This lets a new or relabelled pod reach the agents without waiting for its
    session's next timer tick; sessions in other namespaces are not walked.
    """
    refreshed = dict(sessions)
    for uid, session in sessions.items():
        namespaces = resolve_namespaces(
            selector=session.spec.selector, session_namespace=session.namespace
        )
        if not namespaces & changed_namespaces:
            continue
        targets = resolve_targets(
            selector=session.spec.selector, session_namespace=session.namespace,
            pods=pods_in(namespaces), node_labels=node_labels,
        )  # fmt: skip
        if targets != session.targets:
            refreshed[uid] = replace(session, targets=targets)
    return refreshed
